"""Source adapters: stream records from jsonl / json / csv / parquet files or any ``datasets`` dataset.

A source spec (one mapping in a recipe) names where records come from and how
their fields map onto the names a template uses::

    {type: jsonl, path: samples/squad_v2.jsonl, fields: {context: context, answer: answers.text.0}}
    {type: hf, path: rajpurkar/squad_v2, split: validation, fields: {...}}

A field path is dotted (``answers.text.0`` reads ``record["answers"]["text"][0]``);
a path that runs into an empty list or a null is ``None`` (SQuAD v2's
unanswerable questions have ``answers.text == []``), while a top-level key that
is missing is an error naming the file and line. Files stream record by record;
only a ``.json`` array is read whole (use jsonl for large files).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from laion_hf.errors import UserError

FILE_TYPES = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class SourceError(UserError):
    """A source file or dataset that cannot be read, or a record missing a mapped field."""


def source_type(spec: Mapping[str, Any]) -> str:
    """The adapter a spec asks for: its ``type``, else the file extension."""
    if "type" in spec:
        return str(spec["type"])
    suffix = Path(str(spec["path"])).suffix.lower()
    if suffix not in FILE_TYPES:
        raise SourceError(f"{spec['path']}: cannot tell the source type from the extension; set `type:`")
    return FILE_TYPES[suffix]


def iter_records(spec: Mapping[str, Any], base_dir: Path | None = None) -> Iterator[dict[str, Any]]:
    """Yield the records of a source spec, with ``fields`` applied (all fields when no mapping is given)."""
    if "path" not in spec:
        raise SourceError(f"source {dict(spec)}: missing `path`")
    kind = source_type(spec)
    readers = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet, "hf": _hf}
    if kind not in readers:
        raise SourceError(f"{spec['path']}: unknown source type {kind!r} (one of {', '.join(readers)})")
    location = str(spec["path"])
    if kind != "hf" or (base_dir is not None and (base_dir / location).exists()):
        location = str(base_dir / location) if base_dir is not None else location
    fields = spec.get("fields")
    limit = spec.get("limit")
    for count, (where, record) in enumerate(readers[kind](location, spec)):
        if limit is not None and count >= int(limit):
            return
        yield map_fields(record, fields, where) if fields else record


def map_fields(record: Mapping[str, Any], fields: Mapping[str, str], where: str) -> dict[str, Any]:
    """Apply a ``{name: dotted.path}`` mapping to one record; ``where`` names it in errors."""
    return {name: _lookup(record, str(path), where) for name, path in fields.items()}


def _lookup(record: Mapping[str, Any], path: str, where: str) -> Any:
    head, *rest = path.split(".")
    if head not in record:
        raise SourceError(f"{where}: record has no field {head!r} (mapped path {path!r}; has {sorted(record)})")
    value: Any = record[head]
    for part in rest:
        if value is None:
            return None
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list | tuple) and part.isdigit():
            value = value[int(part)] if int(part) < len(value) else None
        else:
            raise SourceError(f"{where}: cannot read {part!r} of {type(value).__name__} (path {path!r})")
    return value


def _open(path: str):
    try:
        return open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise SourceError(f"{path}: cannot open source: {exc.strerror}") from exc


def _jsonl(path: str, spec: Mapping[str, Any]) -> Iterator[tuple[str, dict]]:
    with _open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path}:{number}: not valid JSON: {exc.msg}") from exc
            if not isinstance(record, dict):
                raise SourceError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield f"{path}:{number}", record


def _json(path: str, spec: Mapping[str, Any]) -> Iterator[tuple[str, dict]]:
    with _open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    key = spec.get("records_key")
    records = data[key] if key else data
    if not isinstance(records, list):
        raise SourceError(f"{path}: expected a JSON array of records (or set `records_key:`)")
    for index, record in enumerate(records):
        yield f"{path}[{index}]", record


def _csv(path: str, spec: Mapping[str, Any]) -> Iterator[tuple[str, dict]]:
    with _open(path) as f:
        for number, record in enumerate(csv.DictReader(f), start=2):
            yield f"{path}:{number}", record


def _parquet(path: str, spec: Mapping[str, Any]) -> Iterator[tuple[str, dict]]:
    try:
        parquet = pq.ParquetFile(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read parquet: {exc}") from exc
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            yield f"{path} row {row}", record
            row += 1


def _hf(path: str, spec: Mapping[str, Any]) -> Iterator[tuple[str, dict]]:
    import datasets

    split = spec.get("split", "train")
    try:
        dataset = datasets.load_dataset(
            path, spec.get("name"), split=split, streaming=True, data_files=spec.get("data_files")
        )
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise SourceError(f"{path}: cannot load dataset ({spec.get('name')}, {split}): {exc}") from exc
    for index, record in enumerate(dataset):
        yield f"{path}[{split}] row {index}", record
