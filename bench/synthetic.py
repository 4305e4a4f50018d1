"""Synthetic clustered 512-d vectors drawn around the centroids of real effnet-lite0 embeddings.

Method: the real index's embeddings (6,329 x 1280, unit norm) are projected onto their top 512
principal axes without removing the mean, so the common direction that makes CNN features of
paintings similar to each other stays in. k-means (k=64) splits the projected points; each
synthetic vector is a centroid plus Gaussian noise with that cluster's per-axis standard
deviation, then L2-normalised. Cluster sizes follow a Zipf-like law (`bench.common.clustered_vectors`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_INDEXES, OUT_DIR, clustered_vectors

logger = logging.getLogger("bench.synthetic")

DIM = 512
CLUSTERS = 64


def real_embeddings(indexes: Path = DEFAULT_INDEXES, model: str = "effnet-lite0") -> np.ndarray:
    path = Path(indexes) / model / "embeddings.npy"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the synthetic vectors are drawn around real centroids. Build the index with "
            f"`python -m core embed --corpus /path/to/wikiart-baroque-rococo --models {model}`."
        )
    return np.load(path)


def centroids_from(embeddings: np.ndarray, dim: int = DIM, k: int = CLUSTERS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (centroids, spread), both (k, dim): k-means centres and per-axis std in the top-dim PCA space."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    centred = x - x.mean(axis=0)
    _, _, axes = np.linalg.svd(centred[: min(len(x), 20_000)], full_matrices=False)
    dim_kept = min(dim, axes.shape[0])
    projected = np.zeros((len(x), dim), dtype=np.float32)
    projected[:, :dim_kept] = x @ axes[:dim_kept].T  # mean kept; zero-padded when fewer axes exist

    kmeans = faiss.Kmeans(dim, k, niter=20, seed=seed, verbose=False)
    kmeans.train(projected)
    _, labels = kmeans.index.search(projected, 1)
    labels = labels[:, 0]
    spread = np.empty((k, dim), dtype=np.float32)
    overall = projected.std(axis=0)
    for j in range(k):
        members = projected[labels == j]
        # Clusters of fewer than 5 points borrow the overall spread.
        spread[j] = members.std(axis=0) if len(members) >= 5 else overall
    return kmeans.centroids.astype(np.float32), spread


def load_source(seed: int = 0, cache: Path = OUT_DIR / "synthetic-source.npz") -> tuple[np.ndarray, np.ndarray]:
    """Return (centroids, spread) from the real index, cached in bench/out/."""
    if cache.is_file():
        with np.load(cache) as data:
            return data["centroids"], data["spread"]
    centroids, spread = centroids_from(real_embeddings(), seed=seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, centroids=centroids, spread=spread)
    return centroids, spread


def synthetic_vectors(n: int, seed: int) -> np.ndarray:
    """Return n clustered 512-d unit vectors around the real centroids."""
    centroids, spread = load_source()
    return clustered_vectors(centroids, spread, n, seed)
