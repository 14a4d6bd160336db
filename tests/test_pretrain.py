"""The embedded default's stages and data: a balanced valid_u, captions, the promptable segmenter's clips and
model (SAM-2's clicks and boxes), GLUS started from its export, and the grounded expression targets."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from glus.data.cache import load_split
from glus.data.errors import DataError
from glus.data.synth.writer import BALANCED_KINDS, balanced_videos, write_synthetic
from glus.data.vos_clips import VOSClipDataset, VOSClipSpec, first_frame_prompt
from glus.model.losses import expression_loss
from glus.model.mllm.prompt import IGNORE_INDEX
from glus.model.vos import VOSBuilder, VOSClipBatch
from glus.train.module import place

ROOT = Path(__file__).resolve().parents[1]


def test_balanced_valid_u_holds_the_same_number_of_each_kind(tmp_path):
    videos = balanced_videos(seed=5, per_kind=6)
    counts = Counter(r.kind for v in videos for r in v.referrals)
    assert all(counts[k] == 6 for k in BALANCED_KINDS)
    assert [v.vid for v in videos] == [v.vid for v in balanced_videos(seed=5, per_kind=6)]  # a function of the seed
    write_synthetic(tmp_path, seed=5, videos=4, valid_per_kind=6, progress=False)
    kinds = Counter(load_split(tmp_path, "mevis/valid_u").kinds().values())
    assert kinds == Counter({k: 6 for k in BALANCED_KINDS})


def test_captions_name_every_referred_object_in_full(synth_root):
    index = load_split(synth_root, "mevis/train")
    captions, kinds = index.captions(), index.kinds()
    assert captions.keys() == kinds.keys()
    for key, caption in captions.items():
        assert caption.startswith("the ") and (" and " in caption) == (kinds[key] == "plural" and
                                                                        caption.count("the ") > 1)
    motion = [k for k, kind in kinds.items() if kind == "motion"]
    assert motion and all(captions[k].split()[1] in ("red", "green", "blue", "yellow", "purple", "orange")
                          for k in motion)  # "the object that stops" is captioned with its colour and shape


def test_place_words():
    mask = torch.zeros(30, 60, dtype=torch.bool)
    assert place(mask) == "out of view"
    mask[0:5, 0:5] = True
    assert place(mask) == "at the top left"
    mask[:] = False
    mask[12:18, 50:60] = True
    assert place(mask) == "at the middle right"


def test_expression_loss_takes_one_target_per_query_frame():
    torch.manual_seed(0)
    log_probs = torch.randn(2, 3, 11).log_softmax(-1)
    ids = torch.tensor([[1, 2, IGNORE_INDEX], [4, 5, 6]])
    same = expression_loss(log_probs, ids[:, None, :].expand(-1, 3, -1))
    torch.testing.assert_close(same, expression_loss(log_probs, ids))
    per_frame = torch.tensor([[[1, IGNORE_INDEX], [2, IGNORE_INDEX], [3, 4]]] * 2)
    want = -torch.stack([log_probs[:, 0, 1], log_probs[:, 1, 2], (log_probs[:, 2, 3] + log_probs[:, 2, 4]) / 2], 1)
    torch.testing.assert_close(expression_loss(log_probs, per_frame), want.mean())


def test_clicks_fall_inside_their_object_and_boxes_around_it():
    masks = np.zeros((2, 60, 80), dtype=bool)
    masks[0, 10:20, 30:50] = True
    masks[1, 40:58, 2:12] = True
    spec = VOSClipSpec(sam_size=128, prompts={"clicks": 1.0}, max_clicks=3)
    coords, labels = first_frame_prompt(masks, spec, np.random.default_rng(0))
    assert (labels == 1).all() and coords.shape[:2] == labels.shape
    for obj, points in enumerate(coords.numpy()):
        for x, y in points:  # back to the mask's pixels
            assert masks[obj, int(y * 60 / 128), int(x * 80 / 128)]
    spec = VOSClipSpec(sam_size=128, prompts={"box": 1.0}, box_noise=0.0)
    coords, labels = first_frame_prompt(masks, spec, np.random.default_rng(0))
    assert labels.tolist() == [[2, 3], [2, 3]]
    np.testing.assert_allclose(coords[0].numpy(), [[30 * 1.6, 10 * 128 / 60], [50 * 1.6, 20 * 128 / 60]], rtol=1e-5)
    assert first_frame_prompt(masks, VOSClipSpec(prompts={"mask": 1.0}), np.random.default_rng(0)) is None
    with pytest.raises(DataError, match="kinds are"):
        VOSClipSpec(prompts={"scribble": 1.0})


def test_a_prompted_clip_trains_every_trainable_part_and_supervises_its_first_frame(synth_root):
    """Clicks or a box on frame 0: its mask is decoded (and supervised) from an empty memory, so the prompt
    encoder's embeddings and the "no memory" parameters train, as GLUS' first query frame uses them."""
    spec = yaml.safe_load((ROOT / "recipes" / "pretrain" / "segmenter_synthetic.yaml").read_text())
    builder = spec["model"]["init_args"]["builder"]["init_args"]
    torch.manual_seed(0)
    model, _ = VOSBuilder(**builder).build()
    ds = VOSClipDataset(load_split(synth_root, "mevis/train"), 8,
                        VOSClipSpec(num_frames=3, max_objects=2, sam_size=128, prompts={"clicks": 0.5, "box": 0.5}))
    item = ds[0]
    assert item["points"] is not None
    clip = VOSClipBatch(item["sam"], item["masks"], item["points"])
    logits = model(clip)
    assert logits.shape[:2] == (len(item["masks"]), 3)  # every frame, the prompted one too
    model.losses(logits, clip)["loss"].backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not silent
    pe = model.segmenter.sam.sam_prompt_encoder
    assert pe.not_a_point_embed.weight.grad is not None and model.segmenter.sam.no_mem_embed.grad is not None
    assert ds[0]["points"][0].tolist() == item["points"][0].tolist()  # a pure function of the index


def test_glus_starts_from_the_pretrained_segmenter(tmp_path, synth_root):
    """Two steps of the stage-1 recipe, then the tiny GLUS built on its export holds its SAM-2 and memory."""
    from glus.errors import GlusError
    from glus.model.build.tiny import TinyGLUSBuilder
    from glus.train.cli import fit

    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 2, "log_every_n_steps": 1},
        "model": {"init_args": {"warmup_steps": 1, "total_steps": 2, "evaluation": None}},
        "data": {"init_args": {"batch_size": 1, "steps_per_epoch": 2, "num_workers": 0,
                               "clip": {"num_frames": 3, "max_objects": 2, "sam_size": 128,
                                        "prompts": {"clicks": 0.5, "box": 0.5}}}}}))
    cli = fit(["--config", str(ROOT / "recipes" / "pretrain" / "segmenter_synthetic.yaml"), "--config", str(override)],
              runs_root=str(tmp_path / "runs"), wandb="disabled")
    export = (tmp_path / "runs" / "segmenter_synthetic" / "latest" / "export").resolve()
    recipe = yaml.safe_load((ROOT / "recipes" / "synthetic.yaml").read_text())
    args = {**recipe["model"]["init_args"]["builder"]["init_args"], "segmenter_init": str(export)}
    glus, _ = TinyGLUSBuilder(**args).build()
    own = dict(glus.named_parameters())
    trained = {n: p for n, p in cli.model.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("segmenter.sam.image_encoder.") for n in trained)
    for name, p in trained.items():
        assert torch.equal(own[name], p), name
    with pytest.raises(GlusError, match="missing"):
        TinyGLUSBuilder(**{**args, "segmenter_init": str(tmp_path / "nowhere")}).build()


def test_the_alignment_stage_trains_the_language_model_alone_and_glus_starts_from_it(tmp_path, synth_root):
    """Stage 2: two steps of the multimodal LM alone (SAM-2 never runs, so it stays frozen), grounded targets;
    the tiny GLUS built on its export holds its LM, LoRA included."""
    from glus.model.build.tiny import TinyGLUSBuilder
    from glus.train.cli import fit

    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 2, "log_every_n_steps": 1},
        "model": {"init_args": {"warmup_steps": 1, "total_steps": 2}},
        "data": {"init_args": {"root": str(synth_root), "batch_size": 1, "steps_per_epoch": 2, "num_workers": 0}}}))
    cli = fit(["--config", str(ROOT / "recipes" / "pretrain" / "mllm_synthetic.yaml"), "--config", str(override)],
              runs_root=str(tmp_path / "runs"), wandb="disabled")
    module = cli.model
    assert not any(p.requires_grad for p in module.model.segmenter.parameters())
    assert module.captions  # the grounded targets read the data's captions
    data = cli.datamodule
    batch = data.collate([data.dataset[0], data.dataset[1]])
    ids = module.loss_targets(batch, batch["texts"])
    assert ids.dim() == 3 and ids.shape[:2] == (len(batch["texts"]), 4)  # one target per query frame
    export = (tmp_path / "runs" / "mllm_synthetic" / "latest" / "export").resolve()
    recipe = yaml.safe_load((ROOT / "recipes" / "synthetic.yaml").read_text())
    glus, _ = TinyGLUSBuilder(**{**recipe["model"]["init_args"]["builder"]["init_args"],
                                 "mllm_init": str(export)}).build()
    own = dict(glus.named_parameters())
    trained = {n: p for n, p in module.model.named_parameters() if n.startswith("mllm.") and p.requires_grad}
    assert any("lora_" in n for n in trained) and any("vision_tower" in n for n in trained)
    for name, p in trained.items():
        assert torch.equal(own[name], p), name
    from glus.model.weights.load import load_export

    loaded = dict(load_export(export)[0].named_parameters())  # the LM-only export loads as it was trained
    assert all(torch.equal(loaded[n], p) for n, p in trained.items())


def test_one_seed_replaces_every_seed_of_a_recipe(synth_root, tmp_path):
    """`glus fit --seed N`: Lightning's, the initialisation's, the module's and the data's seeds (make train SEED=N)."""
    import sys

    import glus.train.cli as train_cli

    class Parsed(train_cli.GLUSCLI):
        def before_instantiate_classes(self):
            cfg = self.config["fit"]
            raise SystemExit(repr({k: cfg.get(k) for k in train_cli.SEED_FIELDS}))

    sys.argv = sys.argv[:1]
    with pytest.raises(SystemExit) as done:
        Parsed(args=["fit", "--config", str(ROOT / "recipes" / "synthetic.yaml"),
                     "--model.init_args.evaluation.root", str(synth_root)],
               runs_root=tmp_path, name="x", seed=7, auto_configure_optimizers=False)
    assert str(done.value) == repr(dict.fromkeys(train_cli.SEED_FIELDS, 7))


def test_validate_scores_an_export_per_kind_as_training_does(tmp_path):
    """`glus validate`: the clip-wise protocol of glus fit's final evaluation, on any root (held-out data seeds)."""
    import json

    from glus.cli import main
    from tests.model_helpers import inference_setup

    base, index, export, _, _ = inference_setup(tmp_path, seed=3, videos=4)
    assert main(["validate", "--ckpt", str(export), "--data", "mevis/valid_u", "--root", str(base / "data"),
                 "--out", str(tmp_path / "val"), "--max-videos", "2"]) == 0
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert 0 <= metrics["jf"] <= 1 and metrics["by_kind"] and metrics["memory"] == "on"
    assert sum(m["count"] for m in metrics["by_kind"].values()) == metrics["count"]
    # the control without memory scores the same expressions with other masks (the export's memory is used)
    assert main(["validate", "--ckpt", str(export), "--data", "mevis/valid_u", "--root", str(base / "data"),
                 "--out", str(tmp_path / "off"), "--max-videos", "2", "--memory-off"]) == 0
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert off["memory"] == "off" and off["count"] == metrics["count"] and off["jf"] != metrics["jf"]


@pytest.mark.parametrize("row", ["query_only", "context", "memory", "contrastive", "e2e_memory"])
def test_every_ablation_row_trains_and_scores(row, tmp_path, synth_root):
    """`make ablate`'s rows are overlays on the embedded default: each one builds, trains a step and scores a
    video (row 1 without context frames, rows 1-2 without memory)."""
    import json

    from glus.train.cli import fit

    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 1, "log_every_n_steps": 1},
        "model": {"init_args": {"warmup_steps": 1, "total_steps": 1, "evaluation": {
            "root": str(synth_root), "val_videos": 0, "max_videos": 1, "overlays": 0, "initial": False}}},
        "data": {"init_args": {"batch_size": 1, "steps_per_epoch": 1, "num_workers": 0}}}))
    cli = fit(["--config", str(ROOT / "recipes" / "synthetic.yaml"), "--config", str(ROOT / "recipes" / "ablate" /
               f"{row}.yaml"), "--config", str(override)], runs_root=str(tmp_path / "runs"), wandb="disabled")
    model = cli.model.model
    assert cli.model.hparams.num_context == (0 if row == "query_only" else 4)
    memory = type(model.segmenter.memory).__name__
    assert memory == ("NoMemory" if row in ("query_only", "context") else "SAM2MemoryBank")
    if row in ("memory", "contrastive"):  # the published bank: frozen
        assert not any(p.requires_grad for p in model.segmenter.sam.memory_attention.parameters())
    assert model.loss_weights.contrastive == (0.0 if row in ("query_only", "context", "memory") else 0.1)
    # the default's dense motion target and [SEG] pointer stay in every row
    assert model.loss_weights.motion == 1.0 and model.loss_weights.pointer == 1.0 and model.pointer is not None
    assert model.loss_weights.pointer_softmax == 1.0
    metrics = json.loads((tmp_path / "runs" / "synthetic" / "latest" / "metrics.json").read_text())
    assert 0 <= metrics["jf"] <= 1


def test_sine_clip_positions_give_each_patch_a_distinct_code_of_the_asked_norm():
    from transformers import CLIPVisionModel

    from glus.model.build.tiny import TinyGLUSBuilder, sine_clip_positions, tiny_clip_config

    tower = CLIPVisionModel(tiny_clip_config(image_size=112))
    before = tower.embeddings.position_embedding.weight.detach().clone()
    sine_clip_positions(tower, 1.0)
    table = tower.embeddings.position_embedding.weight.detach()
    assert torch.equal(table[0], before[0])  # the class token's position is CLIP's own
    assert abs(float(table[1:].norm(dim=1).mean()) - 1.0) < 1e-4 and float(before[1:].norm(dim=1).mean()) < 0.3
    # neighbours are more alike than far patches (a smooth 2-D code), and no two patches share one
    unit = torch.nn.functional.normalize(table[1:], dim=1)
    sim = unit @ unit.T
    assert float(sim[0, 1]) > float(sim[0, 7]) and float(sim[0, 8]) > float(sim[0, 63])
    assert float((sim - torch.eye(64)).max()) < 0.999
    # the builder applies it to the model's own tower
    built, _ = TinyGLUSBuilder(seed=0, clip_image_size=112, clip_positions=2.0).build()
    rows = built.mllm.vision_tower.embeddings.position_embedding.weight.detach()[1:]
    assert abs(float(rows.norm(dim=1).mean()) - 2.0) < 1e-4


STAGE = ROOT / "checkpoints" / "synthetic" / "segmenter"
# What GLUS trains that the segmenter stage never gives it: SAM-2's mask-prompt convolutions, which take the [SEG]
# pointer's map (the stage prompts with clicks, boxes, or a mask taken as the output, never a mask prompt).
GLUS_BEYOND_STAGE = {f"segmenter.sam.sam_prompt_encoder.mask_downscaling.{i}.{p}" for i in (0, 1, 3, 4, 6)
                     for p in ("weight", "bias")}


def _builder_args(recipe: str, *overlays: str) -> dict:
    args = yaml.safe_load((ROOT / "recipes" / recipe).read_text())["model"]["init_args"]["builder"]["init_args"]
    for overlay in overlays:
        args.update(yaml.safe_load((ROOT / "recipes" / overlay).read_text())["model"]["init_args"]["builder"]
                    ["init_args"])
    return args


def test_the_committed_segmenter_stage_loads_strictly_and_starts_glus_and_every_vos_memory():
    """checkpoints/synthetic/segmenter loads as a plain VOS model with load_export's strict check (every trained
    tensor in the file, none unknown); the default GLUS and the VOS recipe with each memory name it and hold every
    tensor of it; what they train beyond it is named: GLUS' mask-prompt convolutions, a memory's own modules."""
    from safetensors.torch import load_file

    from glus.model.build.tiny import TinyGLUSBuilder
    from glus.model.weights.load import load_export

    heads = load_file(str(STAGE / "heads.safetensors"))
    stage, _, stage_recipe = load_export(STAGE)
    assert type(stage.segmenter.memory).__name__ == "SAM2MemoryBank" and len(heads) > 100
    default = _builder_args("synthetic.yaml")
    assert default["segmenter_init"] == "checkpoints/synthetic/segmenter"
    assert default["memory"] == stage_recipe["model"]["init_args"]["builder"]["init_args"]["memory"]
    glus, _ = TinyGLUSBuilder(**default).build()
    own = dict(glus.named_parameters())
    for name, value in heads.items():
        assert torch.equal(own[name], value), name
    beyond = {n for n, p in own.items() if p.requires_grad and n.startswith("segmenter.") and n not in heads}
    assert beyond == GLUS_BEYOND_STAGE
    for memory in ("none", "sam2_bank", "gated_linear", "mca"):
        args = _builder_args("vos_synthetic.yaml", f"memory/{memory}_tiny.yaml")
        assert args["init_from"] == "checkpoints/synthetic/segmenter" and not args["train_image_encoder"]
        vos, _ = VOSBuilder(**args).build()
        own = dict(vos.named_parameters())
        for name, value in heads.items():
            assert torch.equal(own[name], value), (memory, name)
        beyond = {n.split(".")[1] for n, p in own.items() if p.requires_grad and n not in heads}
        assert beyond == (set() if memory in ("none", "sam2_bank") else {"memory"}), memory
