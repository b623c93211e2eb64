"""Captions for synthetic scenes in English, German, French and Spanish, from templates.

Each language gets its own grammar (gender and number agreement of colours,
article forms), so the non-English captions are real sentences a
multilingual text encoder has to learn, not English with swapped words.
"""

from __future__ import annotations

from laion_hf.testing.synthetic.attributes import Attributes

LANGUAGES = ("en", "de", "fr", "es")

# --- English ---------------------------------------------------------------------------------------
_EN_NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four"}
_EN_LAYOUT = {"row": "in a row", "column": "in a column", "scattered": "scattered around"}
_EN_TEXTURE = {"plain": "", "striped": "striped ", "dotted": "dotted ", "checkered": "checkered "}


def _english(a: Attributes) -> str:
    shape = a.shape + ("s" if a.count > 1 else "")
    text = f"{_EN_NUMBERS[a.count]} {a.colour} {shape}"
    if a.count > 1:
        text += f" {_EN_LAYOUT[a.layout]}"
    background = f"{a.background} {_EN_TEXTURE[a.texture]}background"
    text += f" on {'an' if background[0] in 'aeiou' else 'a'} {background}"
    if a.unsafe:
        text += " with a hazard sign"
    if a.watermark:
        text += " with a watermark"
    return text


# --- German ----------------------------------------------------------------------------------------
_DE_SHAPES = {  # noun singular, plural, gender
    "circle": ("Kreis", "Kreise", "m"),
    "square": ("Quadrat", "Quadrate", "n"),
    "triangle": ("Dreieck", "Dreiecke", "n"),
    "star": ("Stern", "Sterne", "m"),
}
_DE_COLOURS = {
    "red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb",
    "purple": "lila", "orange": "orange", "white": "weiß", "black": "schwarz",
}
_DE_INVARIABLE = {"lila", "orange"}
_DE_NUMBERS = {2: "zwei", 3: "drei", 4: "vier"}
_DE_LAYOUT = {"row": "in einer Reihe", "column": "in einer Spalte", "scattered": "verstreut"}
_DE_TEXTURE = {"plain": "", "striped": "gestreiften ", "dotted": "gepunkteten ", "checkered": "karierten "}


def _de_adjective(colour: str, ending: str) -> str:
    stem = _DE_COLOURS[colour]
    return stem if stem in _DE_INVARIABLE else stem + ending


def _german(a: Attributes) -> str:
    singular, plural, gender = _DE_SHAPES[a.shape]
    if a.count == 1:
        text = f"ein {_de_adjective(a.colour, 'er' if gender == 'm' else 'es')} {singular}"
    else:
        text = f"{_DE_NUMBERS[a.count]} {_de_adjective(a.colour, 'e')} {plural} {_DE_LAYOUT[a.layout]}"
    text += f" auf einem {_de_adjective(a.background, 'en')} {_DE_TEXTURE[a.texture]}Hintergrund"
    if a.unsafe:
        text += " mit einem Warnzeichen"
    if a.watermark:
        text += " mit einem Wasserzeichen"
    return text


# --- French ----------------------------------------------------------------------------------------
_FR_SHAPES = {"circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"), "star": ("étoile", "f")}
_FR_COLOURS = {  # masculine, feminine
    "red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
    "yellow": ("jaune", "jaune"), "purple": ("violet", "violette"), "orange": ("orange", "orange"),
    "white": ("blanc", "blanche"), "black": ("noir", "noire"),
}
_FR_NUMBERS = {2: "deux", 3: "trois", 4: "quatre"}
_FR_LAYOUT = {"row": "en ligne", "column": "en colonne", "scattered": "dispersés"}
_FR_TEXTURE = {"plain": "", "striped": " rayé", "dotted": " à pois", "checkered": " à carreaux"}


def _fr_colour(colour: str, gender: str, plural: bool) -> str:
    word = _FR_COLOURS[colour][0 if gender == "m" else 1]
    return word + "s" if plural and colour != "orange" else word


def _french(a: Attributes) -> str:
    noun, gender = _FR_SHAPES[a.shape]
    if a.count == 1:
        article = "un" if gender == "m" else "une"
        text = f"{article} {noun} {_fr_colour(a.colour, gender, False)}"
    else:
        layout = _FR_LAYOUT[a.layout]
        if a.layout == "scattered" and gender == "f":
            layout = "dispersées"
        text = f"{_FR_NUMBERS[a.count]} {noun}s {_fr_colour(a.colour, gender, True)} {layout}"
    text += f" sur un fond {_fr_colour(a.background, 'm', False)}{_FR_TEXTURE[a.texture]}"
    if a.unsafe:
        text += " avec un panneau de danger"
    if a.watermark:
        text += " avec un filigrane"
    return text


# --- Spanish ---------------------------------------------------------------------------------------
_ES_SHAPES = {
    "circle": ("círculo", "círculos", "m"),
    "square": ("cuadrado", "cuadrados", "m"),
    "triangle": ("triángulo", "triángulos", "m"),
    "star": ("estrella", "estrellas", "f"),
}
_ES_COLOURS = {  # masculine, feminine (plural adds -s / -es)
    "red": ("rojo", "roja"), "green": ("verde", "verde"), "blue": ("azul", "azul"),
    "yellow": ("amarillo", "amarilla"), "purple": ("morado", "morada"), "orange": ("naranja", "naranja"),
    "white": ("blanco", "blanca"), "black": ("negro", "negra"),
}
_ES_NUMBERS = {2: "dos", 3: "tres", 4: "cuatro"}
_ES_LAYOUT = {"row": "en fila", "column": "en columna", "scattered": "dispersos"}
_ES_TEXTURE = {"plain": "", "striped": " a rayas", "dotted": " de lunares", "checkered": " a cuadros"}


def _es_colour(colour: str, gender: str, plural: bool) -> str:
    word = _ES_COLOURS[colour][0 if gender == "m" else 1]
    if not plural:
        return word
    return word + ("es" if word.endswith("l") else "s")


def _spanish(a: Attributes) -> str:
    singular, plural, gender = _ES_SHAPES[a.shape]
    if a.count == 1:
        article = "un" if gender == "m" else "una"
        text = f"{article} {singular} {_es_colour(a.colour, gender, False)}"
    else:
        layout = _ES_LAYOUT[a.layout]
        if a.layout == "scattered" and gender == "f":
            layout = "dispersas"
        text = f"{_ES_NUMBERS[a.count]} {plural} {_es_colour(a.colour, gender, True)} {layout}"
    text += f" sobre un fondo {_es_colour(a.background, 'm', False)}{_ES_TEXTURE[a.texture]}"
    if a.unsafe:
        text += " con una señal de peligro"
    if a.watermark:
        text += " con una marca de agua"
    return text


_WRITERS = {"en": _english, "de": _german, "fr": _french, "es": _spanish}


def caption(attributes: Attributes, language: str = "en") -> str:
    """The caption of a scene in one of :data:`LANGUAGES`."""
    try:
        return _WRITERS[language](attributes)
    except KeyError:
        raise ValueError(f"no caption templates for language {language!r}; have {', '.join(LANGUAGES)}") from None


def captions(attributes: Attributes) -> dict[str, str]:
    """The caption of a scene in every language, keyed by ISO 639-1 code."""
    return {language: caption(attributes, language) for language in LANGUAGES}
