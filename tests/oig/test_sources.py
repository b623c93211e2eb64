import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oig.sources import SourceError, iter_records

RECORDS = [
    {"q": "Who wrote it?", "answers": {"text": ["Ann"]}, "ctx": "Ann wrote it."},
    {"q": "When?", "answers": {"text": []}, "ctx": "Ann wrote it."},
]
FIELDS = {"question": "q", "answer": "answers.text.0", "context": "ctx"}
EXPECTED = [
    {"question": "Who wrote it?", "answer": "Ann", "context": "Ann wrote it."},
    {"question": "When?", "answer": None, "context": "Ann wrote it."},
]


def write_all_formats(folder):
    (folder / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    (folder / "r.json").write_text(json.dumps(RECORDS), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(RECORDS), folder / "r.parquet")


@pytest.mark.parametrize("name", ["r.jsonl", "r.json", "r.parquet"])
def test_file_sources_stream_mapped_fields(tmp_path, name):
    write_all_formats(tmp_path)
    assert list(iter_records({"path": name, "fields": FIELDS}, tmp_path)) == EXPECTED


def test_csv_source_and_limit(tmp_path):
    with open(tmp_path / "r.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["topic", "answer"])
        writer.writeheader()
        writer.writerows([{"topic": f"t{i}", "answer": str(i)} for i in range(5)])
    records = list(iter_records({"path": "r.csv", "limit": 2}, tmp_path))
    assert records == [{"topic": "t0", "answer": "0"}, {"topic": "t1", "answer": "1"}]


def test_datasets_source_streams_a_local_dataset_folder(tmp_path):
    folder = tmp_path / "my_dataset" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(RECORDS), folder / "train-00000-of-00001.parquet")
    spec = {"type": "hf", "path": str(tmp_path / "my_dataset"), "split": "train", "fields": FIELDS}
    assert list(iter_records(spec)) == EXPECTED


def test_missing_field_names_file_and_line(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"q": "a"}\n{"x": 1}\n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"r\.jsonl:2: record has no field 'q'"):
        list(iter_records({"path": "r.jsonl", "fields": {"question": "q"}}, tmp_path))


def test_bad_json_line_names_line(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"q": "a"}\n\n{broken\n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"r\.jsonl:3: not valid JSON"):
        list(iter_records({"path": "r.jsonl"}, tmp_path))


def test_unknown_type_and_missing_file(tmp_path):
    with pytest.raises(SourceError, match="cannot tell the source type"):
        list(iter_records({"path": "data.xml"}, tmp_path))
    with pytest.raises(SourceError, match="cannot open source"):
        list(iter_records({"path": "absent.jsonl"}, tmp_path))
