"""The consent step: which candidates their sites let us download, judged per origin before any image is fetched.

For every origin (``scheme://host:port``) of a shard's URLs, robots.txt and
``/.well-known/tdmrep.json`` are fetched once per run (:mod:`laion_hf.download.sites`)
and each URL is judged by their rules (:mod:`~laion_hf.download.robots`,
:mod:`~laion_hf.download.tdmrep`). A row that may not be fetched is marked,
never dropped, with three columns:

- ``drop_reason``: ``opted-out:robots-txt`` or ``opted-out:tdmrep`` (the site
  opted out), or ``robots-txt-unreachable`` (RFC 9309's complete disallow
  when robots.txt cannot be read: a failure, not an opt-out); null = may be
  fetched. A reason an earlier step set is kept (the first reason wins).
- ``consent_evidence``: which file said so (its URL, sha256, the rule or token);
- ``consent_checked_at``: when that file was fetched (ISO 8601, UTC).

:func:`download_shard <laion_hf.download.shard.download_shard>` fetches no
marked row: it records it with ``status=opted-out`` (or ``failed_to_download``
for the unreachable robots.txt) and the reason without its prefix. URLs whose
host the address policy refuses are left unmarked: the download refuses them
under their own reason.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.stage import DROP_REASON, StageStats
from laion_hf.download.addresses import AddressPolicy, Refusal, parse_url
from laion_hf.download.audit import iso_time
from laion_hf.download.fetch import Fetcher
from laion_hf.download.options import DownloadOptions
from laion_hf.download.robots import ROBOTS_MAX_BYTES, ROBOTS_PATH, ROBOTS_TXT_UNREACHABLE, RobotsRules, robots_state
from laion_hf.download.sites import ABSENT, SiteFileKind, SiteFiles, origin_of
from laion_hf.download.tdmrep import TDMREP_MAX_BYTES, TDMREP_PATH, TdmRepRules
from laion_hf.io.atomic import atomic_path, bookkeeping_path, join

OPTED_OUT_PREFIX = "opted-out:"
EVIDENCE = "consent_evidence"
CHECKED_AT = "consent_checked_at"
CONSENT_COLUMNS = (DROP_REASON, EVIDENCE, CHECKED_AT)
SITE_CACHE = "sites"
SITE_FILE_KINDS = {
    "robots": SiteFileKind("robots", ROBOTS_PATH, ROBOTS_MAX_BYTES, robots_state),
    "tdmrep": SiteFileKind("tdmrep", TDMREP_PATH, TDMREP_MAX_BYTES, lambda status, reason: ABSENT),
}


@dataclass(frozen=True)
class Verdict:
    """Why a URL may not be fetched: the ``drop_reason``, the evidence, and when the evidence was fetched."""

    drop_reason: str
    evidence: str
    checked_at: float


def drop_reason_of(reason: str) -> str:
    """The ``drop_reason`` of a consent reason: an opt-out is prefixed, the unreachable robots.txt is not."""
    return reason if reason == ROBOTS_TXT_UNREACHABLE else OPTED_OUT_PREFIX + reason


def split_url(url: str | None) -> tuple[str | None, str]:
    """``(origin, path?query)``: the origin as the fetcher decodes it, ``scheme://host:port`` (None: a URL it
    refuses without contacting anyone), and the path and query rules are matched against."""
    try:
        parts = urlsplit(url)  # type: ignore[arg-type]
    except (TypeError, ValueError, AttributeError):
        return None, "/"
    target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
    return _origin_of_netloc(parts.scheme, parts.netloc), target


def origin_of_url(url: str | None) -> str | None:
    """The origin of ``url`` (see :func:`split_url`): what per-host limits and site files are kept per."""
    return split_url(url)[0]


@lru_cache(maxsize=65536)
def _origin_of_netloc(scheme: str, netloc: str) -> str | None:
    try:
        scheme, host, port, _ = parse_url(f"{scheme}://{netloc}/")
    except Refusal:
        return None
    return origin_of(scheme, host, port)


def site_cache_dir(options: DownloadOptions, output_dir: str) -> str:
    return options.site_cache_dir or bookkeeping_path(output_dir, SITE_CACHE)


class ConsentChecker:
    """Judges URLs by their origins' robots.txt and tdmrep.json (the rules ``options.respect`` names)."""

    def __init__(self, options: DownloadOptions, fetcher: Fetcher, cache_dir: str | None) -> None:
        self.options = options
        kinds = {name: kind for name, kind in SITE_FILE_KINDS.items() if name in options.respect}
        self.sites = SiteFiles(fetcher, kinds, cache_dir)

    def _rules(self, origin: str) -> list[RobotsRules | TdmRepRules]:
        files = self.sites.get(origin)
        rules: list[RobotsRules | TdmRepRules] = []
        if "robots" in files:
            rules.append(RobotsRules(files["robots"], self.options.tokens))
        if "tdmrep" in files:
            rules.append(TdmRepRules(files["tdmrep"]))
        return rules

    def verdicts(self, urls: Sequence[str | None]) -> list[Verdict | None]:
        """One verdict per URL (None: its sites do not object); each origin's files are fetched once."""
        split = [split_url(url) for url in urls]
        distinct = sorted({origin for origin, _ in split if origin is not None})
        with ThreadPoolExecutor(max_workers=max(1, min(self.options.threads, len(distinct)))) as pool:
            rules = dict(zip(distinct, pool.map(self._rules, distinct)))
        results: list[Verdict | None] = []
        for origin, target in split:
            verdict = None
            for rule in rules.get(origin, ()) if origin else ():
                found = rule.verdict(target)
                if found is not None:
                    verdict = Verdict(drop_reason_of(found[0]), found[1], rule.file.fetched_at)
                    break
            results.append(verdict)
        return results


def mark_consent(table: pa.Table, checker: ConsentChecker) -> pa.Table:
    """``table`` with its consent columns: rows already marked keep their reason and are not judged."""
    existing = table[DROP_REASON].to_pylist() if DROP_REASON in table.column_names else [None] * table.num_rows
    urls = table["url"].to_pylist()
    judged = [index for index, reason in enumerate(existing) if reason is None]
    verdicts: list[Verdict | None] = [None] * table.num_rows
    for index, verdict in zip(judged, checker.verdicts([urls[i] for i in judged])):
        verdicts[index] = verdict
    columns = {
        DROP_REASON: [reason if reason is not None else (v.drop_reason if v else None) for reason, v in zip(existing, verdicts)],
        EVIDENCE: [v.evidence if v else None for v in verdicts],
        CHECKED_AT: [iso_time(v.checked_at) if v else None for v in verdicts],
    }
    table = table.drop_columns([name for name in CONSENT_COLUMNS if name in table.column_names])
    for name, values in columns.items():
        table = table.append_column(name, pa.array(values, pa.string()))
    return table


def consent_stats(table: pa.Table, rows_in: int) -> StageStats:
    """Rows judged, kept, and marked by reason (rows an earlier step had marked are not counted)."""
    reasons = Counter(r for r, e in zip(table[DROP_REASON].to_pylist(), table[EVIDENCE].to_pylist()) if e is not None)
    stats = StageStats("consent", rows_in=rows_in, kept=rows_in - sum(reasons.values()), dropped=reasons)
    stats.check()
    return stats


def consent_fetcher(options: DownloadOptions) -> Fetcher:
    """A fetcher for site files: the download's address policy, limits and user agent, no header opt-outs."""
    return Fetcher(AddressPolicy(options.allow_private_network, options.allowed_networks), options.limits,
                   user_agent=options.user_agent)


def consent_shard(name: str, input_dir: str, output_dir: str, options: DownloadOptions) -> dict[str, Any]:
    """Judge the candidates ``input_dir/NAME.parquet`` and write them, marked, to ``output_dir/NAME.parquet``.

    A runner's task (picklable with :func:`functools.partial`); returns the
    stats its done marker records. Site files are cached in
    ``options.site_cache_dir`` (default ``output_dir/.laion-hf/sites``).
    """
    started = time.perf_counter()
    table = pq.read_table(join(input_dir, f"{name}.parquet"))
    rows_in = table[DROP_REASON].null_count if DROP_REASON in table.column_names else table.num_rows
    with consent_fetcher(options) as fetcher:
        marked = mark_consent(table, ConsentChecker(options, fetcher, site_cache_dir(options, output_dir)))
    with atomic_path(join(output_dir, f"{name}.parquet")) as tmp:
        pq.write_table(marked, tmp)
    stats = consent_stats(marked, rows_in)
    stats.seconds = time.perf_counter() - started
    return {"shard": name, "stages": [stats.to_dict()]}
