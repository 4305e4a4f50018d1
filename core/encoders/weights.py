"""Finding model weights: an explicit path, then the standard caches, then a download when online.

Search order for a model named NAME:

1. the `weights=` argument of `create_encoder` (`--weights NAME=PATH` of `python -m core embed`),
   a file or a folder holding one of the model's file names;
2. the environment variable SEMGAP_WEIGHTS_<NAME>, where NAME is upper-cased and every character
   other than a letter or digit becomes "_" (`clip-vit-b-32` -> SEMGAP_WEIGHTS_CLIP_VIT_B_32);
3. the caches the libraries themselves use (torch hub, the Hugging Face hub cache, open_clip's);
4. the library's own download, skipped when SEMGAP_OFFLINE or HF_HUB_OFFLINE is set.

A path given in step 1 or 2 that does not exist raises at once instead of falling through, so a
typo never loads other weights.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from core.encoders.base import WeightsNotFoundError

logger = logging.getLogger(__name__)

OFFLINE_ENV = "SEMGAP_OFFLINE"
HF_OFFLINE_ENV = "HF_HUB_OFFLINE"
_FALSE_VALUES = {"", "0", "false", "no", "off"}

# sha256 digests keyed by (resolved path, size, mtime_ns), so large files are hashed once per process.
_DIGESTS: dict[tuple[str, int, int], str] = {}


@dataclass
class WeightsSearch:
    """Search plan for one model's weights: the places to look and the download to try."""

    model: str  # registry name, used in messages and in the environment variable name
    file_names: tuple[str, ...] = ()  # accepted file names inside a folder passed as weights
    folder_marker: str = ""  # when set, the model loads from a folder that must contain this file
    cache_lookups: list[tuple[str, Callable[[], Path | None]]] = field(default_factory=list)
    # (description of the place, function returning the cached path or None), in search order
    download: Callable[[], Path] | None = None  # the library's download, or None when there is none
    hint: str = ""  # extra advice appended to the error message


def env_var_name(model: str) -> str:
    """Return the environment variable that points at a model's weights."""
    return "SEMGAP_WEIGHTS_" + re.sub(r"[^A-Za-z0-9]", "_", model).upper()


def is_offline() -> bool:
    """Return True when SEMGAP_OFFLINE or HF_HUB_OFFLINE forbids downloads."""
    return any(
        os.environ.get(name, "").strip().lower() not in _FALSE_VALUES for name in (OFFLINE_ENV, HF_OFFLINE_ENV)
    )


def torch_hub_checkpoint_dir() -> Path:
    """Return torch hub's checkpoint folder, which follows $TORCH_HOME at call time."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache_dir() -> Path:
    """Return the Hugging Face hub cache folder from the environment at call time.

    huggingface_hub reads these variables once at import, so tests that change them would
    otherwise still see the old folder.
    """
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache_home) / "huggingface" / "hub"


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """Return the cached path of a Hugging Face hub file, or None, without any network access."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_hub_cache_dir())
    return Path(found) if isinstance(found, str) else None


def existing_file(path: Path) -> Callable[[], Path | None]:
    """Return a cache lookup that finds `path` when it is a file."""
    return lambda: path if path.is_file() else None


def resolve_weights(search: WeightsSearch, weights: str | os.PathLike | None = None) -> Path:
    """Return the weights file (or folder) for a model, searching in the documented order."""
    env_name = env_var_name(search.model)
    searched: list[str] = []

    if weights is not None:
        return _accept(search, Path(weights).expanduser(), "weights argument")
    searched.append("weights argument: not given")

    if os.environ.get(env_name):
        return _accept(search, Path(os.environ[env_name]).expanduser(), f"${env_name}")
    searched.append(f"${env_name}: not set")

    for description, lookup in search.cache_lookups:
        found = lookup()
        if found is not None:
            logger.info("Weights for %s found in %s: %s", search.model, description, found)
            return found
        searched.append(f"{description}: not found")

    downloaded = _try_download(search, searched)
    if downloaded is not None:
        return downloaded
    raise WeightsNotFoundError(_not_found_message(search, searched))


def _accept(search: WeightsSearch, path: Path, origin: str) -> Path:
    """Return the file or folder to load from a user-given path, or raise naming what is missing."""
    env_name = env_var_name(search.model)
    if not path.exists():
        raise WeightsNotFoundError(
            f"Weights path {path} for model {search.model!r} (from the {origin}) does not exist. "
            f"Fix the path passed with --weights {search.model}=PATH or ${env_name}."
        )
    if search.folder_marker:
        if path.is_dir() and (path / search.folder_marker).is_file():
            return path
        raise WeightsNotFoundError(
            f"Weights path {path} for model {search.model!r} (from the {origin}) must be a folder "
            f"containing {search.folder_marker}."
        )
    if path.is_file():
        return path
    for name in search.file_names:
        if (path / name).is_file():
            return path / name
    raise WeightsNotFoundError(
        f"Folder {path} for model {search.model!r} (from the {origin}) contains none of the expected "
        f"weights files: {', '.join(search.file_names) or '(none known)'}. Pass the weights file itself."
    )


def _try_download(search: WeightsSearch, searched: list[str]) -> Path | None:
    """Run the library download unless offline; record the outcome in `searched`."""
    if search.download is None:
        searched.append("download: this model has no download source")
        return None
    if is_offline():
        searched.append(f"download: skipped because ${OFFLINE_ENV} or ${HF_OFFLINE_ENV} is set")
        return None
    try:
        path = Path(search.download())
    except Exception as error:  # the libraries raise many types (URLError, HfHubHTTPError, RuntimeError, ...)
        logger.warning("Download of weights for %s failed: %s", search.model, error)
        searched.append(f"download: failed ({type(error).__name__}: {error})")
        return None
    logger.info("Downloaded weights for %s to %s", search.model, path)
    return path


def _not_found_message(search: WeightsSearch, searched: list[str]) -> str:
    places = "\n".join(f"  - {place}" for place in searched)
    message = (
        f"No weights found for model {search.model!r}. Places searched:\n{places}\n"
        f"Pass a weights file with `python -m core embed --weights {search.model}=PATH` "
        f"(weights= in create_encoder) or set {env_var_name(search.model)}=PATH."
    )
    return f"{message} {search.hint}" if search.hint else message


def file_sha256(path: str | os.PathLike) -> str:
    """Return the sha256 of a file, or of a folder's files with their relative names.

    Digests are cached per (path, size, modification time) for the life of the process.
    """
    path = Path(path).resolve()
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode())
            digest.update(file_sha256(file).encode())
        return digest.hexdigest()

    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Any]:
    """Load a state dict saved with torch.save or safetensors, unwrapping common checkpoint layouts.

    Accepts a bare state dict, one under a "state_dict" or "model" key, and keys prefixed with
    "module." by DataParallel.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(str(path), device="cpu")
    else:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for a file that is not a checkpoint
            raise ValueError(
                f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}). "
                "Pass a file saved with torch.save(model.state_dict(), path) or a .safetensors file."
            ) from error
    for key in ("state_dict", "model"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(
            f"{path} contains no state dict (found {type(state_dict).__name__}). "
            "Pass a file saved with torch.save(model.state_dict(), path) or a .safetensors file."
        )
    if all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict
