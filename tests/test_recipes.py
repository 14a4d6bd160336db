"""The recipes named after published models reproduce them: every published setting against one table.

Sources: GLUS-video/GLUS scripts/train_glus_s.sh and train_glus_a.sh, model/GLUS.py, utils/utils.py,
inference_iter.py, and the paper's supplementary Table A (see ../shared/REFERENCE.md section 1). A drift in a
recipe, or in a default a recipe relies on, fails here.
"""
import inspect
import json
from pathlib import Path

import pytest
import yaml

from glus.model.build.tiny import E2E_MEMORY

from glus.model.build.published import LisaGLUSBuilder
from glus.model.memory import SAM2MemoryBank
from glus.model.segmenter import SAM2Segmenter
from glus.train.batch import device_count, plan_batch
from glus.errors import GlusError

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

B = "model.init_args.builder.init_args."
M = "model.init_args."
D = "data.init_args."
PUBLISHED_MEMORY = {"num_memories": 7, "stride_train": 1, "stride_eval": 3, "temporal_encoding": False,
                    "object_pointers": False, "no_object_embedding": False, "end_to_end": False, "trainable": False,
                    "encode_conditioned": True}
GLUS_S = {
    # model: LISA-7B-v1 + SAM-2.0 Hiera-L, LoRA r 8 / alpha 16 / dropout 0.05 on q, v; embeddings, lm_head trained
    B + "lisa_folder": "checkpoints/LISA-7B-v1", B + "sam_config": "sam2_hiera_l",
    B + "sam_checkpoint": "checkpoints/sam2/sam2_hiera_large.pt", B + "sam_image_size": 1024,
    B + "pooling": "strip", B + "clip_resize": "crop", B + "template": "published",
    B + "lora_r": 8, B + "lora_alpha": 16, B + "lora_dropout": 0.05, B + "embeddings": "all",
    B + "memory": PUBLISHED_MEMORY,
    # losses: CE at [SEG] + 2 BCE + 0.5 Dice + 0.1 object contrastive (bank 512, 128 negatives, tau 0.07, MeViS)
    B + "loss_weights": {"ce": 1.0, "bce": 2.0, "dice": 0.5, "contrastive": 0.1},
    M + "label_mode": "seg", M + "contrastive_bank": 512, M + "contrastive_negatives": 128,
    M + "contrastive_tau": 0.07, M + "contrastive_splits": ["mevis/"],
    # optimisation: AdamW 3e-4 (0.9, 0.95), no weight decay, 100 warm-up steps, linear decay, 30 x 100 steps
    M + "lr": 3e-4, M + "betas": [0.9, 0.95], M + "weight_decay": 0.0, M + "warmup_steps": 100,
    M + "total_steps": 3000, "trainer.max_steps": 3000, "trainer.gradient_clip_val": 1.0,
    "trainer.precision": "bf16-mixed", M + "gradient_checkpointing": True,
    "trainer.strategy.class_path": "lightning.pytorch.strategies.DeepSpeedStrategy",
    "trainer.strategy.init_args.config": "recipes/deepspeed/zero2.json",
    # frames and batch: 4 context + 4 query, up to 3 expressions per video, global batch 80 of micro-batches 2
    M + "num_context": 4, M + "num_query": 4, D + "clip.num_context": 4, D + "clip.num_query": 4,
    D + "clip.max_expressions": 3, D + "clip.clip_size": 224, D + "clip.clip_resize": "crop", D + "clip.sam_size": 1024,
    D + "global_batch": 80, D + "batch_size": 2, D + "steps_per_epoch": 100,
    # data: MeViS : Ref-YouTube-VOS = 1 : 1
    D + "mix": {"mevis/train": 1.0, "refytvos/train": 1.0},
}
GLUS_A = {**GLUS_S,
          # GLUS-A is "GLU + MB": no object contrastive loss; 50 epochs of 100 steps; five datasets
          B + "loss_weights": {"ce": 1.0, "bce": 2.0, "dice": 0.5, "contrastive": 0.0},
          M + "total_steps": 5000, "trainer.max_steps": 5000,
          D + "mix": {"mevis/train": 40, "refytvos/train": 150, "refdavis/train": 4, "revos/train": 30,
                      "lvvis/train": 30}}
PUBLISHED = {"glus_standard": GLUS_S, "glus_additional": GLUS_A}


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("memory", "loss_weights", "mix"):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_recipe_matches_the_published_settings(name):
    recipe = flat(yaml.safe_load((RECIPES / f"{name}.yaml").read_text()))
    drift = {k: (recipe.get(k, "<missing>"), v) for k, v in PUBLISHED[name].items() if recipe.get(k, "<missing>") != v}
    assert not drift, f"recipes/{name}.yaml differs from the published GLUS (recipe, published): {drift}"
    assert "trainer.accumulate_grad_batches" not in recipe  # it follows from the global batch
    zero = json.loads((RECIPES / "deepspeed" / "zero2.json").read_text())
    assert zero["zero_optimization"]["stage"] == 2


def test_builder_and_memory_defaults_are_the_published_ones():
    """A recipe that leaves a field out still gets the published GLUS."""
    defaults = {k: p.default for k, p in inspect.signature(LisaGLUSBuilder).parameters.items()}
    for key, value in GLUS_S.items():
        if key.startswith(B) and key[len(B):] in defaults and key[len(B):] not in ("memory", "loss_weights"):
            assert defaults[key[len(B):]] == value, key
    bank = SAM2MemoryBank()
    assert {k: getattr(bank, k) for k in PUBLISHED_MEMORY} == PUBLISHED_MEMORY
    # the published segmenter: image encoder, prompt encoder and the decoder's conv_s0/s1 never updated
    seg = {k: p.default for k, p in inspect.signature(SAM2Segmenter).parameters.items()}
    assert (seg["train_image_encoder"], seg["train_mask_decoder"], seg["train_high_res_convs"],
            seg["gate_by_object_score"], seg["memory"]) == (False, True, False, False, None)


def test_our_variant_differs_only_in_the_memory_and_sam_version():
    standard = flat(yaml.safe_load((RECIPES / "glus_standard.yaml").read_text()))
    e2e = flat(yaml.safe_load((RECIPES / "glus_standard_e2e.yaml").read_text()))
    changed = {k for k in standard.keys() | e2e.keys() if standard.get(k) != e2e.get(k)}
    assert changed == {B + "sam_config", B + "sam_checkpoint", B + "memory"}
    assert e2e[B + "sam_config"] == "sam2.1_hiera_l"
    assert e2e[B + "memory"] == {**PUBLISHED_MEMORY, **E2E_MEMORY}  # the variant the tests run as E2E_MEMORY


def test_accumulation_follows_from_the_global_batch_and_the_devices():
    assert plan_batch(80, 2, 4).accumulation == 10  # the published 4 GPUs
    assert plan_batch(80, 2, 1).accumulation == 40  # one GPU trains the same global batch
    assert plan_batch(80, 2, 8).accumulation == 5
    assert plan_batch(None, 2, 1).accumulation == 1
    assert "global 80 = 4 device(s) x micro-batch 2 x accumulation 10" in plan_batch(80, 2, 4).describe()
    with pytest.raises(GlusError, match="multiple of 6"):
        plan_batch(80, 2, 3)
    assert device_count("cpu", "auto") == 1 and device_count("gpu", [0, 1, 2, 3]) == 4
    assert device_count("gpu", 2, num_nodes=2) == 4 and device_count("gpu", "0,1") == 2
