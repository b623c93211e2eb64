"""``extract``: Common Crawl WAT files -> deduplicated image/text candidate shards.

Two phases, both resumable:

1. *per file* (one worker per WAT file, :func:`extract_file`): stream the
   records, apply LAION's rules (:mod:`.rules`) to every ``IMG@/src`` link,
   drop pairs repeated within the file, detect the caption language, and
   write ``_files/<name>.parquet`` atomically; the runner then writes the
   file's done marker holding its stats. A crashed file has no marker and is
   redone from scratch, so it is never half-counted.
2. *global* (the shuffle of :mod:`.dedup`, run by :mod:`laion_hf.steps.extract`):
   pairs repeated across files are dropped (first file in input order wins) and the final
   ``<name>.parquet`` shards are written, with ``duplicate_global`` added to
   each file's counts so that ``IMG links = kept + dropped`` still holds.

Records are parsed only when their bytes contain ``IMG@/src`` (as the
crawling@home parser did): a page without an image link yields nothing, and
skipping its JSON parse is most of the speed-up over parsing everything.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import fsspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from laion_hf.core.errors import UserError
from laion_hf.core.hashing import laion_hash_array
from laion_hf.extract import rules
from laion_hf.extract.compiled import page_pairs
from laion_hf.extract.language import LanguageDetector
from laion_hf.extract.wat import MalformedLog, iter_metadata_payloads
from laion_hf.io.atomic import atomic_path, filesystem, join

STAGE = "extract"
FILES_DIR = "_files"
REPORT_FILE = "extract_stats.json"
DEDUP_MARKER = "_global_dedup.done.json"
SCRATCH_DIR = "_scratch"  # the cross-file dedup's shuffle files, under OUTPUT: every worker reads them, a resume too
COMMON_CRAWL_PREFIX = "https://data.commoncrawl.org/"
MAX_LISTED_MALFORMED = 100  # entries kept per file in the stats (all are counted)

INVALID_JSON = "invalid_json"
INVALID_UTF8 = "invalid_utf8"
MISSING_KEYS = "missing_keys"

_IMG_MARK = rules.IMG_PATH.encode()
_RESPONSE_MARK = b'"WARC-Type":"response"'
_LICENSE_MARK = rules.LICENSE_MARK.encode()

CANDIDATE_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("page_url", pa.string()),
        ("language", pa.string()),
        ("license", pa.string()),
        ("hash", pa.int64()),
        ("cc_filename", pa.string()),
    ]
)


class ExtractInputError(UserError):
    """Inputs that cannot form a run (nothing matched, two files with one name)."""


@dataclass(frozen=True)
class WatInput:
    """One input file and the name its outputs and done marker carry."""

    name: str
    path: str


# ---------------------------------------------------------------- inputs


def _is_listing(path: str) -> bool:
    return path.rsplit("/", 1)[-1] in ("wat.paths", "wat.paths.gz")


def _read_listing(path: str, prefix: str) -> list[str]:
    """The WAT paths of a Common Crawl ``wat.paths(.gz)`` listing, made absolute with ``prefix``."""
    try:
        with fsspec.open(path, "rt", compression="infer", encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except (OSError, ValueError) as exc:
        raise ExtractInputError(f"{path}: cannot read WAT listing: {exc}") from exc
    return [line if "://" in line or line.startswith("/") else prefix + line for line in lines if line]


def expand_inputs(inputs: Sequence[str], listing_prefix: str = COMMON_CRAWL_PREFIX) -> list[WatInput]:
    """Paths, globs, fsspec URLs and ``wat.paths(.gz)`` listings -> named WAT inputs, in order."""
    paths: list[str] = []
    for item in inputs:
        if _is_listing(item):
            paths.extend(_read_listing(item, listing_prefix))
        elif any(ch in item for ch in "*?["):
            fs, pattern = filesystem(item)
            matched = sorted(fs.glob(pattern))
            if not matched:
                raise ExtractInputError(f"{item}: no file matches this pattern")
            local = isinstance(fs, LocalFileSystem)
            paths.extend(m if local else fs.unstrip_protocol(m) for m in matched)
        else:
            paths.append(item)
    named: dict[str, WatInput] = {}
    for path in paths:
        name = path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gz")
        if name in named:
            raise ExtractInputError(f"{path}: same file name as {named[name].path}; outputs would collide")
        named[name] = WatInput(name, path)
    return list(named.values())


# ---------------------------------------------------------------- one file


class _PageFailure(Exception):
    """A record that cannot be read as a WAT JSON envelope (reason in ``args[0]``)."""


class _Page(NamedTuple):
    url: str
    base: str  # what relative links resolve against
    links: list
    cc_filename: str


def _read_page(payload: bytes) -> _Page | None:
    """The page a WAT record describes, or None if the record is not a response; _PageFailure if malformed."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise _PageFailure(INVALID_UTF8, str(exc)) from exc
        raise _PageFailure(INVALID_JSON, str(exc)) from exc
    try:
        envelope = data["Envelope"]
        header = envelope["WARC-Header-Metadata"]
        if header["WARC-Type"] != "response":
            return None
        url = header["WARC-Target-URI"]
        html = envelope["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
        links = html["Links"]
        head = html.get("Head") or {}
        cc_filename = data["Container"]["Filename"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise _PageFailure(MISSING_KEYS, f"no key {exc}") from exc
    if not isinstance(url, str) or not isinstance(links, list) or not isinstance(cc_filename, str):
        raise _PageFailure(MISSING_KEYS, "WARC-Target-URI, Links or Container.Filename of the wrong type")
    base = rules.page_base(url, head.get("Base") if isinstance(head, dict) else None)
    return _Page(url[: rules.MAX_TEXT], base, links, cc_filename)


class _ShardWriter:
    """Buffers kept pairs, adds language and hash per batch, writes one parquet file."""

    def __init__(self, sink: Any, detector: LanguageDetector | None, batch_rows: int):
        self.sink = sink
        self.detector = detector
        self.batch_rows = batch_rows
        self.pending: list[tuple[tuple[str, str], str, str, str]] = []
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def add(self, pair: tuple[str, str], page_url: str, license_url: str, cc_filename: str) -> None:
        self.pending.append((pair, page_url, license_url, cc_filename))
        if len(self.pending) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        pairs, page_urls, licenses, cc_filenames = zip(*self.pending) if self.pending else ((), (), (), ())
        urls, captions = zip(*pairs) if pairs else ((), ())
        url_array, caption_array = pa.array(urls, pa.string()), pa.array(captions, pa.string())
        table = pa.Table.from_arrays(
            [
                url_array,
                caption_array,
                pa.array(page_urls, pa.string()),
                self._languages(captions),
                pa.array(licenses, pa.string()),
                laion_hash_array(url_array, caption_array),
                pa.array(cc_filenames, pa.string()),
            ],
            schema=CANDIDATE_SCHEMA,
        )
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.sink, CANDIDATE_SCHEMA, compression="zstd")
        self.writer.write_table(table)
        self.rows += table.num_rows
        self.pending.clear()

    def _languages(self, captions: Sequence[str]) -> pa.Array:
        if self.detector is None:  # language ID left to a later stage: null, not "" (= not confident)
            return pa.nulls(len(captions), pa.string())
        return pa.array(self.detector.detect_all(captions), pa.string())

    def close(self) -> None:
        if self.writer is None or self.pending:
            self.flush()
        self.writer.close()


def extract_file(
    wat: WatInput, files_dir: str, detector: LanguageDetector | None = None, batch_rows: int = 50_000
) -> dict[str, Any]:
    """Extract one WAT file into ``files_dir/<name>.parquet`` (atomically); return its stats record.

    ``detector`` None leaves the language column null (language ID run by a later stage).
    """
    started = time.perf_counter()
    log = MalformedLog()
    dropped: dict[str, int] = {}
    records = responses = img_links = 0
    seen: set[tuple[str, str]] = set()

    with atomic_path(join(files_dir, f"{wat.name}.parquet")) as tmp, fsspec.open(tmp, "wb") as sink:
        out = _ShardWriter(sink, detector, batch_rows)
        for offset, payload in iter_metadata_payloads(wat.path, log):
            records += 1
            if _IMG_MARK not in payload:
                responses += _RESPONSE_MARK in payload
                continue
            try:
                page = _read_page(payload)
            except _PageFailure as failure:
                log.add(failure.args[0], wat.path, offset, failure.args[1])
                continue
            if page is None:
                continue
            responses += 1
            pairs, page_img_links = page_pairs(page.links, rules.Resolver(page.base), seen, dropped)
            img_links += page_img_links
            if pairs:
                license_url = rules.page_license(page.links) if _LICENSE_MARK in payload else rules.NO_LICENSE
                for pair in pairs:
                    out.add(pair, page.url, license_url, page.cc_filename)
        out.close()

    malformed = Counter(entry.reason for entry in log.entries)
    return {
        "stage": STAGE,
        "file": wat.path,
        "rows_in": img_links,
        "kept": out.rows,
        "dropped": dict(sorted(dropped.items())),
        "seconds": round(time.perf_counter() - started, 3),
        "records": records,
        "response_pages": responses,
        "img_links": img_links,
        "malformed": dict(sorted(malformed.items())),
        "malformed_records": [entry.to_dict() for entry in log.entries[:MAX_LISTED_MALFORMED]],
    }
