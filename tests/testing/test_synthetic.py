"""The synthetic domain: deterministic, labels honoured, captions grammatical per language."""

from __future__ import annotations

import io

from PIL import Image

from laion_hf.testing.synthetic import LANGUAGES, caption, mismatched_caption, sample
from laion_hf.testing.synthetic.attributes import Attributes, aesthetic_score


def test_same_seed_same_sample():
    a, b = sample(11), sample(11)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.captions == b.captions and a.aesthetic == b.aesthetic
    assert sample(12).image.tobytes() != a.image.tobytes()


def test_captions_in_every_language_describe_the_attributes():
    s = sample(3, unsafe=False, watermark=False)
    assert sorted(s.captions) == sorted(LANGUAGES)
    assert s.attributes.shape in s.captions["en"] and s.attributes.colour in s.captions["en"]
    assert len(set(s.captions.values())) == len(LANGUAGES)


def test_grammar_of_known_scenes():
    scene = Attributes(shape="star", colour="white", count=2, layout="scattered", background="orange",
                       texture="striped", unsafe=True, watermark=True)
    assert caption(scene, "en") == (
        "two white stars scattered around on an orange striped background with a hazard sign with a watermark"
    )
    assert caption(scene, "de") == (
        "zwei weiße Sterne verstreut auf einem orange gestreiften Hintergrund mit einem Warnzeichen "
        "mit einem Wasserzeichen"
    )
    assert caption(scene, "fr") == (
        "deux étoiles blanches dispersées sur un fond orange rayé avec un panneau de danger avec un filigrane"
    )
    assert caption(scene, "es") == (
        "dos estrellas blancas dispersas sobre un fondo naranja a rayas con una señal de peligro "
        "con una marca de agua"
    )


def test_overlays_are_parameters_and_change_pixels_and_score():
    clean = sample(5, unsafe=False, watermark=False)
    marked = sample(5, unsafe=True, watermark=True)
    assert (marked.unsafe, marked.watermark) == (True, True) and (clean.unsafe, clean.watermark) == (False, False)
    assert marked.image.tobytes() != clean.image.tobytes()
    assert marked.aesthetic < clean.aesthetic
    assert "hazard sign" in marked.captions["en"] and "watermark" in marked.captions["en"]


def test_aesthetic_prefers_calm_ordered_contrasting_scenes():
    calm = Attributes("circle", "white", 1, "row", "black", "plain")
    busy = Attributes("circle", "orange", 4, "scattered", "yellow", "checkered")
    assert 1 <= aesthetic_score(busy) < aesthetic_score(calm) <= 10


def test_mismatched_caption_disagrees_on_shape_colour_and_background():
    s = sample(9, unsafe=False, watermark=False)
    for seed in range(20):
        other = mismatched_caption(s.attributes, "en", seed=seed)
        assert other != s.captions["en"]
        assert s.attributes.shape not in other.split(" on ")[0]


def test_encode_and_size():
    s = sample(1, size=256)
    assert Image.open(io.BytesIO(s.encode())).size == (256, 256)
    assert Image.open(io.BytesIO(s.encode("PNG"))).format == "PNG"
