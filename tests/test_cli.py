"""`glus` end to end: help, synth, check on broken datasets (every problem listed, non-zero exit)."""
import json
import shutil
import subprocess
import sys

from glus.cli import main
from tests import fixtures as fx


def test_help_runs_as_a_console_command():
    out = subprocess.run([sys.executable, "-m", "glus.cli", "--help"], capture_output=True, text=True, check=True)
    assert "data" in out.stdout
    out = subprocess.run([sys.executable, "-m", "glus.cli", "data", "check", "--help"], capture_output=True,
                         text=True, check=True)
    assert "--format" in out.stdout


def test_check_lists_every_problem(tmp_path, synth_root, capsys):
    shutil.copytree(synth_root / "mevis", tmp_path / "mevis")
    frames = tmp_path / "mevis/train/JPEGImages/train_0000"
    (frames / "00003.jpg").unlink()                                        # missing frame
    data = (frames / "00004.jpg").read_bytes()
    (frames / "00004.jpg").write_bytes(data[: len(data) // 2])             # truncated frame
    masks_file = tmp_path / "mevis/train/mask_dict.json"
    masks = json.loads(masks_file.read_text())
    masks["0"][1] = fx.rle(fx.box(0, 3, 0, 3))                            # RLE of the wrong size
    masks_file.write_text(json.dumps(masks))
    meta_file = tmp_path / "mevis/train/meta_expressions.json"
    meta = json.loads(meta_file.read_text())
    exps = meta["videos"]["train_0001"]["expressions"]
    exps["0"]["anno_id"] = [123456]                                        # unknown object id
    exps["1"]["exp"] = ""                                                  # empty expression
    meta_file.write_text(json.dumps(meta))

    assert main(["data", "check", str(tmp_path / "mevis"), "--format", "mevis"]) == 1
    out = capsys.readouterr().out
    assert "5 problem(s)" in out
    assert "video train_0000, frame 00003: frame file is missing" in out
    assert "frame 00004: frame does not decode" in out
    assert "RLE size [12, 16] differs from the frame size [120, 160]" in out
    assert "video train_0001, expression 0: anno id 123456 is not in the mask file" in out
    assert "video train_0001, expression 1: empty expression text" in out


def test_check_of_a_wrong_folder_fails_with_the_expected_layout(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path), "--format", "revos"]) == 1
    assert "no split of format revos found" in capsys.readouterr().out


def test_palette_object_that_never_appears(tmp_path, capsys):
    fx.refytvos_layout(tmp_path)
    path = tmp_path / "refytvos/meta_expressions/train/meta_expressions.json"
    meta = json.loads(path.read_text())
    meta["videos"]["vidA"]["expressions"]["1"]["obj_id"] = "7"
    path.write_text(json.dumps(meta))
    assert main(["data", "check", str(tmp_path / "refytvos"), "--format", "refytvos"]) == 1
    assert "object 7 never appears in any annotation" in capsys.readouterr().out


def test_data_index_reports_a_bad_split_cleanly(tmp_path, capsys):
    assert main(["data", "index", "--root", str(tmp_path), "--data", "mevis/valid_u"]) == 2
    assert "glus: error:" in capsys.readouterr().err
