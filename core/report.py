"""Markdown report of the result tables, for a terminal, a README or a slide."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.results import read_table
from core.types import TypeSplit, load_split


def _interval(value: float, low: float, high: float, digits: int = 3) -> str:
    if not np.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    if np.isfinite(low) and np.isfinite(high):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def footer(table: pd.DataFrame) -> str:
    """Return one line naming model, weights checksum, label set, n and seed of the rows shown."""
    parts = []
    for model, rows in table.groupby("model", sort=True):
        parts.append(f"{model} (weights {str(rows['weights_sha256'].iat[0])[:12]})")
    label_set = ", ".join(sorted(table["label_set"].astype(str).unique()))
    seeds = ", ".join(sorted(table["seed"].astype(str).unique()))
    return f"_Models: {'; '.join(parts)}. Labels: {label_set}. Seed: {seeds}._"


def h1_section(h1: pd.DataFrame) -> str:
    rows = []
    for (model, attribute, subset), part in h1.groupby(["model", "attribute", "subset"], sort=True):
        ratio = part[part["metric"] == "ratio"].iloc[0]
        shuffled = part[part["metric"] == "shuffled_ratio"].iloc[0]
        rows.append(
            {
                "model": model,
                "subset": subset,
                "attribute": attribute,
                "ratio intra/inter [95% CI]": _interval(ratio["value"], ratio["ci_low"], ratio["ci_high"]),
                "shuffled baseline": _interval(shuffled["value"], shuffled["ci_low"], shuffled["ci_high"]),
                "n": int(ratio["n"]),
                "classes": int(ratio["n_classes"]),
            }
        )
    table = pd.DataFrame(rows).sort_values(["subset", "model", "attribute"])
    return (
        "## H1: what the embedding space organises by\n\n"
        "Mean intra-class over mean inter-class cosine distance: lower means more structure, 1.0 none. "
        "Subset `common` keeps the paintings where every attribute is known.\n\n"
        f"{markdown_table(table)}\n\n{footer(h1)}\n"
    )


def h2_type_table(h2: pd.DataFrame, task: str, split: TypeSplit, k: int) -> str:
    """Per-type precision@k, lift and mAP by model, then the groups and the gap factors."""
    part = h2[h2["task"] == task]
    if part.empty:
        return ""
    rows = []
    groups = [*split.types, "additive", "narrative"]
    for group in groups:
        for aggregation in ("pooled", "macro") if group in ("additive", "narrative") else ("pooled",):
            row = {"type": group if group in split.types else f"**{group}** ({aggregation})"}
            selected = part[(part["group"] == group) & (part["aggregation"] == aggregation)]
            if selected.empty:
                continue
            for model, rows_of_model in selected.groupby("model", sort=True):
                precision = rows_of_model[rows_of_model["metric"] == f"p@{k}"]
                average = rows_of_model[rows_of_model["metric"] == "map"]
                if precision.empty:
                    continue
                p = precision.iloc[0]
                row[f"{model} p@{k}"] = _interval(p["value"], p["ci_low"], p["ci_high"])
                row[f"{model} lift"] = f"{p['lift']:.2f}" if np.isfinite(p["lift"]) else "n/a"
                if not average.empty:
                    row[f"{model} mAP"] = f"{average.iloc[0]['value']:.3f}"
                row["n"] = int(p["n"])
            rows.append(row)
    gap_rows = []
    for (model, aggregation), gap in part[part["group"] == "gap"].groupby(["model", "aggregation"], sort=True):
        for _, metric in gap.iterrows():
            gap_rows.append(
                {
                    "model": model,
                    "aggregation": aggregation,
                    "gap factor": metric["metric"],
                    "value [95% CI]": _interval(metric["value"], metric["ci_low"], metric["ci_high"], 2),
                    "random ranking": f"{metric['baseline']:.2f}" if np.isfinite(metric["baseline"]) else "n/a",
                }
            )
    text = f"### {task}\n\n{markdown_table(pd.DataFrame(rows).fillna(''))}\n\n"
    if gap_rows:
        text += (
            "Gap factor narrative/additive: `gap_err_m` = (1 - m) narrative / (1 - m) additive, "
            "`gap_medr` = MedR narrative / MedR additive; above 1 means narrative types retrieve worse.\n\n"
            f"{markdown_table(pd.DataFrame(gap_rows))}\n\n"
        )
    return text + footer(part) + "\n"


def h2_text_table(h2: pd.DataFrame) -> str:
    tasks = sorted(t for t in h2["task"].unique() if t.startswith(("text_to_image", "image_to_text")))
    rows = []
    for task in tasks:
        part = h2[(h2["task"] == task) & (h2["aggregation"] == "pooled")]
        for (model, group), rows_of_group in part.groupby(["model", "group"], sort=True):
            if group not in ("additive", "narrative", "gap"):
                continue
            metrics = {m: r for m, r in zip(rows_of_group["metric"], rows_of_group.itertuples())}
            row = {"task": task, "model": model, "group": group}
            for name, metric in metrics.items():
                row[name] = _interval(metric.value, metric.ci_low, metric.ci_high, 2)
            for name in ("medr", "r@10"):
                if name in metrics and np.isfinite(metrics[name].baseline):
                    row[f"{name} random"] = f"{metrics[name].baseline:.2f}"
            row["n"] = int(rows_of_group["n"].iloc[0])
            rows.append(row)
    if not rows:
        return ""
    return "### Text retrieval (held-out pool)\n\n" + markdown_table(pd.DataFrame(rows).fillna("")) + "\n"


def h3_section(h3: pd.DataFrame) -> str:
    part = h3[(h3["metric"] == "cosine") & (h3["type"].isin(["all", "additive", "narrative"]))]
    part = part[part["perturbation"] != "random_pair"]
    floor = h3[h3["perturbation"] == "random_pair"].set_index("model")["value"]
    rows = []
    for (model, group), rows_of_group in part.groupby(["model", "type"], sort=True):
        row = {"model": model, "type": group}
        for _, metric in rows_of_group.iterrows():
            row[metric["perturbation"]] = _interval(metric["value"], metric["ci_low"], metric["ci_high"], 2)
        row["random pair"] = f"{floor[model]:.2f}" if model in floor.index else "n/a"
        shuffled = rows_of_group[rows_of_group["perturbation"] == "shuffle_mean"]["value"]
        if model in floor.index and len(shuffled):
            # Share of the distance from the floor to an identical copy that survives the shuffles.
            row["reliance above floor"] = f"{(shuffled.iloc[0] - floor[model]) / (1 - floor[model]):.2f}"
        row["n"] = int(rows_of_group["n"].iloc[0])
        rows.append(row)
    return (
        "## H3: texture reliance\n\n"
        "Cosine between each sampled painting and its perturbed copy. `shuffle_mean` (patch shuffles "
        "2x2, 4x4, 8x8) is the texture reliance: high means the embedding ignores layout. `random pair` is "
        "the cosine between a painting and a random other one, the floor of every column, so models compare by "
        "`reliance above floor` = (shuffle_mean - random pair) / (1 - random pair).\n\n"
        f"{markdown_table(pd.DataFrame(rows).fillna(''))}\n\n{footer(h3)}\n"
    )


def build_report(results_dir: Path, split: TypeSplit | None = None, k: int = 10, label_set: str = "all") -> str:
    """Return the Markdown report of one corpus's results folder for one label set."""
    split = split or load_split()
    results_dir = Path(results_dir)
    h1, h2, h3 = (
        _only_label_set(read_table(results_dir, name), label_set) for name in ("h1_structure", "h2_retrieval", "h3_texture")
    )
    if h1 is None and h2 is None:
        raise FileNotFoundError(
            f"No results for label set {label_set!r} in {results_dir}. Build them with "
            f"`python -m core evaluate --indexes indexes/ --out results/ --labels {label_set}`."
        )
    sections = [f"# Semantic gap report: {results_dir.name}, {label_set} labels\n"]
    if h1 is not None:
        sections.append(h1_section(h1))
    if h2 is not None:
        sections.append("## H2: the semantic gap in retrieval\n")
        for task in ("image_to_image", "image_to_image_excl_artist"):
            sections.append(h2_type_table(h2, task, split, k))
        sections.append(h2_text_table(h2))
    if h3 is not None:
        sections.append(h3_section(h3))
    return "\n".join(section for section in sections if section)


def _only_label_set(table: pd.DataFrame | None, label_set: str) -> pd.DataFrame | None:
    if table is None or "label_set" not in table.columns:
        return table
    rows = table[table["label_set"].astype(str) == label_set]
    return rows if len(rows) else None
