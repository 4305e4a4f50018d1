"""torchvision ResNet-50 with ImageNet weights: 2048-d pooled features before the classifier."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torchvision.models import ResNet50_Weights, resnet50

from core.encoders.base import PreprocessConfig, TorchEncoder
from core.encoders.preprocess import with_resize_mode
from core.encoders.weights import (
    WeightsSearch,
    existing_file,
    file_sha256,
    load_state_dict_file,
    resolve_weights,
    torch_hub_checkpoint_dir,
)

logger = logging.getLogger(__name__)

TORCHVISION_WEIGHTS = ResNet50_Weights.IMAGENET1K_V2


def checkpoint_file_name() -> str:
    """Return the file name torchvision gives the weights in its hub cache (the URL's last part)."""
    return os.path.basename(TORCHVISION_WEIGHTS.url)


def weights_search(name: str = "resnet50") -> WeightsSearch:
    """Describe where the ResNet-50 weights are looked for."""
    cached = torch_hub_checkpoint_dir() / checkpoint_file_name()
    return WeightsSearch(
        model=name,
        file_names=(checkpoint_file_name(),),
        cache_lookups=[(str(cached), existing_file(cached))],
        download=_download,
        hint=f"torchvision downloads it from {TORCHVISION_WEIGHTS.url} when online.",
    )


def _download() -> Path:
    directory = torch_hub_checkpoint_dir()
    torch.hub.load_state_dict_from_url(
        TORCHVISION_WEIGHTS.url, model_dir=str(directory), check_hash=True, weights_only=True
    )
    return directory / checkpoint_file_name()


def preprocess_config() -> PreprocessConfig:
    """Read the preprocessing from torchvision's weights metadata (resize 232, crop 224, bilinear)."""
    transform = TORCHVISION_WEIGHTS.transforms()
    crop = transform.crop_size[0]
    return PreprocessConfig(
        size=crop,
        interpolation=transform.interpolation.value,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        crop_pct=crop / transform.resize_size[0],
    )


class ResNet50Encoder(TorchEncoder):
    """ResNet-50 image tower; the classifier is replaced by the identity, leaving 2048-d features."""

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        resize_mode: str = "center_crop",
        name: str = "resnet50",
    ):
        self.name = name
        self.dim = 2048
        self.preprocess_config = with_resize_mode(preprocess_config(), resize_mode)
        path = resolve_weights(weights_search(name), weights)

        model = resnet50(weights=None)
        model.load_state_dict(load_state_dict_file(path), strict=True)
        model.fc = torch.nn.Identity()
        self.weights_source = str(path)
        self.weights_sha256 = file_sha256(path)
        self._place_model(model, device)
        logger.info("Loaded %s from %s", name, path)
