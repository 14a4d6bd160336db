"""The plain VOS path: clips, the model's propagation, `glus vos` (streaming, exact resume, clear errors),
first-appearance evaluation, and a short fit whose export reloads."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from glus.data.cache import load_split
from glus.data.masks import MaskReader
from glus.data.vos_clips import VOSClipDataset, VOSClipSpec, video_objects
from glus.infer import vos_job
from glus.infer.vos import propagate, run_pass
from glus.infer.vos_job import VOSJobError, run_vos_job
from glus.model.weights.export import export_model
from glus.model.weights.load import load_export
from glus.model.vos import VOSBuilder

ROOT = Path(__file__).resolve().parents[1]
SPLIT = "mevis/valid_u"
GATED = {"class_path": "glus.model.memory.gated_linear.GatedLinearMemory", "init_args": {"key_dim": 8, "value_dim": 16}}


@pytest.fixture(scope="module")
def vos_export(tmp_path_factory):
    """An untrained tiny VOS export (gated-linear memory), its parameters jittered so no part is zero."""
    builder = {"class_path": "glus.model.vos.VOSBuilder",
               "init_args": {"sam_config": "tiny", "sam_image_size": 128, "memory": GATED, "train_image_encoder": True}}
    model, _ = VOSBuilder(**builder["init_args"]).build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    recipe = {"model": {"class_path": "glus.train.vos.VOSModule", "init_args": {"builder": builder}}}
    out = export_model(model, None, tmp_path_factory.mktemp("vos") / "export", recipe)
    return out, load_export(out)[0]


@pytest.fixture(scope="module")
def video(synth_root):
    """(frames folder, frame names, palette mask of frame 3 as a file, the label map)."""
    index = load_split(synth_root, SPLIT)
    vid = sorted(index.videos)[0]
    v = index.videos[vid]
    reader = MaskReader(index)
    labels = np.zeros((v.height, v.width), np.uint8)
    for k, (e, o) in enumerate(video_objects(index.by_video()[vid])):
        labels[reader.object_mask(e, o, 3)] = k + 1
    assert len(np.unique(labels)) >= 3  # at least two objects on the given frame
    folder = Path(synth_root).parent / "vos_mask"
    folder.mkdir(exist_ok=True)
    im = Image.fromarray(labels, mode="P")
    im.putpalette([0, 0, 0, 250, 0, 0, 0, 250, 0, 0, 0, 250, 250, 250, 0] + [90] * (3 * 251))
    im.save(folder / f"{v.frames[3]}.png")
    return Path(v.frame_dir), v.frames, folder / f"{v.frames[3]}.png", labels


def test_clips_start_on_visible_objects_and_are_pure_functions_of_the_index(synth_root):
    index = load_split(synth_root, "mevis/train")
    ds = VOSClipDataset(index, 20, VOSClipSpec(num_frames=5, max_objects=2, max_skip=3, sam_size=128), seed=3)
    for i in range(6):
        item = ds[i]
        T = len(item["frames"])
        assert item["sam"].shape == (T, 3, 128, 128) and item["masks"].shape[:2] == (len(item["objects"]), T)
        assert 1 <= len(item["objects"]) <= 2 and item["masks"][:, 0].flatten(1).any(1).all()
        steps = np.diff(item["frames"])
        assert (steps >= 0).all() and len(set(steps[steps > 0])) <= 1 and steps.max() <= 3
    again = VOSClipDataset(index, 20, ds.spec, seed=3)[4]
    assert again["frames"] == ds[4]["frames"] and torch.equal(again["masks"], ds[4]["masks"])


def test_a_pass_resumed_from_its_saved_state_equals_the_uninterrupted_pass(vos_export, video, tmp_path):
    _, model = vos_export
    folder, names, _, labels = video
    frames = [np.asarray(Image.open(folder / f"{n}.jpg").convert("RGB")) for n in names]
    given = torch.from_numpy(np.stack([labels == k for k in (1, 2)]))
    full = [(t, x) for t, x, _ in run_pass(model, frames.__getitem__, given, 3, len(frames))]
    for t, _, state in run_pass(model, frames.__getitem__, given, 3, len(frames)):
        if t == 7:
            torch.save({"state": state, "last": t}, tmp_path / "s.pt")
            break
    saved = torch.load(tmp_path / "s.pt", weights_only=False)
    rest = [(t, x) for t, x, _ in run_pass(model, frames.__getitem__, given, 3, len(frames),
                                           resume=(saved["state"], saved["last"]))]
    assert [t for t, _ in rest] == list(range(8, len(frames)))
    for (t, a), (u, b) in zip(full[5:], rest):
        assert t == u and torch.equal(a, b)
    both = dict(propagate(model, frames.__getitem__, given, 3, len(frames)))
    assert sorted(both) == list(range(len(frames)))  # every frame once, both directions
    start = both[3] > 0  # the given frame comes back as given (SAM-2's mask-as-output, resized)
    iou = (start & given).sum() / (start | given).sum()
    assert iou > 0.9


def test_vos_job_writes_palette_pngs_and_resumes_exactly_after_a_crash(vos_export, video, tmp_path, monkeypatch):
    export, model = vos_export
    folder, names, mask, _ = video
    reference = tmp_path / "reference"
    summary = run_vos_job(model, export, folder, mask, reference, progress=False)
    assert summary["written"] == len(names) and summary["start"] == names[3] and summary["objects"] == [1, 2, 3, 4][
        :len(summary["objects"])]
    out = Image.open(reference / f"{names[3]}.png")
    assert out.mode == "P" and out.getpalette()[:6] == [0, 0, 0, 250, 0, 0]
    assert set(np.unique(np.asarray(out))) <= {0, *summary["objects"]}

    crashed, calls = tmp_path / "crashed", {"n": 0}
    real_write = vos_job.write_png

    def failing_write(path, labels, palette):
        calls["n"] += 1
        if calls["n"] == 9:  # in the forward pass, after the snapshot at its 6th frame
            raise KeyboardInterrupt
        real_write(path, labels, palette)

    monkeypatch.setattr(vos_job, "write_png", failing_write)
    with pytest.raises(KeyboardInterrupt):
        run_vos_job(model, export, folder, mask, crashed, snapshot_every=3, progress=False)
    monkeypatch.setattr(vos_job, "write_png", real_write)
    assert (crashed / ".vos" / "forward.pt").is_file() and not (crashed / ".vos" / "forward.done").exists()
    before = {p.name: p.stat().st_mtime_ns for p in crashed.glob("*.png")}
    again = run_vos_job(model, export, folder, mask, crashed, snapshot_every=3, progress=False)
    assert again["written"] == len(names) - 6  # the frames up to the last snapshot are kept
    kept = [names[t] + ".png" for t in range(3, 9)]
    assert all((crashed / k).stat().st_mtime_ns == before[k] for k in kept)
    for p in sorted(reference.glob("*.png")):
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(crashed / p.name))), p.name
    assert run_vos_job(model, export, folder, mask, crashed, snapshot_every=3, progress=False)["written"] == 0


def test_vos_job_errors_name_the_file_and_the_fix(vos_export, video, tmp_path):
    export, model = vos_export
    folder, _, mask, labels = video
    with pytest.raises(VOSJobError, match="--start 99999: no such frame"):
        run_vos_job(model, export, folder, mask, tmp_path / "a", start="99999", progress=False)
    Image.fromarray(np.zeros_like(labels)).save(tmp_path / "empty.png")
    with pytest.raises(VOSJobError, match="empty.png: the mask holds no object"):
        run_vos_job(model, export, folder, tmp_path / "empty.png", tmp_path / "b", progress=False)
    Image.fromarray(labels[:-8]).save(tmp_path / "small.png")
    with pytest.raises(VOSJobError, match="small.png: the mask is .* but the frames are"):
        run_vos_job(model, export, folder, tmp_path / "small.png", tmp_path / "c", progress=False)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(VOSJobError, match="nothing: no frames"):
        run_vos_job(model, export, tmp_path / "nothing", mask, tmp_path / "d", progress=False)


def test_first_appearance_evaluation_gives_each_object_at_its_first_visible_frame(vos_export, synth_root):
    from glus.eval.vos_eval import evaluate_vos, first_appearances, predict_objects

    _, model = vos_export
    gt = np.zeros((3, 6, 8, 8), bool)
    gt[0, 0:, 2:4, 2:4] = True
    gt[1, 2:, 5:7, 5:7] = True  # enters at frame 2; object 2 never appears
    assert first_appearances(gt) == [0, 2, None]
    frames = np.zeros((6, 8, 8, 3), np.uint8)
    pred = predict_objects(model, frames, gt)
    assert not pred[2].any()
    result = evaluate_vos(model, synth_root, SPLIT, max_videos=1, progress=False)
    assert 0 <= result["jf"] <= 1 and result["count"] == len(result["scores"]) > 0 and result["by_kind"]


def test_fit_two_steps_and_the_export_reloads_as_a_vos_model(tmp_path, synth_root):
    from glus.train.cli import fit

    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 2, "log_every_n_steps": 1},
        "model": {"init_args": {"warmup_steps": 1, "total_steps": 2,
                                "evaluation": {"root": str(synth_root), "split": SPLIT, "max_videos": 1}}},
        "data": {"init_args": {"batch_size": 1, "steps_per_epoch": 2, "num_workers": 0,
                               "clip": {"num_frames": 3, "max_objects": 2, "sam_size": 128}}}}))
    cli = fit(["--config", str(ROOT / "recipes" / "vos_synthetic.yaml"), "--config", str(override),
               "--config", str(ROOT / "recipes" / "memory" / "mca_tiny.yaml")],
              runs_root=str(tmp_path / "runs"), wandb="disabled")
    assert cli.trainer.global_step == 2
    run = (tmp_path / "runs" / "vos_synthetic" / "latest").resolve()
    metrics = yaml.safe_load((run / "vos_metrics.json").read_text())
    assert metrics["steps"] == 2 and 0 <= metrics["jf"] <= 1
    loaded, tokenizer, recipe = load_export(run / "export")
    assert tokenizer is None and type(loaded.segmenter.memory).__name__ == "MCAMemory"
    for name, p in cli.model.model.named_parameters():
        assert torch.equal(p, dict(loaded.named_parameters())[name]), name


# ---- sparse mode --------------------------------------------------------------------------------------------

def test_anchor_positions():
    from glus.infer.sparse import anchor_positions

    assert anchor_positions(10, 4) == [0, 4, 8, 9]
    assert anchor_positions(9, 4) == [0, 4, 8]
    assert anchor_positions(5, 1) == [0, 1, 2, 3, 4]
    assert anchor_positions(7, 0) == [0]
    assert anchor_positions(1, 8) == [0]


@pytest.fixture(scope="module")
def glus_setup(tmp_path_factory):
    from tests.model_helpers import inference_setup

    return inference_setup(tmp_path_factory.mktemp("sparse"), seed=2, videos=4)


def _frames(result_iter):
    return {r.frame: r for r in result_iter}


def test_sparse_every_frame_is_the_engine_and_the_llm_runs_on_anchors_only(glus_setup, vos_export):
    from glus.infer.engine import StreamingEngine
    from glus.infer.sparse import SparseEngine

    _, index, _, model, tokenizer = glus_setup
    _, vos = vos_export
    video = index.videos[sorted(index.videos)[0]]
    texts = [e.text for e in index.expressions_of(video.id)][:2]
    n = len(video.frames)
    engine = StreamingEngine(model, tokenizer)
    dense = _frames(engine.propagate(engine.open(video, texts), 0))
    every1 = SparseEngine(model, tokenizer, vos, every=1)
    same = _frames(every1.propagate(every1.open(video, texts), 0))
    assert sorted(same) == list(range(n))
    for t in range(n):
        torch.testing.assert_close(same[t].logits, dense[t].logits, rtol=0, atol=0)

    calls = []
    real = model.mllm.hidden_states
    sparse = SparseEngine(model, tokenizer, vos, every=4)
    try:
        model.mllm.hidden_states = lambda *a, **k: calls.append(1) or real(*a, **k)
        out = _frames(sparse.propagate(sparse.open(video, texts), 0))
    finally:
        del model.mllm.hidden_states
    anchors = sorted(set(range(0, n, 4)) | {n - 1})
    assert sorted(out) == list(range(n)) and len(calls) == 1 + len(anchors)  # the context prefix + one per anchor
    assert all(out[t].logits.shape == dense[t].logits.shape for t in range(n))


def test_sparse_gaps_blend_the_two_directions_by_distance(glus_setup, vos_export):
    from glus.infer.sparse import SparseEngine
    from glus.infer.vos import encoder_of, run_order
    from glus.data.frames import load_frames

    _, index, _, model, tokenizer = glus_setup
    _, vos = vos_export
    video = index.videos[sorted(index.videos)[1]]
    texts = [e.text for e in index.expressions_of(video.id)][:2]
    sparse = SparseEngine(model, tokenizer, vos, every=4)
    out = _frames(sparse.propagate(sparse.open(video, texts), 0))
    encode = encoder_of(vos, lambda t: load_frames(video, [t])[0])
    size = out[0].logits.shape[-2:]

    def carried(anchor, frames, t):
        res = {f: x for f, x, _, _ in run_order(vos, encode, out[anchor].logits > 0, frames, len(video.frames),
                                                   joint_objects=False)}
        return torch.nn.functional.interpolate(res[t][:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

    # frames 5, 6, 7 between anchors 4 and 8: the forward pass from 4 weighs 3/4, 1/2, 1/4 (the nearer anchor
    # weighs more; at 6 alone swapped weights would pass)
    for t, w in ((5, 0.75), (6, 0.5), (7, 0.25)):
        forward, backward = carried(4, [4, 5, 6, 7], t), carried(8, [8, 7, 6, 5], t)
        assert not torch.allclose(forward, backward)
        torch.testing.assert_close(out[t].logits, w * forward + (1 - w) * backward)


@pytest.mark.parametrize("memory", ["none", "sam2_bank", "gated_linear", "mca"])
def test_every_trainable_parameter_gets_a_gradient_from_one_clip(memory, synth_root):
    """What DDP and DeepSpeed require (no unused trainable parameters), for each memory of the recipes."""
    spec = yaml.safe_load((ROOT / "recipes" / "memory" / f"{memory}_tiny.yaml").read_text())
    memory_spec = spec["model"]["init_args"]["builder"]["init_args"]["memory"]
    from glus.model.vos import VOSClipBatch

    torch.manual_seed(0)
    model, _ = VOSBuilder("tiny", sam_image_size=128, memory=memory_spec, train_image_encoder=True,
                          segmenter={"train_high_res_convs": True}).build()
    ds = VOSClipDataset(load_split(synth_root, "mevis/train"), 4, VOSClipSpec(num_frames=4, max_objects=2,
                                                                                  sam_size=128))
    item = ds[0]
    clip = VOSClipBatch(item["sam"], item["masks"])
    model.losses(model(clip), clip)["loss"].backward()
    # None: outside the graph (DDP fails on it); a zero gradient is data (e.g. no object absent in this clip)
    silent = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not silent


def test_the_real_vos_recipe_parses_and_names_its_inputs(synth_root):
    """recipes/vos_gated_linear.yaml at its real settings, built on the tiny SAM-2 (no checkpoint offline)."""
    from glus.model.resolve import instantiate
    from glus.train.preflight import required_inputs

    recipe = yaml.safe_load((ROOT / "recipes" / "vos_gated_linear.yaml").read_text())
    needed = {p for p, _ in required_inputs(recipe)}
    assert {"checkpoints/sam2/sam2.1_hiera_large.pt", "data/mevis"} <= needed
    builder = recipe["model"]["init_args"]["builder"]["init_args"]
    assert builder["memory"]["init_args"] == {"key_dim": 64, "value_dim": 256, "normaliser": "scalar"}
    assert not builder["train_image_encoder"] and recipe["trainer"]["gradient_clip_val"] == 3.0
    builder.update(sam_config="tiny", sam_checkpoint=None, sam_image_size=128)
    recipe["data"]["init_args"].update(root=str(synth_root), num_workers=0, clip={"num_frames": 3, "sam_size": 128})
    module = instantiate({**recipe["model"], "init_args": {**recipe["model"]["init_args"], "evaluation": None}})
    memory = module.model.segmenter.memory
    assert type(memory).__name__ == "GatedLinearMemory" and memory.key_dim == 64 and memory.value_dim == 256
    assert not any(p.requires_grad for p in module.model.segmenter.sam.image_encoder.parameters())
    data = instantiate(recipe["data"])
    data.setup("fit")
    assert len(data.dataset) > 0


def test_drift_windows_score_from_each_objects_first_appearance_and_at_the_end():
    """The object appears at frame 2: the first window is frames 2-3 (J 1 and 1/2: 0.75), not frames 0-1 where
    both masks are empty (J 1); the last window is frames 4-5 (J 1 and 0)."""
    from glus.eval.vos_eval import window_scores

    gt = np.zeros((6, 4, 4), bool)
    gt[2:, 0:2, 0:2] = True
    pred = gt.copy()
    pred[3, 0, :] = False  # half the object on frame 3: J 0.5
    pred[5] = False        # lost on the last frame: J 0
    first, last = window_scores("v", "0", pred, gt, 2)
    assert first.j == pytest.approx(0.75) and first.frames == 2
    assert last.j == pytest.approx(0.5) and last.frames == 2


def test_the_vos_table_adds_each_runs_gain_over_the_control_and_its_drift_on_long_videos(tmp_path):
    import json

    from glus.eval.vos_eval import vos_table

    def run(name, jf, long=None):
        folder = tmp_path / name
        (folder / "long").mkdir(parents=True)
        metric = {"jf": jf, "j": jf - 0.01, "f": jf + 0.01, "by_kind": {"motion": {"jf": jf, "count": 3}}}
        (folder / "vos_metrics.json").write_text(json.dumps(metric))
        if long:
            (folder / "long" / "vos_metrics.json").write_text(json.dumps(
                {**metric, "first_50": {"jf": long[0]}, "last_50": {"jf": long[1]}}))
        return folder

    table = vos_table({"none": run("a", 0.25), "gated": run("b", 0.8, (0.9, 0.7))}, tmp_path / "t", control="none")
    head, _, none, gated = table.splitlines()
    assert head.endswith("| vs control | long: first 50 | last 50 | change |")
    assert gated.endswith("| 0.800 (3) | +0.550 | 0.900 | 0.700 | -0.200 |")
    assert none.endswith("| +0.000 | - | - | - |")
    assert json.loads((tmp_path / "t.json").read_text())["gated"]["long"] == {"window": 50, "first": 0.9, "last": 0.7}
