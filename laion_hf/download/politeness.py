"""Per-host politeness: how many requests at once, how often, and what to do when a host says "later".

:func:`polite_map` runs a shard's fetches on a thread pool, but hands a
thread a row only when the row's host may take another request: at most
``concurrency`` requests in flight and ``rate`` requests started per second
for each host (origin). Rows wait in per-host queues, not in threads, so a
slow or rate-limited host never holds the pool: the overall rate grows with
the number of hosts while each host sees a bounded one.

- A 429 or 503 answer with ``Retry-After`` (seconds or an HTTP date) of at
  most ``max_retry_after`` pauses the host that long and retries the row (up
  to ``retry_after_attempts`` times); a longer wait counts as a failure.
- A host that keeps failing (no answer, 5xx, 429) is backed off: from the
  ``failure_threshold``-th failure in a row, its next request waits
  ``backoff`` seconds, doubling up to ``max_backoff``; after ``give_up_after``
  failures in a row its remaining rows are not fetched (``host-failing``,
  retried by ``--retry-failed``). Any other answer resets the count.

Defaults: 8 requests at once per host (Scrapy's ``CONCURRENT_REQUESTS_PER_DOMAIN``),
20 requests a second per host, ``Retry-After`` up to 60 s. The limits hold per
download process: with ``--processes P`` a host may see up to P times them.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Generic, TypeVar

Result = TypeVar("Result")
HOST_FAILING = "host-failing"


@dataclass(frozen=True)
class HostLimits:
    """How a download treats each host (see the module's text for the defaults' sources)."""

    concurrency: int = 8
    rate: float = 20.0  # requests started per second
    max_retry_after: float = 60.0
    retry_after_attempts: int = 2
    failure_threshold: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    give_up_after: int = 8

    def pause_after(self, failures: int) -> float:
        """Seconds a host waits after ``failures`` failures in a row."""
        if failures < self.failure_threshold:
            return 0.0
        return min(self.backoff * 2 ** (failures - self.failure_threshold), self.max_backoff)


@dataclass(frozen=True)
class HostSignal:
    """What an answer says about its host: it failed (counts toward back-off), or asked to wait ``retry_after``."""

    failed: bool = False
    retry_after: float | None = None


@dataclass(eq=False)
class _Host:
    concurrency: int
    interval: float
    pending: deque[int] = field(default_factory=deque)
    active: int = 0
    next_start: float = 0.0
    failures: int = 0
    placed: bool = False  # in the ready queue or the waiting heap


class _Schedule(Generic[Result]):
    """The per-host queues and the timing state of one :func:`polite_map` call."""

    def __init__(self, hosts: dict[Hashable, _Host], limits: HostLimits, clock: Callable[[], float]) -> None:
        self.hosts = hosts
        self.limits = limits
        self.clock = clock
        self.ready: deque[_Host] = deque()
        self.waiting: list[tuple[float, int, _Host]] = []
        self._order = itertools.count()

    def place(self, host: _Host) -> None:
        """Queue ``host`` for its next start if it has rows and room (a running request re-places it when done)."""
        if host.placed or not host.pending or host.active >= host.concurrency:
            return
        host.placed = True
        if host.next_start > self.clock():
            heapq.heappush(self.waiting, (host.next_start, next(self._order), host))
        else:
            self.ready.append(host)

    def wake(self) -> float | None:
        """Move hosts whose time has come to the ready queue; seconds until the next one (None: none waits)."""
        now = self.clock()
        while self.waiting and self.waiting[0][0] <= now:
            self.ready.append(heapq.heappop(self.waiting)[2])
        return self.waiting[0][0] - now if self.waiting else None

    def next_row(self) -> tuple[int, _Host] | None:
        """A row whose host may start a request now, its host's bookkeeping updated."""
        self.wake()
        now = self.clock()
        while self.ready:
            host = self.ready.popleft()
            host.placed = False
            if host.next_start > now:
                self.place(host)
                continue
            index = host.pending.popleft()
            host.active += 1
            host.next_start = max(host.next_start, now) + host.interval
            self.place(host)
            return index, host
        return None

    def answered(self, host: _Host, signal: HostSignal) -> bool:
        """Record an answer; True if the row is to be retried after the host's pause."""
        host.active -= 1
        now = self.clock()
        waits = signal.retry_after is not None and signal.retry_after <= self.limits.max_retry_after
        if signal.failed or signal.retry_after is not None:
            host.failures += 1
            pause = signal.retry_after if waits else self.limits.pause_after(host.failures)
            host.next_start = max(host.next_start, now + pause)
        else:
            host.failures = 0
        return waits

    def given_up(self, host: _Host) -> list[int]:
        """The rows of a host that failed too often in a row (taken off its queue), else none."""
        if host.failures < self.limits.give_up_after:
            return []
        rows = list(host.pending)
        host.pending.clear()
        return rows


def polite_map(
    urls: Sequence[str | None],
    work: Callable[[str | None], Result],
    *,
    host_of: Callable[[str | None], Hashable],
    signal_of: Callable[[Result], HostSignal],
    give_up: Callable[[str | None], Result],
    threads: int,
    limits: HostLimits,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[tuple[int, Result]]:
    """``(row index, work(url))`` as fetches complete, each host within ``limits``.

    ``host_of`` names a URL's host (None: no host to spare, no limits);
    ``signal_of`` reads an answer's :class:`HostSignal`; ``give_up`` is the
    result of a row whose host failed too often. At most ``threads`` results
    are pending at once.
    """
    hosts: dict[Hashable, _Host] = {}
    for index, url in enumerate(urls):
        key = host_of(url)
        if key not in hosts:
            unlimited = key is None
            hosts[key] = _Host(threads if unlimited else limits.concurrency, 0.0 if unlimited else 1.0 / limits.rate)
        hosts[key].pending.append(index)
    schedule: _Schedule[Result] = _Schedule(hosts, limits, clock)
    for host in hosts.values():
        schedule.place(host)
    retries: Counter[int] = Counter()
    finished: SimpleQueue[tuple[int, _Host, Future[Result]]] = SimpleQueue()
    in_flight = 0
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="download") as pool:

        def submit(index: int, host: _Host) -> None:
            pool.submit(work, urls[index]).add_done_callback(lambda future: finished.put((index, host, future)))

        while True:
            while in_flight < threads and (picked := schedule.next_row()) is not None:
                submit(*picked)
                in_flight += 1
            wait = schedule.wake()  # after next_row, which may have sent hosts back to wait
            if schedule.ready and in_flight < threads:
                continue
            if not in_flight:
                if wait is None:
                    return
                time.sleep(wait)
                continue
            try:
                index, host, future = finished.get(timeout=wait)
            except Empty:
                continue
            in_flight -= 1
            result = future.result()
            if schedule.answered(host, signal_of(result)) and retries[index] < limits.retry_after_attempts:
                retries[index] += 1
                host.pending.appendleft(index)
                schedule.place(host)
                continue
            for skipped in schedule.given_up(host):
                yield skipped, give_up(urls[skipped])
            schedule.place(host)
            yield index, result
