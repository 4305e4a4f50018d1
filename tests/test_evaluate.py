"""The evaluation job, the 2-D maps and the report on small synthetic indexes."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.cli import main
from core.evaluate import EvaluateConfig, evaluate_corpus, prepare_labels
from core.index import write_model_index
from core.project import ProjectConfig, write_projections
from core.index import load_corpus_indexes
from core.report import build_report

TYPES = ["portrait", "landscape", "religious", "mythological", "genre"]


def clustered_corpus(n: int = 150, d: int = 16, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Embeddings clustered by type, additive types tighter than narrative ones."""
    rng = np.random.default_rng(seed)
    types = np.array(TYPES)[np.arange(n) % len(TYPES)]
    centres = {t: rng.normal(size=d) for t in TYPES}
    spread = {"portrait": 0.3, "landscape": 0.3, "genre": 0.3, "religious": 1.2, "mythological": 1.2}
    X = np.stack([centres[t] + spread[t] * rng.normal(size=d) for t in types]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    metadata = pd.DataFrame(
        {
            "id": [f"img/{i:04d}.jpg" for i in range(n)],
            "image_path": [f"/nowhere/{i:04d}.jpg" for i in range(n)],
            "title": [f"Painting {i}" for i in range(n)],
            "artist": [f"Artist {i % 11}" for i in range(n)],
            "artist_id": [f"artist-{i % 11}" for i in range(n)],
            "year": pd.array([1600 + i % 150 for i in range(n)], dtype="Int64"),
            "type": types,
            "type_group": ["additive" if t in ("portrait", "landscape", "genre") else "narrative" for t in types],
            "school": np.array(["Dutch", "Italian", "Flemish"])[np.arange(n) % 3],
            "timeframe": ["" for _ in range(n)],
            "style": np.array(["Baroque", "Rococo"])[np.arange(n) % 2],
            "description": ["" for _ in range(n)],
            "type_source": np.array(["wga", "wikiart", "title-rule"])[np.arange(n) % 3],
        }
    )
    return X, metadata


@pytest.fixture
def corpus_dir(tmp_path):
    X, metadata = clustered_corpus()
    for model, noise in (("fake-a", 0.0), ("fake-b", 0.5)):
        Y = X + noise * np.random.default_rng(1).normal(size=X.shape).astype(np.float32)
        Y /= np.linalg.norm(Y, axis=1, keepdims=True)
        manifest = {
            "model": model,
            "weights": {"source": "test", "sha256": "ab" * 32},
            "preprocess": {"resize_mode": "center_crop"},
            "has_text_tower": False,
            "corpus": {"name": "toy", "root": "/toy", "fingerprint": "c" * 64},
        }
        write_model_index(tmp_path / "indexes" / "toy" / model, Y, metadata, manifest)
    return tmp_path / "indexes" / "toy"


def test_evaluate_writes_tables_with_footer(corpus_dir, tmp_path):
    out = tmp_path / "results" / "toy"
    summaries = evaluate_corpus(corpus_dir, out, EvaluateConfig(n_boot=50, texture_sample=0))
    assert set(summaries) == {"fake-a", "fake-b"}
    for name in ("h1_structure", "h2_retrieval", "h2_paired"):
        table = pd.read_parquet(out / f"{name}.parquet")
        assert (out / f"{name}.csv").is_file()
        for column in ("value", "ci_low", "ci_high", "label_set", "seed"):
            assert column in table.columns, (name, column)
    h2 = pd.read_parquet(out / "h2_retrieval.parquet")
    assert {"model", "weights_sha256", "task", "group", "aggregation", "metric", "n"} <= set(h2.columns)
    # Narrative types were drawn with a wider spread, so the gap factor must exceed 1.
    gap = h2[(h2["model"] == "fake-a") & (h2["task"] == "image_to_image") & (h2["metric"] == "gap_err_p@10")]
    assert (gap["value"] > 1).all()
    h1 = pd.read_parquet(out / "h1_structure.parquet")
    type_ratio = h1[(h1["model"] == "fake-a") & (h1["attribute"] == "type") & (h1["subset"] == "full") & (h1["metric"] == "ratio")]
    shuffled = h1[(h1["model"] == "fake-a") & (h1["attribute"] == "type") & (h1["subset"] == "full") & (h1["metric"] == "shuffled_ratio")]
    assert type_ratio["value"].iat[0] < 0.8
    assert shuffled["value"].iat[0] == pytest.approx(1.0, abs=0.05)
    summary = json.loads((out / "summary_fake-a.json").read_text())
    assert "not registered" in summary["encoder_error"] or "Unknown model" in summary["encoder_error"]


def test_evaluate_twice_gives_identical_tables(corpus_dir, tmp_path):
    config = EvaluateConfig(n_boot=30, texture_sample=0)
    evaluate_corpus(corpus_dir, tmp_path / "one", config)
    evaluate_corpus(corpus_dir, tmp_path / "two", config)
    for name in ("h1_structure", "h2_retrieval", "h2_paired"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / f"{name}.parquet"), pd.read_parquet(tmp_path / "two" / f"{name}.parquet"))


def test_curated_labels_drop_title_rule_types():
    _, metadata = clustered_corpus(30)
    labels = prepare_labels(metadata, EvaluateConfig(label_set="curated"))
    assert (labels.loc[metadata["type_source"] == "title-rule", "type"] == "").all()
    assert (labels.loc[metadata["type_source"] == "wga", "type"] != "").all()
    # A missing timeframe is derived from the year in 50-year bins.
    assert labels["timeframe"].iat[0] == "1551-1600"
    with pytest.raises(ValueError, match="valid choices"):
        prepare_labels(metadata, EvaluateConfig(label_set="some"))


def test_projections_are_deterministic(corpus_dir, tmp_path):
    indexes, _ = load_corpus_indexes(corpus_dir)
    config = ProjectConfig(methods=("pca",))
    first = pd.read_parquet(write_projections(indexes, tmp_path / "p1", config))
    second = pd.read_parquet(write_projections(indexes, tmp_path / "p2", config))
    pd.testing.assert_frame_equal(first, second)
    assert set(first["model"]) == {"fake-a", "fake-b"}
    assert len(first) == 2 * 150


def test_report_prints_every_section(corpus_dir, tmp_path, capsys):
    assert main(["evaluate", "--indexes", str(corpus_dir), "--out", str(tmp_path / "results"), "--n-boot", "20", "--texture-sample", "0"]) == 0
    report = build_report(tmp_path / "results" / "toy")
    assert "## H1" in report
    assert "### image_to_image_excl_artist" in report
    assert "gap_err_p@10" in report
    assert "Seed: 0" in report
    assert main(["report", "--results", str(tmp_path / "results")]) == 0
    assert "Semantic gap report: toy, all labels" in capsys.readouterr().out


def test_report_without_results_names_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m core evaluate"):
        build_report(tmp_path)


def test_texture_table_with_registered_encoder(tmp_path):
    from PIL import Image

    from core.encoders import register_model
    from tests.test_embed import FakeEncoder

    X, metadata = clustered_corpus(40)
    rng = np.random.default_rng(3)
    for i, path in enumerate(metadata["image_path"]):
        metadata.loc[i, "image_path"] = str(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    encoder = FakeEncoder("fake-texture")
    register_model("fake-texture", replace=True)(lambda **kwargs: encoder)
    from core.images import load_image

    X = np.concatenate([encoder.encode_images(encoder.preprocess(load_image(p))[None]).numpy() for p in metadata["image_path"]])
    manifest = {
        "model": "fake-texture",
        "weights": {"source": "test", "sha256": encoder.weights_sha256},
        "preprocess": {"resize_mode": "center_crop"},
        "has_text_tower": False,
        "corpus": {"name": "toy", "root": str(tmp_path), "fingerprint": "c" * 64},
    }
    write_model_index(tmp_path / "indexes" / "toy" / "fake-texture", X, metadata, manifest)
    evaluate_corpus(tmp_path / "indexes" / "toy", tmp_path / "results", EvaluateConfig(n_boot=20, texture_sample=12))
    h3 = pd.read_parquet(tmp_path / "results" / "h3_texture.parquet")
    assert set(h3["perturbation"]) == {"shuffle2", "shuffle4", "shuffle8", "grayscale", "blur", "shuffle_mean", "random_pair"}
    reliance = h3[(h3["type"] == "all") & (h3["perturbation"] == "shuffle_mean") & (h3["metric"] == "cosine")]
    assert reliance["n"].iat[0] == 12
    # Quadrant mean colours survive a 2x2 patch shuffle only as a permutation, so cosine stays high but below 1.
    assert 0.5 < reliance["value"].iat[0] <= 1.0
    summary = json.loads((tmp_path / "results" / "summary_fake-texture.json").read_text())
    assert summary["h3_texture_reliance"] == pytest.approx(reliance["value"].iat[0])


def test_label_sets_share_one_table(corpus_dir, tmp_path):
    out = tmp_path / "results" / "toy"
    evaluate_corpus(corpus_dir, out, EvaluateConfig(n_boot=20, texture_sample=0))
    evaluate_corpus(corpus_dir, out, EvaluateConfig(n_boot=20, texture_sample=0, label_set="curated"))
    evaluate_corpus(corpus_dir, out, EvaluateConfig(n_boot=20, texture_sample=0, label_set="curated"))
    h2 = pd.read_parquet(out / "h2_retrieval.parquet")
    assert set(h2["label_set"]) == {"all", "curated"}
    # Rerunning one label set replaces its rows instead of adding a copy.
    assert (h2["label_set"] == "all").sum() == (h2["label_set"] == "curated").sum()
    assert (out / "summary_fake-a-curated.json").is_file()
    assert "curated labels" in build_report(out, label_set="curated")
    assert "Labels: curated." in build_report(out, label_set="curated")


def test_evaluate_without_labels_still_writes(tmp_path):
    X, metadata = clustered_corpus(30)
    for column in ("type", "type_group", "school", "timeframe", "style", "type_source"):
        metadata[column] = ""
    metadata["year"] = pd.array([None] * 30, dtype="Int64")
    manifest = {
        "model": "fake-a", "weights": {"source": "test", "sha256": "ab" * 32}, "preprocess": {"resize_mode": "center_crop"},
        "has_text_tower": False, "corpus": {"name": "bare", "root": "/bare", "fingerprint": "c" * 64},
    }
    write_model_index(tmp_path / "indexes" / "bare" / "fake-a", X, metadata, manifest)
    summaries = evaluate_corpus(tmp_path / "indexes" / "bare", tmp_path / "results", EvaluateConfig(n_boot=10, texture_sample=0))
    assert summaries["fake-a"]["h2_gap_err_p@10"]["pooled"] is None


def test_evaluate_empty_folder_names_command(tmp_path):
    from core.evaluate import corpus_dirs

    with pytest.raises(FileNotFoundError, match="python -m core embed"):
        corpus_dirs(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        corpus_dirs(tmp_path / "missing")
