"""The evaluation job: the study's measurements (H1, H2, H3) for every model of a corpus.

Reads indexes/<corpus>/ and writes the tidy tables of docs/ARTEFACTS.md to results/<corpus>/.
Embeddings come from the stored indexes; encoders are loaded only for text queries and for the
perturbed images of H3.
"""
from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from core.align import SPLIT_FILE, load_text_split
from core.corpus import timeframe_from_year
from core.encoders import create_encoder, default_weights
from core.encoders.base import Encoder
from core.images import ImageDecodeError, load_image
from core.index import ModelIndex, load_corpus_indexes, model_folder_name, write_json_atomic
from core.metrics import (
    aggregate_by_type,
    bootstrap_ci,
    image_to_image,
    image_to_text,
    paired_difference,
    structure_table,
    text_to_image,
    type_prompt_precision,
)
from core.metrics.texture import PERTURBATIONS, perturb, texture_metrics, texture_table
from core.results import write_label_set
from core.search import check_encoder_matches
from core.types import TypeSplit, load_split

logger = logging.getLogger(__name__)

LABEL_SETS = ("all", "curated")
# Label sources checked by people: the Web Gallery of Art catalogue and WikiArt's genre lists.
# Title-keyword labels ("title-rule") are heuristic and left out of the curated set.
CURATED_SOURCES = ("wga", "wikiart", "catalogue")
TEXT_FIELDS = ("title", "description")
STRUCTURE_ATTRIBUTES = ("type", "school", "timeframe", "style")
# Type names as they read in a sentence, for prompts such as "a history painting".
PROMPT_WORDS = {"historical": "history", "still-life": "still life"}


@dataclass
class EvaluateConfig:
    """Settings of one evaluation run; every output row records label_set and seed."""

    label_set: str = "all"  # "all" labels, or "curated": only types from CURATED_SOURCES
    split: TypeSplit = field(default_factory=load_split)
    ks: tuple[int, ...] = (1, 5, 10)
    n_boot: int = 1000  # bootstrap replicates for every interval
    seed: int = 0  # bootstrap, shuffled labels and the H3 sample
    min_class_size: int = 5  # H1 leaves smaller classes out and lists them
    derive_timeframe: bool = True  # fill a missing timeframe from the year (50-year bins)
    texture_sample: int = 200  # images per model perturbed for H3
    weights: dict[str, str] = field(default_factory=dict)  # model -> local weights, for text and H3
    device: str = "cpu"


@dataclass
class ModelData:
    """One model's stored artefacts, with labels prepared for the metrics."""

    name: str
    index: ModelIndex
    footer: dict  # model, weights_sha256, label_set, seed: copied into every row
    encoder: Encoder | None = None
    encoder_error: str = ""


def prepare_labels(metadata: pd.DataFrame, config: EvaluateConfig) -> pd.DataFrame:
    """Return the label columns used by the metrics: curated types only when asked."""
    if config.label_set not in LABEL_SETS:
        raise ValueError(f"Unknown label set {config.label_set!r}; valid choices: {', '.join(LABEL_SETS)}.")
    labels = metadata[["id", "artist_id", "type", "school", "timeframe", "style", "title", "description"]].copy()
    labels = labels.fillna("").astype(str)
    if config.label_set == "curated":
        if "type_source" not in metadata or not metadata["type_source"].astype(str).str.len().any():
            raise ValueError("Label set 'curated' needs a type_source column, and this corpus has none; use --labels all.")
        curated = metadata["type_source"].astype(str).str.lower().isin(CURATED_SOURCES)
        labels.loc[~curated.to_numpy(), "type"] = ""
    if config.derive_timeframe and "year" in metadata:
        missing = labels["timeframe"] == ""
        labels.loc[missing, "timeframe"] = [timeframe_from_year(year) for year in metadata.loc[missing, "year"]]
    return labels


def with_footer(table: pd.DataFrame, footer: dict) -> pd.DataFrame:
    """Return the table with the footer's columns: model first, the others at the end."""
    table = table.copy()
    for key, value in footer.items():
        if key == "model":
            table.insert(0, key, value)
        else:
            table[key] = value
    return table


def evaluate_structure(data: ModelData, labels: pd.DataFrame, config: EvaluateConfig) -> pd.DataFrame:
    attributes = {name: labels[name].to_numpy(dtype=object) for name in STRUCTURE_ATTRIBUTES}
    table = structure_table(
        np.asarray(data.index.embeddings), attributes, min_class_size=config.min_class_size, n_boot=config.n_boot, seed=config.seed
    )
    return with_footer(table, data.footer)


def evaluate_image_retrieval(data: ModelData, labels: pd.DataFrame, config: EvaluateConfig) -> tuple[pd.DataFrame, dict]:
    """Leave-one-out same-type retrieval, with and without neighbours by the query's artist."""
    X = np.asarray(data.index.embeddings)
    types = labels["type"].to_numpy(dtype=object)
    artists = labels["artist_id"].to_numpy(dtype=object)
    metric_cols = [f"p@{k}" for k in config.ks] + ["ap"]
    tables, per_query = [], {}
    for task, exclude in (("image_to_image", False), ("image_to_image_excl_artist", True)):
        started = time.perf_counter()
        queries = image_to_image(X, types, ks=config.ks, artists=artists, exclude_same_artist=exclude)
        per_query[task] = queries
        table = aggregate_by_type(queries, metric_cols, split=config.split, n_boot=config.n_boot, seed=config.seed, ks=config.ks)
        table.insert(0, "task", task)
        tables.append(table)
        logger.info("%s %s: %d queries in %.1f s", data.name, task, len(queries), time.perf_counter() - started)
    return with_footer(pd.concat(tables, ignore_index=True), data.footer), per_query


def text_queries(labels: pd.DataFrame, rows: np.ndarray, field_name: str) -> tuple[list[str], np.ndarray]:
    """Return the non-empty texts of a field among rows, and the row each describes."""
    texts = labels[field_name].to_numpy(dtype=object)[rows]
    keep = np.array([bool(str(text).strip()) for text in texts], dtype=bool)
    return [str(text) for text in texts[keep]], rows[keep]


def evaluate_text_retrieval(
    data: ModelData, labels: pd.DataFrame, pool: np.ndarray, config: EvaluateConfig
) -> tuple[pd.DataFrame, dict]:
    """Text to image, image to text and type prompts, over one candidate pool for every model."""
    X = np.asarray(data.index.embeddings)
    tables, per_query = [], {}
    for field_name in TEXT_FIELDS:
        texts, targets = text_queries(labels, pool, field_name)
        if not texts:
            continue
        T = data.encoder.encode_texts(texts).numpy()  # (m, d)
        position = {row: i for i, row in enumerate(pool)}
        target_positions = np.array([position[row] for row in targets])
        for task, queries in (
            (f"text_to_image:{field_name}", text_to_image(T, X[pool], target_positions)),
            (f"image_to_text:{field_name}", image_to_text(X[targets], T, np.arange(len(targets)))),
        ):
            queries["type"] = labels["type"].to_numpy(dtype=object)[targets]
            queries["id"] = labels["id"].to_numpy(dtype=object)[targets]
            per_query[task] = queries
            table = aggregate_by_type(queries, ["rank"], split=config.split, n_boot=config.n_boot, seed=config.seed, ks=config.ks)
            table.insert(0, "task", task)
            tables.append(table)
    prompt_types = [t for t in config.split.types if (labels["type"].to_numpy()[pool] == t).any()]
    if prompt_types:
        prompts = [f"a {PROMPT_WORDS.get(t, t)} painting" for t in prompt_types]
        P = data.encoder.encode_texts(prompts).numpy()  # (p, d)
        prompt_table = type_prompt_precision(P, prompt_types, X[pool], labels["type"].to_numpy(dtype=object)[pool])
        prompt_table["prompt"] = prompts
        per_query["type_prompt"] = prompt_table
        tables.append(prompt_rows(prompt_table))
    if not tables:
        return pd.DataFrame(), per_query
    return with_footer(pd.concat(tables, ignore_index=True), data.footer), per_query


def prompt_rows(prompt_table: pd.DataFrame) -> pd.DataFrame:
    """Turn one row per type prompt into tidy rows, one per precision@k; a prompt has no interval."""
    rows = []
    for _, prompt in prompt_table.iterrows():
        for column in (c for c in prompt_table.columns if c.startswith("p@")):
            rows.append(
                {
                    "task": "type_prompt",
                    "group": prompt["type"],
                    "aggregation": "pooled",
                    "metric": column,
                    "value": prompt[column],
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "baseline": prompt["base_rate"],
                    "lift": prompt[column] / prompt["base_rate"] if prompt["base_rate"] else np.nan,
                    "n": 1,
                    "n_by_type": prompt["prompt"],
                }
            )
    return pd.DataFrame(rows)


def evaluate_texture(data: ModelData, labels: pd.DataFrame, config: EvaluateConfig) -> pd.DataFrame:
    """Embed perturbed copies of a seeded sample and compare them with the originals (H3)."""
    X = np.asarray(data.index.embeddings)
    metadata = data.index.metadata
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(len(X), size=min(config.texture_sample, len(X)), replace=False))
    tensors, decoded = [], []
    for row in sample:
        try:
            tensors.append(data.encoder.preprocess(load_image(metadata["image_path"].iat[row])))
            decoded.append(row)
        except (ImageDecodeError, OSError) as error:
            logger.warning("H3 sample: skipped %s: %s", metadata["id"].iat[row], error)
    batch = torch.stack(tensors)  # (s, 3, H, W), normalised by the model's mean and std
    decoded = np.array(decoded)  # sampled rows whose image decoded
    mean, std = data.encoder.preprocess_config.mean, data.encoder.preprocess_config.std
    results = {}
    for name in tqdm(PERTURBATIONS, desc=f"H3 {data.name}", unit="perturbation", leave=False):
        X_pert = encode_perturbed(data.encoder, batch, tuple(decoded), name, mean, std, config.seed)
        results[name] = texture_metrics(X[decoded], X_pert, X, decoded, labels["type"].to_numpy(dtype=object))
    table = texture_table(results, split=config.split, n_boot=config.n_boot, seed=config.seed)
    table = pd.concat([table, random_pair_rows(X, decoded, config)], ignore_index=True)
    return with_footer(table, data.footer)


def random_pair_rows(X: np.ndarray, rows: np.ndarray, config: EvaluateConfig) -> pd.DataFrame:
    """Return the cosine between each sampled painting and a random other one, as a floor for H3.

    Embedding spaces differ in how close unrelated images sit, so a perturbation cosine means
    little without this baseline: reliance on texture is the distance above it.
    """
    rng = np.random.default_rng(config.seed + 1)
    others = rng.integers(0, len(X) - 1, size=len(rows))
    others = others + (others >= rows)  # skip the painting itself
    cosine = np.einsum("sd,sd->s", np.asarray(X[rows], dtype=np.float64), np.asarray(X[others], dtype=np.float64))
    interval = bootstrap_ci(cosine, n_boot=config.n_boot, seed=config.seed)
    return pd.DataFrame(
        [{"type": "all", "perturbation": "random_pair", "metric": "cosine", "value": interval.value,
          "ci_low": interval.low, "ci_high": interval.high, "n": len(rows)}]
    )


# Perturbed-image embeddings by (encoder fingerprint, sample rows, perturbation, seed), so that a
# model built on a CNN (effnet-lite0+minilm) projects the CNN's vectors instead of encoding again.
_PERTURBED_CACHE: dict[tuple, np.ndarray] = {}


def encode_perturbed(encoder: Encoder, batch: torch.Tensor, rows: tuple, name: str, mean, std, seed: int) -> np.ndarray:
    """Return (s, d) embeddings of the perturbed batch; the seed fixes every random perturbation."""
    base = getattr(encoder, "image_encoder", None) if hasattr(encoder, "project_image_features") else None
    if base is not None:
        features = torch.from_numpy(encode_perturbed(base, batch, rows, name, mean, std, seed))
        return encoder.project_image_features(features).numpy()
    key = (encoder.fingerprint, rows, name, seed)
    if key not in _PERTURBED_CACHE:
        perturbed = perturb(batch, name, torch.Generator().manual_seed(seed), mean=mean, std=std)
        _PERTURBED_CACHE[key] = torch.cat([encoder.encode_images(chunk) for chunk in perturbed.split(32)]).numpy()
    return _PERTURBED_CACHE[key]


def paired_tables(per_query: dict[str, dict[str, pd.DataFrame]], config: EvaluateConfig) -> pd.DataFrame:
    """Paired differences between every two models on the same queries (model a minus model b)."""
    tables = []
    for model_a, model_b in itertools.combinations(sorted(per_query), 2):
        shared = sorted(set(per_query[model_a]) & set(per_query[model_b]) - {"type_prompt"})
        for task in shared:
            metric = "rank" if "rank" in per_query[model_a][task] else f"p@{max(config.ks)}"
            metrics = [metric] if metric == "rank" else [metric, "ap"]
            for name in metrics:
                table = paired_difference(
                    per_query[model_a][task], per_query[model_b][task], name,
                    groups=config.split, n_boot=config.n_boot, seed=config.seed, ks=config.ks,
                )
                table.insert(0, "task", task)
                table.insert(0, "model_b", model_b)
                table.insert(0, "model_a", model_a)
                tables.append(table)
    if not tables:
        return pd.DataFrame()
    paired = pd.concat(tables, ignore_index=True)
    paired["label_set"] = config.label_set
    paired["seed"] = config.seed
    return paired


def load_models(corpus_dir: Path, config: EvaluateConfig) -> list[ModelData]:
    indexes, problems = load_corpus_indexes(corpus_dir)
    for name, reason in problems.items():
        logger.error("Model %s left out: %s", name, reason)
    if not indexes:
        raise FileNotFoundError(
            f"No usable index under {corpus_dir}. Build one with `python -m core embed --corpus PATH --models effnet-lite0`."
        )
    models = []
    for name, index in indexes.items():
        footer = {"model": name, "weights_sha256": index.manifest["weights"]["sha256"], "label_set": config.label_set, "seed": config.seed}
        data = ModelData(name, index, footer)
        try:
            data.encoder = create_encoder(
                name,
                weights=config.weights.get(name) or default_weights(name, Path(corpus_dir).parent),
                device=config.device,
                resize_mode=index.manifest["preprocess"]["resize_mode"],
            )
            check_encoder_matches(data.encoder, index.manifest)
        except (OSError, ValueError, RuntimeError) as error:
            data.encoder = None
            data.encoder_error = str(error)
            logger.error("Model %s: encoder unavailable, so its text and texture metrics are left out: %s", name, error)
        models.append(data)
    return models


def text_pool(corpus_dir: Path, metadata: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Return the candidate rows of the text metrics: the held-out split when one exists."""
    if not (Path(corpus_dir) / SPLIT_FILE).is_file():
        return np.arange(len(metadata)), "all"
    split = load_text_split(corpus_dir)
    test_ids = set(split.loc[split["split"] == "test", "id"])
    return np.flatnonzero(metadata["id"].isin(test_ids).to_numpy()), "test"


def evaluate_corpus(corpus_dir: Path, out_dir: Path, config: EvaluateConfig) -> dict:
    """Run H1, H2 and H3 for every model of one corpus and write the tables; return the summary."""
    started = time.perf_counter()
    models = load_models(corpus_dir, config)
    tables: dict[str, list[pd.DataFrame]] = {"h1_structure": [], "h2_retrieval": [], "h3_texture": []}
    per_query: dict[str, dict[str, pd.DataFrame]] = {}
    summaries = {}
    for data in models:
        labels = prepare_labels(data.index.metadata, config)
        pool, pool_name = text_pool(corpus_dir, data.index.metadata)
        timings = {}

        clock = time.perf_counter()
        tables["h1_structure"].append(evaluate_structure(data, labels, config))
        timings["h1"] = time.perf_counter() - clock

        clock = time.perf_counter()
        retrieval, per_query[data.name] = evaluate_image_retrieval(data, labels, config)
        tables["h2_retrieval"].append(retrieval)
        if data.encoder is not None and data.encoder.has_text_tower:
            text_table, text_per_query = evaluate_text_retrieval(data, labels, pool, config)
            text_table["pool"] = pool_name
            tables["h2_retrieval"].append(text_table)
            per_query[data.name].update(text_per_query)
        timings["h2"] = time.perf_counter() - clock

        clock = time.perf_counter()
        if data.encoder is not None and config.texture_sample > 0:
            tables["h3_texture"].append(evaluate_texture(data, labels, config))
        timings["h3"] = time.perf_counter() - clock
        summaries[data.name] = model_summary(data, tables, pool_name, timings, config)

    out_dir = Path(out_dir)
    for name, parts in tables.items():
        if parts:
            write_label_set(pd.concat(parts, ignore_index=True), out_dir, name, config.label_set)
    paired = paired_tables(per_query, config)
    if not paired.empty:
        write_label_set(paired, out_dir, "h2_paired", config.label_set)
    for name, summary in summaries.items():
        suffix = "" if config.label_set == "all" else f"-{config.label_set}"
        write_json_atomic(out_dir / f"summary_{model_folder_name(name)}{suffix}.json", summary)
    logger.info("Evaluated %d models in %.1f s", len(models), time.perf_counter() - started)
    return summaries


def _pick(table: pd.DataFrame, **conditions) -> float:
    mask = np.ones(len(table), dtype=bool)
    for column, value in conditions.items():
        if column not in table.columns:
            return float("nan")
        mask &= (table[column] == value).to_numpy()
    values = table.loc[mask, "value"]
    return float(values.iloc[0]) if len(values) else float("nan")


def model_summary(data: ModelData, tables: dict, pool_name: str, timings: dict, config: EvaluateConfig) -> dict:
    """Return the headline figures of one model."""
    h1 = tables["h1_structure"][-1]
    h2 = next(
        (t for t in reversed(tables["h2_retrieval"]) if (t["model"] == data.name).all() and (t["task"] == "image_to_image").any()),
        pd.DataFrame(columns=["task", "group", "aggregation", "metric", "value"]),
    )
    k = max(config.ks)
    summary = {
        **data.footer,
        "n": int(data.index.manifest["count"]),
        "h1_ratio_common": {a: _pick(h1, attribute=a, subset="common", metric="ratio") for a in STRUCTURE_ATTRIBUTES},
        "h1_shuffled_common": {a: _pick(h1, attribute=a, subset="common", metric="shuffled_ratio") for a in STRUCTURE_ATTRIBUTES},
        f"h2_gap_err_p@{k}": {
            aggregation: _pick(h2, task="image_to_image", group="gap", aggregation=aggregation, metric=f"gap_err_p@{k}")
            for aggregation in ("pooled", "macro")
        },
        "text_pool": pool_name,
        "encoder_error": data.encoder_error,
        "timings_s": timings,
        "config": {key: value for key, value in asdict(config).items() if key not in ("split", "weights")},
        "type_split": config.split.to_dict(),
    }
    if data.encoder is not None and tables["h3_texture"] and (tables["h3_texture"][-1]["model"] == data.name).all():
        h3 = tables["h3_texture"][-1]
        summary["h3_texture_reliance"] = _pick(h3, type="all", perturbation="shuffle_mean", metric="cosine")
    return _without_nan(json.loads(json.dumps(summary, default=float)))


def _without_nan(value):
    """Replace NaN by None, so the summary is valid JSON (a measurement that could not be made)."""
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    return None if isinstance(value, float) and value != value else value


def corpus_dirs(indexes: Path) -> list[Path]:
    """Return the corpus folders under an indexes root, or the folder itself when it is one."""
    indexes = Path(indexes)
    hint = "Build indexes with `python -m core embed --corpus PATH --models effnet-lite0 --out INDEXES`."
    if not indexes.is_dir():
        raise FileNotFoundError(f"Indexes folder {indexes} does not exist. {hint}")
    if any((child / "manifest.json").is_file() for child in indexes.iterdir() if child.is_dir()):
        return [indexes]
    found = sorted(
        child for child in indexes.iterdir()
        if child.is_dir() and not child.name.startswith(".") and any((m / "manifest.json").is_file() for m in child.iterdir() if m.is_dir())
    )
    if not found:
        raise FileNotFoundError(f"No index under {indexes}. {hint}")
    return found
