"""The encoder registry: create any image encoder by name.

Built-in names are `resnet50`, `clip-vit-b-32` and `effnet-lite0`; any open_clip model is
available as `open_clip:<ARCH>/<pretrained tag>`, e.g. `open_clip:ViT-B-16/openai`. More names
(for example a CNN with a trained text tower) are added at runtime with `register_model`.
Families are imported only when one of their models is created, so importing the registry stays fast.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from core.encoders.base import (
    Encoder,
    PreprocessConfig,
    TextTowerMissingError,
    TorchEncoder,
    WeightsNotFoundError,
)
from core.encoders.preprocess import RESIZE_MODES, build_transform, check_resize_mode
from core.encoders.text import TextEncoder, create_text_encoder, list_text_models
from core.encoders.weights import env_var_name

# A factory takes keyword arguments weights, device, resize_mode and its own options.
EncoderFactory = Callable[..., Encoder]

OPEN_CLIP_PREFIX = "open_clip:"
# Separates the CNN from the text model in an aligned model name, e.g. effnet-lite0+minilm.
ALIGNED_SEPARATOR = "+"
OPEN_CLIP_FORM = "open_clip:<ARCH>/<pretrained tag>"
_FACTORIES: dict[str, EncoderFactory] = {}


def register_model(name: str, *, replace: bool = False) -> Callable[[EncoderFactory], EncoderFactory]:
    """Return a decorator that registers an encoder factory under `name`.

    Registering the same factory again is a no-op, so pages that rerun stay safe. A different
    factory for a taken name raises ValueError unless `replace=True`.
    """
    if not name or name.startswith(OPEN_CLIP_PREFIX):
        raise ValueError(f"Invalid model name {name!r}: it must be non-empty and not start with {OPEN_CLIP_PREFIX!r}.")

    def decorator(factory: EncoderFactory) -> EncoderFactory:
        existing = _FACTORIES.get(name)
        if existing is not None and existing is not factory and not replace:
            raise ValueError(f"Model name {name!r} is already registered. Pass replace=True to override it.")
        _FACTORIES[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Return the registered and trained aligned model names, sorted.

    open_clip models, created by the open_clip form, are not listed.
    """
    from core.encoders.aligned import find_aligned_models

    return sorted({*_FACTORIES, *find_aligned_models()})


def default_weights(name: str, indexes_root: str | os.PathLike) -> Path | None:
    """Return the trained folder of an aligned model under an indexes root, or None.

    Other models find their weights through `create_encoder`'s own search, so they get None.
    """
    if name in _FACTORIES or ALIGNED_SEPARATOR not in name:
        return None
    from core.encoders.aligned import default_models_dir

    folder = default_models_dir(indexes_root) / name
    return folder if folder.is_dir() else None


def create_encoder(
    name: str,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    resize_mode: str = "center_crop",
    **options,
) -> Encoder:
    """Create the encoder registered as `name`, or an open_clip model named `open_clip:<ARCH>/<tag>`.

    `weights` is a local file or folder and takes precedence over the environment variable
    SEMGAP_WEIGHTS_<NAME> and the caches. `resize_mode` is "center_crop" or "pad".
    """
    check_resize_mode(resize_mode)
    if name.startswith(OPEN_CLIP_PREFIX):
        return _create_open_clip(name, weights, device, resize_mode, **options)
    if name not in _FACTORIES and ALIGNED_SEPARATOR in name:
        # A CNN with a text tower trained by `python -m core align`, loaded from its model folder.
        from core.encoders.aligned import load_aligned_encoder

        _check_options(name, options)
        return load_aligned_encoder(name, device=device, resize_mode=resize_mode, folder=weights)
    if name not in _FACTORIES:
        raise ValueError(
            f"Unknown model {name!r}. Valid models: {', '.join(list_models())}, "
            f"or any open_clip model as {OPEN_CLIP_FORM} (e.g. open_clip:ViT-B-16/openai)."
        )
    return _FACTORIES[name](weights=weights, device=device, resize_mode=resize_mode, **options)


def _check_options(model: str, options: dict, valid: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {', '.join(unknown)} for model {model!r}. "
            f"Valid options: {', '.join(valid) or '(none)'}."
        )


def _create_open_clip(name: str, weights, device, resize_mode: str, **options) -> Encoder:
    _check_options(name, options)
    arch, _, tag = name[len(OPEN_CLIP_PREFIX):].partition("/")
    if not arch or not tag:
        raise ValueError(
            f"Invalid open_clip model name {name!r}. Use the form {OPEN_CLIP_FORM}, e.g. open_clip:ViT-B-16/openai."
        )
    from core.encoders.openclip import OpenClipEncoder

    return OpenClipEncoder(name, arch, tag, weights=weights, device=device, resize_mode=resize_mode)


@register_model("resnet50")
def _resnet50(weights=None, device="cpu", resize_mode="center_crop", **options) -> Encoder:
    _check_options("resnet50", options)
    from core.encoders.resnet import ResNet50Encoder

    return ResNet50Encoder(weights=weights, device=device, resize_mode=resize_mode)


@register_model("clip-vit-b-32")
def _clip_vit_b_32(
    weights=None, device="cpu", resize_mode="center_crop", pretrained: str = "laion2b_s34b_b79k", **options
) -> Encoder:
    _check_options("clip-vit-b-32", options, ("pretrained",))
    from core.encoders.openclip import OpenClipEncoder

    return OpenClipEncoder(
        "clip-vit-b-32", "ViT-B-32", pretrained, weights=weights, device=device, resize_mode=resize_mode
    )


@register_model("effnet-lite0")
def _effnet_lite0(weights=None, device="cpu", resize_mode="center_crop", **options) -> Encoder:
    _check_options("effnet-lite0", options)
    from core.encoders.effnet import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder(weights=weights, device=device, resize_mode=resize_mode)


__all__ = [
    "Encoder",
    "EncoderFactory",
    "PreprocessConfig",
    "RESIZE_MODES",
    "TextEncoder",
    "TextTowerMissingError",
    "TorchEncoder",
    "WeightsNotFoundError",
    "build_transform",
    "create_encoder",
    "create_text_encoder",
    "env_var_name",
    "list_models",
    "list_text_models",
    "register_model",
]
