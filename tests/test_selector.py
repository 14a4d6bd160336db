"""The key-frame selector: head and trainable set, the [SCORE] prompt, losses, the cached scorer against the plain
forward, the pseudo-label data (determinism, labels, bad tables), and a 3-step `glus fit` whose export reloads."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from glus.data.cache import load_split
from glus.data.frames import load_frames
from glus.data.samplers import inference_context_frames
from glus.model.weights.load import load_export
from glus.model.mllm.prompt import IGNORE_INDEX
from glus.model.selector import (SCORE_TOKEN, ScorePromptBuilder, TinySelectorBuilder, add_score_token,
                                 lisa_selector_7b_on_meta)
from glus.train.preflight import MissingInputs, check_inputs

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SPLIT = "mevis/train"


@pytest.fixture(scope="module")
def tiny():
    """A tiny selector from scratch (no init_from) and its prompt builder."""
    model, tokenizer = TinySelectorBuilder(seed=0).build()
    return model.eval(), tokenizer, ScorePromptBuilder(tokenizer, model.mllm.tokens_per_frame())


@pytest.fixture(scope="module")
def glus_export(tmp_path_factory):
    """An untrained export of the embedded default's GLUS (its video projector and frame slots included: the
    selector recipe must fit the export `make ablate` and `make train RECIPE=selector_synthetic` start from)."""
    from glus.model.weights.export import export_untrained

    builder = yaml.safe_load((RECIPES / "synthetic.yaml").read_text())["model"]["init_args"]["builder"]
    args = {k: v for k, v in builder["init_args"].items() if k != "mllm_init"}  # weights do not matter here
    return export_untrained(tmp_path_factory.mktemp("glus") / "export", args)


def write_labels(folder: Path, root: Path, videos: int = 3, seed: int = 0, drop: str | None = None,
                 rename_video: str | None = None) -> Path:
    """A pseudo-label table as `glus pseudolabel` writes it: LABELS/rows/<video>.parquet + LABELS/_job.json.
    Every 3rd row is an absent target; `drop` leaves a column out, `rename_video` a video the split lacks."""
    index = load_split(root, SPLIT)
    rng = np.random.default_rng(seed)
    chosen = sorted(index.videos)[:videos]
    for vid in chosen:
        video, rows = index.videos[vid], []
        for e in index.expressions_of(vid):
            for t, name in enumerate(video.frames):
                iou = float(rng.uniform())
                rows.append({"split": SPLIT, "video": rename_video or vid, "exp_id": e.exp_id, "frame_index": t,
                             "frame_name": name, "iou": iou, "j": iou, "f": iou, "present": len(rows) % 3 != 0})
        table = pa.Table.from_pylist(rows, schema=pa.schema([
            ("split", pa.string()), ("video", pa.string()), ("exp_id", pa.string()), ("frame_index", pa.int32()),
            ("frame_name", pa.string()), ("iou", pa.float32()), ("j", pa.float32()), ("f", pa.float32()),
            ("present", pa.bool_())]))
        if drop:
            table = table.drop_columns([drop])
        (folder / "rows").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "rows" / f"{vid}.parquet")
    (folder / "_job.json").write_text(json.dumps({"split": SPLIT, "root": str(Path(root) / "mevis"),
                                                  "videos": chosen}))
    return folder


def table_iou(folder: Path) -> dict:
    rows = pa.concat_tables([pq.read_table(f) for f in sorted((folder / "rows").glob("*.parquet"))]).to_pylist()
    return {(r["video"], r["exp_id"], r["frame_index"]): r for r in rows}


# ---- model ---------------------------------------------------------------------------------------------------

LM = "mllm.language_model.base_model.model."
NON_LORA_TRAINABLE = {LM + "model.embed_tokens.weight", LM + "lm_head.weight",
                      *(f"score_head.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias"))}


def trainable_sets(model) -> tuple[set, set]:
    """(LoRA parameters, other parameters) that train."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    return lora, trainable - lora


def test_head_shapes_and_trainable_set(tiny):
    model, tokenizer, _ = tiny
    d = model.mllm.hidden_size
    linears = [m for m in model.score_head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(d, d), (d, 16), (16, 1)]
    assert tokenizer.convert_tokens_to_ids(SCORE_TOKEN) == len(tokenizer) - 1 == add_score_token(tokenizer)
    assert model.mllm.base_lm.get_input_embeddings().weight.shape[0] == len(tokenizer)
    lora, others = trainable_sets(model)
    assert len(lora) == 2 * 2 * 2 and all(".q_proj.lora_" in n or ".v_proj.lora_" in n for n in lora)  # 2 layers
    assert others == NON_LORA_TRAINABLE  # vision tower and projector frozen, as published


def test_7b_shapes_on_meta():
    model = lisa_selector_7b_on_meta()
    linears = [m for m in model.score_head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4096, 4096), (4096, 256), (256, 1)]
    lora, others = trainable_sets(model)
    assert len(lora) == 32 * 2 * 2 and others == NON_LORA_TRAINABLE
    assert model.mllm.base_lm.get_input_embeddings().weight.shape == (32004, 4096)


# ---- prompt --------------------------------------------------------------------------------------------------

def test_prompt_one_score_shared_prefix_and_answer_labels(tiny):
    model, tokenizer, prompts = tiny
    score_id = tokenizer.convert_tokens_to_ids(SCORE_TOKEN)
    texts = ["the red circle", "Two squares moving to the left."]
    items = [prompts.build(t, np.random.default_rng(i)) for i, t in enumerate(texts)] + [prompts.build(texts[0])]
    for item in items:
        ids, labels, p = item["input_ids"], item["labels"], item["prefix_len"]
        assert ids.count(score_id) == 1
        assert ids.count(-200) == 9 * model.mllm.tokens_per_frame()  # 8 references + 1 target
        assert ids[:p] == items[0]["input_ids"][:p] and p == items[0]["prefix_len"]  # shared, whatever the text
        supervised = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
        answer = tokenizer.decode([ids[i] for i in supervised])
        assert supervised == list(range(supervised[0], len(ids))) and answer.endswith(f"{SCORE_TOKEN}.</s>")
        assert "ASSISTANT:" in tokenizer.decode([i for i in ids[:supervised[0]] if i >= 0])
    for text in texts:
        prefix, suffix = prompts.split_for_cache(text)
        built = prompts.build(text)["input_ids"]
        assert prefix == built[:len(prefix)] and prefix == items[0]["input_ids"][:items[0]["prefix_len"]]
        assert built[len(prefix) + len(suffix)] == score_id and suffix == built[len(prefix):built.index(score_id)]
    batch = prompts.collate(items)
    assert batch.score_positions.tolist() == [it["input_ids"].index(score_id) for it in items]


def test_losses_l1_and_l2_against_hand_computation(tiny):
    model, _, prompts = tiny
    clip = torch.randn(2, 9, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    batch = prompts.collate([prompts.build("the red circle"), prompts.build("a blue square")])
    labels = torch.tensor([0.25, 0.9])
    with torch.no_grad():
        out = model(clip, batch)
    s = out.scores
    ce = torch.nn.functional.cross_entropy(out.lm_logits, out.lm_targets)
    assert out.scores.shape == (2,) and len(out.lm_targets) == int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
    try:
        for kind, score, cw, sw in (("l1", ((s - labels).abs().sum() / 2), 1.0, 1.0),
                                    ("l2", (((s - labels) ** 2).sum() / 2), 0.5, 2.0)):
            model.score_loss, model.ce_weight, model.score_weight = kind, cw, sw
            terms = model.losses(out, labels)
            torch.testing.assert_close(terms["score"], score)
            torch.testing.assert_close(terms["ce"], ce)
            torch.testing.assert_close(terms["loss"], cw * ce + sw * score)
    finally:
        model.score_loss, model.ce_weight, model.score_weight = "l1", 1.0, 1.0


# ---- inference -----------------------------------------------------------------------------------------------

def test_scorer_equals_the_plain_forward(tiny, synth_root):
    from glus.infer.selector import SelectorScorer

    model, tokenizer, prompts = tiny
    index = load_split(synth_root, SPLIT)
    vid = next(v for v in sorted(index.videos) if len(index.videos[v].frames) % 5)
    video = index.videos[vid]
    texts = sorted({e.text for e in index.expressions_of(vid)}, key=len)
    texts = [texts[0], texts[-1]]
    assert len(prompts.split_for_cache(texts[0])[1]) != len(prompts.split_for_cache(texts[1])[1])
    scores = SelectorScorer(model, tokenizer, batch_frames=5).score_video(video, texts)
    T = len(video.frames)
    references = inference_context_frames(T, 8)
    clip = model.mllm.preprocess(load_frames(video, range(T)))
    expected = np.zeros((len(texts), T), np.float32)
    with torch.no_grad():
        for e, text in enumerate(texts):
            batch = prompts.collate([prompts.build(text)] * T)
            frames = torch.stack([clip[references + [t]] for t in range(T)])
            expected[e] = model(frames, batch).scores.numpy()
    assert scores.shape == (2, T) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-4)
    assert np.ptp(expected) > 0  # the scores depend on the frame and the text


# ---- data ----------------------------------------------------------------------------------------------------

def selector_data(labels, root, **kw):
    from glus.train.selector import SelectorDataModule

    data = SelectorDataModule(str(labels), str(root) if root else None, batch_size=2, steps_per_epoch=10,
                              num_workers=0, clip={"clip_size": 112, "clip_resize": "squash", "num_reference": 8},
                              **kw)
    data.setup("fit")
    return data


def test_samples_are_deterministic_and_labelled_from_the_table(tmp_path, synth_root):
    labels = write_labels(tmp_path / "labels", synth_root)
    rows = table_iou(labels)
    data = selector_data(labels, None)  # the root comes from the labels' _job.json
    absent = selector_data(labels, synth_root, absent_label=-1.0).dataset
    seen_absent = 0
    for i in range(12):
        a, b = data.dataset[i], data.dataset[i]
        assert torch.equal(a["clip"], b["clip"]) and a["frames"] == b["frames"] and a["label"] == b["label"]
        split, vid, exp_id = a["id"]
        row = rows[(vid, exp_id, a["frames"][-1])]
        assert a["label"] == pytest.approx(row["iou"]) and a["clip"].shape == (9, 3, 112, 112)
        assert len(a["frames"]) == 9 and a["frames"][:8] == sorted(a["frames"][:8])
        c = absent[i]
        assert c["id"] == a["id"] and c["frames"] == a["frames"]
        assert c["label"] == (a["label"] if row["present"] else -1.0)
        seen_absent += not row["present"]
    assert seen_absent and len({data.dataset[i]["id"] for i in range(12)}) > 1
    batch = next(iter(data.train_dataloader()))
    assert batch["clip"].shape == (2, 9, 3, 112, 112) and batch["labels"].dtype == torch.float32


def test_bad_tables_name_the_file_and_the_fix(tmp_path, synth_root):
    from glus.train.selector import LabelTableError

    with pytest.raises(LabelTableError, match=r"column\(s\) \['iou'\] missing.*pseudolabel"):
        selector_data(write_labels(tmp_path / "a", synth_root, videos=1, drop="iou"), synth_root)
    with pytest.raises(LabelTableError, match="video not_a_video is not in split mevis/train.*root"):
        selector_data(write_labels(tmp_path / "b", synth_root, videos=1, rename_video="not_a_video"), synth_root)
    with pytest.raises(LabelTableError, match="not a pseudo-label folder"):
        selector_data(tmp_path / "empty", synth_root)
    # a killed job's temporary file is never read, and a job with a video still missing is refused
    folder = write_labels(tmp_path / "c", synth_root, videos=2)
    (folder / "rows" / ".x.123.tmp.parquet").write_bytes(b"half a file")
    selector_data(folder, synth_root)
    first = sorted((folder / "rows").glob("[!.]*.parquet"))[0]
    first.unlink()
    with pytest.raises(LabelTableError, match="not written yet"):
        selector_data(folder, synth_root)


def test_missing_labels_and_export_are_reported_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingInputs) as err:
        check_inputs(yaml.safe_load((RECIPES / "selector_synthetic.yaml").read_text()))
    message = str(err.value)
    assert "runs/pseudolabels/synthetic_train" in message and "glus pseudolabel" in message
    assert "runs/synthetic/latest/export" in message and "make train" in message
    with pytest.raises(MissingInputs) as err:
        check_inputs(yaml.safe_load((RECIPES / "selector.yaml").read_text()))
    assert "checkpoints/LISA-7B-v1" in str(err.value) and "runs/pseudolabels/mevis_train" in str(err.value)


def test_recipes_state_their_command_and_the_7b_builder_reads_lisa():
    from glus.model.resolve import instantiate

    for name in ("selector", "selector_synthetic"):
        text = (RECIPES / f"{name}.yaml").read_text()
        assert text.startswith("# ") and f"glus fit --config recipes/{name}.yaml" in text
    recipe = yaml.safe_load((RECIPES / "selector.yaml").read_text())
    builder = instantiate(recipe["model"]["init_args"]["builder"])  # nothing heavy happens here
    assert {p for p, _ in builder.required_paths()} == {"checkpoints/LISA-7B-v1", "checkpoints/clip-vit-large-patch14"}
    assert recipe["data"]["init_args"]["global_batch"] == 32 and recipe["trainer"]["max_steps"] == 2000


# ---- training ------------------------------------------------------------------------------------------------

def test_fit_three_steps_and_the_export_reloads(tmp_path, synth_root, glus_export):
    from glus.infer.selector import SelectorScorer
    from glus.train.cli import fit

    labels = write_labels(tmp_path / "labels", synth_root)
    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 3, "log_every_n_steps": 1},
        "model": {"init_args": {"warmup_steps": 1, "total_steps": 3}},
        "data": {"init_args": {"labels": str(labels), "root": str(synth_root), "global_batch": 4, "batch_size": 2,
                               "steps_per_epoch": 3, "num_workers": 0}}}))
    cli = fit(["--config", str(RECIPES / "selector_synthetic.yaml"), "--config", str(override),
               "--model.init_args.builder.init_args.init_from", str(glus_export)],
              runs_root=str(tmp_path / "runs"), wandb="disabled")
    assert cli.trainer.global_step == 3 and cli.trainer.accumulate_grad_batches == 2
    run = (tmp_path / "runs" / "selector_synthetic" / "latest").resolve()
    logged = open(run / "csv" / "metrics.csv").read().splitlines()[0]
    assert all(k in logged for k in ("train/loss", "train/ce", "train/score", "train/lr"))

    loaded, tokenizer, recipe = load_export(run / "export")
    assert recipe["model"]["class_path"] == "glus.train.selector.SelectorModule"
    trained = cli.model.model.eval()
    for name, p in trained.named_parameters():
        assert torch.equal(p, dict(loaded.named_parameters())[name]), name
    video = load_split(synth_root, SPLIT).videos[sorted(load_split(synth_root, SPLIT).videos)[0]]
    texts = ["the red circle", "two squares"]
    ours = SelectorScorer(loaded, tokenizer, batch_frames=8).score_video(video, texts)
    theirs = SelectorScorer(trained, cli.model.tokenizer, batch_frames=8).score_video(video, texts)
    np.testing.assert_array_equal(ours, theirs)
