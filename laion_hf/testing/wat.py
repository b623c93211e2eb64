"""Write realistic Common Crawl WAT files from page descriptions.

A WAT file, as Common Crawl publishes it, is a gzip file with one gzip member
per WARC record: a ``warcinfo`` record first, then for every captured page
three ``metadata`` records whose JSON body describes the WARC ``request``,
``response`` and ``metadata`` records of the original crawl. Only the
response envelope carries ``HTML-Metadata`` with the page's ``Head`` and
``Links`` (``IMG@/src`` links with their ``alt``, ``A@/href`` links...).

The demo writes a synthetic crawl with this module (image links pointing at a
loopback image server) and the tests write their hard cases with it, so the
extractor is always exercised on the real layout rather than on a shortcut.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

import fsspec


@dataclass
class Image:
    """An ``<img src=... alt=...>`` tag; ``alt=None`` means the attribute is absent."""

    src: str
    alt: str | None = None


@dataclass
class Page:
    """One captured HTML page: its URL, optional ``<base href>``, images and other links.

    ``links`` are ``(path, url, text)`` anchors such as
    ``("A@/href", "https://creativecommons.org/licenses/by/4.0/", "CC BY")``;
    ``extra_links`` are raw link dicts appended as-is (for hard cases the typed
    fields cannot express).
    """

    url: str
    images: list[Image] = field(default_factory=list)
    base: str | None = None
    links: list[tuple[str, str, str]] = field(default_factory=list)
    title: str = "A page"
    extra_links: list[dict[str, Any]] = field(default_factory=list)


def _warc_date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class WatWriter:
    """Append WARC records, one gzip member each, to a binary stream in Common Crawl's WAT layout."""

    def __init__(self, stream: IO[bytes], *, wat_filename: str, warc_filename: str):
        self._stream = stream
        self.wat_filename = wat_filename
        self.warc_filename = warc_filename
        self._date = _warc_date(datetime(2023, 6, 1, tzinfo=timezone.utc))
        self._warc_offset = 0
        self.write_warcinfo()

    def write_record(self, warc_type: str, payload: bytes, *, headers: dict[str, str] | None = None) -> int:
        """Write one record as its own gzip member; return the member's offset in the file."""
        offset = self._stream.tell()
        lines = [
            "WARC/1.0",
            f"WARC-Type: {warc_type}",
            f"WARC-Date: {self._date}",
            f"WARC-Record-ID: <urn:uuid:{uuid.uuid4()}>",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
            f"Content-Length: {len(payload)}",
        ]
        record = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload + b"\r\n\r\n"
        self._stream.write(gzip.compress(record, compresslevel=6, mtime=0))
        return offset

    def write_warcinfo(self) -> int:
        fields = (
            "Software-Info: ia-web-commons.1.1.10-SNAPSHOT-20230601000000\r\n"
            "Extracted-Date: Thu, 01 Jun 2023 00:00:00 GMT\r\n"
            "ip: 10.0.0.1\r\nhostname: ip-10-0-0-1.ec2.internal\r\n"
            "format: WARC File Format 1.0\r\n"
            "conformsTo: http://bibnum.bnf.fr/WARC/WARC_ISO_28500_version1_latestdraft.pdf\r\n"
        ).encode("utf-8")
        return self.write_record(
            "warcinfo",
            fields,
            headers={"WARC-Filename": self.wat_filename, "Content-Type": "application/warc-fields"},
        )

    def write_metadata_json(self, target_uri: str, envelope: dict[str, Any], *, refers_to: str) -> int:
        """Write one WAT ``metadata`` record holding the JSON description of an original WARC record."""
        body = {
            "Container": {
                "Filename": self.warc_filename,
                "Compressed": True,
                "Offset": str(self._warc_offset),
                "Gzip-Metadata": {"Deflate-Length": "1234", "Header-Length": "10", "Footer-Length": "8"},
            },
            "Envelope": envelope,
        }
        self._warc_offset += 1234
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return self.write_record(
            "metadata",
            payload,
            headers={
                "WARC-Target-URI": target_uri,
                "WARC-Refers-To": refers_to,
                "Content-Type": "application/json",
            },
        )

    def write_page(self, page: Page) -> int:
        """Write the request, response and metadata records of one page; return the response's offset."""
        ids = {kind: f"<urn:uuid:{uuid.uuid4()}>" for kind in ("request", "response", "metadata")}
        self.write_metadata_json(page.url, self._request_envelope(page, ids["request"]), refers_to=ids["request"])
        offset = self.write_metadata_json(
            page.url, self.response_envelope(page, ids["response"]), refers_to=ids["response"]
        )
        self.write_metadata_json(page.url, self._metadata_envelope(page, ids["metadata"]), refers_to=ids["metadata"])
        return offset

    def _warc_header(self, page: Page, warc_type: str, record_id: str, content_type: str) -> dict[str, str]:
        return {
            "WARC-Type": warc_type,
            "WARC-Date": self._date,
            "WARC-Record-ID": record_id,
            "Content-Length": "2048",
            "Content-Type": content_type,
            "WARC-Warcinfo-ID": "<urn:uuid:00000000-0000-0000-0000-000000000000>",
            "WARC-IP-Address": "192.0.2.1",
            "WARC-Target-URI": page.url,
        }

    def _request_envelope(self, page: Page, record_id: str) -> dict[str, Any]:
        return {
            "Format": "WARC",
            "WARC-Header-Length": "300",
            "Block-Digest": "sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "Actual-Content-Length": "250",
            "WARC-Header-Metadata": self._warc_header(page, "request", record_id, "application/http; msgtype=request"),
            "Payload-Metadata": {
                "Actual-Content-Type": "application/http; msgtype=request",
                "HTTP-Request-Metadata": {
                    "Request-Message": {"Method": "GET", "Path": "/", "Version": "HTTP/1.1"},
                    "Headers-Length": "250",
                    "Headers": {"Host": page.url.split("/")[2] if "//" in page.url else "", "Accept": "*/*"},
                    "Entity-Length": "0",
                    "Entity-Trailing-Slop-Bytes": "0",
                },
            },
        }

    def response_envelope(self, page: Page, record_id: str) -> dict[str, Any]:
        """The ``Envelope`` of a page's response record (public so tests can write damaged variants)."""
        links: list[dict[str, Any]] = []
        for path, url, text in page.links:
            links.append({"path": path, "url": url, "text": text})
        for image in page.images:
            link: dict[str, Any] = {"path": "IMG@/src", "url": image.src}
            if image.alt is not None:
                link["alt"] = image.alt
            links.append(link)
        links.extend(page.extra_links)
        head: dict[str, Any] = {
            "Title": page.title,
            "Metas": [{"name": "viewport", "content": "width=device-width"}],
            "Link": [{"path": "LINK@/href", "url": "/style.css", "rel": "stylesheet"}],
        }
        if page.base is not None:
            head["Base"] = page.base
        return {
            "Format": "WARC",
            "WARC-Header-Length": "400",
            "Block-Digest": "sha1:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
            "Actual-Content-Length": "2048",
            "WARC-Header-Metadata": self._warc_header(page, "response", record_id, "application/http; msgtype=response"),
            "Payload-Metadata": {
                "Actual-Content-Type": "application/http; msgtype=response",
                "HTTP-Response-Metadata": {
                    "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
                    "Headers": {"Content-Type": "text/html; charset=UTF-8", "Server": "nginx"},
                    "Headers-Length": "200",
                    "Entity-Length": "1848",
                    "Entity-Trailing-Slop-Length": "0",
                    "Entity-Digest": "sha1:CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
                    "HTML-Metadata": {"Head": head, "Links": links},
                },
            },
        }

    def _metadata_envelope(self, page: Page, record_id: str) -> dict[str, Any]:
        return {
            "Format": "WARC",
            "WARC-Header-Length": "350",
            "Block-Digest": "sha1:DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD",
            "Actual-Content-Length": "40",
            "WARC-Header-Metadata": self._warc_header(page, "metadata", record_id, "application/warc-fields"),
            "Payload-Metadata": {
                "Actual-Content-Type": "application/metadata-fields",
                "WARC-Metadata-Metadata": {"Metadata-Records": [{"Name": "fetchTimeMs", "Value": "120"}]},
            },
        }


def write_wat(path: str, pages: Iterable[Page], *, warc_filename: str | None = None) -> str:
    """Write ``pages`` to a ``.warc.wat.gz`` file at ``path`` (local or fsspec URL); return ``path``."""
    wat_filename = path.rsplit("/", 1)[-1]
    warc_filename = warc_filename or wat_filename.replace(".warc.wat.gz", ".warc.gz")
    with fsspec.open(path, "wb") as raw:
        writer = WatWriter(raw, wat_filename=wat_filename, warc_filename=warc_filename)
        for page in pages:
            writer.write_page(page)
    return path
