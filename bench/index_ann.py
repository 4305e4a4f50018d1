"""Flat, IVF-Flat and HNSW on clustered synthetic vectors: build time, memory, QPS and recall@10.

Vectors: 512-d, drawn around k-means centroids of the real effnet-lite0 embeddings (see
bench/synthetic.py). Queries: 1,000 fresh draws from the same distribution. Ground truth: exact
top-10 of IndexFlatIP. Each index is built with core.index.build_index, then nprobe (IVF) or
efSearch (HNSW) is swept. Queries go as one batch, which FAISS spreads over threads, so QPS is a
batch figure. The chosen setting is the fastest one with recall@10 >= 0.95.

    python -m bench.index_ann                  # 100,000 vectors
    python -m bench.index_ann --full           # 100k, 300k, 1M; a kind whose next build is
                                               # projected past --max-build-s is skipped
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python bench/index_ann.py`
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT_DIR, rss_bytes, setup_logging, write_results

logger = logging.getLogger("bench.index_ann")

KINDS = ("flat", "ivf", "hnsw")
NPROBE_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128)
EF_SEARCH_SWEEP = (16, 32, 64, 128, 256)
K = 10
TARGET_RECALL = 0.95


def recall_at_k(I: np.ndarray, I_exact: np.ndarray) -> float:
    """Return the mean share of the exact top-k found in the approximate top-k."""
    k = I_exact.shape[1]
    hits = [len(np.intersect1d(I[q, :k], I_exact[q])) for q in range(len(I))]
    return float(np.mean(hits)) / k


def set_search_parameter(index, kind: str, value: int) -> None:
    import faiss

    if kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = value
    elif kind == "hnsw":
        index.hnsw.efSearch = value


def measure_search(index, xq: np.ndarray, I_exact: np.ndarray, repeats: int = 3) -> tuple[float, float]:
    """Return (queries per second, recall@K) of one batch search, the best of a few repeats."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        _, I = index.search(xq, K)
        best = min(best, time.perf_counter() - started)
    return len(xq) / best, recall_at_k(I, I_exact)


def benchmark_kind(kind: str, xb: np.ndarray, xq: np.ndarray, I_exact: np.ndarray) -> dict:
    import faiss

    from core.index import IndexConfig, build_index

    rss_before = rss_bytes()
    started = time.perf_counter()
    index, info = build_index(xb, IndexConfig(kind=kind))
    build_s = time.perf_counter() - started
    result = {
        "params": info["params"],
        "build_s": build_s,
        "rss_delta_mib": (rss_bytes() - rss_before) / 2**20,
        "index_mib": len(faiss.serialize_index(index)) / 2**20,
        "curve": [],
    }
    sweep = {"ivf": ("nprobe", NPROBE_SWEEP), "hnsw": ("efSearch", EF_SEARCH_SWEEP)}.get(kind)
    if sweep is None:
        qps, recall = measure_search(index, xq, I_exact)
        result["curve"].append({"setting": None, "qps": qps, "recall_at_10": recall})
    else:
        name, values = sweep
        for value in values:
            set_search_parameter(index, kind, value)
            qps, recall = measure_search(index, xq, I_exact)
            result["curve"].append({"setting": f"{name}={value}", "qps": qps, "recall_at_10": recall})
    good = [point for point in result["curve"] if point["recall_at_10"] >= TARGET_RECALL]
    result["chosen"] = max(good, key=lambda point: point["qps"]) if good else None
    del index
    return result


def benchmark_size(n: int, xq: np.ndarray, kinds: list[str], seed: int) -> dict:
    import faiss

    from bench.synthetic import synthetic_vectors

    xb = synthetic_vectors(n, seed)
    exact = faiss.IndexFlatIP(xb.shape[1])
    exact.add(xb)
    _, I_exact = exact.search(xq, K)
    del exact
    results = {}
    for kind in kinds:
        results[kind] = benchmark_kind(kind, xb, xq, I_exact)
        chosen = results[kind]["chosen"]
        logger.info(
            "n=%d %s: build %.1f s, %.0f MiB; chosen %s at %.0f QPS, recall@10 %.3f",
            n, kind, results[kind]["build_s"], results[kind]["index_mib"],
            chosen and chosen["setting"], chosen["qps"] if chosen else 0, chosen["recall_at_10"] if chosen else 0,
        )
    return results


def plot_curves(results: dict, path: Path) -> str:
    """Write the recall/QPS curves as a PNG; return the path, or the reason the export failed."""
    try:
        import plotly.graph_objects as go

        figure = go.Figure()
        for n, kinds in results.items():
            for kind, result in kinds.items():
                if "curve" not in result:
                    continue
                curve = result["curve"]
                figure.add_trace(go.Scatter(
                    x=[p["recall_at_10"] for p in curve], y=[p["qps"] for p in curve],
                    text=[p["setting"] or "exact" for p in curve], mode="lines+markers", name=f"{kind}, n={n}",
                ))
        figure.add_vline(x=TARGET_RECALL, line_dash="dot")
        figure.update_layout(
            title="Recall@10 against queries per second (batch of 1,000 queries, 512-d synthetic clustered)",
            xaxis_title="recall@10", yaxis_title="queries per second", yaxis_type="log", width=900, height=560,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.write_image(str(path))
        return str(path)
    except Exception as error:  # kaleido needs a browser; the table stays the record when it is missing
        logger.warning("PNG export failed: %s", error)
        return f"export failed: {error}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Flat, IVF and HNSW on clustered synthetic vectors.")
    parser.add_argument("--sizes", default="", help="comma-separated index sizes (default: 100000; --full: 100000,300000,1000000)")
    parser.add_argument("--full", action="store_true", help="sweep up to 1M vectors")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated index types")
    parser.add_argument("--queries", type=int, default=1000, help="queries per measurement")
    parser.add_argument("--max-build-s", type=float, default=600.0, help="skip a size whose projected build time exceeds this")
    parser.add_argument("--plot", type=Path, default=OUT_DIR / "ann_recall_qps.png", help="PNG of the curves")
    parser.add_argument("--seed", type=int, default=0, help="seed of the vectors")
    parser.add_argument("--tag", default="", help="suffix of the result file, bench/out/index_ann-<tag>.json, to keep several runs")
    args = parser.parse_args(argv)
    default = "100000,300000,1000000" if args.full else "100000"
    args.sizes = [int(s) for s in (args.sizes or default).split(",")]
    args.kinds = [k.strip() for k in args.kinds.split(",")]
    return args


def main(argv: list[str] | None = None) -> dict:
    from bench.synthetic import synthetic_vectors

    setup_logging()
    args = parse_args(argv)
    xq = synthetic_vectors(args.queries, seed=args.seed + 10_000)  # (nq, 512), disjoint draws from the base
    results: dict[int, dict] = {}
    last_build: dict[str, tuple[int, float]] = {}
    for n in args.sizes:
        kinds = []
        results[n] = {}
        for kind in args.kinds:
            if kind in last_build:
                # An estimate: HNSW and flat builds grow about linearly in n, while IVF training grows
                # with n * nlist, and nlist = 4 sqrt(n), so as n^1.5.
                previous_n, previous_s = last_build[kind]
                projected = previous_s * (n / previous_n) ** (1.5 if kind == "ivf" else 1.0)
                if projected > args.max_build_s:
                    results[n][kind] = {"skipped": f"projected build {projected:.0f} s exceeds --max-build-s {args.max_build_s:.0f}"}
                    continue
            kinds.append(kind)
        results[n].update(benchmark_size(n, xq, kinds, args.seed))
        for kind in kinds:
            last_build[kind] = (n, results[n][kind]["build_s"])
    name = f"index_ann-{args.tag}" if args.tag else "index_ann"
    plot = plot_curves(results, args.plot.with_name(f"{name}.png") if args.tag else args.plot)
    payload = {"dim": int(xq.shape[1]), "queries": len(xq), "k": K, "target_recall": TARGET_RECALL, "plot": plot, "sizes": results}
    write_results(name, payload)
    return payload


if __name__ == "__main__":
    main()
