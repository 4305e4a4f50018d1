"""UMAP time through core.project.project_embeddings with the default ProjectConfig.

Two inputs: the real effnet-lite0 embeddings of the corpus (6,329 x 1280) and synthetic clustered
512-d vectors (bench/synthetic.py), 50,000 by default. PCA is timed beside each for scale.
The first UMAP call also pays numba's compilation; it is timed apart on 500 points.

    python -m bench.umap_time                 # 6,329 real + 50,000 synthetic
    python -m bench.umap_time --synthetic 20000
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python bench/umap_time.py`
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import setup_logging, write_results

logger = logging.getLogger("bench.umap_time")


def time_projection(x: np.ndarray, method: str) -> float:
    from core.project import ProjectConfig, project_embeddings

    started = time.perf_counter()
    coordinates = project_embeddings(x, method, ProjectConfig())
    seconds = time.perf_counter() - started
    if coordinates.shape != (len(x), 2) or not np.isfinite(coordinates).all():
        raise RuntimeError(f"{method} returned {coordinates.shape} with non-finite values for {len(x)} points.")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    from bench.synthetic import real_embeddings, synthetic_vectors

    parser = argparse.ArgumentParser(description="UMAP time on the real embeddings and on synthetic clustered vectors.")
    parser.add_argument("--synthetic", type=int, default=50_000, help="synthetic points (512-d)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic vectors")
    args = parser.parse_args(argv)
    setup_logging()

    warm = synthetic_vectors(500, seed=args.seed + 7)
    results = {"numba_warmup_500_points_s": time_projection(warm, "umap"), "inputs": {}}
    inputs = {
        "real effnet-lite0": real_embeddings(),
        f"synthetic {args.synthetic}x512": synthetic_vectors(args.synthetic, seed=args.seed),
    }
    for name, x in inputs.items():
        entry = {"points": len(x), "dim": int(x.shape[1])}
        for method in ("umap", "pca"):
            entry[f"{method}_s"] = time_projection(x, method)
        logger.info("%s: UMAP %.1f s, PCA %.2f s", name, entry["umap_s"], entry["pca_s"])
        results["inputs"][name] = entry
    write_results("umap_time", results)
    return results


if __name__ == "__main__":
    main()
