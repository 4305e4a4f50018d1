"""Percentile bootstrap intervals over items (queries), deterministic given the seed.

Three forms share one resampling loop:

- `bootstrap_ci`: per-item values and a statistic of them (the mean by default), or a statistic
  of resampled item indices. With `strata`, items are resampled within each stratum, so every
  stratum keeps its observed size.
- `bootstrap_groups_ci`: a statistic of several independent samples, each resampled on its own.
  The gap factor (mean over narrative items / mean over additive items) is this case.
- `paired_bootstrap_ci`: two models' per-query arrays over the same queries. Both arrays are
  resampled with the same indices, so the interval is for the paired difference.

The point estimate is the statistic on the original sample. The interval bounds are the
alpha/2 and 1 - alpha/2 percentiles of the replicates. Replicates that are not finite, such as a
ratio whose denominator resampled to zero, are dropped from the percentiles.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval."""

    value: float  # the statistic on the original sample
    low: float  # alpha/2 percentile of the bootstrap replicates (NaN when none is finite)
    high: float  # 1 - alpha/2 percentile of the bootstrap replicates
    n: int  # number of items resampled, all samples together


def _validate_settings(n_boot: int, alpha: float) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"n_boot={n_boot} is invalid: use at least 1 bootstrap replicate (1000 is usual).")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha} is invalid: it must lie strictly between 0 and 1 (0.05 gives a 95% interval).")


def strata_from_labels(labels: Sequence) -> list[np.ndarray]:
    """Return one index array per distinct label, in sorted label order."""
    labels = np.asarray(labels)
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1)
    return [np.flatnonzero(codes == code) for code in range(codes.max() + 1)] if len(codes) else []


def bootstrap_replicates(
    statistic: Callable[[list[np.ndarray]], float | np.ndarray],
    strata: Sequence[np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Evaluate `statistic` on `n_boot` resamples and stack the results, shape (n_boot, ...).

    `strata` are index arrays. Each replicate draws, for every stratum, as many indices as it
    holds, with replacement, from that stratum alone. `statistic` receives the list of drawn
    index arrays in the order of `strata`.
    """
    if int(n_boot) < 1:
        raise ValueError(f"n_boot={n_boot} is invalid: use at least 1 bootstrap replicate.")
    rng = np.random.default_rng(seed)
    strata = [np.asarray(s, dtype=np.int64) for s in strata]
    results = []
    for _ in range(int(n_boot)):
        drawn = [s[rng.integers(0, len(s), len(s))] if len(s) else s for s in strata]
        results.append(np.asarray(statistic(drawn), dtype=np.float64))
    return np.stack(results)


def percentile_interval(replicates: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Return the alpha/2 and 1 - alpha/2 percentiles over axis 0, ignoring non-finite replicates."""
    replicates = np.asarray(replicates, dtype=np.float64)
    finite = np.isfinite(replicates)
    dropped = int((~finite).sum())
    if dropped:
        logger.debug("Dropped %d non-finite bootstrap replicates of %d", dropped, replicates.size)
    masked = np.where(finite, replicates, np.nan)
    shape = replicates.shape[1:]
    low = np.full(shape, np.nan)
    high = np.full(shape, np.nan)
    any_finite = finite.any(axis=0)
    if np.any(any_finite):
        quantiles = np.nanpercentile(masked[:, any_finite], [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        low[any_finite] = quantiles[0]
        high[any_finite] = quantiles[1]
    return low, high


def bootstrap_ci(
    values_or_statistic: np.ndarray | Sequence[float] | Callable[[np.ndarray], float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n: int | None = None,
    strata: Sequence | None = None,
) -> Interval:
    """Return a percentile bootstrap interval for a statistic of resampled items.

    `values_or_statistic` is either a 1-D array of per-item values, summarised by `statistic`,
    or a callable that takes an array of resampled item indices (into range(n)) and returns a
    float. The callable form needs `n` unless `strata` is given. `strata` is an array of one
    label per item: items are then resampled within each label.
    """
    _validate_settings(n_boot, alpha)
    if callable(values_or_statistic):
        of_indices = values_or_statistic
        if n is None and strata is None:
            raise ValueError("bootstrap_ci with a callable needs n (the number of items) or strata.")
    else:
        values = np.asarray(values_or_statistic)
        n = len(values)

        def of_indices(indices: np.ndarray) -> float:
            return statistic(values[indices])

    if strata is not None:
        if n is not None and len(strata) != n:
            raise ValueError(f"strata has {len(strata)} labels but there are {n} items: give one label per item.")
        groups = strata_from_labels(strata)
        n = len(strata)
    else:
        groups = [np.arange(n)]
    if n == 0:
        raise ValueError("bootstrap_ci got no items: the sample is empty.")

    value = float(of_indices(np.concatenate(groups)))
    replicates = bootstrap_replicates(lambda drawn: of_indices(np.concatenate(drawn)), groups, n_boot, seed)
    low, high = percentile_interval(replicates, alpha)
    return Interval(value, float(low), float(high), int(n))


def bootstrap_groups_ci(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Return a bootstrap interval for `statistic(*samples)`, each sample resampled on its own.

    Example: the gap factor `lambda narrative, additive: narrative.mean() / additive.mean()`.
    """
    _validate_settings(n_boot, alpha)
    samples = [np.asarray(s) for s in samples]
    empty = [i for i, s in enumerate(samples) if len(s) == 0]
    if empty:
        raise ValueError(f"bootstrap_groups_ci got empty samples at positions {empty}: every sample needs items.")
    value = float(statistic(*samples))
    strata = [np.arange(len(s)) for s in samples]
    replicates = bootstrap_replicates(
        lambda drawn: statistic(*[s[i] for s, i in zip(samples, drawn)]), strata, n_boot, seed
    )
    low, high = percentile_interval(replicates, alpha)
    return Interval(value, float(low), float(high), sum(len(s) for s in samples))


def _mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a) - np.mean(b))


def paired_bootstrap_ci(
    a: np.ndarray,
    b: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float] = _mean_difference,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    strata: Sequence | None = None,
) -> Interval:
    """Return a bootstrap interval for `statistic(a, b)` with queries resampled in pairs.

    `a` and `b` are per-query values of two models, aligned so that row i is the same query in
    both. The default statistic is mean(a) - mean(b).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"Paired arrays differ in length ({a.shape[0]} vs {b.shape[0]}): align both models on the same queries first."
        )
    return bootstrap_ci(
        lambda indices: statistic(a[indices], b[indices]),
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        n=a.shape[0],
        strata=strata,
    )
