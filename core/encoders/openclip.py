"""open_clip models: an image tower and a text tower sharing one embedding space."""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from core.encoders.base import PreprocessConfig, TorchEncoder
from core.encoders.preprocess import with_resize_mode
from core.encoders.weights import (
    WeightsSearch,
    existing_file,
    file_sha256,
    hf_cached_file,
    hf_hub_cache_dir,
    resolve_weights,
)

logger = logging.getLogger(__name__)

# open_clip's default cache for weights it downloads from a URL (the OpenAI releases).
OPENCLIP_URL_CACHE = Path("~/.cache/clip")
# Keys of an open_clip pretrained config that describe preprocessing.
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


def check_arch_and_tag(arch: str, tag: str) -> dict:
    """Return open_clip's pretrained config for (arch, tag), or raise ValueError listing valid values."""
    if arch not in open_clip.list_models():
        raise ValueError(
            f"Unknown open_clip architecture {arch!r}. Valid architectures: {', '.join(open_clip.list_models())}."
        )
    tags = open_clip.list_pretrained_tags_by_model(arch)
    config = open_clip.get_pretrained_cfg(arch, tag)
    if not config:
        raise ValueError(
            f"Unknown pretrained tag {tag!r} for open_clip architecture {arch!r}. "
            f"Valid tags: {', '.join(tags) or '(none)'}."
        )
    return config


def hf_file_names(hf_hub: str) -> tuple[str, str]:
    """Split open_clip's "org/repo/filename" entry into (repo_id, filename), defaulting the name as open_clip does."""
    repo_id, filename = os.path.split(hf_hub)
    return repo_id, filename or HF_WEIGHTS_NAME


def _safetensors_first(filename: str) -> list[str]:
    """List the file names open_clip tries on the hub, the safetensors variant first."""
    if filename == HF_WEIGHTS_NAME:
        return [HF_SAFE_WEIGHTS_NAME, filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def weights_search(name: str, arch: str, tag: str) -> WeightsSearch:
    """Describe where the weights of an open_clip (arch, tag) pair are looked for."""
    config = check_arch_and_tag(arch, tag)
    lookups = []
    file_names: list[str] = []
    if config.get("hf_hub"):
        repo_id, filename = hf_file_names(config["hf_hub"])
        for candidate in _safetensors_first(filename):
            description = f"Hugging Face cache {hf_hub_cache_dir()} ({repo_id}/{candidate})"
            lookups.append((description, lambda r=repo_id, c=candidate: hf_cached_file(r, c)))
            file_names.append(candidate)
    if config.get("url"):
        cached = OPENCLIP_URL_CACHE.expanduser() / os.path.basename(config["url"])
        lookups.append((str(cached), existing_file(cached)))
        file_names.append(cached.name)
    return WeightsSearch(
        model=name,
        file_names=tuple(file_names),
        cache_lookups=lookups,
        download=lambda: Path(open_clip.download_pretrained(config)),
        hint=f"open_clip downloads the {arch}/{tag} weights when online.",
    )


def is_torchscript_archive(path: Path) -> bool:
    """Return True for a TorchScript archive, the format of the OpenAI CLIP releases."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(entry.endswith("/constants.pkl") for entry in archive.namelist())


def load_model(arch: str, tag_config: dict, path: Path) -> torch.nn.Module:
    """Build an open_clip model from a local weights file, rebuilding TorchScript archives as regular modules."""
    if is_torchscript_archive(path):
        # NOTE: untested, because no TorchScript CLIP release can be made offline.
        return open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
    # A file path skips open_clip's tag handling, so pass the tag's activation and preprocessing.
    return open_clip.create_model(
        arch,
        pretrained=str(path),
        force_quick_gelu=bool(tag_config.get("quick_gelu", False)),
        force_preprocess_cfg={key: tag_config[key] for key in PREPROCESS_KEYS if key in tag_config},
        device="cpu",
    )


def preprocess_config(model: torch.nn.Module, tag_config: dict) -> PreprocessConfig:
    """Read size, mean, std and interpolation from the model's open_clip preprocess config."""
    config = dict(open_clip.get_model_preprocess_cfg(model))
    for key in PREPROCESS_KEYS:
        config.setdefault(key, tag_config.get(key))
    size = config["size"]
    if config.get("resize_mode") not in (None, "shortest"):
        logger.warning(
            "open_clip trained this model with resize_mode %r, but the encoder resizes the short side and "
            "crops (or pads), so its inputs differ from training.",
            config["resize_mode"],
        )
    return PreprocessConfig(
        size=size if isinstance(size, int) else int(size[-1]),
        interpolation=config["interpolation"],
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        crop_pct=1.0,  # open_clip's "shortest" mode resizes the short side to the input size
        fill=(0, 0, 0),
    )


class OpenClipEncoder(TorchEncoder):
    """An open_clip model: `encode_images` and `encode_texts` return vectors in one space."""

    has_text_tower = True

    def __init__(
        self,
        name: str,
        arch: str,
        pretrained: str,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        resize_mode: str = "center_crop",
    ):
        self.name = name
        self.arch = arch
        tag_config = check_arch_and_tag(arch, pretrained)
        path = resolve_weights(weights_search(name, arch, pretrained), weights)

        model = load_model(arch, tag_config, path)
        self.dim = model.visual.output_dim
        self.preprocess_config = with_resize_mode(preprocess_config(model, tag_config), resize_mode)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.weights_source = str(path)
        self.weights_sha256 = file_sha256(path)
        self._place_model(model, device)
        logger.info("Loaded %s (%s, %s) from %s", name, arch, pretrained, path)

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("encode_texts expects a sequence of strings. Wrap a single query in a list.")
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self._autocast():
            features = self.model.encode_text(tokens)
        return F.normalize(features.float(), dim=-1).cpu()


def save_random_init_checkpoint(arch: str, path: str | os.PathLike) -> Path:
    """Save the state dict of a randomly initialised open_clip model, for tests and demos only.

    Vectors from these weights carry no meaning, so the function logs a warning.
    """
    if arch not in open_clip.list_models():
        raise ValueError(
            f"Unknown open_clip architecture {arch!r}. Valid architectures: {', '.join(open_clip.list_models())}."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = open_clip.create_model(arch, pretrained=None)
    torch.save(model.state_dict(), path)
    logger.warning("Saved RANDOM weights for %s to %s: use them for tests and demos only.", arch, path)
    return path
