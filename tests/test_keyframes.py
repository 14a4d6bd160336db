"""Key frames: the published key-frame file read as published, prediction from a mid-video key frame (every frame
once, under its own name, forward then a fresh backward pass), and `glus keyframes` written from the scores."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from glus.data.index import Video
from glus.infer.engine import FaithfulLoop, StreamingEngine
from glus.infer.keyframe_job import key_frames
from glus.infer.keyframes import KeyFrameFileError, frame_position, keyframe_key, read_keyframes, write_keyframes
from glus.infer.predict import predict_split
from tests.model_helpers import inference_setup

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return inference_setup(tmp_path_factory.mktemp("keyframes"), seed=2, videos=4)


def test_a_key_frame_is_a_frame_number_looked_up_among_the_frame_names_as_published():
    video = Video("v", ["00003", "00007", "00045", "00046"], "d", 4, 4)
    assert frame_position(video, 45, "f") == 2       # the number of frame "00045", not position 45
    assert frame_position(video, "00007", "f") == 1  # a frame name is accepted too
    assert frame_position(video, "45", "f") == frame_position(video, 45.0, "f") == 2  # the published int(value)
    with pytest.raises(KeyFrameFileError, match="not a frame of video 'v'"):
        frame_position(video, 4, "f")
    with pytest.raises(KeyFrameFileError, match="not a frame number"):
        frame_position(video, 4.5, "f")


def test_the_published_file_is_read_with_missing_expressions_starting_at_frame_0(setup, tmp_path):
    _, index, _, _, _ = setup
    first, second, third = index.expressions[:3]
    n = len(index.videos[second.video].frames)
    table = {keyframe_key(first): 0, keyframe_key(second): int(index.videos[second.video].frames[n - 1]),
             "no_such_video_0": 3}
    (tmp_path / "kf.json").write_text(json.dumps(table))
    kf = read_keyframes(tmp_path / "kf.json", index)
    assert kf.start(first) == 0 and kf.start(second) == n - 1 and kf.start(third) == 0
    assert len(kf.missing) == len(index.expressions) - 2 and third.uid in kf.missing
    assert kf.unused == ["no_such_video_0"]
    assert f"{len(kf.missing)} not in the file start at their first frame" in kf.describe()
    # written back in the same format, it reads the same
    write_keyframes(tmp_path / "again.json", index, kf.starts)
    again = read_keyframes(tmp_path / "again.json", index)
    assert again.starts == kf.starts and not again.missing
    assert json.loads((tmp_path / "again.json").read_text())[keyframe_key(second)] == int(
        index.videos[second.video].frames[n - 1])
    (tmp_path / "bad.json").write_text(json.dumps([1, 2]))
    with pytest.raises(KeyFrameFileError, match="expected a JSON object"):
        read_keyframes(tmp_path / "bad.json", index)
    (tmp_path / "other.json").write_text(json.dumps({"another_split_video_0": 3}))
    with pytest.raises(KeyFrameFileError, match="names an expression of mevis/valid_u"):
        read_keyframes(tmp_path / "other.json", index)


def test_ties_go_to_the_earliest_frame():
    scores = pa.table({"video": ["a"] * 4 + ["b"] * 2, "exp_id": ["0"] * 4 + ["1"] * 2,
                       "frame_index": [0, 1, 2, 3, 0, 1], "score": [0.1, 0.9, 0.9, 0.2, 0.5, 0.5]})
    assert key_frames(scores) == {"a/0": 1, "b/1": 0}


def _masks(folder: Path, frames: list[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"{f}.png")) > 0 for f in frames])


def _pass(engine, video, texts, start, reverse) -> dict[int, np.ndarray]:
    state = engine.open(video, texts)
    return {r.frame: r.masks_at(engine.model, video.height, video.width).numpy()
            for r in engine.propagate(state, start, reverse)}


def _reordered_pass(engine, video, texts, order: list[int], monkeypatch) -> dict[int, np.ndarray]:
    """The oracle of a pass from a key frame, taken from the plain pass from frame 0 (no start, no reverse): a video
    whose frames are `order` (indices into `video`), read with the original video's context frames. Position i
    of that pass is frame order[i] of the original; a pass from k forward or backward must give the same."""
    import glus.infer.engine as engine_module
    from glus.data.samplers import inference_context_frames

    context = inference_context_frames(len(video.frames), engine.num_context)
    reordered = dataclasses.replace(video, frames=[video.frames[i] for i in order])
    monkeypatch.setattr(engine_module, "inference_context_frames", lambda n, k: [order.index(c) for c in context])
    state = engine.open(reordered, texts)
    monkeypatch.undo()
    return {order[r.frame]: r.masks_at(engine.model, video.height, video.width).numpy()
            for r in engine.propagate(state, 0, False) if r.frame < len(order)}


@pytest.mark.parametrize("mode", ["engine", "faithful"])
def test_a_mid_video_key_frame_gives_every_frame_once_under_its_own_name(setup, tmp_path, mode, monkeypatch):
    _, index, _, model, tokenizer = setup
    vid = max(index.videos, key=lambda v: len(index.videos[v].frames))
    video = index.videos[vid]
    exprs = [e for e in index.expressions if e.video == vid][:2]
    sub = type(index)(index.name, index.root, {vid: video}, exprs)
    key = len(video.frames) // 2 + 1
    starts = {exprs[0].uid: key, exprs[1].uid: 0}
    write_keyframes(tmp_path / "kf.json", sub, starts)
    summary = predict_split(model, tokenizer, sub, tmp_path / "pred", mode=mode, progress=False,
                            keyframes=read_keyframes(tmp_path / "kf.json", sub))
    assert summary.started_mid_video == 1 and summary.expressions_written == 2
    from glus.infer.jobs import JobSettingsError

    with pytest.raises(JobSettingsError, match="keyframe_starts_sha256"):  # no resume from other start frames
        predict_split(model, tokenizer, sub, tmp_path / "pred", mode=mode, progress=False)
    engine = (StreamingEngine if mode == "engine" else FaithfulLoop)(model, tokenizer)
    n = len(video.frames)
    # forward from the key frame: frames key..n-1 first; backward, a fresh memory: key..0 first (then the rest, to
    # keep every frame in the video the oracle reads, as its context frames must be there)
    forward = _reordered_pass(engine, video, [exprs[0].text], [*range(key, n), *range(key)], monkeypatch)
    backward = _reordered_pass(engine, video, [exprs[0].text], [*range(key, -1, -1), *range(key + 1, n)],
                               monkeypatch)
    files = sorted(p.stem for p in (tmp_path / "pred" / exprs[0].pred_dir).iterdir())
    assert files == video.frames  # every frame exactly once, under its own name
    got = _masks(tmp_path / "pred" / exprs[0].pred_dir, video.frames)
    for t in range(len(video.frames)):
        want = forward[t] if t >= key else backward[t]
        assert np.array_equal(got[t], want[0]), t
    assert not all(np.array_equal(forward[t], backward[t]) for t in range(key))  # the passes differ: a check
    # the masks differ from frame to frame, so a mask under another frame's name would be caught above
    assert len({got[t].tobytes() for t in range(len(video.frames))}) > len(video.frames) // 2
    # the expression starting at frame 0 is the plain forward pass
    plain = _pass(engine, video, [exprs[1].text], 0, False)
    got0 = _masks(tmp_path / "pred" / exprs[1].pred_dir, video.frames)
    assert all(np.array_equal(got0[t], plain[t][0]) for t in range(len(video.frames)))


def test_predict_cli_reads_a_key_frame_file_and_reports_the_missing(setup, tmp_path):
    base, index, export, _, _ = setup
    e = index.expressions[0]
    (tmp_path / "kf.json").write_text(json.dumps({keyframe_key(e): 2}))
    cmd = [sys.executable, "-m", "glus.cli", "predict", "--ckpt", str(export), "--data", "mevis/valid_u", "--root",
           str(base / "data"), "--out", str(tmp_path / "pred"), "--quiet", "--keyframes", str(tmp_path / "kf.json")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{len(index.expressions) - 1} not in the file start at their first frame" in out.stdout
    summary = json.loads((tmp_path / "pred" / "_predict.rank0of1.json").read_text())
    assert summary["keyframes_missing"] == len(index.expressions) - 1 and summary["started_mid_video"] == 1
    (tmp_path / "bad.json").write_text(json.dumps({keyframe_key(e): 999}))
    out = subprocess.run(cmd[:-1] + [str(tmp_path / "bad.json")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "frame 999 is not a frame of video" in out.stderr


def test_glus_keyframes_writes_each_expressions_best_scored_frame_and_resumes(setup, tmp_path):
    base, index, _, _, _ = setup
    from glus.infer.jobs import read_job
    from glus.infer.keyframe_job import scores_dir
    from glus.model.weights.export import export_model
    from glus.model.resolve import instantiate

    spec = {"class_path": "glus.model.selector.TinySelectorBuilder", "init_args": {"seed": 0}}
    selector, tokenizer = instantiate(spec).build()
    export = export_model(selector, tokenizer, tmp_path / "selector",
                          {"model": {"class_path": "glus.train.selector.SelectorModule", "init_args": {"builder": spec}}})
    out = tmp_path / "kf.json"
    cmd = [sys.executable, "-m", "glus.cli", "keyframes", "--ckpt", str(export), "--data", "mevis/valid_u",
           "--root", str(base / "data"), "--out", str(out), "--quiet", "--batch-frames", "7"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    scores = read_job(scores_dir(out)).to_pandas()
    assert len(scores) == sum(len(index.videos[e.video].frames) for e in index.expressions)
    assert scores["score"].nunique() > len(index.expressions)  # real, varying scores
    table = json.loads(out.read_text())
    assert set(table) == {keyframe_key(e) for e in index.expressions}
    kf = read_keyframes(out, index)
    for e in index.expressions:
        rows = scores[(scores.video == e.video) & (scores.exp_id == e.exp_id)].sort_values("frame_index")
        assert kf.start(e) == int(np.argmax(rows["score"].to_numpy()))  # argmax: the first best frame
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and f"0 video(s) scored, {len(index.videos)} already scored" in again.stdout


def test_selector_quality_spearman_and_hit_rate_by_hand():
    import pandas as pd

    from glus.studies.keyframe_report import selector_quality

    truth = pd.DataFrame({"video": ["a"] * 4 + ["b"] * 3, "exp_id": ["0"] * 7, "frame_index": [0, 1, 2, 3, 0, 1, 2],
                          "iou": [0.1, 0.5, 0.9, 0.88, 0.3, 0.3, 0.3]})
    scores = truth[["video", "exp_id", "frame_index"]].assign(score=[0.0, 1.0, 2.0, 3.0, 5.0, 1.0, 2.0])
    q = selector_quality(scores, truth, {"a/0": 3, "b/0": 0})
    # a: ranks of iou (1, 2, 4, 3) against (1, 2, 3, 4): rho = 1 - 6 * 2 / (4 * 15) = 0.8; b has no ranking
    assert q["spearman"] == pytest.approx(0.8) and q["spearman_expressions"] == 1
    assert q["hit_rate"] == 1.0  # a: 0.88 is within 0.05 of 0.9; b: every frame is the best
    assert q["hit_rate_first_frame"] == 0.5 and q["hit_rate_random_frame"] == pytest.approx((2 / 4 + 1) / 2)
    assert selector_quality(scores, truth, {"a/0": 1, "b/0": 0})["hit_rate"] == 0.5
    with pytest.raises(ValueError, match="same split"):
        selector_quality(scores.iloc[:3], truth, {"a/0": 1, "b/0": 0})


def test_without_memory_a_frames_mask_does_not_depend_on_where_the_pass_starts(setup):
    _, index, _, model, tokenizer = setup
    from glus.model.memory import memory_off

    vid = max(index.videos, key=lambda v: len(index.videos[v].frames))
    video, text = index.videos[vid], [e.text for e in index.expressions if e.video == vid][:1]
    engine = StreamingEngine(model, tokenizer)

    def logits(start):
        return {r.frame: r.logits for r in engine.propagate(engine.open(video, text), start)}

    late = range(6, len(video.frames))  # from frame 6 the query windows of the two passes are the same
    before = (logits(0), logits(3))
    with memory_off(model):
        blind = (logits(0), logits(3))
    # with the memory, the start frame changes later frames; without it, nothing can
    assert max(float((before[0][t] - before[1][t]).abs().max()) for t in late) > 1e-3
    assert all(torch.equal(blind[0][t], blind[1][t]) for t in late)
    assert all(torch.equal(logits(0)[t], before[0][t]) for t in late)  # the memory is back


def test_the_report_scores_every_start_and_redoes_predictions_when_the_key_frames_change(setup, tmp_path):
    _, index, export, model, tokenizer = setup
    from glus.studies.keyframe_report import NO_MEMORY, STARTS, keyframe_report
    from glus.infer.jobs import VideoJob
    from glus.infer.keyframe_job import SCORES_SCHEMA, scores_dir

    vid = min(index.videos, key=lambda v: len(index.videos[v].frames))
    sub = type(index)(index.name, index.root, {vid: index.videos[vid]},
                      [e for e in index.expressions if e.video == vid][:3])
    kf = tmp_path / "kf.json"  # a selector's output: scores per frame, and the key-frame file
    job = VideoJob(scores_dir(kf), {"videos": [vid]}, [vid])
    job.start()
    T = len(sub.videos[vid].frames)
    rows = [{"split": sub.name, "video": vid, "exp_id": e.exp_id, "frame_index": t,
             "frame_name": sub.videos[vid].frames[t], "score": float(t == T - 1)} for e in sub.expressions
            for t in range(T)]
    job.write(vid, rows, SCORES_SCHEMA)
    write_keyframes(kf, sub, key_frames(job.read()))
    report = keyframe_report(model, tokenizer, sub, glus_ckpt=str(export), selector_file=kf, out=tmp_path / "r",
                             progress=False)
    assert list(report["rows"]) == [*STARTS, NO_MEMORY]
    assert report["rows"]["selector"]["started_mid_video"] == len(sub.expressions)  # all start at the last frame
    assert report["rows"]["first"]["count"] == len(sub.expressions)
    assert (tmp_path / "r" / "keyframes_table.md").read_text().count("\n| ") == 1 + len(STARTS) + 1
    from glus.studies.ablation import read_source  # each row alone is a source of `glus study ablation-table`

    for name, row in report["rows"].items():
        alone = read_source(tmp_path / "r" / "rows" / f"{name}.json")
        assert (alone["jf"], alone["count"], alone["key_frame"]) == (row["jf"], row["count"], name)
        assert {k: v["jf"] for k, v in alone["by_kind"].items()} == row["by_kind"]
    first_pred = {p: p.stat().st_mtime_ns for p in (tmp_path / "r" / "pred_first").rglob("*.png")}
    write_keyframes(kf, sub, {e.uid: 0 for e in sub.expressions})  # a retrained selector: other key frames
    again = keyframe_report(model, tokenizer, sub, glus_ckpt=str(export), selector_file=kf, out=tmp_path / "r",
                            progress=False)
    assert again["rows"]["selector"]["started_mid_video"] == 0
    assert again["rows"]["selector"]["jf"] == pytest.approx(again["rows"]["first"]["jf"])  # redone, not kept
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "r" / "pred_first").rglob("*.png")} == first_pred


def test_a_selector_export_given_to_predict_is_named(setup, tmp_path):
    base, _, _, _, _ = setup
    from glus.model.weights.export import export_model
    from glus.model.resolve import instantiate

    spec = {"class_path": "glus.model.selector.TinySelectorBuilder", "init_args": {"seed": 0}}
    export = export_model(*instantiate(spec).build(), tmp_path / "selector", {"model": {"init_args": {"builder": spec}}})
    cmd = [sys.executable, "-m", "glus.cli", "predict", "--ckpt", str(export), "--data", "mevis/valid_u", "--root",
           str(base / "data"), "--out", str(tmp_path / "pred"), "--quiet"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "is a key-frame selector export" in out.stderr and "glus keyframes" in out.stderr
