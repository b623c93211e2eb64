"""Removal lists: the published link and image hash lists, read from text, CSV or parquet.

A list has a *kind* that says what its values are and what they match:

============== ======================================= =========================
kind           a valid value                            matched against
============== ======================================= =========================
url-md5        32 hex digits                            md5 of the URL's UTF-8
url-sha256     64 hex digits                            sha256 of the URL's UTF-8
image-md5      32 hex digits                            md5 of the original image
image-sha256   64 hex digits                            sha256 of the original image
laion-hash     a signed 64-bit integer                  the LAION hash of (url, caption)
sample-id      a token without whitespace               ``SAMPLE_ID``, else img2dataset ``key``
============== ======================================= =========================

Hex is case- and whitespace-insensitive. A value that is not valid for its
kind is reported with its file and line (or parquet row) and the run refuses
to start, unless ``skip_invalid`` is set, in which case it is counted.
Loaded values are Arrow arrays so that matching is one vectorised ``is_in``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from laion_hf.core.errors import UserError
from laion_hf.core.hashing import normalize_hex
from laion_hf.io.parquet import CorruptParquetError, iter_tables, open_parquet

KINDS = ("url-md5", "url-sha256", "image-md5", "image-sha256", "laion-hash", "sample-id")
_HEX_ALGORITHM = {"url-md5": "md5", "url-sha256": "sha256", "image-md5": "md5", "image-sha256": "sha256"}
#: Column names a CSV or parquet list may use for each kind (first match wins; a one-column file needs none).
_COLUMN_NAMES = {
    "url-md5": ("url_md5", "md5", "hash", "value"),
    "url-sha256": ("url_sha256", "sha256", "hash", "value"),
    "image-md5": ("image_md5", "md5", "hash", "value"),
    "image-sha256": ("image_sha256", "sha256", "hash", "value"),
    "laion-hash": ("laion_hash", "hash", "value"),
    "sample-id": ("sample_id", "key", "id", "value"),
}
DIGEST_SIZE = {"md5": 16, "sha256": 32}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class RemovalListError(UserError, ValueError):
    """A removal list is missing, unreadable or holds a value that is invalid for its kind."""


def parse_value(kind: str, raw: str) -> str | int | None:
    """The canonical value of ``raw`` for ``kind``, or None if it is not a valid one."""
    if kind in _HEX_ALGORITHM:
        return normalize_hex(raw, _HEX_ALGORITHM[kind])
    token = raw.strip()
    if kind == "laion-hash":
        try:
            value = int(token)
        except ValueError:
            return None
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    if kind == "sample-id":
        return token if token and not any(c.isspace() for c in token) else None
    raise ValueError(f"unknown removal kind {kind!r}")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a ``KIND=FILE`` command-line spec, checking the kind."""
    kind, sep, path = spec.partition("=")
    if not sep or not path:
        raise RemovalListError(f"--remove {spec!r}: expected KIND=FILE with KIND one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise RemovalListError(f"--remove {spec!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    return kind, path


@dataclass
class RemovalList:
    """The valid values of one list file and how many invalid ones were skipped."""

    kind: str
    path: str
    values: pa.Array
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)


def _arrow_type(kind: str) -> pa.DataType:
    """URL lists hold raw digests (so URLs are hashed to bytes, never hex); image lists hold hex like sidecars."""
    if kind == "laion-hash":
        return pa.int64()
    if kind.startswith("url-"):
        return pa.binary(DIGEST_SIZE[_HEX_ALGORITHM[kind]])
    return pa.string()


def _pick_column(names: Sequence[str], kind: str, path: str) -> str:
    if len(names) == 1:
        return names[0]
    lower = {n.lower(): n for n in names}
    for candidate in _COLUMN_NAMES[kind]:
        if candidate in lower:
            return lower[candidate]
    raise RemovalListError(
        f"{path}: cannot tell which column holds the {kind} values "
        f"(has: {', '.join(names)}; expected one of {', '.join(_COLUMN_NAMES[kind])})"
    )


def _text_values(path: str) -> Iterator[tuple[str, str]]:
    """(``line N``, raw) for each non-blank, non-comment line of a text list."""
    with fsspec.open(path, "r", encoding="utf-8-sig") as f:  # -sig: lists exported on Windows start with a BOM
        for number, line in enumerate(f, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield f"line {number}", line.rstrip("\n")


def _csv_values(path: str, kind: str) -> Iterator[tuple[str, str]]:
    with fsspec.open(path, "r", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        column = header.index(_pick_column(header, kind, path))
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            yield f"line {number}", row[column] if column < len(row) else ""


def _parquet_values(path: str, kind: str) -> Iterator[tuple[str, str | int | None]]:
    parquet = open_parquet(path)
    column = _pick_column(parquet.schema_arrow.names, kind, path)
    row = 0
    for table in iter_tables(parquet, path, 65536, columns=[column]):
        for value in table.column(0).to_pylist():
            yield f"row {row}", value
            row += 1


def _raw_values(path: str, kind: str) -> Iterator[tuple[str, str | int | None]]:
    lower = path.lower()
    if lower.endswith(".parquet"):
        return _parquet_values(path, kind)
    if lower.endswith(".csv"):
        return _csv_values(path, kind)
    return _text_values(path)


def load_list(kind: str, path: str, skip_invalid: bool = False) -> RemovalList:
    """Read and validate one list file; raise :class:`RemovalListError` at its first invalid value."""
    values: list[str | int] = []
    invalid: list[str] = []
    try:
        for where, raw in _raw_values(path, kind):
            value = None if raw is None else parse_value(kind, str(raw))
            if value is None:
                if not skip_invalid:
                    raise RemovalListError(f"{path}: {where}: {raw!r} is not a valid {kind} value")
                invalid.append(f"{where}: {raw!r}")
                continue
            values.append(bytes.fromhex(value) if kind.startswith("url-") else value)
    except FileNotFoundError as exc:
        raise RemovalListError(f"{path}: removal list not found") from exc
    except CorruptParquetError as exc:
        raise RemovalListError(str(exc)) from exc
    except (UnicodeDecodeError, pa.ArrowInvalid, OSError) as exc:
        raise RemovalListError(f"{path}: unreadable {kind} list ({exc})") from exc
    return RemovalList(kind, path, pa.array(values, _arrow_type(kind)), len(invalid), invalid[:5])


@dataclass
class RemovalSets:
    """Unique values to remove, per kind, plus what loading them skipped."""

    sets: dict[str, pa.Array] = field(default_factory=dict)
    lists: list[RemovalList] = field(default_factory=list)

    def get(self, kind: str) -> pa.Array | None:
        return self.sets.get(kind)

    @property
    def invalid(self) -> int:
        return sum(item.invalid for item in self.lists)

    def summary(self) -> list[dict]:
        """Per file: kind, path, valid values, invalid values skipped (for the report)."""
        return [
            {"kind": item.kind, "path": item.path, "values": len(item.values), "invalid_skipped": item.invalid}
            for item in self.lists
        ]


def load_removal_sets(specs: Iterable[tuple[str, str]], skip_invalid: bool = False) -> RemovalSets:
    """Load every ``(kind, path)`` list and merge the lists of each kind into one unique set."""
    result = RemovalSets()
    by_kind: dict[str, list[pa.Array]] = {}
    for kind, path in specs:
        if kind not in KINDS:
            raise RemovalListError(f"{path}: unknown removal kind {kind!r} (one of {', '.join(KINDS)})")
        loaded = load_list(kind, path, skip_invalid)
        result.lists.append(loaded)
        by_kind.setdefault(kind, []).append(loaded.values)
    for kind, arrays in by_kind.items():
        result.sets[kind] = pc.unique(pa.concat_arrays(arrays))
    return result
