"""Helpers shared by the benchmark scripts: machine facts, timing, JSON output, test weights, data.

Only torch, numpy and Pillow are needed at import time, so the GPU script can use it on a
machine without faiss or pandas.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
WEIGHTS_DIR = OUT_DIR / "weights"
DEFAULT_CORPUS = Path(os.environ.get("SEMGAP_DATA", "/work/shared")) / "corpora" / "wikiart-baroque-rococo"
DEFAULT_INDEXES = REPO_ROOT / "indexes" / "wikiart-baroque-rococo"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LOAD_AT_IMPORT = os.getloadavg()  # 1, 5 and 15-minute load averages when the benchmark started


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def machine_info() -> dict:
    """Return the facts needed to read a figure: cores, CPU model, memory, load and library versions."""
    info = {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": round(_meminfo_kib("MemTotal") / 2**20, 1),
        "load_avg_at_start": list(LOAD_AT_IMPORT),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    try:
        import faiss

        info["faiss"] = faiss.__version__
    except ImportError:
        info["faiss"] = None
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_kib(key: str) -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    """Return the resident set size of this process, from /proc/self/status (0 where unavailable)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def percentiles_ms(seconds: list[float]) -> dict:
    """Return p50, p95, mean and count of a list of durations, in milliseconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "mean_ms": float(values.mean()),
        "n": int(values.size),
    }


def time_calls(function, arguments: list, warmup: int = 2) -> list[float]:
    """Call function(argument) for each argument and return the durations in seconds, after warm-up calls."""
    for argument in arguments[:warmup]:
        function(argument)
    durations = []
    for argument in arguments:
        started = time.perf_counter()
        function(argument)
        durations.append(time.perf_counter() - started)
    return durations


def write_results(name: str, payload: dict, out_dir: Path = OUT_DIR) -> Path:
    """Write payload with the machine facts and the command line to <out_dir>/<name>.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, "-m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_avg_at_end": list(os.getloadavg()),
        **payload,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    logger.info("Wrote %s", path)
    return path


def list_images(root: Path) -> list[Path]:
    """Return the image files below root, sorted, so that a seeded sample is the same on every machine."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} not found. Pass --images or --corpus with an existing folder.")
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise FileNotFoundError(f"No .jpg/.jpeg/.png files below {root}.")
    return images


def sample_images(root: Path, count: int, seed: int = 0) -> list[Path]:
    """Return a seeded sample of count image files below root (all of them when there are fewer)."""
    images = list_images(root)
    if count >= len(images):
        return images
    return sorted(random.Random(seed).sample(images, count))


def random_init_weights(model: str, folder: Path = WEIGHTS_DIR) -> Path:
    """Write (once) and return a random-init weights file for a model that has no real weights here.

    Vectors from these weights carry no meaning; they serve timing only.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if model == "resnet50":
        path = folder / "resnet50-random-init.pth"
        if not path.is_file():
            import torch
            from torchvision.models import resnet50

            torch.manual_seed(0)
            torch.save(resnet50(weights=None).state_dict(), path)
        return path
    if model == "clip-vit-b-32":
        path = folder / "clip-vit-b-32-random-init.pt"
        if not path.is_file():
            from core.encoders.openclip import save_random_init_checkpoint

            save_random_init_checkpoint("ViT-B-32", path)
        return path
    raise ValueError(f"No random-init weights are defined for model {model!r}; valid: resnet50, clip-vit-b-32.")


# Models with real weights on this machine; the others run with random-init weights.
REAL_WEIGHTS_MODELS = ("effnet-lite0",)


def create_bench_encoder(model: str, device: str = "cpu"):
    """Create an encoder by registry name, with random-init weights where no real weights exist here."""
    from core.encoders import create_encoder

    weights = None if model in REAL_WEIGHTS_MODELS else random_init_weights(model)
    encoder = create_encoder(model, weights=weights, device=device)
    return encoder, ("real" if weights is None else "random-init")


def clustered_vectors(centroids: np.ndarray, spread: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Draw n unit vectors around centroids (k, d) with per-cluster, per-dimension std spread (k, d).

    Cluster sizes follow a Zipf-like law, so a few clusters are large as in real corpora.
    """
    rng = np.random.default_rng(seed)
    k, d = centroids.shape
    weights = 1.0 / np.arange(1, k + 1) ** 0.7
    labels = rng.choice(k, size=n, p=weights / weights.sum())
    xb = np.empty((n, d), dtype=np.float32)
    step = 100_000  # bounded temporary memory for large n
    for start in range(0, n, step):
        part = labels[start:start + step]
        noise = rng.standard_normal((len(part), d), dtype=np.float32)
        xb[start:start + step] = centroids[part] + noise * spread[part]
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    return xb
