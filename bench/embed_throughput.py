"""Embedding throughput of the job end to end over the bare forward pass, per model.

For each model, on the same seeded sample of the corpus's JPEG files and the same batch size:

1. decode + preprocess alone: every file through `core.images.load_image` and the encoder's
   transform in the main process (seconds per image);
2. forward alone: `encode_images` on the preloaded tensors (images per second);
3. end to end: `core.embed.encode_missing`, the job's encode stage (DataLoader workers decode and
   preprocess, the main process runs the model and writes the vector cache), into a temporary cache;
4. the same data path with the time blocked on the DataLoader iterator measured apart
   (`bench.gpu_throughput.timed_pass`), and a cProfile summary of the main process during (3).

The ratio reported is (3) / (2). resnet50 and clip-vit-b-32 run with random-init weights here
(their speed does not depend on the weight values); effnet-lite0 has its real weights.

    python -m bench.embed_throughput            # 128 / 64 / 64 images, 2 rounds
    python -m bench.embed_throughput --full     # 1024 images per model
"""
from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

if __package__ in (None, ""):  # run as `python bench/embed_throughput.py`
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_CORPUS, create_bench_encoder, sample_images, setup_logging, write_results
from bench.gpu_throughput import ImageFiles, timed_pass

logger = logging.getLogger("bench.embed_throughput")

DEFAULT_COUNTS = {"effnet-lite0": 128, "resnet50": 64, "clip-vit-b-32": 64}


def decode_alone(paths: list[Path], transform) -> tuple[list[torch.Tensor], float]:
    """Decode and preprocess every file in this process; return the tensors and the seconds taken."""
    from core.images import load_image

    started = time.perf_counter()
    tensors = [transform(load_image(path)) for path in paths]
    return tensors, time.perf_counter() - started


def forward_alone(encoder, tensors: list[torch.Tensor], batch_size: int) -> float:
    """Return the seconds `encode_images` takes over preloaded batches, after one warm-up batch."""
    batches = [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]
    encoder.encode_images(batches[0])
    started = time.perf_counter()
    for batch in batches:
        encoder.encode_images(batch)
    return time.perf_counter() - started


def job_end_to_end(encoder, paths: list[Path], batch_size: int, workers: int, profile: bool = False) -> tuple[float, str]:
    """Time the job's encode stage on the files, into a throw-away cache; optionally profile it."""
    from core.embed import EmbedConfig, ModelRun, VectorCache, encode_missing

    config = EmbedConfig(models=[encoder.name], batch_size=batch_size, workers=workers)
    hashes = [f"{i:064x}" for i in range(len(paths))]  # distinct keys; real hashes are not needed here
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        cache = VectorCache(Path(folder))
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        encode_missing(encoder, [str(p) for p in paths], hashes, cache, config, ModelRun(encoder.name))
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
    return seconds, profile_summary(profiler) if profiler else ""


def profile_summary(profiler: cProfile.Profile, lines: int = 12) -> str:
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(lines)
    text = stream.getvalue()
    return text[text.find("ncalls"):] if "ncalls" in text else text


def benchmark_model(model: str, count: int, args: argparse.Namespace) -> dict:
    """Measure one model; every figure is the best of args.rounds interleaved repeats.

    Interleaving puts the forward-alone and end-to-end passes of a round next to each other in
    time, so a burst of load from other processes hits both rather than one side of the ratio.
    """
    encoder, weights_kind = create_bench_encoder(model)
    paths = sample_images(args.corpus / "images", count, seed=args.seed)
    n = len(paths)
    decode_s = forward_s = float("inf")
    job_s = {workers: float("inf") for workers in args.workers}
    waited: dict = {}
    summary = ""
    for round_number in range(args.rounds):
        tensors, seconds = decode_alone(paths, encoder.preprocess)
        decode_s = min(decode_s, seconds)
        forward_s = min(forward_s, forward_alone(encoder, tensors, args.batch_size))
        del tensors
        last = round_number == args.rounds - 1
        for workers in args.workers:
            seconds, profile = job_end_to_end(encoder, paths, args.batch_size, workers, profile=last and workers == max(args.workers))
            job_s[workers] = min(job_s[workers], seconds)
            summary = profile or summary
        loader = DataLoader(ImageFiles(paths, encoder.preprocess), batch_size=args.batch_size, num_workers=max(args.workers))
        current = timed_pass(encoder, loader)
        current.pop("vectors")
        if not waited or current["wall_s"] < waited["wall_s"]:
            waited = current

    result = {
        "weights": weights_kind,
        "images": n,
        "rounds": args.rounds,
        "decode_preprocess_ms_per_image": 1000 * decode_s / n,
        "forward_ms_per_image": 1000 * forward_s / n,
        "forward_images_per_s": n / forward_s,
        "decode_share_serial": decode_s / (decode_s + forward_s),
        # With enough spare cores, this many DataLoader workers keep up with the forward pass (an estimate).
        "workers_needed_estimate": decode_s / forward_s,
        "end_to_end": {
            str(workers): {"job_images_per_s": n / job_s[workers], "ratio_to_forward": forward_s / job_s[workers]}
            for workers in args.workers
        },
        "loop_with_max_workers": {
            "workers": max(args.workers),
            "data_wait_share": waited["data_wait_share"],
            "forward_images_per_s_in_loop": waited["forward_images_per_s"],
            "forward_slowdown_in_loop": (n / forward_s) / waited["forward_images_per_s"],
        },
        "profile_top_tottime": summary,
    }
    for workers in args.workers:
        logger.info(
            "%s workers=%d: job %.1f img/s = %.2f x forward alone (%.1f img/s)",
            model, workers, n / job_s[workers], forward_s / job_s[workers], n / forward_s,
        )
    logger.info(
        "%s: decode+preprocess %.1f ms/img, forward %.1f ms/img; loop data-wait share %.2f, forward %.2f x slower in the loop",
        model, result["decode_preprocess_ms_per_image"], result["forward_ms_per_image"],
        waited["data_wait_share"], result["loop_with_max_workers"]["forward_slowdown_in_loop"],
    )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Embedding throughput: job end to end over the forward pass alone.")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus folder with images/ below it")
    parser.add_argument("--models", default=",".join(DEFAULT_COUNTS), help="comma-separated model names")
    parser.add_argument("--images", type=int, default=0, help="images per model (default: 128 effnet-lite0, 64 others)")
    parser.add_argument("--full", action="store_true", help="1024 images per model")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch, the same in every measurement")
    parser.add_argument("--workers", default="1,2", help="comma-separated DataLoader worker counts to time")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repeats; each figure is the best round")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image sample")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    return args


def main(argv: list[str] | None = None) -> dict:
    setup_logging()
    args = parse_args(argv)
    results = {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        count = args.images or (1024 if args.full else DEFAULT_COUNTS.get(model, 96))
        results[model] = benchmark_model(model, count, args)
    payload = {"batch_size": args.batch_size, "torch_threads": torch.get_num_threads(), "models": results}
    write_results("embed_throughput", payload)
    return payload


if __name__ == "__main__":
    main()
