"""H3: does a model rely on texture and colour rather than on layout?

Perturbations act on image tensors after the model's resize and crop. Every entry of
`PERTURBATIONS` takes a tensor of pixel values in [0, 1], shape (3, H, W) or (B, 3, H, W), and is
called as `f(x, generator=g)`. For a tensor already normalised by the model's mean and std, call
`perturb(x, name, generator, mean=..., std=...)`: it undoes the normalisation, perturbs and
normalises again, because grayscale is not correct on normalised values.

- "shuffle2", "shuffle4", "shuffle8": cut the image into a g x g grid of patches and permute the
  patches, which destroys layout and keeps local texture and colour.
- "grayscale": luma (ITU-R BT.601 weights, as torchvision's rgb_to_grayscale) in all 3 channels.
- "blur": Gaussian blur with sigma `BLUR_SIGMA` pixels, which removes fine texture.

Metrics compare the embedding of each sampled image with the embedding of its perturbed copy.
One is the cosine between the two. The other is the rank of the original among the whole corpus
when the perturbed copy is the query, where rank 1 means the original still comes first.
The texture reliance of a model is the mean cosine under patch shuffling, averaged per image
over the three grids and then over images. Higher means the embedding changes less when the
layout is destroyed, so the model relies more on texture and colour than on layout.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import functional as TF

from core.metrics.bootstrap import bootstrap_ci
from core.metrics.retrieval import target_ranks
from core.metrics.structure import validate_embeddings
from core.types import TypeSplit, normalize_type

logger = logging.getLogger(__name__)

# Standard deviation of the "blur" perturbation, in pixels of the preprocessed tensor.
BLUR_SIGMA = 2.0
# Perturbations averaged into the texture reliance score.
SHUFFLE_PERTURBATIONS = ("shuffle2", "shuffle4", "shuffle8")


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() == 4:
        return x, False
    raise ValueError(f"Expected an image tensor of shape (3, H, W) or (B, 3, H, W), got {tuple(x.shape)}.")


def _draw_permutation(size: int, generator: torch.Generator | None) -> torch.Tensor:
    """Draw a random permutation of range(size), drawing again while it is the identity."""
    identity = torch.arange(size)
    while True:
        permutation = torch.randperm(size, generator=generator)
        if size == 1 or not torch.equal(permutation, identity):
            return permutation


def patch_shuffle(x: torch.Tensor, grid: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cut each image into grid x grid patches and permute them, one permutation per image.

    When H or W is not divisible by grid, the patches cover the top-left
    (grid * (H // grid)) x (grid * (W // grid)) region and the remaining bottom rows and right
    columns stay in place. For grid > 1 the identity permutation is drawn again, so every image
    changes. grid = 1 returns an unchanged copy.
    """
    batch, single = _as_batch(x)
    _, channels, height, width = batch.shape
    if not 1 <= grid <= min(height, width):
        raise ValueError(f"grid={grid} is invalid for {height}x{width} images: use 1 <= grid <= {min(height, width)}.")
    patch_h, patch_w = height // grid, width // grid
    region_h, region_w = patch_h * grid, patch_w * grid

    # (B, C, H, W) -> (B, grid * grid, C, patch_h, patch_w), patches in row-major order.
    region = batch[:, :, :region_h, :region_w]
    patches = region.reshape(len(batch), channels, grid, patch_h, grid, patch_w).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(len(batch), grid * grid, channels, patch_h, patch_w)
    shuffled = torch.stack(
        [patches[i, _draw_permutation(grid * grid, generator).to(patches.device)] for i in range(len(batch))]
    )
    shuffled = shuffled.reshape(len(batch), grid, grid, channels, patch_h, patch_w).permute(0, 3, 1, 4, 2, 5)

    result = batch.clone()
    result[:, :, :region_h, :region_w] = shuffled.reshape(len(batch), channels, region_h, region_w)
    return result[0] if single else result


def grayscale(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace colour by luma, keeping 3 identical channels. `generator` is unused."""
    _as_batch(x)
    return TF.rgb_to_grayscale(x, num_output_channels=3)


def blur(x: torch.Tensor, sigma: float = BLUR_SIGMA, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply a Gaussian blur with standard deviation `sigma` pixels. `generator` is unused."""
    if sigma <= 0:
        raise ValueError(f"sigma={sigma} is invalid: the blur needs a positive standard deviation in pixels.")
    _as_batch(x)
    kernel = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


PERTURBATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "shuffle2": functools.partial(patch_shuffle, grid=2),
    "shuffle4": functools.partial(patch_shuffle, grid=4),
    "shuffle8": functools.partial(patch_shuffle, grid=8),
    "grayscale": grayscale,
    "blur": blur,
}


def perturb(
    x: torch.Tensor,
    name: str,
    generator: torch.Generator | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Apply the perturbation `name` to x.

    Without mean and std, x contains pixel values in [0, 1]. With them (PreprocessConfig.mean and
    .std), x is normalised: it is unnormalised first and normalised again after the perturbation.
    """
    if name not in PERTURBATIONS:
        raise ValueError(f"Unknown perturbation {name!r}: valid names are {sorted(PERTURBATIONS)}.")
    if (mean is None) != (std is None):
        raise ValueError("Pass both mean and std (a normalised tensor) or neither (pixel values in [0, 1]).")
    if mean is None:
        return PERTURBATIONS[name](x, generator=generator)

    shape = (3, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(shape)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(shape)
    pixels = x * std_t + mean_t
    return (PERTURBATIONS[name](pixels, generator=generator) - mean_t) / std_t


def texture_metrics(
    X_orig_sample: np.ndarray,
    X_pert: np.ndarray,
    X_corpus: np.ndarray,
    sample_indices: Sequence[int],
    types: Sequence | None = None,
) -> pd.DataFrame:
    """Compare sampled images with their perturbed copies.

    X_orig_sample: (s, d) embeddings of the sampled originals; X_pert: (s, d) of their perturbed
    copies; X_corpus: (n, d) the whole corpus; sample_indices: (s,) corpus row of each sample;
    types: optional (n,) corpus types. Returns one row per sample: index, cosine, rank (of the
    original among the corpus for the perturbed query, 1 = found itself first; ties rank the
    lower corpus index first), and type when `types` is given.
    """
    X_orig_sample = validate_embeddings(X_orig_sample)
    X_pert = validate_embeddings(X_pert)
    X_corpus = validate_embeddings(X_corpus)
    sample_indices = np.asarray(sample_indices, dtype=np.int64)
    if not len(X_orig_sample) == len(X_pert) == len(sample_indices):
        raise ValueError(
            f"X_orig_sample ({len(X_orig_sample)}), X_pert ({len(X_pert)}) and sample_indices ({len(sample_indices)}) "
            "must have one row per sampled image."
        )
    cosine = np.einsum("sd,sd->s", X_orig_sample.astype(np.float64), X_pert.astype(np.float64))
    table = pd.DataFrame(
        {"index": sample_indices, "cosine": cosine, "rank": target_ranks(X_pert, X_corpus, sample_indices)}
    )
    if types is not None:
        table["type"] = [normalize_type(types[i]) for i in sample_indices]
    return table


def _subsets(table: pd.DataFrame, split: TypeSplit) -> list[tuple[str, np.ndarray]]:
    """Return ("all" | group | type, row mask) pairs that have rows."""
    subsets = [("all", np.ones(len(table), dtype=bool))]
    if "type" not in table.columns:
        return subsets
    types = table["type"].to_numpy(dtype=object)
    groups = np.array([split.group(t) for t in types], dtype=object)
    subsets += [(group, groups == group) for group in ("additive", "narrative")]
    present = set(types) - {""}
    ordered = [t for t in split.types if t in present] + sorted(present - set(split.types))
    subsets += [(t, types == t) for t in ordered]
    return [(name, mask) for name, mask in subsets if mask.any()]


def _recall_at_1(ranks: np.ndarray) -> float:
    return float(np.mean(ranks == 1))


def _rows_for(table: pd.DataFrame, perturbation: str, split: TypeSplit, n_boot: int, seed: int, alpha: float) -> list[dict]:
    measures = [("cosine", "cosine", np.mean), ("rank", "rank_median", np.median), ("rank", "recall@1", _recall_at_1)]
    rows = []
    for subset, mask in _subsets(table, split):
        for column, metric, statistic in measures:
            if column not in table.columns:
                continue
            interval = bootstrap_ci(table.loc[mask, column].to_numpy(), n_boot, seed, alpha, statistic=statistic)
            rows.append({
                "type": subset, "perturbation": perturbation, "metric": metric, "value": interval.value,
                "ci_low": interval.low, "ci_high": interval.high, "n": interval.n,
            })
    return rows


def shuffle_mean_cosine(results: dict[str, pd.DataFrame], shuffles: Sequence[str] = SHUFFLE_PERTURBATIONS) -> pd.DataFrame:
    """Return per image the cosine averaged over the patch shuffles: index, cosine, and type if known."""
    missing = [name for name in shuffles if name not in results]
    if missing:
        raise ValueError(f"Texture reliance needs the perturbations {missing}: results has {sorted(results)}.")
    first = results[shuffles[0]]
    keyed = [results[name].set_index("index") for name in shuffles]
    for name, table in zip(shuffles, keyed):
        if table.index.has_duplicates or set(table.index) != set(first["index"]):
            raise ValueError(f"Perturbation {name!r} was measured on other images than {shuffles[0]!r}: use one sample for all.")
    mean = np.mean([table.loc[first["index"], "cosine"].to_numpy() for table in keyed], axis=0)
    averaged = pd.DataFrame({"index": first["index"].to_numpy(), "cosine": mean})
    if "type" in first.columns:
        averaged["type"] = first["type"].to_numpy()
    return averaged


def texture_reliance(
    results: dict[str, pd.DataFrame],
    split: TypeSplit | None = None,
    shuffles: Sequence[str] = SHUFFLE_PERTURBATIONS,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Return the texture reliance (mean cosine under patch shuffling) overall, per group and type.

    `results` maps perturbation names to `texture_metrics` tables of the same sampled images.
    The row with type "all" is the model's single number; higher means more reliance on texture
    and colour than on layout. Columns as `texture_table`, perturbation "shuffle_mean".
    """
    averaged = shuffle_mean_cosine(results, shuffles)
    return pd.DataFrame(_rows_for(averaged, "shuffle_mean", split or TypeSplit(), n_boot, seed, alpha))


def texture_table(
    results: dict[str, pd.DataFrame],
    split: TypeSplit | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Summarise `texture_metrics` tables of several perturbations as one tidy table.

    Columns: type ("all", "additive", "narrative" or a type), perturbation, metric (cosine,
    rank_median, recall@1), value, ci_low, ci_high, n. When every shuffle perturbation is
    present, rows with perturbation "shuffle_mean" (the texture reliance) are added.
    """
    split = split or TypeSplit()
    rows = []
    for name, table in results.items():
        rows += _rows_for(table, name, split, n_boot, seed, alpha)
    columns = ["type", "perturbation", "metric", "value", "ci_low", "ci_high", "n"]
    frame = pd.DataFrame(rows, columns=columns)
    if all(name in results for name in SHUFFLE_PERTURBATIONS):
        frame = pd.concat([frame, texture_reliance(results, split, n_boot=n_boot, seed=seed, alpha=alpha)], ignore_index=True)
    return frame
