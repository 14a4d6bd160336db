"""`glus predict --compile`: the decoder and memory attention compiled in place give the uncompiled masks.

The test compiles with the aot_eager backend (graph capture, guards, dynamic shapes and AOT autograd's
functionalisation: what breaks; 2 minutes less than inductor's C++ code generation on 2 cores). Inductor on
this CPU gave the same logits to 2e-7 (measured once, by hand); the GPU check runs inductor."""
from __future__ import annotations

import torch

from glus.data.generated import GeneratedVideo
from glus.infer.compile import compile_hot_spots, compiled_parts
from glus.infer.engine import StreamingEngine
from glus.model.build.tiny import tiny_glus


def test_compiled_engine_equals_the_uncompiled_one():
    model, tokenizer = tiny_glus(seed=3)
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    video = GeneratedVideo(4, 96, 64, seed=5)
    texts = ["the red circle", "the blue square"]
    ref = [r.logits.clone() for r in StreamingEngine(model, tokenizer).run(video, texts)]
    assert compile_hot_spots(model, backend="aot_eager") == ["mask_decoder", "memory_attention"]
    assert all(m._compiled_call_impl is not None for m in compiled_parts(model).values())
    assert [n for n, _ in model.named_parameters()] == names  # in place: exports and checkpoints unchanged
    for batch in (texts, texts[:1]):  # another expression batch: dynamic shapes, not a wrong cached graph
        got = [r.logits for r in StreamingEngine(model, tokenizer).run(video, batch)]
        want = ref if batch == texts else [r[:1] for r in ref]
        assert len(got) == len(want)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
