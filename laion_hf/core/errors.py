"""Errors whose message is meant for the user.

The CLI prints these without a traceback and exits non-zero; anything else is
a bug and keeps its traceback. Messages name the file (and line or key).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input or configuration, explained in the message."""


class UnreadableFileError(UserError):
    """An input file that is missing, unreadable, damaged or not in the expected format."""


@contextmanager
def reading(path: str, what: str = "file") -> Iterator[None]:
    """Turn a failure to read ``path`` inside the block into an :class:`UnreadableFileError` naming it.

    pyarrow reports a damaged parquet as ``ArrowInvalid`` (a ``ValueError``)
    without the file name; I/O failures are ``OSError``. A :class:`UserError`
    raised inside already names its file and passes through.
    """
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise UnreadableFileError(f"{path}: cannot read {what} ({exc})") from exc


def os_error_message(exc: OSError) -> str | None:
    """``PATH: reason`` for an OS error on a named path (a read-only or missing OUTPUT, a file where a folder
    should be), None for one without a path (those are not the user's to fix)."""
    if exc.filename is None:
        return None
    target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
    return f"{target}: {exc.strerror or type(exc).__name__}"
