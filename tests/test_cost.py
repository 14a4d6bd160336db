"""The cost model (glus.tools.cost): counts against hand counts, meta against CPU, the modes' order, the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaMLP

from glus.tools.cost import (StageCosts, count_flops, format_costs, inference_costs, model_costs, preset_model,
                             training_costs)
from glus.model.build.tiny import tiny_llama_config

ROOT = Path(__file__).resolve().parents[1]


def llama_hand_count(cfg, tokens: int, keys: int | None = None, batch: int = 1, lora_r: int = 8) -> int:
    """A LLaMA decoder (no lm_head) on `tokens` new tokens per sequence attending to `keys` keys: per layer
    2*in*out per token and linear (q, k, v, o, gate, up, down, and LoRA A, B on q and v), and attention
    2 * 2 * heads * head_dim * queries * keys (q k^T and attention x v, the full square)."""
    d, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    keys = tokens if keys is None else keys
    linear = 2 * (4 * d * d + 3 * d * i) + 2 * 2 * (2 * d * lora_r)
    attention = 2 * 2 * d * tokens * keys  # heads * head_dim = d
    return layers * batch * (tokens * linear + attention)


@pytest.fixture(scope="module")
def tiny():
    return preset_model("tiny")


def test_linear_and_llama_mlp_match_hand_counts():
    tokens = 37
    with torch.device("meta"):
        linear = nn.Linear(48, 80)
        mlp = LlamaMLP(tiny_llama_config(vocab_size=100))
        x, h = torch.empty(2, tokens, 48), torch.empty(1, tokens, 64)
    assert count_flops(linear, x)[1] == 2 * 48 * 80 * 2 * tokens
    assert count_flops(mlp, h)[1] == 3 * 2 * 64 * 128 * tokens  # gate, up, down


def test_tiny_llm_forward_matches_hand_count(tiny):
    model, _, _ = tiny
    stages = StageCosts(model)
    cfg = model.mllm.lm_config
    assert stages.llm(1, 123) == llama_hand_count(cfg, 123)
    # with a KV-cached prefix: queries are the suffix, keys prefix + suffix
    assert stages.llm(3, 50, past=100) == llama_hand_count(cfg, 50, keys=150, batch=3)


def test_meta_counts_equal_cpu_counts():
    """The meta device's SDPA decomposes into bmm, the CPU's runs a fused kernel that `counter()` maps to torch's
    own formula: a real CPU forward counts the same."""
    from glus.model.build.tiny import tiny_glus

    model, _ = tiny_glus()
    model.eval()
    stages = StageCosts(model)  # a meta copy
    mllm = model.mllm
    with torch.no_grad():
        embeds = torch.randn(2, 40, mllm.hidden_size)
        cpu_llm = count_flops(mllm.hidden_states, embeds, torch.ones(2, 40, dtype=torch.long))[1]
        cpu_clip = count_flops(mllm.encode_frames, torch.randn(3, 3, 224, 224))[1]
        cpu_sam = count_flops(model.segmenter.encode_image, torch.randn(1, 3, 128, 128))[1]
    assert cpu_llm == stages.llm(2, 40) > 0
    assert cpu_clip == stages.clip(3) > 0
    assert cpu_sam == stages.sam_encoder() > 0


def test_modes_order_and_report(tiny):
    model, tokenizer, _ = tiny
    costs = inference_costs(model, tokenizer, frames=12, expressions=2, every=(4, 8))
    modes = costs["modes"]
    assert modes["engine"]["total"] < modes["faithful"]["total"]
    assert modes["sparse K=8"]["total"] < modes["sparse K=4"]["total"] < modes["engine"]["total"]
    assert modes["engine"]["llm"] < modes["faithful"]["llm"]
    assert costs["steady"]["engine"]["total"] < costs["steady"]["faithful"]["total"]
    for m in modes.values():
        assert m["total"] == pytest.approx(sum(v for k, v in m.items() if k != "total"))
    t = costs["tokens"]  # from the real PromptBuilder: the engine's prefix + suffix is the prompt up to [SEG]
    assert t["prefix"] + t["suffix"][4] < t["full"][4]
    assert t["image_per_frame"] == model.mllm.tokens_per_frame() + 2
    assert "| engine |" in format_costs({"inference": costs})


def test_training_costs_count_the_backward(tiny):
    model, tokenizer, _ = tiny
    plain = training_costs(model, tokenizer, expressions=2)
    checkpointed = training_costs(model, tokenizer, expressions=2, gradient_checkpointing=True)
    assert plain["forward_total"] == sum(plain["forward"].values())
    assert 0 < plain["backward_total"] < 2.5 * plain["forward_total"]  # LoRA on a frozen LLM: ~1x, not 2x
    assert checkpointed["forward_total"] == plain["forward_total"]
    assert checkpointed["backward_total"] > plain["backward_total"]  # the LLM's forward runs again
    mem, mem_ckpt = plain["memory"], checkpointed["memory"]
    assert 0 < mem_ckpt["activation_bytes"] < mem["activation_bytes"]
    assert mem["parameter_bytes"]["float32"] == 4 * mem["parameters"]
    assert 0 < mem["trainable"] < mem["parameters"]
    assert not any(p.grad is not None for p in model.parameters())
    text = format_costs({"training": plain})
    assert "backward" in text and "activations" in text


def test_vos_recipe_counts_the_vos_path():
    from glus.tools.cost import model_from_recipe

    model, tokenizer, train = model_from_recipe(str(ROOT / "recipes/vos_synthetic.yaml"))
    costs = model_costs(model, tokenizer, train, frames=4)
    assert list(costs["inference"]["modes"]) == ["vos"]
    vos = costs["inference"]["modes"]["vos"]
    assert vos["vos_encoder"] > 0 and vos["vos_memory_read"] > 0
    assert costs["training"]["backward_total"] > 0
    assert "VOS path" in format_costs(costs)


def _cli(*args, tmp_path):
    out = tmp_path / "cost.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "glus.cli", "model", "cost", *args, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_cli_tiny_recipe(tmp_path):
    stdout, costs = _cli("--recipe", "recipes/synthetic.yaml", "--frames", "8", "--expressions", "2",
                         "--every", "4", "--no-training", tmp_path=tmp_path)
    assert "GFLOP per expression-frame" in stdout and "| sparse K=4 |" in stdout
    assert "training" not in costs
    assert costs["inference"]["tokens"]["tokenizer"] == "model"
    assert set(costs["inference"]["modes"]) == {"faithful", "engine", "sparse K=4", "vos"}


def test_cli_7b_recipe_on_meta(tmp_path):
    """glus_standard's LISA-7B + SAM-2 Hiera-L on the meta device (no checkpoint folder needed): the whole-prompt
    LLM cost is LLaMA-7B's hand count at the counted length, and the figures are in the expected ranges."""
    stdout, costs = _cli("--recipe", "recipes/glus_standard.yaml", "--frames", "8", "--expressions", "2",
                         "--every", "4", tmp_path=tmp_path)
    assert "TFLOP per expression-frame" in stdout
    inf = costs["inference"]
    n = inf["tokens"]["full"]["4"]
    from glus.model.build.published import lisa_7b_configs

    whole = [v for k, v in inf["parts"].items() if k.startswith("LLM, whole prompt")]
    assert whole == [llama_hand_count(lisa_7b_configs()[1], n)]
    steady = inf["steady"]["faithful"]
    assert 1.2e12 < steady["clip"] < 1.4e12           # CLIP ViT-L/14 on 8 frames
    assert 1.7e12 < steady["sam_encoder"] < 1.9e12    # Hiera-L at 1024 px (0.91 T multiply-adds)
    assert inf["modes"]["sparse K=4"]["total"] < inf["modes"]["engine"]["total"] < inf["modes"]["faithful"]["total"]
    mem = costs["training"]["memory"]
    assert mem["parameter_bytes"]["bfloat16"] > 13e9  # the 7B LLM in the recipe's dtype
