"""Train a text tower for an image-only CNN: the study's "CNN + sentence encoder" baseline.

The stored image embeddings of a CNN index and sentence embeddings of each painting's text are
mapped into one space by two small projection heads, trained with CLIP's symmetric InfoNCE loss
and a learnable temperature. The pairs are split once per corpus into train, val and test,
grouped so that an artist or a title never appears on two sides. The split is written to
`indexes/<corpus>/text_split.parquet`, so every model's text metrics use the same held-out
queries and candidate pool. The trained heads are saved as the aligned model `<cnn>+<text>`,
which `core.encoders.aligned` loads.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from core.encoders.aligned import (
    CONFIG_FILE,
    HEAD_KINDS,
    HEADS_FILE,
    AlignmentHeads,
    aligned_name,
    default_models_dir,
)
from core.index import ModelIndex, load_model_index, model_folder_name, replace_dir, write_json_atomic
from core.metrics.retrieval import text_to_image

logger = logging.getLogger(__name__)

SPLIT_FILE = "text_split.parquet"
SPLIT_INFO_FILE = "text_split.json"
TEXT_CACHE_DIR = ".text_cache"
SPLITS = ("train", "val", "test")
# Split value of rows left out of every side: in the artist-only fallback, a val or test row
# whose normalised title also occurs on an earlier side.
EXCLUDED = "excluded"
TEXT_FIELDS = ("title", "description", "title+description")
EARLY_STOPPING = ("val_loss", "val_r10")
SPLIT_COLUMNS = ("id", "artist_id", "title", "type")
RECALL_K = 10

_COPY_SUFFIX = re.compile(r"\(\s*\d+\s*\)")
_NON_LETTERS = re.compile(r"[\W\d_]+")
_LEADING_ARTICLE = re.compile(r"^(the|a|an) ")


@dataclass
class AlignConfig:
    """Settings of one text-tower training run; the CLI fills it from its options."""

    text_field: str = "title"  # "title", "description" or "title+description". Rows with empty text are left out
    projection_dim: int = 256  # dimension of the shared space
    head: str = "linear"  # "linear", or "mlp": two layers with a GELU
    hidden_dim: int = 512  # hidden width of the "mlp" head
    dropout: float = 0.0  # dropout between the two layers of the "mlp" head
    temperature: float = 0.07  # initial softmax temperature (CLIP's start value), then learned
    learning_rate: float = 1e-4  # AdamW step size. At 1e-3 the linear heads overfit the titles within one epoch
    weight_decay: float = 0.1  # AdamW decoupled weight decay, on weight matrices only
    batch_size: int = 256  # pairs per step. Every other pair of the batch is a negative
    max_epochs: int = 200  # upper bound on passes over the train pairs
    patience: int = 10  # epochs without a better validation score before training stops
    early_stopping: str = "val_loss"  # "val_loss" (lower is better) or "val_r10" (text->image R@10)
    seed: int = 0  # seeds weight initialisation and batch order
    split_seed: int = 0  # seeds the train/val/test split shared by every model of the corpus
    test_fraction: float = 0.2  # share of rows drawn as the held-out test split
    val_fraction: float = 0.1  # share of the train split held out for early stopping
    max_group_share: float = 0.5  # largest artist+title group allowed before the artist-only fallback
    resplit: bool = False  # replace an existing text_split.parquet made with other settings
    models_dir: Path | None = None  # parent of the model folder. None means $SEMGAP_MODELS, else <indexes root>/.models
    device: str = "cpu"  # torch device of the heads during training
    threads: int | None = 1  # torch CPU threads while training, restored afterwards. None keeps torch's setting

    def validate(self) -> None:
        """Raise ValueError naming the first invalid setting and its valid values."""
        if self.text_field not in TEXT_FIELDS:
            raise ValueError(f"Unknown text field {self.text_field!r}; valid choices: {', '.join(TEXT_FIELDS)}.")
        if self.head not in HEAD_KINDS:
            raise ValueError(f"Unknown head {self.head!r}; valid choices: {', '.join(HEAD_KINDS)}.")
        if self.early_stopping not in EARLY_STOPPING:
            raise ValueError(
                f"Unknown early stopping score {self.early_stopping!r}; valid choices: {', '.join(EARLY_STOPPING)}."
            )
        for name in ("projection_dim", "hidden_dim", "batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 so that each pair has a negative, got {self.batch_size}.")
        for name in ("test_fraction", "val_fraction", "max_group_share"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie strictly between 0 and 1, got {getattr(self, name)}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}.")


@dataclass
class RetrievalScore:
    """Text->image retrieval over one split: each text ranks the images of that split."""

    n_queries: int  # texts of the split, one per painting
    pool_size: int  # candidate images, the split's paintings
    recall_at_10: float  # share of texts whose own painting ranks in the top 10
    median_rank: float  # MedR: median 1-based rank of a text's own painting
    recall_at_10_random: float  # R@10 of a uniformly random ranking: 10 / pool_size
    median_rank_random: float  # expected rank under a random ranking: (pool_size + 1) / 2


@dataclass
class AlignResult:
    """The outcome of one training run: history, scores and where the model was saved."""

    model_name: str  # registry name, e.g. "effnet-lite0+minilm"
    model_dir: Path  # folder holding heads.pt and config.json
    history: list[dict]  # one entry per epoch: epoch, train_loss, val_loss, val_r10, val_medr, temperature
    best_epoch: int  # epoch whose heads were kept
    val: RetrievalScore
    test: RetrievalScore
    split_path: Path  # the shared text_split.parquet
    n_pairs: dict[str, int] = field(default_factory=dict)  # pairs per split


# ---------------------------------------------------------------------------------------------
# The split


def normalize_title(title: object) -> str:
    """Return a title's grouping key: lowercase letters only, no "(N)" suffix, no leading article.

    "Self-Portrait (2)", "Self portrait 1660" and "self-portrait" all become "self portrait";
    "The Immaculate Conception" becomes "immaculate conception".
    """
    if title is None or (isinstance(title, float) and title != title):
        return ""
    text = _COPY_SUFFIX.sub(" ", str(title).lower())
    text = " ".join(_NON_LETTERS.sub(" ", text).split())
    return _LEADING_ARTICLE.sub("", text)


def _linked_components(keys: list[np.ndarray]) -> np.ndarray:
    """Return a component label per row, rows being linked when they share a non-empty key.

    Each key column is factorised into nodes of a bipartite graph (rows on one side, key values
    on the other), whose connected components are the union-find groups.
    """
    n = len(keys[0])
    rows, columns = [], []
    offset = n
    for values in keys:
        codes, uniques = pd.factorize(pd.Series(values))
        known = (codes >= 0) & (pd.Series(values).to_numpy() != "")
        rows.append(np.flatnonzero(known))
        columns.append(offset + codes[known])
        offset += len(uniques)
    rows_all, columns_all = np.concatenate(rows), np.concatenate(columns)
    graph = coo_matrix((np.ones(len(rows_all)), (rows_all, columns_all)), shape=(offset, offset))
    _, labels = connected_components(graph, directed=False)
    return pd.factorize(labels[:n])[0]


def _draw_groups(strata: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Return a mask of about `fraction` of the rows, whole groups only, stratified by `strata`.

    Groups are visited in a seeded random order, and each is drawn when it brings the per-stratum
    counts of the drawn rows closer (in L1 distance) to `fraction` of each stratum. This greedy
    rule does what sklearn's StratifiedGroupKFold does, but there the seed only breaks ties, so
    most seeds would give the same split.
    """
    if len(np.unique(groups)) < 2:
        raise ValueError(
            f"Cannot draw {fraction:.0%} of {len(groups)} rows by group: all rows form one group. "
            "Use a corpus with more than one artist."
        )
    n_groups = int(groups.max()) + 1
    codes, _ = pd.factorize(pd.Series(strata))
    counts = np.zeros((n_groups, codes.max() + 1))
    np.add.at(counts, (groups, codes), 1)
    target = fraction * counts.sum(axis=0)  # rows wanted per stratum
    drawn = np.zeros_like(target)
    chosen = np.zeros(n_groups, dtype=bool)
    for group in np.random.default_rng(seed).permutation(n_groups):
        after = drawn + counts[group]
        if np.abs(after - target).sum() < np.abs(drawn - target).sum():
            drawn = after
            chosen[group] = True
    return chosen[groups]


def make_text_split(
    metadata: pd.DataFrame,
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    max_group_share: float = 0.5,
) -> pd.DataFrame:
    """Split a corpus table into train, val and test with no artist or title on two sides.

    Rows are grouped by union-find over artist_id and normalised title, and whole groups are
    drawn, stratified by type: about `test_fraction` of the rows as test, then `val_fraction`
    of the rest as val. When the largest group contains more than `max_group_share` of the rows
    (generic titles such as "Self-portrait" chain most painters together), rows are grouped by
    artist alone. Then a val row whose normalised title occurs in train is marked "excluded",
    and so is a test row whose title occurs in train or val.

    Returns a table with columns id and split ("train", "val", "test" or "excluded"), in the
    row order of `metadata`; `attrs["params"]` records the settings and group statistics.
    """
    missing = [column for column in SPLIT_COLUMNS if column not in metadata.columns]
    if missing:
        raise ValueError(f"The corpus table lacks column(s) {', '.join(missing)}, which the text split needs.")
    # Work in id order, so that the split depends on the rows and the seed but not on the row order.
    order = np.argsort(metadata["id"].astype(str).to_numpy(), kind="stable")
    metadata = metadata.iloc[order]
    artists = metadata["artist_id"].fillna("").astype(str).to_numpy()
    titles = metadata["title"].map(normalize_title).to_numpy()
    strata = metadata["type"].fillna("").astype(str).replace("", "untyped").to_numpy()

    groups = _linked_components([artists, titles])
    largest_share = float(np.bincount(groups).max() / len(groups))
    fallback = largest_share > max_group_share
    if fallback:
        logger.warning(
            "Grouping by artist and title links %.0f%% of the rows into one group (limit %.0f%%). "
            "Grouping by artist instead and excluding val/test rows whose title occurs on an earlier side.",
            100 * largest_share, 100 * max_group_share,
        )
        groups = _linked_components([artists])

    test = _draw_groups(strata, groups, test_fraction, seed)
    train_rows = np.flatnonzero(~test)
    val = np.zeros(len(groups), dtype=bool)
    val[train_rows[_draw_groups(strata[train_rows], groups[train_rows], val_fraction, seed + 1)]] = True
    split = np.where(test, "test", np.where(val, "val", "train")).astype(object)
    if fallback:
        _exclude_shared_titles(split, titles)

    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    table = pd.DataFrame({"id": metadata["id"].astype(str).to_numpy()[restore], "split": split.astype(str)[restore]})
    table.attrs["params"] = {
        "seed": seed,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "max_group_share": max_group_share,
        "grouping": "artist, shared titles excluded" if fallback else "artist+title",
        "artist_title_largest_group_share": round(largest_share, 4),
        "n_groups": int(groups.max() + 1),
        "counts": {name: int((table["split"] == name).sum()) for name in (*SPLITS, EXCLUDED)},
    }
    return table


def _exclude_shared_titles(split: np.ndarray, titles: np.ndarray) -> None:
    """Mark val rows titled like a train row, and test rows titled like a train or val row, excluded."""
    seen = {title for title in titles[split == "train"] if title}
    for side in ("val", "test"):
        rows = np.flatnonzero(split == side)
        shared = rows[[title in seen for title in titles[rows]]]
        split[shared] = EXCLUDED
        seen |= {title for title in titles[rows] if title}


def load_text_split(corpus_dir: str | os.PathLike) -> pd.DataFrame:
    """Read the shared split of a corpus: columns id and split."""
    path = Path(corpus_dir) / SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No text split at {path}. Create it by training a text tower: "
            f"`python -m core align --index {Path(corpus_dir)} --image-model effnet-lite0 --text-model minilm`."
        )
    return pd.read_parquet(path)


def read_split_info(corpus_dir: str | os.PathLike) -> dict:
    """Return the settings the shared split was made with, or {} when there is none."""
    path = Path(corpus_dir) / SPLIT_INFO_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_text_split(corpus_dir: str | os.PathLike, split: pd.DataFrame, corpus_fingerprint: str) -> Path:
    """Write the split table and its settings, each through a temporary file renamed into place."""
    corpus_dir = Path(corpus_dir)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    path = corpus_dir / SPLIT_FILE
    handle, temporary = tempfile.mkstemp(prefix=f".{SPLIT_FILE}.", dir=corpus_dir)
    os.close(handle)
    try:
        split[["id", "split"]].to_parquet(temporary, index=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    info = {
        **split.attrs.get("params", {}),
        "corpus_fingerprint": corpus_fingerprint,
        "queries": "text->image: each test text ranks the images of the test rows",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(corpus_dir / SPLIT_INFO_FILE, info)
    return path


def ensure_text_split(
    corpus_dir: Path, metadata: pd.DataFrame, corpus_fingerprint: str, config: AlignConfig
) -> pd.DataFrame:
    """Return the corpus's shared split, making it when absent or when `config.resplit` is set.

    An existing split made with other settings or from another corpus version raises, because
    replacing it changes the held-out queries of every model already evaluated.
    """
    wanted = {
        "seed": config.split_seed,
        "test_fraction": config.test_fraction,
        "val_fraction": config.val_fraction,
        "max_group_share": config.max_group_share,
        "corpus_fingerprint": corpus_fingerprint,
    }
    info = read_split_info(corpus_dir)
    if info and not config.resplit:
        differing = {key: (info.get(key), value) for key, value in wanted.items() if info.get(key) != value}
        if differing:
            details = ", ".join(f"{key} {old!r} (requested {new!r})" for key, (old, new) in differing.items())
            raise ValueError(
                f"The shared text split {corpus_dir / SPLIT_FILE} was made with {details}. Request the same "
                "settings to reuse it, or pass --resplit to replace it and then re-evaluate every model."
            )
        split = load_text_split(corpus_dir)
        logger.info("Reusing the text split %s (seed %s)", corpus_dir / SPLIT_FILE, info["seed"])
        return split

    split = make_text_split(
        metadata, config.split_seed, config.test_fraction, config.val_fraction, config.max_group_share
    )
    path = write_text_split(corpus_dir, split, corpus_fingerprint)
    logger.info("Wrote the text split %s: %s", path, split.attrs["params"]["counts"])
    return split


# ---------------------------------------------------------------------------------------------
# Texts and their cached embeddings


def pair_texts(metadata: pd.DataFrame, text_field: str) -> pd.Series:
    """Return the text of each row for `text_field`, or "" where the row has none."""
    if text_field not in TEXT_FIELDS:
        raise ValueError(f"Unknown text field {text_field!r}; valid choices: {', '.join(TEXT_FIELDS)}.")
    title = metadata["title"].fillna("").astype(str).str.strip()
    description = metadata.get("description", pd.Series("", index=metadata.index)).fillna("").astype(str).str.strip()
    if text_field == "title":
        return title
    if text_field == "description":
        return description
    both = (title != "") & (description != "")
    joined = title.str.rstrip(".") + ". " + description
    return joined.where(both, title + description)


def text_encoder_fingerprint(text_encoder) -> str:
    """Return a checksum of a text encoder's name, weights and dimension."""
    payload = json.dumps(
        {"name": text_encoder.name, "weights_sha256": text_encoder.weights_sha256, "dim": text_encoder.dim},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def encode_texts_cached(texts: list[str], text_encoder, cache_dir: Path, batch_size: int = 256) -> np.ndarray:
    """Return (len(texts), dim) float32 unit vectors, encoding only texts missing from the cache.

    The cache is one .npz file per text encoder fingerprint, keyed by each text's SHA-256, and is
    rewritten through a temporary file renamed into place.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{text_encoder.name}-{text_encoder_fingerprint(text_encoder)[:16]}.npz"
    vectors: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as data:
            vectors.update(zip(data["keys"].tolist(), data["vectors"]))
    keys = [_text_key(text) for text in texts]
    missing = list({key: text for key, text in zip(keys, texts) if key not in vectors}.items())
    if missing:
        progress = tqdm(total=len(missing), desc=f"encode texts {text_encoder.name}", unit="text")
        for start in range(0, len(missing), batch_size):
            batch = missing[start:start + batch_size]
            encoded = text_encoder.encode_texts([text for _, text in batch]).numpy().astype(np.float32)
            vectors.update(zip([key for key, _ in batch], encoded))
            progress.update(len(batch))
        progress.close()
        _write_text_cache(path, vectors)
    logger.info("Text embeddings: %d from cache, %d encoded", len(set(keys)) - len(missing), len(missing))
    return np.stack([vectors[key] for key in keys]).astype(np.float32) if keys else np.zeros((0, text_encoder.dim), np.float32)


def _write_text_cache(path: Path, vectors: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, keys=np.array(list(vectors)), vectors=np.stack(list(vectors.values())))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class Pairs:
    """The (image, text) pairs of one split, as tensors."""

    images: torch.Tensor  # (n, image_dim), unit norm
    texts: torch.Tensor  # (n, text_dim), unit norm
    text_ids: torch.Tensor  # (n,) equal for identical texts, across all splits

    def __len__(self) -> int:
        return len(self.images)


def _make_optimizer(heads: AlignmentHeads, config: AlignConfig) -> torch.optim.Optimizer:
    """Return AdamW that decays weight matrices only. As in CLIP, biases and the logit scale are not decayed."""
    decay = [p for p in heads.parameters() if p.ndim >= 2]
    no_decay = [p for p in heads.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def _train_epoch(
    heads: AlignmentHeads, pairs: Pairs, optimizer: torch.optim.Optimizer, batch_size: int, generator: torch.Generator
) -> float:
    """Run one pass over the pairs in a seeded random order and return the mean batch loss."""
    heads.train()
    order = torch.randperm(len(pairs), generator=generator)
    losses = []
    for start in range(0, len(pairs), batch_size):
        batch = order[start:start + batch_size]
        if len(batch) < 2:
            continue  # a single pair has no negative to contrast with
        loss = heads.loss(pairs.images[batch], pairs.texts[batch], pairs.text_ids[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


@torch.no_grad()
def _validation_loss(heads: AlignmentHeads, pairs: Pairs, batch_size: int) -> float:
    """Return the InfoNCE loss over the pairs in fixed batches, so that epochs compare fairly."""
    heads.eval()
    total, count = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        stop = min(start + batch_size, len(pairs))
        if stop - start < 2:
            continue
        loss = heads.loss(pairs.images[start:stop], pairs.texts[start:stop], pairs.text_ids[start:stop])
        total += float(loss) * (stop - start)
        count += stop - start
    return total / max(count, 1)


@torch.no_grad()
def score_retrieval(heads: AlignmentHeads, pairs: Pairs) -> RetrievalScore:
    """Rank the split's images for each of its texts and return R@10 and MedR with their random baselines."""
    heads.eval()
    images = heads.image_head(pairs.images).cpu().numpy()  # (n, projection_dim)
    texts = heads.text_head(pairs.texts).cpu().numpy()  # (n, projection_dim)
    ranks = text_to_image(texts, images, targets=np.arange(len(pairs)))["rank"].to_numpy()
    pool = len(pairs)
    return RetrievalScore(
        n_queries=len(ranks),
        pool_size=pool,
        recall_at_10=float(np.mean(ranks <= RECALL_K)),
        median_rank=float(np.median(ranks)),
        recall_at_10_random=min(RECALL_K, pool) / pool,
        median_rank_random=(pool + 1) / 2,
    )


def _is_better(entry: dict, best: dict | None, early_stopping: str) -> bool:
    if best is None:
        return True
    if early_stopping == "val_r10":
        return entry["val_r10"] > best["val_r10"]
    return entry["val_loss"] < best["val_loss"]


def fit_heads(heads: AlignmentHeads, train: Pairs, val: Pairs, config: AlignConfig) -> tuple[list[dict], int]:
    """Train the heads with early stopping, load the best epoch's weights and return (history, best epoch)."""
    optimizer = _make_optimizer(heads, config)
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    best: dict | None = None
    best_state = copy.deepcopy(heads.state_dict())
    progress = tqdm(range(1, config.max_epochs + 1), desc="align", unit="epoch")
    for epoch in progress:
        train_loss = _train_epoch(heads, train, optimizer, config.batch_size, generator)
        score = score_retrieval(heads, val)
        entry = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": _validation_loss(heads, val, config.batch_size),
            "val_r10": score.recall_at_10,
            "val_medr": score.median_rank,
            "temperature": heads.temperature,
        }
        history.append(entry)
        progress.set_postfix(train=f"{train_loss:.3f}", val=f"{entry['val_loss']:.3f}", r10=f"{score.recall_at_10:.3f}")
        if _is_better(entry, best, config.early_stopping):
            best = entry
            best_state = copy.deepcopy(heads.state_dict())
        elif epoch - best["epoch"] >= config.patience:
            logger.info("Early stop at epoch %d: %s has not improved for %d epochs", epoch, config.early_stopping, config.patience)
            break
    progress.close()
    heads.load_state_dict(best_state)
    return history, best["epoch"]


def _split_pairs(
    images: np.ndarray, texts: np.ndarray, text_ids: np.ndarray, sides: np.ndarray, device: torch.device
) -> dict[str, Pairs]:
    pairs = {}
    for side in SPLITS:
        rows = np.flatnonzero(sides == side)
        pairs[side] = Pairs(
            images=torch.from_numpy(np.ascontiguousarray(images[rows], dtype=np.float32)).to(device),
            texts=torch.from_numpy(texts[rows]).to(device),
            text_ids=torch.from_numpy(text_ids[rows]).to(device),
        )
    return pairs


def train_text_tower(
    corpus_dir: Path, image_model: str, text_model: str, config: AlignConfig, *, text_encoder=None
) -> AlignResult:
    """Train projection heads between a CNN index and a sentence encoder, and save them as a model.

    corpus_dir is the folder of the corpus's indexes (indexes/<corpus>) and must hold the index of
    `image_model`. `text_encoder` replaces `create_text_encoder(text_model)`, e.g. with a fake in tests.
    """
    config.validate()
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _train_text_tower(Path(corpus_dir), image_model, text_model, config, text_encoder)
    finally:
        torch.set_num_threads(threads)


def _train_text_tower(corpus_dir: Path, image_model: str, text_model: str, config: AlignConfig, text_encoder) -> AlignResult:
    started = time.perf_counter()
    model_index = load_model_index(corpus_dir / model_folder_name(image_model))
    if model_index.manifest.get("has_text_tower"):
        logger.warning("%s has its own text tower; the trained one replaces nothing in it.", image_model)
    if text_encoder is None:
        from core.encoders import create_text_encoder

        text_encoder = create_text_encoder(text_model)
    pairs, n_pairs = _prepare_pairs(corpus_dir, model_index, text_encoder, config)

    torch.manual_seed(config.seed)
    heads = AlignmentHeads(
        model_index.embeddings.shape[1], text_encoder.dim, config.projection_dim, config.head,
        config.hidden_dim, config.dropout, config.temperature,
    ).to(torch.device(config.device))
    history, best_epoch = fit_heads(heads, pairs["train"], pairs["val"], config)
    val_score, test_score = score_retrieval(heads, pairs["val"]), score_retrieval(heads, pairs["test"])
    logger.info(
        "Best epoch %d; test text->image R@10 %.3f (random %.3f), MedR %.0f (random %.0f) over %d paintings",
        best_epoch, test_score.recall_at_10, test_score.recall_at_10_random,
        test_score.median_rank, test_score.median_rank_random, test_score.pool_size,
    )

    name = aligned_name(image_model, text_model)
    record = {
        **_base_models_record(name, image_model, text_model, model_index, text_encoder),
        "projection_dim": config.projection_dim,
        "head": config.head,
        "hidden_dim": config.hidden_dim,
        "dropout": config.dropout,
        "temperature": heads.temperature,
        "text_field": config.text_field,
        "split": {**read_split_info(corpus_dir), "path": str(corpus_dir / SPLIT_FILE)},
        "training": {key: value for key, value in asdict(config).items() if key not in ("models_dir", "resplit")},
        "n_pairs": n_pairs,
        "history": history,
        "best_epoch": best_epoch,
        "metrics": {"val": asdict(val_score), "test": asdict(test_score)},
        "train_seconds": round(time.perf_counter() - started, 1),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    models_dir = Path(config.models_dir) if config.models_dir is not None else default_models_dir(corpus_dir.parent)
    model_dir = save_aligned_model(models_dir / name, heads, record)
    return AlignResult(name, model_dir, history, best_epoch, val_score, test_score, corpus_dir / SPLIT_FILE, n_pairs)


def _prepare_pairs(
    corpus_dir: Path, model_index: ModelIndex, text_encoder, config: AlignConfig
) -> tuple[dict[str, Pairs], dict[str, int]]:
    """Return the (image, text) pairs of each split and their counts; rows without text are left out."""
    metadata = model_index.metadata
    split = ensure_text_split(corpus_dir, metadata, model_index.manifest["corpus"]["fingerprint"], config)
    texts = pair_texts(metadata, config.text_field).to_numpy()
    sides = metadata["id"].map(dict(zip(split["id"], split["split"]))).fillna(EXCLUDED).to_numpy()
    unknown = int((~metadata["id"].isin(split["id"])).sum())
    if unknown:
        logger.warning("%d indexed rows are missing from the text split and are left out.", unknown)
    sides = np.where(texts == "", EXCLUDED, sides)
    n_pairs = {side: int((sides == side).sum()) for side in SPLITS}
    for side, count in n_pairs.items():
        if count < 2:
            raise ValueError(
                f"The {side} split has {count} pairs with a non-empty {config.text_field!r}, too few to train "
                f"and evaluate. Choose another text field (valid: {', '.join(TEXT_FIELDS)}) or a larger corpus."
            )
    logger.info("Pairs with text field %r: %s", config.text_field, n_pairs)

    used = np.flatnonzero(sides != EXCLUDED)
    text_vectors = np.zeros((len(texts), text_encoder.dim), dtype=np.float32)
    text_vectors[used] = encode_texts_cached(list(texts[used]), text_encoder, corpus_dir / TEXT_CACHE_DIR)
    text_ids = pd.factorize(pd.Series(texts))[0].astype(np.int64)
    pairs = _split_pairs(np.asarray(model_index.embeddings), text_vectors, text_ids, sides, torch.device(config.device))
    return pairs, n_pairs


def _base_models_record(name: str, image_model: str, text_model: str, model_index: ModelIndex, text_encoder) -> dict:
    """Return the config.json fields that identify the base models and the training corpus."""
    manifest = model_index.manifest
    return {
        "name": name,
        "image_model": image_model,
        "image_model_fingerprint": manifest["model_fingerprint"],
        "image_weights_sha256": manifest["weights"]["sha256"],
        "image_dim": int(model_index.embeddings.shape[1]),
        "image_preprocess": manifest.get("preprocess", {}),
        "text_model": text_model,
        "text_weights_sha256": text_encoder.weights_sha256,
        "text_dim": int(text_encoder.dim),
        "corpus": {"name": manifest["corpus"].get("name"), "fingerprint": manifest["corpus"]["fingerprint"]},
    }


def save_aligned_model(folder: Path, heads: AlignmentHeads, record: dict) -> Path:
    """Write heads.pt and config.json into a temporary folder and rename it onto `folder`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        state = {key: value.detach().cpu() for key, value in heads.state_dict().items()}
        torch.save(state, staging / HEADS_FILE)
        (staging / CONFIG_FILE).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        replace_dir(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Saved aligned model %s to %s", record["name"], folder)
    return folder
