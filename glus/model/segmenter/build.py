"""Build SAM-2 models from the `sam2` package's own configs, without touching Hydra's global state.

`sam2` initialises Hydra globally on import and `build_sam2` composes through it; we load the packaged YAML
with OmegaConf and instantiate it instead, so that our own CLI (and tests) can use Hydra or not, freely.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch
from omegaconf import OmegaConf

from glus.model.errors import CheckpointError, load_strict

PACKAGED = {  # name -> config path inside the sam2 package
    **{f"sam2_hiera_{s}": f"configs/sam2/sam2_hiera_{s}.yaml" for s in ("t", "s", "b+", "l")},
    **{f"sam2.1_hiera_{s}": f"configs/sam2.1/sam2.1_hiera_{s}.yaml" for s in ("t", "s", "b+", "l")},
}

def tiny_overrides(d_model: int = 32, mem_dim: int = 16, embed_dim: int = 8) -> dict:
    """A few hundred thousand parameters, every SAM-2 code path: for tests and the synthetic recipe.
    Config names "tiny" (d_model 32) and "tiny-<d_model>" (e.g. "tiny-64") select it."""
    d = d_model
    return {
        "image_size": 128,
        "image_encoder": {
            "trunk": {"embed_dim": embed_dim, "num_heads": 1, "stages": [1, 2, 2, 1], "global_att_blocks": [4],
                      "window_pos_embed_bkg_spatial_size": [4, 4], "window_spec": [4, 4, 4, 4]},
            "neck": {"d_model": d, "backbone_channel_list": [embed_dim * 8, embed_dim * 4, embed_dim * 2, embed_dim],
                     "position_encoding": {"num_pos_feats": d}},
        },
        "memory_attention": {"d_model": d, "num_layers": 1, "layer": {
            "d_model": d, "dim_feedforward": 2 * d,
            "self_attention": {"embedding_dim": d, "feat_sizes": [8, 8]},
            "cross_attention": {"embedding_dim": d, "feat_sizes": [8, 8], "kv_in_dim": mem_dim}}},
        "memory_encoder": {"out_dim": mem_dim, "in_dim": d, "position_encoding": {"num_pos_feats": mem_dim},
                           "mask_downsampler": {"embed_dim": d}, "fuser": {"layer": {"dim": d}}},
    }


def sam2_config(name: str, image_size: int | None = None, overrides: dict | None = None):
    """The OmegaConf config of a packaged SAM-2 ("sam2.1_hiera_l", ...), "tiny", or a YAML file path."""
    if name == "tiny" or name.startswith("tiny-"):
        width = int(name.split("-")[1]) if "-" in name else 32
        cfg = OmegaConf.merge(_packaged("sam2.1_hiera_t"), {"model": tiny_overrides(width, max(16, width // 2))})
    elif name in PACKAGED:
        cfg = _packaged(name)
    elif Path(name).is_file():
        cfg = OmegaConf.load(name)
    else:
        raise ValueError(f"unknown SAM-2 config {name!r}: use 'tiny', a YAML file, or one of {sorted(PACKAGED)}")
    if overrides:
        cfg = OmegaConf.merge(cfg, {"model": overrides})
    if image_size is not None:
        cfg = OmegaConf.merge(cfg, {"model": {"image_size": int(image_size)}})
    size = cfg.model.image_size
    if size % 32:
        raise ValueError(f"SAM-2 image_size must be a multiple of 32, got {size}")
    side = size // 16  # memory attention's RoPE tables are built for the top-level feature map
    for attn in ("self_attention", "cross_attention"):
        cfg.model.memory_attention.layer[attn].feat_sizes = [side, side]
    return cfg


def _packaged(name: str):
    return OmegaConf.load(str(importlib.resources.files("sam2") / PACKAGED[name]))


def build_sam2_model(name: str = "tiny", image_size: int | None = None, checkpoint: str | None = None,
                     overrides: dict | None = None):
    """A `sam2.modeling.sam2_base.SAM2Base` built from config; official checkpoints load strictly."""
    from hydra.utils import instantiate

    cfg = sam2_config(name, image_size, overrides)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    if checkpoint:
        load_sam2_checkpoint(model, checkpoint)
    return model


def load_sam2_checkpoint(model, path: str) -> None:
    if not Path(path).is_file():
        raise CheckpointError(f"SAM-2 checkpoint not found: {path}. Expected an official file such as "
                              "checkpoints/sam2/sam2_hiera_large.pt (see checkpoints/README.md)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    load_strict(model, state, f"SAM-2 checkpoint {path}")
