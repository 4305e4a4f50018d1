"""H1: does an attribute (type, artist, school) structure the embedding space?

The structure ratio of an attribute is the mean intra-class cosine distance divided by the mean
inter-class cosine distance, with cosine distance = 1 - x_i . x_j on L2-normalised rows.
A ratio well below 1 means items of the same class sit closer together than items of different
classes. Permuting the labels gives the shuffled baseline, which is about 1.

Choices:
- Intra-class distance pools all same-class pairs of distinct items, so a class weighs by its
  number of pairs, n_c (n_c - 1) / 2, and large classes dominate. Inter-class distance pools
  all pairs of items from different classes.
- Both means come from class sums of vectors, never from an n x n matrix: for rows x_i with
  squared norms q_i, the inner products over the unordered pairs of a set with sum S add up to
  (||S||^2 - sum q_i) / 2.
- The bootstrap resamples items with replacement (as multinomial weights). A pair made of two
  copies of the same item is left out, so a replicate counts pairs of distinct items only.
- Items with an unknown label ("" or missing) are left out, and so are classes with fewer than
  `min_class_size` items, which are reported.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.metrics.bootstrap import percentile_interval

logger = logging.getLogger(__name__)

# Rows converted to float64 at a time when summing vectors, to bound the extra memory.
_CHUNK_ROWS = 4096
# Largest tolerated deviation of a row norm from 1.
_NORM_TOLERANCE = 1e-3


@dataclass
class StructureResult:
    """The structure ratio of one attribute with its interval and shuffled-label baseline."""

    ratio: float  # mean intra-class distance / mean inter-class distance
    ci_low: float  # bootstrap 95% interval of the ratio (items resampled)
    ci_high: float
    intra: float  # mean cosine distance over same-class pairs of distinct items
    inter: float  # mean cosine distance over pairs of items of different classes
    shuffled_ratio: float  # mean ratio over label permutations (about 1 when nothing is structured)
    shuffled_ci: tuple[float, float]  # 2.5 and 97.5 percentiles of the ratio over the permutations
    n_items: int  # items used: known label, class kept
    n_classes: int  # classes kept
    excluded_classes: dict[str, int] = field(default_factory=dict)  # classes below min_class_size, with their counts
    class_counts: dict[str, int] = field(default_factory=dict)  # kept classes, with their counts
    intra_ci: tuple[float, float] = (np.nan, np.nan)  # bootstrap 95% interval of intra
    inter_ci: tuple[float, float] = (np.nan, np.nan)  # bootstrap 95% interval of inter


def known_mask(labels: np.ndarray) -> np.ndarray:
    """Return True where a label is known: not None, not NaN, not blank."""
    labels = np.asarray(labels, dtype=object)
    return np.array(
        [not (v is None or (isinstance(v, float) and v != v) or str(v).strip() == "") for v in labels],
        dtype=bool,
    )


def validate_embeddings(X: np.ndarray) -> np.ndarray:
    """Return X as a 2-D float array, or raise when its rows are not L2-normalised."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"Embeddings must have shape (n, d), got {X.shape}.")
    if len(X):
        norms = np.linalg.norm(X, axis=1)
        worst = float(np.max(np.abs(norms - 1.0)))
        if worst > _NORM_TOLERANCE:
            raise ValueError(
                f"Embedding rows must be L2-normalised, but a row norm is off by {worst:.3g}: "
                "normalise with faiss.normalize_L2(X) or X / np.linalg.norm(X, axis=1, keepdims=True)."
            )
    return X


def _weighted_class_sums(
    X: np.ndarray, classes: list[np.ndarray], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the squared norms of weighted class sums and of the total sum.

    weights: (r, n) item weights for r replicates. Returns (r, C) per class and (r,) in total.
    """
    r = weights.shape[0]
    per_class = np.zeros((r, len(classes)))
    total = np.zeros((r, X.shape[1]))
    for c, members in enumerate(classes):
        class_sum = np.zeros((r, X.shape[1]))
        for start in range(0, len(members), _CHUNK_ROWS):
            rows = members[start : start + _CHUNK_ROWS]
            class_sum += weights[:, rows] @ X[rows].astype(np.float64)
        per_class[:, c] = np.einsum("rd,rd->r", class_sum, class_sum)
        total += class_sum
    return per_class, np.einsum("rd,rd->r", total, total)


def _distances(
    X: np.ndarray, sq_norms: np.ndarray, classes: list[np.ndarray], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return mean intra- and inter-class cosine distances, one per row of `weights` (r, n)."""
    class_sq, total_sq = _weighted_class_sums(X, classes, weights)
    w2 = weights**2

    # Sums over pairs of distinct items: (||S||^2 - sum w_i^2 q_i) / 2 and ((sum w)^2 - sum w^2) / 2.
    intra_dot = np.zeros(len(weights))
    intra_pairs = np.zeros(len(weights))
    for c, members in enumerate(classes):
        intra_dot += (class_sq[:, c] - w2[:, members] @ sq_norms[members]) / 2
        intra_pairs += (weights[:, members].sum(1) ** 2 - w2[:, members].sum(1)) / 2
    all_dot = (total_sq - w2 @ sq_norms) / 2
    all_pairs = (weights.sum(1) ** 2 - w2.sum(1)) / 2

    with np.errstate(invalid="ignore", divide="ignore"):
        intra = 1.0 - intra_dot / intra_pairs
        inter = 1.0 - (all_dot - intra_dot) / (all_pairs - intra_pairs)
    return intra, inter


def _class_members(codes: np.ndarray, n_classes: int) -> list[np.ndarray]:
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_classes + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(n_classes)]


def structure_ratio(
    X: np.ndarray,
    labels: np.ndarray,
    min_class_size: int = 5,
    n_boot: int = 200,
    n_shuffle: int = 10,
    seed: int = 0,
    alpha: float = 0.05,
) -> StructureResult:
    """Compute the structure ratio of one attribute, its bootstrap interval and shuffled baseline.

    X: (n, d) L2-normalised embeddings. labels: (n,) class per row, "" when unknown.
    Raises ValueError when fewer than two classes keep `min_class_size` items.
    """
    X = validate_embeddings(X)
    labels = np.asarray(labels, dtype=object)
    if len(labels) != len(X):
        raise ValueError(f"labels has {len(labels)} entries but X has {len(X)} rows: give one label per row.")

    known = np.flatnonzero(known_mask(labels))
    names, counts = np.unique(labels[known].astype(str), return_counts=True)
    large_enough = counts >= min_class_size
    excluded = {str(name): int(count) for name, count in zip(names[~large_enough], counts[~large_enough])}
    class_counts = {str(name): int(count) for name, count in zip(names[large_enough], counts[large_enough])}
    if len(class_counts) < 2:
        raise ValueError(
            f"Structure ratio needs at least two classes with min_class_size={min_class_size} items, "
            f"found {len(class_counts)} among {len(known)} labelled rows: lower min_class_size or use another attribute."
        )

    rows = known[np.isin(labels[known].astype(str), names[large_enough])]
    Xk = X[rows]
    codes = np.searchsorted(names[large_enough], labels[rows].astype(str))
    classes = _class_members(codes, len(class_counts))
    sq_norms = np.einsum("nd,nd->n", Xk, Xk, dtype=np.float64)
    n = len(rows)

    intra, inter = _distances(Xk, sq_norms, classes, np.ones((1, n)))
    ratio = float(intra[0] / inter[0])

    rng = np.random.default_rng(seed)
    boot_intra, boot_inter = np.array([]), np.array([])
    for start in range(0, n_boot, 50):
        draws = rng.integers(0, n, size=(min(50, n_boot - start), n))
        weights = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(np.float64)
        bi, be = _distances(Xk, sq_norms, classes, weights)
        boot_intra, boot_inter = np.concatenate([boot_intra, bi]), np.concatenate([boot_inter, be])
    boot = np.stack([boot_intra / boot_inter, boot_intra, boot_inter], axis=1)
    low, high = percentile_interval(boot, alpha) if n_boot > 0 else (np.full(3, np.nan), np.full(3, np.nan))

    shuffled = []
    for _ in range(n_shuffle):
        permuted = _class_members(rng.permutation(codes), len(class_counts))
        si, se = _distances(Xk, sq_norms, permuted, np.ones((1, n)))
        shuffled.append(float(si[0] / se[0]))
    shuffled = np.array(shuffled)
    shuffled_ci = tuple(float(v) for v in np.percentile(shuffled, [2.5, 97.5])) if n_shuffle else (np.nan, np.nan)

    return StructureResult(
        ratio=ratio,
        ci_low=float(low[0]),
        ci_high=float(high[0]),
        intra=float(intra[0]),
        inter=float(inter[0]),
        shuffled_ratio=float(shuffled.mean()) if n_shuffle else np.nan,
        shuffled_ci=shuffled_ci,
        n_items=n,
        n_classes=len(class_counts),
        excluded_classes=excluded,
        class_counts=class_counts,
        intra_ci=(float(low[1]), float(high[1])),
        inter_ci=(float(low[2]), float(high[2])),
    )


def _result_rows(attribute: str, subset: str, result: StructureResult) -> list[dict]:
    metrics = {
        "ratio": (result.ratio, result.ci_low, result.ci_high),
        "shuffled_ratio": (result.shuffled_ratio, *result.shuffled_ci),
        "intra": (result.intra, *result.intra_ci),
        "inter": (result.inter, *result.inter_ci),
    }
    return [
        {
            "attribute": attribute,
            "subset": subset,
            "metric": metric,
            "value": value,
            "ci_low": low,
            "ci_high": high,
            "n": result.n_items,
            "n_classes": result.n_classes,
        }
        for metric, (value, low, high) in metrics.items()
    ]


def structure_table(
    X: np.ndarray,
    attributes: dict[str, np.ndarray],
    min_class_size: int = 5,
    n_boot: int = 200,
    n_shuffle: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """Compute the structure ratio of every attribute on two subsets, as a tidy table.

    Subset "common" keeps the rows where every attribute is known, so attributes compare on the
    same paintings. Subset "full" keeps every row where that attribute is known.
    Columns: attribute, subset, metric (ratio, shuffled_ratio, intra, inter), value, ci_low,
    ci_high, n, n_classes. An attribute with fewer than two usable classes in a subset is
    logged and left out of the table.
    """
    X = validate_embeddings(X)
    if not attributes:
        raise ValueError("structure_table got no attributes: pass e.g. {'type': types, 'artist': artists}.")
    masks = {name: known_mask(labels) for name, labels in attributes.items()}
    common = np.logical_and.reduce(list(masks.values()))

    rows: list[dict] = []
    for name, labels in attributes.items():
        labels = np.asarray(labels, dtype=object)
        for subset, mask in (("common", common), ("full", masks[name])):
            try:
                result = structure_ratio(X[mask], labels[mask], min_class_size, n_boot, n_shuffle, seed)
            except ValueError as error:
                logger.warning("Skipped structure ratio of %r on subset %r: %s", name, subset, error)
                continue
            rows.extend(_result_rows(name, subset, result))
    columns = ["attribute", "subset", "metric", "value", "ci_low", "ci_high", "n", "n_classes"]
    return pd.DataFrame(rows, columns=columns)
