"""Query latency p50/p95 through core.search.Searcher, model loading excluded.

- image, text and corpus-id queries on the real corpus index (effnet-lite0 by default): image
  queries are corpus paintings as PIL images (preprocess + encode + search); text queries use the
  aligned model `effnet-lite0+minilm` when indexes/.models/ contains it, else clip-vit-b-32 with
  random-init weights over the real corpus metadata with synthetic 512-d vectors (the latency of
  encode + search is what is measured; the answers mean nothing);
- pre-encoded query vectors (`Searcher.by_vector`) on a large synthetic index, FAISS flat against
  a NumPy brute force (matrix product + argpartition) over the same vectors;
- query encoding alone per model: one image through preprocess + `encode_images`, one text
  through `encode_texts`.

    python -m bench.query_latency             # synthetic index of 200,000 vectors
    python -m bench.query_latency --full      # 1,000,000 vectors (2 GiB)
"""
from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python bench/query_latency.py`
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_INDEXES, create_bench_encoder, percentiles_ms, setup_logging, time_calls, write_results

logger = logging.getLogger("bench.query_latency")

TEXTS = [
    "a mythological painting", "the crucifixion of Christ", "a portrait of a nobleman", "a still life with fruit",
    "a battle scene", "a landscape with a river", "Venus and Adonis", "a family in an interior",
    "a saint in prayer", "a hunting scene", "the annunciation", "a rococo fête galante",
]
ENCODE_MODELS = ("effnet-lite0", "resnet50", "clip-vit-b-32")
ALIGNED_MODEL = "effnet-lite0+minilm"


def corpus_queries(args: argparse.Namespace) -> dict:
    """Time image and corpus-id queries on the real index, and text queries on a text-capable model."""
    from PIL import Image

    from core.index import load_model_index
    from core.search import Searcher

    model_index = load_model_index(args.indexes / args.model)
    encoder, weights_kind = create_bench_encoder(args.model)
    searcher = Searcher(model_index, encoder)
    rng = random.Random(args.seed)
    rows = rng.sample(range(len(model_index.metadata)), args.queries)
    ids = [model_index.metadata["id"].iat[row] for row in rows]
    images = [Image.open(model_index.metadata["image_path"].iat[row]).convert("RGB") for row in rows]  # decode excluded

    result = {
        "model": args.model,
        "weights": weights_kind,
        "index_size": len(model_index.metadata),
        "index_type": model_index.manifest["index"]["type"],
        "by_id": percentiles_ms(time_calls(lambda i: searcher.by_id(i, args.k), ids)),
        "by_image": percentiles_ms(time_calls(lambda im: searcher.by_image(im, args.k), images)),
        "by_text": text_queries(model_index, args),
    }
    return result


def text_queries(model_index, args: argparse.Namespace) -> dict:
    """Time by_text on the aligned model when trained, else on random-init CLIP.

    The model's own corpus index is used when built; otherwise synthetic unit vectors of the
    model's dimension stand in over the real metadata. The timing is real, the results are meaningless.
    """
    from core.index import ModelIndex, build_index, load_model_index
    from core.search import Searcher

    models_dir = args.indexes.parent / ".models"
    if (models_dir / ALIGNED_MODEL).is_dir():
        from core.encoders.aligned import load_aligned_encoder

        encoder, source = load_aligned_encoder(ALIGNED_MODEL, models_dir), f"aligned {ALIGNED_MODEL} (trained heads)"
    else:
        encoder, _ = create_bench_encoder("clip-vit-b-32")
        source = "clip-vit-b-32 with random-init weights"
    if (args.indexes / encoder.name / "manifest.json").is_file():
        text_index = load_model_index(args.indexes / encoder.name)
        source += ", its corpus index"
    else:
        rng = np.random.default_rng(args.seed)
        xb = rng.standard_normal((len(model_index.metadata), encoder.dim), dtype=np.float32)
        xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        index, info = build_index(xb)
        manifest = {**model_index.manifest, "model": encoder.name, "has_text_tower": True, "index": info}
        text_index = ModelIndex(Path("synthetic"), manifest, index, xb, model_index.metadata)
        source += ", synthetic vectors over the real metadata"
    searcher = Searcher(text_index, encoder)
    texts = [TEXTS[i % len(TEXTS)] for i in range(args.queries)]
    return {"source": source, **percentiles_ms(time_calls(lambda t: searcher.by_text(t, args.k), texts))}


def query_encoding(args: argparse.Namespace) -> dict:
    """Time encoding one query alone (image: preprocess + forward; text: tokenise + forward) per model."""
    import torch
    from PIL import Image

    from core.index import load_model_index

    metadata = load_model_index(args.indexes / args.model, mmap=True).metadata
    paths = random.Random(args.seed).sample(list(metadata["image_path"]), min(args.queries, 30))
    images = [Image.open(path).convert("RGB") for path in paths]
    results = {}
    for model in args.encode_models:
        encoder, weights_kind = create_bench_encoder(model)
        entry = {"weights": weights_kind}
        entry["image"] = percentiles_ms(time_calls(lambda im: encoder.encode_images(encoder.preprocess(im).unsqueeze(0)), images))
        if encoder.has_text_tower:
            with torch.inference_mode():
                entry["text"] = percentiles_ms(time_calls(lambda t: encoder.encode_texts([t]), TEXTS * 2))
        results[model] = entry
        logger.info("%s: image encode p50 %.1f ms", model, entry["image"]["p50_ms"])
    return results


def synthetic_index_queries(args: argparse.Namespace) -> dict:
    """Time by_vector on a large synthetic index and FAISS flat against NumPy brute force."""
    import pandas as pd

    from bench.synthetic import synthetic_vectors
    from core.index import ModelIndex, build_index
    from core.search import Searcher

    xb = synthetic_vectors(args.synthetic_size, seed=args.seed)
    xq = synthetic_vectors(args.queries, seed=args.seed + 1)
    index, info = build_index(xb)
    metadata = pd.DataFrame({"id": [f"synthetic/{i}" for i in range(len(xb))]})
    model_index = ModelIndex(Path("synthetic"), {"model": "synthetic", "index": info}, index, xb, metadata)
    searcher = Searcher(model_index)

    def numpy_top_k(q: np.ndarray) -> np.ndarray:
        scores = xb @ q  # (n,)
        top = np.argpartition(-scores, args.k)[: args.k]
        return top[np.argsort(-scores[top])]

    faiss_times = time_calls(lambda q: model_index.search(q[None, :], args.k), list(xq))
    numpy_times = time_calls(numpy_top_k, list(xq))
    same = np.mean([set(model_index.search(q[None, :], args.k)[1][0]) == set(numpy_top_k(q)) for q in xq[:20]])
    return {
        "size": len(xb),
        "dim": int(xb.shape[1]),
        "by_vector": percentiles_ms(time_calls(lambda q: searcher.by_vector(q, args.k), list(xq))),
        "faiss_flat_search": percentiles_ms(faiss_times),
        "numpy_brute_force": percentiles_ms(numpy_times),
        "numpy_over_faiss_p50": float(np.median(numpy_times) / np.median(faiss_times)),
        "same_top_k_share": float(same),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Query latency through the Searcher API.")
    parser.add_argument("--indexes", type=Path, default=DEFAULT_INDEXES, help="corpus folder of indexes")
    parser.add_argument("--model", default="effnet-lite0", help="model folder of the real index")
    parser.add_argument("--queries", type=int, default=100, help="timed queries per kind")
    parser.add_argument("-k", type=int, default=10, help="results per query")
    parser.add_argument("--synthetic-size", type=int, default=0, help="vectors in the synthetic index (default 200,000; --full 1,000,000)")
    parser.add_argument("--full", action="store_true", help="1M-vector synthetic index")
    parser.add_argument("--encode-models", default=",".join(ENCODE_MODELS), help="models whose query encoding is timed")
    parser.add_argument("--seed", type=int, default=0, help="seed of query choice and vectors")
    args = parser.parse_args(argv)
    args.synthetic_size = args.synthetic_size or (1_000_000 if args.full else 200_000)
    args.encode_models = [m.strip() for m in args.encode_models.split(",") if m.strip()]
    return args


def main(argv: list[str] | None = None) -> dict:
    setup_logging()
    args = parse_args(argv)
    started = time.perf_counter()
    payload = {
        "k": args.k,
        "corpus": corpus_queries(args),
        "encoding": query_encoding(args),
        "synthetic": synthetic_index_queries(args),
    }
    payload["seconds"] = time.perf_counter() - started
    write_results("query_latency", payload)
    return payload


if __name__ == "__main__":
    main()
