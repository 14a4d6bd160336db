"""Frame transforms shared by training workers and inference: resize (to a square, or shortest side then centre
crop) and normalise. Below both `glus.data` and `glus.model`, which use the same functions."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def to_tensor(frames_THWC: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(frames_THWC)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {tuple(x.shape)} {x.dtype}")
    return x


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel, on x's device (frames may be resized on the GPU)."""
    mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (mean, std))
    return (x - mean) / std


def resize_normalise(frames_THWC, size: int, mean, std, mode: str) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, size, size). The whole frame is resized (no crop), antialiased."""
    x = to_tensor(frames_THWC).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True).clamp(0, 1)
    return normalise(x, mean, std)


def clip_input(frames_THWC, size: int = 224, resize: str = "crop") -> torch.Tensor:
    """CLIP's input. "crop": as the published GLUS (transformers' CLIPImageProcessor of
    openai/clip-vit-large-patch14): shortest side to `size` (bicubic), centre crop to size x size, so the left
    and right borders of a wide frame are cut. "squash": the whole frame resized to a square (ours: nothing
    is cut, the aspect ratio is not kept)."""
    x = to_tensor(frames_THWC).permute(0, 3, 1, 2).float() / 255.0
    return normalise(clip_geometry(x, size, resize, "bicubic").clamp(0, 1), CLIP_MEAN, CLIP_STD)


def clip_geometry(x_NCHW: torch.Tensor, size: int, resize: str, mode: str = "bilinear") -> torch.Tensor:
    """float (N, C, H, W) -> (N, C, size, size), resized (antialiased) and cropped as `clip_input` resizes frames:
    where a mask lands among CLIP's patches."""
    if resize == "squash":
        return F.interpolate(x_NCHW, size=(size, size), mode=mode, align_corners=False, antialias=True)
    if resize != "crop":
        raise ValueError(f"clip resize must be 'crop' or 'squash', got {resize!r}")
    h, w = x_NCHW.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)  # as transformers' get_resize_output_image_size
    new_hw = (size, new_long) if h <= w else (new_long, size)
    x = F.interpolate(x_NCHW, size=new_hw, mode=mode, align_corners=False, antialias=True)
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    return x[..., top:top + size, left:left + size]


def sam_input(frames_THWC, size: int = 1024) -> torch.Tensor:
    """As SAM-2's own transforms: bilinear resize to size x size, ImageNet normalisation."""
    return resize_normalise(frames_THWC, size, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
