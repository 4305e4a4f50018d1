"""A text tower for an image-only CNN: projection heads trained by `core.align`.

An aligned model `<cnn>+<text>` (e.g. `effnet-lite0+minilm`) lives in `<models dir>/<name>/`:
`heads.pt` (a state dict of both heads and the logit scale) and `config.json` (the base models,
their checksums, the head shapes and the training record). Its image tower is the CNN followed by
the image head and its text tower is the sentence encoder followed by the text head, so both
map into one shared space of `projection_dim` dimensions.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.encoders.base import Encoder

logger = logging.getLogger(__name__)

MODELS_ENV = "SEMGAP_MODELS"
DEFAULT_MODELS_DIR = Path("indexes") / ".models"
HEADS_FILE = "heads.pt"
CONFIG_FILE = "config.json"
NAME_SEPARATOR = "+"
HEAD_KINDS = ("linear", "mlp")
# CLIP's bound on the logit scale (a temperature of at least 0.01), which keeps training stable.
MAX_LOGIT_SCALE = 100.0


class AlignedModelNotFoundError(FileNotFoundError):
    """No trained text tower exists for an aligned model name."""


def default_models_dir(indexes_root: str | os.PathLike | None = None) -> Path:
    """Return the folder of trained aligned models: $SEMGAP_MODELS, else <indexes root>/.models.

    Models live beside the indexes they were trained on, so a build into another indexes folder
    never replaces the models of this one.
    """
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    return Path(indexes_root) / ".models" if indexes_root is not None else DEFAULT_MODELS_DIR


def aligned_name(image_model: str, text_model: str) -> str:
    """Return the registry name of a CNN paired with a text model, e.g. effnet-lite0+minilm."""
    return f"{image_model}{NAME_SEPARATOR}{text_model}"


def split_aligned_name(name: str) -> tuple[str, str]:
    """Return (image model, text model) of an aligned model name, raising on another form."""
    image_model, separator, text_model = name.rpartition(NAME_SEPARATOR)
    if not separator or not image_model or not text_model:
        raise ValueError(
            f"Invalid aligned model name {name!r}: expected <image model>{NAME_SEPARATOR}<text model>, "
            "e.g. effnet-lite0+minilm."
        )
    return image_model, text_model


def train_command(image_model: str, text_model: str) -> str:
    """Return the command that trains the text tower of `image_model`."""
    return f"python -m core align --index indexes/<corpus> --image-model {image_model} --text-model {text_model}"


def find_aligned_models(models_dir: str | os.PathLike | None = None) -> list[str]:
    """Return the names of the trained aligned models in `models_dir`, sorted."""
    folder = Path(models_dir) if models_dir is not None else default_models_dir()
    if not folder.is_dir():
        return []
    return sorted(
        path.name
        for path in folder.iterdir()
        if not path.name.startswith(".") and (path / CONFIG_FILE).is_file() and (path / HEADS_FILE).is_file()
    )


class ProjectionHead(nn.Module):
    """A linear map or a 2-layer MLP from an encoder's space to the shared space, L2-normalised."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear", hidden_dim: int = 512, dropout: float = 0.0):
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        elif kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim)
            )
        else:
            raise ValueError(f"Unknown head kind {kind!r}; valid choices: {', '.join(HEAD_KINDS)}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class AlignmentHeads(nn.Module):
    """The image head, the text head and the learnable logit scale (1 / temperature) of CLIP."""

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        projection_dim: int = 256,
        kind: str = "linear",
        hidden_dim: int = 512,
        dropout: float = 0.0,
        temperature: float = 0.07,
    ):
        super().__init__()
        self.image_head = ProjectionHead(image_dim, projection_dim, kind, hidden_dim, dropout)
        self.text_head = ProjectionHead(text_dim, projection_dim, kind, hidden_dim, dropout)
        # Stored as a log so that gradient steps keep the scale positive.
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach())

    def loss(self, images: torch.Tensor, texts: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        """Return the symmetric InfoNCE loss of a batch of (image, text) pairs.

        images: (B, image_dim), texts: (B, text_dim), text_ids: (B,) equal for identical texts.
        Pairs that share a text (many paintings are titled "Self-Portrait") are all counted as
        positives of each other, with the target probability split evenly among them.
        """
        logits = self.logit_scale * self.image_head(images) @ self.text_head(texts).T  # (B, B)
        same_text = (text_ids[:, None] == text_ids[None, :]).float()
        targets = same_text / same_text.sum(dim=1, keepdim=True)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T)) / 2


def heads_sha256(path: Path) -> str:
    """Return the SHA-256 of a heads file, read afresh on every call.

    Unlike the weights cache keyed by size and modification time, this cannot return a stale
    digest when a retrain rewrites a file of the same size within one timestamp tick.
    """
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def build_heads(config: dict) -> AlignmentHeads:
    """Create untrained heads with the shapes recorded in a model's config.json."""
    return AlignmentHeads(
        image_dim=config["image_dim"],
        text_dim=config["text_dim"],
        projection_dim=config["projection_dim"],
        kind=config["head"],
        hidden_dim=config["hidden_dim"],
        dropout=config.get("dropout", 0.0),
    )


def read_model_config(
    name: str, models_dir: str | os.PathLike | None = None, folder: str | os.PathLike | None = None
) -> tuple[Path, dict]:
    """Return the folder and config.json of a trained aligned model, raising with the training command.

    The folder is `folder` when given, else `<models_dir>/<name>`.
    """
    image_model, text_model = split_aligned_name(name)
    if folder is None:
        folder = (Path(models_dir) if models_dir is not None else default_models_dir()) / name
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / HEADS_FILE).is_file():
        raise AlignedModelNotFoundError(
            f"No trained text tower for {name!r}: {CONFIG_FILE} or {HEADS_FILE} is missing in {folder}. "
            f"Train it with `{train_command(image_model, text_model)}`, or point ${MODELS_ENV} at the "
            "folder of trained models."
        )
    return folder, json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))


class AlignedEncoder(Encoder):
    """A CNN and a sentence encoder mapped into one space by trained projection heads."""

    has_text_tower = True

    def __init__(
        self,
        folder: str | os.PathLike,
        device: str | torch.device = "cpu",
        resize_mode: str = "center_crop",
        *,
        image_encoder: Encoder | None = None,
        text_encoder=None,
    ):
        """Load the model in `folder`. `image_encoder` and `text_encoder`, when given, replace the base models."""
        self.folder = Path(folder)
        self.config = json.loads((self.folder / CONFIG_FILE).read_text(encoding="utf-8"))
        self.name = self.config["name"]
        self.device = torch.device(device)
        self.image_encoder = image_encoder or _create_image_encoder(self.config, self.device, resize_mode)
        self.text_encoder = text_encoder or _create_text_encoder(self.config, self.device)
        self._check_base_models()

        heads_path = self.folder / HEADS_FILE
        self.heads = build_heads(self.config)
        self.heads.load_state_dict(torch.load(heads_path, map_location="cpu", weights_only=True))
        self.heads.eval().to(self.device)
        self.dim = self.config["projection_dim"]
        self.preprocess_config = self.image_encoder.preprocess_config
        self.weights_source = str(heads_path)
        self.weights_sha256 = heads_sha256(heads_path)

    def _check_base_models(self) -> None:
        """Raise when a base model differs from the one the heads were trained on."""
        for tower, encoder in (("image", self.image_encoder), ("text", self.text_encoder)):
            trained_sha = self.config[f"{tower}_weights_sha256"]
            if encoder.weights_sha256 != trained_sha:
                raise ValueError(
                    f"{self.name}: the heads were trained on {self.config[f'{tower}_model']} weights with SHA-256 "
                    f"{trained_sha[:12]}, but the loaded weights have {encoder.weights_sha256[:12]}. "
                    f"Retrain with `{train_command(self.config['image_model'], self.config['text_model'])}`."
                )
        if self.image_encoder.fingerprint != self.config["image_model_fingerprint"]:
            logger.warning(
                "%s: the image preprocessing differs from the one the heads were trained with "
                "(for example another resize mode), so image vectors may match text vectors less well.",
                self.name,
            )

    @property
    def fingerprint(self) -> str:
        """Return a checksum over the heads and both base models."""
        payload = json.dumps(
            {
                "name": self.name,
                "heads_sha256": self.weights_sha256,
                "image_model_fingerprint": self.image_encoder.fingerprint,
                "text_weights_sha256": self.text_encoder.weights_sha256,
                "dim": self.dim,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Encode a (B, 3, H, W) batch into (B, dim) unit vectors of the shared space."""
        return self.project_image_features(self.image_encoder.encode_images(images))

    @torch.inference_mode()
    def project_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """Map (B, image_dim) unit vectors of the base CNN into (B, dim) vectors of the shared space.

        The embedding job calls this on the CNN's cached vectors, so an aligned model is indexed
        without encoding the images again.
        """
        return self.heads.image_head(features.to(self.device, torch.float32)).cpu()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Encode texts into (len(texts), dim) unit vectors of the shared space."""
        features = self.text_encoder.encode_texts(texts)  # (n, text_dim), unit norm
        return self.heads.text_head(features.to(self.device, torch.float32)).cpu()


def _create_image_encoder(config: dict, device: torch.device, resize_mode: str) -> Encoder:
    from core.encoders import create_encoder

    return create_encoder(config["image_model"], device=device, resize_mode=resize_mode)


def _create_text_encoder(config: dict, device: torch.device):
    from core.encoders import create_text_encoder

    return create_text_encoder(config["text_model"], device=device)


def load_aligned_encoder(
    name: str,
    models_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    resize_mode: str = "center_crop",
    *,
    image_encoder: Encoder | None = None,
    text_encoder=None,
    folder: str | os.PathLike | None = None,
) -> AlignedEncoder:
    """Load the trained aligned model `name` from `models_dir` (default: $SEMGAP_MODELS or indexes/.models).

    `folder` names the model folder itself and takes precedence over `models_dir`, as a
    `weights` path does for the other models of the registry.
    """
    folder, config = read_model_config(name, models_dir, folder)
    if config.get("name") != name:
        raise ValueError(f"The model in {folder} is {config.get('name')!r}, not {name!r}: load it by its own name.")
    encoder = AlignedEncoder(
        folder, device=device, resize_mode=resize_mode, image_encoder=image_encoder, text_encoder=text_encoder
    )
    logger.info("Loaded aligned model %s from %s (heads %s)", name, folder, encoder.weights_sha256[:12])
    return encoder
