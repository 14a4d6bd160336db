"""Every `glus` subcommand that reads an input, given a missing one: a single `glus: error:` message naming the
path and the fix, exit 2, no traceback, and nothing written (no output folder, no run folder, no `latest`)."""
import subprocess
import sys
from pathlib import Path

import pytest

from glus.cli import main

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

# name -> (arguments, the path the message must name); {W} is an empty working folder (the current directory),
# {S} the synthetic data root, {E} a tiny export. Paths under {W} named "missing-*" do not exist.
CASES = {
    "data check": (["data", "check", "{W}/missing-root/mevis", "--format", "mevis"], "{W}/missing-root/mevis"),
    "data index": (["data", "index", "--root", "{W}/missing-root", "--data", "mevis/valid_u"],
                   "{W}/missing-root/mevis"),
    "predict, checkpoint": (["predict", "--ckpt", "{W}/missing-export", "--data", "mevis/valid_u", "--root", "{S}",
                             "--out", "{W}/pred-out"], "{W}/missing-export"),
    "predict, data root": (["predict", "--ckpt", "{E}", "--data", "mevis/valid_u", "--root", "{W}/missing-root",
                            "--out", "{W}/pred-out"], "{W}/missing-root/mevis"),
    "evaluate, predictions": (["evaluate", "--pred", "{W}/missing-pred", "--data", "mevis/valid_u", "--root", "{S}"],
                              "{W}/missing-pred"),
    "evaluate, data root": (["evaluate", "--pred", "{W}/pred", "--data", "mevis/valid_u", "--root", "{W}/missing-root",
                             "--out-json", "{W}/results.json"], "{W}/missing-root/mevis"),
    "submit, predictions": (["submit", "--pred", "{W}/missing-pred", "--data", "mevis/valid", "--root", "{S}",
                             "--out", "{W}/submission.zip"], "{W}/missing-pred"),
    "submit, data root": (["submit", "--pred", "{W}/pred", "--data", "mevis/valid", "--root", "{W}/missing-root",
                           "--out", "{W}/submission.zip"], "{W}/missing-root/mevis"),
    "visualize, predictions": (["visualize", "--pred", "{W}/missing-pred", "--data", "mevis/valid_u", "--root", "{S}",
                                "--out", "{W}/vis"], "{W}/missing-pred"),
    "visualize, data root": (["visualize", "--pred", "{W}/pred", "--data", "mevis/valid_u", "--root",
                              "{W}/missing-root", "--out", "{W}/vis"], "{W}/missing-root/mevis"),
    "study compare-runs": (["study", "compare-runs", "{W}/missing-run", "{W}/missing-control"], "{W}/missing-run"),
    "fit, recipe file": (["fit", "--runs", "{W}/runs", "--config", "{W}/missing-recipe.yaml"],
                         "{W}/missing-recipe.yaml"),
    "fit, weights": (["fit", "--runs", "{W}/runs", "--config", f"{RECIPES}/glus_standard.yaml"],
                     "checkpoints/LISA-7B-v1"),
    "fit, data root override": (["fit", "--runs", "{W}/runs", "--config", f"{RECIPES}/vos_synthetic.yaml",
                                 "--data.init_args.stream", "false", "--data.init_args.root", "{W}/missing-root"], "{W}/missing-root/mevis"),
    "fit, short data root override": (["fit", "--runs", "{W}/runs", "--config", f"{RECIPES}/vos_synthetic.yaml",
                                       "--data.stream", "false", "--data.root", "{W}/missing-root"], "{W}/missing-root/mevis"),
    "fit, resume folder": (["fit", "--runs", "{W}/runs", "--resume", "{W}/missing-run", "--config",
                            f"{RECIPES}/synthetic.yaml"], "{W}/missing-run"),
    "fit, resume latest": (["fit", "--runs", "{W}/runs", "--resume", "latest", "--config",
                            f"{RECIPES}/synthetic.yaml"], "{W}/runs/synthetic/latest"),
}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from glus.model.weights.export import export_untrained

    return export_untrained(tmp_path_factory.mktemp("export") / "export", {"seed": 0, "clip_image_size": 112,
                                                                           "sam_image_size": 128})


def tree(folder: Path) -> list[str]:
    """Every entry under `folder`, links included (a dangling `latest` counts)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("case", CASES)
def test_a_missing_input_is_one_message_exit_2_and_nothing_written(case, tmp_path, synth_root, export, capsys,
                                                                   monkeypatch):
    work = tmp_path / "work"
    (work / "pred").mkdir(parents=True)  # an existing (empty) prediction folder, for the data-root cases
    work = work.resolve()
    monkeypatch.chdir(work)  # the recipes' relative paths (checkpoints/, data/) are missing here too

    argv, missing = CASES[case]
    argv = [a.format(W=work, S=synth_root, E=export) for a in argv]
    missing = missing.format(W=work)
    before = tree(work)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("glus: error:") and "Traceback" not in err, err
    assert missing in err, err
    assert tree(work) == before, "a command that failed on a missing input wrote something"


def test_fit_with_missing_inputs_prints_only_the_message_as_a_console_command(tmp_path):
    """In a real process too: Lightning's own logging (e.g. its seed line) goes to a stderr that capsys does
    not see, so one run checks that the message is all of stderr's start, before LightningCLI says anything."""
    out = subprocess.run([sys.executable, "-m", "glus.cli", "fit", "--runs", str(tmp_path / "runs"), "--config",
                          str(RECIPES / "glus_standard.yaml")], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("glus: error: 5 input(s)"), out.stderr[-3000:]
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()
