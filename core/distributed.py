"""Sharded embedding on Apache Spark: one task per shard into a shared vector cache, then one index.

Each task runs `run_embed` with `EmbedConfig.shard = (i, n)`, which encodes only the images whose id
hashes to shard i and writes their vectors to the cache under `config.out`. When every task has
finished, the driver runs `run_embed` without a shard: it reads all vectors back from the cache,
encodes nothing, and writes one index, the same as a single-machine build.

On a cluster, `config.out` and the corpus must be paths that every executor can read and write
(a shared filesystem), and the executors need this repository and its requirements installed.
With no session passed, a local one is created: `local[N]`, bound to 127.0.0.1, without the web UI.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.corpus import CorpusOptions, load_corpus
from core.embed import EmbedConfig, ModelRun, run_embed

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class ShardResult:
    """The outcome of one shard task for one model, in plain values that pickle back from an executor."""

    shard: int  # i of (i, n)
    model: str
    encoded: int  # images encoded by this task
    cached: int  # images of this shard already in the cache
    failed: dict[str, str]  # corpus id -> reason the image was skipped
    seconds: float  # wall time of the task, model loading included
    host: str  # executor host name


def run_shard(corpus_path: str, options: CorpusOptions | None, name: str | None, config: EmbedConfig, shard: tuple[int, int]) -> list[ShardResult]:
    """Encode shard (i, n) of a corpus into the vector cache; the body of one Spark task."""
    started = time.perf_counter()
    corpus = load_corpus(corpus_path, options)
    if name:
        corpus.name = name
    runs = run_embed(corpus, dataclasses.replace(config, shard=shard))
    seconds = time.perf_counter() - started
    host = os.uname().nodename
    return [ShardResult(shard[0], run.model, run.encoded, run.cached, dict(run.failed), seconds, host) for run in runs]


def run_shards_with_spark(
    corpus_path: str | os.PathLike,
    config: EmbedConfig,
    shards: int,
    options: CorpusOptions | None = None,
    name: str | None = None,
    spark=None,
    local_cores: int = 2,
) -> tuple[list[ShardResult], list[ModelRun]]:
    """Run `shards` shard tasks on Spark, then build each model's index in the driver.

    `spark` is an existing SparkSession (a cluster); without one, a local session of `local_cores`
    cores is created for the call and stopped afterwards. Returns the shard results and the runs
    of the final build. Raises RuntimeError when pyspark is not installed.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}.")
    if config.shard is not None:
        raise ValueError(f"config.shard is {config.shard}; leave it None, each task sets its own shard.")
    corpus_path = str(Path(corpus_path).resolve())
    config = dataclasses.replace(config, out=Path(config.out).resolve())

    started = time.perf_counter()
    with _spark_session(spark, local_cores) as session:
        tasks = session.sparkContext.parallelize(range(shards), shards)
        nested = tasks.map(lambda i: run_shard(corpus_path, options, name, config, (i, shards))).collect()
    results = [result for per_shard in nested for result in per_shard]
    logger.info("%d shard tasks finished in %.1f s", shards, time.perf_counter() - started)
    for result in results:
        logger.info("shard %d/%d %s on %s: %d encoded, %d cached, %.1f s", result.shard, shards, result.model, result.host, result.encoded, result.cached, result.seconds)

    corpus = load_corpus(corpus_path, options)
    if name:
        corpus.name = name
    runs = run_embed(corpus, config)
    for run in runs:
        if run.encoded:
            # Only a shard that failed or an image added since the tasks ran leaves work for the driver.
            logger.warning("The driver encoded %d %s images that no shard had cached.", run.encoded, run.model)
    return results, runs


@contextmanager
def _spark_session(spark, local_cores: int) -> Iterator:
    """Yield the given session, or a local one bound to loopback that is stopped on exit."""
    if spark is not None:
        yield spark
        return
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:
        raise RuntimeError(
            "Sharded embedding on Spark needs pyspark (and Java 17 or newer): `pip install pyspark`."
        ) from error

    # The JVM and its Python workers inherit this environment: loopback only, this interpreter, this repository.
    overrides = {
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])),
    }
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        session = (
            SparkSession.builder.master(f"local[{local_cores}]")
            .appName("semgap-embed-shards")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.python.worker.reuse", "false")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("WARN")
        try:
            yield session
        finally:
            session.stop()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
