"""Our streaming segmenter + SAM-2 memory bank against the `sam2` package's own tracking (`track_step`)."""
import numpy as np
import pytest
import torch

from glus.data.synth.video import make_video
from glus.model.segmenter import SAM2Segmenter

T = 10


def _frames_and_first_mask(seg):
    video = make_video(0, "train", 3)
    frames = torch.from_numpy(np.stack(video.frames[:T]))
    first = torch.from_numpy(video.labels[0] == 1).float()[None, None]
    first = torch.nn.functional.interpolate(first, size=(seg.image_size, seg.image_size)) > 0.5
    return seg.preprocess(frames), first


def _randomise(module, seed):
    """Non-zero random weights everywhere (SAM-2 initialises some embeddings to zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        # keep the object "present" so that masks are real logits, not SAM-2's constant no-object score
        module.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(4.0)


def _sam2_reference(sam, images, first_mask):
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    masks = []
    for t in range(len(images)):
        _, feats, pos, sizes = sam._prepare_backbone_features(sam.forward_image(images[t:t + 1]))
        out = sam.track_step(t, t == 0, feats, pos, sizes, point_inputs=None,
                             mask_inputs=first_mask if t == 0 else None, output_dict=output_dict, num_frames=len(images))
        output_dict["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = out
        masks.append(out["pred_masks_high_res"])
    return torch.cat(masks)


@pytest.mark.parametrize("stride", [1, 3])
def test_streaming_bank_reproduces_sam2_track_step(stride):
    torch.manual_seed(0)
    # SAM-2's own tracker: 6 past memories beside the conditioning frame, temporal encoding, object pointers,
    # the no-object embedding, masks gated by the object score
    memory = {"num_memories": 6, "stride_eval": stride, "temporal_encoding": True, "object_pointers": True,
              "no_object_embedding": True, "encode_conditioned": False}
    seg = SAM2Segmenter("tiny", memory=memory, gate_by_object_score=True).eval()
    _randomise(seg.sam, seed=1)
    seg.sam.memory_temporal_stride_for_eval = stride
    images, first = _frames_and_first_mask(seg)
    with torch.no_grad():
        expected = _sam2_reference(seg.sam, images, first)
        state = seg.reset(num_frames=T)
        got = []
        for t in range(T):
            feats = seg.encode_image(images[t:t + 1])
            no_prompt = seg.no_prompt(1, images.device)
            out = seg.step(state, t, feats, sparse_BNC=no_prompt, mask_input=first if t == 0 else None,
                           multimask=seg.sam.multimask_output_for_tracking)
            got.append(out.high_res_logits)
    got = torch.cat(got)
    assert expected[1:].std() > 0.01 and (expected[1:] > 0).any()  # the frames are not degenerate
    assert (expected[1:] - expected[1:].mean(0)).abs().max() > 1e-3  # and differ from frame to frame
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    # the bank stayed bounded: the conditioning frame plus what later frames could still select
    assert len(state.memories) <= seg.memory.num_memories + stride
