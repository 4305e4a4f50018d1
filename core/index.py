"""FAISS index build, the per-model artefacts on disk, and loading them back.

Layout and manifest fields are described in docs/ARTEFACTS.md. Every write goes to a temporary
folder that is renamed into place, so a killed job never leaves a half-written index.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
INDEX_FILE = "index.faiss"
EMBEDDINGS_FILE = "embeddings.npy"
METADATA_FILE = "metadata.parquet"
MANIFEST_FILE = "manifest.json"
CORPUS_FILE = "corpus.json"  # beside the model folders: the fingerprint of the corpus last embedded
INDEX_TYPES = ("flat", "ivf", "hnsw", "auto")

# With index type "auto", corpora up to this many vectors get an exact IndexFlatIP.
# Above it an IVF index searches faster at a small recall cost.
AUTO_FLAT_MAX = 200_000
AUTO_IVF_MAX = 5_000_000


class StaleIndexError(RuntimeError):
    """Artefacts on disk do not match this code or the other models of the corpus."""


@dataclass
class IndexConfig:
    """The FAISS index type and its parameters."""

    kind: str = "flat"  # one of INDEX_TYPES; "auto" picks by corpus size
    nlist: int | None = None  # IVF lists; default 4 * sqrt(n)
    nprobe: int | None = None  # IVF lists visited per query; default max(64, nlist / 16), which
    # reached recall@10 >= 0.95 on clustered 512-d vectors up to 300,000 (docs/BENCHMARKS.md)
    hnsw_m: int = 32  # HNSW neighbours per node
    ef_search: int = 128  # HNSW candidate list size per query
    ef_construction: int = 200  # HNSW candidate list size while building

    def resolve(self, n: int) -> str:
        """Return the concrete index type for a corpus of n vectors."""
        if self.kind not in INDEX_TYPES:
            raise ValueError(f"Unknown index type {self.kind!r}; valid choices: {', '.join(INDEX_TYPES)}.")
        if self.kind != "auto":
            return self.kind
        if n <= AUTO_FLAT_MAX:
            return "flat"
        return "ivf" if n <= AUTO_IVF_MAX else "hnsw"


def model_folder_name(model: str) -> str:
    """Return the folder name of a model's artefacts: open_clip names carry "/" and ":"."""
    return model.replace("/", "_").replace(":", "_")


def build_index(xb: np.ndarray, config: IndexConfig | None = None) -> tuple[faiss.Index, dict]:
    """Build an inner-product index over unit vectors xb (n, d); return it and its parameters."""
    config = config or IndexConfig()
    n, d = xb.shape
    kind = config.resolve(n)
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        params: dict = {}
    elif kind == "ivf":
        nlist = config.nlist or max(1, int(4 * np.sqrt(n)))
        nlist = min(nlist, n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(xb)
        index.nprobe = min(config.nprobe or max(64, nlist // 16), nlist)
        params = {"nlist": nlist, "nprobe": index.nprobe}
    else:
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
        params = {"m": config.hnsw_m, "ef_construction": config.ef_construction, "ef_search": config.ef_search}
    index.add(xb)
    return index, {"type": kind, "metric": "inner_product", "params": params}


@dataclass
class ModelIndex:
    """One model's artefacts, loaded: the index and its row-aligned embeddings and metadata."""

    path: Path
    manifest: dict
    index: faiss.Index
    embeddings: np.ndarray  # (n, d) float32, row i = vector id i
    metadata: pd.DataFrame  # row i describes vector id i
    _row_of_id: dict = field(default_factory=dict, repr=False)

    @property
    def model(self) -> str:
        return self.manifest["model"]

    def row_of(self, corpus_id: str) -> int:
        """Return the row of a corpus id, raising KeyError with the id when it is absent."""
        if not self._row_of_id:
            self._row_of_id = {value: i for i, value in enumerate(self.metadata["id"])}
        try:
            return self._row_of_id[corpus_id]
        except KeyError:
            raise KeyError(f"Corpus id {corpus_id!r} is not in the {self.model} index at {self.path}.") from None

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (D, I) for queries xq (nq, d): scores and row ids, -1 where fewer than k exist."""
        k = min(k, self.index.ntotal)
        return self.index.search(np.ascontiguousarray(xq, dtype=np.float32), k)


def write_model_index(
    out_dir: Path,
    embeddings: np.ndarray,
    metadata: pd.DataFrame,
    manifest: dict,
    config: IndexConfig | None = None,
) -> Path:
    """Write index, embeddings, metadata and manifest to out_dir, replacing it atomically."""
    if len(embeddings) != len(metadata):
        raise ValueError(f"{len(embeddings)} embeddings but {len(metadata)} metadata rows: they must align.")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    index, index_info = build_index(embeddings, config)
    manifest = {
        **manifest,
        "schema_version": SCHEMA_VERSION,
        "dim": int(embeddings.shape[1]),
        "count": int(embeddings.shape[0]),
        "index": index_info,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the app may run as another user
    try:
        faiss.write_index(index, str(staging / INDEX_FILE))
        np.save(staging / EMBEDDINGS_FILE, np.ascontiguousarray(embeddings, dtype=np.float32))
        metadata.reset_index(drop=True).to_parquet(staging / METADATA_FILE, index=False)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def replace_dir(staging: Path, target: Path) -> None:
    """Move a finished staging folder onto target, keeping the old one until the new one is in place."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, payload: object) -> None:
    """Write JSON through a temporary file renamed over path."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; reports are read by other users
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def rebuild_command(corpus_root: str | None, model: str, model_dir: Path | None = None) -> str:
    """Return the embed command that rebuilds a model's index in the same indexes root."""
    root = corpus_root or "PATH/TO/CORPUS"
    out = f" --out {Path(model_dir).parent.parent}" if model_dir is not None else ""
    return f"python -m core embed --corpus {root} --models {model}{out}"


def read_manifest(model_dir: Path) -> dict:
    """Read and check a model's manifest; raise StaleIndexError with the rebuild command."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No index at {model_dir}: {MANIFEST_FILE} is missing. Build it with "
            f"`{rebuild_command(None, Path(model_dir).name)}`."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StaleIndexError(
            f"Cannot read {path} ({error}). Rebuild the index with `{rebuild_command(None, Path(model_dir).name, model_dir)}`."
        ) from error
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        command = rebuild_command(manifest.get("corpus", {}).get("root"), manifest.get("model", Path(model_dir).name), model_dir)
        raise StaleIndexError(
            f"Index at {model_dir} has schema version {version}, this code reads version {SCHEMA_VERSION}. "
            f"Rebuild it with `{command}`."
        )
    return manifest


def load_model_index(model_dir: Path, mmap: bool = False, expected_fingerprint: str | None = None) -> ModelIndex:
    """Load one model's artefacts; mmap maps the index and embeddings instead of reading them."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    fingerprint = manifest["corpus"]["fingerprint"]
    if expected_fingerprint is not None and fingerprint != expected_fingerprint:
        command = rebuild_command(manifest["corpus"].get("root"), manifest["model"], model_dir)
        raise StaleIndexError(
            f"Index at {model_dir} was built from another version of corpus {manifest['corpus']['name']!r} "
            f"(fingerprint {fingerprint[:12]}, expected {expected_fingerprint[:12]}). Rebuild it with `{command}`."
        )
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    index = faiss.read_index(str(model_dir / INDEX_FILE), flags)
    embeddings = np.load(model_dir / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
    metadata = pd.read_parquet(model_dir / METADATA_FILE)
    if not (index.ntotal == len(embeddings) == len(metadata) == manifest["count"]):
        raise StaleIndexError(
            f"Index at {model_dir} is inconsistent: {index.ntotal} vectors, {len(embeddings)} embeddings, "
            f"{len(metadata)} metadata rows, manifest count {manifest['count']}. "
            f"Rebuild it with `{rebuild_command(manifest['corpus'].get('root'), manifest['model'], model_dir)}`."
        )
    if manifest.get("index", {}).get("type") == "ivf":
        faiss.extract_index_ivf(index).nprobe = manifest["index"]["params"]["nprobe"]
    if manifest.get("index", {}).get("type") == "hnsw":
        index.hnsw.efSearch = manifest["index"]["params"]["ef_search"]
    return ModelIndex(model_dir, manifest, index, embeddings, metadata)


def list_model_dirs(corpus_dir: Path) -> list[Path]:
    """Return the model folders of a corpus folder, those holding a manifest, sorted by name."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        return []
    return sorted(p for p in corpus_dir.iterdir() if (p / MANIFEST_FILE).is_file() and not p.name.startswith("."))


def load_corpus_indexes(corpus_dir: Path, mmap: bool = False) -> tuple[dict[str, ModelIndex], dict[str, str]]:
    """Load every model of a corpus folder that agrees with the others.

    Returns the loaded indexes by model name and, for each model that could not be used, the reason.
    The expected corpus fingerprint is the one `embed` last wrote to corpus.json; without that
    file, the fingerprint most models share wins, then the newest build's.
    """
    manifests: dict[str, dict] = {}
    problems: dict[str, str] = {}
    for model_dir in list_model_dirs(corpus_dir):
        try:
            manifests[model_dir.name] = read_manifest(model_dir)
        except (StaleIndexError, ValueError, KeyError) as error:
            problems[model_dir.name] = str(error)
    if not manifests:
        return {}, problems
    expected = expected_corpus_fingerprint(Path(corpus_dir), list(manifests.values()))
    loaded: dict[str, ModelIndex] = {}
    for name in manifests:
        try:
            loaded[name] = load_model_index(Path(corpus_dir) / name, mmap=mmap, expected_fingerprint=expected)
        except (StaleIndexError, OSError, RuntimeError) as error:
            problems[name] = str(error)
    return loaded, problems


def expected_corpus_fingerprint(corpus_dir: Path, manifests: list[dict]) -> str:
    """Return the corpus fingerprint that every model of a corpus folder must carry."""
    corpus_file = corpus_dir / CORPUS_FILE
    if corpus_file.is_file():
        try:
            return json.loads(corpus_file.read_text(encoding="utf-8"))["fingerprint"]
        except (OSError, ValueError, KeyError) as error:
            logger.warning("Ignored %s (%s); comparing the models' manifests instead.", corpus_file, error)
    counts: dict[str, int] = {}
    for manifest in manifests:
        counts[manifest["corpus"]["fingerprint"]] = counts.get(manifest["corpus"]["fingerprint"], 0) + 1
    newest = max(manifests, key=lambda m: m.get("created", ""))["corpus"]["fingerprint"]
    return max(counts, key=lambda fingerprint: (counts[fingerprint], fingerprint == newest))
