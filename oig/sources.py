"""Source adapters: stream records from jsonl / json / csv / parquet files or any ``datasets`` dataset.

A source spec (one mapping in a recipe) names where records come from and how
their fields map onto the names a template uses::

    {type: jsonl, path: samples/squad_v2.jsonl, fields: {context: context, answer: answers.text.0}}
    {type: hf, path: rajpurkar/squad_v2, split: validation, fields: {...}}
    {path: dev-v2.0.json, record_path: "data[].paragraphs[].qas[]", fields: {context: context, ...}}

A field path is dotted (``answers.text.0`` reads ``record["answers"]["text"][0]``);
a path that runs into an empty list or a null is ``None`` (SQuAD v2's
unanswerable questions have ``answers.text == []``), while a top-level key that
is missing is an error naming the file and line.

``record_path`` unpacks nested lists (``key[]`` iterates a list, ``key`` enters a
mapping): each innermost item becomes a record carrying its parents' other
fields (SQuAD's ``title`` and ``context`` reach every question); ``carry: [...]``
limits which, and a name clash between levels is an error. It works the same on
a JSON document, on each line of a jsonl file and on each row of a ``datasets``
dataset (``type: hf`` passes ``name``, ``split``, ``data_files``, ``data_dir``,
``field`` and ``revision`` to ``load_dataset``). ``fix_text: true`` repairs
mojibake (``â‚¬`` -> ``€``) in every string with ftfy.

Records are :class:`SourceRecord` dicts that know where they came from
(``file:line``, ``file: data[0].paragraphs[1].qas[2]``), so later errors can name
them. Files stream record by record; a ``.json`` file is read whole, unless its
first line is a complete JSON object followed by more: then it is JSON Lines
whatever its name (XSum ships ``.json`` files that are).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from laion_hf.core.errors import UserError

FILE_TYPES = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
HF_OPTIONS = ("name", "split", "data_files", "data_dir", "field", "revision")
SPEC_KEYS = ("type", "path", "fields", "limit", "record_path", "carry", "fix_text", *HF_OPTIONS)
_SEGMENT = re.compile(r"^([^.\[\]]+)(\[\])?$")


class SourceError(UserError):
    """A source file or dataset that cannot be read, or a record missing a mapped field."""


class SourceRecord(dict):
    """A record (a plain dict to templates) that remembers where it was read, for error messages."""

    where: str = "?"

    @classmethod
    def at(cls, where: str, values: Mapping[str, Any]) -> SourceRecord:
        record = cls(values)
        record.where = where
        return record

    def __reduce__(self):
        return SourceRecord.at, (self.where, dict(self))


def source_type(spec: Mapping[str, Any]) -> str:
    """The adapter a spec asks for: its ``type``, else the file extension."""
    if "type" in spec:
        return str(spec["type"])
    suffix = Path(str(spec["path"])).suffix.lower()
    if suffix not in FILE_TYPES:
        raise SourceError(f"{spec['path']}: cannot tell the source type from the extension; set `type:`")
    return FILE_TYPES[suffix]


def iter_records(spec: Mapping[str, Any], base_dir: Path | None = None) -> Iterator[SourceRecord]:
    """Yield the records of a source spec: unpacked along ``record_path``, ``fields`` applied (all fields without)."""
    if "path" not in spec:
        raise SourceError(f"source {dict(spec)}: missing `path`")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise SourceError(f"source {spec['path']}: unknown keys {unknown} (known: {', '.join(SPEC_KEYS)})")
    kind = source_type(spec)
    readers = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet, "hf": _hf}
    if kind not in readers:
        raise SourceError(f"{spec['path']}: unknown source type {kind!r} (one of {', '.join(readers)})")
    location = str(spec["path"])
    if kind != "hf" or (base_dir is not None and (base_dir / location).exists()):
        location = str(base_dir / location) if base_dir is not None else location
    segments = parse_record_path(spec.get("record_path"), location)
    carry = spec.get("carry")
    fields = spec.get("fields")
    limit = spec.get("limit")
    count = 0
    for where, top in readers[kind](location, spec):
        for record_where, record in unpack(top, segments, where, carry):
            if limit is not None and count >= int(limit):
                return
            count += 1
            if spec.get("fix_text"):
                record = _fix_text(record)
            yield SourceRecord.at(record_where, map_fields(record, fields, record_where) if fields else record)


def parse_record_path(path: Any, where: str) -> list[tuple[str, bool]]:
    """``"data[].paragraphs[].qas[]"`` -> ``[("data", True), ("paragraphs", True), ("qas", True)]``."""
    if path is None:
        return []
    segments = []
    for part in str(path).split("."):
        match = _SEGMENT.match(part)
        if not match:
            raise SourceError(f"{where}: record_path {path!r}: cannot read {part!r} (use `key` or `key[]` parts)")
        segments.append((match.group(1), bool(match.group(2))))
    if not segments[-1][1]:
        raise SourceError(f"{where}: record_path {path!r} must end in a list (`key[]`)")
    return segments


def unpack(
    value: Any, segments: list[tuple[str, bool]], where: str, carry: list[str] | None,
    carried: dict[str, Any] | None = None, trail: str = "",
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The records under ``value`` along ``segments``, each with its parents' other fields carried."""
    here = f"{where} {trail}" if trail else where
    carried = carried or {}
    if not isinstance(value, Mapping):
        raise SourceError(f"{here}: expected a JSON object, got {type(value).__name__}")
    own = value if not segments else {k: v for k, v in value.items() if k != segments[0][0] and (carry is None or k in carry)}
    clash = sorted(set(own) & set(carried))
    if clash:
        raise SourceError(f"{here}: fields {clash} exist at two levels of record_path; name the parent fields to keep under `carry:`")
    if not segments:
        yield here, {**carried, **value}
        return
    (key, is_list), rest = segments[0], segments[1:]
    if key not in value:
        raise SourceError(f"{here}: no field {key!r} (record_path; has {sorted(value)})")
    inner, step = value[key], f"{trail}.{key}" if trail else key
    if not is_list:
        yield from unpack(inner, rest, where, carry, carried | own, step)
        return
    if not isinstance(inner, list):
        raise SourceError(f"{where} {step}: expected a list (record_path `{key}[]`), got {type(inner).__name__}")
    for index, item in enumerate(inner):
        yield from unpack(item, rest, where, carry, carried | own, f"{step}[{index}]")


def _fix_text(value: Any) -> Any:
    """Every string inside ``value`` with mojibake and broken escapes repaired (quotes left as they are)."""
    import ftfy

    if isinstance(value, str):
        return ftfy.fix_text(value, uncurl_quotes=False)
    if isinstance(value, Mapping):
        return {k: _fix_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fix_text(v) for v in value]
    return value


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


def _jsonl(path: str, spec: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    with _open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path}:{number}: not valid JSON: {exc.msg}") from exc
            yield f"{path}:{number}", record


def _json(path: str, spec: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    if _looks_like_json_lines(path):
        yield from _jsonl(path, spec)
        return
    with _open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    if spec.get("record_path"):
        yield path, data
        return
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON array of records (or set `record_path:`, e.g. `data[]`)")
    for index, record in enumerate(data):
        yield f"{path}[{index}]", record


def _looks_like_json_lines(path: str) -> bool:
    """A first line that is a whole JSON object, with more text after it: JSON Lines, whatever the file is called."""
    with _open(path) as f:
        first = f.readline()
        try:
            if not isinstance(json.loads(first), dict):
                return False
        except json.JSONDecodeError:
            return False
        return any(line.strip() for line in iter(lambda: f.readline(), ""))


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
    options = {key: spec[key] for key in ("data_files", "data_dir", "field", "revision") if key in spec}
    try:
        dataset = datasets.load_dataset(path, spec.get("name"), split=split, streaming=True, **options)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise SourceError(f"{path}: cannot load dataset ({spec.get('name')}, {split}): {exc}") from exc
    name = spec.get("data_files") or path
    for index, record in enumerate(dataset):
        yield f"{name}[{split}] row {index}", record
