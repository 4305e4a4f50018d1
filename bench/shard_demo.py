"""Sharded embedding on a real subset: shards 0/3, 1/3, 2/3, then the merge, against a single build.

The script makes a corpus of a seeded subset of the real corpus under bench/out/shard-demo/:
symbolic links to the JPEG files and the matching rows of labels.csv. It runs the CLI commands
that it logs with effnet-lite0, then compares the merged index with a single-machine build: the
same ids in the same order, and vectors equal within --atol.

    python -m bench.shard_demo --count 300
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python bench/shard_demo.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_CORPUS, OUT_DIR, REPO_ROOT, sample_images, setup_logging, write_results

logger = logging.getLogger("bench.shard_demo")


def make_linked_corpus(corpus: Path, out: Path, count: int, seed: int) -> Path:
    """Write out/labels.csv with the sampled rows and link out/images/... to the real files."""
    images_root = corpus / "images"
    chosen = {path.relative_to(corpus).as_posix() for path in sample_images(images_root, count, seed)}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with open(corpus / "labels.csv", newline="", encoding="utf-8") as source:
        reader = csv.DictReader(source)
        rows = [row for row in reader if row["image"] in chosen]
        fields = reader.fieldnames
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as target:
        writer = csv.DictWriter(target, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        link = out / row["image"]
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(corpus / row["image"], link)
    return out


def run_cli(arguments: list[str]) -> dict:
    command = [sys.executable, "-m", "core", "embed", *arguments]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed with exit code {completed.returncode}:\n{completed.stderr[-3000:]}")
    command_line = "python -m core embed " + " ".join(arguments)
    logger.info("%s (%.1f s)", command_line, time.perf_counter() - started)
    return {"command": command_line, "seconds": time.perf_counter() - started, "stdout": completed.stdout.strip()[-600:]}


def main(argv: list[str] | None = None) -> dict:
    from core.index import load_model_index

    parser = argparse.ArgumentParser(description="Shards then merge on a real subset, compared with a single build.")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the real corpus folder")
    parser.add_argument("--count", type=int, default=300, help="images in the subset")
    parser.add_argument("--shards", type=int, default=3, help="number of shards")
    parser.add_argument("--model", default="effnet-lite0", help="model to embed with")
    parser.add_argument("--atol", type=float, default=1e-6, help="largest allowed absolute vector difference")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset")
    args = parser.parse_args(argv)
    setup_logging()

    base = OUT_DIR / "shard-demo"
    corpus = make_linked_corpus(args.corpus, base / "corpus", args.count, args.seed)
    for folder in ("sharded", "single"):
        shutil.rmtree(base / folder, ignore_errors=True)
    common = ["--corpus", str(corpus), "--name", "demo", "--models", args.model, "--workers", "1"]
    steps = [run_cli([*common, "--out", str(base / "sharded"), "--shard", f"{i}/{args.shards}"]) for i in range(args.shards)]
    steps.append(run_cli([*common, "--out", str(base / "sharded")]))
    steps.append(run_cli([*common, "--out", str(base / "single")]))

    merged = load_model_index(base / "sharded" / "demo" / args.model)
    single = load_model_index(base / "single" / "demo" / args.model)
    difference = float(np.abs(merged.embeddings - single.embeddings).max())
    comparison = {
        "rows": len(single.metadata),
        "same_ids_in_order": merged.metadata["id"].tolist() == single.metadata["id"].tolist(),
        "max_abs_difference": difference,
        "within_atol": difference <= args.atol,
        "same_corpus_fingerprint": merged.manifest["corpus"]["fingerprint"] == single.manifest["corpus"]["fingerprint"],
        "index_type": merged.manifest["index"]["type"],
    }
    logger.info("Comparison: %s", comparison)
    payload = {"steps": steps, "comparison": comparison, "atol": args.atol}
    write_results("shard_demo", payload)
    if not (comparison["same_ids_in_order"] and comparison["within_atol"]):
        raise SystemExit(f"The merged index differs from the single build: {comparison}")
    return payload


if __name__ == "__main__":
    main()
