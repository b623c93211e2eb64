"""Streaming a pushed repo into training: every sample once across workers and ranks, exact resume."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import HfApi

from laion_hf.hub.layout import write_hub_folder
from laion_hf.hub.load import iter_metadata, laion_metadata_files, training_loader, webdataset_urls
from laion_hf.hub.publish import publish_folder
from laion_hf.hub.push import push_folder

IMAGE_SIZE = 32


@pytest.fixture
def four_shard_repo(hub, tmp_path, make_img2dataset_dir):
    rows = make_img2dataset_dir(tmp_path / "out", shards=4, per_shard=6)
    write_hub_folder({"research": str(tmp_path / "out")}, str(tmp_path / "hub"), target_shard_bytes=1)
    (tmp_path / "hub" / "README.md").write_text(
        "---\nconfigs:\n- config_name: research\n  data_files:\n  - split: train\n    path: research/train-*.tar\n  default: true\n---\n"
    )
    push_folder(tmp_path / "hub", "laion-hf/train", token=hub.token)
    return [row["key"] for row in rows]


def _keys(loader, limit=None):
    keys = []
    for index, batch in enumerate(loader):
        assert batch["pixel_values"].shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)
        assert all(caption.startswith("caption number ") for caption in batch["caption"])
        keys.extend(batch["key"])
        if limit is not None and index + 1 == limit:
            break
    return keys


@pytest.mark.slow
def test_every_sample_exactly_once_across_workers_and_ranks(four_shard_repo):
    seen = []
    for rank in range(2):
        loader = training_loader("laion-hf/train", "research", batch_size=4, num_workers=2, rank=rank, world_size=2, image_size=IMAGE_SIZE)
        seen.extend(_keys(loader))
    assert sorted(seen) == sorted(four_shard_repo)


@pytest.mark.slow
def test_resume_mid_epoch_continues_without_repeats_or_gaps(four_shard_repo):
    def make():
        return training_loader("laion-hf/train", "research", batch_size=4, num_workers=2, image_size=IMAGE_SIZE)

    full = _keys(make())
    assert sorted(full) == sorted(four_shard_repo)
    first = make()
    head = _keys(first, limit=3)
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    tail = _keys(resumed)
    assert head + tail == full


@pytest.mark.slow
def test_parquet_with_images_repo_feeds_the_same_loader(hub, tmp_path, make_img2dataset_dir):
    rows = make_img2dataset_dir(tmp_path / "out", shards=2, per_shard=5)
    publish_folder({"research": str(tmp_path / "out")}, tmp_path / "hub", family="laion5b", format="parquet", include_images=True, target_shard_bytes=1, plots=False)
    push_folder(tmp_path / "hub", "laion-hf/train-parquet", token=hub.token)
    loader = training_loader("laion-hf/train-parquet", "research", batch_size=3, num_workers=2, image_size=IMAGE_SIZE)
    assert sorted(_keys(loader)) == sorted(row["key"] for row in rows)


def test_too_many_workers_for_the_shards_is_refused(four_shard_repo):
    with pytest.raises(ValueError, match="cannot feed 8 workers"):
        training_loader("laion-hf/train", "research", num_workers=8, image_size=IMAGE_SIZE)


def test_webdataset_library_reads_the_same_shards(four_shard_repo):
    import webdataset as wds

    urls = webdataset_urls("laion-hf/train", "research")
    assert len(urls) == 4
    keys = [sample["__key__"] for sample in wds.WebDataset(urls, shardshuffle=False)]
    assert keys == four_shard_repo


def test_laion_metadata_repos_read_with_canonical_columns(hub, tmp_path):
    base = pa.table({"SAMPLE_ID": [1, 2], "URL": ["u1", "u2"], "TEXT": ["t1", "t2"], "HEIGHT": pa.array([10, 20], pa.int32()), "WIDTH": pa.array([30, 40], pa.int32()), "NSFW": ["UNLIKELY", "NSFW"]})
    relaion = pa.table({"url": ["u3"], "caption": ["t3"], "width": [5], "height": [6], "punsafe": pa.array([0.1], pa.float32())})
    api = HfApi(token=hub.token)
    for repo, table in (("laion/laion2B-en", base), ("laion/relaion2B-en-research", relaion)):
        pq.write_table(table, tmp_path / "part-00000-abc-c000.snappy.parquet")
        api.create_repo(repo, repo_type="dataset")
        api.upload_file(path_or_fileobj=str(tmp_path / "part-00000-abc-c000.snappy.parquet"), path_in_repo="part-00000-abc-c000.snappy.parquet", repo_id=repo, repo_type="dataset")

    files = laion_metadata_files("laion/laion2B-en")
    assert files == ["hf://datasets/laion/laion2B-en/part-00000-abc-c000.snappy.parquet"]
    # The repo is also a shard directory for every laion-hf reader (clean, build) as it stands.
    from laion_hf.io.shards import discover_shards

    assert [shard.parquet for shard in discover_shards("hf://datasets/laion/laion2B-en")] == files
    batch = next(iter_metadata(files, columns=["url", "caption", "width", "height"], swap_width_height=True))
    assert batch.schema.names == ["url", "caption", "width", "height"]
    assert batch.column("width").to_pylist() == [10, 20] and batch.column("height").to_pylist() == [30, 40]
    unswapped = next(iter_metadata(files))
    assert unswapped.schema.names == ["sample_id", "url", "caption", "height", "width", "nsfw"]
    assert unswapped.column("width").to_pylist() == [30, 40]

    relaion_batch = next(iter_metadata(laion_metadata_files("laion/relaion2B-en-research"), columns=["url", "caption", "punsafe"]))
    assert relaion_batch.to_pydict() == {"url": ["u3"], "caption": ["t3"], "punsafe": [pytest.approx(0.1)]}


def test_clip_collate_accepts_decoded_and_undecoded_images():
    import io

    from PIL import Image

    from laion_hf.hub.load import ClipCollate, clip_preprocess

    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(buffer, "PNG")
    rows = [
        {"jpg": Image.open(io.BytesIO(buffer.getvalue())), "txt": "decoded", "__key__": "a"},
        {"jpg": {"bytes": buffer.getvalue(), "path": "b.png"}, "txt": "bytes", "__key__": "b"},
    ]
    batch = ClipCollate(clip_preprocess(IMAGE_SIZE))(rows)
    assert batch["pixel_values"].shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert bool((batch["pixel_values"][0] == batch["pixel_values"][1]).all())
    assert batch["caption"] == ["decoded", "bytes"] and batch["key"] == ["a", "b"]
    with pytest.raises(ValueError, match=r"sample c has no image \(looked in jpg\)"):
        ClipCollate(clip_preprocess(IMAGE_SIZE))([{"jpg": None, "txt": "x", "__key__": "c"}])


def test_clip_collate_takes_each_rows_own_format_upright():
    """A WebDataset row has a column per extension in the repo; only its own is set (real photos, five formats)."""
    import io

    from PIL import Image

    from laion_hf.demo.photos import real_photos
    from laion_hf.hub.load import ClipCollate, clip_preprocess

    rows = []
    for index, photo in enumerate(real_photos()):
        row = {"jpg": None, "png": None, "webp": None, "txt": photo.name, "__key__": str(index)}
        undecoded = index % 2 or photo.name == "exif-rotated"  # decoded by datasets = already upright
        row[photo.extension] = {"bytes": photo.data, "path": f"{index}.{photo.extension}"} if undecoded else Image.open(io.BytesIO(photo.data))
        rows.append(row)
    batch = ClipCollate(clip_preprocess(IMAGE_SIZE))(rows)
    assert batch["pixel_values"].shape == (5, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["caption"] == ["jpeg", "png-alpha", "cmyk-jpeg", "webp", "exif-rotated"]
    upright, rotated = batch["pixel_values"][0], batch["pixel_values"][4]
    assert (upright - rotated).abs().mean() < 0.05  # turned by its EXIF orientation, like datasets' Image feature
    sideways = ClipCollate(clip_preprocess(IMAGE_SIZE))([{"jpg": Image.open(io.BytesIO(real_photos()[4].data)), "txt": "", "__key__": "s"}])
    assert (upright - sideways["pixel_values"][0]).abs().mean() > 0.3  # the check above can fail


@pytest.mark.slow
def test_training_loader_streams_real_photos_of_every_format(hub, tmp_path, laion_pairs):
    from tests.formats import write_real_photo_shards

    rows = write_real_photo_shards(tmp_path / "out", laion_pairs, shards=2, per_shard=5)
    layout = write_hub_folder({"mixed": str(tmp_path / "out")}, str(tmp_path / "hub"), target_shard_bytes=1)
    (tmp_path / "hub" / "README.md").write_text(f"---\n{yaml.safe_dump(layout.card_data())}---\n")
    push_folder(tmp_path / "hub", "laion-hf/mixed", token=hub.token)
    loader = training_loader("laion-hf/mixed", "mixed", batch_size=3, num_workers=2, image_size=IMAGE_SIZE)
    seen, captions = [], []
    for batch in loader:
        assert batch["pixel_values"].shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)
        seen.extend(batch["key"])
        captions.extend(batch["caption"])
    assert sorted(seen) == sorted(r["key"] for r in rows)
    assert sorted(captions) == sorted(r["caption"] for r in rows)  # real LAION captions


@pytest.mark.parametrize(
    ("family", "names"),
    [
        ("laion5b-base", ["sample_id", "url", "caption", "height", "width", "license", "nsfw", "similarity"]),
        ("laion5b-multi", ["sample_id", "url", "caption", "height", "width", "license", "nsfw", "similarity", "language"]),
        ("laion5b-joined", ["url", "caption", "width", "height", "similarity", "hash", "punsafe", "pwatermark"]),
        ("laion5b-aesthetic", ["url", "caption", "width", "height", "similarity", "hash", "punsafe", "pwatermark", "aesthetic"]),
        ("relaion5b", ["url", "caption", "key", "status", "error_message", "width", "height", "original_width",
                       "original_height", "exif", "sha256", "similarity", "hash", "punsafe", "pwatermark"]),
    ],
)
def test_iter_metadata_reads_each_release_as_published(family, names, laion_pairs, tmp_path):
    from laion_hf.demo.sample_copy import release_table, write_spark_output
    from laion_hf.io.shards import discover_shards

    table = release_table(laion_pairs.slice(0, 40), family)
    write_spark_output(tmp_path, table, shards=2)
    batches = list(iter_metadata([s.parquet for s in discover_shards(str(tmp_path))], batch_size=15))
    assert all(b.schema.names == names for b in batches)
    assert sum(b.num_rows for b in batches) == 40
    assert [u for b in batches for u in b.column("url").to_pylist()] == laion_pairs.column("URL").to_pylist()[:40]


def test_iter_metadata_of_a_download_saved_with_laions_width_height(laion_pairs, tmp_path):
    """Before: two `width` and two `height` columns in one batch."""
    from tests.formats import write_real_photo_shards

    write_real_photo_shards(tmp_path, laion_pairs, per_shard=5, extra={"WIDTH": [7] * 5, "HEIGHT": [9] * 5})
    [batch] = iter_metadata([str(tmp_path / "00000.parquet")], columns=["url", "width", "laion_width", "laion_height"])
    assert batch.schema.names == ["url", "width", "laion_width", "laion_height"]
    assert batch.column("laion_width").to_pylist() == [7] * 5 and batch.column("width").to_pylist()[0] == 512
