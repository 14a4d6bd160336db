"""glus evaluate and glus submit on hand-made prediction folders (no model): exact numbers, problems reported,
submission layout and refusal, names that try to leave the output folder."""
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

import tests.fixtures as fx
from glus.cli import main
from glus.data.cache import load_split
from glus.eval.evaluate import EvaluationError, evaluate
from glus.eval.submit import SubmissionError, write_submission
from glus.infer.paths import UnsafePathError, safe_join
from tests.test_metrics import naive_f


def write_pred(root, pred_dir, frames, masks, value=255, size=None):
    folder = root / pred_dir
    folder.mkdir(parents=True, exist_ok=True)
    for name, m in zip(frames, masks):
        im = Image.fromarray(m.astype(np.uint8) * value, mode="L")
        (im.resize(size) if size else im).save(folder / f"{name}.png")


def union(a, b):
    return a if b is None else a | b


@pytest.fixture
def mevis(tmp_path):
    fx.mevis_layout(tmp_path, split="valid_u")
    pred = tmp_path / "pred"
    write_pred(pred, "vidA/0", fx.FRAMES, fx.OBJ_A)                # perfect, 0/255
    write_pred(pred, "vidA/1", fx.FRAMES, fx.OBJ_A, value=1)        # object A only, 0/1 PNGs
    return load_split(tmp_path, "mevis/valid_u"), pred


def test_mevis_numbers_are_the_hand_computed_ones(mevis):
    index, pred = mevis
    results, scored = evaluate(pred, index, progress=False)
    # expression 1 predicts A for A u B: |A| / |A u B| = 36/66, 36/64, then B is absent (J = 1)
    j1 = (36 / 66 + 36 / 64 + 1) / 3
    f1 = np.mean([naive_f(a, union(a, b)) for a, b in zip(fx.OBJ_A, fx.OBJ_B)])
    assert results["count"] == 2
    assert results["j"] == pytest.approx((1 + j1) / 2, abs=1e-12)
    assert results["f"] == pytest.approx((1 + f1) / 2, abs=1e-12)
    assert results["jf"] == pytest.approx((results["j"] + results["f"]) / 2)
    assert "0/1 and 0/255" in results["png_convention"]
    assert [(s.exp_id, s.frames) for s in scored.scores] == [("0", 3), ("1", 3)]


def test_parallel_scoring_gives_the_same_numbers(mevis):
    index, pred = mevis
    assert evaluate(pred, index, workers=2, progress=False)[0] == evaluate(pred, index, progress=False)[0]


def test_missing_and_missized_predictions_are_listed_then_fail_or_score_zero(mevis):
    index, pred = mevis
    (pred / "vidA/1/00001.png").unlink()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(pred / "vidA/0/00002.png")
    with pytest.raises(EvaluationError) as err:
        evaluate(pred, index, progress=False)
    text = str(err.value)
    assert "2 expression(s)" in text and "00001.png: missing" in text and "size 5x5, expected 16x12" in text
    results, _ = evaluate(pred, index, missing="zero", progress=False)
    assert results["count"] == 2 and results["j"] == 0 and results["f"] == 0
    assert results["problems"]["list"] == ["vidA/0", "vidA/1"]


def test_a_missing_folder_fails_before_any_decoding(mevis):
    index, pred = mevis
    for f in (pred / "vidA/1").iterdir():
        f.unlink()
    (pred / "vidA/1").rmdir()
    with pytest.raises(EvaluationError, match=r"vidA/1/ \(no folder\)"):
        evaluate(pred, index, progress=False)


def test_cli_writes_json_and_csv_and_exits_2_on_problems(mevis, tmp_path, capsys):
    _, pred = mevis
    out = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(pred), "--data", "mevis/valid_u", "--root", str(tmp_path),
                 "--out-json", str(out), "--workers", "1", "--quiet"]) == 0
    results = json.loads(out.read_text())
    assert {"j", "f", "jf", "count"} <= set(results) and 0 < results["jf"] <= 1
    assert out.with_suffix(".csv").read_text().count("\n") == 3
    (pred / "vidA/1/00000.png").unlink()
    assert main(["evaluate", "--pred", str(pred), "--data", "mevis/valid_u", "--root", str(tmp_path),
                 "--workers", "1", "--quiet"]) == 2
    assert "--missing zero" in capsys.readouterr().err


def test_revos_per_type_with_a_and_r(tmp_path):
    fx.revos_layout(tmp_path)
    index = load_split(tmp_path, "revos/valid")
    pred = tmp_path / "pred"
    write_pred(pred, "MOSE/vidA/0", fx.FRAMES, fx.OBJ_A)                          # referring: perfect
    write_pred(pred, "MOSE/vidA/1", fx.FRAMES, [np.zeros((fx.H, fx.W))] * 3)      # reasoning: empty
    results, _ = evaluate(pred, index, progress=False)                           # type 2 needs no prediction
    ref, rea = results["referring"], results["reasoning"]
    assert ref["j"] == ref["f"] == ref["a"] == ref["r"] == 1 and ref["count"] == 1
    # B is in frames 0 and 1 only: J = (0 + 0 + 1) / 3 -> 33.33 after per-expression rounding
    assert rea["j"] == pytest.approx(0.3333) and rea["r"] == 1  # nothing predicted, no false positive
    assert rea["a"] == pytest.approx(round(100 * (2 * (1 - 36 / 192) + 1) / 3, 2) / 100)
    assert results["j"] == pytest.approx((1 + 0.3333) / 2) and results["count"] == 2


def test_reasonvos_scores_only_annotated_frames(tmp_path):
    fx.reasonvos_layout(tmp_path)
    index = load_split(tmp_path, "reasonvos")
    pred = tmp_path / "pred"
    write_pred(pred, "mose_vidA_1/0", [fx.FRAMES[0], fx.FRAMES[2]], [fx.OBJ_A[0], fx.OBJ_A[2]])
    results, scored = evaluate(pred, index, progress=False)   # frame 1 has no ground truth and no PNG
    assert results["j"] == results["f"] == 1 and scored.scores[0].frames == 2


def test_a_server_split_is_not_scored(tmp_path):
    fx.mevis_layout(tmp_path, split="valid", with_masks=False)
    with pytest.raises(EvaluationError, match="glus submit"):
        evaluate(tmp_path / "pred", load_split(tmp_path, "mevis/valid"), progress=False)


def test_submission_layouts(tmp_path):
    fx.mevis_layout(tmp_path, split="valid", with_masks=False)
    fx.refytvos_layout(tmp_path)
    pred = tmp_path / "pred"
    for exp in ("0", "1"):
        write_pred(pred / "mevis", f"vidA/{exp}", fx.FRAMES, fx.OBJ_A)
        write_pred(pred / "ytvos", f"vidA/{exp}", ["00000", "00005", "00010"], fx.OBJ_A)
    info = write_submission(pred / "mevis", load_split(tmp_path, "mevis/valid"), tmp_path / "mevis.zip")
    names = sorted(zipfile.ZipFile(tmp_path / "mevis.zip").namelist())
    assert info["files"] == 6 and names[0] == "vidA/0/00000.png" and len(names) == 6
    write_submission(pred / "ytvos", load_split(tmp_path, "refytvos/valid"), tmp_path / "ytvos.zip")
    names = sorted(zipfile.ZipFile(tmp_path / "ytvos.zip").namelist())  # the test-only video is not expected
    assert names == [f"Annotations/vidA/{e}/{f}.png" for e in "01" for f in ("00000", "00005", "00010")]
    with zipfile.ZipFile(tmp_path / "ytvos.zip") as zf, zf.open(names[0]) as fh:
        assert np.array_equal(np.asarray(Image.open(fh)), fx.OBJ_A[0].astype(np.uint8) * 255)


def test_incomplete_submission_is_refused_with_every_problem(tmp_path):
    fx.mevis_layout(tmp_path, split="valid", with_masks=False)
    pred = tmp_path / "pred"
    write_pred(pred, "vidA/0", fx.FRAMES[:2], fx.OBJ_A)                 # frame 00002 missing
    write_pred(pred, "vidA/1", fx.FRAMES, fx.OBJ_A, value=1)            # 0/1 values
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(pred / "vidA/0/00001.png")  # wrong size
    with pytest.raises(SubmissionError) as err:
        write_submission(pred, load_split(tmp_path, "mevis/valid"), tmp_path / "out.zip")
    text = str(err.value)
    assert "5 problem(s)" in text and "00002.png: missing" in text and "size 4x4" in text and "0/255" in text
    assert not (tmp_path / "out.zip").exists()


def test_names_never_escape_the_output_folder(tmp_path):
    assert safe_join(tmp_path, "MOSE/vidA/0") == tmp_path / "MOSE" / "vidA" / "0"
    for bad in ("../evil/0", "/etc/0", "a/../../b", "a//b", "a\\..\\b", ""):
        with pytest.raises(UnsafePathError):
            safe_join(tmp_path, bad)
    # a metadata entry naming the video "../evil": refused, nothing is read or zipped outside pred/
    ds = fx.mevis_layout(tmp_path, split="valid", with_masks=False) / "valid"
    meta = json.loads((ds / "meta_expressions.json").read_text())
    meta["videos"]["../evil"] = dict(meta["videos"]["vidA"])
    (ds / "meta_expressions.json").write_text(json.dumps(meta))
    fx.write_frames(ds / "evil", fx.FRAMES)
    pred = tmp_path / "pred"
    for exp in ("0", "1"):
        write_pred(pred, f"vidA/{exp}", fx.FRAMES, fx.OBJ_A)
        write_pred(tmp_path, f"evil/{exp}", fx.FRAMES, fx.OBJ_A)  # would be picked up by a naive join
    with pytest.raises(SubmissionError, match=r"unsafe prediction folder '\.\./evil/0'"):
        write_submission(pred, load_split(tmp_path, "mevis/valid"), tmp_path / "out.zip")
