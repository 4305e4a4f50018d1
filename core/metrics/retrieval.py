"""H2: retrieval quality per art type, and the gap between narrative and additive types.

Per-query functions return one row per query, so that aggregation, bootstrap intervals and
paired differences between models reuse the same arrays:

- `image_to_image`: leave-one-out type retrieval. Columns p@k (same-type precision@k), ap
  (average precision over the full ranking), base_rate, n_candidates, n_relevant.
- `text_to_image`, `image_to_text`: rank (1-based) of the one correct item, and pool_size.
- `type_prompt_precision`: one row per prompt ("a mythological painting"), the same columns as
  `image_to_image`.

Conventions:
- Similarity is the inner product of L2-normalised embeddings (cosine). Ties are broken by the
  lower index first, as a stable descending sort does.
- The candidate pool of an image query is every other item with a known type, minus exact
  duplicates of the query (cosine >= 1 - 1e-6, or the same content hash), and minus the items
  by the query's artist when `exclude_same_artist` is set. Items of unknown type are never
  candidates, because their relevance is undefined.
- The base rate of a query is the share of same-type items in that query's own pool,
  n_relevant / n_candidates, so it changes per query when the pool does.
- precision@k divides by k, or by the pool size when the pool holds fewer than k items.
- AP is NaN for a query with no same-type item in its pool. Aggregation leaves such queries out.

Aggregation (`aggregate_by_type`) gives one row per (group, aggregation, metric). Groups are each
type, "additive", "narrative" and "gap". "pooled" pools the queries of a group; "macro" averages
the per-type values with equal weight per type. The gap factor is defined so that > 1 means
narrative types do worse: gap_medr = MedR_narrative / MedR_additive, and for a score m in [0, 1]
(precision@k, R@K, mAP) gap_err_m = (1 - m)_narrative / (1 - m)_additive, a ratio of error rates.

Column `baseline` is the expected value under a uniformly random ranking of each query's pool,
aggregated the same way as the value:
- precision@k: the base rate (exact for any k up to the pool size);
- mAP: (H_m + (R - 1) / (m - 1) * (m - H_m)) / m for a pool of m items with R relevant ones,
  H_m the m-th harmonic number (exact expectation of AP);
- MedR: (pool_size + 1) / 2, the expected rank of the correct item;
- R@K: K / pool_size.
A gap row's baseline is the same gap computed from the baselines. Column `lift` is
value / baseline for precision@k, mAP and R@K rows.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from core.metrics.bootstrap import bootstrap_replicates, percentile_interval
from core.metrics.structure import validate_embeddings
from core.types import TypeSplit, normalize_type

logger = logging.getLogger(__name__)

# Cosine at or above which two embeddings count as the same image.
DUPLICATE_COSINE = 1.0 - 1e-6
# Elements of a (query block x items) similarity matrix computed at once.
_BLOCK_ELEMENTS = 1 << 22


def _block_rows(n_columns: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(1, n_columns))


def _encode_labels(values: Sequence, normalize: Callable[[object], str] = normalize_type) -> tuple[np.ndarray, np.ndarray]:
    """Return integer codes (-1 for unknown) and the sorted names of the known labels."""
    text = np.array([normalize(v) for v in values], dtype=object)
    known = text != ""
    names = np.unique(text[known].astype(str)) if known.any() else np.array([], dtype=str)
    codes = np.full(len(text), -1, dtype=np.int64)
    codes[known] = np.searchsorted(names, text[known].astype(str))
    return codes, names


def _plain_label(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


# ---------------------------------------------------------------------------------------------
# Image to image


def _ranked_relevance(scores: np.ndarray, valid: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Return relevance in ranked order, (b, n) bool, with invalid candidates ranked last as False."""
    scores = np.where(valid, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(relevant & valid, order, axis=1)


def _precision_and_ap(ranked: np.ndarray, n_candidates: np.ndarray, ks: Sequence[int]) -> tuple[dict, np.ndarray]:
    """Return precision@k per k and AP per query from ranked relevance (b, n)."""
    precision = {}
    for k in ks:
        denominator = np.minimum(k, n_candidates).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision[k] = ranked[:, :k].sum(1) / denominator
    hits = np.cumsum(ranked, axis=1, dtype=np.float64)
    positions = np.arange(1, ranked.shape[1] + 1, dtype=np.float64)
    n_relevant = ranked.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(ranked, hits / positions, 0.0).sum(1) / n_relevant
    ap[n_relevant == 0] = np.nan
    return precision, ap


def image_to_image(
    X: np.ndarray,
    types: Sequence,
    ks: Sequence[int] = (1, 5, 10),
    artists: Sequence | None = None,
    exclude_same_artist: bool = False,
    hashes: Sequence | None = None,
    exclude_duplicates: bool = True,
) -> pd.DataFrame:
    """Measure leave-one-out same-type retrieval for every item with a known type.

    X: (n, d) L2-normalised embeddings; types: (n,) art types, "" when unknown.
    Returns one row per query: index, type, p@k for each k, ap, base_rate, n_candidates,
    n_relevant. See the module docstring for the candidate pool.
    """
    X = validate_embeddings(X).astype(np.float32, copy=False)
    type_codes, type_names = _encode_labels(types)
    if len(type_codes) != len(X):
        raise ValueError(f"types has {len(type_codes)} entries but X has {len(X)} rows: give one type per row.")
    if exclude_same_artist and artists is None:
        raise ValueError("exclude_same_artist=True needs the artists array (one artist per row, '' when unknown).")
    artist_codes = _encode_labels(artists, _plain_label)[0] if exclude_same_artist else None
    hash_codes = _encode_labels(hashes, _plain_label)[0] if hashes is not None and exclude_duplicates else None
    for name, codes in (("artists", artist_codes), ("hashes", hash_codes)):
        if codes is not None and len(codes) != len(X):
            raise ValueError(f"{name} has {len(codes)} entries but X has {len(X)} rows: give one per row.")

    ks = sorted({int(k) for k in ks})
    queries = np.flatnonzero(type_codes >= 0)
    started = time.perf_counter()
    columns: dict[str, list] = {"precision": [], "ap": [], "n_candidates": [], "n_relevant": []}
    block = _block_rows(len(X))
    for start in range(0, len(queries), block):
        rows = queries[start : start + block]
        scores = X[rows] @ X.T
        valid = np.broadcast_to(type_codes >= 0, scores.shape).copy()
        valid[np.arange(len(rows)), rows] = False
        if exclude_duplicates:
            valid &= scores < DUPLICATE_COSINE
            if hash_codes is not None:
                valid &= ~((hash_codes[None, :] == hash_codes[rows, None]) & (hash_codes[rows, None] >= 0))
        if artist_codes is not None:
            valid &= ~((artist_codes[None, :] == artist_codes[rows, None]) & (artist_codes[rows, None] >= 0))
        relevant = type_codes[None, :] == type_codes[rows, None]

        n_candidates = valid.sum(1)
        ranked = _ranked_relevance(scores, valid, relevant)
        precision, ap = _precision_and_ap(ranked, n_candidates, ks)
        columns["precision"].append(np.stack([precision[k] for k in ks], axis=1))
        columns["ap"].append(ap)
        columns["n_candidates"].append(n_candidates)
        columns["n_relevant"].append((relevant & valid).sum(1))
    logger.info("image_to_image: %d queries over %d items in %.1f s", len(queries), len(X), time.perf_counter() - started)

    table = pd.DataFrame({"index": queries, "type": type_names[type_codes[queries]] if len(queries) else []})
    precision = np.concatenate(columns["precision"]) if len(queries) else np.zeros((0, len(ks)))
    for i, k in enumerate(ks):
        table[f"p@{k}"] = precision[:, i]
    table["ap"] = np.concatenate(columns["ap"]) if len(queries) else []
    n_candidates = np.concatenate(columns["n_candidates"]) if len(queries) else np.zeros(0, int)
    n_relevant = np.concatenate(columns["n_relevant"]) if len(queries) else np.zeros(0, int)
    with np.errstate(invalid="ignore", divide="ignore"):
        table["base_rate"] = n_relevant / n_candidates
    table["n_candidates"] = n_candidates
    table["n_relevant"] = n_relevant
    return table


# ---------------------------------------------------------------------------------------------
# Text to image and image to text


def target_ranks(queries: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Return the 1-based rank of candidates[targets[i]] when queries[i] ranks all candidates.

    Ties rank the lower candidate index first.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) != len(queries):
        raise ValueError(f"targets has {len(targets)} entries but there are {len(queries)} queries: give one per query.")
    if len(targets) and (targets.min() < 0 or targets.max() >= len(candidates)):
        raise ValueError(f"targets must index the {len(candidates)} candidates, got values in [{targets.min()}, {targets.max()}].")
    ranks = np.empty(len(targets), dtype=np.int64)
    positions = np.arange(len(candidates))
    block = _block_rows(len(candidates))
    for start in range(0, len(targets), block):
        stop = start + block
        scores = queries[start:stop] @ candidates.T
        target_scores = scores[np.arange(len(scores)), targets[start:stop]][:, None]
        ahead = (scores > target_scores) | ((scores == target_scores) & (positions[None, :] < targets[start:stop, None]))
        ranks[start:stop] = 1 + ahead.sum(1)
    return ranks


def text_to_image(
    T: np.ndarray, X: np.ndarray, targets: Sequence[int], candidates: Sequence[int] | None = None
) -> pd.DataFrame:
    """Rank images for each text query and return the rank of its target image.

    T: (m, d) text embeddings; X: (n, d) image embeddings; targets: (m,) row of X that each text
    describes. `candidates` restricts the ranking to those rows of X and must hold every target.
    Returns one row per text: query, target, rank (1-based), pool_size.
    """
    T = validate_embeddings(T)
    X = validate_embeddings(X)
    targets = np.asarray(targets, dtype=np.int64)
    pool = np.arange(len(X)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    position = np.full(len(X), -1, dtype=np.int64)
    position[pool] = np.arange(len(pool))
    missing = targets[position[targets] < 0]
    if len(missing):
        raise ValueError(f"Targets {missing[:10].tolist()} are not in candidates: every target image must be a candidate.")
    ranks = target_ranks(T, X[pool], position[targets])
    return pd.DataFrame({"query": np.arange(len(T)), "target": targets, "rank": ranks, "pool_size": len(pool)})


def image_to_text(X_queries: np.ndarray, T_candidates: np.ndarray, targets: Sequence[int]) -> pd.DataFrame:
    """Rank all texts for each image and return the rank of the image's own text.

    This is the SemArt Text2Art direction from image to text: X_queries (m, d) images of the
    evaluated split, T_candidates (p, d) all texts of that split, targets (m,) row of
    T_candidates that belongs to each image. Returns query, target, rank (1-based), pool_size.
    """
    X_queries = validate_embeddings(X_queries)
    T_candidates = validate_embeddings(T_candidates)
    targets = np.asarray(targets, dtype=np.int64)
    ranks = target_ranks(X_queries, T_candidates, targets)
    return pd.DataFrame(
        {"query": np.arange(len(X_queries)), "target": targets, "rank": ranks, "pool_size": len(T_candidates)}
    )


def type_prompt_precision(
    P: np.ndarray, prompt_types: Sequence, X: np.ndarray, types: Sequence, ks: Sequence[int] = (1, 5, 10, 50)
) -> pd.DataFrame:
    """Measure how well a prompt such as "a mythological painting" retrieves that type.

    P: (p, d) prompt embeddings, prompt_types: (p,) the type each prompt names, X: (n, d) image
    embeddings, types: (n,). The pool is every image with a known type. Returns one row per
    prompt: index, type, p@k for each k, ap, base_rate, n_candidates, n_relevant.
    """
    P = validate_embeddings(P)
    X = validate_embeddings(X)
    image_codes, names = _encode_labels(types)
    prompt_names = np.array([normalize_type(t) for t in prompt_types], dtype=object)
    unknown = sorted(set(prompt_names) - set(names))
    if unknown:
        raise ValueError(f"Prompt types {unknown} have no image in the corpus: valid types are {list(names)}.")
    prompt_codes = np.searchsorted(names, prompt_names.astype(str))

    ks = sorted({int(k) for k in ks})
    scores = P @ X.T
    valid = np.broadcast_to(image_codes >= 0, scores.shape)
    relevant = image_codes[None, :] == prompt_codes[:, None]
    n_candidates = valid.sum(1)
    precision, ap = _precision_and_ap(_ranked_relevance(scores, valid, relevant), n_candidates, ks)

    table = pd.DataFrame({"index": np.arange(len(P)), "type": prompt_names.astype(str)})
    for k in ks:
        table[f"p@{k}"] = precision[k]
    table["ap"] = ap
    n_relevant = (relevant & valid).sum(1)
    table["base_rate"] = n_relevant / n_candidates
    table["n_candidates"] = n_candidates
    table["n_relevant"] = n_relevant
    return table


# ---------------------------------------------------------------------------------------------
# Random-ranking baselines


def random_ap(n_candidates: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Return the expected AP of a uniformly random ranking of m candidates with R relevant."""
    m = np.asarray(n_candidates, dtype=np.float64)
    r = np.asarray(n_relevant, dtype=np.float64)
    largest = int(m.max()) if len(m) else 0
    harmonic_table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, largest + 1))])
    harmonic = harmonic_table[m.astype(np.int64)]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(m > 1, (r - 1) / (m - 1), 0.0)
        expected = (harmonic + share * (m - harmonic)) / m
    return np.where(r > 0, expected, np.nan)


# ---------------------------------------------------------------------------------------------
# Aggregation by type and group


@dataclass(frozen=True)
class MetricSpec:
    """Definition of one aggregated metric: per-query values, random baseline, reduction and gap."""

    name: str  # output name: "p@10", "map", "medr", "r@5"
    column: str  # per-query column it is read from
    values: Callable[[pd.DataFrame], np.ndarray]  # per-query values
    baseline: Callable[[pd.DataFrame], np.ndarray]  # per-query value under a random ranking
    reduce: Callable[[np.ndarray], float]  # np.mean, or np.median for MedR
    gap_name: str  # "gap_medr" or "gap_err_<name>"
    error: Callable[[float], float]  # the quantity whose narrative/additive ratio is the gap


def _score_error(value: float) -> float:
    return 1.0 - value


def _identity(value: float) -> float:
    return value


def metric_specs(metric_cols: Sequence[str], ks: Sequence[int] = (1, 5, 10)) -> list[MetricSpec]:
    """Return the aggregated metrics for per-query columns "p@k", "ap" and "rank".

    "rank" expands into MedR ("medr") and R@K ("r@K") for each K in `ks`.
    """
    specs = []
    for column in metric_cols:
        if re.fullmatch(r"p@\d+", column):
            specs.append(MetricSpec(
                column, column, lambda df, c=column: df[c].to_numpy(float), lambda df: df["base_rate"].to_numpy(float),
                np.mean, f"gap_err_{column}", _score_error,
            ))
        elif column == "ap":
            specs.append(MetricSpec(
                "map", column, lambda df: df["ap"].to_numpy(float),
                lambda df: random_ap(df["n_candidates"].to_numpy(), df["n_relevant"].to_numpy()),
                np.mean, "gap_err_map", _score_error,
            ))
        elif column == "rank":
            specs.append(MetricSpec(
                "medr", column, lambda df: df["rank"].to_numpy(float),
                lambda df: (df["pool_size"].to_numpy(float) + 1) / 2, np.median, "gap_medr", _identity,
            ))
            for k in ks:
                specs.append(MetricSpec(
                    f"r@{k}", column, lambda df, k=k: (df["rank"].to_numpy() <= k).astype(float),
                    lambda df, k=k: np.minimum(k, df["pool_size"].to_numpy(float)) / df["pool_size"].to_numpy(float),
                    np.mean, f"gap_err_r@{k}", _score_error,
                ))
        else:
            raise ValueError(f"Unknown metric column {column!r}: valid columns are 'p@<k>' (e.g. 'p@10'), 'ap' and 'rank'.")
    return specs


@dataclass(frozen=True)
class _Layout:
    """Assignment of the per-type strata to groups, which fixes the order of the statistics vector."""

    types: list[str]  # types with at least one query, split types first
    additive: list[int]  # positions in `types` of the additive types
    narrative: list[int]  # positions in `types` of the narrative types

    @property
    def labels(self) -> list[tuple[str, str, str]]:
        """(group, aggregation, kind) per entry of the statistics vector; kind is "value" or "gap"."""
        rows = [(t, "pooled", "value") for t in self.types]
        for group in ("additive", "narrative"):
            rows += [(group, "pooled", "value"), (group, "macro", "value")]
        return rows + [("gap", "pooled", "gap"), ("gap", "macro", "gap")]


def _layout(type_values: np.ndarray, split: TypeSplit) -> _Layout:
    present = set(type_values) - {""}
    ordered = [t for t in split.types if t in present] + sorted(present - set(split.types))
    return _Layout(
        ordered,
        [i for i, t in enumerate(ordered) if t in split.additive],
        [i for i, t in enumerate(ordered) if t in split.narrative],
    )


def _group_statistics(per_type: list[np.ndarray], layout: _Layout, spec: MetricSpec) -> np.ndarray:
    """Return the statistics vector in `layout.labels` order from per-type value arrays."""
    type_values = [spec.reduce(v) if len(v) else np.nan for v in per_type]
    result = list(type_values)
    group_values = {}
    for group, members in (("additive", layout.additive), ("narrative", layout.narrative)):
        pooled = np.concatenate([per_type[i] for i in members]) if members else np.array([])
        group_values[group] = (
            spec.reduce(pooled) if len(pooled) else np.nan,
            float(np.mean([type_values[i] for i in members])) if members else np.nan,
        )
        result += list(group_values[group])
    with np.errstate(invalid="ignore", divide="ignore"):
        for aggregation in (0, 1):
            narrative = spec.error(group_values["narrative"][aggregation])
            additive = spec.error(group_values["additive"][aggregation])
            result.append(np.float64(narrative) / np.float64(additive))
    return np.asarray(result, dtype=np.float64)


def _resolve_types(per_query: pd.DataFrame, types: str | Sequence) -> np.ndarray:
    if isinstance(types, str):
        if types not in per_query.columns:
            raise ValueError(f"Column {types!r} not in the per-query table: columns are {list(per_query.columns)}.")
        types = per_query[types]
    if len(types) != len(per_query):
        raise ValueError(f"types has {len(types)} entries but the per-query table has {len(per_query)} rows.")
    return np.array([normalize_type(t) for t in types], dtype=object)


def _n_by_type(layout: _Layout, counts: list[int], members: list[int]) -> str:
    return json.dumps({layout.types[i]: int(counts[i]) for i in members})


def aggregate_by_type(
    per_query: pd.DataFrame,
    metric_cols: Sequence[str],
    types: str | Sequence = "type",
    split: TypeSplit | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    ks: Sequence[int] = (1, 5, 10),
) -> pd.DataFrame:
    """Aggregate per-query metrics per type, per group and into gap factors, with intervals.

    `types` is a column of `per_query` or an array with one type per row. The bootstrap
    resamples queries within each type, so each type keeps its observed n (a stratified
    bootstrap, which also resamples within each group). Queries whose value is NaN (AP with no
    relevant candidate) are left out of that metric.
    Returns columns group, aggregation, metric, value, ci_low, ci_high, baseline, lift, n,
    n_by_type (JSON of each type's n, for group and gap rows).
    """
    split = split or TypeSplit()
    type_values = _resolve_types(per_query, types)
    rows = []
    for spec in metric_specs(metric_cols, ks):
        values = spec.values(per_query)
        baseline = spec.baseline(per_query)
        keep = np.isfinite(values) & (type_values != "")
        layout = _layout(type_values[keep], split)
        strata = [np.flatnonzero(keep & (type_values == t)) for t in layout.types]
        if not strata:
            logger.warning("No query with a known type and a finite %s: metric left out.", spec.name)
            continue

        point = _group_statistics([values[s] for s in strata], layout, spec)
        expected = _group_statistics([baseline[s] for s in strata], layout, spec)
        replicates = bootstrap_replicates(
            lambda drawn: _group_statistics([values[d] for d in drawn], layout, spec), strata, n_boot, seed
        )
        low, high = percentile_interval(replicates, alpha)
        rows += _aggregate_rows(spec, layout, [len(s) for s in strata], point, low, high, expected)
    columns = ["group", "aggregation", "metric", "value", "ci_low", "ci_high", "baseline", "lift", "n", "n_by_type"]
    return pd.DataFrame(rows, columns=columns)


def _row_counts(layout: _Layout, counts: list[int]) -> list[tuple[int, str]]:
    """Return (n, n_by_type) per entry of the statistics vector."""
    result = [(counts[i], "") for i in range(len(layout.types))]
    for members in (layout.additive, layout.narrative):
        entry = (sum(counts[i] for i in members), _n_by_type(layout, counts, members))
        result += [entry, entry]
    both = layout.additive + layout.narrative
    gap = (sum(counts[i] for i in both), _n_by_type(layout, counts, both))
    return result + [gap, gap]


def _aggregate_rows(spec, layout, counts, point, low, high, expected) -> list[dict]:
    rows = []
    for i, ((group, aggregation, kind), (n, n_by_type)) in enumerate(zip(layout.labels, _row_counts(layout, counts))):
        lift = point[i] / expected[i] if kind == "value" and spec.name != "medr" and expected[i] > 0 else np.nan
        rows.append({
            "group": group, "aggregation": aggregation, "metric": spec.gap_name if kind == "gap" else spec.name,
            "value": point[i], "ci_low": low[i], "ci_high": high[i], "baseline": expected[i], "lift": lift,
            "n": n, "n_by_type": n_by_type,
        })
    return rows


# ---------------------------------------------------------------------------------------------
# Paired differences between two models


def _align(per_query_a: pd.DataFrame, per_query_b: pd.DataFrame, key: str | None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    if key is None:
        key = next((k for k in ("index", "query") if k in per_query_a.columns and k in per_query_b.columns), None)
        if key is None:
            raise ValueError("paired_difference found no shared 'index' or 'query' column: pass key= naming the query id column.")
    a = per_query_a.set_index(key, drop=False)
    b = per_query_b.set_index(key, drop=False)
    if a.index.has_duplicates or b.index.has_duplicates:
        raise ValueError(f"Query ids in column {key!r} repeat: a paired comparison needs one row per query.")
    if set(a.index) != set(b.index):
        only_a = len(set(a.index) - set(b.index))
        only_b = len(set(b.index) - set(a.index))
        raise ValueError(
            f"The two models were evaluated on different queries ({only_a} only in a, {only_b} only in b): "
            "run both on the same queries before pairing."
        )
    return a, b.loc[a.index], key


def paired_difference(
    per_query_a: pd.DataFrame,
    per_query_b: pd.DataFrame,
    metric: str,
    groups: TypeSplit | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    types: str | Sequence = "type",
    key: str | None = None,
    alpha: float = 0.05,
    ks: Sequence[int] = (1, 5, 10),
) -> pd.DataFrame:
    """Compare two models on the same queries: model a minus model b, per type, group and gap.

    `metric` is a per-query column ("p@10", "ap" or "rank"; "rank" gives MedR and R@K).
    Rows are aligned on `key` (default "index", else "query"), and the types are read from
    model a. The bootstrap draws the same queries for both models, within each type.
    Returns columns group, aggregation, metric, value (a - b), ci_low, ci_high, value_a,
    value_b, n.
    """
    groups = groups or TypeSplit()
    a, b, _ = _align(per_query_a, per_query_b, key)
    type_values = _resolve_types(a, types)
    rows = []
    for spec in metric_specs([metric], ks):
        values_a, values_b = spec.values(a), spec.values(b)
        keep = np.isfinite(values_a) & np.isfinite(values_b) & (type_values != "")
        layout = _layout(type_values[keep], groups)
        strata = [np.flatnonzero(keep & (type_values == t)) for t in layout.types]
        if not strata:
            logger.warning("No paired query with a known type and a finite %s: metric left out.", spec.name)
            continue

        def difference(drawn: list[np.ndarray]) -> np.ndarray:
            stat_a = _group_statistics([values_a[d] for d in drawn], layout, spec)
            stat_b = _group_statistics([values_b[d] for d in drawn], layout, spec)
            # A gap is infinite when the additive error is 0; such replicates become NaN and are dropped.
            with np.errstate(invalid="ignore"):
                return stat_a - stat_b

        stat_a = _group_statistics([values_a[s] for s in strata], layout, spec)
        stat_b = _group_statistics([values_b[s] for s in strata], layout, spec)
        with np.errstate(invalid="ignore"):
            differences = stat_a - stat_b
        low, high = percentile_interval(bootstrap_replicates(difference, strata, n_boot, seed), alpha)
        counts = _row_counts(layout, [len(s) for s in strata])
        for i, (group, aggregation, kind) in enumerate(layout.labels):
            rows.append({
                "group": group, "aggregation": aggregation, "metric": spec.gap_name if kind == "gap" else spec.name,
                "value": differences[i], "ci_low": low[i], "ci_high": high[i],
                "value_a": stat_a[i], "value_b": stat_b[i], "n": counts[i][0],
            })
    columns = ["group", "aggregation", "metric", "value", "ci_low", "ci_high", "value_a", "value_b", "n"]
    return pd.DataFrame(rows, columns=columns)
