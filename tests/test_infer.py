"""The inference engine against the published loop, predict's resume after kill -9, and sharded prediction."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glus.data.cache import load_split
from glus.data.synth import write_synthetic
from glus.infer.engine import FaithfulLoop, StreamingEngine, window_frames
from glus.infer.paths import PARTIAL
from glus.infer.predict import assign_videos, predict_split
from glus.train.export import export_untrained, load_export

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("infer")
    write_synthetic(base / "data", seed=1, videos=8)
    export = export_untrained(base / "export", {"seed": 0, "clip_image_size": 112, "sam_image_size": 128})
    model, tokenizer, _ = load_export(export)
    return base, load_split(base / "data", "mevis/valid_u"), export, model, tokenizer


def collect(engine, video, texts):
    out = torch.zeros(len(texts), len(video.frames), 128, 128)
    for r in engine.run(video, texts):
        out[r.expressions, r.frame] = r.logits
    return out


def test_window_repeats_frame_zero_then_slides():
    assert window_frames(0, 4) == [0, 0, 0, 0]
    assert window_frames(2, 4) == [0, 0, 1, 2]
    assert window_frames(9, 4) == [6, 7, 8, 9]


def test_prompt_split_for_the_kv_cache_is_the_training_prompt(setup):
    _, _, _, model, tokenizer = setup
    engine = StreamingEngine(model, tokenizer)
    full = engine.prompts.build("the red circle moving left", 4)["input_ids"]
    prefix, suffix = engine.prompts.split_for_cache("the red circle moving left", 4)
    assert prefix == engine.prompts.split_for_cache("a blue square", 4)[0]  # shared by every expression
    assert full[: len(prefix) + len(suffix)] == prefix + suffix
    assert full[len(prefix) + len(suffix)] == engine.prompts.seg_id  # the suffix stops right before [SEG]


def test_engine_equals_the_faithful_loop(setup):
    _, index, _, model, tokenizer = setup
    groups = index.by_video()
    vid = max(groups, key=lambda v: len(groups[v]))
    video, texts = index.videos[vid], [e.text for e in groups[vid]]
    assert len(texts) >= 8 and len({len(t) for t in texts}) > 1  # batched, differently padded prompts
    fast = collect(StreamingEngine(model, tokenizer), video, texts)
    slow = collect(FaithfulLoop(model, tokenizer), video, texts)
    assert fast.abs().max() > 0.01  # real logits, not zeros
    assert torch.allclose(fast, slow, atol=1e-4, rtol=0)
    assert torch.equal(fast > 0, slow > 0)


def read_tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def reference(setup):
    base, index, _, model, tokenizer = setup
    out = base / "reference"
    summary = predict_split(model, tokenizer, index, out, batch_expressions=1, progress=False)
    assert summary.expressions_written == len(index.expressions)
    return out


def test_predict_writes_every_listed_frame_at_original_size_in_0_255(setup, reference):
    _, index, _, _, _ = setup
    for e in index.expressions:
        video = index.videos[e.video]
        files = sorted((reference / e.pred_dir).iterdir())
        assert [f.stem for f in files] == video.frames
        arr = np.asarray(Image.open(files[0]))
        assert arr.shape == (video.height, video.width) and set(np.unique(arr)) <= {0, 255}


def _predict_cmd(export, data_root, out, *extra):
    return [sys.executable, "-m", "glus.cli", "predict", "--ckpt", str(export), "--data", "mevis/valid_u",
            "--root", str(data_root), "--out", str(out), "--quiet", *extra]


def test_predict_resumes_after_kill_and_never_counts_a_partial_expression(setup, reference):
    base, index, export, model, tokenizer = setup
    out = base / "killed"
    proc = subprocess.Popen(_predict_cmd(export, base / "data", out, "--batch-expressions", "1"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in out.glob("*/*") if p.is_dir() and not p.name.endswith(PARTIAL)]
        if len(done) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"predict ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/*") if not p.name.endswith(PARTIAL)}
    assert 2 <= len(finished) < len(index.expressions)
    for folder in finished:  # every folder without the suffix is complete
        assert len(list(folder.iterdir())) == len(index.videos[folder.parent.name].frames)
    summary = predict_split(model, tokenizer, index, out, batch_expressions=1, progress=False)
    assert summary.expressions_skipped == len(finished)
    assert summary.expressions_written == len(index.expressions) - len(finished)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # finished work is not redone
    assert not list(out.rglob(f"*{PARTIAL}"))
    assert read_tree(out) == read_tree(reference)


def test_shards_run_concurrently_and_merge_to_the_single_process_output(setup, reference):
    base, index, export, _, _ = setup
    shards = assign_videos(index, 2)
    assert sorted(shards[0] + shards[1]) == sorted(index.videos) and not set(shards[0]) & set(shards[1])
    out = base / "sharded"
    procs = [subprocess.Popen(_predict_cmd(export, base / "data", out, "--batch-expressions", "1"), cwd=ROOT,
                              env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"},
                              stderr=subprocess.PIPE)
             for r in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    assert sorted(x.name for x in out.glob("_predict.*")) == ["_predict.rank0of2.json", "_predict.rank1of2.json"]
    assert read_tree(out) == read_tree(reference)
