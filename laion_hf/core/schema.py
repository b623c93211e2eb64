"""Arrow schemas of the LAION families, and column resolution across them.

LAION's releases spell the same field differently (``URL``/``url``,
``TEXT``/``caption``, ``HEIGHT``/``height``). Every reader in laion-hf asks for
*canonical* fields and :func:`resolve_columns` maps them onto whatever the file
calls them, case-insensitively, so one code path handles all families.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa

from laion_hf.core.errors import UserError

_BASE_FIELDS = [
    pa.field("SAMPLE_ID", pa.int64()),
    pa.field("URL", pa.string()),
    pa.field("TEXT", pa.string()),
    pa.field("HEIGHT", pa.int32()),
    pa.field("WIDTH", pa.int32()),
    pa.field("LICENSE", pa.string()),
    pa.field("NSFW", pa.string()),
    pa.field("similarity", pa.float64()),
]

#: LAION-400M metadata parquet (NSFW is UNLIKELY / UNSURE / NSFW).
LAION_400M = pa.schema(_BASE_FIELDS)
#: LAION-5B base subsets laion2B-en and laion1B-nolang (128 Spark shards each).
LAION_5B_BASE = pa.schema(_BASE_FIELDS)
#: laion2B-multi adds the CLD3 language code.
LAION_5B_MULTI = pa.schema([*_BASE_FIELDS, pa.field("LANGUAGE", pa.string())])

_JOINED_FIELDS = [
    pa.field("URL", pa.string()),
    pa.field("TEXT", pa.string()),
    pa.field("WIDTH", pa.int32()),
    pa.field("HEIGHT", pa.int32()),
    pa.field("similarity", pa.float64()),
    pa.field("hash", pa.int64()),
    pa.field("punsafe", pa.float32()),
    pa.field("pwatermark", pa.float32()),
]
#: LAION-5B "-joined" subsets: base metadata joined with safety and watermark scores.
LAION_5B_JOINED = pa.schema(_JOINED_FIELDS)
LAION_5B_JOINED_MULTI = pa.schema(
    [*_JOINED_FIELDS[:5], pa.field("LANGUAGE", pa.string()), *_JOINED_FIELDS[5:]]
)
#: "-aesthetic" subsets add the aesthetic predictor's score.
LAION_5B_AESTHETIC = pa.schema([*_JOINED_FIELDS, pa.field("aesthetic", pa.float32())])

#: What img2dataset writes in ``NNNNN.parquet`` beside each tar (failed samples too).
IMG2DATASET = pa.schema(
    [
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("key", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("original_width", pa.int64()),
        pa.field("original_height", pa.int64()),
        pa.field("exif", pa.string()),
        pa.field("sha256", pa.string()),
    ]
)

#: Re-LAION-5B metadata: img2dataset-style lower-case columns plus the joined scores.
RELAION = pa.schema(
    [
        *IMG2DATASET,
        pa.field("similarity", pa.float64()),
        pa.field("hash", pa.int64()),
        pa.field("punsafe", pa.float32()),
        pa.field("pwatermark", pa.float32()),
    ]
)

FAMILIES: Mapping[str, pa.Schema] = {
    "laion400m": LAION_400M,
    "laion5b-base": LAION_5B_BASE,
    "laion5b-multi": LAION_5B_MULTI,
    "laion5b-joined": LAION_5B_JOINED,
    "laion5b-joined-multi": LAION_5B_JOINED_MULTI,
    "laion5b-aesthetic": LAION_5B_AESTHETIC,
    "relaion5b": RELAION,
    "img2dataset": IMG2DATASET,
}

#: Canonical field -> the names it goes by in LAION releases (compared lower-cased).
ALIASES: Mapping[str, tuple[str, ...]] = {
    "url": ("url",),
    "caption": ("caption", "text"),
    "sample_id": ("sample_id",),
    "key": ("key",),
    "hash": ("hash",),
    "punsafe": ("punsafe",),
    "pwatermark": ("pwatermark",),
    "similarity": ("similarity",),
    "language": ("language",),
    "width": ("width",),
    "height": ("height",),
    "status": ("status",),
    "md5": ("md5",),
    "sha256": ("sha256",),
}


class SchemaError(UserError, ValueError):
    """A file lacks columns that the requested operation needs, or holds one of the wrong type."""


#: Columns that hold text in every LAION family and in img2dataset sidecars.
TEXT_FIELDS = ("url", "caption", "key", "status")


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def require_text_columns(schema: pa.Schema, source: str) -> None:
    """Raise :class:`SchemaError` naming ``source`` if its url / caption / key / status column is not text.

    A copy whose ``url`` holds numbers would otherwise fail deep inside a
    hash or a cast, far from the file that caused it.
    """
    for name in resolve_columns(schema.names, TEXT_FIELDS).values():
        if name is not None and not _is_text(schema.field(name).type):
            raise SchemaError(f"{source}: column {name} is {schema.field(name).type}, not text")


def resolve_columns(names: Iterable[str], fields: Iterable[str]) -> dict[str, str | None]:
    """Map canonical ``fields`` to the actual column names in ``names`` (None when absent).

    Matching is case-insensitive and follows :data:`ALIASES`, so ``TEXT`` and
    ``caption`` both resolve the canonical ``caption``.
    """
    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    resolved: dict[str, str | None] = {}
    for field in fields:
        candidates = ALIASES.get(field, (field.lower(),))
        resolved[field] = next((by_lower[c] for c in candidates if c in by_lower), None)
    return resolved


def require_columns(names: Iterable[str], fields: Iterable[str], source: str) -> dict[str, str]:
    """Like :func:`resolve_columns`, but raise :class:`SchemaError` naming ``source`` if any is missing."""
    names = list(names)
    resolved = resolve_columns(names, fields)
    missing = [field for field, actual in resolved.items() if actual is None]
    if missing:
        raise SchemaError(
            f"{source}: missing required column(s) {', '.join(missing)} "
            f"(has: {', '.join(names) or 'no columns'})"
        )
    return {field: actual for field, actual in resolved.items() if actual is not None}


def canonical_names(names: Sequence[str], swap_width_height: bool = False) -> dict[str, str]:
    """Actual column name -> a unique canonical lower-case name (``TEXT`` -> ``caption``, ``URL`` -> ``url``...).

    Two columns may resolve to one field: an img2dataset download saved with
    LAION's ``WIDTH``/``HEIGHT`` (``save_additional_columns``) beside its own
    ``width``/``height``. The column spelled exactly as the field keeps the
    name; another keeps its own name lower-cased if that is free (``TEXT`` ->
    ``text`` beside ``caption``), else becomes ``laion_<field>`` (``WIDTH`` ->
    ``laion_width``). ``swap_width_height`` exchanges LAION's width and height
    (the original LAION-5B metadata has them swapped): ``laion_width``/
    ``laion_height`` when a download holds both pairs, else ``width``/``height``.
    """
    renamed: dict[str, str] = {}
    owners = {field: actual for field, actual in resolve_columns(names, ALIASES).items() if actual}
    for field in owners:
        exact = next((n for n in names if n == field), None)
        owners[field] = exact or owners[field]
    taken = set(owners)
    for name in names:
        field = next((f for f, aliases in ALIASES.items() if name.lower() in aliases), None)
        if field is not None and owners.get(field) == name:
            renamed[name] = field
            continue
        lower = name.lower()
        candidate = lower if lower not in taken else f"laion_{field or lower}"
        renamed[name] = candidate if candidate not in taken else name
        taken.add(renamed[name])
    if swap_width_height:
        prefix = "laion_" if {"laion_width", "laion_height"} <= taken else ""
        swap = {f"{prefix}width": f"{prefix}height", f"{prefix}height": f"{prefix}width"}
        renamed = {actual: swap.get(name, name) for actual, name in renamed.items()}
    return renamed


def detect_family(schema: pa.Schema) -> str | None:
    """Name of the LAION family whose column names ``schema`` has exactly (order-insensitive)."""
    names = {name.lower() for name in schema.names}
    for family, candidate in FAMILIES.items():
        if names == {name.lower() for name in candidate.names}:
            return family
    return None
