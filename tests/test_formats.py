"""Every reader on a small fixture in its real layout, through the unified index and the mask reader."""
import json
import shutil

import numpy as np
import pytest

from glus.data.cache import load_split
from glus.data.errors import DataError, ProblemLog
from glus.data.formats import SPLIT_NAMES, parse_split, read_dataset_dir
from glus.data.index import BINARY_PNG, NONE, PALETTE, RLE
from glus.data.masks import MaskReader
from tests import fixtures as fx


def test_mevis_train_union_and_absent_object(tmp_path):
    fx.mevis_layout(tmp_path)
    index = load_split(tmp_path, "mevis/train")
    assert index.name == "mevis/train" and list(index.videos) == ["vidA"]
    video = index.videos["vidA"]
    assert (video.height, video.width, video.frames) == (fx.H, fx.W, fx.FRAMES)
    both = index.expressions[1]
    assert both.text == "Both boxes." and both.obj_ids == ["0", "1"] and both.mask.kind == RLE
    reader = MaskReader(index)
    for t in range(3):
        expected = fx.OBJ_A[t] | (fx.OBJ_B[t] if fx.OBJ_B[t] is not None else False)
        got = reader.target(both, t)
        assert got.dtype == bool and np.array_equal(got, expected)  # boolean union, not a uint8 sum
    assert not reader.object_mask(both, 11, 2).any()  # null RLE: absent object -> empty mask


def test_mevis_reader_carries_the_synthetic_kind_and_caption(tmp_path):
    fx.mevis_layout(tmp_path)
    meta_file = tmp_path / "mevis" / "train" / "meta_expressions.json"
    meta = json.loads(meta_file.read_text())
    exps = meta["videos"]["vidA"]["expressions"]
    first, second = sorted(exps)[:2]
    exps[second].update(kind="plural", caption="the red square and the blue circle")
    meta_file.write_text(json.dumps(meta))
    index = load_split(tmp_path, "mevis/train")
    by_id = {e.exp_id: e for e in index.expressions}
    assert (by_id[second].kind, by_id[second].caption) == ("plural", "the red square and the blue circle")
    assert (by_id[first].kind, by_id[first].caption) == ("", "")  # a real benchmark's expression: no such field
    assert index.kinds() == {("vidA", second): "plural"}
    assert index.captions() == {("vidA", second): "the red square and the blue circle"}
    exps[second]["kind"] = 3
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match='"kind" must be a string') as err:
        read_dataset_dir(tmp_path / "mevis", "mevis", "train")
    assert "meta_expressions.json" in str(err.value) and second in str(err.value)


def test_mevis_valid_has_no_ground_truth(tmp_path):
    fx.mevis_layout(tmp_path, split="valid", with_masks=False)
    index = load_split(tmp_path, "mevis/valid")
    assert not index.has_ground_truth and all(e.mask.kind == NONE for e in index.expressions)
    with pytest.raises(DataError, match="no ground truth.*glus submit"):
        MaskReader(index).target(index.expressions[0], 0)


def test_mevis_v2_no_target_expression(tmp_path):
    fx.mevis_layout(tmp_path, no_target=True)
    index = read_dataset_dir(tmp_path / "mevis", "mevis2", "train")
    empty = index.expressions[2]
    assert not empty.has_target and index.summary()["no_target"] == 1
    assert not MaskReader(index).target(empty, 0).any()


def test_refytvos_valid_is_valid_minus_test_and_palette_masks(tmp_path):
    fx.refytvos_layout(tmp_path)
    valid = load_split(tmp_path, "refytvos/valid")
    assert list(valid.videos) == ["vidA"]  # vidT is listed in the test metadata: subtracted
    train = load_split(tmp_path, "refytvos/train")
    red, green = train.expressions
    assert red.mask.kind == PALETTE and red.mask.ids == (1,) and train.videos["vidA"].frames[1] == "00005"
    reader = MaskReader(train)
    # object 2 is drawn in front of object 1: palette masks are visible regions
    assert np.array_equal(reader.target(green, 0), fx.OBJ_B[0])
    assert np.array_equal(reader.target(red, 0), fx.OBJ_A[0] & ~fx.OBJ_B[0])
    assert np.array_equal(reader.target(red, 2), fx.OBJ_A[2])


def test_refytvos_valid_needs_test_metadata(tmp_path):
    fx.refytvos_layout(tmp_path, with_test=False)
    with pytest.raises(DataError, match="test meta_expressions.json not found") as err:
        load_split(tmp_path, "refytvos/valid")
    assert "meta_expressions/test/meta_expressions.json" in str(err.value)


def test_refdavis_uses_the_same_layout_without_subtraction(tmp_path):
    fx.refytvos_layout(tmp_path, name="refdavis", with_test=False)
    index = load_split(tmp_path, "refdavis/valid")
    assert index.name == "refdavis/valid" and len(index.expressions) == 2


def test_revos_type_ids_and_foreground(tmp_path):
    fx.revos_layout(tmp_path)
    index = load_split(tmp_path, "revos/valid")
    assert [e.type_id for e in index.expressions] == [0, 1, 2]
    assert list(index.videos) == ["MOSE/vidA"]
    reader = MaskReader(index)
    assert reader.foreground("MOSE/vidA", 0).sum() == 12 * 10
    assert np.array_equal(reader.target(index.expressions[0], 1), fx.OBJ_A[1])


def test_reasonvos_list_expressions_sparse_frames_and_pred_dir(tmp_path):
    fx.reasonvos_layout(tmp_path)
    index = load_split(tmp_path, "reasonvos")  # one split: the dataset name alone is enough
    (expr,) = index.expressions
    assert index.name == "reasonvos/test" and expr.mask.kind == BINARY_PNG
    assert expr.pred_dir == "mose_vidA_1/0"
    reader = MaskReader(index)
    assert reader.annotated_frames(expr) == [0, 2]
    assert reader.target(expr, 1) is None
    assert np.array_equal(reader.target(expr, 2), fx.OBJ_A[2])


def test_lvvis_converted_form_reads_like_mevis(tmp_path):
    folder = fx.mevis_layout(tmp_path)
    shutil.move(folder, tmp_path / "lvvis")
    index = load_split(tmp_path, "lvvis/train")
    assert index.name == "lvvis/train" and len(index.expressions) == 2


def test_split_names_are_explicit_and_unique():
    assert len(SPLIT_NAMES) == len(set(SPLIT_NAMES))
    assert {"mevis/valid_u", "mevis/valid", "refytvos/valid", "revos/valid"} <= set(SPLIT_NAMES)
    assert parse_split("mevis/valid_u") == ("mevis", "valid_u")
    with pytest.raises(DataError, match="unknown split 'mevis_valid'.*mevis/valid_u"):
        parse_split("mevis_valid")


def test_cache_is_reused_and_rebuilt_when_a_source_changes(tmp_path):
    fx.mevis_layout(tmp_path)
    first = load_split(tmp_path, "mevis/train")
    again = load_split(tmp_path, "mevis/train")
    assert [e.__dict__ for e in again.expressions] == [e.__dict__ for e in first.expressions]
    assert again.videos["vidA"] == first.videos["vidA"]
    meta_file = tmp_path / "mevis" / "train" / "meta_expressions.json"
    meta = json.loads(meta_file.read_text())
    meta["videos"]["vidA"]["expressions"]["0"]["exp"] = "a changed text, longer than before"
    meta_file.write_text(json.dumps(meta))
    assert load_split(tmp_path, "mevis/train").expressions[0].text == "a changed text, longer than before"


# ---- bad input: every error names the file, the video and the expression -------------------------------


def _meta(tmp_path):
    path = tmp_path / "mevis" / "train" / "meta_expressions.json"
    return path, json.loads(path.read_text())


def test_empty_expression_is_named(tmp_path):
    fx.mevis_layout(tmp_path)
    path, meta = _meta(tmp_path)
    meta["videos"]["vidA"]["expressions"]["1"]["exp"] = "  "
    path.write_text(json.dumps(meta))
    with pytest.raises(DataError) as err:
        load_split(tmp_path, "mevis/train")
    assert (err.value.video, err.value.expression, str(err.value.file)) == ("vidA", "1", str(path))
    assert "empty expression text" in str(err.value)


def test_skip_policy_counts_and_keeps_the_rest(tmp_path):
    fx.mevis_layout(tmp_path)
    path, meta = _meta(tmp_path)
    meta["videos"]["vidA"]["expressions"]["1"]["exp"] = ""
    path.write_text(json.dumps(meta))
    log = ProblemLog("skip")
    index = load_split(tmp_path, "mevis/train", log=log)
    assert [e.exp_id for e in index.expressions] == ["0"] and len(log) == 1
    assert "1 problem(s) skipped" in log.summary() and "empty expression text" in log.summary()


def test_json_not_in_the_format(tmp_path):
    fx.mevis_layout(tmp_path)
    path, _ = _meta(tmp_path)
    path.write_text(json.dumps({"videos": ["vidA"]}))
    with pytest.raises(DataError, match='top level must be') as err:
        load_split(tmp_path, "mevis/train")
    assert err.value.file == path
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_split(tmp_path, "mevis/train")


def test_missing_first_frame_is_named(tmp_path):
    fx.mevis_layout(tmp_path)
    frame = tmp_path / "mevis/train/JPEGImages/vidA/00000.jpg"
    frame.unlink()
    with pytest.raises(DataError, match="frame file is missing") as err:
        load_split(tmp_path, "mevis/train")
    assert err.value.file == frame and err.value.video == "vidA"


def test_rle_of_the_wrong_size(tmp_path):
    fx.mevis_layout(tmp_path)
    masks_file = tmp_path / "mevis/train/mask_dict.json"
    masks = json.loads(masks_file.read_text())
    masks["10"][1] = fx.rle(np.ones((fx.H + 1, fx.W), bool))
    masks_file.write_text(json.dumps(masks))
    index = load_split(tmp_path, "mevis/train")
    with pytest.raises(DataError, match=r"RLE size \[13, 16\] differs from the frame size \[12, 16\]") as err:
        MaskReader(index).target(index.expressions[0], 1)
    assert (err.value.video, err.value.expression, err.value.frame) == ("vidA", "0", "00001")


def test_unknown_anno_id(tmp_path):
    fx.mevis_layout(tmp_path)
    path, meta = _meta(tmp_path)
    meta["videos"]["vidA"]["expressions"]["0"]["anno_id"] = [99]
    path.write_text(json.dumps(meta))
    index = load_split(tmp_path, "mevis/train")
    with pytest.raises(DataError, match="anno id 99 is not in the mask file") as err:
        MaskReader(index).target(index.expressions[0], 0)
    assert err.value.expression == "0"


def test_bad_palette_object_id(tmp_path):
    fx.refytvos_layout(tmp_path)
    path = tmp_path / "refytvos/meta_expressions/train/meta_expressions.json"
    meta = json.loads(path.read_text())
    meta["videos"]["vidA"]["expressions"]["1"]["obj_id"] = "car"
    path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="palette index") as err:
        load_split(tmp_path, "refytvos/train")
    assert (err.value.video, err.value.expression) == ("vidA", "1")


def test_missing_mask_dict_names_the_fix(tmp_path):
    fx.mevis_layout(tmp_path)
    (tmp_path / "mevis/train/mask_dict.json").unlink()
    with pytest.raises(DataError, match="mask_dict.json not found.*Fix: split train ships its masks"):
        load_split(tmp_path, "mevis/train")
