"""A Hub-compatible HTTP server on loopback, for tests and ``make demo``.

It speaks the part of the Hugging Face Hub API that the *unmodified*
``huggingface_hub`` and ``datasets`` clients use to create a dataset repo,
upload to it (regular files inline in the commit, large/binary files through
the LFS batch + PUT path that the client takes with ``HF_HUB_DISABLE_XET=1``),
list it, resolve files with HTTP ranges and stream it with ``load_dataset``.

Storage is content-addressed on disk (``root/objects/<sha256>``); repository
state (branches, commits, trees) lives in memory. A commit is atomic: a file is
either absent or complete on every revision. Faults can be switched on to test
clients: drop the connection in the middle of an LFS upload, answer 429, echo the Authorization header.

    with HubServer() as hub, hub.environment():
        ...  # huggingface_hub / datasets now talk to hub.url
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

#: Suffixes the Hub's default .gitattributes stores with LFS.
LFS_SUFFIXES = (".tar", ".parquet", ".arrow", ".jpg", ".jpeg", ".png", ".webp", ".gz", ".zst", ".bin", ".npy")
#: Regular files above this size go to LFS (the Hub's own threshold).
LFS_MIN_SIZE = 10 * 1024 * 1024
_TYPE_PREFIX = {"dataset": "datasets/", "model": "", "space": "spaces/"}
_TYPE_OF_PLURAL = {"datasets": "dataset", "models": "model", "spaces": "space"}


def git_blob_oid(data: bytes) -> str:
    """Git's object id of a blob (what the Hub reports as a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Entry:
    """One file of a revision: content address, size, and whether it is stored as LFS."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str

    def tree_json(self, path: str) -> dict:
        item = {"type": "file", "oid": self.git_oid, "size": self.size, "path": path}
        if self.lfs:
            item["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(_lfs_pointer(self.sha256, self.size))}
        return item


@dataclass
class Commit:
    oid: str
    title: str
    parent: str | None
    tree: dict[str, Entry]
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    owner: str
    private: bool
    created: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


@dataclass
class Faults:
    """Failures the server injects, to test clients' resumption and error handling."""

    #: Drop the connection after this many bytes of every LFS upload body (None: off) ...
    drop_upload_after_bytes: int | None = None
    #: ... once this many uploads have completed (to let a first batch through).
    drop_after_completed_uploads: int = 0
    #: Answer 429 to requests whose path matches this regex (None: off).
    rate_limit_path: str | None = None
    #: Answer 500 echoing the request's Authorization header, as a misconfigured proxy does (path regex; None: off).
    echo_authorization_path: str | None = None
    #: Set when an upload was dropped, so a test can react (e.g. kill the uploader).
    upload_dropped: threading.Event = field(default_factory=threading.Event)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubServer:
    """The server: start it (context manager), point clients at :attr:`url`."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: dict[str, str] | None = None,
    ) -> None:
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="laion-hf-hub-"))
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        #: token -> user name; writes need one of these, reads of private repos too.
        self.tokens = dict(tokens or {"hf_test_token": "tester"})
        self.repos: dict[tuple[str, str], Repo] = {}
        self.faults = Faults()
        #: How many times each LFS object was received completely (to check "no re-upload").
        self.uploads: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.lock = threading.RLock()
        self._httpd = _QuietServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def token(self) -> str:
        """A valid write token."""
        return next(iter(self.tokens))

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        """Point this process's huggingface_hub and datasets at this server (see :func:`use_endpoint`)."""
        with use_endpoint(self.url):
            yield

    # -- repository state ---------------------------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256

    def has_object(self, sha256: str, size: int) -> bool:
        path = self.object_path(sha256)
        return path.exists() and path.stat().st_size == size

    def store_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha256)
        if not path.exists():
            tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha256

    def create_repo(self, repo_type: str, repo_id: str, owner: str, private: bool) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, "You already created this repo", None)
            now = _now()
            repo = Repo(repo_type, repo_id, owner, private, now)
            initial = Commit(uuid.uuid4().hex + "00000000", "initial commit", None, {}, now)
            repo.commits[initial.oid] = initial
            repo.branches["main"] = initial.oid
            self.repos[(repo_type, repo_id)] = repo
            return repo

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """Every file of a revision with its bytes (for tests)."""
        commit = self.repos[(repo_type, repo_id)].resolve(revision)
        return {path: self.object_path(e.sha256).read_bytes() for path, e in sorted(commit.tree.items())}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _is_lfs(path: str, size: int, sample: bytes) -> bool:
    return size >= LFS_MIN_SIZE or path.lower().endswith(LFS_SUFFIXES) or b"\0" in sample


def _card_yaml_errors(content: str) -> list[str]:
    import yaml

    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
    if not match:
        return []
    try:
        meta = yaml.safe_load(match[1])
    except yaml.YAMLError as exc:
        return [f"YAML does not parse: {exc}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["YAML metadata must be a mapping"]
    configs = meta.get("configs") or []
    errors = [f"configs[{i}] needs config_name and data_files" for i, c in enumerate(configs) if not isinstance(c, dict) or "config_name" not in c or "data_files" not in c]
    names = [c.get("config_name") for c in configs if isinstance(c, dict)]
    if len(names) != len(set(names)):
        errors.append("configs: config_name values must be unique")
    if sum(bool(c.get("default")) for c in configs if isinstance(c, dict)) > 1:
        errors.append("configs: at most one config may be default")
    return errors


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (killed workers, dropped uploads) are normal here, not errors to print."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        server_state = hub

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: HubServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence per-request logging
        pass

    # -- plumbing -------------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        hub = self.server_state
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        segments = [unquote(s) for s in split.path.strip("/").split("/")] if split.path.strip("/") else []
        hub.requests[f"{method} {split.path}"] += 1
        try:
            if hub.faults.rate_limit_path and re.search(hub.faults.rate_limit_path, split.path):
                self._drain()
                raise HubError(429, "You have been rate-limited; retry later.", None)
            if hub.faults.echo_authorization_path and re.search(hub.faults.echo_authorization_path, split.path):
                self._drain()
                raise HubError(500, f"request rejected (you sent {self.headers.get('Authorization', 'nothing')})", None)
            handled = self._route(method, segments)
            if handled is False:
                self._drain()
                raise HubError(404, f"no route for {method} {split.path}", None)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.status == 429:
                headers["Retry-After"] = "30"
            self._send_json({"error": err.message}, status=err.status, headers=headers)
        except ConnectionError:
            self.close_connection = True

    def _route(self, method: str, s: list[str]) -> bool | None:
        if s[:2] == ["api", "whoami-v2"]:
            return self._whoami()
        if s[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml()
        if s[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo()
        if s[:3] == ["api", "repos", "delete"] and method in ("POST", "DELETE"):
            return self._delete_repo()
        if s[:1] == ["_lfs"] and method == "PUT" and len(s) == 2:
            return self._lfs_put(s[1])
        if s[:2] == ["_lfs", "verify"] and method == "POST":
            return self._lfs_verify()
        if len(s) >= 4 and s[0] == "api" and s[1] in _TYPE_OF_PLURAL:
            repo_type, repo_id, rest = _TYPE_OF_PLURAL[s[1]], f"{s[2]}/{s[3]}", s[4:]
            return self._api_repo(method, repo_type, repo_id, rest)
        repo_type, rest = ("dataset", s[1:]) if s[:1] == ["datasets"] else ("space", s[1:]) if s[:1] == ["spaces"] else ("model", s)
        if len(rest) >= 2 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(repo_type, f"{rest[0]}/{rest[1][:-4]}")
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(method, repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        return False

    def _drain(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> dict:
        body = self._drain()
        return json.loads(body) if body else {}

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    # -- auth -----------------------------------------------------------------------------------------------------

    def _user(self, required: bool) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if token is None:
            if required:
                raise HubError(401, "Authorization header is required to write to the Hub.", None)
            return None
        user = self.server_state.tokens.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header", None)
        return user

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        user = self._user(required=write)
        repo = self.server_state.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user is None):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # -- account and repos ----------------------------------------------------------------------------------------

    def _whoami(self) -> None:
        user = self._user(required=True)
        self._send_json(
            {"type": "user", "name": user, "fullname": user, "orgs": [], "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}}
        )

    def _validate_yaml(self) -> None:
        """Check a README's YAML the way the Hub rejects it: parseable, a mapping, well-formed ``configs``."""
        errors = _card_yaml_errors(self._json_body().get("content", ""))
        self._send_json({"errors": [{"message": e} for e in errors], "warnings": []}, status=400 if errors else 200)

    def _create_repo(self) -> None:
        user = self._user(required=True)
        body = self._json_body()
        repo_type = body.get("type") or "model"
        owner = body.get("organization") or user
        repo_id = f"{owner}/{body['name']}"
        private = bool(body.get("private")) or body.get("visibility") == "private"
        url = f"{self.server_state.url}/{_TYPE_PREFIX[repo_type]}{repo_id}"
        try:
            self.server_state.create_repo(repo_type, repo_id, owner, private)
        except HubError as err:  # the Hub names the existing repo, and clients with exist_ok read it
            self._send_json({"error": err.message, "url": url}, status=err.status, headers={"X-Error-Message": err.message})
            return
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        self._user(required=True)
        body = self._json_body()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self._user(True)}/{body['name']}"
        with self.server_state.lock:
            if self.server_state.repos.pop((repo_type, repo_id), None) is None:
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        self._send_json({})

    def _api_repo(self, method: str, repo_type: str, repo_id: str, rest: list[str]) -> bool | None:
        write = method in ("POST", "PUT", "DELETE") and rest[:1] not in (["paths-info"],)
        if method == "POST" and rest[:1] == ["paths-info"]:
            repo = self._repo(repo_type, repo_id)
            return self._paths_info(repo, rest[1] if len(rest) > 1 else "main")
        repo = self._repo(repo_type, repo_id, write=write)
        if method == "GET" and (not rest or rest[0] == "revision"):
            return self._info(repo, rest[1] if len(rest) > 1 else "main")
        if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            return self._tree(repo, rest[1], "/".join(rest[2:]))
        if method == "GET" and rest[:1] == ["refs"]:
            return self._refs(repo)
        if method == "GET" and rest[:1] == ["commits"] and len(rest) >= 2:
            return self._commits(repo, rest[1])
        if method == "POST" and rest[:1] == ["preupload"] and len(rest) == 2:
            return self._preupload(repo, rest[1])
        if method == "POST" and rest[:1] == ["commit"] and len(rest) == 2:
            return self._commit_files(repo, rest[1])
        if method == "POST" and rest[:1] == ["branch"] and len(rest) >= 2:
            return self._create_branch(repo, "/".join(rest[1:]))
        if method == "PUT" and rest[:1] == ["settings"]:
            body = self._json_body()
            repo.private = bool(body.get("private", repo.private))
            self._send_json({})
            return None
        return False

    def _info(self, repo: Repo, revision: str) -> None:
        commit = self._commit(repo, revision)
        self._send_json(
            {
                "_id": repo.repo_id,
                "id": repo.repo_id,
                "author": repo.owner,
                "sha": commit.oid,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "createdAt": repo.created,
                "lastModified": commit.date,
                "siblings": [{"rfilename": path} for path in sorted(commit.tree)],
            }
        )

    def _tree(self, repo: Repo, revision: str, path: str) -> None:
        commit = self._commit(repo, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path}/" if path else ""
        if path and path in commit.tree:
            raise HubError(404, f"{path} is a file, not a folder", "EntryNotFound")
        items, folders = [], set()
        for file_path, entry in sorted(commit.tree.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    items.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "path": folder})
            if recursive or len(parts) == 1:
                items.append(entry.tree_json(file_path))
        if path and not items:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        self._send_json(items)

    def _paths_info(self, repo: Repo, revision: str) -> None:
        commit = self._commit(repo, revision)
        body = self._drain()
        content_type = self.headers.get("Content-Type", "")
        fields = json.loads(body) if "json" in content_type else {k: v for k, v in parse_qs(body.decode()).items()}
        paths = fields.get("paths", [])
        paths = [paths] if isinstance(paths, str) else paths
        items = []
        for path in paths:
            path = path.strip("/")
            if path in commit.tree:
                items.append(commit.tree[path].tree_json(path))
            elif any(p.startswith(path + "/") for p in commit.tree) or path == "":
                items.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path})
        self._send_json(items)

    def _refs(self, repo: Repo) -> None:
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid} for n, oid in repo.branches.items()]
        self._send_json({"branches": branches, "tags": [], "converts": []})

    def _commits(self, repo: Repo, revision: str) -> None:
        commit, history = self._commit(repo, revision), []
        while commit is not None:
            history.append({"id": commit.oid, "title": commit.title, "message": "", "authors": [], "date": commit.date})
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._send_json(history)

    def _create_branch(self, repo: Repo, branch: str) -> None:
        body = self._json_body()
        with self.server_state.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists", None)
            start = self._commit(repo, body.get("startingPoint") or "main")
            repo.branches[branch] = start.oid
        self._send_json({})

    # -- uploads --------------------------------------------------------------------------------------------------

    def _preupload(self, repo: Repo, revision: str) -> None:
        commit = self._commit(repo, revision)
        files = []
        for item in self._json_body().get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            lfs = _is_lfs(item["path"], int(item["size"]), sample)
            existing = commit.tree.get(item["path"])
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else existing.git_oid
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send_json({"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        self._repo(repo_type, repo_id, write=True)
        hub, objects = self.server_state, []
        for obj in self._json_body().get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            item = {"oid": oid, "size": size}
            if not hub.has_object(oid, size):
                item["authenticated"] = True
                item["actions"] = {
                    "upload": {"href": f"{hub.url}/_lfs/{oid}?size={size}", "header": {}},
                    "verify": {"href": f"{hub.url}/_lfs/verify", "header": {}},
                }
            objects.append(item)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(), {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, oid: str) -> None:
        hub = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        drop_after = hub.faults.drop_upload_after_bytes
        if sum(hub.uploads.values()) < hub.faults.drop_after_completed_uploads:
            drop_after = None
        tmp = hub.root / "objects" / f"{oid}.{uuid.uuid4().hex}.part"
        digest, received = hashlib.sha256(), 0
        try:
            with tmp.open("wb") as out:
                while received < length:
                    want = min(1 << 16, length - received)
                    if drop_after is not None:
                        want = min(want, max(drop_after - received, 1))
                    chunk = self.rfile.read(want)
                    if not chunk:
                        raise ConnectionError("client went away mid-upload")
                    received += len(chunk)
                    digest.update(chunk)
                    out.write(chunk)
                    if drop_after is not None and received >= drop_after and received < length:
                        hub.faults.upload_dropped.set()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        raise ConnectionError("connection dropped by fault injection")
            if digest.hexdigest() != oid:
                raise HubError(400, f"uploaded content does not match oid {oid}", None)
            tmp.replace(hub.object_path(oid))
        finally:
            tmp.unlink(missing_ok=True)
        with hub.lock:
            hub.uploads[oid] += 1
        self._send(200, b"")

    def _lfs_verify(self) -> None:
        body = self._json_body()
        if not self.server_state.has_object(body["oid"], int(body["size"])):
            raise HubError(404, f"LFS object {body['oid']} was not uploaded", None)
        self._send_json({"success": True})

    def _commit_files(self, repo: Repo, revision: str) -> None:
        hub = self.server_state
        lines = [json.loads(line) for line in self._drain().splitlines() if line.strip()]
        with hub.lock:
            parent = self._commit(repo, revision)
            if revision not in repo.branches:
                raise HubError(400, f"can only commit to a branch, not {revision}", None)
            tree, title = dict(parent.tree), "commit"
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    title = value.get("summary") or title
                    expected = value.get("parentCommit")
                    if expected and not parent.oid.startswith(expected):
                        raise HubError(412, f"parent commit {expected} is not the head of {revision}", None)
                elif key == "file":
                    data = base64.b64decode(value["content"])
                    tree[value["path"]] = Entry(hub.store_bytes(data), len(data), False, git_blob_oid(data))
                elif key == "lfsFile":
                    oid, size = value["oid"], int(value.get("size") or hub.object_path(value["oid"]).stat().st_size)
                    if not hub.has_object(oid, size):
                        raise HubError(422, f"LFS object {oid} for {value['path']} was never uploaded", None)
                    tree[value["path"]] = Entry(oid, size, True, git_blob_oid(_lfs_pointer(oid, size)))
                elif key == "deletedFile":
                    if tree.pop(value["path"], None) is None:
                        raise HubError(404, f"{value['path']} does not exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for path in [p for p in tree if p.startswith(prefix)]:
                        del tree[path]
            oid = hashlib.sha1(f"{parent.oid}{time.time_ns()}{uuid.uuid4()}".encode()).hexdigest()
            repo.commits[oid] = Commit(oid, title, parent.oid, tree, _now())
            repo.branches[revision] = oid
        prefix = _TYPE_PREFIX[repo.repo_type]
        self._send_json({"commitUrl": f"{hub.url}/{prefix}{repo.repo_id}/commit/{oid}", "commitOid": oid, "success": True})

    # -- downloads ------------------------------------------------------------------------------------------------

    def _resolve(self, method: str, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_type, repo_id)
        commit = self._commit(repo, revision)
        entry = commit.tree.get(path)
        if entry is None:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        etag = entry.sha256 if entry.lfs else entry.git_oid
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
            "X-Repo-Commit": commit.oid,
        }
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        start, end, status = 0, entry.size - 1, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match[1] or match[2]):
            if match[1]:
                start, end = int(match[1]), int(match[2]) if match[2] else entry.size - 1
            else:
                start = max(entry.size - int(match[2]), 0)
            end = min(end, entry.size - 1)
            if start > end:
                self._send(416, b"", {"Content-Range": f"bytes */{entry.size}"}, head=method == "HEAD")
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        length = end - start + 1 if entry.size else 0
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if method == "HEAD":
            return
        with self.server_state.object_path(entry.sha256).open("rb") as f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                chunk = f.read(min(1 << 20, remaining))
                self.wfile.write(chunk)
                remaining -= len(chunk)


@contextlib.contextmanager
def use_endpoint(url: str) -> Iterator[None]:
    """Point huggingface_hub and datasets *in this process* at ``url``, with Xet disabled.

    Both libraries read ``HF_ENDPOINT`` once, at import time, into module
    constants; a test session may already have imported them, so besides the
    environment (inherited by subprocesses) this sets those constants and
    restores everything on exit.
    """
    import datasets.config
    import huggingface_hub.constants as hub_constants
    from huggingface_hub import HfFileSystem, hf_api

    url = url.rstrip("/")
    env = {"HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    patches = [
        (hub_constants, "ENDPOINT", url),
        (hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"),
        (hub_constants, "HF_HUB_DISABLE_XET", True),
        (datasets.config, "HF_ENDPOINT", url),
        (datasets.config, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}"),
        (hf_api.api, "endpoint", url),
    ]
    saved_env = {name: os.environ.get(name) for name in env}
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    os.environ.update(env)
    for obj, name, value in patches:
        setattr(obj, name, value)
    HfFileSystem.clear_instance_cache()
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        HfFileSystem.clear_instance_cache()


def main() -> None:
    """Run the server in the foreground: ``python -m laion_hf.testing.hub_server [--port N] [--root DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--root", default=None, help="where objects are stored (default: a temporary folder)")
    parser.add_argument("--token", default="hf_test_token", help="the write token clients must send")
    args = parser.parse_args()
    with HubServer(args.root, args.host, args.port, tokens={args.token: "tester"}) as hub:
        print(f"HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1 HF_TOKEN={args.token}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
