"""I-LoRA (importance-aware LoRA, from RDS): measure how much each block of SAM-2's Hiera trunk matters on a
calibration set, and put LoRA adapters (peft) only on the most important ones.

Importance of a block (the skippable ones: `rds.skippable_blocks`; a stage transition changes the shape, so it
can be neither skipped nor compared with its input):
- global: 1 - cos(the encoder's top features with every block, the same with this block skipped), i.e. what
  removing the block does to what the decoder and memory read;
- local: 1 - cos(the block's input, its output), i.e. how much the block transforms its features;
each averaged over the calibration frames and divided by its largest value over the blocks; the score is the
mean of the two. `glus rds importance` writes them to a JSON file; a recipe names it (`encoder_lora.importance`).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from glus.model.segmenter.rds import skippable_blocks


def _cos_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per item of a batch, over all other dimensions."""
    return 1 - F.cosine_similarity(a.flatten(1).float(), b.flatten(1).float(), dim=1)


@contextmanager
def _skipped(block):
    """The block's output replaced by its input (it still runs: calibration only)."""
    handle = block.register_forward_hook(lambda module, inputs, output: inputs[0])
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def block_importance(image_encoder, batches) -> dict:
    """{"blocks": {index: {"global", "local", "score"}}, "ranking": [indices, most important first], "frames": n}
    over `batches` of SAM-2 input images (B, 3, S, S)."""
    trunk = image_encoder.trunk
    blocks = skippable_blocks(trunk)
    sums = {b: {"global": 0.0, "local": 0.0} for b in blocks}
    frames = 0
    for images in batches:
        local = {}
        hooks = [trunk.blocks[b].register_forward_hook(
            lambda m, i, o, b=b: local.__setitem__(b, _cos_distance(i[0], o))) for b in blocks]
        try:
            full = image_encoder(images)["vision_features"]
        finally:
            for h in hooks:
                h.remove()
        for b in blocks:
            with _skipped(trunk.blocks[b]):
                without = image_encoder(images)["vision_features"]
            sums[b]["global"] += float(_cos_distance(full, without).sum())
            sums[b]["local"] += float(local[b].sum())
        frames += images.size(0)
    if not frames:
        raise ValueError("block importance needs at least one calibration frame")
    means = {b: {k: v / frames for k, v in s.items()} for b, s in sums.items()}
    top = {k: max(max(m[k] for m in means.values()), 1e-12) for k in ("global", "local")}
    for m in means.values():
        m["score"] = 0.5 * (m["global"] / top["global"] + m["local"] / top["local"])
    ranking = sorted(blocks, key=lambda b: -means[b]["score"])
    return {"blocks": {str(b): means[b] for b in blocks}, "ranking": ranking, "frames": frames}


def read_importance(path: str | Path) -> list[int]:
    """The ranking (most important first) from a `glus rds importance` file, checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder_lora.importance: {path} does not exist. Fix: write it with `glus rds "
                                "importance --ckpt VOS_EXPORT --data SPLIT --root DATA --out FILE`")
    try:
        ranking = json.loads(path.read_text())["ranking"]
    except (ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a block importance file (no 'ranking'): {err!r}") from err
    return [int(b) for b in ranking]


def lora_blocks(trunk, importance: str | None = None, top_k: int = 4, blocks: list[int] | None = None) -> list[int]:
    """The blocks that get adapters: `blocks` as given, or the `top_k` first of the importance ranking."""
    chosen = list(blocks) if blocks is not None else read_importance(importance)[:top_k] if importance else None
    if chosen is None:
        raise ValueError("encoder_lora needs `importance` (a file from `glus rds importance`) or `blocks`")
    allowed = set(skippable_blocks(trunk))
    wrong = sorted(set(chosen) - allowed)
    if wrong:
        raise ValueError(f"encoder_lora blocks {wrong} are not shape-preserving blocks of this trunk "
                         f"({sorted(allowed)}): was the importance file written for another SAM-2 config?")
    return sorted(chosen)


def apply_encoder_lora(trunk, importance: str | None = None, top_k: int = 4, blocks: list[int] | None = None,
                       r: int = 8, alpha: int = 16, dropout: float = 0.0,
                       targets: tuple[str, ...] = ("attn.qkv", "attn.proj")) -> list[int]:
    """LoRA (peft) on the attention projections of the chosen blocks, in place; only the adapters train.
    Returns the blocks."""
    from peft import LoraConfig, inject_adapter_in_model

    chosen = lora_blocks(trunk, importance, top_k, blocks)
    names = "|".join(t.replace(".", r"\.") for t in targets)
    pattern = rf"blocks\.({'|'.join(map(str, chosen))})\.({names})"
    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern), trunk)
    for name, p in trunk.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
    return chosen
