"""Open an index that was pushed next to its dataset: ``hf://datasets/ORG/NAME[@REVISION]/PATH``.

The index is an ordinary folder in the dataset repo (e.g. ``index/research-safe/``).
``huggingface_hub`` parses the address (revisions included) and downloads only
that folder into its cache (``snapshot_download`` with ``allow_patterns``), so
a second search reuses the files and a changed index is fetched again.
"""

from __future__ import annotations

from pathlib import Path

from laion_hf.core.errors import UserError
from laion_hf.search.index import INFO_FILE

PREFIX = "hf://"


class HubIndexError(UserError):
    """An ``hf://`` index address that cannot be opened."""


def is_hub_address(location: str) -> bool:
    return str(location).startswith(PREFIX)


def download_index(address: str, *, token: str | None = None) -> Path:
    """The local folder holding the index at ``address`` (downloaded into the Hub cache)."""
    from huggingface_hub import HfFileSystem, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        resolved = HfFileSystem(token=token).resolve_path(address)
    except (FileNotFoundError, NotImplementedError, ValueError) as exc:
        raise HubIndexError(f"{address}: not an index address on the Hub ({exc}); "
                            "expected hf://datasets/ORG/NAME[@REVISION]/PATH") from exc
    if resolved.repo_type != "dataset":
        raise HubIndexError(f"{address}: indices live in dataset repos (hf://datasets/...), not {resolved.repo_type} repos")
    folder = resolved.path_in_repo.strip("/")
    patterns = [f"{folder}/*"] if folder else ["*"]
    try:
        snapshot = snapshot_download(resolved.repo_id, repo_type="dataset", revision=resolved.revision,
                                     allow_patterns=patterns, token=token)
    except (RepositoryNotFoundError, RevisionNotFoundError, HfHubHTTPError) as exc:
        raise HubIndexError(f"{address}: cannot download the index ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    local = Path(snapshot) / folder
    if not (local / INFO_FILE).exists():
        raise HubIndexError(f"{address}: no {INFO_FILE} in {resolved.repo_id}/{folder or '.'} (is it an index folder?)")
    return local


def local_index_folder(location: str | Path) -> Path:
    """A local index folder for a path or an ``hf://`` address."""
    return download_index(str(location)) if is_hub_address(str(location)) else Path(location)
