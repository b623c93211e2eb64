"""Image shards round-trip through stages: kept bytes identical, removed rows audited, counts add up."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from laion_hf.io.samples import MissingSampleError, read_sample_batches, transform_shard
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples, write_samples
from laion_hf.stages.base import Stage, alive_mask, mark_dropped


def make_shard(directory, keys, captions):
    directory.mkdir(parents=True, exist_ok=True)
    images = {key: f"jpeg-bytes-of-{key}".encode() * 10 for key in keys}
    write_samples(str(directory / "00000.tar"), ((k, {"jpg": images[k], "txt": b"", "json": b"{}"}) for k in keys))
    failed = pa.table({"url": ["http://x/failed.jpg"], "caption": ["failed"], "key": ["000000099"], "status": ["failed_to_download"]})
    ok = pa.table({"url": [f"http://x/{k}.jpg" for k in keys], "caption": captions, "key": keys, "status": ["success"] * len(keys)})
    pq.write_table(pa.concat_tables([failed, ok]), directory / "00000.parquet")
    return images


class DropCaptionsContaining(Stage):
    name = "word-filter"

    def __init__(self, word):
        self.word = word

    def __call__(self, batch):
        return mark_dropped(batch, pc.match_substring(batch["caption"], self.word), f"contains-{self.word}")


class CountAlive(Stage):
    """Records which rows it saw alive, to check later stages skip dropped rows."""

    name = "observer"

    def __call__(self, batch):
        return batch.append_column("seen_alive", alive_mask(batch))


def test_transform_shard_keeps_bytes_and_counts(tmp_path):
    keys = [f"00000{i:04d}" for i in range(5)]
    images = make_shard(tmp_path / "in", keys, ["a cat", "a dog", "cat and dog", "bird", "fish"])
    shard = discover_shards(str(tmp_path / "in"))[0]

    stats = transform_shard(shard, str(tmp_path / "out"), [DropCaptionsContaining("dog"), DropCaptionsContaining("cat"), CountAlive()], batch_size=2)

    by_stage = {s["stage"]: s for s in stats["stages"]}
    assert [s["stage"] for s in stats["stages"]] == ["word-filter", "word-filter", "observer"]
    assert stats["stages"][0] == {"stage": "word-filter", "rows_in": 5, "kept": 3, "dropped": {"contains-dog": 2}, "seconds": stats["stages"][0]["seconds"]}
    assert stats["stages"][1]["rows_in"] == 3 and stats["stages"][1]["dropped"] == {"contains-cat": 1}
    assert by_stage["observer"]["rows_in"] == by_stage["observer"]["kept"] == 2

    out = dict(iter_samples(str(tmp_path / "out" / "00000.tar")))
    assert sorted(out) == [keys[3], keys[4]]
    assert all(out[k]["jpg"] == images[k] for k in out)
    assert out[keys[3]]["txt"] == b"bird"
    assert json.loads(out[keys[3]]["json"])["url"] == f"http://x/{keys[3]}.jpg"
    assert pq.read_table(tmp_path / "out" / "00000.parquet").column("key").to_pylist() == [keys[3], keys[4]]
    removed = pq.read_table(tmp_path / "out" / "00000_removed.parquet")
    assert sorted(zip(removed["key"].to_pylist(), removed["drop_reason"].to_pylist())) == [
        (keys[0], "contains-cat"), (keys[1], "contains-dog"), (keys[2], "contains-dog")]
    assert "image" not in removed.column_names
    assert json.loads((tmp_path / "out" / "00000_stats.json").read_text()) == {"count": 5, "successes": 2, "removed": 3}


def test_read_sample_batches_joins_metadata_by_key_and_skips_failed(tmp_path):
    keys = ["000000003", "000000001"]
    make_shard(tmp_path, keys, ["three", "one"])
    batches = list(read_sample_batches(discover_shards(str(tmp_path))[0], batch_size=10))
    assert len(batches) == 1
    assert batches[0]["key"].to_pylist() == keys
    assert batches[0]["caption"].to_pylist() == ["three", "one"]


def test_sample_missing_from_sidecar_is_named(tmp_path):
    make_shard(tmp_path, ["000000001"], ["one"])
    write_samples(str(tmp_path / "00000.tar"), [("000000001", {"jpg": b"x"}), ("000000777", {"jpg": b"y"})])
    with pytest.raises(MissingSampleError, match="000000777"):
        list(read_sample_batches(discover_shards(str(tmp_path))[0]))


def test_failed_stage_leaves_no_output(tmp_path):
    make_shard(tmp_path / "in", ["000000001"], ["one"])

    class Broken(Stage):
        def __call__(self, batch):
            raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError):
        transform_shard(discover_shards(str(tmp_path / "in"))[0], str(tmp_path / "out"), [Broken()])
    assert list((tmp_path / "out").iterdir()) == []
