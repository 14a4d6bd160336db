"""bf16, as the GPU runs it, checked on the CPU: inference (`glus.model.precision.for_inference`: the LM in bf16,
SAM-2 in float32 under autocast) for GLUS (engine, faithful loop) and the plain VOS path with every memory; and
DeepSpeed's bf16 training (the whole model cast) through the GLUS forward and backward. Before these, a
whole-model bf16 cast failed inside the unedited sam2 package (float32 @ bfloat16)."""
from __future__ import annotations

import pytest
import torch

from glus.data.frames import load_frames
from glus.data.generated import GeneratedVideo
from glus.infer.engine import FaithfulLoop, StreamingEngine
from glus.model.build.tiny import E2E_MEMORY, tiny_glus
from glus.model.glus import ClipBatch
from glus.model.mllm import PromptBuilder
from glus.model.precision import for_inference

VIDEO = GeneratedVideo(4, 96, 64, seed=5)
TEXTS = ["the red circle", "the blue square"]


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a > 0) == (b > 0)).float().mean())


@pytest.mark.parametrize("memory", [None, E2E_MEMORY], ids=["published", "e2e"])
def test_glus_inference_in_bf16_agrees_with_float32(memory):
    model, tokenizer = tiny_glus(seed=3, segmenter_kwargs={"memory": memory} if memory else None)
    model.eval()
    ref = [r.logits for r in StreamingEngine(model, tokenizer).run(VIDEO, TEXTS)]
    model = for_inference(model, "cpu", torch.bfloat16)
    assert model.mllm.base_lm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.segmenter.sam.sam_mask_decoder.conv_s0.weight.dtype == torch.float32
    for cls in (StreamingEngine, FaithfulLoop):
        got = [r.logits for r in cls(model, tokenizer).run(VIDEO, TEXTS)]
        got = got if cls is StreamingEngine else [torch.cat(pair) for pair in zip(got[:4], got[4:])]
        assert len(got) == len(ref)
        assert min(_agreement(a, b) for a, b in zip(ref, got)) > 0.97, cls.__name__


MEMORIES = [None, {"class_path": "glus.model.memory.GatedLinearMemory", "init_args": {"key_dim": 16, "value_dim": 32}},
            {"class_path": "glus.model.memory.MCAMemory"}, {"class_path": "glus.model.memory.NoMemory"}]


@pytest.mark.parametrize("memory", MEMORIES, ids=["sam2_bank", "gated_linear", "mca", "none"])
def test_vos_inference_in_bf16_agrees_with_float32(memory):
    from glus.infer.vos import propagate
    from glus.model.vos import VOSBuilder

    model, _ = VOSBuilder(sam_config="tiny", sam_image_size=128, memory=memory).build()
    model.eval()
    masks = torch.zeros(2, 64, 96, dtype=torch.bool)
    masks[0, 10:30, 10:30], masks[1, 40:60, 50:80] = True, True

    def run(m):
        return [logits for _, logits in propagate(m, lambda t: load_frames(VIDEO, [t])[0], masks, 1, 4)]

    ref = run(model)
    got = run(for_inference(model, "cpu", torch.bfloat16))
    assert len(got) == len(ref) == 4
    assert min(_agreement(a, b) for a, b in zip(ref, got)) > 0.97


@pytest.mark.parametrize("memory", [None, E2E_MEMORY], ids=["published", "e2e"])
def test_glus_trains_with_the_whole_model_in_bf16(memory):
    """What DeepSpeed's bf16 mode runs: every weight in bf16, forward, losses and backward."""
    model, tokenizer = tiny_glus(seed=3, segmenter_kwargs={"memory": memory} if memory else None)
    model = model.to(torch.bfloat16).train()
    builder = PromptBuilder(tokenizer, tokens_per_frame=model.mllm.tokens_per_frame(), num_context=4)
    prompts = builder.collate([builder.build(t, 4) for t in TEXTS], 4)
    S, C = model.segmenter.image_size, model.mllm.vision_tower.config.image_size
    batch = ClipBatch(torch.randn(1, 8, 3, C, C, dtype=torch.bfloat16),
                      torch.randn(1, 4, 3, S, S, dtype=torch.bfloat16), prompts, torch.zeros(2, dtype=torch.long),
                      [torch.rand(4, 32, 32) > 0.5 for _ in TEXTS])
    out = model(batch)
    assert out.mask_logits.dtype == torch.float32  # the decoder's logits are read in float32, as published
    losses = model.losses(out, batch)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    grads = [p.grad for p in model.segmenter.sam.sam_mask_decoder.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.bfloat16 for g in grads)
