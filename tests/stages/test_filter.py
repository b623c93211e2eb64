"""The CLIP embed and similarity-filter stages with the shipped tiny model."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from laion_hf.core.stage import split_kept
from laion_hf.models.clip import TINY, tiny_thresholds
from laion_hf.stages.embed import DECODE_ERROR, SIMILARITY, ClipEmbed
from laion_hf.stages.filter import SimilarityFilter
from laion_hf.testing.synthetic import mismatched_caption, sample
from tests.models import real_images


@pytest.fixture(scope="module")
def embed_stage():
    stage = ClipEmbed(TINY, multilingual=True, batch_size=8, workers=2)
    stage.setup()
    return stage


def test_non_english_rows_use_the_multilingual_encoder(embed_stage):
    scenes = [sample(seed, unsafe=False, watermark=False) for seed in (40, 41, 42, 43)]
    languages = ["en", "de", "fr", "es"]
    batch = pa.table({
        "key": ["a", "b", "c", "d"],
        "caption": [s.captions[lang] for s, lang in zip(scenes, languages)],
        "language": languages,
        "image": [s.encode() for s in scenes],
        "image_ext": ["jpg"] * 4,
    })
    out = embed_stage(batch)
    clip = embed_stage.clip
    pixels = torch.stack([clip.preprocess(Image.open(io.BytesIO(b))) for b in batch["image"].to_pylist()])
    images = clip.encode_images(pixels)
    tower = (images * clip.encode_texts(batch["caption"].to_pylist())).sum(-1)
    student = (images * clip.encode_multilingual(batch["caption"].to_pylist())).sum(-1)
    similarity = torch.tensor(out[SIMILARITY].to_pylist())
    assert torch.allclose(similarity[0], tower[0], atol=1e-4)  # English: the CLIP text tower
    assert torch.allclose(similarity[1:], student[1:], atol=1e-4)  # de/fr/es: the multilingual student
    assert not torch.allclose(similarity[1:], tower[1:], atol=1e-2)


def test_non_english_matched_kept_and_mismatched_dropped(embed_stage):
    scenes = [sample(seed) for seed in range(60, 84)]
    languages = ["de", "fr", "es"] * 8
    matched = [i % 2 == 0 for i in range(24)]
    batch = pa.table({
        "key": [str(i) for i in range(24)],
        "caption": [s.captions[lang] if m else mismatched_caption(s.attributes, lang, seed=i)
                    for i, (s, lang, m) in enumerate(zip(scenes, languages, matched))],
        "language": languages,
        "image": [s.encode() for s in scenes],
        "image_ext": ["jpg"] * 24,
    })
    kept = set(split_kept(SimilarityFilter(**tiny_thresholds())(embed_stage(batch)))[0]["key"].to_pylist())
    assert not kept & {str(i) for i in range(24) if not matched[i]}, "a mismatched caption was kept"
    assert len(kept) >= 11, f"only {len(kept)} of 12 matched non-English captions kept"


def test_undecodable_images_are_counted_and_dropped_rows_skipped(embed_stage):
    good = sample(5).encode()
    batch = pa.table({
        "key": ["ok", "corrupt", "earlier"],
        "caption": [sample(5).captions["en"]] * 3,
        "image": [good, b"\xff\xd8 not a jpeg", good],
        "image_ext": ["jpg"] * 3,
        "drop_reason": [None, None, "language"],
    })
    out = embed_stage(batch)
    assert out["drop_reason"].to_pylist() == [None, DECODE_ERROR, "language"]
    assert out[SIMILARITY].null_count == 2 and out[SIMILARITY][0].as_py() is not None


def test_real_image_formats_embed_as_they_are_displayed(embed_stage):
    """JPEG, PNG with alpha, CMYK JPEG, WebP, EXIF-rotated JPEG of a large real photo: the same embedding as the
    picture they show (a full decode, as open_clip's preprocess expects); a PNG broken mid-decode is marked."""
    batch, names = real_images.format_batch(real_images.photo())
    out = embed_stage(batch)
    n = len(names)
    assert out["drop_reason"].to_pylist() == [None] * (2 * n) + [DECODE_ERROR]
    assert out[SIMILARITY].null_count == 1
    embeddings = np.array(out["image_embedding"].to_pylist()[: 2 * n], dtype=np.float32)
    for i, name in enumerate(names):
        # Identical pixels give identical embeddings; the alpha matting may round one level differently.
        atol = 2e-3 if name == "png-alpha" else 0
        np.testing.assert_allclose(embeddings[i], embeddings[n + i], atol=atol, err_msg=name)


# --- thresholds that belong to the weights ------------------------------------------------------------------------


def test_thresholds_belong_to_the_weights(tmp_path):
    from laion_hf.core.errors import UserError
    from laion_hf.models.clip import TINY_WEIGHTS, Weights, resolve_weights
    from laion_hf.stages.filter import choose_thresholds

    calibrated = tiny_thresholds()
    assert choose_thresholds(resolve_weights(TINY, "default"), None, None) == (
        calibrated["threshold"], calibrated["multilingual_threshold"],
        "calibrated for laion-hf-tiny on held-out synthetic data")
    openai_b32 = Weights("ViT-B-32-quickgelu", tag="openai", origin="openai", quick_gelu=True)
    assert choose_thresholds(openai_b32, None, None) == (0.28, 0.26, "LAION-5B's, for OpenAI ViT-B/32")
    assert choose_thresholds(openai_b32, 0.30, None) == (0.30, None, "given")  # LAION-400M's, when asked
    copy = tmp_path / "tiny-copy.safetensors"
    shutil.copyfile(TINY_WEIGHTS, copy)
    assert resolve_weights(TINY, str(copy)).origin == "laion-hf"  # byte-identical: still the shipped weights
    with copy.open("ab") as f:
        f.write(b" ")  # any other file is not
    for weights in (resolve_weights(TINY, str(copy)), Weights("ViT-L-14-quickgelu", tag="openai", origin="openai"),
                    Weights("ViT-B-32")):
        with pytest.raises(UserError, match="no published similarity threshold for these weights; pass --threshold"):
            choose_thresholds(weights, None, None)
