"""Sharded embedding on a local Spark session equals a single-machine build (real effnet-lite0, six images)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.corpus import load_corpus
from core.embed import EmbedConfig, run_embed
from core.index import load_model_index

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed: `pip install pyspark` to test Spark sharding")

MODEL = "effnet-lite0"


@pytest.fixture
def tiny_corpus(tmp_path: Path, wikiart_root: Path) -> Path:
    """Copy six real paintings into a folder-per-type corpus."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java 17 or newer on PATH")
    sources = sorted((wikiart_root / "images" / "Baroque").glob("*.jpg"))[:6]
    for i, source in enumerate(sources):
        folder = tmp_path / "toy" / ("portrait" if i % 2 else "religious")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / source.name)
    return tmp_path / "toy"


def config_for(out: Path) -> EmbedConfig:
    return EmbedConfig(models=[MODEL], out=out, batch_size=4, workers=0, device="cpu")


def test_spark_shards_equal_single_build(tmp_path, tiny_corpus):
    from core.distributed import run_shards_with_spark

    run_embed(load_corpus(tiny_corpus), config_for(tmp_path / "single"))
    single = load_model_index(tmp_path / "single" / "toy" / MODEL)

    results, runs = run_shards_with_spark(tiny_corpus, config_for(tmp_path / "sharded"), shards=3, local_cores=2)
    assert sorted({result.shard for result in results}) == [0, 1, 2]
    assert sum(result.encoded for result in results) == 6
    assert runs[0].encoded == 0  # the driver only read the cache

    merged = load_model_index(tmp_path / "sharded" / "toy" / MODEL)
    assert merged.metadata["id"].tolist() == single.metadata["id"].tolist()
    np.testing.assert_allclose(merged.embeddings, single.embeddings, atol=1e-6, rtol=0)
    assert merged.manifest["corpus"]["fingerprint"] == single.manifest["corpus"]["fingerprint"]


def test_spark_rejects_preset_shard(tmp_path):
    from core.distributed import run_shards_with_spark

    config = EmbedConfig(models=[MODEL], out=tmp_path, shard=(0, 2))
    with pytest.raises(ValueError, match="leave it None"):
        run_shards_with_spark(tmp_path, config, shards=2)
