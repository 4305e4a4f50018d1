"""Image preprocessing: from an RGB PIL image to a normalised (3, size, size) float tensor."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from core.encoders.base import PreprocessConfig

# "center_crop" resizes the short side to size / crop_pct and crops the centre square, as the
# models were trained. "pad" scales the long side to size and pads to a square (letterbox), so
# the edges of wide or tall paintings stay in the input.
RESIZE_MODES = ("center_crop", "pad")
INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


def check_resize_mode(resize_mode: str) -> str:
    """Return `resize_mode` or raise ValueError listing the valid modes."""
    if resize_mode not in RESIZE_MODES:
        raise ValueError(
            f"Invalid resize_mode {resize_mode!r}. Valid modes: {', '.join(RESIZE_MODES)}. "
            "Use 'center_crop' to match the model's training or 'pad' to keep the whole painting."
        )
    return resize_mode


def with_resize_mode(config: PreprocessConfig, resize_mode: str) -> PreprocessConfig:
    """Return a copy of `config` with `resize_mode` set, after checking it."""
    return dataclasses.replace(config, resize_mode=check_resize_mode(resize_mode))


def resize_size(config: PreprocessConfig) -> int:
    """Return the short-side length before the centre crop, rounded down as timm does."""
    # The epsilon keeps e.g. 224 / (224 / 232) from flooring to 231.
    return math.floor(config.size / config.crop_pct + 1e-6)


class PadToSquare:
    """Pad an image centred on a square canvas of side `size`, filled with `fill`."""

    def __init__(self, size: int, fill: tuple[int, int, int]):
        self.size = size
        self.fill = list(fill)

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        left = (self.size - width) // 2
        top = (self.size - height) // 2
        padding = [left, top, self.size - width - left, self.size - height - top]
        return TF.pad(image, padding, fill=self.fill)


def build_transform(config: PreprocessConfig) -> Callable[[Image.Image], torch.Tensor]:
    """Build the transform from an RGB PIL image to a normalised (3, size, size) float tensor."""
    check_resize_mode(config.resize_mode)
    if config.interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"Invalid interpolation {config.interpolation!r}. Valid values: {', '.join(INTERPOLATIONS)}."
        )
    if not 0 < config.crop_pct <= 1:
        raise ValueError(f"Invalid crop_pct {config.crop_pct}: it must lie in (0, 1].")

    interpolation = INTERPOLATIONS[config.interpolation]
    if config.resize_mode == "center_crop":
        geometry = [
            v2.Resize(resize_size(config), interpolation=interpolation, antialias=True),
            v2.CenterCrop(config.size),
        ]
    else:
        geometry = [
            # size=None with max_size scales the longer side to max_size and keeps the aspect ratio.
            v2.Resize(None, max_size=config.size, interpolation=interpolation, antialias=True),
            PadToSquare(config.size, config.fill),
        ]
    return v2.Compose(
        [
            v2.Lambda(_to_rgb),
            *geometry,
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(config.mean), std=list(config.std)),
        ]
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")
