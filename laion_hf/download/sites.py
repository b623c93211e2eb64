"""Site files (robots.txt, tdmrep.json) fetched once per origin and shared by every worker of a run.

An origin is ``scheme://host:port`` (robots.txt's scope, RFC 9309 2.3). Its
files are fetched with the download's own :class:`~laion_hf.download.fetch.Fetcher`
(the same address policy, redirect checks, timeout and deadline as images; the
body cut at a size), and the answers are cached:

- in memory, per process (bounded);
- on disk, one JSON file per origin under the run's hidden folder
  (``OUTPUT/.laion-hf/sites/ab/<sha1>.json``), so the workers of a run, and a
  retry, share them. A worker that finds another fetching an origin (its
  ``.lock`` file, created exclusively) waits for the answer instead of asking
  the site again; a lock older than a fetch can last is taken over.

An answer expires after :attr:`SiteFiles.found_seconds` (found or absent; RFC
9309 2.4: not cached for more than 24 hours) or :attr:`SiteFiles.unreachable_seconds`
(unreachable: the site is not asked again for a while). Times are UNIX
seconds, so answers can be compared across processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from laion_hf.download.fetch import Fetched, Fetcher

FOUND = "found"  # a 2xx answer: the body holds the file
ABSENT = "absent"  # the site has no such file
UNREACHABLE = "unreachable"  # no usable answer (what it means depends on the file)
REFUSED = "refused"  # the address policy does not contact the host at all: the image is refused anyway
_LOCK_POLL = 0.05


@dataclass(frozen=True)
class SiteFile:
    """What asking an origin for one file came to."""

    url: str
    state: str
    status: int | None = None
    text: str = ""  # the body, UTF-8 with invalid bytes replaced, cut at the file's size limit
    sha256: str | None = None  # of the bytes read
    fetched_at: float = 0.0  # UNIX seconds
    detail: str | None = None  # why it is not found: the fetch's reason and message

    @classmethod
    def from_fetch(cls, fetched: Fetched, url: str, state_of: Callable[[int | None, str | None], str]) -> SiteFile:
        now = time.time()
        if fetched.refused:
            return cls(url, REFUSED, detail=fetched.reason, fetched_at=now)
        if fetched.data is not None:
            return cls(url, FOUND, fetched.status, fetched.data.decode("utf-8", errors="replace"),
                       hashlib.sha256(fetched.data).hexdigest(), now)
        return cls(url, state_of(fetched.status, fetched.reason), fetched.status,
                   detail=f"{fetched.reason}: {fetched.message}", fetched_at=now)


@dataclass(frozen=True)
class SiteFileKind:
    """A file every origin may publish: where, how much of it is read, what a failed answer means."""

    name: str
    path: str
    max_bytes: int
    state_of: Callable[[int | None, str | None], str]


def origin_of(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{host}:{port}"


class SiteFiles:
    """The files of ``kinds`` for any origin, fetched at most once per expiry across the run's processes."""

    def __init__(
        self,
        fetcher: Fetcher,
        kinds: Mapping[str, SiteFileKind],
        cache_dir: str | None,
        *,
        found_seconds: float = 24 * 3600.0,
        unreachable_seconds: float = 3600.0,
        memory_size: int = 10_000,
    ) -> None:
        self.fetcher = fetcher
        self.kinds = dict(kinds)
        self.cache_dir = cache_dir
        self.found_seconds = found_seconds
        self.unreachable_seconds = unreachable_seconds
        self._memory: OrderedDict[str, dict[str, SiteFile]] = OrderedDict()
        self._memory_size = memory_size
        self._lock = threading.Lock()
        # a lock file older than every fetch of an origin could take belongs to a dead worker
        self._stale_lock_seconds = len(self.kinds) * fetcher.limits.deadline + 10.0

    def get(self, origin: str) -> dict[str, SiteFile]:
        """The files of ``origin`` by kind name (fetched if not cached or expired)."""
        with self._lock:
            files = self._memory.get(origin)
            if files is not None and self._fresh(files):
                self._memory.move_to_end(origin)
                return files
        files = self._shared(origin) if self.cache_dir else self._fetch(origin)
        with self._lock:
            self._memory[origin] = files
            while len(self._memory) > self._memory_size:
                self._memory.popitem(last=False)
        return files

    # -- freshness ---------------------------------------------------------
    def _expires(self, file: SiteFile) -> float:
        seconds = self.unreachable_seconds if file.state == UNREACHABLE else self.found_seconds
        return file.fetched_at + seconds

    def _fresh(self, files: Mapping[str, SiteFile]) -> bool:
        now = time.time()
        return set(files) >= set(self.kinds) and all(self._expires(files[name]) > now for name in self.kinds)

    # -- fetching ------------------------------------------------------------
    def _fetch(self, origin: str) -> dict[str, SiteFile]:
        """Ask the origin for each file; once it is unreachable or refused, the next files are not asked for."""
        files: dict[str, SiteFile] = {}
        for name, kind in self.kinds.items():
            if files and next(reversed(files.values())).state in (UNREACHABLE, REFUSED):
                files[name] = SiteFile(origin + kind.path, next(reversed(files.values())).state,
                                       detail="not asked: the origin did not answer for another file", fetched_at=time.time())
                continue
            url = origin + kind.path
            files[name] = SiteFile.from_fetch(self.fetcher.fetch_file(url, kind.max_bytes), url, kind.state_of)
        return files

    # -- the run-wide cache on disk ------------------------------------------
    def _path(self, origin: str) -> str:
        digest = hashlib.sha1(origin.encode("utf-8")).hexdigest()
        return os.path.join(str(self.cache_dir), digest[:2], f"{digest}.json")

    def _read(self, path: str) -> dict[str, SiteFile] | None:
        try:
            with open(path, encoding="utf-8") as f:
                files = {name: SiteFile(**record) for name, record in json.load(f)["files"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing, or cut by a crash: fetched again
        return files if self._fresh(files) else None

    def _write(self, path: str, origin: str, files: Mapping[str, SiteFile]) -> None:
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"origin": origin, "files": {name: asdict(file) for name, file in files.items()}}, f)
        os.replace(tmp, path)

    def _shared(self, origin: str) -> dict[str, SiteFile]:
        path = self._path(origin)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lock = path + ".lock"
        while (files := self._read(path)) is None:
            try:
                os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                try:
                    if time.time() - os.path.getmtime(lock) > self._stale_lock_seconds:
                        os.remove(lock)
                except FileNotFoundError:
                    pass  # released meanwhile
                time.sleep(_LOCK_POLL)
                continue
            try:
                files = self._read(path)  # answered between our read and our lock
                if files is None:
                    files = self._fetch(origin)
                    self._write(path, origin, files)
            finally:
                os.remove(lock)
            break
        return files
