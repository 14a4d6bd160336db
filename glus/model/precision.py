"""Precision for inference. bf16 on CUDA is the default (`--precision auto`): the multimodal LM and the [SEG]
projection are cast to bf16; SAM-2 (and any memory) keeps float32 weights and runs under autocast in bf16,
the sam2 package's own way (its modules build some tensors in float32 and take given masks as float32, which a
whole-model cast would feed to bf16 convolutions). Training under DeepSpeed's bf16 casts the whole model
instead; the GLUS path runs that way too (tests/test_precision.py)."""
from __future__ import annotations

import torch


def for_inference(model, device, dtype: torch.dtype):
    """`model` on `device` in `dtype` as described above (GLUS, the selector, or the plain VOS model)."""
    model = model.to(device)
    if dtype == torch.float32:
        return model
    for name, child in model.named_children():
        if name != "segmenter":
            child.to(dtype)
    if hasattr(model, "segmenter"):
        model.segmenter.autocast_dtype = dtype
    return model
