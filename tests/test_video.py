"""Ours, for motion: the video projector (block-causal across frames, cached by the engine exactly), the dense
motion target (which object lies under each visual token, how it moves) and the data that feeds it."""
import numpy as np
import pytest
import torch

from glus.data.synth.language import caption, caption_motion
from glus.vocabulary import MOTION_CLASSES
from glus.infer.engine import FaithfulLoop, StreamingEngine, pass_frames
from glus.model.mllm.video import VideoProjector
from glus.transforms import clip_geometry, clip_input
from tests.model_helpers import inference_setup


pytestmark = pytest.mark.usefixtures("one_thread")


def test_context_tokens_never_see_the_query_frames_and_windows_end_on_the_last_slot():
    torch.manual_seed(0)
    projector = VideoProjector(dim=16, layers=2, slots=8, places=4).eval()
    x = torch.randn(1, 8, 4, 16)
    other = x.clone()
    other[:, 4:] = torch.randn(1, 4, 4, 16)  # other query frames
    a, b = projector(x, 4), projector(other, 4)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=0)  # the context's tokens: the same
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3
    moved = x.clone()
    moved[:, 0] = torch.randn(4, 16)  # another context frame changes what the query tokens say
    assert (projector(moved, 4)[:, 4:] - a[:, 4:]).abs().max() > 1e-3
    # the context alone gives its part of the full prompt's output: what the engine caches once per video
    torch.testing.assert_close(projector(x[:, :4], 4), a[:, :4], rtol=0, atol=1e-6)
    assert projector.frame_slots(6, 4) == [0, 1, 2, 3, 6, 7]  # a 2-frame window takes the last two slots
    assert projector.frame_slots(3, 0) == [5, 6, 7]
    with pytest.raises(ValueError, match="video_slots"):
        projector.frame_slots(9, 4)


@pytest.fixture(scope="module")
def video_setup(tmp_path_factory):
    return inference_setup(tmp_path_factory.mktemp("video"), seed=1, videos=4,
                           builder_args={"video_layers": 2, "clip_resize": "squash"})


@pytest.mark.parametrize("start,reverse", [(0, False), (6, True)])
def test_engine_with_a_video_projector_equals_the_faithful_loop(video_setup, start, reverse):
    """The engine caches the context once per video and relates each window to it; the faithful loop runs the
    training forward's prompt (context + window) from scratch at every frame."""
    _, index, _, model, tokenizer = video_setup
    assert model.mllm.video_projector is not None
    groups = index.by_video()
    vid = max(groups, key=lambda v: len(groups[v]))
    video, texts = index.videos[vid], [e.text for e in groups[vid]][:6]
    out = {}
    for name, cls in (("engine", StreamingEngine), ("faithful", FaithfulLoop)):
        logits = torch.zeros(len(texts), len(video.frames), 32, 32)
        engine = cls(model, tokenizer)
        for r in engine.propagate(engine.open(video, texts), start, reverse):
            logits[r.expressions, r.frame] = r.logits
        out[name] = logits
    visited = torch.zeros(len(video.frames), dtype=torch.bool)
    visited[pass_frames(len(video.frames), start, reverse)] = True
    per_frame = out["engine"].abs().amax(dim=(0, 2, 3))
    assert (per_frame[visited] > 0.01).all() and (per_frame[~visited] == 0).all()  # real logits, on the pass only
    torch.testing.assert_close(out["engine"], out["faithful"], rtol=0, atol=1e-4)


def test_motion_targets_take_the_object_with_the_largest_share_of_each_token(video_setup):
    """The tiny CLIP at 112 px: 8 x 8 patches of 14 px, pooled in strips of 4 -> 16 tokens, two per patch row."""
    _, _, _, model, _ = video_setup
    masks = torch.zeros(1, 2, 112, 112)  # one frame, two objects
    masks[0, 0, :14, :56] = 1.0          # object 0 fills token 0 (row 0, left half)
    masks[0, 1, :7, 56:63] = 1.0         # object 1: a 16th of token 1: too little to say
    masks[0, 1, 14:28, 56:112] = 1.0     # ... and all of token 3 (row 1, right half)
    masks[0, 0, 14:28, 0:28] = 1.0       # token 2: half object 0 ...
    masks[0, 1, 14:28, 28:42] = 1.0      # ... a quarter object 1: object 0 wins
    shares = model.mllm.token_shares(masks)
    assert shares.shape == (1, 16, 2)
    torch.testing.assert_close(shares[0, :4], torch.tensor([[1.0, 0.0], [0.0, 0.0625], [0.5, 0.25], [0.0, 1.0]]))
    targets = model.motion_targets([masks], [torch.tensor([5, 2])])
    assert targets.shape == (1, 1, 16)
    assert targets[0, 0, :4].tolist() == [5, -100, 5, 2] and (targets[0, 0, 4:] == -100).all()


def test_every_caption_gives_back_its_motion():
    class Obj:
        colour, shape = "red", "circle"

    for motion in MOTION_CLASSES:
        obj = Obj()
        obj.motion = motion
        assert caption_motion(caption(obj)) == motion
    assert caption_motion("the red circle moving left and the blue square that stops") is None
    assert caption_motion("the red circle") is None


def test_mask_geometry_follows_the_frames_into_clip():
    """A white square drawn in a wide frame lands where its mask lands, for both CLIP resizes."""
    frame = np.zeros((1, 120, 160, 3), np.uint8)
    frame[0, 30:70, 100:140] = 255
    mask = torch.zeros(1, 1, 120, 160)
    mask[0, 0, 30:70, 100:140] = 1.0
    for resize in ("crop", "squash"):
        pixels = clip_input(frame, 112, resize)[0, 0]
        bright = pixels > pixels.mean()
        covered = clip_geometry(mask, 112, resize)[0, 0] > 0.5
        iou = (bright & covered).sum() / (bright | covered).sum()
        assert covered.sum() > 100 and iou > 0.9, (resize, float(iou))


@pytest.mark.parametrize("labels", ["motion", "object"])
def test_the_dataset_gives_each_object_its_mask_and_the_generators_labels(synth_root, labels):
    from glus.data.cache import load_split
    from glus.data.clips import ClipDataset, ClipSpec
    from glus.data.synth.video import make_video
    from glus.vocabulary import DENSE_LABELS

    split = load_split(synth_root, "mevis/train")
    spec = ClipSpec(clip_size=112, clip_resize="squash", sam_size=128, object_motions=True, object_labels=labels)
    data = ClipDataset([split], [1.0], 8, spec, seed=0)
    checked = 0
    for i in range(4):
        item = data[i]
        vid = item["ids"][0][1]
        scene = make_video(0, "train", int(vid.split("_")[1])).scene  # the data of seed 0 (synth_root)
        classes = DENSE_LABELS[labels]
        truth = {str(o.obj_id): classes.index(o.motion if labels == "motion" else (o.colour, o.shape, o.motion))
                 for o in scene.objects}
        objects = data.motions[0][vid]
        assert item["object_masks"].shape == (8, len(objects), 112, 112)
        assert [truth[e.obj_ids[0]] for e, _ in objects] == item["object_motions"].tolist()
        assert item["object_masks"].amax(dim=(0, 2, 3)).min() > 0.5  # each object is seen in some frame
        checked += len(objects)
    assert checked >= 8


def test_selector_scorer_with_a_video_projector_equals_the_plain_forward(tmp_path, synth_root):
    """The selector from a GLUS export with a video projector: its cached scorer relates each target frame to the
    reference frames as its training forward does."""
    from glus.data.cache import load_split
    from glus.data.frames import load_frames
    from glus.data.samplers import inference_context_frames
    from glus.errors import GlusError
    from glus.infer.selector import SelectorScorer
    from glus.model.weights.export import export_untrained
    from glus.model.selector import ScorePromptBuilder, TinySelectorBuilder

    args = {"seed": 0, "clip_image_size": 112, "sam_image_size": 128, "clip_resize": "squash", "video_layers": 1}
    with pytest.raises(GlusError, match="video_slots >= 9"):
        TinySelectorBuilder(init_from=str(export_untrained(tmp_path / "eight", args))).build()
    export = export_untrained(tmp_path / "nine", {**args, "video_slots": 9})
    model, tokenizer = TinySelectorBuilder(init_from=str(export)).build()
    model.eval()
    prompts = ScorePromptBuilder(tokenizer, model.mllm.tokens_per_frame())
    index = load_split(synth_root, "mevis/train")
    vid = sorted(index.videos)[0]
    video, text = index.videos[vid], index.expressions_of(vid)[0].text
    scores = SelectorScorer(model, tokenizer, batch_frames=5).score_video(video, [text])
    T = len(video.frames)
    references = inference_context_frames(T, 8)
    clip = model.mllm.preprocess(load_frames(video, range(T)))
    with torch.no_grad():
        frames = torch.stack([clip[references + [t]] for t in range(T)])
        expected = model(frames, prompts.collate([prompts.build(text)] * T)).scores.numpy()
    np.testing.assert_allclose(scores[0], expected, rtol=0, atol=1e-4)
    assert np.ptp(expected) > 0


def test_motion_loss_is_the_cross_entropy_of_the_labelled_tokens_and_trains_the_projector():
    import torch.nn.functional as F

    from glus.model.build.tiny import TinyGLUSBuilder
    from tests.model_helpers import synthetic_batch

    model, tokenizer = TinyGLUSBuilder(clip_image_size=112, sam_image_size=128, clip_resize="squash",
                                       video_layers=1, pooling="2x2", loss_weights={"motion": 1.0}).build()
    batch = synthetic_batch(model, tokenizer)
    V, F_, K = batch.clip_frames.shape[0], batch.clip_frames.shape[1], model.mllm.tokens_per_frame()
    targets = torch.randint(0, len(MOTION_CLASSES), (V, F_, K))
    targets[torch.rand(V, F_, K) < 0.5] = -100
    batch.motion_targets = targets
    out = model(batch)
    losses = model.losses(out, batch)
    known = targets >= 0
    expected = F.cross_entropy(out.motion_logits[known], targets[known])
    torch.testing.assert_close(losses["motion"], expected)
    torch.testing.assert_close(losses["loss"], losses["ce"] + 2.0 * losses["bce"] + 0.5 * losses["dice"]
                               + losses["motion"])
    losses["motion"].backward()
    assert model.motion_head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mllm.video_projector.parameters()
               if p.requires_grad and p.dim() > 1)
    batch.motion_targets = None
    with pytest.raises(ValueError, match="object_motions"):
        model.losses(model(batch), batch)


def test_sine_init_gives_places_a_grid_code_and_slots_an_order():
    """video_init "sine": places of one row share the code's y half, of one column its x half; neighbouring
    places are closer than far ones; both tables start at the random init's norm."""
    from glus.model.mllm.video import VideoProjector

    v = VideoProjector(64, 1, 8, 64, init="sine")
    grid = v.place.weight.detach().view(8, 8, 64)
    assert torch.equal(grid[2, 0, :32], grid[2, 7, :32]) and torch.equal(grid[0, 5, 32:], grid[7, 5, 32:])
    assert (grid[3, 3] - grid[3, 4]).norm() < (grid[3, 3] - grid[3, 7]).norm()
    slots = v.frame.weight.detach()
    assert (slots[0] - slots[1]).norm() < (slots[0] - slots[7]).norm()
    for table in (v.place.weight, v.frame.weight):
        torch.testing.assert_close(table.norm(dim=1).mean(), torch.tensor(0.5 * 64 ** 0.5))
    with pytest.raises(ValueError, match="sine"):
        VideoProjector(64, 1, 8, 64, init="zeros")
