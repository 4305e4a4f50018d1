"""FAISS artefacts: index types against exact search, atomic writes, stale manifests, the query API."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.index import (
    SCHEMA_VERSION,
    IndexConfig,
    StaleIndexError,
    build_index,
    load_corpus_indexes,
    load_model_index,
    write_model_index,
)
from core.search import Searcher


def unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def metadata_for(n: int) -> pd.DataFrame:
    types = np.array(["portrait", "religious", "landscape", "mythological"])[np.arange(n) % 4]
    return pd.DataFrame(
        {
            "id": [f"img/{i:04d}.jpg" for i in range(n)],
            "title": [f"Painting {i}" for i in range(n)],
            "artist": [f"Artist {i % 7}" for i in range(n)],
            "type": types,
            "type_group": np.where(np.isin(types, ["portrait", "landscape"]), "additive", "narrative"),
        }
    )


def manifest_for(fingerprint: str = "f" * 64) -> dict:
    return {"model": "fake", "has_text_tower": False, "corpus": {"name": "toy", "root": "/toy", "fingerprint": fingerprint}}


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_matches_exact_search(kind):
    xb = unit_vectors(2000, 32, seed=1)
    xq = unit_vectors(50, 32, seed=2)
    index, info = build_index(xb, IndexConfig(kind=kind, nprobe=64))
    assert info["type"] == kind
    _, I = index.search(xq, 10)
    exact = np.argsort(-(xq @ xb.T), axis=1)[:, :10]
    recall = np.mean([len(set(I[q]) & set(exact[q])) / 10 for q in range(len(xq))])
    assert recall >= (1.0 if kind == "flat" else 0.9)


def test_auto_index_type_by_size():
    config = IndexConfig(kind="auto")
    assert config.resolve(1000) == "flat"
    assert config.resolve(1_000_000) == "ivf"
    with pytest.raises(ValueError, match="valid choices"):
        IndexConfig(kind="lsh").resolve(10)


def test_written_index_keeps_rows_aligned(tmp_path):
    xb = unit_vectors(40, 8)
    metadata = metadata_for(40)
    write_model_index(tmp_path / "toy" / "fake", xb, metadata, manifest_for())
    loaded = load_model_index(tmp_path / "toy" / "fake")
    assert loaded.manifest["schema_version"] == SCHEMA_VERSION
    assert loaded.manifest["count"] == 40
    np.testing.assert_array_equal(loaded.embeddings, xb)
    assert loaded.metadata["id"].tolist() == metadata["id"].tolist()
    # Vector id i must come back as metadata row i.
    D, I = loaded.search(xb[[7]], 1)
    assert I[0, 0] == 7
    assert loaded.metadata["id"].iat[I[0, 0]] == "img/0007.jpg"


def test_mmap_load_matches_plain_load(tmp_path):
    xb = unit_vectors(30, 8)
    write_model_index(tmp_path / "fake", xb, metadata_for(30), manifest_for())
    mapped = load_model_index(tmp_path / "fake", mmap=True)
    np.testing.assert_array_equal(np.asarray(mapped.embeddings), xb)
    assert mapped.search(xb[[3]], 1)[1][0, 0] == 3


def test_rewrite_replaces_whole_folder(tmp_path):
    target = tmp_path / "fake"
    write_model_index(target, unit_vectors(10, 4), metadata_for(10), manifest_for())
    write_model_index(target, unit_vectors(12, 4, seed=5), metadata_for(12), manifest_for())
    assert load_model_index(target).manifest["count"] == 12
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "fake"]
    assert leftovers == []


def test_misaligned_write_rejected(tmp_path):
    with pytest.raises(ValueError, match="must align"):
        write_model_index(tmp_path / "fake", unit_vectors(10, 4), metadata_for(9), manifest_for())
    assert not (tmp_path / "fake").exists()


def test_old_schema_rejected_with_rebuild_command(tmp_path):
    write_model_index(tmp_path / "fake", unit_vectors(5, 4), metadata_for(5), manifest_for())
    manifest_path = tmp_path / "fake" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 0
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StaleIndexError, match="python -m core embed --corpus /toy --models fake"):
        load_model_index(tmp_path / "fake")


def test_mismatched_corpus_fingerprint_reported(tmp_path):
    write_model_index(tmp_path / "a", unit_vectors(5, 4), metadata_for(5), {**manifest_for("1" * 64), "model": "a"})
    write_model_index(tmp_path / "b", unit_vectors(5, 4), metadata_for(5), {**manifest_for("2" * 64), "model": "b"})
    loaded, problems = load_corpus_indexes(tmp_path)
    assert len(loaded) == 1
    assert len(problems) == 1
    assert "another version of corpus" in next(iter(problems.values()))


def test_search_by_id_excludes_query(tmp_path):
    xb = unit_vectors(50, 8)
    write_model_index(tmp_path / "fake", xb, metadata_for(50), manifest_for())
    searcher = Searcher(load_model_index(tmp_path / "fake"))
    result = searcher.by_id("img/0010.jpg", k=5)
    assert len(result.hits) == 5
    assert "img/0010.jpg" not in result.hits["id"].tolist()
    exact = [i for i in np.argsort(-(xb @ xb[10])) if i != 10][:5]
    assert result.hits["id"].tolist() == [f"img/{i:04d}.jpg" for i in exact]
    assert result.hits["rank"].tolist() == [1, 2, 3, 4, 5]


def test_search_filters_match_brute_force(tmp_path):
    xb = unit_vectors(80, 8)
    metadata = metadata_for(80)
    write_model_index(tmp_path / "fake", xb, metadata, manifest_for())
    searcher = Searcher(load_model_index(tmp_path / "fake"))
    result = searcher.by_id("img/0001.jpg", k=4, filters={"type": ["religious", "mythological"]})
    narrative = [i for i in np.argsort(-(xb @ xb[1])) if i != 1 and metadata["type_group"].iat[i] == "narrative"]
    assert result.hits["id"].tolist() == [f"img/{i:04d}.jpg" for i in narrative[:4]]
    with pytest.raises(ValueError, match="valid filters"):
        searcher.by_id("img/0001.jpg", k=4, filters={"colour": ["red"]})


def test_unknown_id_names_the_id(tmp_path):
    write_model_index(tmp_path / "fake", unit_vectors(5, 4), metadata_for(5), manifest_for())
    searcher = Searcher(load_model_index(tmp_path / "fake"))
    with pytest.raises(KeyError, match="nope.jpg"):
        searcher.by_id("nope.jpg", k=3)


def test_corpus_file_decides_stale_model(tmp_path):
    write_model_index(tmp_path / "a", unit_vectors(5, 4), metadata_for(5), {**manifest_for("1" * 64), "model": "a"})
    # b is the newest build but carries another corpus fingerprint, as a tampered manifest would.
    write_model_index(tmp_path / "b", unit_vectors(5, 4), metadata_for(5), {**manifest_for("2" * 64), "model": "b"})
    (tmp_path / "corpus.json").write_text(json.dumps({"fingerprint": "1" * 64}))
    loaded, problems = load_corpus_indexes(tmp_path)
    assert list(loaded) == ["a"]
    assert "--models b" in problems["b"]


def test_unreadable_manifest_names_file(tmp_path):
    write_model_index(tmp_path / "toy" / "fake", unit_vectors(5, 4), metadata_for(5), manifest_for())
    (tmp_path / "toy" / "fake" / "manifest.json").write_text("{not json")
    with pytest.raises(StaleIndexError, match="manifest.json"):
        load_model_index(tmp_path / "toy" / "fake")
    _, problems = load_corpus_indexes(tmp_path / "toy")
    assert "--out" in problems["fake"]
