"""Push a Hub-ready folder: to a Hub repo in resumable batched commits, or to a folder / object store.

Resumption comes from comparing content, not from local state: before
uploading, the remote tree is listed and every file whose content is already
there (LFS sha256 or git blob id) is skipped, so re-running after an
interruption uploads only what is missing. Each batch is one commit, so the
Hub never shows a partial file; data files go first and README.md last, so a
repo whose card is visible is complete. Remote files absent from the folder
(stale shards of an earlier, larger release) are deleted in the last commit,
because a config's ``{split}-*`` pattern would otherwise still match them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from laion_hf.hub.errors import HubError, http_error, hub_http_errors, redact
from laion_hf.io.atomic import atomic_path, filesystem, join

#: Files never published (temporaries of our atomic writes, OS litter).
IGNORED_SUFFIXES = (".tmp", ".part", ".DS_Store")
#: Per-commit limits: the Hub advises against huge commits; small ones make resumption cheap.
MAX_FILES_PER_COMMIT = 100
MAX_BYTES_PER_COMMIT = 10 * 1000**3
LAST_FILES = ("README.md",)
#: How huggingface_hub reports an LFS upload that failed (its cause is chained).
_UPLOAD_FAILED = re.compile(r"Error while uploading '(?P<path>.+)' to the Hub")
_RESUME = "re-run the same command to resume (files already committed are skipped)"


class PushError(HubError):
    """Publishing failed for a reason the user can act on (auth and rate limits: see :mod:`laion_hf.hub.errors`)."""


@dataclass
class PushResult:
    """What a push did: files uploaded, skipped as already present, deleted as stale, commits made."""

    target: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)


def local_files(folder: str | Path) -> list[str]:
    """Repo-relative paths of everything to publish, data first and README.md last."""
    root = Path(folder)
    if not root.is_dir():
        raise PushError(f"{root}: not a folder")
    paths = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(IGNORED_SUFFIXES) and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if "README.md" not in paths:
        raise PushError(f"{root}: no README.md (run `laion-hf publish` to write the card and layout first)")
    return sorted(paths, key=lambda p: (p in LAST_FILES, p))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_oid(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _same_content(local: Path, remote) -> bool:
    """Whether a local file equals the remote RepoFile (cheap size check first)."""
    if local.stat().st_size != remote.size:
        return False
    if remote.lfs is not None:
        return _sha256(local) == remote.lfs.sha256
    return _git_blob_oid(local) == remote.blob_id


def _batches(paths: list[str], root: Path, max_files: int, max_bytes: int) -> Iterator[list[str]]:
    batch, size = [], 0
    for path in paths:
        file_size = (root / path).stat().st_size
        if batch and (len(batch) >= max_files or size + file_size > max_bytes or path in LAST_FILES):
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += file_size
    if batch:
        yield batch


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    repo_type: str = "dataset",
    max_files_per_commit: int = MAX_FILES_PER_COMMIT,
    max_bytes_per_commit: int = MAX_BYTES_PER_COMMIT,
    commit_message: str = "Upload with laion-hf",
) -> PushResult:
    """Upload ``folder`` to ``repo_id`` (created if needed) in batched commits; re-running resumes.

    ``token`` defaults to huggingface_hub's (``HF_TOKEN`` or ``hf auth login``);
    it never appears in messages, even where the server echoes it. Auth failures
    raise :class:`~laion_hf.hub.errors.HubAuthError`, rate limits
    :class:`~laion_hf.hub.errors.HubRateLimitError`, an upload cut off or a lost
    connection :class:`PushError` naming the file.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    root = Path(folder)
    paths = local_files(root)
    check_card(root / "README.md")
    api = HfApi(endpoint=endpoint, token=token)
    result = PushResult(target=f"{api.endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}")
    try:
        with hub_http_errors(repo_id, api.endpoint, token, resumable=True):
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
            remote = {
                entry.path: entry
                for entry in api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type=repo_type)
                if hasattr(entry, "size")
            }
            todo = []
            for path in paths:
                if path in remote and _same_content(root / path, remote[path]):
                    result.skipped.append(path)
                else:
                    todo.append(path)
            stale = sorted(p for p in remote if p not in set(paths) and p != ".gitattributes")
            batches = list(_batches(todo, root, max_files_per_commit, max_bytes_per_commit)) or ([[]] if stale else [])
            for index, batch in enumerate(batches):
                operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(root / p)) for p in batch]
                if index == len(batches) - 1:
                    operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
                info = api.create_commit(
                    repo_id,
                    operations=operations,
                    commit_message=f"{commit_message} ({index + 1}/{len(batches)})",
                    revision=revision,
                    repo_type=repo_type,
                )
                result.commits.append(info.oid)
                result.uploaded.extend(batch)
            result.deleted = stale if batches else []
    except HubError:
        raise
    except RuntimeError as exc:
        failed = _UPLOAD_FAILED.match(str(exc))
        if failed is None:
            raise
        raise _upload_error(exc.__cause__, failed["path"], repo_id, api.endpoint, token) from None
    except OSError as exc:  # httpx transport errors subclass neither; see below
        raise PushError(f"{repo_id}: {type(exc).__name__} while pushing to {api.endpoint}; {_RESUME}") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("httpx", "httpcore", "httpx2")):
            raise PushError(f"{repo_id}: connection to {api.endpoint} failed ({type(exc).__name__}); {_RESUME}") from None
        raise
    return result


def _upload_error(cause: BaseException | None, path: str, repo_id: str, endpoint: str, token: str | None) -> HubError:
    """A failed LFS upload, naming the file: the Hub's refusal, or a connection cut mid-body."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(cause, HfHubHTTPError):
        return http_error(cause, f"{repo_id}: {path}", endpoint, token, resumable=True)
    reason = redact(f"{type(cause).__name__}: {cause}", token) if cause is not None else "no reason given"
    return PushError(f"{repo_id}: the upload of {path} to {endpoint} failed ({reason}); {_RESUME}")


def check_card(path: Path) -> None:
    """Refuse a README whose YAML ``datasets`` could not use, before uploading gigabytes."""
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    try:
        MetadataConfigs.from_dataset_card_data(DatasetCard.load(path).data)
    except Exception as exc:  # yaml, ValueError, TypeError: all mean "fix the card"
        raise PushError(f"{path}: the card's YAML metadata is not usable ({type(exc).__name__}: {exc})") from None


def copy_folder(folder: str | Path, target: str) -> PushResult:
    """Publish ``folder`` to a local folder or any fsspec URL with the same layout, resumably.

    Files are written atomically; a file already at the target with the same
    size and sha256 is skipped (same-size files are re-hashed remotely only on
    local filesystems; elsewhere equal size counts as present).
    """
    root = Path(folder)
    paths = local_files(root)
    check_card(root / "README.md")
    fs, inner = filesystem(target)
    result = PushResult(target=target)
    for path in paths:
        destination = join(target, path)
        _, dest_inner = filesystem(destination)
        if fs.exists(dest_inner) and fs.size(dest_inner) == (root / path).stat().st_size and _remote_hash_matches(fs, dest_inner, root / path):
            result.skipped.append(path)
            continue
        with atomic_path(destination) as tmp:
            fs.put_file(str(root / path), filesystem(tmp)[1])
        result.uploaded.append(path)
    return result


def _remote_hash_matches(fs, remote: str, local: Path) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    if not isinstance(fs, LocalFileSystem):
        return True
    return _sha256(Path(remote)) == _sha256(local)

