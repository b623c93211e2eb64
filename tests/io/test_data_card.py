"""The README.md that names an output folder's data files: the shortest exact glob, never a foreign README."""

from __future__ import annotations

import pytest

from laion_hf.io.data_card import data_files, write_data_card


@pytest.mark.parametrize(
    ("names", "shards", "expected"),
    [
        (["00000.parquet", "00000.tar", "00000_stats.json", "clean_report.json"], ["00000.parquet"], "*.parquet"),
        (["00000.parquet", "00000_removed.parquet", "00001.parquet"], ["00000.parquet", "00001.parquet"],
         "[0-9][0-9][0-9][0-9][0-9].parquet"),
        (["part-00000-ab-c000.snappy.parquet", ".part-00000-ab-c000.snappy.parquet.crc", "_SUCCESS", "x_removed.parquet"],
         ["part-00000-ab-c000.snappy.parquet"], "part-*.parquet"),
        (["a.parquet", "b.parquet", "b_removed.parquet"], ["a.parquet", "b.parquet"], ["a.parquet", "b.parquet"]),
    ],
)
def test_the_glob_matches_the_shards_and_nothing_else(names, shards, expected):
    assert data_files(names, shards) == expected


def test_a_readme_someone_else_wrote_is_left_alone(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1]}), tmp_path / "00000.parquet")
    assert write_data_card(str(tmp_path)) == str(tmp_path / "README.md")
    assert "path: '*.parquet'" in (tmp_path / "README.md").read_text()
    (tmp_path / "README.md").write_text("# my notes\n")
    assert write_data_card(str(tmp_path)) is None
    assert (tmp_path / "README.md").read_text() == "# my notes\n"
    assert write_data_card(str(tmp_path / "absent")) is None
