"""The CLIP factory: the shipped tiny model offline, every checkpoint layout a user may hand over, errors.

Real CLIP weights are not available offline, so the load paths run on a small
CLIP the tests build (``tests/models/small_clip.py``) and save in OpenAI's
TorchScript layout, as a state dict and as safetensors.
"""

from __future__ import annotations

import fractions
import json
import re
import zipfile

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

from laion_hf.models.clip import (
    SHIPPED,
    TINY,
    TINY_MULTILINGUAL,
    TINY_QUALITY,
    TINY_WEIGHTS,
    ModelLoadError,
    Weights,
    load_clip,
    resolve_weights,
    sha256_file,
    tiny_thresholds,
)
from laion_hf.models.multilingual import Dense, MultilingualCheckpointError, MultilingualTextEncoder
from laion_hf.testing.synthetic import sample
from tests.models.small_clip import SMALL, register_small, save_openai_archive, small_model


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
    assert again.weights.origin is None and tiny.weights.origin == SHIPPED  # only the shipped file is "laion-hf"
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


# --- checkpoints as users hold them, on a small CLIP the tests make ------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-clip")
    register_small(folder / "configs")
    archive = folder / "ViT-small.pt"
    state = save_openai_archive(small_model(quick_gelu=True, seed=0), archive)
    return folder, archive, state


def _inputs():
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, 32, 32, generator=generator)
    tokens = open_clip.get_tokenizer(SMALL)(["a photo of a dog", "ein Foto", "a red circle on blue"])
    return pixels, tokens


def _reference(state: dict[str, torch.Tensor], quick_gelu: bool) -> torch.nn.Module:
    model = open_clip.create_model(SMALL, force_quick_gelu=quick_gelu).eval()
    model.load_state_dict({k: v.float() for k, v in state.items() if k in model.state_dict()})
    return model


@torch.no_grad()
def test_openais_torchscript_archive_loads_as_open_clip_loads_it_with_quickgelu(small):
    _, archive, state = small
    with pytest.raises(RuntimeError, match="weights_only"):  # why a plain weights-only load refused ViT-B-32.pt
        torch.load(archive, map_location="cpu", weights_only=True)
    clip = load_clip(SMALL, pretrained=str(archive))
    assert clip.weights.torchscript and clip.weights.quick_gelu
    assert isinstance(clip.model.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(clip.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert clip.checksums == {str(archive): sha256_file(archive)}
    pixels, tokens = _inputs()
    quick, plain = _reference(state, quick_gelu=True), _reference(state, quick_gelu=False)
    assert torch.equal(clip.model.encode_image(pixels), quick.encode_image(pixels))
    assert torch.equal(clip.model.encode_text(tokens), quick.encode_text(tokens))
    assert not torch.allclose(clip.model.encode_image(pixels), plain.encode_image(pixels), atol=1e-3)
    # open_clip's own OpenAI loader (torch.jit.load + build from the state dict) gives the same model
    openai = open_clip.load_openai_model(str(archive), precision="fp32", device="cpu")
    assert torch.equal(clip.model.encode_image(pixels), openai.encode_image(pixels))


@torch.no_grad()
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_checkpoints_load_into_the_named_architecture(small, tmp_path, suffix):
    from safetensors.torch import save_file

    source = small_model(quick_gelu=False, seed=1)
    path = tmp_path / f"small{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": source.state_dict()}, path)  # a training checkpoint's wrapper
    else:
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    clip = load_clip(SMALL, pretrained=str(path))
    assert clip.weights == Weights(SMALL, file=str(path))  # no QuickGELU: a state dict does not say, the name does
    pixels, tokens = _inputs()
    assert torch.equal(clip.model.encode_image(pixels), source.encode_image(pixels))
    assert torch.equal(clip.model.encode_text(tokens), source.encode_text(tokens))


def _zip_with_a_text_file() -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "loader_error"),
    [
        ("appended.pt", b"a checkpoint it is not", "IndexError: pop from empty list"),
        ("empty.pt", b"", "EOFError"),
        ("header.safetensors", b"hello, not a header", "SafetensorError"),
        ("notes.pt", _zip_with_a_text_file(), "RuntimeError"),
        ("pickled.pt", None, "UnpicklingError"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_a_model_load_error(small, tmp_path, name, content, loader_error):
    path = tmp_path / name
    if content is None:
        torch.save({"weights": fractions.Fraction(1, 3)}, path)  # pickled objects other than tensors
    else:
        path.write_bytes(content)
    expected = rf"{re.escape(str(path))}: not a readable {SMALL} checkpoint \({re.escape(loader_error)}"
    with pytest.raises(ModelLoadError, match=expected):
        load_clip(SMALL, pretrained=str(path))


def test_a_checkpoint_of_another_architecture_is_refused(small):
    _, archive, _ = small
    with pytest.raises(ModelLoadError, match=rf"{re.escape(str(archive))}: not a readable ViT-B-32-quickgelu checkpoint"):
        load_clip("ViT-B-32", pretrained=str(archive))


def _plant_hub_file(cache, repo: str, filename: str, content: bytes) -> str:
    """A file as huggingface_hub's cache stores a download (refs/main -> snapshots/<commit>/<file>)."""
    commit = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(content)
    return str(snapshot / filename)


def test_openai_tag_means_the_quickgelu_model_found_in_the_hub_cache(tmp_path):
    """The tag stays a tag (open_clip gets it, with its preprocessing); QuickGELU comes from the tag's config."""
    planted = _plant_hub_file(tmp_path, "timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors", b"x")
    for name in ("ViT-B-32", "ViT-B-32-quickgelu"):
        weights = resolve_weights(name, "openai", cache_dir=str(tmp_path))
        assert weights == Weights("ViT-B-32-quickgelu", tag="openai", file=planted, origin="openai", quick_gelu=True)
    assert resolve_weights("ViT-B-32", "default", cache_dir=str(tmp_path)).tag == "openai"
    assert resolve_weights(TINY, "default").file == str(TINY_WEIGHTS)
    assert resolve_weights("ViT-B-32", None) == Weights("ViT-B-32")  # random weights, asked for explicitly
