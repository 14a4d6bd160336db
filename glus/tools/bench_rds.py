"""`glus tools bench --only rds`: RDS's image-encoder cost against the kept-block ratio.

1. Measured, at the tiny shapes on the CPU (one thread): seconds per frame of the SAM-2 image encoder of the
   tiny model with Hiera-T's depths (recipes/rds/tiny_deep.yaml), without RDS and with RDS at kept ratios 1.0,
   0.8 and 0.6 (inference: the router's top blocks run, the others are not executed); random weights, since the
   time does not depend on them.
2. Counted, at Hiera-L and 1024 px (the FLOP model's counter on the meta device): the encoder's FLOPs per
   frame in full, each skippable block's share, and at each ratio the FLOPs when the skipped blocks are a
   uniform share of the skippable ones, with the range from skipping the cheapest to skipping the costliest
   (the router picks which; the count says what a choice can cost).
"""
from __future__ import annotations

import time

import torch

RATIOS = (1.0, 0.8, 0.6)
DEEP = {"image_encoder": {"trunk": {"stages": [1, 2, 7, 2], "global_att_blocks": [5, 7, 9]}}}


def encoder_speed(frames: int = 40, size: int = 128, repeats: int = 3) -> dict:
    from glus.model.segmenter import SAM2Segmenter

    torch.set_num_threads(1)
    images = torch.randn(frames, 1, 3, size, size)
    out = {"frames": frames, "size": size, "threads": 1}
    settings = {"plain": None, **{f"keep{r}": {"keep_ratio": r} for r in RATIOS}}
    for name, rds in settings.items():
        torch.manual_seed(0)
        seg = SAM2Segmenter("tiny", size, overrides=DEEP, rds=rds).eval()
        best = float("inf")
        with torch.no_grad():
            seg.encode_image(images[0])  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                for image in images:
                    seg.encode_image(image)
                best = min(best, time.perf_counter() - start)
        out[name] = {"ms_per_frame": 1000 * best / frames}
    for r in RATIOS:
        out[f"keep{r}"]["speedup_vs_plain"] = out["plain"]["ms_per_frame"] / out[f"keep{r}"]["ms_per_frame"]
    return out


def encoder_flops(config: str = "sam2_hiera_l", size: int = 1024) -> dict:
    """Per-frame FLOPs of the image encoder at `config` and `size`, by block, counted on the meta device."""
    from glus.tools.cost import as_meta, counter
    from glus.model.segmenter.build import build_sam2_model
    from glus.model.segmenter.rds import skippable_blocks

    encoder = as_meta(build_sam2_model(config, size).image_encoder)
    per_block = {}
    hooks = []
    with counter() as total:
        for i, blk in enumerate(encoder.trunk.blocks):
            hooks.append(blk.register_forward_pre_hook(lambda m, a, i=i: per_block.__setitem__(
                i, -total.get_total_flops())))
            hooks.append(blk.register_forward_hook(lambda m, a, o, i=i: per_block.__setitem__(
                i, per_block[i] + total.get_total_flops())))
        encoder(torch.empty(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    full = total.get_total_flops()
    skippable = skippable_blocks(encoder.trunk)
    costs = sorted(per_block[b] for b in skippable)
    out = {"config": config, "size": size, "full_tflop": full / 1e12, "skippable": len(skippable),
           "skippable_share": sum(costs) / full}
    for r in RATIOS:
        skipped = len(skippable) - int(round(r * len(skippable)))
        uniform = full - sum(costs) * skipped / len(skippable)
        out[f"keep{r}"] = {"tflop": uniform / 1e12, "speedup": full / uniform,
                           "tflop_range": [(full - sum(costs[-skipped:] if skipped else [])) / 1e12,
                                           (full - sum(costs[:skipped])) / 1e12]}
    return out


def print_rds(report: dict) -> None:
    if "rds" not in report:
        return
    s, f = report["rds"]["speed"], report["rds"]["flops"]
    print(f"[rds] tiny SAM-2 encoder with Hiera-T's depths, {s['size']} px, CPU, 1 thread: plain "
          f"{s['plain']['ms_per_frame']:.2f} ms/frame")
    for r in RATIOS:
        k = s[f"keep{r}"]
        print(f"  kept {r:.1f}: {k['ms_per_frame']:.2f} ms/frame ({k['speedup_vs_plain']:.2f}x the plain encoder)")
    print(f"[rds] {f['config']} encoder at {f['size']} px (counted): {f['full_tflop']:.3f} TFLOP/frame, "
          f"{f['skippable']} skippable blocks = {100 * f['skippable_share']:.0f}% of it")
    for r in RATIOS:
        k = f[f"keep{r}"]
        lo, hi = k["tflop_range"]
        print(f"  kept {r:.1f}: {k['tflop']:.3f} TFLOP/frame ({k['speedup']:.2f}x fewer), {lo:.3f}-{hi:.3f} by the "
              "blocks chosen")
