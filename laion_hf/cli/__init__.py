"""``laion-hf``: a thin command-line layer over the library.

Each command lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

# Command modules register themselves on `app` when imported.
from laion_hf.cli import build as _build  # noqa: E402,F401  (build)
from laion_hf.cli import clean as _clean  # noqa: E402,F401  (clean, verify-clean)
from laion_hf.cli import dedup as _dedup  # noqa: E402,F401  (dedup)
from laion_hf.cli import demo as _demo  # noqa: E402,F401  (demo: synthetic crawl -> build -> loopback Hub -> load_dataset)
from laion_hf.cli import download as _download  # noqa: E402,F401  (download)
from laion_hf.cli import extract as _extract  # noqa: E402,F401  (extract)
from laion_hf.cli import filter as _filter  # noqa: E402,F401  (filter)
from laion_hf.cli import oig as _oig  # noqa: E402,F401  (oig build)
from laion_hf.cli import publish as _publish  # noqa: E402,F401  (publish, push)
from laion_hf.cli import score as _score  # noqa: E402,F401  (score)
from laion_hf.cli import search as _search  # noqa: E402,F401  (index, search, serve)
from laion_hf.cli.app import app
from laion_hf.core.errors import UserError, os_error_message


def main() -> None:
    """Entry point: user errors, and OS errors on a named path, become one clear line on stderr and exit code 2."""
    try:
        app()
    except UserError as exc:
        _fail(str(exc))
    except OSError as exc:
        message = os_error_message(exc)
        if message is None:
            raise
        _fail(message)


def _fail(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(2)
