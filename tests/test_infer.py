"""The inference engine against the published loop, predict's resume after kill -9, and sharded prediction."""
import json
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

from glus.data.samplers import query_window
from glus.infer.engine import FaithfulLoop, StreamingEngine, pass_frames
from glus.infer.paths import PARTIAL
from glus.infer.predict import assign_videos, predict_split
from tests.model_helpers import inference_setup

ROOT = Path(__file__).resolve().parents[1]
# One thread in every process of this module, the in-process reference included: two shards on two cores do not
# oversubscribe them (4 threads spinning on 2 cores made the sharded test 6x slower), and the masks, compared byte
# for byte, come from the same reduction order everywhere (a logit at 0 may round either way with another).
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return inference_setup(tmp_path_factory.mktemp("infer"), seed=1, videos=8)


def test_inference_never_imports_the_training_code(setup):
    _, _, export, _, _ = setup
    code = ("import sys; import glus.cli, glus.infer.predict; from glus.model.weights.load import load_model; "
            "load_model(sys.argv[1]); print(sorted(m for m in sys.modules if m.startswith('glus.train')))")
    out = subprocess.run([sys.executable, "-c", code, str(export)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1] == "[]"


def collect(engine, video, texts, start=0, reverse=False):
    out = torch.zeros(len(texts), len(video.frames), 32, 32)  # low-resolution logits of the 128-px tiny SAM-2
    seen = []
    for r in engine.propagate(engine.open(video, texts), start, reverse):
        out[r.expressions, r.frame] = r.logits
        seen.append(r.frame)
    return out, seen


def test_windows_grow_then_slide_as_published_in_both_directions():
    order = pass_frames(10, 0, reverse=False)
    assert [query_window(order, i, 4) for i in range(6)] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4],
                                                          [2, 3, 4, 5]]
    back = pass_frames(10, 6, reverse=True)
    assert back == [6, 5, 4, 3, 2, 1, 0]
    assert [query_window(back, i, 4) for i in (0, 1, 4, 6)] == [[6], [6, 5], [5, 4, 3, 2], [3, 2, 1, 0]]
    assert pass_frames(10, 6, reverse=False) == [6, 7, 8, 9]
    with pytest.raises(ValueError, match="outside"):
        pass_frames(10, 10, reverse=False)


def test_prompt_split_for_the_kv_cache_is_the_training_prompt(setup):
    _, _, _, model, tokenizer = setup
    engine = StreamingEngine(model, tokenizer)
    full = engine.prompts.build("the red circle moving left", 4)["input_ids"]
    prefix, suffix = engine.prompts.split_for_cache("the red circle moving left", 4)
    assert prefix == engine.prompts.split_for_cache("a blue square", 4)[0]  # shared by every expression
    assert full[: len(prefix) + len(suffix)] == prefix + suffix
    assert full[len(prefix) + len(suffix)] == engine.prompts.seg_id  # the suffix stops right before [SEG]


@pytest.mark.parametrize("start,reverse", [(0, False), (5, True)])
def test_engine_equals_the_faithful_loop(setup, start, reverse):
    _, index, _, model, tokenizer = setup
    groups = index.by_video()
    vid = max(groups, key=lambda v: len(groups[v]))
    video, texts = index.videos[vid], [e.text for e in groups[vid]]
    assert len(texts) >= 8 and len({len(t) for t in texts}) > 1  # batched, differently padded prompts
    fast, seen = collect(StreamingEngine(model, tokenizer), video, texts, start, reverse)
    slow, _ = collect(FaithfulLoop(model, tokenizer), video, texts, start, reverse)
    assert seen == pass_frames(len(video.frames), start, reverse)  # every frame of the pass once, in order
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
                            env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def test_torchrun_shards_merge_to_the_single_process_output(setup, reference):
    """`torchrun --nproc_per_node=2 -m glus predict`: the real launcher (standalone rendezvous), two ranks at
    once; every expression is written by exactly one rank, and the union equals the single-process output."""
    base, index, export, _, _ = setup
    shards = assign_videos(index, 2)
    assert sorted(shards[0] + shards[1]) == sorted(index.videos) and not set(shards[0]) & set(shards[1])
    out, log = base / "sharded", base / "torchrun.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "glus",
           *_predict_cmd(export, base / "data", out, "--batch-expressions", "1")[3:]]
    # output to a file, not a pipe: a pipe nobody reads while waiting blocks its writer once its buffer is full
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ONE_THREAD, stdout=sink, stderr=subprocess.STDOUT)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    summaries = [json.loads(f.read_text()) for f in sorted(out.glob("_predict.*"))]
    assert [tuple(s["shard"]) for s in summaries] == [(0, 2), (1, 2)]
    written = sum(s["expressions_written"] for s in summaries)
    assert written == len(index.expressions) and all(s["expressions_skipped"] == 0 for s in summaries)
    assert read_tree(out) == read_tree(reference)
