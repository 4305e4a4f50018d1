"""Small artefacts for the app tests: a synthetic corpus, its indexes, result tables and a fake encoder.

Embeddings cluster by art type (a centroid per type plus noise), so corpus queries return mostly
paintings of the query's type. The fake encoder maps an image's mean colour and a text's type
word into the same space. "resnet50" has no weights on purpose, to exercise the unavailable path.
Result tables are computed by the real `core.evaluate` and `core.project` code on these indexes.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from core.encoders.base import Encoder, PreprocessConfig, TextTowerMissingError, WeightsNotFoundError
from core.index import write_model_index
from core.types import TYPE_COLORS, TypeSplit

CORPUS = "fixture-corpus"
TYPES = ("portrait", "landscape", "still-life", "genre", "religious", "mythological", "historical")
PER_TYPE = 6
UNTYPED = 2
DIM = 16
IMAGE_PX = 32
# Model name -> has_text_tower in its manifest.
MODELS = {"effnet-lite0": False, "resnet50": False, "clip-vit-b-32": True}
MISSING_WEIGHTS = ("resnet50",)
SCHOOLS = ("Dutch", "Flemish", "Italian")
TIMEFRAMES = ("1601-1650", "1651-1700")
STYLES = ("Baroque", "Rococo")


@dataclass
class FixturePaths:
    """Where a built fixture lives."""

    root: Path  # the corpus folder with images/
    indexes: Path  # the indexes root: indexes/<CORPUS>/<model>/
    results: Path  # the results root: results/<CORPUS>/


def type_centroids(dim: int = DIM, seed: int = 7) -> dict[str, np.ndarray]:
    """Return one random unit vector per type, the same in every call."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(len(TYPES), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return dict(zip(TYPES, vectors))


def type_rgb(art_type: str) -> tuple[int, int, int]:
    color = TYPE_COLORS.get(art_type, "#808080").lstrip("#")
    return tuple(int(color[i : i + 2], 16) for i in (0, 2, 4))


def png_bytes(color: tuple[int, int, int], size: int = IMAGE_PX) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_corpus(root: Path) -> pd.DataFrame:
    """Write one small PNG per painting under root/images and return the corpus table."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    labels = [t for t in TYPES for _ in range(PER_TYPE)] + [""] * UNTYPED
    for i, art_type in enumerate(labels):
        image_id = f"images/{art_type or 'untyped'}-{i:02d}.png"
        shade = np.clip(np.array(type_rgb(art_type)) + (i % PER_TYPE) * 3, 0, 255)
        (root / image_id).write_bytes(png_bytes(tuple(int(c) for c in shade)))
        artist = f"Painter {chr(65 + i % 5)}"
        rows.append({
            "id": image_id,
            "image_path": str(root / image_id),
            "title": f"{(art_type or 'untitled').title()} study {i}",
            "artist": artist,
            "artist_id": artist.lower().replace(" ", "-"),
            "description": f"A {art_type or 'painting'} with figures" if i % 3 == 0 else "",
            "year": 1600 + 3 * i,
            "type": art_type,
            "type_group": TypeSplit().group(art_type),
            "school": SCHOOLS[i % len(SCHOOLS)],
            "timeframe": TIMEFRAMES[i % len(TIMEFRAMES)],
            "style": STYLES[i % len(STYLES)],
            "type_source": "wga" if i % 2 else "title-rule",
        })
    table = pd.DataFrame(rows)
    table["year"] = table["year"].astype("Int64")
    return table


def model_embeddings(table: pd.DataFrame, model: str) -> np.ndarray:
    """Return (n, DIM) unit vectors: the type's centroid plus noise seeded by the model name."""
    seed = int.from_bytes(hashlib.sha256(model.encode()).digest()[:4], "big")
    rng = np.random.default_rng(seed)
    centroids = type_centroids()
    vectors = np.stack([centroids.get(t, np.zeros(DIM)) for t in table["type"]]) + 0.45 * rng.normal(size=(len(table), DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def build_indexes(indexes_root: Path, table: pd.DataFrame, root: Path, models: dict[str, bool] | None = None) -> Path:
    """Write indexes/<CORPUS>/<model>/ for each model with core.index.write_model_index."""
    models = MODELS if models is None else models
    corpus_dir = Path(indexes_root) / CORPUS
    fingerprint = hashlib.sha256("".join(table["id"]).encode()).hexdigest()
    for model, text_tower in models.items():
        manifest = {
            "model": model,
            "model_fingerprint": hashlib.sha256(model.encode()).hexdigest(),
            "weights": {"source": "test fixture", "sha256": hashlib.sha256(f"weights-{model}".encode()).hexdigest()},
            "preprocess": PreprocessConfig(size=IMAGE_PX).to_dict(),
            "has_text_tower": text_tower,
            "corpus": {"name": CORPUS, "root": str(root), "layout": "manifest", "fingerprint": fingerprint},
        }
        write_model_index(corpus_dir / model, model_embeddings(table, model), table, manifest)
    table.to_parquet(corpus_dir / "corpus.parquet", index=False)
    return corpus_dir


class FakeEncoder(Encoder):
    """Maps images by mean colour and texts by the type word they contain into the fixture space."""

    def __init__(self, name: str, text_tower: bool):
        self.name = name
        self.dim = DIM
        self.has_text_tower = text_tower
        self.weights_source = "test fixture"
        self.weights_sha256 = hashlib.sha256(f"weights-{name}".encode()).hexdigest()
        self.preprocess_config = PreprocessConfig(size=IMAGE_PX)
        self.device = torch.device("cpu")
        self._projection = torch.from_numpy(np.random.default_rng(3).normal(size=(3, DIM)).astype(np.float32))

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(images.mean(dim=(2, 3)) @ self._projection + 1e-3, dim=-1)

    @torch.inference_mode()
    def encode_texts(self, texts) -> torch.Tensor:
        if not self.has_text_tower:
            raise TextTowerMissingError(self.name)
        centroids = type_centroids()
        rows = []
        for text in texts:
            art_type = next((t for t in TYPES if t in text.lower()), None)
            if art_type is None:
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
                rows.append(np.random.default_rng(seed).normal(size=DIM))
            else:
                rows.append(centroids[art_type])
        return F.normalize(torch.tensor(np.stack(rows), dtype=torch.float32), dim=-1)


def fake_create_encoder(name: str, weights=None, device="cpu", resize_mode: str = "center_crop", **options) -> Encoder:
    """Stand-in for core.encoders.create_encoder: fixture models, and no weights for MISSING_WEIGHTS."""
    if name in MISSING_WEIGHTS:
        raise WeightsNotFoundError(f"No weights found for model {name!r}: the test fixture has none on purpose.")
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Valid models: {', '.join(MODELS)}.")
    return FakeEncoder(name, MODELS[name])


def build_results(indexes_root: Path, results_root: Path) -> Path:
    """Compute every result table of the fixture corpus with the real evaluation and projection code."""
    from core.evaluate import EvaluateConfig, evaluate_corpus
    from core.index import load_corpus_indexes
    from core.project import ProjectConfig, write_projections

    corpus_dir = Path(indexes_root) / CORPUS
    out_dir = Path(results_root) / CORPUS
    with mock.patch("core.evaluate.create_encoder", fake_create_encoder):
        evaluate_corpus(corpus_dir, out_dir, EvaluateConfig(n_boot=40, texture_sample=12, min_class_size=3))
    indexes, _ = load_corpus_indexes(corpus_dir)
    write_projections(indexes, out_dir, ProjectConfig(methods=("pca",)))
    return out_dir


def build_fixture(base: Path, with_results: bool = True) -> FixturePaths:
    """Build the corpus, its indexes and (optionally) its result tables under base."""
    paths = FixturePaths(root=base / "corpus", indexes=base / "indexes", results=base / "results")
    table = make_corpus(paths.root)
    build_indexes(paths.indexes, table, paths.root)
    paths.results.mkdir(parents=True, exist_ok=True)
    if with_results:
        build_results(paths.indexes, paths.results)
    return paths
