"""The query API: search a model's index by image, by text or by corpus id."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from core.encoders.base import Encoder, TextTowerMissingError
from core.index import ModelIndex

# Metadata columns that filters may restrict, and that results carry.
FILTER_COLUMNS = ("type", "type_group", "school", "timeframe", "style")
RESULT_COLUMNS = ("id", "title", "artist", "artist_id", "year", "type", "type_group", "school", "timeframe", "style", "image_path")


@dataclass
class SearchResult:
    """The top-k of one query in one model."""

    model: str
    query: str  # a description of the query: the text, the corpus id or "uploaded image"
    hits: pd.DataFrame  # rank, score and the RESULT_COLUMNS, best first


def check_encoder_matches(encoder: Encoder, manifest: dict) -> None:
    """Raise when an encoder's weights differ from those the index was built with."""
    built = manifest.get("weights", {}).get("sha256", "")
    if built and encoder.weights_sha256 and built != encoder.weights_sha256:
        raise ValueError(
            f"Model {manifest['model']!r}: the loaded weights ({encoder.weights_sha256[:12]}, from "
            f"{encoder.weights_source}) differ from those the index was built with ({built[:12]}, from "
            f"{manifest['weights'].get('source')}). Pass the same weights with --weights {manifest['model']}=PATH, "
            "or rebuild the index."
        )


class Searcher:
    """Searches one model's index; the encoder is needed only for image and text queries."""

    def __init__(self, model_index: ModelIndex, encoder: Encoder | None = None):
        self.model_index = model_index
        self.encoder = encoder

    @property
    def model(self) -> str:
        return self.model_index.model

    @property
    def has_text_tower(self) -> bool:
        return bool(self.model_index.manifest.get("has_text_tower"))

    def by_vector(
        self, xq: np.ndarray, k: int, filters: Mapping[str, Sequence[str]] | None = None, exclude_rows: Sequence[int] = (), query: str = ""
    ) -> SearchResult:
        """Return the top-k rows for a unit query vector xq (d,) that pass the filters."""
        allowed = self._allowed_rows(filters)
        excluded = set(exclude_rows)
        metadata = self.model_index.metadata
        if allowed is None and not excluded:
            D, I = self.model_index.search(xq[None, :], k)
            scores, rows = D[0], I[0]
        else:
            # Filters can leave few candidates, so score them all with one matrix product.
            candidates = np.arange(len(metadata)) if allowed is None else np.flatnonzero(allowed)
            candidates = np.array([row for row in candidates if row not in excluded], dtype=np.int64)
            similarities = np.asarray(self.model_index.embeddings[candidates] @ xq, dtype=np.float32)
            order = np.argsort(-similarities, kind="stable")[:k]
            scores, rows = similarities[order], candidates[order]
        keep = rows >= 0
        hits = metadata.iloc[rows[keep]][[c for c in RESULT_COLUMNS if c in metadata.columns]].copy()
        hits.insert(0, "score", scores[keep].astype(float))
        hits.insert(0, "rank", np.arange(1, int(keep.sum()) + 1))
        return SearchResult(self.model, query, hits.reset_index(drop=True))

    def by_id(self, corpus_id: str, k: int, filters: Mapping[str, Sequence[str]] | None = None) -> SearchResult:
        """Return the top-k neighbours of a corpus painting, the painting itself excluded."""
        row = self.model_index.row_of(corpus_id)
        xq = np.asarray(self.model_index.embeddings[row], dtype=np.float32)
        if not filters:
            # Ask for one more so that the painting itself can be dropped.
            result = self.by_vector(xq, k + 1, query=corpus_id)
            hits = result.hits[result.hits["id"] != corpus_id].head(k).reset_index(drop=True)
            hits["rank"] = np.arange(1, len(hits) + 1)
            return SearchResult(self.model, corpus_id, hits)
        return self.by_vector(xq, k, filters, exclude_rows=[row], query=corpus_id)

    def by_image(self, image: Image.Image, k: int, filters: Mapping[str, Sequence[str]] | None = None) -> SearchResult:
        """Encode an RGB image with the model's own preprocessing and return its top-k."""
        encoder = self._require_encoder()
        batch = encoder.preprocess(image).unsqueeze(0)  # (1, 3, H, W)
        xq = encoder.encode_images(batch)[0].numpy().astype(np.float32)
        return self.by_vector(xq, k, filters, query="uploaded image")

    def by_text(self, text: str, k: int, filters: Mapping[str, Sequence[str]] | None = None) -> SearchResult:
        """Encode a text with the model's text tower and return its top-k."""
        if not text.strip():
            raise ValueError("The text query is empty; type a description such as 'a mythological painting'.")
        encoder = self._require_encoder()
        if not encoder.has_text_tower:
            raise TextTowerMissingError(self.model)
        with torch.inference_mode():
            xq = encoder.encode_texts([text])[0].numpy().astype(np.float32)
        return self.by_vector(xq, k, filters, query=text)

    def _require_encoder(self) -> Encoder:
        if self.encoder is None:
            raise RuntimeError(
                f"Model {self.model!r} was loaded without its encoder, so it supports corpus-id queries only."
            )
        return self.encoder

    def _allowed_rows(self, filters: Mapping[str, Sequence[str]] | None) -> np.ndarray | None:
        """Return a boolean mask of rows passing every filter, or None when nothing is filtered."""
        if not filters:
            return None
        metadata = self.model_index.metadata
        mask = np.ones(len(metadata), dtype=bool)
        for column, values in filters.items():
            if not values:
                continue
            if column not in FILTER_COLUMNS:
                raise ValueError(f"Unknown filter {column!r}; valid filters: {', '.join(FILTER_COLUMNS)}.")
            mask &= metadata[column].astype(str).isin([str(v) for v in values]).to_numpy()
        return mask
