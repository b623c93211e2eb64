"""Fetch one image URL with the guarantees a crawl of the open web needs.

- every hop (the URL and each redirect) goes through the :class:`AddressPolicy`,
  and the connection is made to the addresses it checked (DNS pinning), with
  the original host name in the ``Host`` header, the TLS server name and the
  certificate check;
- at most ``max_redirects`` redirects;
- a per-operation ``timeout`` (connect, each read) and a total ``deadline`` for
  the whole request: a :class:`Watchdog` thread shuts the socket down when the
  deadline passes, so a server dripping one byte a second, or its headers, or
  its TLS handshake, cannot hold a fetch;
- a body cap: a declared ``Content-Length`` over it is refused before reading,
  and an undeclared body is read in chunks and abandoned once over it;
- header opt-outs (``X-Robots-Tag``, ``tdm-reservation``) checked before the
  body is read.

:meth:`Fetcher.fetch` follows an image URL; :meth:`Fetcher.fetch_file` a site
file (robots.txt, tdmrep.json) under the same policy and limits, whatever its
status, its body cut at a size instead of refused. Each failure is a :class:`Fetched` with a countable ``reason`` and a
deterministic message (no object addresses, no timings).
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin

from laion_hf.download.addresses import AddressPolicy, Refusal, Target, Unresolvable
from laion_hf.download.optout import HeaderOptOut

USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"  # img2dataset's
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 16
_MAX_SERVER_TEXT = 200  # characters of a server's reason phrase kept in a message


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on one request (:attr:`DownloadOptions.limits <laion_hf.download.options.DownloadOptions.limits>`
    derives them with their documented defaults)."""

    timeout: float  # seconds for each connect and each read
    deadline: float  # seconds for the whole request, redirects and body included
    max_body_bytes: int
    max_redirects: int


@dataclass(frozen=True)
class Fetched:
    """The body of ``url``, or why there is none.

    ``refused``: the address policy, not the network, said no; ``opted_out``:
    the response's headers forbid the use; ``status``: the last HTTP status
    answered (None without an answer); ``retry_after``: the seconds a 429/503
    answer asked for.
    """

    url: str
    data: bytes | None = None
    reason: str | None = None
    message: str | None = None
    refused: bool = False
    opted_out: bool = False
    status: int | None = None
    retry_after: float | None = None


class FetchFailure(Exception):
    def __init__(self, reason: str, message: str, refused: bool = False, opted_out: bool = False,
                 status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.refused = refused
        self.opted_out = opted_out
        self.status = status
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks for (delay-seconds or an HTTP-date; RFC 9110 10.2.3), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Alarm:
    """One request's deadline; the socket it currently uses is shut down when it fires."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self._finished = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def watch(self, sock: socket.socket) -> None:
        """Make ``sock`` the one to shut down (each hop and the TLS layer replace the last)."""
        with self._lock:
            self._socket = sock
        self.check()

    def fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.fired = True
            sock = self._socket
        if sock is not None:
            try:  # the base method on the descriptor: wakes a blocked read, TLS or not, in any thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def finish(self) -> None:
        with self._lock:
            self._finished = True

    def failure(self) -> FetchFailure:
        return FetchFailure("deadline", f"no complete answer within the {self.seconds:g} s deadline")

    def check(self) -> None:
        """Raise the ``deadline`` failure if the deadline has passed."""
        if self.fired or time.monotonic() >= self.deadline:
            self.fired = True
            raise self.failure()


class Watchdog:
    """A thread that fires :class:`Alarm` s at their deadlines (one for all requests of a fetcher).

    It wakes at most every ``granularity`` seconds, not once per request: most
    alarms finish long before their deadline and only need dropping.
    """

    def __init__(self, granularity: float = 0.05) -> None:
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._granularity = granularity
        self._thread: threading.Thread | None = None
        self._stopped = False

    @contextmanager
    def alarm(self, seconds: float) -> Iterator[Alarm]:
        alarm = Alarm(seconds)
        with self._condition:
            heapq.heappush(self._heap, (alarm.deadline, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
            if self._heap[0][2] is alarm:  # an earlier deadline than the thread is waiting for
                self._condition.notify()
        try:
            yield alarm
        finally:
            alarm.finish()

    def _run(self) -> None:
        with self._condition:
            while not self._stopped:
                if not self._heap:
                    self._condition.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._condition.wait(max(wait, self._granularity))
                    continue
                heapq.heappop(self._heap)[2].fire()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP or HTTPS to the checked addresses of a :class:`Target`, speaking for its host name."""

    def __init__(self, target: Target, timeout: float, tls: ssl.SSLContext | None, alarm: Alarm) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.default_port = target.default_port  # so the Host header omits :443 for https, as browsers do
        self._target = target
        self._tls = tls
        self._alarm = alarm

    def connect(self) -> None:
        """Connect to the first checked address that answers (``self.sock`` is always closed by ``close``)."""
        error: OSError = OSError("no address to connect to")
        for family, sockaddr in self._target.addresses:
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            self._alarm.watch(self.sock)
            try:
                self.sock.connect(sockaddr)
                break
            except OSError as exc:
                self.sock.close()
                error = exc
        else:
            raise error
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._target.host, do_handshake_on_connect=False)
            self._alarm.watch(self.sock)
            self.sock.do_handshake()


def _failure_of(exc: BaseException) -> FetchFailure:
    """A countable reason for a network error, with its (deterministic) message."""
    if isinstance(exc, TimeoutError):
        return FetchFailure("timeout", "timed out")
    if isinstance(exc, ssl.SSLError):
        return FetchFailure("tls-error", str(exc))
    if isinstance(exc, ConnectionRefusedError):
        return FetchFailure("connection-refused", str(exc))
    if isinstance(exc, ConnectionResetError):  # http.client's RemoteDisconnected too
        return FetchFailure("connection-reset", str(exc) or "connection reset")
    return FetchFailure("download-error", f"{type(exc).__name__}: {exc}")


def _server_text(text: str) -> str:
    return text if len(text) <= _MAX_SERVER_TEXT else text[:_MAX_SERVER_TEXT] + "..."


class Fetcher:
    """Fetches URLs under a policy and limits; thread-safe, one per worker process (a context manager)."""

    def __init__(
        self,
        policy: AddressPolicy,
        limits: FetchLimits,
        opt_out: HeaderOptOut | None = None,
        user_agent: str = USER_AGENT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.opt_out = opt_out or HeaderOptOut(())
        self.user_agent = user_agent
        self._tls = tls or ssl.create_default_context()
        self._watchdog = Watchdog()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._watchdog.stop()

    def fetch(self, url: str) -> Fetched:
        """Follow ``url`` to an image body, or to the reason there is none."""
        return self._fetch(url, file_bytes=None)

    def fetch_file(self, url: str, max_bytes: int) -> Fetched:
        """Follow ``url`` to a site file (robots.txt, tdmrep.json): any status, at most ``max_bytes`` of body.

        Same address policy, redirect limit, timeout and deadline as images;
        no header opt-outs; a longer body is cut at ``max_bytes``, not refused.
        """
        return self._fetch(url, file_bytes=max_bytes)

    def _fetch(self, url: str, file_bytes: int | None) -> Fetched:
        with self._watchdog.alarm(self.limits.deadline) as alarm:
            hops = [url]
            try:
                status, data = self._follow(hops, alarm, file_bytes)
                alarm.check()  # a body cut short by the watchdog is no body
                return Fetched(hops[-1], data=data, status=status)
            except FetchFailure as failure:
                return Fetched(hops[-1], reason=failure.reason, message=failure.message, refused=failure.refused,
                               opted_out=failure.opted_out, status=failure.status, retry_after=failure.retry_after)
            except Exception as exc:  # noqa: BLE001 (every network error becomes a counted reason)
                failure = alarm.failure() if alarm.fired else _failure_of(exc)  # a shut-down socket fails oddly
                return Fetched(hops[-1], reason=failure.reason, message=failure.message)

    def _follow(self, hops: list[str], alarm: Alarm, file_bytes: int | None) -> tuple[int, bytes]:
        for _ in range(self.limits.max_redirects + 1):
            target = self._check(hops, alarm)
            connection = _PinnedConnection(target, self.limits.timeout, self._tls if target.scheme == "https" else None, alarm)
            try:
                connection.request("GET", target.request_target, headers={
                    "User-Agent": self.user_agent, "Accept-Encoding": "identity", "Connection": "close",
                })
                response = connection.getresponse()
                if response.status in REDIRECT_STATUSES and response.getheader("Location"):
                    hops.append(urljoin(hops[-1], response.getheader("Location", "").strip()))
                    continue
                if not 200 <= response.status < 300:
                    raise FetchFailure(f"http-{response.status}", f"HTTP Error {response.status}: {_server_text(response.reason)}",
                                       status=response.status, retry_after=retry_after_seconds(response.getheader("Retry-After")))
                if file_bytes is not None:
                    return response.status, self._read_file(response, alarm, file_bytes)
                opt_out = self.opt_out.reason(response.headers)
                if opt_out is not None:
                    raise FetchFailure(*opt_out, opted_out=True, status=response.status)
                return response.status, self._read_body(response, alarm)
            finally:
                connection.close()
        raise FetchFailure("too-many-redirects", f"more than {self.limits.max_redirects} redirects")

    def _check(self, hops: list[str], alarm: Alarm) -> Target:
        url = hops[-1]
        try:
            target = self.policy.check(url)
        except Refusal as refusal:
            prefix = f"redirect to {url} not followed: " if len(hops) > 1 else "not fetched: "
            raise FetchFailure(refusal.reason, prefix + refusal.explanation, refused=True) from None
        except Unresolvable as exc:
            raise FetchFailure("dns-error", str(exc)) from None
        alarm.check()  # name resolution has no timeout of its own
        return target

    def _read_body(self, response: http.client.HTTPResponse, alarm: Alarm) -> bytes:
        cap = self.limits.max_body_bytes
        if response.length is not None:
            if response.length > cap:
                raise FetchFailure("body-too-large", f"Content-Length {response.length:,} bytes is over the {cap:,}-byte limit; not read")
            return response.read()  # IncompleteRead if the server sends less than it declared
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise FetchFailure("body-too-large", f"body over the {cap:,}-byte limit; stopped reading")
            chunks.append(chunk)
            alarm.check()
        return b"".join(chunks)

    def _read_file(self, response: http.client.HTTPResponse, alarm: Alarm, max_bytes: int) -> bytes:
        """At most ``max_bytes`` of the body; the rest is never read (the connection is closed after)."""
        chunks: list[bytes] = []
        size = 0
        while size < max_bytes and (chunk := response.read(min(_CHUNK, max_bytes - size))):
            size += len(chunk)
            chunks.append(chunk)
            alarm.check()
        return b"".join(chunks)
