"""clean on LAION's metadata exactly as published, filled with real LAION pairs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.clean import CleanOptions, clean_copy
from laion_hf.core.hashing import laion_hash
from laion_hf.demo.sample_copy import release_table, write_spark_output
from laion_hf.stages.removal import MissingPunsafeError

WITH_PUNSAFE = ["laion5b-joined", "laion5b-joined-multi", "laion5b-aesthetic", "relaion5b"]
WITHOUT_PUNSAFE = ["laion400m", "laion5b-base", "laion5b-multi"]


@pytest.fixture
def release(laion_pairs, tmp_path):
    def write(family: str) -> tuple[pa.Table, list]:
        table = release_table(laion_pairs.slice(0, 300), family)
        return table, write_spark_output(tmp_path / family, table, shards=3)
    return write


def hash_list(tmp_path, table: pa.Table) -> tuple[str, set[int]]:
    cols = {n.lower(): n for n in table.column_names}
    urls, texts = table[cols["url"]].to_pylist(), table[cols.get("text") or cols["caption"]].to_pylist()
    listed = {laion_hash(u, t) for u, t in list(zip(urls, texts))[::17]}
    path = tmp_path / "laion-hash.txt"
    path.write_text("".join(f"{h}\n" for h in sorted(listed)))
    return str(path), listed


@pytest.mark.parametrize("family", WITH_PUNSAFE)
def test_research_safe_of_each_scored_release(family, release, tmp_path):
    table, parts = release(family)
    listed_path, listed = hash_list(tmp_path, table)
    out = tmp_path / "out"
    report = clean_copy(str(parts[0].parent), str(out), CleanOptions(remove=(("laion-hash", listed_path),), variant="research-safe"),
                        show_progress=False)
    cols = {n.lower(): n for n in table.column_names}
    rows = table.to_pylist()
    hashes = [laion_hash(r[cols["url"]], r[cols.get("text") or cols["caption"]]) for r in rows]
    by_list = [h in listed for h in hashes]
    by_punsafe = [not hit and r["punsafe"] is not None and np.float32(r["punsafe"]) > np.float32(0.45) for r, hit in zip(rows, by_list)]
    expected = [r for r, a, b in zip(rows, by_list, by_punsafe) if not (a or b)]
    written = pa.concat_tables([pq.read_table(out / p.name) for p in parts])
    assert written.to_pylist() == expected
    assert written.schema.equals(table.schema)
    assert dict(report.by_reason) == {"laion-hash": sum(by_list), "punsafe": sum(by_punsafe)}
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".parquet")) == [p.name for p in parts]


@pytest.mark.parametrize("family", WITHOUT_PUNSAFE)
def test_unscored_releases_clean_by_lists_and_refuse_a_variant_naming_the_part(family, release, tmp_path):
    table, parts = release(family)
    listed_path, listed = hash_list(tmp_path, table)
    report = clean_copy(str(parts[0].parent), str(tmp_path / "out"), CleanOptions(remove=(("laion-hash", listed_path),)),
                        show_progress=False)
    assert report.total.rows_in == table.num_rows and dict(report.by_reason) == {"laion-hash": len(listed)}
    with pytest.raises(MissingPunsafeError, match=parts[0].name.replace(".", r"\.")):
        clean_copy(str(parts[0].parent), str(tmp_path / "out2"), CleanOptions(variant="research"), show_progress=False)
