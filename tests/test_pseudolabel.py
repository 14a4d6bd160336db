"""Pseudo-labels: rows against an independent computation, the deterministic subset, resume after kill -9,
sharding, and the refusal to mix settings in one folder."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from glus.data.cache import load_split
from glus.data.index import MaskSource
from glus.data.masks import MaskReader
from glus.data.synth import write_synthetic
from glus.errors import GlusError
from glus.eval.metrics import f_per_frame
from glus.cli import main
from glus.train.pseudolabel import SCHEMA, pseudolabel_split, read_pseudolabels, select_videos
from glus.infer.engine import StreamingEngine
from glus.infer.jobs import JobSettingsError, assign_videos, read_job_settings
from glus.io import tree_hash
from glus.model.weights.export import export_untrained
from glus.model.weights.load import load_model

ROOT = Path(__file__).resolve().parents[1]
SPLIT = "mevis/train"  # 8 videos with videos=8 (valid_u gets 4): enough for a subset, shards and a kill
KEY = ("video", "exp_id", "frame_index")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("pseudolabel")
    write_synthetic(base / "data", seed=1, videos=8, progress=False)
    export = export_untrained(base / "export", {"seed": 0, "clip_image_size": 112, "sam_image_size": 128})
    model, tokenizer, _ = load_model(export)
    return base, load_split(base / "data", SPLIT, cache_dir=base / "cache"), export, model, tokenizer


@pytest.fixture(scope="module")
def reference(setup):
    """An uninterrupted single-process run: 4 of the 8 videos."""
    base, index, export, model, tokenizer = setup
    out = base / "reference"
    summary = pseudolabel_split(model, tokenizer, index, out, ckpt=export, fraction=0.5, seed=0, progress=False)
    assert (summary.videos_written, summary.videos_skipped) == (4, 0)
    table = read_pseudolabels(out)
    assert summary.rows == table.num_rows
    return out, table


def sort_rows(table: pa.Table) -> list[dict]:
    return table.sort_by([(k, "ascending") for k in KEY]).to_pylist()


def naive_iou(pred_HW: np.ndarray, gt_HW: np.ndarray) -> float:
    """Intersection over union of one frame, written out (not glus.eval.metrics): 1 when both are empty."""
    inter, union = int(np.logical_and(pred_HW, gt_HW).sum()), int(np.logical_or(pred_HW, gt_HW).sum())
    return 1.0 if union == 0 else inter / union


def test_one_row_per_expression_and_frame_scored_as_an_independent_computation(setup, reference):
    base, index, export, model, tokenizer = setup
    out, table = reference
    assert table.schema == SCHEMA
    settings = read_job_settings(out)
    assert settings["ckpt_hash"] == tree_hash(export) and settings["videos"] == select_videos(index, 0.5, 0)
    groups = index.by_video()
    expected = [(v, e.exp_id, t) for v in settings["videos"] for e in groups[v]
                for t in range(len(index.videos[v].frames))]
    rows = table.to_pylist()
    assert sorted((r["video"], r["exp_id"], r["frame_index"]) for r in rows) == sorted(expected)
    assert len(rows) == len(expected)
    assert all(r["iou"] == r["j"] and r["split"] == SPLIT for r in rows)
    assert all(r["frame_name"] == index.videos[r["video"]].frames[r["frame_index"]] for r in rows)
    for vid in settings["videos"]:  # rows by expression (index order), then frame
        mine = [(r["exp_id"], r["frame_index"]) for r in rows if r["video"] == vid]
        assert mine == [(e.exp_id, t) for e in groups[vid] for t in range(len(index.videos[vid].frames))]

    vid = min(settings["videos"], key=lambda v: len(groups[v]))  # one engine batch, as the job ran it
    video, exprs, reader = index.videos[vid], groups[vid], MaskReader(index)
    pred = np.zeros((len(exprs), len(video.frames), video.height, video.width), dtype=bool)
    for r in StreamingEngine(model, tokenizer).run(video, [e.text for e in exprs]):
        pred[r.expressions, r.frame] = r.masks_at(model, video.height, video.width).numpy()
    got = {(r["exp_id"], r["frame_index"]): r for r in rows if r["video"] == vid}
    ious = []
    for k, e in enumerate(exprs):
        gt = reader.targets(e, range(len(video.frames)))
        f = f_per_frame(pred[k], gt)
        for t in range(len(video.frames)):
            row = got[(e.exp_id, t)]
            ious.append(naive_iou(pred[k, t], gt[t]))
            assert row["j"] == pytest.approx(ious[-1], abs=1e-6)
            assert row["f"] == pytest.approx(f[t], abs=1e-6)
            assert row["present"] == bool(gt[t].any())
    assert len(set(np.round(ious, 4))) > 2  # real, varied scores, not a constant
    assert any(r["present"] for r in rows)


def test_rows_load_with_datasets(setup, reference):
    from datasets import load_dataset

    base, _, _, _, _ = setup
    out, table = reference
    ds = load_dataset("parquet", data_files=str(out / "rows" / "**" / "*.parquet"), split="train",
                      cache_dir=str(base / "hf-cache"))
    assert ds.num_rows == table.num_rows
    assert ds.features["iou"].dtype == "float32" and ds.features["frame_index"].dtype == "int32"
    assert sorted(zip(*(ds[k] for k in KEY))) == sorted(zip(*(table[k].to_pylist() for k in KEY)))


def test_subset_is_deterministic_and_covers_the_videos_with_ground_truth(setup):
    _, index, _, _, _ = setup
    assert select_videos(index, 0.5, 0) == select_videos(index, 0.5, 0)
    assert len(select_videos(index, 0.5, 0)) == 4 and len(select_videos(index, 0.01, 0)) == 1
    assert len({tuple(select_videos(index, 0.5, s)) for s in range(5)}) > 1
    assert select_videos(index, 1.0, 3) == sorted(index.videos)
    no_gt = sorted(index.videos)[0]  # a video whose expressions have no ground truth is never selected
    blind = dataclasses.replace(index, expressions=[
        dataclasses.replace(e, mask=MaskSource("none")) if e.video == no_gt else e for e in index.expressions])
    assert select_videos(blind, 1.0, 0) == sorted(index.videos)[1:]
    for bad in (0, 1.5, -0.1, float("nan")):
        with pytest.raises(GlusError, match="fraction"):
            select_videos(index, bad, 0)


def _cli(export, data_root, out, *extra) -> list[str]:
    return ["pseudolabel", "--ckpt", str(export), "--data", SPLIT, "--root", str(data_root), "--out", str(out),
            "--fraction", "0.5", "--seed", "0", "--quiet", *extra]


def _done(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (out / "rows").rglob("*.parquet") if not p.name.startswith(".")}


def test_resumes_after_kill_without_redoing_or_duplicating_rows(setup, reference):
    base, index, export, _, _ = setup
    out = base / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "glus.cli", *_cli(export, base / "data", out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not _done(out):
        time.sleep(0.02)
    assert proc.poll() is None, f"the job ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = _done(out)
    assert 1 <= len(finished) < 4
    assert main(_cli(export, base / "data", out)) == 0  # the same command resumes
    summary = json.loads((out / "_pseudolabel.rank0of1.json").read_text())
    assert (summary["videos_skipped"], summary["videos_written"]) == (len(finished), 4 - len(finished))
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # finished videos are not redone
    assert len(_done(out)) == 4 and not list(out.rglob(".*.tmp.*"))
    assert sort_rows(read_pseudolabels(out)) == sort_rows(reference[1])


def test_two_shards_give_the_single_process_rows(setup, reference):
    base, index, export, model, tokenizer = setup
    out = base / "sharded"
    kwargs = dict(ckpt=export, fraction=0.5, seed=0, progress=False)
    first = pseudolabel_split(model, tokenizer, index, out, shard=(0, 2), **kwargs)
    mine = set(_done(out))
    with pytest.raises(GlusError, match="not written yet"):  # one shard alone is not the job
        read_pseudolabels(out)
    second = pseudolabel_split(model, tokenizer, index, out, shard=(1, 2), **kwargs)
    theirs = set(_done(out)) - mine
    assert mine and theirs and first.videos_written + second.videos_written == 4
    assert second.videos_skipped == 0  # the shards' videos are disjoint
    shards = assign_videos(index, 2, read_job_settings(out)["videos"])
    assert {p.stem for p in mine} == set(shards[0]) and {p.stem for p in theirs} == set(shards[1])
    assert sort_rows(read_pseudolabels(out)) == sort_rows(reference[1])


def test_rerun_with_other_settings_is_refused(setup, reference):
    _, index, export, model, tokenizer = setup
    out, _ = reference
    before = _done(out)
    with pytest.raises(JobSettingsError, match="seed"):
        pseudolabel_split(model, tokenizer, index, out, ckpt=export, fraction=0.5, seed=1, progress=False)
    assert _done(out) == before


def test_a_failing_video_is_named_and_the_finished_ones_are_kept(setup, monkeypatch):
    import glus.train.pseudolabel as pl
    from glus.data.errors import DataError

    base, index, export, model, tokenizer = setup
    calls = []

    def fake(engine, reader, index, vid, exprs, batch, advance):
        calls.append(vid)
        if len(calls) == 1:
            return []
        raise (DataError("annotation PNG is missing") if len(calls) == 3 else ValueError("boom"))

    monkeypatch.setattr(pl, "label_video", fake)
    out = base / "failing"
    args = dict(ckpt=export, fraction=0.5, seed=0, progress=False)
    with pytest.raises(RuntimeError, match=r"failed on video 'train_\d+'.*boom.*Finished videos are kept.*"
                                           "again to resume") as err:
        pseudolabel_split(model, tokenizer, index, out, **args)
    assert not isinstance(err.value, GlusError)  # a bug keeps its traceback
    assert set(_done(out)) == {out / "rows" / f"{calls[0]}.parquet"}
    with pytest.raises(GlusError, match="annotation PNG is missing"):  # a fixable cause prints without traceback
        pseudolabel_split(model, tokenizer, index, out, **args)
    assert calls[2] == calls[1]  # the rerun resumed at the failed video

def test_a_write_cut_short_leaves_nothing_that_counts_as_done(setup, reference, monkeypatch):
    """A crash inside the parquet write (the moment a kill can corrupt a file): the video's file must not exist
    then, so the rerun writes it again. A plain write into the final path leaves half a file there, which a
    rerun takes for a finished video (this test then fails)."""
    import pyarrow.parquet as pq

    base, index, export, model, tokenizer = setup
    write_table, calls = pq.write_table, []

    class Killed(Exception):
        pass

    def cut_short(table, where, *args, **kwargs):
        calls.append(Path(where))
        write_table(table, where, *args, **kwargs)
        if len(calls) == 2:  # the second video: truncate what was written, then die
            Path(where).write_bytes(Path(where).read_bytes()[:100])
            raise Killed

    monkeypatch.setattr(pq, "write_table", cut_short)
    out = base / "cut"
    args = dict(ckpt=export, fraction=0.5, seed=0, progress=False)
    with pytest.raises(Killed):
        pseudolabel_split(model, tokenizer, index, out, **args)
    assert len(_done(out)) == 1 and not list(out.rglob(".*.tmp.*"))
    monkeypatch.setattr(pq, "write_table", write_table)
    summary = pseudolabel_split(model, tokenizer, index, out, **args)
    assert (summary.videos_skipped, summary.videos_written) == (1, 3)
    assert sort_rows(read_pseudolabels(out)) == sort_rows(reference[1])
