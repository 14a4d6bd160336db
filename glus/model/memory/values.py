"""What the plain-VOS memories store per object and frame: a value map from the frame and its masks.

LiVOS encodes values with a second backbone on RGB + the object's mask + the other objects' masks. Here the
frame enters through the segmenter's own image features (the frozen SAM-2 encoder has already read its RGB:
a second backbone would double the encoder cost for the same pixels), and the two masks through the `sam2`
package's own mask downsampler and ConvNeXt fuser, the blocks of SAM-2's memory encoder.
"""
from __future__ import annotations

import torch
from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler
from torch import nn


def other_objects(prob_B1SS: torch.Tensor) -> torch.Tensor:
    """For each object of one video's batch, the union of the other objects' masks (probabilities, 0..1)."""
    return (prob_B1SS.sum(0, keepdim=True) - prob_B1SS).clamp(0.0, 1.0)


class MaskValueEncoder(nn.Module):
    def __init__(self, feat_dim: int, value_dim: int, image_size: int, feat_size: int, layers: int = 2):
        super().__init__()
        total_stride = image_size // feat_size
        if total_stride * feat_size != image_size or total_stride & (total_stride - 1):
            raise ValueError(f"image size {image_size} is not a power-of-two multiple of the feature size "
                             f"{feat_size}")

        def downsampler():  # SAM-2's settings: 3x3 convs of stride 2 up to the feature stride
            return MaskDownSampler(embed_dim=value_dim, kernel_size=3, stride=2, padding=1, total_stride=total_stride)

        self.feat_proj = nn.Conv2d(feat_dim, value_dim, kernel_size=1)
        self.mask = downsampler()
        self.others = downsampler()
        self.fuser = Fuser(CXBlock(value_dim, kernel_size=7, padding=3, layer_scale_init_value=1e-6), layers)

    def forward(self, feat_BCHW: torch.Tensor, mask_logits_B1SS: torch.Tensor,
                others_B1SS: torch.Tensor | None = None) -> torch.Tensor:
        """(B, value_dim, H, W). `others_B1SS` (probabilities) is None where batch items are not objects of one
        video; the others' channel then reads an empty mask, as for a video with a single object."""
        dtype = self.feat_proj.weight.dtype  # probabilities from float32 logits, in the weights' dtype
        prob = mask_logits_B1SS.float().sigmoid().to(dtype)
        others = torch.zeros_like(prob) if others_B1SS is None else others_B1SS.to(dtype)
        x = self.feat_proj(feat_BCHW) + self.mask(prob) + self.others(others)
        return self.fuser(x)
