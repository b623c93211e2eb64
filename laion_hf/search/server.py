"""``laion-hf serve``: a local search page and the JSON API it uses, in the spirit of clip-retrieval's back end.

Routes (clip-retrieval's front end users will know the first three)::

    GET  /indices-list            ["research", "research-safe"]
    POST /knn-service             {"text" | "image": base64, "modality": "image"|"text", "num_images": 20,
                                   "indice_name", "use_mclip", "use_safety_model", "max_punsafe",
                                   "language", "min_aesthetic"}  -> [{id, score, url, caption, key, ...}]
    POST /metadata                {"indice_name", "ids": [...]} -> {id: row}
    GET  /index-info              per index: rows, model, columns, recall@10, whether thumbnails exist
    GET  /image/<indice>/<id>     the sample's image bytes from the built shards (when they are beside the index)
    GET  /  and /static/...       the page (static files, no build step)

Differences from clip-retrieval, on purpose: ``score`` is the query's cosine
and ``similarity`` keeps its LAION meaning (the pair's image-text similarity);
``use_safety_model`` hides rows whose *recorded* punsafe is above the server's
safe limit (default 0.45, Re-LAION research-safe's cut) instead of running a
model, and is refused on an index without punsafe; ``image_url`` is refused
(the server fetches nothing). The server listens on loopback unless told
otherwise, with the standard library's ThreadingHTTPServer.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from laion_hf.core.errors import UserError
from laion_hf.search.hub import local_index_folder
from laion_hf.search.images import ImageStore
from laion_hf.search.index import KnnIndex
from laion_hf.search.query import Filters, Searcher

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
MAX_BODY = 16 << 20  # an uploaded query image, base64
MAX_RESULTS = 1_000


class RequestError(Exception):
    """A request the API answers with a 4xx status and a message."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class SearchServer:
    """The indices, their searchers and image stores, and the HTTP server in a background thread."""

    def __init__(self, locations: list[str], *, host: str = "127.0.0.1", port: int = 0,
                 safe_limit: float = 0.45, images: str | None = None) -> None:
        self.safe_limit = safe_limit
        self.searchers: dict[str, Searcher] = {}
        self.images: dict[str, ImageStore] = {}
        for location in locations:
            index = KnnIndex(local_index_folder(location))
            name = index.name if index.name not in self.searchers else f"{index.name}-{len(self.searchers)}"
            self.searchers[name] = Searcher(index)
            folder = images or index.info.images
            if folder and Path(folder).is_dir():
                self.images[name] = ImageStore(folder)
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def start(self) -> SearchServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="laion-hf-serve", daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)  # wake up regularly so Ctrl-C reaches the main thread

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever(), which may never have started
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> SearchServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ the API, as plain functions of JSON

    def searcher(self, name: str | None) -> tuple[str, Searcher]:
        name = name or next(iter(self.searchers))
        if name not in self.searchers:
            raise RequestError(HTTPStatus.NOT_FOUND, f"unknown indice_name {name!r} (have: {', '.join(self.searchers)})")
        return name, self.searchers[name]

    def index_info(self) -> dict[str, Any]:
        described = {}
        for name, searcher in self.searchers.items():
            info = searcher.index.info
            described[name] = {
                "rows": info.rows, "model": info.model["name"], "dimension": info.dimension,
                "columns": info.columns, "config": info.config,
                "indices": {m: {"factory": e.factory, "recall_at_10": e.recall_at_10} for m, e in info.indices.items()},
                "thumbnails": name in self.images, "safety": "punsafe" in info.columns, "safe_limit": self.safe_limit,
            }
        return described

    def knn(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        name, searcher = self.searcher(request.get("indice_name"))
        if request.get("image_url"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "image_url is not supported: this server fetches nothing; send the image bytes")
        k = _integer(request.get("num_images", 20), "num_images")
        if not 1 <= k <= MAX_RESULTS:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"num_images must be between 1 and {MAX_RESULTS}")
        max_punsafe = request.get("max_punsafe")
        if request.get("use_safety_model"):
            if "punsafe" not in searcher.index.info.columns:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"index {name} has no punsafe column: safe mode cannot hide "
                                                           "anything; turn it off or index scored data")
            max_punsafe = self.safe_limit if max_punsafe is None else min(float(max_punsafe), self.safe_limit)
        filters = Filters(max_punsafe=_number(max_punsafe, "max_punsafe"), language=request.get("language") or None,
                          min_aesthetic=_number(request.get("min_aesthetic"), "min_aesthetic"))
        if request.get("image"):
            try:
                data = base64.b64decode(str(request["image"]).split(",", 1)[-1], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"image: not base64 ({exc})") from exc
            vector = searcher.embed_image(data, "uploaded image")
        else:
            vector = searcher.embed_text(str(request.get("text") or ""), multilingual=bool(request.get("use_mclip")))
        results = searcher.search(vector, k, modality=request.get("modality", "image"), filters=filters)
        for row in results:
            row["image"] = f"/image/{name}/{row['id']}" if name in self.images else row.get("url")
        return results

    def metadata(self, request: dict[str, Any]) -> dict[str, Any]:
        _, searcher = self.searcher(request.get("indice_name"))
        ids = [_integer(i, "ids") for i in request.get("ids", [])]
        if any(not 0 <= i < searcher.index.info.rows for i in ids):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"ids must be row numbers below {searcher.index.info.rows}")
        return {str(i): row for i, row in zip(ids, searcher.index.rows(ids))}

    def image(self, name: str, row_id: str) -> tuple[bytes, str] | None:
        if name not in self.images or name not in self.searchers or not row_id.isdigit():
            return None
        index = self.searchers[name].index
        if int(row_id) >= index.info.rows:
            return None
        row = index.rows([int(row_id)])[0]
        return self.images[name].get(row.get("shard") or "", row.get("key") or "")


def _integer(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name}: not an integer ({value!r})") from exc


def _number(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name}: not a number ({value!r})") from exc


def _handler_for(server: SearchServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        app = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    app: SearchServer
    server_version = "laion-hf-search"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - one line per request is noise here
        pass

    def _send(self, status: int, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, payload: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json")

    def _handle(self, route) -> None:
        try:
            route()
        except RequestError as exc:
            self._json({"error": str(exc)}, exc.status)
        except UserError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except Exception:  # noqa: BLE001 - a bug: the client gets a 500, the terminal the traceback
            traceback.print_exc(file=sys.stderr)
            self._json({"error": "internal error (see the server's terminal)"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _get(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/indices-list":
            return self._json(list(self.app.searchers))
        if path == "/index-info":
            return self._json(self.app.index_info())
        if path.startswith("/image/"):
            parts = path.split("/")
            found = self.app.image(parts[2], parts[3]) if len(parts) == 4 else None
            if found is None:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no image for {path}")
            return self._send(HTTPStatus.OK, found[0], found[1], cache=True)
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        allowed = {p.name for p in STATIC_DIR.iterdir()}
        if path not in ("/", "/index.html") and not path.startswith("/static/") or name not in allowed:
            raise RequestError(HTTPStatus.NOT_FOUND, f"not found: {path}")
        file = STATIC_DIR / name
        self._send(HTTPStatus.OK, file.read_bytes(), STATIC_TYPES.get(file.suffix, "application/octet-stream"))

    def _post(self) -> None:
        path = urlsplit(self.path).path
        routes = {"/knn-service": self.app.knn, "/metadata": self.app.metadata}
        if path not in routes:
            raise RequestError(HTTPStatus.NOT_FOUND, f"not found: {path}")
        length = _integer(self.headers.get("Content-Length", 0), "Content-Length")
        if length > MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY >> 20} MB")
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not JSON ({exc})") from exc
        if not isinstance(request, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        self._json(routes[path](request))
