"""The one output schema every constituent (and the moderation config) shares.

laion/OIG could not be loaded with ``load_dataset`` because its files mixed
``text``-only, ``meta`` and ``metadata`` layouts. Here every row, whatever its
constituent, has exactly :data:`OUTPUT_SCHEMA`; builds assemble it from the flat
working columns the stages use (:data:`WORK_SCHEMA`) in one place, :func:`to_output`.
"""

from __future__ import annotations

import pyarrow as pa

HUMAN = "<human>"
BOT = "<bot>"
USER_ROLE = "user"
ASSISTANT_ROLE = "assistant"

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

QUALITY = pa.struct(
    [
        ("flesch_kincaid_grade", pa.float64()),
        ("flesch_reading_ease", pa.float64()),
        ("n_chars", pa.int64()),
        ("n_words", pa.int64()),
        ("unique_word_ratio", pa.float64()),
        ("language", pa.string()),
        ("language_score", pa.float64()),
    ]
)

METADATA = pa.struct(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("constituent", pa.string()),
        ("template_id", pa.string()),
        ("seed", pa.int64()),
        ("quality", QUALITY),
        ("flags", pa.list_(pa.string())),
        ("pii_replaced", pa.int64()),
        ("moderation_label", pa.string()),
        ("moderation_tags", pa.list_(pa.string())),
    ]
)

OUTPUT_SCHEMA = pa.schema([("text", pa.string()), ("messages", MESSAGES), ("metadata", METADATA)])

# Flat columns the stages read and write; ``to_output`` nests them into ``metadata``.
WORK_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("messages", MESSAGES),
        ("source", pa.string()),
        ("constituent", pa.string()),
        ("template_id", pa.string()),
        ("seed", pa.int64()),
        ("flags", pa.list_(pa.string())),
        ("pii_replaced", pa.int64()),
        ("moderation_label", pa.string()),
        ("moderation_tags", pa.list_(pa.string())),
    ]
)


#: A working batch after PII, quality and decontamination: what a build spools before dedup decides.
SCORED_SCHEMA = pa.schema([*WORK_SCHEMA, *QUALITY, ("drop_reason", pa.string())])


def format_text(messages: list[dict[str, str]]) -> str:
    """OIG's text form: one ``<human>: ...`` / ``<bot>: ...`` line group per turn."""
    tags = {USER_ROLE: HUMAN, ASSISTANT_ROLE: BOT}
    return "\n".join(f"{tags[m['role']]}: {m['content']}" for m in messages)


def work_table(rows: list[dict]) -> pa.Table:
    """Rendered rows (dicts with the :data:`WORK_SCHEMA` fields) as a working batch."""
    return pa.Table.from_pylist(rows, schema=WORK_SCHEMA)


def to_output(batch: pa.Table) -> pa.Table:
    """Nest a working batch (kept rows, quality columns present) into :data:`OUTPUT_SCHEMA`."""
    quality = pa.StructArray.from_arrays(
        [batch[name].combine_chunks().cast(QUALITY.field(name).type) for name in QUALITY.names],
        fields=list(QUALITY),
    )
    metadata_fields = [
        quality if name == "quality" else batch[name].combine_chunks().cast(METADATA.field(name).type)
        for name in METADATA.names
    ]
    metadata = pa.StructArray.from_arrays(metadata_fields, fields=list(METADATA))
    return pa.Table.from_arrays(
        [batch["text"].combine_chunks(), batch["messages"].combine_chunks(), metadata], schema=OUTPUT_SCHEMA
    )
