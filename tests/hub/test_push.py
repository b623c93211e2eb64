"""Publish -> push to the loopback Hub -> load back with the unmodified datasets client."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from huggingface_hub import HfApi

from laion_hf.hub.errors import HubAuthError, HubError, HubRateLimitError
from laion_hf.hub.load import laion_metadata_files, webdataset_urls
from laion_hf.hub.publish import publish_folder
from laion_hf.hub.push import copy_folder, local_files, push_folder
from tests.entry_point import run_entry_point


def _sources(variants):
    return {name: str(path) for name, (path, _) in variants.items()}


@pytest.mark.slow
def test_webdataset_repo_loads_back_every_config(hub, variants, tmp_path):
    import datasets

    folder = tmp_path / "hub-wds"
    publish_folder(_sources(variants), folder, family="laion5b", context={"repo_id": "laion-hf/demo"}, target_shard_bytes=30_000)
    result = push_folder(folder, "laion-hf/demo", token=hub.token)
    visible = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert sorted(result.uploaded) == sorted(p for p in visible if not p.startswith(".layout/"))
    for config, (_, rows) in variants.items():
        stream = datasets.load_dataset("laion-hf/demo", config, split="train", streaming=True)
        loaded = list(stream)
        assert [r["__key__"] for r in loaded] == [row["key"] for row in rows]
        assert [r["txt"] for r in loaded] == [row["caption"] for row in rows]
        assert [r["json"]["url"] for r in loaded] == [row["url"] for row in rows]
        assert [r["jpg"].size for r in loaded] == [(row["width"], row["height"]) for row in rows]
    default = datasets.load_dataset("laion-hf/demo", split="train", streaming=True)
    assert next(iter(default))["__key__"] == variants["research"][1][0]["key"]
    prepared = datasets.load_dataset("laion-hf/demo", "research-safe", split="train", cache_dir=str(tmp_path / "cache"))
    assert prepared["__key__"] == [row["key"] for row in variants["research-safe"][1]]
    assert prepared.features["json"]["width"].dtype == "int64"


@pytest.mark.slow
def test_parquet_repo_loads_back_every_config(hub, variants, tmp_path):
    import datasets

    folder = tmp_path / "hub-parquet"
    publish_folder(_sources(variants), folder, family="laion5b", format="parquet", include_images=True, default="research-safe")
    push_folder(folder, "laion-hf/demo-parquet", token=hub.token)
    for config, (_, rows) in variants.items():
        loaded = list(datasets.load_dataset("laion-hf/demo-parquet", config, split="train", streaming=True))
        assert [r["url"] for r in loaded] == [row["url"] for row in rows]
        assert [r["caption"] for r in loaded] == [row["caption"] for row in rows]
        assert [round(r["similarity"], 6) for r in loaded] == [round(row["similarity"], 6) for row in rows]
        assert [r["image"].size for r in loaded] == [(row["width"], row["height"]) for row in rows]
    cached = datasets.load_dataset("laion-hf/demo-parquet", "research", split="train", cache_dir=str(tmp_path / "cache"))
    assert cached.num_rows == len(variants["research"][1])


def test_push_is_resumable_and_skips_identical_files(hub, variants, tmp_path):
    folder = tmp_path / "hub"
    publish_folder(_sources(variants), folder, family="laion5b", plots=False, target_shard_bytes=10_000)
    first = push_folder(folder, "laion-hf/again", token=hub.token, max_files_per_commit=2)
    assert len(first.commits) >= 3
    second = push_folder(folder, "laion-hf/again", token=hub.token)
    assert second.uploaded == [] and second.commits == [] and sorted(second.skipped) == sorted(first.uploaded)


def test_republish_with_fewer_shards_deletes_stale_files(hub, variants, tmp_path):
    big, small = tmp_path / "big", tmp_path / "small"
    publish_folder(_sources(variants), big, family="laion5b", plots=False, target_shard_bytes=10_000)
    publish_folder(_sources(variants), small, family="laion5b", plots=False)
    push_folder(big, "laion-hf/shrink", token=hub.token)
    result = push_folder(small, "laion-hf/shrink", token=hub.token)
    files = set(HfApi().list_repo_files("laion-hf/shrink", repo_type="dataset"))
    assert result.deleted and not files & set(result.deleted)
    assert files - {".gitattributes"} == set(local_files(small))


def test_bad_token_is_a_clear_error_without_the_token(hub, variants, tmp_path):
    folder = tmp_path / "hub"
    publish_folder({"research": _sources(variants)["research"]}, folder, family="laion5b", plots=False)
    with pytest.raises(HubAuthError) as caught:
        push_folder(folder, "laion-hf/x", token="hf_secret_wrong_token")
    assert "refused the token" in str(caught.value) and "hf_secret_wrong_token" not in str(caught.value)


def test_rate_limit_is_a_clear_error(hub, variants, tmp_path):
    folder = tmp_path / "hub"
    publish_folder({"research": _sources(variants)["research"]}, folder, family="laion5b", plots=False)
    hub.faults.rate_limit_path = r"/api/repos/create"
    with pytest.raises(HubRateLimitError, match="Re-run the same command in 30 s"):
        push_folder(folder, "laion-hf/x", token=hub.token)


@pytest.mark.slow
def test_upload_interrupted_mid_file_then_resumed(hub, variants, tmp_path):
    """The server drops the connection in the middle of an LFS upload; the uploader dies; a re-run completes."""
    folder = tmp_path / "hub"
    publish_folder(_sources(variants), folder, family="laion5b", plots=False, target_shard_bytes=10_000)
    files = {path: (folder / path).read_bytes() for path in local_files(folder)}
    script = textwrap.dedent(
        f"""
        from laion_hf.hub.push import push_folder
        push_folder({str(folder)!r}, "laion-hf/interrupted", token={hub.token!r}, max_files_per_commit=2)
        """
    )
    # The first commit (2 files) goes through, then every upload is dropped half-way.
    hub.faults.drop_after_completed_uploads = 2
    hub.faults.drop_upload_after_bytes = 3000
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert hub.faults.upload_dropped.wait(60), "no upload was interrupted"
    process.kill()
    process.wait()
    before = hub.files("laion-hf/interrupted")
    assert before and set(before) < set(files), "the interruption should leave the upload part-done"
    assert all(before[path] == files[path] for path in before), "a committed file must be complete"
    uploaded_before = dict(hub.uploads)

    hub.faults.drop_upload_after_bytes = None
    result = push_folder(folder, "laion-hf/interrupted", token=hub.token)
    assert hub.files("laion-hf/interrupted") == files
    assert set(result.skipped) == set(before)
    assert all(hub.uploads[oid] == 1 for oid in uploaded_before), "no object is uploaded twice"


def test_copy_folder_to_fsspec_target_resumes(variants, tmp_path):
    folder = tmp_path / "hub"
    publish_folder({"research": _sources(variants)["research"]}, folder, family="laion5b", plots=False)
    target = f"file://{tmp_path / 'published'}"
    first = copy_folder(folder, target)
    (tmp_path / "published" / "README.md").unlink()
    second = copy_folder(folder, target)
    assert second.uploaded == ["README.md"] and len(second.skipped) == len(first.uploaded) - 1
    assert (tmp_path / "published" / "README.md").read_text() == (folder / "README.md").read_text()


def test_push_to_a_branch_and_private_repo(hub, variants, tmp_path):
    import datasets

    folder = tmp_path / "hub"
    publish_folder({"research": _sources(variants)["research"]}, folder, family="laion5b", plots=False)
    push_folder(folder, "laion-hf/branchy", token=hub.token, revision="v1", private=True)
    api = HfApi(token=hub.token)
    assert "README.md" in api.list_repo_files("laion-hf/branchy", repo_type="dataset", revision="v1")
    assert "README.md" not in api.list_repo_files("laion-hf/branchy", repo_type="dataset")
    rows = list(datasets.load_dataset("laion-hf/branchy", "research", split="train", streaming=True, revision="v1", token=hub.token))
    assert len(rows) == len(variants["research"][1])
    with pytest.raises(Exception, match="not found|RepositoryNotFound|404"):
        HfApi(token=False).list_repo_files("laion-hf/branchy", repo_type="dataset", revision="v1")


def test_copy_folder_to_an_object_store_url(variants, tmp_path):
    import fsspec

    folder = tmp_path / "hub"
    publish_folder({"research": _sources(variants)["research"]}, folder, family="laion5b", plots=False)
    result = copy_folder(folder, "memory://bucket/laion-demo")
    fs = fsspec.filesystem("memory")
    assert sorted(result.uploaded) == sorted(local_files(folder))
    assert fs.cat("/bucket/laion-demo/README.md") == (folder / "README.md").read_bytes()
    assert not [p for p in fs.find("/bucket/laion-demo") if p.endswith(".tmp")]
    assert copy_folder(folder, "memory://bucket/laion-demo").uploaded == []


def test_broken_card_is_refused_before_uploading(hub, tmp_path):
    from laion_hf.hub.push import PushError

    (tmp_path / "README.md").write_text("---\nconfigs:\n- config_name: a\n  data_files: 3: [\n---\n")
    with pytest.raises(PushError, match="README.md: the card's YAML metadata is not usable"):
        push_folder(tmp_path, "laion-hf/broken", token=hub.token)
    assert ("dataset", "laion-hf/broken") not in hub.repos


def test_a_token_the_server_echoes_is_not_printed(hub, variants, tmp_path, monkeypatch, capsys):
    """A proxy that echoes the Authorization header in its error body must not get the token onto the screen."""
    folder = tmp_path / "hub"
    publish_folder({"research": _sources(variants)["research"]}, folder, family="laion5b", plots=False)
    hub.faults.echo_authorization_path = r"/api/repos/create"
    code, output = run_entry_point(monkeypatch, capsys, "push", folder, "laion-hf/echo")
    assert (code, "Traceback" in output) == (2, False)
    assert "the Hub answered HTTP 500: request rejected (you sent Bearer [token])" in output
    assert hub.token not in output
    with pytest.raises(HubError) as caught:
        push_folder(folder, "laion-hf/echo", token="hf_" + "k" * 34)
    assert "you sent Bearer [token]" in str(caught.value) and "k" * 34 not in str(caught.value)


def test_a_token_echoed_while_loading_is_not_in_the_error(hub, variants, tmp_path):
    folder = tmp_path / "hub"
    publish_folder({"research": _sources(variants)["research"]}, folder, family="laion5b", plots=False)
    push_folder(folder, "laion-hf/loadecho", token=hub.token)
    hub.faults.echo_authorization_path = r"laion-hf/loadecho"
    echoed = r"laion-hf/loadecho: the Hub answered HTTP 500: request rejected \(you sent Bearer \[token\]\)"
    for load in (lambda: webdataset_urls("laion-hf/loadecho", "research"),
                 lambda: laion_metadata_files("laion-hf/loadecho", token=hub.token)):
        with pytest.raises(HubError, match=echoed) as caught:
            load()
        assert hub.token not in str(caught.value)


@pytest.mark.slow
def test_an_upload_cut_mid_body_names_the_file_and_a_rerun_resumes(hub, variants, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "hub"
    publish_folder(_sources(variants), folder, family="laion5b", plots=False, target_shard_bytes=10_000)
    hub.faults.drop_after_completed_uploads = 2
    hub.faults.drop_upload_after_bytes = 3000
    code, output = run_entry_point(monkeypatch, capsys, "push", folder, "laion-hf/cut", "--files-per-commit", "2")
    output = " ".join(output.split())
    assert (code, "Traceback" in output) == (2, False)
    assert re.search(r"error: laion-hf/cut: the upload of research(-safe)?/train-\d{5}-of-\d{5}\.tar to http://127\.0\.0\.1:\d+ "
                     r"failed \(.*\); re-run the same command to resume \(files already committed are skipped\)", output), output
    hub.faults.drop_upload_after_bytes = None
    code, output = run_entry_point(monkeypatch, capsys, "push", folder, "laion-hf/cut")
    assert code == 0 and hub.files("laion-hf/cut") == {p: (folder / p).read_bytes() for p in local_files(folder)}
