"""Metrics against brute-force references on seeded data, plus cases checked by hand."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch

from core.metrics import (
    aggregate_by_type,
    bootstrap_ci,
    bootstrap_groups_ci,
    image_to_image,
    image_to_text,
    paired_bootstrap_ci,
    paired_difference,
    random_ap,
    structure_ratio,
    structure_table,
    text_to_image,
    type_prompt_precision,
)
from core.metrics.structure import _distances
from core.metrics.texture import (
    PERTURBATIONS,
    grayscale,
    patch_shuffle,
    perturb,
    texture_metrics,
    texture_reliance,
    texture_table,
)
from core.types import TypeSplit

TYPES = np.array(["portrait", "landscape", "still-life", "religious", "mythological", "historical"])


def unit_rows(X: np.ndarray) -> np.ndarray:
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int = 8, n_classes: int = 4, spread: float = 0.6, seed: int = 0):
    """Return unit embeddings scattered around one centre per class, and the class labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d))
    codes = rng.integers(0, n_classes, n)
    X = unit_rows(centres[codes] + spread * rng.normal(size=(n, d)))
    return X, codes


def angles(*degrees: float) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Brute-force references


def brute_structure(X: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    intra, inter = [], []
    for i in range(len(X)):
        for j in range(i + 1, len(X)):
            distance = 1.0 - float(np.dot(X[i].astype(np.float64), X[j].astype(np.float64)))
            (intra if labels[i] == labels[j] else inter).append(distance)
    return float(np.mean(intra)), float(np.mean(inter))


def brute_image_to_image(X, types, ks, artists=None, hashes=None):
    S = X.astype(np.float64) @ X.astype(np.float64).T
    rows = []
    for q in range(len(X)):
        if types[q] == "":
            continue
        pool = [
            j for j in range(len(X))
            if j != q and types[j] != "" and S[q, j] < 1 - 1e-6
            and not (artists is not None and artists[q] != "" and artists[j] == artists[q])
            and not (hashes is not None and hashes[q] != "" and hashes[j] == hashes[q])
        ]
        ranked = sorted(pool, key=lambda j: (-S[q, j], j))
        relevant = [types[j] == types[q] for j in ranked]
        row = {"index": q, "type": types[q]}
        for k in ks:
            row[f"p@{k}"] = sum(relevant[:k]) / min(k, len(ranked))
        hits, precisions = 0, []
        for position, is_relevant in enumerate(relevant, start=1):
            if is_relevant:
                hits += 1
                precisions.append(hits / position)
        row["ap"] = np.mean(precisions) if precisions else np.nan
        row["base_rate"] = sum(relevant) / len(ranked)
        rows.append(row)
    return pd.DataFrame(rows)


def brute_ranks(Q: np.ndarray, C: np.ndarray, targets: np.ndarray) -> np.ndarray:
    S = Q @ C.T
    order = np.argsort(-S, axis=1, kind="stable")
    return np.array([int(np.flatnonzero(order[i] == t)[0]) + 1 for i, t in enumerate(targets)])


# ---------------------------------------------------------------------------------------------
# Bootstrap


def test_bootstrap_deterministic_with_seed():
    values = np.random.default_rng(1).normal(size=200)
    first = bootstrap_ci(values, n_boot=300, seed=7)
    second = bootstrap_ci(values, n_boot=300, seed=7)
    other = bootstrap_ci(values, n_boot=300, seed=8)
    assert first == second
    assert (first.low, first.high) != (other.low, other.high)


def test_bootstrap_interval_contains_estimate():
    values = np.random.default_rng(2).exponential(size=150)
    interval = bootstrap_ci(values, n_boot=500, seed=0)
    assert interval.value == pytest.approx(values.mean())
    assert interval.low < interval.value < interval.high
    assert interval.n == 150


def test_bootstrap_callable_with_strata_keeps_sizes():
    labels = np.array(["a"] * 30 + ["b"] * 10)
    interval = bootstrap_ci(lambda idx: float(np.sum(labels[idx] == "b")), n_boot=100, seed=0, strata=labels)
    assert interval.value == 10
    assert interval.low == 10
    assert interval.high == 10


def test_bootstrap_groups_ratio_of_means():
    rng = np.random.default_rng(3)
    narrative, additive = rng.uniform(2, 4, 80), rng.uniform(1, 2, 120)
    interval = bootstrap_groups_ci([narrative, additive], lambda a, b: a.mean() / b.mean(), n_boot=400, seed=0)
    assert interval.value == pytest.approx(narrative.mean() / additive.mean())
    assert interval.low < interval.value < interval.high
    assert interval.n == 200


def test_paired_bootstrap_constant_shift():
    a = np.random.default_rng(4).normal(size=100)
    interval = paired_bootstrap_ci(a + 0.5, a, n_boot=200, seed=0)
    assert interval.value == pytest.approx(0.5)
    assert interval.low == pytest.approx(0.5)
    assert interval.high == pytest.approx(0.5)


def test_bootstrap_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.ones(3), n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(np.ones(3), alpha=1.5)


# ---------------------------------------------------------------------------------------------
# Structure (H1)


def test_structure_hand_case():
    # A = {0 deg, 90 deg}, B = {180 deg, 270 deg}: intra distances 1 and 1; inter 2, 1, 1, 2.
    X = angles(0, 90, 180, 270)
    result = structure_ratio(X, np.array(["A", "A", "B", "B"]), min_class_size=2, n_boot=20, n_shuffle=3)
    assert result.intra == pytest.approx(1.0, abs=1e-6)
    assert result.inter == pytest.approx(1.5, abs=1e-6)
    assert result.ratio == pytest.approx(2 / 3, abs=1e-6)


def test_structure_matches_brute_force():
    X, codes = clustered(90, seed=5)
    labels = np.array([f"c{c}" for c in codes], dtype=object)
    labels[:6] = ""
    labels[6:9] = "rare"
    result = structure_ratio(X, labels, min_class_size=5, n_boot=50, n_shuffle=5)

    usable = np.array([label not in ("", "rare") for label in labels])
    intra, inter = brute_structure(X[usable], labels[usable])
    assert result.intra == pytest.approx(intra, rel=1e-9)
    assert result.inter == pytest.approx(inter, rel=1e-9)
    assert result.ratio == pytest.approx(intra / inter, rel=1e-9)
    assert result.n_items == int(usable.sum())
    assert result.excluded_classes == {"rare": 3}
    assert sum(result.class_counts.values()) == result.n_items


def test_structure_weighted_pairs_match_resample():
    X, codes = clustered(40, seed=6)
    X = X.astype(np.float64)
    draw = np.random.default_rng(0).integers(0, 40, 40)
    weights = np.bincount(draw, minlength=40).astype(np.float64)[None, :]
    classes = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    intra, inter = _distances(X, np.einsum("nd,nd->n", X, X), classes, weights)

    # Pairs of positions in the resample, except pairs of two copies of one item.
    intra_ref, inter_ref = [], []
    for a, b in itertools.combinations(range(len(draw)), 2):
        i, j = draw[a], draw[b]
        if i != j:
            (intra_ref if codes[i] == codes[j] else inter_ref).append(1 - X[i] @ X[j])
    assert intra[0] == pytest.approx(np.mean(intra_ref), rel=1e-9)
    assert inter[0] == pytest.approx(np.mean(inter_ref), rel=1e-9)


def test_structure_shuffled_baseline_near_one():
    X, codes = clustered(200, spread=0.5, seed=7)
    result = structure_ratio(X, codes.astype(str), n_boot=100, n_shuffle=10, seed=0)
    assert result.ratio < 0.6
    assert result.shuffled_ratio == pytest.approx(1.0, abs=0.03)
    assert result.ci_low <= result.ratio <= result.ci_high
    assert result.shuffled_ci[0] <= result.shuffled_ratio <= result.shuffled_ci[1]


def test_structure_deterministic_with_seed():
    X, codes = clustered(80, seed=8)
    first = structure_ratio(X, codes.astype(str), n_boot=30, n_shuffle=4, seed=3)
    second = structure_ratio(X, codes.astype(str), n_boot=30, n_shuffle=4, seed=3)
    assert first == second


def test_structure_rejects_single_class():
    X, _ = clustered(20, seed=9)
    with pytest.raises(ValueError, match="at least two classes"):
        structure_ratio(X, np.array(["a"] * 20))


def test_structure_rejects_unnormalised_rows():
    with pytest.raises(ValueError, match="L2-normalised"):
        structure_ratio(np.ones((10, 3)), np.array(["a", "b"] * 5))


def test_structure_table_subsets():
    X, codes = clustered(100, seed=10)
    types = TYPES[codes].astype(object)
    schools = np.array(["north", "south"], dtype=object)[np.arange(100) % 2]
    schools[:20] = ""
    table = structure_table(X, {"type": types, "school": schools}, n_boot=20, n_shuffle=3)

    assert list(table.columns) == ["attribute", "subset", "metric", "value", "ci_low", "ci_high", "n", "n_classes"]
    assert set(table["metric"]) == {"ratio", "shuffled_ratio", "intra", "inter"}
    n = table.set_index(["attribute", "subset", "metric"])["n"]
    assert n[("type", "full", "ratio")] == 100
    assert n[("type", "common", "ratio")] == 80
    assert n[("school", "full", "ratio")] == 80


# ---------------------------------------------------------------------------------------------
# Image to image (H2)

# Portraits at 0 and 100 degrees, religious paintings at 30 and 180 degrees.
HAND_X = angles(0, 100, 30, 180)
HAND_TYPES = np.array(["portrait", "portrait", "religious", "religious"], dtype=object)


def test_image_to_image_hand_case():
    # Query 0 ranks 2, 1, 3; query 1 ranks 2, 3, 0; query 2 ranks 0, 1, 3; query 3 ranks 1, 2, 0.
    table = image_to_image(HAND_X, HAND_TYPES, ks=(1, 5))
    assert table["p@1"].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert table["p@5"].tolist() == pytest.approx([1 / 3] * 4)
    assert table["ap"].tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 3, 1 / 2])
    assert table["ap"].mean() == pytest.approx(5 / 12)
    assert table["base_rate"].tolist() == pytest.approx([1 / 3] * 4)


def test_image_to_image_same_artist_excluded():
    artists = np.array(["a", "b", "a", "c"], dtype=object)
    table = image_to_image(HAND_X, HAND_TYPES, ks=(1,), artists=artists, exclude_same_artist=True)
    # Query 0 loses item 2 (its own artist): pool {1, 3}, ranked 1, 3.
    assert table.loc[0, "p@1"] == 1.0
    assert table.loc[0, "ap"] == 1.0
    assert table.loc[0, "base_rate"] == 0.5
    assert table.loc[0, "n_candidates"] == 2
    # Query 1 has no artist in common with anyone: unchanged.
    assert table.loc[1, "ap"] == pytest.approx(1 / 3)


def test_image_to_image_duplicates_excluded():
    X = np.concatenate([HAND_X, HAND_X[:1]])
    types = np.append(HAND_TYPES, "portrait")
    table = image_to_image(X, types, ks=(1,))
    assert table.loc[0, "p@1"] == 0.0
    assert table.loc[0, "n_candidates"] == 3

    with_duplicates = image_to_image(X, types, ks=(1,), exclude_duplicates=False)
    assert with_duplicates.loc[0, "p@1"] == 1.0


def test_image_to_image_hash_duplicates_excluded():
    hashes = np.array(["h0", "h1", "h2", "h0"], dtype=object)
    table = image_to_image(HAND_X, HAND_TYPES, ks=(1,), hashes=hashes)
    assert table.loc[0, "n_candidates"] == 2
    assert table.loc[3, "n_candidates"] == 2
    assert table.loc[1, "n_candidates"] == 3


@pytest.mark.parametrize("exclude_same_artist", [False, True])
def test_image_to_image_matches_brute_force(exclude_same_artist):
    X, codes = clustered(150, spread=0.9, n_classes=6, seed=11)
    types = TYPES[codes].astype(object)
    types[:10] = ""
    artists = np.array([f"artist{i % 17}" for i in range(150)], dtype=object)
    artists[::13] = ""
    table = image_to_image(
        X, types, ks=(1, 5, 10), artists=artists if exclude_same_artist else None,
        exclude_same_artist=exclude_same_artist,
    )
    reference = brute_image_to_image(X, types, (1, 5, 10), artists if exclude_same_artist else None)
    assert table["index"].tolist() == reference["index"].tolist()
    for column in ("p@1", "p@5", "p@10", "ap", "base_rate"):
        np.testing.assert_allclose(table[column].to_numpy(float), reference[column].to_numpy(float), err_msg=column)


def test_image_to_image_needs_artists_for_exclusion():
    with pytest.raises(ValueError, match="artists"):
        image_to_image(HAND_X, HAND_TYPES, exclude_same_artist=True)


def test_random_ap_matches_enumeration():
    m, r = 5, 2
    values = []
    for relevant_positions in itertools.combinations(range(1, m + 1), r):
        values.append(np.mean([(i + 1) / p for i, p in enumerate(relevant_positions)]))
    assert random_ap(np.array([m]), np.array([r]))[0] == pytest.approx(np.mean(values))


# ---------------------------------------------------------------------------------------------
# Text to image, image to text, type prompts


def test_text_to_image_matches_brute_force():
    rng = np.random.default_rng(12)
    X = unit_rows(rng.normal(size=(120, 16)))
    targets = rng.integers(0, 120, 60)
    T = unit_rows(X[targets] + 0.8 * rng.normal(size=(60, 16)))
    table = text_to_image(T, X, targets)
    np.testing.assert_array_equal(table["rank"], brute_ranks(T, X, targets))
    assert (table["pool_size"] == 120).all()


def test_text_to_image_with_candidates():
    rng = np.random.default_rng(13)
    X = unit_rows(rng.normal(size=(80, 8)))
    candidates = np.arange(0, 80, 2)
    targets = candidates[rng.integers(0, len(candidates), 30)]
    T = unit_rows(X[targets] + rng.normal(size=(30, 8)))
    table = text_to_image(T, X, targets, candidates=candidates)
    positions = np.searchsorted(candidates, targets)
    np.testing.assert_array_equal(table["rank"], brute_ranks(T, X[candidates], positions))
    np.testing.assert_array_equal(table["target"], targets)
    with pytest.raises(ValueError, match="not in candidates"):
        text_to_image(T, X, targets + 1, candidates=candidates)


def test_image_to_text_matches_brute_force():
    rng = np.random.default_rng(14)
    T = unit_rows(rng.normal(size=(50, 8)))
    X = unit_rows(T + 0.7 * rng.normal(size=(50, 8)))
    table = image_to_text(X, T, np.arange(50))
    np.testing.assert_array_equal(table["rank"], brute_ranks(X, T, np.arange(50)))


def test_text_to_image_hand_case():
    X = angles(0, 45, 90)
    T = angles(40, 80)
    table = text_to_image(T, X, [0, 2])
    # Text at 40 deg: 45 (cos 5), 0 (cos 40), 90 -> image 0 ranks 2. Text at 80 deg: 90 first.
    assert table["rank"].tolist() == [2, 1]


def test_type_prompt_precision_matches_brute_force():
    X, codes = clustered(100, n_classes=6, seed=15)
    types = TYPES[codes].astype(object)
    P = unit_rows(np.random.default_rng(16).normal(size=(3, 8)))
    prompt_types = ["portrait", "religious", "still life"]
    table = type_prompt_precision(P, prompt_types, X, types, ks=(1, 10, 50))

    for i, name in enumerate(["portrait", "religious", "still-life"]):
        order = np.argsort(-(X @ P[i]), kind="stable")
        relevant = types[order] == name
        assert table.loc[i, "type"] == name
        for k in (1, 10, 50):
            assert table.loc[i, f"p@{k}"] == pytest.approx(relevant[:k].mean()), k
        assert table.loc[i, "base_rate"] == pytest.approx(relevant.mean())


def test_type_prompt_rejects_absent_type():
    with pytest.raises(ValueError, match="no image"):
        type_prompt_precision(angles(0), ["interior"], HAND_X, HAND_TYPES)


# ---------------------------------------------------------------------------------------------
# Aggregation and the gap factor

# Ranks: religious 4, 12, 20; mythological 30; portrait 1, 2, 15; landscape 3.
GAP_RANKS = pd.DataFrame({
    "query": range(8),
    "type": ["religious"] * 3 + ["mythological"] + ["portrait"] * 3 + ["landscape"],
    "rank": [4, 12, 20, 30, 1, 2, 15, 3],
    "pool_size": 100,
})


def value(table: pd.DataFrame, group: str, aggregation: str, metric: str, column: str = "value") -> float:
    match = table[(table["group"] == group) & (table["aggregation"] == aggregation) & (table["metric"] == metric)]
    assert len(match) == 1, (group, aggregation, metric)
    return float(match[column].iloc[0])


def n_by_type_of(table, group, aggregation, metric):
    match = table[(table["group"] == group) & (table["aggregation"] == aggregation) & (table["metric"] == metric)]
    return match["n_by_type"].iloc[0]


def test_gap_factor_from_ranks():
    table = aggregate_by_type(GAP_RANKS, ["rank"], n_boot=200, seed=0)
    # MedR pooled: narrative median(4, 12, 20, 30) = 16, additive median(1, 2, 3, 15) = 2.5.
    assert value(table, "gap", "pooled", "gap_medr") == pytest.approx(16 / 2.5)
    # MedR macro: narrative mean(12, 30) = 21, additive mean(2, 3) = 2.5.
    assert value(table, "gap", "macro", "gap_medr") == pytest.approx(21 / 2.5)
    # R@10 errors pooled: narrative 3/4, additive 1/4. Macro: 1 - mean(1/3, 0) vs 1 - mean(2/3, 1).
    assert value(table, "gap", "pooled", "gap_err_r@10") == pytest.approx(3.0)
    assert value(table, "gap", "macro", "gap_err_r@10") == pytest.approx((5 / 6) / (1 / 6))
    assert value(table, "religious", "pooled", "medr") == 12
    assert value(table, "gap", "pooled", "gap_medr", "baseline") == pytest.approx(1.0)
    assert value(table, "additive", "pooled", "medr", "baseline") == pytest.approx(50.5)
    assert value(table, "additive", "pooled", "r@10", "baseline") == pytest.approx(0.1)
    assert json.loads(n_by_type_of(table, "narrative", "macro", "medr")) == {"religious": 3, "mythological": 1}


def test_gap_factor_from_precision():
    per_query = pd.DataFrame({
        "index": range(4),
        "type": ["religious", "religious", "portrait", "portrait"],
        "p@10": [0.2, 0.4, 0.8, 0.6],
        "base_rate": [0.25, 0.25, 0.5, 0.5],
    })
    table = aggregate_by_type(per_query, ["p@10"], n_boot=100)
    assert value(table, "gap", "pooled", "gap_err_p@10") == pytest.approx(0.7 / 0.3)
    assert value(table, "narrative", "pooled", "p@10", "lift") == pytest.approx(0.3 / 0.25)
    assert value(table, "gap", "pooled", "gap_err_p@10", "baseline") == pytest.approx(0.75 / 0.5)


def test_aggregate_matches_groupby_and_brackets_value():
    X, codes = clustered(160, spread=0.9, n_classes=6, seed=17)
    types = TYPES[codes].astype(object)
    per_query = image_to_image(X, types)
    table = aggregate_by_type(per_query, ["p@10", "ap"], n_boot=200, seed=1)
    means = per_query.groupby("type")[["p@10", "ap"]].mean()
    for name in TYPES:
        assert value(table, name, "pooled", "p@10") == pytest.approx(means.loc[name, "p@10"])
        assert value(table, name, "pooled", "map") == pytest.approx(means.loc[name, "ap"])
    narrative = per_query["type"].isin(["religious", "mythological", "historical"])
    assert value(table, "narrative", "pooled", "p@10") == pytest.approx(per_query.loc[narrative, "p@10"].mean())
    values = table[table["metric"].isin(["p@10", "gap_err_p@10"])]
    assert (values["ci_low"] <= values["value"] + 1e-12).all()
    assert (values["value"] <= values["ci_high"] + 1e-12).all()


def test_aggregate_leaves_study_out_of_groups():
    per_query = GAP_RANKS.copy()
    per_query.loc[8] = [8, "study", 99, 100]
    table = aggregate_by_type(per_query, ["rank"], n_boot=20)
    assert value(table, "study", "pooled", "medr") == 99
    assert value(table, "gap", "pooled", "gap_medr") == pytest.approx(16 / 2.5)


def test_aggregate_rejects_unknown_metric():
    with pytest.raises(ValueError, match="valid columns"):
        aggregate_by_type(GAP_RANKS, ["recall"])


def test_aggregate_uses_custom_split():
    split = TypeSplit(additive=("portrait",), narrative=("religious",))
    table = aggregate_by_type(GAP_RANKS, ["rank"], split=split, n_boot=20)
    assert value(table, "gap", "pooled", "gap_medr") == pytest.approx(12 / 2)


# ---------------------------------------------------------------------------------------------
# Paired differences


def test_paired_difference_same_model_is_zero():
    table = paired_difference(GAP_RANKS, GAP_RANKS, "rank", n_boot=50)
    assert np.allclose(table["value"], 0)
    assert np.allclose(table["ci_low"].fillna(0), 0)
    assert np.allclose(table["ci_high"].fillna(0), 0)


def test_paired_difference_aligns_by_query():
    better = GAP_RANKS.copy()
    better["rank"] = [2, 6, 10, 15, 1, 1, 5, 1]
    shuffled = better.sample(frac=1.0, random_state=0)
    table = paired_difference(GAP_RANKS, shuffled, "rank", n_boot=100, seed=0)
    assert value(table, "religious", "pooled", "medr") == pytest.approx(12 - 6)
    # Model b: narrative median(2, 6, 10, 15) = 8, additive median(1, 1, 5, 1) = 1.
    gap_a, gap_b = 16 / 2.5, 8 / 1
    assert value(table, "gap", "pooled", "gap_medr") == pytest.approx(gap_a - gap_b)
    assert value(table, "gap", "pooled", "gap_medr", "value_a") == pytest.approx(gap_a)


def test_paired_difference_rejects_other_queries():
    with pytest.raises(ValueError, match="different queries"):
        paired_difference(GAP_RANKS, GAP_RANKS.iloc[:-1], "rank", n_boot=10)


# ---------------------------------------------------------------------------------------------
# Texture (H3)


def test_patch_shuffle_keeps_pixels():
    x = torch.rand(2, 3, 32, 32)
    shuffled = patch_shuffle(x, 4, torch.Generator().manual_seed(0))
    assert not torch.equal(shuffled, x)
    for i in range(2):
        assert torch.equal(torch.sort(shuffled[i].flatten()).values, torch.sort(x[i].flatten()).values)


def test_patch_shuffle_moves_whole_patches():
    x = torch.rand(3, 8, 8)
    shuffled = patch_shuffle(x, 2, torch.Generator().manual_seed(1))
    patches = [x[:, r : r + 4, c : c + 4] for r in (0, 4) for c in (0, 4)]
    moved = [shuffled[:, r : r + 4, c : c + 4] for r in (0, 4) for c in (0, 4)]
    for patch in moved:
        assert any(torch.equal(patch, original) for original in patches)


def test_patch_shuffle_grid_one_is_identity():
    x = torch.rand(3, 10, 12)
    assert torch.equal(patch_shuffle(x, 1), x)


def test_patch_shuffle_keeps_remainder():
    x = torch.rand(1, 3, 10, 11)
    shuffled = patch_shuffle(x, 3, torch.Generator().manual_seed(2))
    assert torch.equal(shuffled[..., 9:, :], x[..., 9:, :])
    assert torch.equal(shuffled[..., :, 9:], x[..., :, 9:])


def test_patch_shuffle_seeded():
    x = torch.rand(3, 16, 16)
    first = patch_shuffle(x, 4, torch.Generator().manual_seed(5))
    second = patch_shuffle(x, 4, torch.Generator().manual_seed(5))
    assert torch.equal(first, second)


def test_patch_shuffle_rejects_bad_grid():
    with pytest.raises(ValueError, match="grid"):
        patch_shuffle(torch.rand(3, 4, 4), 5)


def test_grayscale_on_normalised_tensor():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pixels = torch.rand(2, 3, 8, 8)
    mean_t, std_t = torch.tensor(mean).reshape(3, 1, 1), torch.tensor(std).reshape(3, 1, 1)
    result = perturb((pixels - mean_t) / std_t, "grayscale", mean=mean, std=std)
    expected = (grayscale(pixels) - mean_t) / std_t
    assert torch.allclose(result, expected, atol=1e-5)
    luma = result * std_t + mean_t
    assert torch.allclose(luma[:, 0], luma[:, 1], atol=1e-5)


def test_blur_keeps_constant_image():
    x = torch.full((3, 16, 16), 0.3)
    assert torch.allclose(perturb(x, "blur"), x, atol=1e-6)


def test_perturbations_keep_shape():
    x = torch.rand(2, 3, 24, 24)
    generator = torch.Generator().manual_seed(0)
    for name in PERTURBATIONS:
        assert perturb(x, name, generator).shape == x.shape, name
    with pytest.raises(ValueError, match="valid names"):
        perturb(x, "rotate")


def test_texture_identity_ranks_first():
    rng = np.random.default_rng(18)
    X = unit_rows(rng.normal(size=(70, 16)))
    sample = np.array([3, 10, 42, 69])
    table = texture_metrics(X[sample], X[sample], X, sample)
    assert table["rank"].tolist() == [1, 1, 1, 1]
    assert table["cosine"].to_numpy() == pytest.approx(1.0, abs=1e-6)


def test_texture_metrics_match_brute_force():
    rng = np.random.default_rng(19)
    X = unit_rows(rng.normal(size=(60, 8)))
    sample = np.arange(0, 60, 3)
    X_pert = unit_rows(X[sample] + 0.6 * rng.normal(size=(len(sample), 8)))
    types = TYPES[np.arange(60) % 6]
    table = texture_metrics(X[sample], X_pert, X, sample, types=types)
    np.testing.assert_array_equal(table["rank"], brute_ranks(X_pert, X, sample))
    np.testing.assert_allclose(table["cosine"], np.sum(X[sample] * X_pert, axis=1), rtol=1e-6)
    assert table["type"].tolist() == types[sample].tolist()


def test_texture_reliance_and_table():
    sample = np.arange(12)
    types = np.array(["portrait", "religious"] * 6, dtype=object)
    results = {
        name: pd.DataFrame({"index": sample, "cosine": np.full(12, c), "rank": np.ones(12, int), "type": types})
        for name, c in (("shuffle2", 0.9), ("shuffle4", 0.8), ("shuffle8", 0.7), ("grayscale", 0.95))
    }
    reliance = texture_reliance(results, n_boot=50)
    overall = reliance[reliance["type"] == "all"].set_index("metric")
    assert overall.loc["cosine", "value"] == pytest.approx(0.8)
    assert overall.loc["cosine", "n"] == 12

    table = texture_table(results, n_boot=50)
    assert list(table.columns) == ["type", "perturbation", "metric", "value", "ci_low", "ci_high", "n"]
    assert set(table["perturbation"]) == {"shuffle2", "shuffle4", "shuffle8", "grayscale", "shuffle_mean"}
    assert set(table["type"]) == {"all", "additive", "narrative", "portrait", "religious"}
    recall = table[(table["perturbation"] == "grayscale") & (table["metric"] == "recall@1") & (table["type"] == "all")]
    assert recall["value"].iloc[0] == 1.0
