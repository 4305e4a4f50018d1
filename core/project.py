"""2-D maps of each model's embedding space: UMAP and PCA coordinates for the app's Map page."""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from core.index import ModelIndex

logger = logging.getLogger(__name__)

PROJECTION_METHODS = ("umap", "pca")


@dataclass
class ProjectConfig:
    """UMAP parameters; they are stored with every output row's metadata."""

    n_neighbors: int = 15  # local neighbourhood size: larger keeps more global structure
    min_dist: float = 0.1  # how tightly points may pack in the map
    metric: str = "cosine"  # embeddings are compared by cosine everywhere in this project
    seed: int = 0  # random_state of UMAP; fixed so that two runs draw the same map
    methods: tuple[str, ...] = PROJECTION_METHODS


def project_embeddings(embeddings: np.ndarray, method: str, config: ProjectConfig) -> np.ndarray:
    """Return (n, 2) coordinates of embeddings (n, d) by UMAP or PCA."""
    if method == "pca":
        return PCA(n_components=2, random_state=config.seed).fit_transform(np.asarray(embeddings, dtype=np.float32))
    if method == "umap":
        import umap  # imported here: numba compiles on first import, which takes seconds

        reducer = umap.UMAP(
            n_neighbors=min(config.n_neighbors, len(embeddings) - 1),
            min_dist=config.min_dist,
            metric=config.metric,
            random_state=config.seed,
            n_components=2,
        )
        with warnings.catch_warnings():
            # A fixed random_state turns off UMAP's parallelism, which it warns about on every call.
            warnings.filterwarnings("ignore", message=".*random_state.*", category=UserWarning)
            return reducer.fit_transform(np.asarray(embeddings, dtype=np.float32))
    raise ValueError(f"Unknown projection method {method!r}; valid choices: {', '.join(PROJECTION_METHODS)}.")


def project_model(model_index: ModelIndex, config: ProjectConfig) -> pd.DataFrame:
    """Return the tidy projections table of one model: model, method, id, x, y and the parameters."""
    frames = []
    for method in config.methods:
        started = time.perf_counter()
        coordinates = project_embeddings(model_index.embeddings, method, config)
        logger.info("%s %s of %d points in %.1f s", model_index.model, method, len(coordinates), time.perf_counter() - started)
        frames.append(
            pd.DataFrame(
                {
                    "model": model_index.model,
                    "method": method,
                    "id": model_index.metadata["id"].to_numpy(),
                    "x": coordinates[:, 0].astype(np.float32),
                    "y": coordinates[:, 1].astype(np.float32),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    table["weights_sha256"] = model_index.manifest["weights"]["sha256"]
    table["seed"] = config.seed
    table["params"] = str(asdict(config))
    return table


def write_projections(indexes: dict[str, ModelIndex], out_dir: Path, config: ProjectConfig) -> Path:
    """Project every model and write results/<corpus>/projections.{parquet,csv}."""
    from core.results import write_table

    table = pd.concat([project_model(index, config) for index in indexes.values()], ignore_index=True)
    return write_table(table, Path(out_dir), "projections")
