"""The embedding job: corpus in, one FAISS index per model out.

Vectors are cached per image file, keyed by the model fingerprint and the file's SHA-256, in
chunks that are renamed into place once complete. A run killed part-way therefore resumes from the
last finished chunk, a rerun with nothing changed encodes nothing, and a changed model (weights or
preprocessing) writes to a new cache folder instead of mixing with old vectors.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from core.corpus import Corpus, corpus_fingerprint
from core.encoders import create_encoder, default_weights
from core.encoders.base import Encoder
from core.images import DEFAULT_MAX_MEGAPIXELS, ImageDecodeError, file_sha256, load_image
from core.index import (
    CORPUS_FILE,
    IndexConfig,
    model_folder_name,
    write_json_atomic,
    write_model_index,
    write_text_atomic,
)

logger = logging.getLogger(__name__)

CACHE_DIR = ".cache"


@dataclass
class EmbedConfig:
    """Settings of one embedding run; the CLI fills it from its options."""

    models: list[str]  # registry names, e.g. ["effnet-lite0", "clip-vit-b-32"]
    out: Path = Path("indexes")  # indexes/<corpus>/<model>/ are written below it
    weights: dict[str, str] = field(default_factory=dict)  # model name -> local weights file or folder
    batch_size: int = 32  # images per forward pass
    workers: int = 2  # DataLoader processes that decode images; 0 decodes in the main process
    device: str = "auto"  # "auto" picks CUDA when present, else the CPU
    resize_mode: str = "center_crop"  # or "pad": letterbox to a square, keeping the whole painting
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # decompression-bomb guard per image
    chunk_size: int = 256  # vectors per cache file; a killed run loses at most one chunk
    index: IndexConfig = field(default_factory=IndexConfig)
    shard: tuple[int, int] | None = None  # (i, n): encode only shard i of n into the cache, build no index


@dataclass
class ModelRun:
    """Counts and timings of one model's run, for the summary."""

    model: str
    embedded: int = 0  # rows in the written index
    encoded: int = 0  # images sent through the model in this run
    copies: int = 0  # rows byte-identical to another row, which share its vector
    cached: int = 0  # images whose vectors came from the cache
    failed: dict[str, str] = field(default_factory=dict)  # corpus id -> reason the image was skipped
    timings_s: dict[str, float] = field(default_factory=dict)
    index_dir: Path | None = None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} was requested but CUDA is not available here; use --device cpu or auto.")
    return torch.device(device)


def hash_images(corpus: Corpus) -> list[str]:
    """Return the SHA-256 of every image file of the corpus table, in row order."""
    paths = corpus.table["image_path"].tolist()
    return [file_sha256(path) for path in tqdm(paths, desc="hash images", unit="img", leave=False)]


class _ImageDataset(Dataset):
    """Decodes and preprocesses images; a bad file yields its error instead of a tensor."""

    def __init__(self, paths: list[str], transform, max_megapixels: float):
        self.paths = paths
        self.transform = transform
        self.max_megapixels = max_megapixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = load_image(self.paths[i], max_megapixels=self.max_megapixels)
            return i, self.transform(image), ""
        except ImageDecodeError as error:
            return i, None, str(error)


def _collate(items):
    good = [(i, x) for i, x, _ in items if x is not None]
    failed = [(i, error) for i, x, error in items if x is None]
    batch = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], batch, failed


class VectorCache:
    """Vectors of one model fingerprint, keyed by image SHA-256, stored as atomic chunk files."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.vectors: dict[str, np.ndarray] = {}
        for chunk in sorted(self.folder.glob("chunk-*.npz")):
            with np.load(chunk) as data:
                self.vectors.update(zip(data["hashes"].tolist(), data["vectors"]))
        self._pending_hashes: list[str] = []
        self._pending_vectors: list[np.ndarray] = []

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self.vectors

    def add(self, hashes: list[str], vectors: np.ndarray) -> None:
        for sha256, vector in zip(hashes, vectors):
            self.vectors[sha256] = vector
            self._pending_hashes.append(sha256)
            self._pending_vectors.append(vector)

    @property
    def pending(self) -> int:
        return len(self._pending_hashes)

    def flush(self) -> None:
        """Write the vectors added since the last flush as one chunk file."""
        if not self._pending_hashes:
            return
        name = f"chunk-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        temporary = self.folder / f".{name}.tmp"
        with open(temporary, "wb") as file:
            np.savez(file, hashes=np.array(self._pending_hashes), vectors=np.stack(self._pending_vectors))
        os.replace(temporary, self.folder / name)
        self._pending_hashes, self._pending_vectors = [], []


def cache_folder(out: Path, encoder: Encoder) -> Path:
    """Return the cache folder of an encoder; CUDA autocast vectors are kept apart from CPU ones."""
    suffix = "-cuda" if encoder.device.type == "cuda" else ""
    return Path(out) / CACHE_DIR / f"{model_folder_name(encoder.name)}-{encoder.fingerprint[:16]}{suffix}"


# NOTE: a vector already in the cache is reused without decoding its image again, so lowering
# --max-megapixels later does not reject images that an earlier run accepted.
def encode_missing(
    encoder: Encoder, paths: list[str], hashes: list[str], cache: VectorCache, config: EmbedConfig, run: ModelRun
) -> dict[int, str]:
    """Encode the images whose hash is not cached yet; return the failures by row."""
    todo: dict[str, int] = {}
    for row, sha256 in enumerate(hashes):
        if sha256 not in cache and sha256 not in todo:
            todo[sha256] = row  # byte-identical files are encoded once
    run.cached = sum(1 for sha256 in hashes if sha256 in cache)
    run.copies = len(hashes) - run.cached - len(todo)
    if not todo:
        return {}

    rows = list(todo.values())
    dataset = _ImageDataset([paths[row] for row in rows], encoder.preprocess, config.max_megapixels)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        num_workers=config.workers,
        collate_fn=_collate,
        pin_memory=encoder.device.type == "cuda",
        persistent_workers=False,
    )

    failures: dict[int, str] = {}
    progress = tqdm(total=len(rows), desc=f"embed {encoder.name}", unit="img", smoothing=0.1)
    for positions, batch, failed in loader:
        for position, error in failed:
            failures[rows[position]] = error
        if batch is not None:
            vectors = encoder.encode_images(batch).numpy().astype(np.float32)  # (B, d), unit norm
            cache.add([hashes[rows[p]] for p in positions], vectors)
            run.encoded += len(positions)
            if cache.pending >= config.chunk_size:
                cache.flush()
        progress.update(len(positions) + len(failed))

    progress.close()
    cache.flush()
    return failures


def encode_through_base(
    encoder: Encoder, base: Encoder, paths: list[str], hashes: list[str], cache: VectorCache, config: EmbedConfig, run: ModelRun
) -> dict[int, str]:
    """Fill the cache of a model built on another one (a CNN with a trained text tower).

    The base model's vectors come from its own cache, encoding only what is missing there, and
    are projected by the model's head, so aligning a CNN never encodes the corpus twice.
    """
    base_cache = VectorCache(cache_folder(config.out, base))
    failures = encode_missing(base, paths, hashes, base_cache, config, run)
    missing = [sha256 for sha256 in dict.fromkeys(hashes) if sha256 not in cache and sha256 in base_cache]
    for start in range(0, len(missing), config.chunk_size):
        chunk = missing[start : start + config.chunk_size]
        features = torch.from_numpy(np.stack([base_cache.vectors[sha256] for sha256 in chunk]))  # (B, base dim)
        cache.add(chunk, encoder.project_image_features(features).numpy().astype(np.float32))
        cache.flush()
    return failures


def in_shard(corpus_id: str, shard: tuple[int, int]) -> bool:
    """Assign ids to shards by a stable hash, so every machine agrees without coordination."""
    index, count = shard
    return int.from_bytes(hashlib.sha256(corpus_id.encode()).digest()[:8], "big") % count == index


def embed_model(
    corpus: Corpus, hashes: list[str], fingerprint: str, model: str, config: EmbedConfig
) -> ModelRun:
    """Encode a corpus with one model and write its index, unless the run is a shard."""
    run = ModelRun(model)
    started = time.perf_counter()
    device = resolve_device(config.device)
    weights = config.weights.get(model) or default_weights(model, config.out)
    encoder = create_encoder(model, weights=weights, device=device, resize_mode=config.resize_mode)
    run.timings_s["load_model"] = time.perf_counter() - started

    table = corpus.table
    rows = range(len(table))
    if config.shard is not None:
        rows = [row for row in rows if in_shard(table["id"].iat[row], config.shard)]
    paths = [table["image_path"].iat[row] for row in rows]
    row_hashes = [hashes[row] for row in rows]

    started = time.perf_counter()
    cache = VectorCache(cache_folder(config.out, encoder))
    base = getattr(encoder, "image_encoder", None) if hasattr(encoder, "project_image_features") else None
    if base is None:
        failures = encode_missing(encoder, paths, row_hashes, cache, config, run)
    else:
        failures = encode_through_base(encoder, base, paths, row_hashes, cache, config, run)
    run.timings_s["encode"] = time.perf_counter() - started
    for position, reason in failures.items():
        run.failed[table["id"].iat[rows[position]]] = reason
    # A byte-identical copy of a failed file fails too, without being decoded again.
    failed_hashes = {row_hashes[position] for position in failures}
    for position, sha256 in enumerate(row_hashes):
        corpus_id = table["id"].iat[rows[position]]
        if sha256 in failed_hashes and corpus_id not in run.failed:
            run.failed[corpus_id] = "byte-identical to an unreadable image"
    if config.shard is not None:
        return run

    started = time.perf_counter()
    keep = [row for row in rows if table["id"].iat[row] not in run.failed]
    run.embedded = len(keep)
    if not keep:
        examples = "; ".join(f"{corpus_id}: {reason}" for corpus_id, reason in list(run.failed.items())[:3])
        raise ValueError(
            f"{model}: none of the {len(rows)} images could be embedded, so no index was written. "
            f"First failures: {examples}"
        )
    embeddings = np.stack([cache.vectors[hashes[row]] for row in keep]).astype(np.float32)  # (n, d)
    manifest = {
        "model": encoder.name,
        "model_fingerprint": encoder.fingerprint,
        "weights": {"source": str(encoder.weights_source), "sha256": encoder.weights_sha256},
        "preprocess": encoder.preprocess_config.to_dict(),
        "has_text_tower": encoder.has_text_tower,
        "corpus": {
            "name": corpus.name,
            "root": str(corpus.root),
            "layout": corpus.layout,
            "fingerprint": fingerprint,
            "rows": len(table),
            "skipped": len(run.failed),
        },
        "device": str(device),
        "timings_s": run.timings_s,
    }
    run.index_dir = config.out / corpus.name / model_folder_name(encoder.name)
    write_model_index(run.index_dir, embeddings, table.iloc[keep], manifest, config.index)
    run.timings_s["write"] = time.perf_counter() - started
    return run


def run_embed(corpus: Corpus, config: EmbedConfig) -> list[ModelRun]:
    """Embed a corpus with every configured model and write the corpus-level report."""
    started = time.perf_counter()
    hashes = hash_images(corpus)
    fingerprint = corpus_fingerprint(corpus.table["id"].tolist(), hashes)
    logger.info("Hashed %d images in %.1f s", len(hashes), time.perf_counter() - started)

    runs = [embed_model(corpus, hashes, fingerprint, model, config) for model in config.models]

    # Every model decodes the same files, so the union of their failures is the unreadable list.
    for run in runs:
        for corpus_id, reason in run.failed.items():
            if corpus_id not in {item[0] for item in corpus.report.unreadable}:
                corpus.report.add_unreadable(corpus_id, reason)
    if config.shard is None:
        corpus_dir = config.out / corpus.name
        readable = ~corpus.table["id"].isin({item[0] for item in corpus.report.unreadable})
        corpus_dir.mkdir(parents=True, exist_ok=True)
        corpus.table[readable].reset_index(drop=True).to_parquet(corpus_dir / "corpus.parquet", index=False)
        write_json_atomic(corpus_dir / "validation.json", corpus.report.to_dict())
        write_json_atomic(corpus_dir / CORPUS_FILE, {"name": corpus.name, "root": str(corpus.root), "fingerprint": fingerprint})
        write_text_atomic(corpus_dir / "validation.md", corpus.report.to_markdown())
    return runs
