"""LoRA on the language model only (peft), and the rules that say which other parts train."""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn


def apply_lora(mllm, r: int = 8, alpha: int = 16, dropout: float = 0.05,
               target_modules: tuple[str, ...] = ("q_proj", "v_proj")) -> None:
    """Wrap `mllm.language_model` with peft LoRA adapters on the language model's `target_modules` (the
    backbone's `lora_targets` says how they are matched: LISA's vision tower is outside the wrapped model,
    Qwen2.5-VL's is inside it, so there the names are matched under its language model only)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=mllm.lora_targets(target_modules),
                        bias="none", task_type="CAUSAL_LM")
    mllm.language_model = get_peft_model(mllm.language_model, config)


def _keep_rows(param: nn.Parameter, rows: list[int]) -> None:
    """Train only `rows` of an embedding-like matrix: other rows' gradients are zeroed."""
    mask = torch.zeros(param.shape[0], 1, dtype=param.dtype, device=param.device)
    mask[rows] = 1
    param.register_hook(lambda grad: grad * mask.to(grad.dtype))
    param.trainable_rows = len(set(rows))  # what `trainable_report` counts as trained


def set_lm_trainables(mllm, embeddings: str = "all", lm_head: bool = True, projector: bool = True,
                      new_token_ids: list[int] | None = None, base_layers: bool = False) -> None:
    """embeddings / lm_head: "all" rows (LISA, published GLUS), "new_rows" (only the added tokens), "none".
    base_layers: also train the LM's own weights (only for models trained from scratch, e.g. the tiny recipe)."""
    if embeddings not in ("all", "new_rows", "none"):
        raise ValueError(f"embeddings must be 'all', 'new_rows' or 'none', got {embeddings!r}")
    for name, p in mllm.language_parameters():  # the base LM is frozen; only its adapters train
        p.requires_grad_(base_layers or "lora_" in name)
    emb = mllm.base_lm.get_input_embeddings().weight
    head = mllm.base_lm.get_output_embeddings().weight
    emb.requires_grad_(embeddings != "none")
    if embeddings == "new_rows":
        _keep_rows(emb, new_token_ids or [])
    if head is not emb:
        head.requires_grad_(bool(lm_head))
        if lm_head and embeddings == "new_rows":
            _keep_rows(head, new_token_ids or [])
    mllm.projector.requires_grad_(projector)
    if mllm.video_projector is not None:
        mllm.video_projector.requires_grad_(projector)


def _group(name: str, depth: int) -> str:
    parts = [x for x in name.split(".") if x not in ("base_model", "model", "default")]
    if "language_model" in parts:  # one level deeper: embed_tokens, layers, norm, lm_head
        depth += 1
    if parts[:2] == ["segmenter", "sam"]:
        depth += 1
    key = ".".join(parts[:depth])
    return key + ".lora" if any(p.startswith("lora_") for p in parts) else key


def trainable_report(model: nn.Module, depth: int = 2) -> dict[str, tuple[int, int]]:
    """{module group: (trainable parameters, all parameters)}; LoRA adapters counted apart; of an embedding
    that trains only some rows (`set_lm_trainables`' new_rows), those rows."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, p in model.named_parameters():
        key = _group(name, depth)
        counts[key][1] += p.numel()
        if p.requires_grad:  # an embedding that trains some rows only counts those
            rows = getattr(p, "trainable_rows", None)
            counts[key][0] += p.numel() if rows is None else rows * p[0].numel()
    return {k: (v[0], v[1]) for k, v in sorted(counts.items())}


def format_report(report: dict[str, tuple[int, int]]) -> str:
    width = max(len(k) for k in report)
    lines = [f"{k:<{width}}  {t:>13,} / {n:>13,} trainable" for k, (t, n) in report.items()]
    total_t, total = sum(t for t, _ in report.values()), sum(n for _, n in report.values())
    lines.append(f"{'total':<{width}}  {total_t:>13,} / {total:>13,} trainable ({100 * total_t / max(total, 1):.2f}%)")
    return "\n".join(lines)
