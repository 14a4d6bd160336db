"""CLIP input as published (shortest side + centre crop, as transformers' CLIPImageProcessor of
openai/clip-vit-large-patch14) and as ours (the whole frame squashed)."""
import numpy as np
import pytest
import torch
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from glus.transforms import CLIP_MEAN, CLIP_STD, clip_input


def smooth_frame(h: int, w: int) -> np.ndarray:
    ramp = np.linspace(0, 1, w)[None, :, None] * np.linspace(0.2, 1, h)[:, None, None]
    return (ramp * np.array([255, 128, 60])).astype(np.uint8)


@pytest.mark.parametrize("hw", [(120, 160), (160, 120), (224, 224), (90, 300)])
def test_crop_equals_the_published_clip_image_processor(hw):
    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                      image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    frame = smooth_frame(*hw)
    ref = torch.from_numpy(np.asarray(processor(frame, return_tensors="np")["pixel_values"][0]))
    ours = clip_input(frame[None], 224, "crop")[0]
    assert ours.shape == ref.shape == (3, 224, 224)
    assert (ours - ref).abs().max() < 0.05  # PIL's and torch's bicubic differ by a grey level at most
    noise = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    ref = torch.from_numpy(np.asarray(processor(noise, return_tensors="np")["pixel_values"][0]))
    assert (clip_input(noise[None], 224, "crop")[0] - ref).abs().mean() < 0.02  # same pixels: same geometry


def test_crop_cuts_the_borders_of_a_wide_frame_and_squash_keeps_them():
    frame = np.full((100, 300, 3), 128, np.uint8)
    frame[:, :40] = 255  # a white band at the left border
    crop, squash = clip_input(frame[None], 224, "crop")[0], clip_input(frame[None], 224, "squash")[0]
    white = (1 - CLIP_MEAN[0]) / CLIP_STD[0]
    assert (crop[0, :, :5] - white).abs().max() > 0.5  # cut away by the centre crop
    assert (squash[0, :, :5] - white).abs().max() < 0.05
    with pytest.raises(ValueError, match="crop' or 'squash"):
        clip_input(frame[None], 224, "pad")
