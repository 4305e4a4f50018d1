"""The embedding job with a fake encoder: caching, resume, bad images, alignment with metadata."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import embed as embed_module
from core.corpus import load_corpus
from core.embed import EmbedConfig, run_embed
from core.encoders.base import Encoder, PreprocessConfig
from core.index import load_model_index

TESTS_DIR = Path(__file__).parent


class FakeEncoder(Encoder):
    """Mean colour per quadrant: deterministic, fast, and different for different images."""

    def __init__(self, name: str = "fake", salt: str = "", fail_after: int | None = None):
        self.name = name
        self.dim = 12
        self.weights_source = "test"
        self.weights_sha256 = "0" * 63 + ("1" if salt else "0")
        self.preprocess_config = PreprocessConfig(size=16, crop_pct=1.0)
        self.device = torch.device("cpu")
        self.fail_after = fail_after
        self.batches = 0

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.batches += 1
        quadrants = [images[:, :, :8, :8], images[:, :, :8, 8:], images[:, :, 8:, :8], images[:, :, 8:, 8:]]
        x = torch.cat([q.mean(dim=(2, 3)) for q in quadrants], dim=1) + 0.01
        return torch.nn.functional.normalize(x, dim=1)


def make_folder_corpus(root: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("portrait" if i % 2 else "religious")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, size=(20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"painting-{i:03d}.png")
    return root


@pytest.fixture
def fake_encoders(monkeypatch):
    created: list[FakeEncoder] = []

    def create(name, weights=None, device="cpu", resize_mode="center_crop", **options):
        encoder = FakeEncoder(name, salt=os.environ.get("FAKE_SALT", ""), fail_after=options.get("fail_after"))
        encoder.preprocess_config.resize_mode = resize_mode
        created.append(encoder)
        return encoder

    monkeypatch.setattr(embed_module, "create_encoder", create)
    return created


def config_for(out: Path, **overrides) -> EmbedConfig:
    return EmbedConfig(models=["fake"], out=out, batch_size=4, workers=0, chunk_size=4, **overrides)


def test_embed_writes_aligned_index(tmp_path, fake_encoders):
    corpus = load_corpus(make_folder_corpus(tmp_path / "toy"))
    runs = run_embed(corpus, config_for(tmp_path / "indexes"))
    assert runs[0].encoded == 24
    loaded = load_model_index(tmp_path / "indexes" / "toy" / "fake")
    assert len(loaded.metadata) == 24
    # Each row's vector must be the encoding of that row's own image.
    encoder = FakeEncoder()
    for row in (0, 5, 23):
        image = Image.open(loaded.metadata["image_path"].iat[row]).convert("RGB")
        expected = encoder.encode_images(encoder.preprocess(image)[None])[0].numpy()
        np.testing.assert_allclose(loaded.embeddings[row], expected, atol=1e-6)
    assert (tmp_path / "indexes" / "toy" / "validation.md").is_file()


def test_rerun_encodes_nothing(tmp_path, fake_encoders):
    corpus = load_corpus(make_folder_corpus(tmp_path / "toy"))
    run_embed(corpus, config_for(tmp_path / "indexes"))
    again = run_embed(load_corpus(tmp_path / "toy"), config_for(tmp_path / "indexes"))
    assert again[0].encoded == 0
    assert again[0].cached == 24


def test_new_image_encoded_alone(tmp_path, fake_encoders):
    root = make_folder_corpus(tmp_path / "toy")
    run_embed(load_corpus(root), config_for(tmp_path / "indexes"))
    Image.new("RGB", (20, 20), (10, 200, 30)).save(root / "portrait" / "new.png")
    again = run_embed(load_corpus(root), config_for(tmp_path / "indexes"))
    assert again[0].encoded == 1
    assert load_model_index(tmp_path / "indexes" / "toy" / "fake").manifest["count"] == 25


def test_changed_model_does_not_mix_vectors(tmp_path, fake_encoders, monkeypatch):
    root = make_folder_corpus(tmp_path / "toy")
    run_embed(load_corpus(root), config_for(tmp_path / "indexes"))
    monkeypatch.setenv("FAKE_SALT", "new weights")
    again = run_embed(load_corpus(root), config_for(tmp_path / "indexes"))
    assert again[0].encoded == 24
    padded = run_embed(load_corpus(root), config_for(tmp_path / "indexes", resize_mode="pad"))
    assert padded[0].encoded == 24
    manifest = load_model_index(tmp_path / "indexes" / "toy" / "fake").manifest
    assert manifest["preprocess"]["resize_mode"] == "pad"


def test_interrupted_run_resumes_to_clean_build(tmp_path, fake_encoders, monkeypatch):
    root = make_folder_corpus(tmp_path / "toy")
    run_embed(load_corpus(root), config_for(tmp_path / "clean"))
    clean = load_model_index(tmp_path / "clean" / "toy" / "fake")

    original = embed_module.create_encoder
    monkeypatch.setattr(embed_module, "create_encoder", lambda *a, **k: original(*a, **k, fail_after=3))
    with pytest.raises(KeyboardInterrupt):
        run_embed(load_corpus(root), config_for(tmp_path / "resumed"))
    assert not (tmp_path / "resumed" / "toy" / "fake").exists()

    monkeypatch.setattr(embed_module, "create_encoder", original)
    resumed_run = run_embed(load_corpus(root), config_for(tmp_path / "resumed"))
    assert resumed_run[0].cached == 12
    assert resumed_run[0].encoded == 12
    resumed = load_model_index(tmp_path / "resumed" / "toy" / "fake")
    assert resumed.metadata["id"].tolist() == clean.metadata["id"].tolist()
    np.testing.assert_allclose(resumed.embeddings, clean.embeddings, atol=1e-6)


def test_bad_images_skipped_and_reported(tmp_path, fake_encoders):
    root = make_folder_corpus(tmp_path / "toy", n=8)
    (root / "portrait" / "not-an-image.png").write_text("plain text, not a PNG")
    good = (root / "portrait" / "painting-001.png").read_bytes()
    (root / "portrait" / "truncated.png").write_bytes(good[: len(good) // 2])
    corpus = load_corpus(root)
    runs = run_embed(corpus, config_for(tmp_path / "indexes"))
    assert set(runs[0].failed) == {"portrait/not-an-image.png", "portrait/truncated.png"}
    loaded = load_model_index(tmp_path / "indexes" / "toy" / "fake")
    assert len(loaded.metadata) == 8
    assert corpus.report.skipped_count == 2
    assert "not-an-image.png" in (tmp_path / "indexes" / "toy" / "validation.md").read_text()


def test_shards_fill_cache_for_single_build(tmp_path, fake_encoders):
    root = make_folder_corpus(tmp_path / "toy")
    run_embed(load_corpus(root), config_for(tmp_path / "single"))
    single = load_model_index(tmp_path / "single" / "toy" / "fake")
    encoded = 0
    for shard in range(3):
        runs = run_embed(load_corpus(root), config_for(tmp_path / "sharded", shard=(shard, 3)))
        encoded += runs[0].encoded
    assert encoded == 24
    merged_run = run_embed(load_corpus(root), config_for(tmp_path / "sharded"))
    assert merged_run[0].encoded == 0
    merged = load_model_index(tmp_path / "sharded" / "toy" / "fake")
    assert merged.metadata["id"].tolist() == single.metadata["id"].tolist()
    np.testing.assert_array_equal(merged.embeddings, single.embeddings)
