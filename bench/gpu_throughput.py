"""Images per second per model and the share of time the accelerator waits for data.

Runs the job's data path (a DataLoader whose workers decode and preprocess JPEG files, pinned
memory on CUDA) into each encoder's `encode_images` (autocast, channels_last and non-blocking
copies on CUDA). The loop times two things per batch:

- wait: the main process blocked in `next()` on the DataLoader iterator;
- forward: `encode_images` followed by `torch.cuda.synchronize()` on CUDA.

Data-wait share = wait / (wall time of the pass). The script needs only torch, torchvision, numpy
and Pillow. A model whose package (timm, open_clip) is missing is skipped with the reason, and so
is the FAISS GPU index when faiss has no GPU support. It runs on the CPU too (`--device cpu`).

    python -m bench.gpu_throughput --images bench/gpu_subset --device cuda
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

if __package__ in (None, ""):  # run as `python bench/gpu_throughput.py`
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT_DIR, WEIGHTS_DIR, list_images, setup_logging, write_results

logger = logging.getLogger("bench.gpu_throughput")

MODELS = ("resnet50", "effnet-lite0", "clip-vit-b-32")


class ImageFiles(Dataset):
    """Decodes and preprocesses image files with the product's loader and the encoder's transform."""

    def __init__(self, paths: list[Path], transform):
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from core.images import load_image

        return self.transform(load_image(self.paths[i]))  # (3, H, W)


def random_init_file(model: str, folder: Path) -> Path:
    """Write a random-init weights file for model with the packages present; ImportError when one is missing."""
    folder.mkdir(parents=True, exist_ok=True)
    if model == "effnet-lite0":
        import timm

        path = folder / "effnet-lite0-random-init.pth"
        if not path.is_file():
            torch.save(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).state_dict(), path)
        return path
    from bench.common import random_init_weights

    return random_init_weights(model, folder)


def load_encoder(model: str, device: str, weights_dir: Path):
    """Return (encoder, weights kind), real weights when found offline, else random-init ones.

    Raises ImportError when the model's package is not installed.
    """
    from core.encoders import WeightsNotFoundError, create_encoder

    try:
        return create_encoder(model, device=device), "real"
    except WeightsNotFoundError:
        logger.info("No real weights for %s here; timing it with random-init weights.", model)
    return create_encoder(model, weights=random_init_file(model, weights_dir), device=device), "random-init"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pass(encoder, loader: DataLoader) -> dict:
    """Run one pass over the loader; return wall, wait and forward seconds, images and the vectors."""
    device = encoder.device
    wait_s = forward_s = 0.0
    images = 0
    vectors = []
    started = time.perf_counter()
    iterator = iter(loader)
    while True:
        blocked = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        wait_s += time.perf_counter() - blocked

        computing = time.perf_counter()
        vectors.append(encoder.encode_images(batch))  # (B, d) on the CPU: the copy back synchronises
        synchronize(device)
        forward_s += time.perf_counter() - computing
        images += len(batch)
    wall_s = time.perf_counter() - started
    return {
        "images": images,
        "wall_s": wall_s,
        "wait_s": wait_s,
        "forward_s": forward_s,
        "images_per_s": images / wall_s,
        "forward_images_per_s": images / forward_s,
        "data_wait_share": wait_s / wall_s,
        "vectors": torch.cat(vectors).numpy() if vectors else np.zeros((0, 0), np.float32),
    }


def benchmark_model(model: str, paths: list[Path], args: argparse.Namespace) -> dict:
    try:
        encoder, weights_kind = load_encoder(model, args.device, args.weights_dir)
    except ImportError as error:
        return {"skipped": f"package missing: {error}. Bring its wheel in .whl/ to time {model}."}
    size = encoder.preprocess_config.size

    # Warm-up on a synthetic batch: cuDNN algorithm choice and autocast caches are not timed.
    warm = torch.randn(args.batch_size, 3, size, size)
    for _ in range(2):
        encoder.encode_images(warm)
    synchronize(encoder.device)

    loader = DataLoader(
        ImageFiles(paths, encoder.preprocess),
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=encoder.device.type == "cuda",
        persistent_workers=False,
    )
    passes = []
    for number in range(args.passes):
        result = timed_pass(encoder, loader)
        vectors = result.pop("vectors")
        logger.info(
            "%s pass %d: %.1f img/s, forward alone %.1f img/s, data-wait share %.2f",
            model, number + 1, result["images_per_s"], result["forward_images_per_s"], result["data_wait_share"],
        )
        passes.append(result)
    return {
        "weights": weights_kind,
        "device": str(encoder.device),
        "dim": encoder.dim,
        "passes": passes,
        "faiss_gpu": faiss_gpu_search(vectors),
    }


def faiss_gpu_search(xb: np.ndarray) -> dict:
    """Time a GPU flat index over the vectors of the last pass, or return the reason it was skipped."""
    try:
        import faiss
    except ImportError:
        return {"skipped": "faiss is not installed on this machine"}
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return {"skipped": "faiss has no GPU support here (faiss-cpu build or no visible GPU)"}
    resources = faiss.StandardGpuResources()
    index = faiss.GpuIndexFlatIP(resources, xb.shape[1])
    index.add(xb)
    started = time.perf_counter()
    index.search(xb, 10)
    seconds = time.perf_counter() - started
    return {"queries": len(xb), "k": 10, "search_s": seconds, "queries_per_s": len(xb) / seconds}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=Path("bench/gpu_subset"), help="folder of JPEG files (searched recursively)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 128 on CUDA, 32 on the CPU)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader processes (default: up to 8)")
    parser.add_argument("--max-images", type=int, default=0, help="use only the first N images (0: all)")
    parser.add_argument("--passes", type=int, default=2, help="timed passes per model; the first also warms the page cache")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR, help="where random-init weights files are written")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="folder of the JSON result")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; use --device cpu.")
    if args.batch_size is None:
        args.batch_size = 128 if args.device.startswith("cuda") else 32
    return args


def main(argv: list[str] | None = None) -> dict:
    setup_logging()
    # Never download weights: the GPU machine has no network and this machine reaches no hub.
    os.environ.setdefault("SEMGAP_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    paths = list_images(args.images)
    if args.max_images:
        paths = paths[: args.max_images]
    logger.info("%d images from %s on %s, batch %d, %d workers", len(paths), args.images, args.device, args.batch_size, args.workers)
    results = {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        results[model] = benchmark_model(model, paths, args)
        if "skipped" in results[model]:
            logger.warning("%s skipped: %s", model, results[model]["skipped"])
    payload = {
        "images": len(paths),
        "image_folder": str(args.images),
        "batch_size": args.batch_size,
        "workers": args.workers,
        "device": args.device,
        "models": results,
    }
    write_results("gpu_throughput", payload, args.out_dir)
    return payload


if __name__ == "__main__":
    main()
