"""Ours: the [SEG] pointer (glus.model.pointer): each [SEG]'s map of its query frame's visual tokens, as SAM-2's
mask prompt; the same maps in training, in the streaming engine and in the faithful loop."""
import pytest
import torch

from glus.infer.engine import FaithfulLoop, StreamingEngine
from glus.model.pointer import last_frame_tokens, pointer_softmax_loss, pointer_targets, token_grid
from tests.model_helpers import inference_setup, synthetic_batch

pytestmark = pytest.mark.usefixtures("one_thread")

POINTER = {"video_layers": 1, "clip_resize": "squash", "pooling": "2x2", "pointer": True}


def test_token_grid_follows_the_pooling():
    assert token_grid(64, "2x2", 4) == (4, 4)
    assert token_grid(64, "none", 4) == (8, 8)
    assert token_grid(256, "strip", 4) == (16, 4)  # the published pooling: 4 patches side by side per token
    with pytest.raises(ValueError, match="grid"):
        token_grid(64, "strip", 3)
    with pytest.raises(ValueError, match="square"):
        token_grid(60, "none", 1)


def test_last_frame_tokens_are_the_last_image_slots_per_frame_in_prompt_order():
    ids = torch.tensor([[1, 9, 9, 2, 9, 9, 3], [9, 9, 4, 9, 9, 5, 0]])  # 9: the image slot, 2 tokens per frame
    hidden = torch.arange(14.)[None, :, None].expand(1, 14, 3).reshape(2, 7, 3)
    tokens = last_frame_tokens(hidden, ids, image_token_id=9, tokens_per_frame=2, frames=2)
    assert tokens.shape == (2, 2, 2, 3)
    assert tokens[0, :, :, 0].tolist() == [[1, 2], [4, 5]] and tokens[1, :, :, 0].tolist() == [[7, 8], [10, 11]]
    assert last_frame_tokens(hidden, ids, 9, 2, frames=1)[:, 0, :, 0].tolist() == [[4, 5], [10, 11]]


def test_pointer_targets_are_each_cells_share_of_the_mask():
    mask = torch.zeros(1, 8, 8)
    mask[0, :4, :2] = 1  # half of the top-left cell of a 2x2 grid
    assert pointer_targets(mask, (2, 2)).tolist() == [[[0.5, 0.0], [0.0, 0.0]]]


def test_the_softmax_pointer_loss_charges_mass_on_the_twin_and_skips_empty_frames():
    import math

    shares = torch.zeros(3, 2, 2)
    shares[0, 0, 0] = 0.5               # the object: half of one cell
    shares[1, 0, 0] = shares[1, 1, 1] = 0.25  # two cells alike: the target is half and half
    logits = torch.zeros(3, 2, 2)
    logits[0, 0, 0] = logits[0, 1, 1] = 3.0   # frame 0 lights the object and its twin alike
    loss = pointer_softmax_loss(logits, shares)
    assert loss.shape == (2,)  # frame 2 has no object: skipped
    torch.testing.assert_close(loss[0], torch.tensor(-math.log(math.exp(3) / (2 * math.exp(3) + 2))))
    torch.testing.assert_close(loss[1], torch.tensor(math.log(4.0)))
    sharp = logits.clone()
    sharp[0, 1, 1] = 0.0  # the twin dark: cheaper, which BCE per cell barely sees
    assert pointer_softmax_loss(sharp, shares)[0] < loss[0] - 0.5


def test_the_builder_refuses_a_pointer_over_a_cropped_frame():
    from glus.model.build.tiny import TinyGLUSBuilder

    with pytest.raises(ValueError, match="squash"):
        TinyGLUSBuilder(clip_resize="crop", pointer=True)


def test_the_pointer_loss_and_the_mask_loss_train_the_pointer_and_the_mask_prompt():
    import torch.nn.functional as F

    from glus.model.build.tiny import TinyGLUSBuilder

    model, tokenizer = TinyGLUSBuilder(clip_image_size=112, sam_image_size=128, **POINTER,
                                       loss_weights={"pointer": 1.0}).build()
    batch = synthetic_batch(model, tokenizer)
    out = model(batch)
    E, Q = out.mask_logits.shape[:2]
    assert out.pointer_logits.shape == (E, Q, 4, 4)
    losses = model.losses(out, batch)
    expected = torch.stack([F.binary_cross_entropy_with_logits(out.pointer_logits[e], pointer_targets(gt, (4, 4)))
                            for e, gt in enumerate(batch.masks)]).mean()
    torch.testing.assert_close(losses["pointer"], expected)
    torch.testing.assert_close(losses["loss"], losses["ce"] + 2.0 * losses["bce"] + 0.5 * losses["dice"]
                               + losses["pointer"])
    soft = TinyGLUSBuilder(clip_image_size=112, sam_image_size=128, **POINTER,
                           loss_weights={"pointer": 0.0, "pointer_softmax": 2.0}).build()[0]
    soft.load_state_dict(model.state_dict())
    soft_losses = soft.losses(out, batch)
    expected_soft = torch.cat([pointer_softmax_loss(out.pointer_logits[e], pointer_targets(gt, (4, 4)))
                               for e, gt in enumerate(batch.masks)]).mean()
    torch.testing.assert_close(soft_losses["pointer_softmax"], expected_soft)
    torch.testing.assert_close(soft_losses["loss"], soft_losses["ce"] + 2.0 * soft_losses["bce"]
                               + 0.5 * soft_losses["dice"] + 2.0 * expected_soft)
    (losses["bce"] + losses["dice"]).backward()  # the mask loss alone reaches the pointer, through the decoder
    downscaling = model.segmenter.sam.sam_prompt_encoder.mask_downscaling
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in downscaling.parameters())
    assert model.pointer.query.weight.grad.abs().sum() > 0 and model.pointer.key.weight.grad.abs().sum() > 0


def test_the_q_th_seg_points_at_the_q_th_query_frame():
    """Changing query frame 2's pixels moves the map of [SEG] 2, over that frame's tokens, and barely the maps of
    [SEG] 0 and 1 (rounding: the changed frame is encoded in the same batch, not causally read)."""
    from glus.model.build.tiny import TinyGLUSBuilder

    model, tokenizer = TinyGLUSBuilder(clip_image_size=112, sam_image_size=128, **POINTER).build()
    model.eval()
    batch = synthetic_batch(model, tokenizer)
    with torch.no_grad():
        before = model.language(batch).pointer_logits
        batch.clip_frames[:, 4 + 2] = torch.flip(batch.clip_frames[:, 4 + 2], dims=[-1])
        after = model.language(batch).pointer_logits
    changed = (after - before).abs().amax(dim=(0, 2, 3))
    assert changed[2] > 0.01 and changed[2] > 100 * changed[:2].max()


@pytest.fixture(scope="module")
def pointer_setup(tmp_path_factory):
    return inference_setup(tmp_path_factory.mktemp("pointer"), seed=1, videos=4, builder_args=POINTER)


@pytest.mark.parametrize("start,reverse", [(0, False), (6, True)])
def test_engine_with_the_pointer_equals_the_faithful_loop(pointer_setup, start, reverse):
    _, index, _, model, tokenizer = pointer_setup
    assert model.pointer is not None
    groups = index.by_video()
    vid = max(groups, key=lambda v: len(groups[v]))
    video, texts = index.videos[vid], [e.text for e in groups[vid]][:4]

    def run(cls):
        logits = torch.zeros(len(texts), len(video.frames), 32, 32)
        engine = cls(model, tokenizer)
        for r in engine.propagate(engine.open(video, texts), start, reverse):
            logits[r.expressions, r.frame] = r.logits
        return logits

    engine = run(StreamingEngine)
    torch.testing.assert_close(engine, run(FaithfulLoop), rtol=0, atol=1e-4)
    # the map reaches the decoder: without the pointer's query the masks change
    weight = model.pointer.query.weight.data.clone()
    model.pointer.query.weight.data.zero_()
    try:
        assert (run(StreamingEngine) - engine).abs().max() > 1e-3
    finally:
        model.pointer.query.weight.data.copy_(weight)
