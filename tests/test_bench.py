"""The benchmark scripts: the GPU script's CPU fallback, the GPU subset copy and the ANN measurements."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench import gpu_throughput
from bench.common import clustered_vectors, percentiles_ms
from bench.index_ann import benchmark_kind, recall_at_k
from bench.make_gpu_subset import make_subset

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def four_images(tmp_path: Path, wikiart_root: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for source in sorted((wikiart_root / "images" / "Rococo").glob("*.jpg"))[:4]:
        shutil.copy(source, folder / source.name)
    return folder


def test_gpu_script_runs_on_cpu(tmp_path, four_images):
    argv = ["--images", str(four_images), "--device", "cpu", "--models", "effnet-lite0", "--batch-size", "2",
            "--workers", "1", "--passes", "1", "--out-dir", str(tmp_path / "out")]
    gpu_throughput.main(argv)
    record = json.loads((tmp_path / "out" / "gpu_throughput.json").read_text())
    result = record["models"]["effnet-lite0"]
    assert result["device"] == "cpu"
    assert result["passes"][0]["images"] == 4
    assert 0.0 <= result["passes"][0]["data_wait_share"] <= 1.0
    assert result["passes"][0]["images_per_s"] > 0
    assert result["passes"][0]["wait_s"] + result["passes"][0]["forward_s"] <= result["passes"][0]["wall_s"] * 1.01
    assert "skipped" in result["faiss_gpu"]
    assert record["machine"]["nproc"] >= 1


def test_gpu_script_skips_missing_package(tmp_path, four_images, monkeypatch):
    def missing(model, device, weights_dir):
        raise ModuleNotFoundError("No module named 'open_clip'")

    monkeypatch.setattr(gpu_throughput, "load_encoder", missing)
    gpu_throughput.main(["--images", str(four_images), "--device", "cpu", "--models", "clip-vit-b-32", "--out-dir", str(tmp_path)])
    record = json.loads((tmp_path / "gpu_throughput.json").read_text())
    assert "open_clip" in record["models"]["clip-vit-b-32"]["skipped"]


def test_gpu_shell_script_parses():
    completed = subprocess.run(["bash", "-n", str(REPO_ROOT / "bench" / "gpu.sh")], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_gpu_subset_copies_seeded_sample(tmp_path, wikiart_root):
    first = make_subset(wikiart_root, tmp_path / "a", count=5, seed=3, max_mb=40)
    make_subset(wikiart_root, tmp_path / "b", count=5, seed=3, max_mb=40)
    copied = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert first["images"] == 5
    assert len(copied) == 5
    assert copied == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.jpg"))


def test_gpu_subset_rejects_oversize(tmp_path, wikiart_root):
    with pytest.raises(ValueError, match="Lower --count"):
        make_subset(wikiart_root, tmp_path / "out", count=5, seed=0, max_mb=0.001)
    assert not (tmp_path / "out").exists()


def test_recall_at_k_hand_checked():
    I_exact = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    I = np.array([[3, 2, 9, 8], [4, 5, 6, 7]])
    assert recall_at_k(I, I_exact) == pytest.approx((2 / 4 + 4 / 4) / 2)


def test_percentiles_in_milliseconds():
    summary = percentiles_ms([0.001, 0.002, 0.003, 0.004, 0.100])
    assert summary["p50_ms"] == pytest.approx(3.0)
    assert summary["n"] == 5
    assert summary["p95_ms"] > summary["p50_ms"]


def test_ann_curve_reaches_target_recall():
    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((8, 32)).astype(np.float32)
    spread = np.full((8, 32), 0.3, dtype=np.float32)
    xb = clustered_vectors(centroids, spread, 3000, seed=1)
    xq = clustered_vectors(centroids, spread, 50, seed=2)
    I_exact = np.argsort(-(xq @ xb.T), axis=1)[:, :10]
    flat = benchmark_kind("flat", xb, xq, I_exact)
    ivf = benchmark_kind("ivf", xb, xq, I_exact)
    assert flat["curve"][0]["recall_at_10"] == pytest.approx(1.0)
    assert [point["setting"] for point in ivf["curve"]][0] == "nprobe=1"
    assert ivf["chosen"]["recall_at_10"] >= 0.95
    assert ivf["index_mib"] > 0


def test_clustered_vectors_are_unit_and_seeded():
    centroids = np.eye(4, 16, dtype=np.float32)
    spread = np.full((4, 16), 0.1, dtype=np.float32)
    x = clustered_vectors(centroids, spread, 100, seed=5)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(x, clustered_vectors(centroids, spread, 100, seed=5))
