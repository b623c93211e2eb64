"""Image shards round-trip through stages: kept bytes identical, removed rows audited, counts add up."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from laion_hf.core.errors import UserError
from laion_hf.core.stage import Stage, alive_mask, mark_dropped
from laion_hf.io.samples import MISSING_IMAGE, MissingSampleError, image_shards, read_sample_batches, transform_shard
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import CorruptTarError, iter_samples, write_samples
from tests.damaged_shards import CUTS, cut_tar, drop_sample


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


def test_read_sample_batches_joins_metadata_by_key_in_key_order_and_skips_failed(tmp_path):
    """The tar holds samples in download-completion order; batches come in key order (reproducible model batches)."""
    keys = ["000000003", "000000001", "000000002"]
    make_shard(tmp_path, keys, ["three", "one", "two"])
    batches = list(read_sample_batches(discover_shards(str(tmp_path))[0], batch_size=2))
    assert [b["key"].to_pylist() for b in batches] == [["000000001", "000000002"], ["000000003"]]
    assert [b["caption"].to_pylist() for b in batches] == [["one", "two"], ["three"]]
    assert [b["image"].to_pylist() for b in batches] == [
        [b"jpeg-bytes-of-000000001" * 10, b"jpeg-bytes-of-000000002" * 10], [b"jpeg-bytes-of-000000003" * 10]]


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


KEYS = [f"00000{i:04d}" for i in range(5)]
CAPTIONS = ["a cat", "a dog", "cat and dog", "bird", "fish"]


@pytest.mark.parametrize("how", CUTS)
def test_a_cut_tar_is_an_error_naming_it_and_nothing_is_written(tmp_path, how):
    make_shard(tmp_path / "in", KEYS, CAPTIONS)
    cut_tar(tmp_path / "in" / "00000.tar", how)
    with pytest.raises(CorruptTarError, match="in/00000.tar"):
        transform_shard(discover_shards(str(tmp_path / "in"))[0], str(tmp_path / "out"), [DropCaptionsContaining("dog")])
    assert list((tmp_path / "out").iterdir()) == []


def test_a_success_row_without_its_sample_is_counted_as_missing_image(tmp_path):
    make_shard(tmp_path / "in", KEYS, CAPTIONS)
    drop_sample(tmp_path / "in" / "00000.tar", KEYS[3])
    stats = transform_shard(discover_shards(str(tmp_path / "in"))[0], str(tmp_path / "out"),
                            [DropCaptionsContaining("dog"), CountAlive()])
    first = stats["stages"][0]
    assert (first["rows_in"], first["kept"], first["dropped"]) == (5, 2, {"contains-dog": 2, MISSING_IMAGE: 1})
    assert stats["stages"][1]["rows_in"] == 2
    removed = pq.read_table(tmp_path / "out" / "00000_removed.parquet")
    assert dict(zip(removed["key"].to_pylist(), removed["drop_reason"].to_pylist()))[KEYS[3]] == MISSING_IMAGE
    assert sorted(dict(iter_samples(str(tmp_path / "out" / "00000.tar")))) == [KEYS[0], KEYS[4]]


def test_a_sample_whose_row_is_not_a_success_is_refused(tmp_path):
    make_shard(tmp_path, ["000000001"], ["one"])
    write_samples(str(tmp_path / "00000.tar"), [("000000001", {"jpg": b"x"}), ("000000099", {"jpg": b"y"})])
    with pytest.raises(MissingSampleError, match="sample 000000099 is in the tar, but .* as a success"):
        list(read_sample_batches(discover_shards(str(tmp_path))[0]))


def test_a_key_in_two_sidecar_rows_is_refused(tmp_path):
    make_shard(tmp_path, ["000000001"], ["one"])
    table = pq.read_table(tmp_path / "00000.parquet")
    pq.write_table(pa.concat_tables([table, table.slice(1)]), tmp_path / "00000.parquet")
    with pytest.raises(MissingSampleError, match="00000.parquet: key 000000001 is in more than one row"):
        list(read_sample_batches(discover_shards(str(tmp_path))[0]))


def test_a_sidecar_without_status_makes_every_row_a_sample(tmp_path):
    make_shard(tmp_path, ["000000001", "000000002"], ["one", "two"])
    pq.write_table(pq.read_table(tmp_path / "00000.parquet").slice(1).drop_columns(["status"]), tmp_path / "00000.parquet")
    drop_sample(tmp_path / "00000.tar", "000000002")
    (batch,) = read_sample_batches(discover_shards(str(tmp_path))[0])
    assert batch["key"].to_pylist() == ["000000001", "000000002"]
    assert batch["drop_reason"].to_pylist() == [None, MISSING_IMAGE]


def test_a_damaged_sidecar_is_an_error_naming_it(tmp_path):
    make_shard(tmp_path, ["000000001"], ["one"])
    (tmp_path / "00000.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="00000.parquet: cannot read parquet shard"):
        list(read_sample_batches(discover_shards(str(tmp_path))[0]))


def test_image_shards_refuses_a_parquet_without_its_tar(tmp_path):
    make_shard(tmp_path, ["000000001"], ["one"])
    pq.write_table(pa.table({"key": ["000010000"]}), tmp_path / "00001.parquet")
    with pytest.raises(UserError, match=r"00001.parquet: no tar beside it \(00001.tar\); 1 of 2 shard"):
        image_shards(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no parquet shards found"):
        image_shards(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="nothing-here: not a directory"):
        image_shards(str(tmp_path / "nothing-here"))


def test_a_copy_without_stages_audits_a_lost_sample(tmp_path):
    make_shard(tmp_path / "in", KEYS, CAPTIONS)
    drop_sample(tmp_path / "in" / "00000.tar", KEYS[1])
    assert transform_shard(discover_shards(str(tmp_path / "in"))[0], str(tmp_path / "out"), [])["stages"] == []
    removed = pq.read_table(tmp_path / "out" / "00000_removed.parquet")
    assert removed.select(["key", "drop_reason"]).to_pylist() == [{"key": KEYS[1], "drop_reason": MISSING_IMAGE}]
    assert sorted(dict(iter_samples(str(tmp_path / "out" / "00000.tar")))) == [k for k in KEYS if k != KEYS[1]]
