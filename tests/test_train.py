"""Training: recipes, input checks, a tiny fit with export + reload, exact resume after kill -9, DeepSpeed on CPU."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from glus.model.resolve import instantiate

from glus.model.weights.load import load_export
from glus.train.preflight import MissingInputs, check_inputs

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

TINY = """
trainer: {max_steps: %(steps)d, log_every_n_steps: 1}
model:
  init_args:
    warmup_steps: 2
    total_steps: %(steps)d
    evaluation: %(evaluation)s
data:
  init_args:
    steps_per_epoch: 2
    num_workers: 0
"""


def tiny_config(tmp_path, steps=4, evaluation=None):
    """A few steps of the embedded default, whose training clips are streamed scenes (no data root)."""
    ev = "null" if evaluation is None else json.dumps(evaluation)
    path = tmp_path / f"tiny-{steps}.yaml"
    path.write_text(TINY % {"steps": steps, "evaluation": ev})
    return path


def losses_by_step(run_dir):
    rows = list(csv.DictReader(open(Path(run_dir) / "csv" / "metrics.csv")))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def test_every_recipe_parses_and_instantiates(synth_root):
    for path in sorted(RECIPES.glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        assert path.read_text().startswith("# ") and "glus fit --config recipes/" in path.read_text()
        model_spec, data_spec = recipe["model"], recipe["data"]
        if not model_spec["class_path"].endswith("GLUSModule"):
            continue  # the key-frame selector's recipes: tests/test_selector.py instantiates them
        real = {"LisaGLUSBuilder": ("checkpoints/LISA-7B-v1", "glus.model.build.tiny.TinyGLUSBuilder"),
                "QwenGLUSBuilder": ("checkpoints/Qwen2.5-VL-", "glus.model.build.qwen.TinyQwenGLUSBuilder")}
        kind = model_spec["init_args"]["builder"]["class_path"].rsplit(".", 1)[-1]
        if kind in real:  # a 7B-class recipe: its builder names its folders, its settings run on the tiny model
            folder, tiny = real[kind]
            builder = instantiate(model_spec["init_args"]["builder"])  # nothing heavy happens here
            assert any(p.startswith(folder) for p, _ in builder.required_paths()), path
            model_spec["init_args"]["builder"] = {"class_path": tiny}
            assert recipe["trainer"]["strategy"]["class_path"].endswith("DeepSpeedStrategy")
            assert recipe["trainer"]["precision"] == "bf16-mixed"  # every published setting: test_recipes.py
        model_spec["init_args"]["evaluation"] = None
        if not data_spec["class_path"].endswith("StreamedSynthDataModule"):  # streamed scenes need no root
            data_spec["init_args"]["root"] = str(synth_root)
            data_spec["init_args"]["mix"] = {"mevis/train": 1.0}
        module = instantiate(model_spec)
        data = instantiate(data_spec)
        data.setup("fit")
        assert module.model.mllm.tokens_per_frame() > 0 and len(data.dataset) > 0


def test_recipe_weights_and_schedule():
    additional = yaml.safe_load((RECIPES / "glus_additional.yaml").read_text())
    assert additional["data"]["init_args"]["mix"] == {"mevis/train": 40, "refytvos/train": 150, "refdavis/train": 4,
                                                      "revos/train": 30, "lvvis/train": 30}
    from glus.train.schedule import warmup_linear

    assert warmup_linear(0, 100, 3000) == pytest.approx(0.01) and warmup_linear(99, 100, 3000) == 1.0
    assert warmup_linear(1550, 100, 3000) == pytest.approx(0.5) and warmup_linear(3000, 100, 3000) == 0.0


def test_missing_inputs_are_listed_together(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = yaml.safe_load((RECIPES / "glus_standard.yaml").read_text())
    with pytest.raises(MissingInputs) as err:
        check_inputs(recipe)
    message = str(err.value)
    for path in ("checkpoints/LISA-7B-v1", "checkpoints/sam2/sam2_hiera_large.pt",
                 "checkpoints/clip-vit-large-patch14", "data/mevis", "data/refytvos"):
        assert path in message
    assert message.startswith("5 input(s)") and "data_prep/README.md" in message and "checkpoints/README.md" in message


def test_a_missing_stage_names_its_make_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no committed stage here: the default's motion stage is missing
    with pytest.raises(MissingInputs) as err:
        check_inputs(yaml.safe_load((RECIPES / "synthetic.yaml").read_text()))
    assert "checkpoints/synthetic/motion" in str(err.value) and "make motion-stage" in str(err.value)


def test_tiny_fit_writes_metrics_overlays_and_an_export_that_reloads(tmp_path, synth_root, capsys):
    from glus.train.cli import fit

    evaluation = {"root": str(synth_root), "split": "mevis/valid_u", "val_videos": 1, "max_videos": 1,
                  "overlays": 1, "initial": True}
    cli = fit(["--config", str(RECIPES / "synthetic.yaml"), "--config", str(tiny_config(tmp_path, 4, evaluation)),
               "--data.init_args.global_batch", "4"], runs_root=str(tmp_path / "runs"), wandb="offline")
    # the global batch sets the accumulation: 4 videos per step = 1 device x micro-batch 2 x accumulation 2
    assert cli.trainer.accumulate_grad_batches == 2
    assert "batch: global 4 = 1 device(s) x micro-batch 2 x accumulation 2" in capsys.readouterr().out
    run = (tmp_path / "runs" / "synthetic" / "latest").resolve()
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(0 <= metrics[k] <= 1 for k in ("j", "f", "jf")) and metrics["steps"] == 4 and "initial" in metrics
    assert sum(m["count"] for m in metrics["by_kind"].values()) == metrics["count"]
    assert list((run / "overlays").glob("*.gif")) and (run / "per_expression.csv").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "tensorboard").is_dir()
    assert list((run / "wandb").glob("offline-run-*"))
    assert len(losses_by_step(run)) == 4

    model, tokenizer, recipe = load_export(run / "export")
    from tests.model_helpers import synthetic_batch

    batch = synthetic_batch(model, tokenizer, videos=(0,), exps_per_video=(1,))
    with torch.no_grad():
        ours = model(batch).mask_logits
        theirs = cli.model.model.eval()(batch).mask_logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)

    from peft import PeftModel
    from transformers import LlamaForCausalLM

    from glus.model.build.tiny import tiny_llama_config

    base = LlamaForCausalLM(tiny_llama_config(len(tokenizer)))
    peft_model = PeftModel.from_pretrained(base, str(run / "export" / "adapter"))
    trained = dict(cli.model.model.mllm.language_model.named_parameters())
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            assert torch.equal(p, trained[name]), name


def test_resume_after_kill_repeats_the_uninterrupted_losses(tmp_path):
    steps = 24
    config = tiny_config(tmp_path, steps=steps)  # a checkpoint every 2 steps
    base = [sys.executable, "-m", "glus.cli", "fit", "--wandb", "disabled", "--config",
            str(RECIPES / "synthetic.yaml"), "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    whole = tmp_path / "whole"
    subprocess.run(base + ["--runs", str(whole)], check=True, env=env, capture_output=True)
    expected = losses_by_step((whole / "synthetic" / "latest").resolve())
    assert len(expected) == steps

    killed = tmp_path / "killed"
    proc = subprocess.Popen(base + ["--runs", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ckpt = None
    while time.time() < deadline and proc.poll() is None:  # kill -9 right after a checkpoint at step >= 4
        links = list(killed.glob("synthetic/*/checkpoints/last.ckpt"))
        target = links[0].resolve() if links else None
        if target is not None and target.is_file() and int(target.stem.split("step=")[1]) >= 4:
            proc.send_signal(signal.SIGKILL)
            ckpt = links[0]
            break
        time.sleep(0.02)
    proc.wait()
    assert ckpt is not None and proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    subprocess.run(base + ["--runs", str(killed), "--resume", "latest"], check=True, env=env, capture_output=True)
    resumed = losses_by_step((killed / "synthetic" / "latest").resolve())
    after = {s: l for s, l in resumed.items() if s >= done}
    assert 4 <= done < steps and max(after) == steps - 1
    assert after == {s: expected[s] for s in after}, "losses after resume differ from the uninterrupted run"


def test_deepspeed_zero2_fit_on_cpu(tmp_path):
    import lightning as L

    from glus.train.strategy import CPUDeepSpeedStrategy

    recipe = yaml.safe_load((RECIPES / "synthetic.yaml").read_text())
    recipe["model"]["init_args"]["evaluation"] = None
    recipe["data"]["init_args"].update(steps_per_epoch=3, num_workers=0)  # streamed scenes: no data root
    module, data = instantiate(recipe["model"]), instantiate(recipe["data"])
    before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    trainer = L.Trainer(accelerator="cpu", devices=1, strategy=CPUDeepSpeedStrategy(stage=2), max_steps=3,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(module, data)
    import deepspeed

    engine = trainer.strategy.model
    assert isinstance(engine, deepspeed.DeepSpeedEngine) and engine.zero_optimization_stage() == 2
    assert deepspeed.comm.comm.cdb.shm_comm_op is None  # gloo only: no JIT-compiled shared-memory op
    assert trainer.global_step == 3
    changed = [n for n, p in module.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(changed) > 0.5 * len(before)
    trainer.save_checkpoint(str(tmp_path / "ds.ckpt"))
    assert (tmp_path / "ds.ckpt").is_dir()  # a DeepSpeed checkpoint folder (per-rank optimizer shards)


def scored_run(folder, jf, kinds, per_kind=2):
    """A run folder whose metrics.json has overall J&F `jf` and, per kind, J = F = J&F = kinds[kind]."""
    folder.mkdir()
    by_kind = {k: {"j": v, "f": v, "jf": v, "count": per_kind} for k, v in kinds.items()}
    metrics = {"j": jf, "f": jf, "jf": jf, "count": per_kind * len(kinds), "by_kind": by_kind}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_runs_compare_adds_the_control_and_prints_both(tmp_path, capsys):
    from glus.studies.runs import merge_control

    main_run = scored_run(tmp_path / "main", 0.7, {"appearance": 0.8, "motion": 0.6})
    merged = merge_control(main_run, scored_run(tmp_path / "control", 0.2, {"appearance": 0.25, "motion": 0.15}))
    assert merged["control_blank_text"]["jf"] == 0.2 and merged["control_blank_text"]["by_kind"]["motion"]["jf"] == 0.15
    assert json.loads((main_run / "metrics.json").read_text()) == merged  # written back
    out = capsys.readouterr().out
    assert "control: text blanked" in out and "0.200" in out
    assert [line.split() for line in out.splitlines() if line.startswith("motion")] == [["motion", "2", "0.600", "0.150"]]


def test_runs_heldout_reports_each_kinds_largest_change_and_whether_it_holds(tmp_path, capsys):
    from glus.studies.runs import heldout_table

    ref = scored_run(tmp_path / "data_seed0", 0.70, {"appearance": 0.80, "motion": 0.60}, 50)
    one = scored_run(tmp_path / "data_seed1", 0.72, {"appearance": 0.88, "motion": 0.58}, 50)
    two = scored_run(tmp_path / "data_seed2", 0.69, {"appearance": 0.79, "motion": 0.56}, 50)
    table = heldout_table(ref, [one, two], 0.05, tmp_path / "heldout.json")
    rows = table["kinds"]
    assert rows["appearance"]["largest_change"] == pytest.approx(0.08) and not rows["appearance"]["within"]
    assert rows["motion"]["largest_change"] == pytest.approx(-0.04) and rows["motion"]["within"]
    assert rows["all"]["heldout"] == [0.72, 0.69] and rows["all"]["within"]
    assert json.loads((tmp_path / "heldout.json").read_text())["kinds"]["motion"]["within"] is True
    out = capsys.readouterr().out
    assert [line.split() for line in out.splitlines() if line.startswith("appearance")] == [
        ["appearance", "50", "0.800", "0.880", "0.790", "+0.080", "NO"]]

    (two / "metrics.json").write_text(json.dumps({"j": 0.7, "f": 0.7, "jf": 0.7, "count": 100, "by_kind": {}}))
    with pytest.raises(MissingInputs, match="kind 'appearance' is missing from .*data_seed2"):
        heldout_table(ref, [one, two])
