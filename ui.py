"""Drawing helpers shared by the app's pages: cached loaders, query handling, charts and exports.

Only app.py, pages/ and this module import streamlit. Every number shown comes from core/ or from
the artefacts the offline job wrote (docs/ARTEFACTS.md); the app never embeds the corpus itself.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageDraw, ImageFont, ImageOps
from plotly.subplots import make_subplots

import core.encoders as encoders  # looked up at call time, so tests can replace create_encoder
from core.encoders.base import Encoder, TextTowerMissingError
from core.images import SUPPORTED_FORMATS, ImageDecodeError, load_image
from core.index import ModelIndex, list_model_dirs, load_corpus_indexes
from core.results import TABLES, read_table
from core.search import FILTER_COLUMNS, Searcher
from core.types import GROUP_COLORS, TYPE_COLORS, TypeSplit, load_split

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Paths and the commands that build what the app reads

INDEXES_ENV = "SEMGAP_INDEXES"
RESULTS_ENV = "SEMGAP_RESULTS"
EMBED_COMMAND = "python -m core embed --corpus PATH --models effnet-lite0"
EVALUATE_COMMAND = "python -m core evaluate --indexes indexes/ --out results/"
PROJECT_COMMAND = "python -m core project --indexes indexes/ --out results/"

ASSETS = Path(__file__).parent / "assets"
ACTIVE_CORPUS_KEY = "active_corpus"


def indexes_root() -> Path:
    return Path(os.environ.get(INDEXES_ENV, "indexes"))


def results_root() -> Path:
    return Path(os.environ.get(RESULTS_ENV, "results"))


def list_corpora() -> list[str]:
    """Return the corpus names that have at least one model index under indexes_root().

    Result folders do not add corpora: every label set of a corpus lives in the same result tables,
    in their label_set column, so a results/ folder without an index is no corpus of its own.
    """
    if not indexes_root().is_dir():
        return []
    names = {p.name for p in indexes_root().iterdir() if p.is_dir() and list_model_dirs(p)}
    return sorted(name for name in names if not name.startswith("."))


APP_RAN_KEY = "_semgap_app_ran"
REQUESTED_PAGE_KEY = "_semgap_requested_page"


def mark_app_run() -> None:
    """Record, for the page about to run, that app.py's navigation and sidebar ran first."""
    st.session_state[APP_RAN_KEY] = True


def page_setup(page_file: str) -> None:
    """Start a page, and send a run that skipped app.py back through it.

    Because a pages/ folder exists, Streamlit runs the first request after a server start (and
    each AppTest.switch_page) in its pages-folder mode, which runs the page file without app.py.
    app.py then opens the requested page again, inside its own navigation.
    """
    if st.session_state.pop(APP_RAN_KEY, False):
        return
    st.session_state[REQUESTED_PAGE_KEY] = page_file
    st.switch_page("app.py")


def inject_css() -> None:
    """Add the app's stylesheet (projector-sized type, result cards) to the page."""
    st.html(f"<style>{(ASSETS / 'style.css').read_text(encoding='utf-8')}</style>")


def corpus_ui() -> str | None:
    """Draw the corpus selector in the sidebar when several corpora exist, and return the choice."""
    corpora = list_corpora()
    if not corpora:
        st.session_state[ACTIVE_CORPUS_KEY] = None
        return None
    if len(corpora) == 1:
        corpus = corpora[0]
        st.sidebar.caption(f"Corpus: **{corpus}**")
    else:
        requested = st.query_params.get("corpus")
        if "corpus_choice" not in st.session_state and requested in corpora:
            st.session_state["corpus_choice"] = requested
        corpus = st.sidebar.selectbox("Corpus", corpora, key="corpus_choice")
    st.session_state[ACTIVE_CORPUS_KEY] = corpus
    return corpus


def require_corpus() -> str:
    """Return the active corpus, or explain how to build one and stop the page."""
    corpus = st.session_state.get(ACTIVE_CORPUS_KEY)
    if corpus:
        return corpus
    st.info(
        f"No corpus with a model index found under `{indexes_root()}`. Build the indexes with "
        f"`{EMBED_COMMAND}`, then the results with `{EVALUATE_COMMAND}`."
    )
    st.stop()


# ---------------------------------------------------------------------------------------------
# Cached loaders


def _latest_mtime(paths: Sequence[Path]) -> float:
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


@st.cache_resource(show_spinner="Loading indexes…")
def _load_indexes(corpus_dir: str, stamp: float) -> tuple[dict[str, ModelIndex], dict[str, str]]:
    # stamp is part of the cache key, so rebuilt artefacts are read again.
    return load_corpus_indexes(Path(corpus_dir), mmap=True)


def load_indexes(corpus: str) -> tuple[dict[str, ModelIndex], dict[str, str]]:
    """Return the usable indexes of a corpus by model, and the reason each other model is unusable."""
    corpus_dir = indexes_root() / corpus
    manifests = [d / "manifest.json" for d in list_model_dirs(corpus_dir)]
    try:
        return _load_indexes(str(corpus_dir), _latest_mtime(manifests))
    except Exception as error:  # a damaged file of any kind must not take the app down
        logger.exception("Loading the indexes of %s failed", corpus_dir)
        return {}, {"(all models)": f"{type(error).__name__}: {error}"}


def require_indexes(corpus: str) -> dict[str, ModelIndex]:
    """Return the loaded indexes. Warn about unusable ones, and stop the page when none loaded."""
    indexes, problems = load_indexes(corpus)
    for model, reason in problems.items():
        st.warning(f"Model **{model}** cannot be used: {reason}")
    if not indexes:
        st.info(
            f"No usable index for corpus `{corpus}` under `{indexes_root()}`. Build one with "
            f"`{EMBED_COMMAND}` (add more models with `--models effnet-lite0,resnet50,clip-vit-b-32`)."
        )
        st.stop()
    return {name: indexes[name] for name in sort_models(indexes)}


@st.cache_resource(show_spinner="Loading the encoder…")
def load_encoder(model: str, resize_mode: str) -> tuple[Encoder | None, str]:
    """Return the model's encoder, or None and the reason it is unavailable (missing weights, ...)."""
    try:
        return encoders.create_encoder(model, resize_mode=resize_mode), ""
    except Exception as error:  # any failure means "unavailable": corpus queries still work
        logger.warning("Encoder %s unavailable: %s", model, error)
        return None, str(error)


def encoder_for(model_index: ModelIndex) -> tuple[Encoder | None, str]:
    resize_mode = model_index.manifest.get("preprocess", {}).get("resize_mode", "center_crop")
    return load_encoder(model_index.model, resize_mode)


@st.cache_data(show_spinner=False)
def _read_parquet(path: str, stamp: float) -> pd.DataFrame:
    return pd.read_parquet(path)


def load_table(corpus: str, name: str) -> pd.DataFrame | None:
    """Return results/<corpus>/<name>.parquet, or None when it has not been built."""
    path = results_root() / corpus / f"{name}.parquet"
    if name not in TABLES:
        read_table(path.parent, name)  # raises the error that lists the valid tables
    if not path.is_file():
        return None
    return _read_parquet(str(path), path.stat().st_mtime)


def load_corpus_table(corpus: str) -> pd.DataFrame | None:
    """Return the corpus table: indexes/<corpus>/corpus.parquet, else a model's metadata."""
    path = indexes_root() / corpus / "corpus.parquet"
    if path.is_file():
        return _read_parquet(str(path), path.stat().st_mtime)
    indexes, _ = load_indexes(corpus)
    return next(iter(indexes.values())).metadata if indexes else None


def missing_results_info(table_name: str) -> None:
    command = PROJECT_COMMAND if table_name == "projections" else EVALUATE_COMMAND
    st.info(f"No `{table_name}` table for this corpus under `{results_root()}`. Build it with `{command}`.")


# ---------------------------------------------------------------------------------------------
# Models: display order and names

MODEL_ORDER = ("effnet-lite0", "effnet-lite0+minilm", "resnet50", "clip-vit-b-32")
MODEL_SHORT_NAMES = {  # for narrow places such as the sidebar's model chips
    "effnet-lite0": "EffNet-L0",
    "effnet-lite0+minilm": "EffNet-L0 + MiniLM",
    "resnet50": "ResNet-50",
    "clip-vit-b-32": "CLIP B/32",
}
MODEL_NAMES = {
    "effnet-lite0": "EfficientNet-Lite0",
    "effnet-lite0+minilm": "EfficientNet-Lite0 + MiniLM",
    "resnet50": "ResNet-50",
    "clip-vit-b-32": "CLIP ViT-B/32",
}
DEFAULT_MODELS = ("resnet50", "clip-vit-b-32")


def sort_models(models: Sequence[str]) -> list[str]:
    """Order models as every page shows them: the study's models first, then by name."""
    rank = {name: i for i, name in enumerate(MODEL_ORDER)}
    return sorted(set(models), key=lambda m: (rank.get(m, len(rank)), m))


def model_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def short_model_name(model: str) -> str:
    return MODEL_SHORT_NAMES.get(model) or model_name(model)


def default_models(available: Sequence[str]) -> list[str]:
    """ResNet-50 and CLIP when both are built, otherwise the first two built models."""
    if all(m in available for m in DEFAULT_MODELS):
        return list(DEFAULT_MODELS)
    return list(sort_models(available))[:2]


def has_text_tower(model_index: ModelIndex) -> bool:
    return bool(model_index.manifest.get("has_text_tower"))


# ---------------------------------------------------------------------------------------------
# Art types and colours

SPLIT: TypeSplit = load_split()
OTHER_COLORS = (
    "#88CCEE", "#CC6677", "#DDCC77", "#117733", "#332288", "#AA4499",
    "#44AA99", "#999933", "#882255", "#661100", "#6699CC", "#888888",
)  # Paul Tol's colour-blind-safe "muted" set, for schools, timeframes and styles
UNKNOWN_COLOR = TYPE_COLORS[""]
UNTYPED = "untyped"  # the label of a painting without an art type, on every page


def type_color(art_type: str) -> str:
    return TYPE_COLORS.get(art_type or "", TYPE_COLORS["other"])


def group_color(group: str) -> str:
    """Return the colour of "additive" or "narrative", or the untyped grey for anything else."""
    return GROUP_COLORS.get(group) or UNKNOWN_COLOR


def empty_label(column: str) -> str:
    """Return how a legend names the paintings with no value in a metadata column."""
    return {"type": UNTYPED, "type_group": "neither group"}.get(column, "unknown")


def ordered_types(present: Sequence[str]) -> list[str]:
    """Additive types, then narrative types, then any other type, keeping only those present."""
    present = [t for t in dict.fromkeys(present) if t]
    known = [t for t in SPLIT.types if t in present]
    return known + sorted(t for t in present if t not in known)


def category_colors(column: str, values: Sequence[str]) -> dict[str, str]:
    """Return a colour per value: the shared palettes for types and groups, Tol's set otherwise."""
    if column == "type":
        return {v: type_color(v) for v in values}
    if column == "type_group":
        return {v: group_color(v) for v in values}
    named = sorted(v for v in values if v)
    colors = {v: OTHER_COLORS[i % len(OTHER_COLORS)] for i, v in enumerate(named)}
    colors[""] = UNKNOWN_COLOR
    return colors


def type_chips_html(types: Sequence[str]) -> str:
    chips = "".join(
        f'<span class="sg-chip"><span class="sg-dot" style="background:{type_color(t)}"></span>{html.escape(t)}</span>'
        for t in types
    )
    return f"<div>{chips}</div>"


# ---------------------------------------------------------------------------------------------
# Uploads

MAX_UPLOAD_MB = 20
UPLOAD_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "tif", "tiff")
FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "TIFF": "TIFF"}


class UploadError(ValueError):
    """An uploaded file the app cannot use as a query. The message names the cause and the fix."""


def sniff_format(data: bytes) -> str | None:
    """Return the supported format whose signature starts data ("JPEG", "PNG", ...), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def read_upload(name: str, data: bytes, max_mb: float = MAX_UPLOAD_MB) -> Image.Image:
    """Decode an uploaded painting into an RGB image, or raise UploadError with a clear message.

    The message depends on the cause: a file of a supported format that fails to decode is damaged
    and should be exported again, while any other file gets the list of supported formats.
    """
    names = [FORMAT_NAMES.get(f, f) for f in SUPPORTED_FORMATS]
    formats = ", ".join(names[:-1]) + f" or {names[-1]}"
    size_mb = len(data) / 1e6
    if size_mb > max_mb:
        raise UploadError(
            f"{name} is {size_mb:.1f} MB, above the {max_mb:g} MB limit. Upload a smaller file, "
            "for example the painting exported as a JPEG of about 2000 pixels."
        )
    try:
        with Image.open(io.BytesIO(data)) as header:
            detected = header.format
    except Exception:  # not identifiable: load_image below names the cause
        detected = None
    if detected is not None and detected not in SUPPORTED_FORMATS:
        raise UploadError(f"{name} is a {detected} file. Supported formats: {formats}.")
    try:
        return load_image(data)
    except ImageDecodeError as error:
        signature = detected if detected in SUPPORTED_FORMATS else sniff_format(data)
        if signature is not None:
            raise UploadError(
                f"{name} could not be read: it starts like a {FORMAT_NAMES.get(signature, signature)} file, but "
                f"decoding failed ({error.reason}). The file looks damaged or incomplete; export it again from its source."
            ) from error
        raise UploadError(
            f"{name} could not be read as an image ({error.reason}). Supported formats: {formats}."
        ) from error


@st.cache_data(show_spinner=False, max_entries=8)
def decode_upload(name: str, data: bytes) -> Image.Image:
    """read_upload, cached so that reruns of the page do not decode the file again."""
    return read_upload(name, data)


# ---------------------------------------------------------------------------------------------
# Search queries, their URL form and their results

SEARCH_MODES = ("painting", "text", "upload")
MODE_LABELS = {"painting": "Corpus painting", "text": "Text", "upload": "Upload a painting"}
FILTER_LABELS = {"type": "Type", "type_group": "Additive / narrative", "school": "School", "timeframe": "Timeframe", "style": "Style"}
K_RANGE = (1, 50)
DEFAULT_K = 10
FINDER_LIMIT = 200  # paintings listed by the finder at once, so typing narrows the list


@dataclass
class Query:
    """A user's query to the models: a corpus painting, a text or an uploaded image."""

    kind: str  # one of SEARCH_MODES
    label: str  # the painting's title, the text or the file name
    corpus_id: str = ""  # for kind "painting"
    text: str = ""  # for kind "text"
    image: Image.Image | None = None  # the query image for "painting" and "upload"
    type: str = ""  # the query's art type when known: marks matching results, gives precision@k
    details: list[str] = field(default_factory=list)  # caption lines: artist, type, year


@dataclass
class ModelAnswer:
    """One model's column on the Search page: its top-k, or the reason it has none."""

    model: str
    hits: pd.DataFrame | None  # SearchResult.hits, or None
    message: str = ""  # why hits is None
    level: str = "info"  # "info" (expected, e.g. no text tower) or "warning" (something failed)


SEARCH_PARAMS_WARNING_KEY = "search_params_invalid"


def search_params_to_state(params: Mapping[str, str | list[str]], models: Sequence[str], filter_options: Mapping[str, Sequence[str]]) -> dict:
    """Translate URL query parameters into Search widget values, dropping invalid values.

    Parameters: query ("id:<corpus id>" or "text:<text>"), models (comma-separated), k, and one
    parameter per filter column (comma-separated values).
    """
    def single(key: str) -> str:
        value = params.get(key, "")
        return value[-1] if isinstance(value, list) and value else str(value or "")

    state: dict = {}
    query = single("query")
    if query.startswith("id:") and len(query) > 3:
        state.update(search_mode="painting", search_painting=query[3:])
    elif query.startswith("text:") and query[5:].strip():
        state.update(search_mode="text", search_text=query[5:])
    chosen = [m for m in single("models").split(",") if m in models]
    if chosen:
        state["search_models"] = chosen
    if single("k").isdigit():
        state["search_k"] = min(max(int(single("k")), K_RANGE[0]), K_RANGE[1])
    for column in FILTER_COLUMNS:
        values = [v for v in single(column).split(",") if v in filter_options.get(column, ())]
        if values:
            state[f"search_filter_{column}"] = values
    return state


def search_state_to_params(query: Query | None, models: Sequence[str], k: int, filters: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Return the URL query parameters of a search. An uploaded image has no URL form."""
    params: dict[str, str] = {}
    if query is not None and query.kind == "painting":
        params["query"] = f"id:{query.corpus_id}"
    elif query is not None and query.kind == "text":
        params["query"] = f"text:{query.text}"
    params["models"] = ",".join(models)
    params["k"] = str(k)
    for column, values in filters.items():
        if values:
            params[column] = ",".join(values)
    return params


def invalid_search_params(
    params: Mapping[str, str | list[str]], state: Mapping, corpus_ids: set[str], k_range: tuple[int, int] = None
) -> list[str]:
    """Describe the URL parameters that `search_params_to_state` dropped or changed, for a warning."""
    k_range = k_range or K_RANGE
    problems = []
    for key, value in params.items():
        text = value[-1] if isinstance(value, list) and value else str(value or "")
        if key == "query":
            corpus_id = state.get("search_painting")
            if "search_mode" not in state:
                problems.append(f"query={text!r} (expected id:<corpus id> or text:<words>)")
            elif corpus_id is not None and corpus_id not in corpus_ids:
                problems.append(f"query={text!r} (no painting with that id in this corpus)")
        elif key == "models" and "search_models" not in state:
            problems.append(f"models={text!r} (none of them is built)")
        elif key == "k" and (not text.isdigit() or not k_range[0] <= int(text) <= k_range[1]):
            problems.append(f"k={text!r} (expected {k_range[0]} to {k_range[1]})")
        elif key in FILTER_COLUMNS and f"search_filter_{key}" not in state:
            problems.append(f"{key}={text!r} (no such value in this corpus)")
    return problems


def apply_search_params(models: Sequence[str], filter_options: Mapping[str, Sequence[str]], corpus_ids: set[str] = frozenset()) -> None:
    """On the first run of the Search page in a session, set its widgets from the URL.

    Parameters that cannot be used are listed under SEARCH_PARAMS_WARNING_KEY for the page to show.
    """
    if st.session_state.get("search_params_applied"):
        return
    st.session_state["search_params_applied"] = True
    params = {key: st.query_params.get_all(key) for key in st.query_params.keys()}
    state = search_params_to_state(params, models, filter_options)
    st.session_state[SEARCH_PARAMS_WARNING_KEY] = invalid_search_params(params, state, set(corpus_ids))
    for key, value in state.items():
        st.session_state[key] = value


def write_search_params(query: Query | None, models: Sequence[str], k: int, filters: Mapping[str, Sequence[str]]) -> None:
    params = search_state_to_params(query, models, k, filters)
    if len(list_corpora()) > 1:
        params["corpus"] = st.session_state.get(ACTIVE_CORPUS_KEY) or ""
    if dict(st.query_params.to_dict()) != params:
        st.query_params.from_dict(params)


def filter_options(metadata: pd.DataFrame) -> dict[str, list[str]]:
    """Return the non-empty values of each filter column, types in the split's order."""
    options = {}
    for column in FILTER_COLUMNS:
        if column not in metadata.columns:
            continue
        values = [v for v in metadata[column].fillna("").astype(str).unique() if v]
        options[column] = ordered_types(values) if column == "type" else sorted(values)
    return options


def active_filters(filters: Mapping[str, Sequence[str]]) -> dict[str, list[str]] | None:
    chosen = {column: list(values) for column, values in filters.items() if values}
    return chosen or None


def filter_mask(metadata: pd.DataFrame, filters: Mapping[str, Sequence[str]] | None) -> np.ndarray:
    """Return the rows of metadata that pass every filter, as Searcher applies them."""
    mask = np.ones(len(metadata), dtype=bool)
    for column, values in (filters or {}).items():
        if values:
            mask &= metadata[column].astype(str).isin([str(v) for v in values]).to_numpy()
    return mask


def painting_label(row: pd.Series) -> str:
    """Return "Title — Artist (year)" for finders and captions."""
    title = str(row.get("title") or "") or str(row.get("id"))
    artist = str(row.get("artist") or "")
    year = row.get("year")
    year_text = f" ({int(year)})" if year is not None and not pd.isna(year) else ""
    return f"{title} — {artist}{year_text}" if artist else f"{title}{year_text}"


def find_paintings(metadata: pd.DataFrame, text: str, limit: int = FINDER_LIMIT) -> pd.DataFrame:
    """Return up to `limit` rows whose title or artist contains every word of `text`."""
    if not text.strip():
        return metadata.head(limit)
    haystack = (metadata["title"].fillna("").astype(str) + " " + metadata["artist"].fillna("").astype(str)).str.lower()
    mask = np.ones(len(metadata), dtype=bool)
    for word in text.lower().split():
        mask &= haystack.str.contains(word, regex=False).to_numpy()
    return metadata[mask].head(limit)


def pick_random_painting(ids: Sequence[str]) -> None:
    """Button callback: query a random corpus painting."""
    st.session_state["search_painting"] = random.choice(list(ids))
    st.session_state["search_mode"] = "painting"
    st.session_state["search_finder"] = ""


def query_details(row: pd.Series) -> list[str]:
    lines = [str(row.get("artist") or "unknown artist")]
    year = row.get("year")
    if year is not None and not pd.isna(year):
        lines.append(str(int(year)))
    lines.append(f"type: {row.get('type') or UNTYPED}")
    return lines


def painting_query(metadata: pd.DataFrame, corpus_id: str) -> Query:
    row = metadata.loc[metadata["id"] == corpus_id].iloc[0]
    image = None
    try:
        image = load_image(str(row["image_path"]))
    except ImageDecodeError as error:
        logger.warning("Query image %s unreadable: %s", corpus_id, error)
    return Query("painting", str(row.get("title") or corpus_id), corpus_id=corpus_id, image=image,
                 type=str(row.get("type") or ""), details=query_details(row))


def answer_query(query: Query, indexes: Mapping[str, ModelIndex], models: Sequence[str], k: int,
                 filters: Mapping[str, Sequence[str]] | None) -> list[ModelAnswer]:
    """Run the query in every chosen model. A model that cannot run it gets the reason instead."""
    text_models = [m for m, index in indexes.items() if has_text_tower(index)]
    return [_answer_one(query, indexes[model], k, filters, text_models) for model in models]


def _answer_one(query: Query, model_index: ModelIndex, k: int, filters, text_models: Sequence[str]) -> ModelAnswer:
    model = model_index.model
    if query.kind == "painting":
        try:
            return ModelAnswer(model, Searcher(model_index).by_id(query.corpus_id, k, filters).hits)
        except KeyError as error:
            return ModelAnswer(model, None, f"{error.args[0]} Rebuild it with `{EMBED_COMMAND}`.", "warning")

    if query.kind == "text" and not has_text_tower(model_index):
        return ModelAnswer(model, None, text_tower_message(model, text_models))
    encoder, reason = encoder_for(model_index)
    if encoder is None:
        return ModelAnswer(
            model, None,
            f"The {model} encoder is unavailable, so it cannot encode this query ({reason}). "
            "Queries by corpus painting still work from the stored embeddings.",
            "warning",
        )
    searcher = Searcher(model_index, encoder)
    try:
        if query.kind == "text":
            return ModelAnswer(model, searcher.by_text(query.text, k, filters).hits)
        return ModelAnswer(model, searcher.by_image(query.image, k, filters).hits)
    except TextTowerMissingError:
        return ModelAnswer(model, None, text_tower_message(model, text_models))
    except Exception as error:  # shown in the model's column, and the other models still return results
        logger.exception("Query failed in %s", model)
        return ModelAnswer(model, None, f"The query failed in {model}: {error}", "warning")


def text_tower_message(model: str, text_models: Sequence[str]) -> str:
    if text_models:
        return (
            f"{model} has no text tower, so it cannot answer a text query. "
            f"Models that can: {', '.join(text_models)}."
        )
    return (
        f"{model} has no text tower, so it cannot answer a text query, and no built model has one. "
        "Build CLIP with `python -m core embed --corpus PATH --models clip-vit-b-32`, or train a text tower "
        f"with `python -m core align --model {model}`."
    )


def precision_at_k(hits: pd.DataFrame, query_type: str) -> tuple[float, int]:
    """Return the share of hits with the query's type and their count."""
    if hits is None or hits.empty or not query_type:
        return float("nan"), 0
    matches = int((hits["type"].astype(str) == query_type).sum())
    return matches / len(hits), matches


def chance_rate(metadata: pd.DataFrame, query_type: str, filters, exclude_id: str = "") -> float:
    """Return the share of the query's type among the candidates: precision@k of a random ranking."""
    mask = filter_mask(metadata, filters)
    if exclude_id:
        mask &= (metadata["id"] != exclude_id).to_numpy()
    if not mask.any() or not query_type:
        return float("nan")
    return float((metadata.loc[mask, "type"].astype(str) == query_type).mean())


# ---------------------------------------------------------------------------------------------
# Result cards (HTML) and thumbnails

THUMBNAIL_PX = 256


@st.cache_data(show_spinner=False, max_entries=4096)
def thumbnail_uri(path: str, size: int = THUMBNAIL_PX) -> str:
    """Return a JPEG data URI of the image at path, or "" when it cannot be read."""
    try:
        image = load_image(path)
    except ImageDecodeError as error:
        logger.warning("Thumbnail of %s unavailable: %s", path, error)
        return ""
    return image_uri(image, size)


def image_uri(image: Image.Image, size: int = THUMBNAIL_PX) -> str:
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def result_cards_html(hits: pd.DataFrame, query_type: str = "") -> str:
    """Return the hits as a grid of cards. Hits of the query's type get a border in the type colour and a ✓."""
    cards = []
    for hit in hits.itertuples(index=False):
        art_type = str(getattr(hit, "type", "") or "")
        match = bool(query_type) and art_type == query_type
        border = type_color(art_type) if match else "#d0d0d0"
        year = getattr(hit, "year", None)
        year_text = f" · {int(year)}" if year is not None and not pd.isna(year) else ""
        source = thumbnail_uri(str(hit.image_path))
        image = f'<img src="{source}" alt="{html.escape(str(hit.title))}">' if source else '<div class="sg-missing">image unavailable</div>'
        badge = ' <span class="sg-match" title="same type as the query">✓</span>' if match else ""
        cards.append(
            f'<div class="sg-card" style="border-color:{border}">{image}'
            f'<div class="sg-rank">#{int(hit.rank)} · similarity {float(hit.score):.2f}</div>'
            f'<div class="sg-title">{html.escape(str(hit.title) or str(hit.id))}</div>'
            f'<div class="sg-meta">{html.escape(str(hit.artist) or "unknown artist")}{year_text}</div>'
            f'<div class="sg-type"><span class="sg-dot" style="background:{type_color(art_type)}"></span>'
            f'{html.escape(art_type or UNTYPED)}{badge}</div></div>'
        )
    return f'<div class="sg-grid">{"".join(cards)}</div>'


def show_answers(answers: Sequence[ModelAnswer], query: Query, metadata: pd.DataFrame, filters, k: int) -> None:
    """Draw one column per model: its name, precision@k for typed queries, and the result cards."""
    chance = chance_rate(metadata, query.type, filters, query.corpus_id) if query.type else float("nan")
    for column, answer in zip(st.columns(len(answers), gap="medium"), answers):
        with column:
            st.subheader(model_name(answer.model))
            st.caption(f"`{answer.model}`")
            if answer.hits is None and answer.level == "warning":
                st.warning(answer.message)
                continue
            if answer.hits is None:
                st.info(answer.message)
                continue
            if answer.hits.empty:
                st.info("No painting passes the filters.")
                continue
            if query.type:
                precision, matches = precision_at_k(answer.hits, query.type)
                st.metric(
                    f"precision@{k}", f"{precision:.2f}",
                    help=f"{matches} of the top {len(answer.hits)} share the query's type ({query.type}); "
                    f"a random ranking scores {chance:.2f} on average.",
                )
                st.caption(f"{matches} of {len(answer.hits)} are {query.type} · chance {chance:.2f}")
            st.html(result_cards_html(answer.hits, query.type))


# ---------------------------------------------------------------------------------------------
# The result grid as one PNG, for slides

GRID_THUMB = 150
GRID_COLUMN_WIDTH = 520
GRID_QUERY_WIDTH = 300
GRID_MARGIN = 24


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu"):
        path = Path(folder) / name
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, max_lines: int = 2) -> list[str]:
    """Break text into lines no wider than width pixels, ending in "…" when cut."""
    words, lines, line = text.split(), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and draw.textlength(lines[-1] + "…", font=font) > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += "…"
    return lines or [""]


def compose_result_grid(query: Query, answers: Sequence[ModelAnswer], k: int, credit: str) -> bytes:
    """Draw the query and each model's top-k side by side with captions and image credits, as PNG bytes."""
    row_height = GRID_THUMB + 16
    rows = max([len(a.hits) for a in answers if a.hits is not None] + [1])
    width = GRID_MARGIN * 2 + GRID_QUERY_WIDTH + len(answers) * (GRID_COLUMN_WIDTH + GRID_MARGIN)
    height = GRID_MARGIN + 110 + rows * row_height + 90
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    title_font, text_font, small_font = _font(26, bold=True), _font(18), _font(16)

    _draw_query_panel(canvas, draw, query, (GRID_MARGIN, GRID_MARGIN), title_font, text_font)
    x = GRID_MARGIN * 2 + GRID_QUERY_WIDTH
    for answer in answers:
        _draw_model_column(canvas, draw, answer, query.type, k, (x, GRID_MARGIN), title_font, text_font)
        x += GRID_COLUMN_WIDTH + GRID_MARGIN

    credit_y = height - 80
    draw.line([(GRID_MARGIN, credit_y - 10), (width - GRID_MARGIN, credit_y - 10)], fill="#999999", width=1)
    for i, line in enumerate(_wrap(draw, credit, small_font, width - 2 * GRID_MARGIN, max_lines=3)):
        draw.text((GRID_MARGIN, credit_y + i * 20), line, fill="#333333", font=small_font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _draw_query_panel(canvas, draw, query: Query, origin, title_font, text_font) -> None:
    x, y = origin
    draw.text((x, y), "Query", fill="black", font=title_font)
    y += 40
    if query.image is not None:
        thumb = ImageOps.contain(query.image, (GRID_QUERY_WIDTH, GRID_QUERY_WIDTH))
        border = type_color(query.type) if query.type else "#d0d0d0"
        draw.rectangle([x - 4, y - 4, x + thumb.width + 3, y + thumb.height + 3], outline=border, width=4)
        canvas.paste(thumb, (x, y))
        y += thumb.height + 12
    label = f"“{query.text}”" if query.kind == "text" else query.label
    for line in _wrap(draw, label, text_font, GRID_QUERY_WIDTH, max_lines=4):
        draw.text((x, y), line, fill="black", font=text_font)
        y += 24
    for detail in query.details:
        for line in _wrap(draw, detail, text_font, GRID_QUERY_WIDTH):
            draw.text((x, y), line, fill="#404040", font=text_font)
            y += 24


def _draw_model_column(canvas, draw, answer: ModelAnswer, query_type: str, k: int, origin, title_font, text_font) -> None:
    x, y = origin
    draw.text((x, y), model_name(answer.model), fill="black", font=title_font)
    y += 36
    if answer.hits is None:
        for line in _wrap(draw, answer.message, text_font, GRID_COLUMN_WIDTH, max_lines=6):
            draw.text((x, y), line, fill="#404040", font=text_font)
            y += 24
        return
    if query_type:
        precision, matches = precision_at_k(answer.hits, query_type)
        draw.text((x, y), f"precision@{k} = {precision:.2f} ({matches} of {len(answer.hits)} {query_type})", fill="#202020", font=text_font)
    y += 34
    text_x = x + GRID_THUMB + 14
    text_width = GRID_COLUMN_WIDTH - GRID_THUMB - 14
    for hit in answer.hits.itertuples(index=False):
        art_type = str(hit.type or "")
        match = bool(query_type) and art_type == query_type
        _paste_thumbnail(canvas, draw, str(hit.image_path), (x, y), type_color(art_type) if match else "#d0d0d0")
        lines = [(f"#{int(hit.rank)}  similarity {float(hit.score):.2f}", "black")]
        lines += [(line, "black") for line in _wrap(draw, str(hit.title or hit.id), text_font, text_width)]
        year = f", {int(hit.year)}" if hit.year is not None and not pd.isna(hit.year) else ""
        lines += [(line, "#404040") for line in _wrap(draw, f"{hit.artist or 'unknown artist'}{year}", text_font, text_width, 1)]
        lines.append((f"{art_type or UNTYPED}{' ✓' if match else ''}", "#202020"))
        for i, (line, color) in enumerate(lines[:5]):
            draw.text((text_x, y + i * 25), line, fill=color, font=text_font)
        y += GRID_THUMB + 16


def _paste_thumbnail(canvas, draw, path: str, origin, border: str) -> None:
    x, y = origin
    draw.rectangle([x, y, x + GRID_THUMB, y + GRID_THUMB], outline=border, width=4, fill="#f2f2f2")
    try:
        thumb = ImageOps.contain(load_image(path), (GRID_THUMB - 10, GRID_THUMB - 10))
    except ImageDecodeError:
        draw.text((x + 10, y + GRID_THUMB // 2), "unavailable", fill="#404040", font=_font(16))
        return
    canvas.paste(thumb, (x + (GRID_THUMB - thumb.width) // 2, y + (GRID_THUMB - thumb.height) // 2))


def corpus_credit(indexes: Mapping[str, ModelIndex]) -> str:
    """Return the image credit of a result grid: the corpus name, never its local folder."""
    manifest = next(iter(indexes.values())).manifest
    corpus = manifest.get("corpus", {})
    name = corpus.get("name") or Path(str(corpus.get("root", ""))).name or "unknown"
    return f"Image credits: each painting is captioned with its artist and title. Reproductions from the corpus “{name}”."


# ---------------------------------------------------------------------------------------------
# Charts: one projector-sized style, a footer naming what was measured, PNG/SVG/CSV downloads

FONT_FAMILY = "DejaVu Sans, Arial, sans-serif"
FONT_PX = 20  # body text of every chart
TICK_PX = 18  # the smallest text on a chart: projector-readable from the back of a room
TITLE_PX = 24
CHART_HEIGHT = 560
EXPORT_WIDTH = 1280  # pixels of an exported chart: the width of a 1280x800 projector
INK = "#222222"
NEUTRAL_BAR = "#4D4D4D"  # model-level bars: no type or group colour applies
BASELINE_COLOR = "#9E9E9E"
FOOTER_CHARS = 80  # characters per footer line: about 760 pixels at TICK_PX
HALF_FOOTER_CHARS = 48  # the same for a chart in one of two side-by-side columns at 1440 pixels
MODEBAR_PX = 34  # the row at the top of a chart that Plotly's modebar icons cover
ROTATED_TICKS = 125  # pixels under the plot for type names rotated by 35 degrees
PLAIN_TICKS = 85  # pixels under the plot for one line of tick labels and an axis title
REFERENCE_GAP = (1.4, 3.8)  # gap factors of the reference study, across all its models
GAP_LABEL_MARGIN = 150  # pixels right of the gap chart for the labels of its reference line and band


def footer_text(table: pd.DataFrame, extra: Sequence[str] = (), width: int = FOOTER_CHARS) -> str:
    """Return 'model (checksum) · label set · n · seed', then the extra parts, for the rows a chart shows.

    Lines break between parts after about `width` characters, so narrow charts pass a smaller width.
    """
    parts = []
    if "model" in table.columns:
        models = table[["model", "weights_sha256"]].drop_duplicates() if "weights_sha256" in table.columns else table[["model"]].drop_duplicates()
        parts.append(", ".join(
            f"{row.model} ({str(getattr(row, 'weights_sha256', '') or 'no checksum')[:12]})"
            for row in models.itertuples(index=False)
        ))
    elif {"model_a", "model_b"} <= set(table.columns):
        pairs = table[["model_a", "model_b"]].drop_duplicates()
        parts.append(", ".join(f"{row.model_a} − {row.model_b}" for row in pairs.itertuples(index=False)))
    if "label_set" in table.columns:
        parts.append("label set " + ", ".join(sorted(table["label_set"].astype(str).unique())))
    if "n" in table.columns and len(table):
        low, high = int(table["n"].min()), int(table["n"].max())
        parts.append(f"n = {low:,}" if low == high else f"n = {low:,}–{high:,} per bar")
    if "seed" in table.columns:
        parts.append("seed " + ", ".join(str(s) for s in sorted(table["seed"].unique())))
    text = " · ".join(parts + list(extra))
    return _break_line(text, width)


def _break_line(text: str, width: int) -> str:
    """Insert <br> between ' · ' parts so that no footer line runs past about `width` characters."""
    lines, line = [], ""
    for part in text.split(" · "):
        candidate = f"{line} · {part}" if line else part
        if len(candidate) > width and line:
            lines.append(line)
            line = part
        else:
            line = candidate
    lines.append(line)
    return "<br>".join(lines)


def style_figure(fig: go.Figure, title: str, footer: str, height: int = CHART_HEIGHT, tick_space: int | None = None) -> go.Figure:
    """Apply the projector style: large type, white background, title on top, footer below.

    tick_space is the room in pixels under the plot for x tick labels and the axis title; by
    default more when the labels are rotated. The footer sits below it, so the two never overlap.
    """
    if tick_space is None:
        rotated = any(axis.tickangle not in (None, 0) for axis in fig.select_xaxes())
        tick_space = ROTATED_TICKS if rotated else PLAIN_TICKS
    footer_lines = footer.count("<br>") + 1
    # The title starts below the modebar row, so the icons never cover it. A figure may set a wider
    # right margin before styling, as gap_figure does for the labels of its reference lines.
    right = fig.layout.margin.r if fig.layout.margin.r is not None else 30
    fig.update_layout(
        template="plotly_white",
        title=dict(text=title, font=dict(size=TITLE_PX, color=INK), x=0.01, xanchor="left", y=1, yanchor="top",
                   yref="container", pad=dict(t=MODEBAR_PX)),
        font=dict(family=FONT_FAMILY, size=FONT_PX, color=INK),
        legend=dict(font=dict(size=TICK_PX), orientation="h", yanchor="top", y=1 - (52 + MODEBAR_PX) / height,
                    yref="container", x=1, xanchor="right"),
        hoverlabel=dict(font=dict(size=TICK_PX)),
        height=height,
        margin=dict(l=80, r=right, t=(80 if fig.layout.showlegend is False else 120) + MODEBAR_PX,
                    b=tick_space + 26 * footer_lines + 16),
    )
    fig.update_xaxes(tickfont=dict(size=TICK_PX, color=INK), title_font=dict(size=FONT_PX), automargin=False)
    fig.update_yaxes(tickfont=dict(size=TICK_PX, color=INK), title_font=dict(size=FONT_PX), automargin=True, zeroline=True)
    fig.update_annotations(font_size=FONT_PX)
    fig.add_annotation(
        text=footer, xref="paper", yref="paper", x=0, y=0, yshift=-tick_space, yanchor="top", xanchor="left",
        showarrow=False, align="left", font=dict(size=TICK_PX, color="#444444"),
    )
    return fig


def safe_file_name(name: str) -> str:
    """Return name with every character other than letters, digits, '.', '_' and '-' replaced by '-'.

    Task names such as "text_to_image:title" contain ':', which Windows does not allow in file names.
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("@", "at")).strip("-")


def plotly_config(name: str) -> dict:
    """Modebar settings: the camera button saves a 2x PNG named after the chart."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": "png", "filename": name, "scale": 2},
        "modeBarButtonsToRemove": ["lasso2d", "select2d"],
    }


def export_problem() -> str:
    """Return why server-side PNG/SVG export cannot work here, or "" when it can."""
    if os.environ.get("BROWSER_PATH") or any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")):
        return ""
    return "PNG and SVG downloads need Chromium for kaleido (Debian: `apt-get install chromium`); use the chart's camera button instead."


def figure_bytes(figure_json: str, image_format: str) -> bytes:
    """Render a figure (as JSON) to PNG or SVG with kaleido, fully offline.

    MathJax is switched off because kaleido loads it from a CDN otherwise, and the browser's own
    requests go to a closed loopback port, so rendering never reaches the network.
    """
    import kaleido

    figure = json.loads(figure_json)
    layout = figure.get("layout", {})
    opts = {"format": image_format, "width": layout.get("width") or EXPORT_WIDTH, "height": layout.get("height") or CHART_HEIGHT}
    if image_format == "png":
        opts["scale"] = 2
    return kaleido.calc_fig_sync(figure, opts=opts, kopts={"mathjax": False, "proxy_server": "127.0.0.1:9"})


def show_figure(
    fig: go.Figure, table: pd.DataFrame, name: str, key: str,
    on_select: Callable[[], None] | None = None, export_fig: go.Figure | None = None,
) -> None:
    """Draw a chart with its PNG, SVG and CSV downloads and an expander with its rows.

    With on_select, clicking a point calls it, and the selection is in st.session_state[key].
    export_fig, when given, is what the PNG and SVG downloads render instead of fig.
    """
    name = safe_file_name(name)
    if on_select is None:
        st.plotly_chart(fig, config=plotly_config(name), key=key, theme=None)
    else:
        st.plotly_chart(fig, config=plotly_config(name), key=key, theme=None, on_select=on_select, selection_mode="points")
    figure_json = (export_fig or fig).to_json()
    problem = export_problem()
    downloads = st.container(horizontal=True)
    downloads.download_button(
        "PNG", data=lambda: figure_bytes(figure_json, "png"), file_name=f"{name}.png", mime="image/png",
        key=f"png-{key}", disabled=bool(problem), help=problem or "Download the chart as a PNG at twice the screen size.",
        icon=":material/download:", on_click="ignore",
    )
    downloads.download_button(
        "SVG", data=lambda: figure_bytes(figure_json, "svg"), file_name=f"{name}.svg", mime="image/svg+xml",
        key=f"svg-{key}", disabled=bool(problem), help=problem or "Download the chart as a vector SVG.",
        icon=":material/download:", on_click="ignore",
    )
    downloads.download_button(
        "CSV", data=table.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
        key=f"csv-{key}", help="Download the rows behind the chart.", icon=":material/table:", on_click="ignore",
    )
    with st.expander("Rows behind this chart"):
        st.dataframe(table, hide_index=True)


def _error_bars(rows: pd.DataFrame, scale: np.ndarray | float = 1.0) -> dict:
    """Return asymmetric error bars from ci_low and ci_high. A missing interval draws none."""
    value = rows["value"].to_numpy(float) * scale
    low = rows["ci_low"].to_numpy(float) * scale
    high = rows["ci_high"].to_numpy(float) * scale
    return dict(
        type="data", symmetric=False, array=np.nan_to_num(high - value), arrayminus=np.nan_to_num(value - low),
        thickness=2.5, width=8, color=INK,
    )


def _model_subplots(models: Sequence[str], shared_y: bool = True) -> go.Figure:
    return make_subplots(
        rows=1, cols=len(models), shared_yaxes=shared_y, horizontal_spacing=0.04,
        subplot_titles=[model_name(m) for m in models],
    )


def metric_label(metric: str) -> str:
    """Return a readable axis title for a metric name of the result tables."""
    if metric.startswith("gap_err_"):
        return "gap factor (narrative / additive)"
    names = {"map": "mAP", "medr": "MedR (lower is better)", "gap_medr": "gap factor (narrative / additive)",
             "cosine": "cosine to the original", "rank_median": "median rank of the original", "recall@1": "recall@1 of the original"}
    if metric in names:
        return names[metric]
    if metric.startswith("p@"):
        return f"precision@{metric[2:]}"
    if metric.startswith("r@"):
        return f"R@{metric[2:]}"
    return metric


def gap_metric(metric: str) -> str:
    """Return the gap-factor metric that goes with a value metric."""
    return "gap_medr" if metric == "medr" else f"gap_err_{metric}"


def per_type_figure(rows: pd.DataFrame, metric: str, show_lift: bool) -> go.Figure:
    """Bars per art type, one panel per model, with intervals and the chance level of each type.

    rows: h2_retrieval rows of one task and label set, groups = types, aggregation pooled.
    """
    models = sort_models(rows["model"].unique())
    fig = _model_subplots(models)
    for col, model in enumerate(models, start=1):
        part = rows[rows["model"] == model]
        part = part.set_index("group").loc[[t for t in ordered_types(part["group"]) if t in set(part["group"])]].reset_index()
        baseline = part["baseline"].to_numpy(float) if "baseline" in part.columns else np.full(len(part), np.nan)
        scale = 1.0 / baseline if show_lift else 1.0
        values = part["value"].to_numpy(float) * scale
        fig.add_trace(go.Bar(
            x=part["group"], y=values, marker_color=[type_color(t) for t in part["group"]],
            marker_line=dict(color=INK, width=1), error_y=_error_bars(part, scale), showlegend=False,
            customdata=np.stack([part["n"].to_numpy(), baseline], axis=1),
            hovertemplate="%{x}<br>%{y:.3f}<br>n = %{customdata[0]:,}<br>chance %{customdata[1]:.3f}<extra></extra>",
        ), row=1, col=col)
        chance = np.ones(len(part)) if show_lift else baseline
        fig.add_trace(go.Scatter(
            x=part["group"], y=chance, mode="markers", name="chance (random ranking)",
            marker=dict(symbol="line-ew", size=36, line=dict(width=3, color=INK)),
            showlegend=col == 1, hoverinfo="skip",
        ), row=1, col=col)
    fig.update_xaxes(tickangle=-35)
    label = f"lift of {metric_label(metric)} over chance" if show_lift else metric_label(metric)
    fig.update_yaxes(title_text=label, row=1, col=1)
    return fig


def group_figure(rows: pd.DataFrame, metric: str) -> go.Figure:
    """Additive versus narrative bars per model, with intervals. rows: groups additive and narrative."""
    models = sort_models(rows["model"].unique())
    fig = go.Figure()
    for group in ("additive", "narrative"):
        part = rows[rows["group"] == group].set_index("model").reindex(models).reset_index()
        fig.add_trace(go.Bar(
            x=[model_name(m) for m in models], y=part["value"], name=group, marker_color=group_color(group),
            marker_line=dict(color=INK, width=1), error_y=_error_bars(part),
            customdata=part[["n"]].to_numpy(), hovertemplate=f"{group}<br>%{{y:.3f}}<br>n = %{{customdata[0]:,}}<extra></extra>",
        ))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text=metric_label(metric))
    return fig


def gap_figure(rows: pd.DataFrame, metric: str) -> go.Figure:
    """Build the figure of the gap factor per model with its interval, the no-gap line and the reference study's range."""
    models = sort_models(rows["model"].unique())
    part = rows.set_index("model").reindex(models).reset_index()
    fig = go.Figure(go.Bar(
        x=[model_name(m) for m in models], y=part["value"], marker_color=NEUTRAL_BAR, error_y=_error_bars(part), width=0.6,
        text=[f"{v:.2f}×" for v in part["value"]], textposition="inside", insidetextanchor="start",
        textfont=dict(color="white", size=FONT_PX), showlegend=False,
        hovertemplate="%{x}<br>gap factor %{y:.2f}<extra></extra>",
    ))
    # The band lies below the bars; its label and the no-gap label sit in the right margin, clear of both.
    fig.add_hrect(y0=REFERENCE_GAP[0], y1=REFERENCE_GAP[1], fillcolor=GROUP_COLORS["narrative"], opacity=0.12,
                  line_width=0, layer="below")
    fig.add_hline(y=1.0, line_dash="dash", line_color=INK, layer="below")
    for y, text in ((1.0, "1.0 = no gap"), (REFERENCE_GAP[1], f"reference<br>study:<br>{REFERENCE_GAP[0]}×–{REFERENCE_GAP[1]}×")):
        fig.add_annotation(x=1, xref="paper", xanchor="left", xshift=8, y=y, yref="y", yanchor="middle" if y == 1.0 else "top",
                           text=text, showarrow=False, align="left", font=dict(size=TICK_PX, color=INK))
    fig.update_yaxes(title_text=metric_label(gap_metric(metric)), rangemode="tozero")
    fig.update_layout(showlegend=False, margin=dict(r=GAP_LABEL_MARGIN))
    return fig


def paired_figure(rows: pd.DataFrame, metric: str) -> go.Figure:
    """Forest plot of paired differences (model a − model b) per type and group, one panel per pair."""
    pairs = rows[["model_a", "model_b"]].drop_duplicates().itertuples(index=False)
    pairs = [(p.model_a, p.model_b) for p in pairs]
    fig = make_subplots(rows=1, cols=len(pairs), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"{model_name(a)} − {model_name(b)}" for a, b in pairs])
    groups = ordered_types(rows["group"]) + ["additive", "narrative"]
    groups = [g for g in dict.fromkeys(groups) if g in set(rows["group"]) and g != "gap"]
    for col, (a, b) in enumerate(pairs, start=1):
        part = rows[(rows["model_a"] == a) & (rows["model_b"] == b)].set_index("group").reindex(groups).reset_index()
        colors = [group_color(g) if g in ("additive", "narrative") else type_color(g) for g in groups]
        fig.add_trace(go.Scatter(
            x=part["value"], y=groups, mode="markers", showlegend=False,
            marker=dict(size=16, color=colors, line=dict(color=INK, width=1.5)),
            error_x=_error_bars(part),
            hovertemplate="%{y}<br>difference %{x:.3f}<extra></extra>",
        ), row=1, col=col)
        fig.add_vline(x=0, line_dash="dash", line_color=INK, row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text=f"difference in {metric_label(metric)}")
    fig.update_layout(showlegend=False)
    return fig


def structure_figure(rows: pd.DataFrame) -> go.Figure:
    """H1: intra/inter distance ratio per attribute and model, next to its shuffled-label baseline."""
    models = sort_models(rows["model"].unique())
    fig = _model_subplots(models)
    attributes = list(dict.fromkeys(rows["attribute"]))
    for col, model in enumerate(models, start=1):
        part = rows[rows["model"] == model]
        for metric, color, label in (("ratio", NEUTRAL_BAR, "observed ratio"), ("shuffled_ratio", BASELINE_COLOR, "shuffled labels")):
            bars = part[part["metric"] == metric].set_index("attribute").reindex(attributes).reset_index()
            fig.add_trace(go.Bar(
                x=attributes, y=bars["value"], name=label, marker_color=color, marker_line=dict(color=INK, width=1),
                error_y=_error_bars(bars), showlegend=col == 1, legendgroup=metric, offsetgroup=metric,
                hovertemplate=f"%{{x}}<br>{label} %{{y:.3f}}<extra></extra>",
            ), row=1, col=col)
        fig.add_hline(y=1.0, line_dash="dash", line_color=INK, row=1, col=col)
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="intra / inter distance", row=1, col=1)
    return fig


# ---------------------------------------------------------------------------------------------
# H3: perturbation names, small samples and the random-pair floor

MIN_TEXTURE_N = 10  # types with fewer sampled paintings give intervals too wide to show as bars
FLOOR_PERTURBATION = "random_pair"  # cosine between a painting and a random other one
DEFAULT_PERTURBATION = "shuffle_mean"
PERTURBATION_LABELS = {
    "shuffle_mean": "patch shuffle (mean of 2×2, 4×4, 8×8)",
    "grayscale": "grayscale",
    "blur": "blur",
    FLOOR_PERTURBATION: "random pair (floor)",
}


def perturbation_label(name: str) -> str:
    """Return a readable name of an h3_texture perturbation, e.g. "patch shuffle 4×4" for "shuffle4"."""
    if name in PERTURBATION_LABELS:
        return PERTURBATION_LABELS[name]
    grid = re.fullmatch(r"shuffle(\d+)", name)
    return f"patch shuffle {grid[1]}×{grid[1]}" if grid else name.replace("_", " ")


def split_small_types(rows: pd.DataFrame, min_n: int = MIN_TEXTURE_N) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the types with fewer than min_n sampled paintings in any model.

    Returns the kept rows and, per dropped type, its smallest n across models. "all" and the two
    groups are kept, whatever their n, because they summarise the whole sample.
    """
    small = rows[(rows["n"] < min_n) & ~rows["type"].isin(["all", "additive", "narrative"])]
    dropped = small.groupby("type")["n"].min().astype(int).to_dict()
    order = ordered_types(list(dropped))
    return rows[~rows["type"].isin(dropped)], {t: dropped[t] for t in order}


def small_types_caption(dropped: Mapping[str, int], min_n: int = MIN_TEXTURE_N) -> str:
    """Return the caption that names the types left out of an H3 chart, or "" when none were."""
    if not dropped:
        return ""
    names = ", ".join(f"{t} ({n})" for t, n in dropped.items())
    return (f"Types with fewer than {min_n} sampled paintings are left out, because their intervals rest on "
            f"too few paintings: {names}.")


def texture_floor(h3: pd.DataFrame) -> dict[str, float]:
    """Return each model's random-pair cosine: the value a texture cosine is read against."""
    rows = h3[(h3["perturbation"] == FLOOR_PERTURBATION) & (h3["metric"] == "cosine") & (h3["type"] == "all")]
    return {str(r.model): float(r.value) for r in rows.itertuples(index=False)}


def floor_caption(floor: Mapping[str, float]) -> str:
    """Return the sentence that explains the floor line, with each model's floor."""
    if not floor:
        return ""
    values = ", ".join(f"{model_name(m)} {floor[m]:.2f}" for m in sort_models(floor))
    return (f"The dashed line is each model's floor: the cosine between a painting and a random other one "
            f"({values}). Read a model's texture reliance relative to its own floor.")


def _texture_bar_color(label: str) -> str:
    if label in ("additive", "narrative"):
        return group_color(label)
    if label == "all":
        return NEUTRAL_BAR
    return type_color(label)


def texture_figure(rows: pd.DataFrame, metric: str, floor: Mapping[str, float] | None = None) -> go.Figure:
    """H3: a texture metric per type, one panel per model, with "all" and the two groups first.

    floor, by model, draws the random-pair cosine as a dashed line in that model's panel.
    """
    models = sort_models(rows["model"].unique())
    fig = _model_subplots(models)
    for col, model in enumerate(models, start=1):
        part = rows[rows["model"] == model]
        order = [g for g in ("all", "additive", "narrative") if g in set(part["type"])] + ordered_types(
            [t for t in part["type"] if t not in ("all", "additive", "narrative")]
        )
        part = part.set_index("type").reindex(order).reset_index()
        fig.add_trace(go.Bar(
            x=order, y=part["value"], marker_color=[_texture_bar_color(t) for t in order], marker_line=dict(color=INK, width=1), showlegend=False,
            error_y=_error_bars(part), customdata=part[["n"]].to_numpy(),
            hovertemplate="%{x}<br>%{y:.3f}<br>n = %{customdata[0]:,} sampled paintings<extra></extra>",
        ), row=1, col=col)
        if floor and model in floor:
            fig.add_trace(go.Scatter(
                x=order, y=[floor[model]] * len(order), mode="lines", line=dict(color=INK, width=2.5, dash="dash"),
                name="random pair (floor)", showlegend=col == 1, legendgroup="floor",
                hovertemplate=f"random pair (floor): %{{y:.3f}}<extra>{model_name(model)}</extra>",
            ), row=1, col=col)
    fig.update_xaxes(tickangle=-35)
    fig.update_yaxes(title_text=metric_label(metric), row=1, col=1)
    fig.update_layout(showlegend=bool(floor))
    return fig


def type_counts_figure(metadata: pd.DataFrame) -> go.Figure:
    """Paintings per art type in the corpus, coloured by type and grouped additive, narrative, other."""
    counts = metadata["type"].fillna("").astype(str).replace("", UNTYPED).value_counts()
    order = ordered_types([t for t in counts.index if t != UNTYPED]) + ([UNTYPED] if UNTYPED in counts.index else [])
    fig = go.Figure(go.Bar(
        x=order, y=[int(counts[t]) for t in order], marker_color=[type_color("" if t == UNTYPED else t) for t in order],
        marker_line=dict(color=INK, width=1), text=[f"{int(counts[t]):,}" for t in order], textposition="outside",
        hovertemplate="%{x}: %{y:,} paintings<extra></extra>", showlegend=False,
    ))
    fig.update_xaxes(tickangle=-35)
    fig.update_yaxes(title_text="paintings")
    fig.update_layout(showlegend=False)
    return fig


# ---------------------------------------------------------------------------------------------
# Map: 2-D projections

COLOR_COLUMNS = {"type": "Type", "type_group": "Additive / narrative", "school": "School", "timeframe": "Timeframe", "style": "Style"}
EMPTY_MARKER = dict(symbol="diamond", opacity=0.5)  # paintings with no value in the colour column


def projection_figure(points: pd.DataFrame, color_by: str, selected_id: str = "", legend: bool = True) -> go.Figure:
    """WebGL scatter of one model's projection, one trace per category, the selection starred.

    points: x, y, id, title, artist, type and the color_by column. Every trace carries
    customdata [id, title, artist, type], so a selected point maps back to its painting.
    Without legend, the page shows the categories once for all maps (category_chips_html).
    """
    values = points[color_by].fillna("").astype(str)
    categories = map_categories(points, color_by)
    colors = category_colors(color_by, categories)
    size = 5 if len(points) > 5000 else 9
    fig = go.Figure()
    # Paintings without a value are drawn first, so they lie under the others, as faint diamonds;
    # legendrank keeps them last in the legend.
    for rank, category in sorted(enumerate(categories), key=lambda item: item[1] != ""):
        part = points[values == category]
        style = EMPTY_MARKER if category == "" else dict(symbol="circle", opacity=0.85)
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name=category or empty_label(color_by), legendrank=1000 + rank,
            marker=dict(size=size, color=colors[category], line=dict(width=0.5, color="#555555"), **style),
            customdata=part[["id", "title", "artist", "type"]].fillna("").astype(str).to_numpy(),
            hovertemplate="<b>%{customdata[1]}</b><br>%{customdata[2]}<br>%{customdata[3]}<extra></extra>",
        ))
    chosen = points[points["id"] == selected_id]
    if len(chosen):
        fig.add_trace(go.Scattergl(
            x=chosen["x"], y=chosen["y"], mode="markers", name="selected", hoverinfo="skip",
            marker=dict(symbol="star-open", size=30, color=INK, line=dict(width=3, color=INK)),
        ))
    fig.update_xaxes(showticklabels=False, title_text="")
    fig.update_yaxes(showticklabels=False, title_text="")
    fig.update_layout(dragmode="pan", clickmode="event+select", showlegend=legend)
    if legend:
        fig.update_layout(legend=dict(itemsizing="constant", orientation="v", yref="paper", y=1, yanchor="top", x=1.02, xanchor="left"))
    return fig


def map_categories(points: pd.DataFrame, color_by: str) -> list[str]:
    """Return the categories of a map in legend order, "" (no value, e.g. untyped) last."""
    values = points[color_by].fillna("").astype(str)
    categories = ordered_types(values) if color_by == "type" else sorted(v for v in values.unique() if v)
    return categories + ([""] if (values == "").any() else [])


def category_chips_html(column: str, categories: Sequence[str]) -> str:
    """Return a one-line legend of coloured dots, shared by all maps on the page."""
    colors = category_colors(column, categories)
    chips = "".join(
        f'<span class="sg-chip"><span class="{"sg-dot sg-diamond" if c == "" else "sg-dot"}" style="background:{colors[c]}">'
        f'</span>{html.escape(c or empty_label(column))}</span>'
        for c in categories
    )
    return f"<div>{chips}</div>"


def selected_point_id(event) -> str:
    """Return the corpus id of the first selected point of a plotly_chart selection event, or ""."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return ""
    for point in points or []:
        custom = point.get("customdata")
        if custom:
            return str(custom[0])
    return ""
