"""The interface every encoder family implements."""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image


@dataclass
class PreprocessConfig:
    """The steps that turn a PIL image into the model's input tensor."""

    size: int = 224  # side of the square input, in pixels
    resize_mode: str = "center_crop"  # "center_crop" (resize the short side, crop) or "pad" (letterbox)
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 1.0  # resize to size / crop_pct before the centre crop (timm convention)
    fill: tuple[int, int, int] = (0, 0, 0)  # padding colour for resize_mode "pad"

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder:
    """An image tower, its preprocessing and an optional text tower.

    Subclasses set the attributes below in `__init__` and implement `encode_images`, and
    `encode_texts` when they have a text tower. Both return L2-normalised float32 tensors on the CPU.
    """

    name: str  # registry name, e.g. "effnet-lite0"
    dim: int  # embedding dimension d
    has_text_tower: bool = False
    weights_source: str = ""  # file path or pretrained tag the weights came from
    weights_sha256: str = ""  # checksum of the weights file, or of the state dict when there is no file
    preprocess_config: PreprocessConfig
    device: torch.device

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        """Return the transform from an RGB PIL image to a (3, H, W) float tensor."""
        from core.encoders.preprocess import build_transform

        return build_transform(self.preprocess_config)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Encode a (B, 3, H, W) batch into (B, dim) unit vectors."""
        raise NotImplementedError(f"{type(self).__name__} must implement encode_images")

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Encode texts into (len(texts), dim) unit vectors in the image space."""
        raise TextTowerMissingError(self.name)

    @property
    def fingerprint(self) -> str:
        """Return a checksum that changes whenever the vectors could change."""
        payload = json.dumps(
            {
                "name": self.name,
                "weights_sha256": self.weights_sha256,
                "preprocess": self.preprocess_config.to_dict(),
                "dim": self.dim,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()


class TorchEncoder(Encoder):
    """An encoder whose image tower is a torch module that maps a batch to (B, dim) features.

    On CUDA the tower runs under autocast (bfloat16 where supported, else float16) with
    channels_last memory, so GPU vectors differ slightly from CPU vectors of the same image.
    """

    model: torch.nn.Module

    def _place_model(self, model: torch.nn.Module, device: str | torch.device) -> None:
        """Move the model to `device` in eval mode and keep it as `self.model`."""
        self.device = torch.device(device)
        model = model.eval().to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Return the unnormalised (B, dim) features of a batch already on `self.device`."""
        return self.model(images)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"{self.name}: expected an image batch of shape (B, 3, H, W), got {tuple(images.shape)}. "
                "Stack the outputs of `encoder.preprocess` with torch.stack."
            )
        images = images.to(self.device, dtype=torch.float32, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            features = self._image_features(images)
        return F.normalize(features.float(), dim=-1).cpu()


class TextTowerMissingError(RuntimeError):
    """A text query was sent to a model that has no text tower."""

    def __init__(self, model: str):
        super().__init__(
            f"Model {model!r} has no text tower, so it answers image queries only. Use a CLIP model "
            f"or train a text tower with `python -m core align --index indexes/<corpus> --image-model {model} "
            "--text-model minilm`."
        )
        self.model = model


class WeightsNotFoundError(FileNotFoundError):
    """No weights for a model were found in any of the places searched."""
