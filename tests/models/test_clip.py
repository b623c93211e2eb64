"""The CLIP factory: the shipped tiny model offline, local checkpoints, the multilingual layout, errors."""

from __future__ import annotations

import json

import pytest
import torch

from laion_hf.models.clip import (
    TINY,
    TINY_MULTILINGUAL,
    TINY_QUALITY,
    TINY_WEIGHTS,
    ModelLoadError,
    load_clip,
    sha256_file,
    tiny_thresholds,
)
from laion_hf.models.multilingual import Dense, MultilingualCheckpointError, MultilingualTextEncoder
from laion_hf.synthetic import sample


@pytest.fixture(scope="module")
def tiny():
    return load_clip(TINY, multilingual=True)


def test_tiny_model_loads_offline_with_checksums(tiny):
    assert tiny.checksums[str(TINY_WEIGHTS)] == sha256_file(TINY_WEIGHTS)
    assert any(path.startswith(str(TINY_MULTILINGUAL)) for path in tiny.checksums)
    pixels = tiny.preprocess(sample(0).image).unsqueeze(0)
    assert pixels.shape == (1, 3, 64, 64)
    image = tiny.encode_images(pixels)
    text = tiny.encode_texts(["a red circle on a blue background"])
    assert image.shape == text.shape and torch.allclose(image.norm(dim=-1), torch.ones(1))


def test_tiny_model_matches_its_own_captions_better_than_others(tiny):
    scenes = [sample(seed, unsafe=False, watermark=False) for seed in range(100, 116)]
    images = tiny.encode_images(torch.stack([tiny.preprocess(s.image) for s in scenes]))
    texts = tiny.encode_texts([s.captions["en"] for s in scenes])
    similarity = images @ texts.T
    assert (similarity.diagonal() > similarity.mean(dim=1)).all()


def test_multilingual_student_lands_near_the_english_embedding(tiny):
    scene = sample(3)
    english = tiny.encode_texts([scene.captions["en"]])
    for language in ("de", "fr", "es"):
        translated = tiny.encode_multilingual([scene.captions[language]])
        unrelated = tiny.encode_multilingual(["zzz qqq"])
        assert (english @ translated.T).item() > (english @ unrelated.T).item()


def test_local_checkpoint_file_loads_and_is_hashed(tmp_path, tiny):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    again = load_clip(TINY, pretrained=str(path))
    assert again.checksums == {str(path): sha256_file(path)}
    assert again.multilingual is None
    pixels = tiny.preprocess(sample(1).image).unsqueeze(0)
    assert torch.allclose(again.encode_images(pixels), tiny.encode_images(pixels), atol=1e-5)


def test_unknown_names_and_tags_are_user_errors():
    with pytest.raises(ModelLoadError, match="unknown CLIP model 'ViT-Q-99'"):
        load_clip("ViT-Q-99")
    with pytest.raises(ModelLoadError, match="unknown pretrained 'no-such-tag'.*openai"):
        load_clip("ViT-B-32", pretrained="no-such-tag")


def test_calibrated_thresholds_are_shipped():
    thresholds = tiny_thresholds()
    quality = json.loads(TINY_QUALITY.read_text())
    assert thresholds == {"threshold": quality["threshold"], "multilingual_threshold": quality["multilingual_threshold"]}
    assert 0 < thresholds["threshold"] < 1 and thresholds["threshold"] != 0.28


def test_sentence_transformers_layout_round_trip_with_legacy_dense_weights(tmp_path):
    """The real clip-ViT-B-32-multilingual-v1 stores 2_Dense as pytorch_model.bin; both forms load."""
    student = MultilingualTextEncoder.from_pretrained(TINY_MULTILINGUAL)
    student.save_pretrained(tmp_path / "copy")
    dense = tmp_path / "copy" / "2_Dense"
    torch.save(student.dense[0].state_dict(), dense / "pytorch_model.bin")
    (dense / "model.safetensors").unlink()
    copy = MultilingualTextEncoder.from_pretrained(tmp_path / "copy")
    texts = ["zwei rote Kreise in einer Reihe auf einem blauen Hintergrund", "un carré vert sur un fond noir"]
    with torch.no_grad():
        assert torch.allclose(copy.encode(texts), student.encode(texts), atol=1e-6)


def test_broken_multilingual_folder_names_the_file(tmp_path):
    (tmp_path / "modules.json").write_text("[{not json")
    with pytest.raises(MultilingualCheckpointError, match=r"modules.json: invalid JSON at line 1"):
        MultilingualTextEncoder.from_pretrained(tmp_path)
    with pytest.raises(MultilingualCheckpointError, match="unsupported Dense activation"):
        Dense(4, 4, True, "torch.nn.modules.activation.Softsign")


def test_missing_multilingual_encoder_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MultilingualCheckpointError, match="not a local folder and not downloadable"):
        MultilingualTextEncoder.from_pretrained(str(tmp_path / "no-such-folder"))
