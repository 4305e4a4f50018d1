"""Copy a seeded subset of the corpus's JPEG files into bench/gpu_subset/ for bench/gpu.sh.

The GPU machine has no copy of the corpus, and everything sent to it must stay under 64 MiB, so
the subset is checked against --max-mb (40 by default) and the copy is refused when it is larger.

    python -m bench.make_gpu_subset --count 1500
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/make_gpu_subset.py`
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BENCH_DIR, DEFAULT_CORPUS, sample_images, setup_logging

logger = logging.getLogger("bench.make_gpu_subset")


def make_subset(corpus: Path, out: Path, count: int, seed: int, max_mb: float) -> dict:
    """Copy count seeded images below corpus/images into out, keeping relative paths; return a summary."""
    images_root = Path(corpus) / "images"
    paths = sample_images(images_root, count, seed)
    size = sum(path.stat().st_size for path in paths)
    if size > max_mb * 1e6:
        raise ValueError(
            f"{len(paths)} images take {size / 1e6:.1f} MB, more than --max-mb {max_mb}. Lower --count."
        )
    if out.exists():
        shutil.rmtree(out)
    for path in paths:
        target = out / path.relative_to(images_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    summary = {"images": len(paths), "megabytes": round(size / 1e6, 2), "seed": seed, "source": str(images_root)}
    logger.info("Copied %d images (%.1f MB) to %s", len(paths), size / 1e6, out)
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Copy a seeded JPEG subset of the corpus for the GPU benchmark.")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus folder with images/ below it")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "gpu_subset", help="destination folder (replaced)")
    parser.add_argument("--count", type=int, default=1500, help="images to copy")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--max-mb", type=float, default=40.0, help="largest subset allowed, in megabytes")
    args = parser.parse_args(argv)
    setup_logging()
    return make_subset(args.corpus, args.out, args.count, args.seed, args.max_mb)


if __name__ == "__main__":
    main()
