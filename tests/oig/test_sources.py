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


def real_file(shared_dir, name):
    path = shared_dir / "data" / "real" / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


SQUAD_FIELDS = {"title": "title", "context": "context", "question": "question", "answer": "answers.0.text", "impossible": "is_impossible"}


def test_official_squad_v2_json_unpacks_with_parents_carried(shared_dir):
    path = real_file(shared_dir, "squad_v2_dev-v2.0.json")
    spec = {"path": str(path), "record_path": "data[].paragraphs[].qas[]", "fields": SQUAD_FIELDS}
    records = list(iter_records(spec))
    assert len(records) == 14 and sum(r["impossible"] for r in records) == 6
    assert records[0] == {
        "title": "Normans",
        "context": json.loads(path.read_text())["data"][0]["paragraphs"][0]["context"],
        "question": "In what country is Normandy located?",
        "answer": "France",
        "impossible": False,
    }
    assert all(r["answer"] is None for r in records if r["impossible"])  # unanswerables have `answers: []`
    assert records[0].where == f"{path} data[0].paragraphs[0].qas[0]"


def test_datasets_source_passes_field_and_unpacks_the_same_records(shared_dir):
    path = real_file(shared_dir, "squad_v2_dev-v2.0.json")
    by_file = list(iter_records({"path": str(path), "record_path": "data[].paragraphs[].qas[]", "fields": SQUAD_FIELDS}))
    spec = {"type": "hf", "path": "json", "data_files": str(path), "field": "data", "record_path": "paragraphs[].qas[]", "fields": SQUAD_FIELDS}
    assert list(iter_records(spec)) == by_file


def test_json_lines_named_json_is_detected_and_mojibake_can_be_fixed(shared_dir):
    path = real_file(shared_dir, "xsum_sample.json")  # JSON Lines, CRLF, the source's own mojibake
    assert b"\r\n" in path.read_bytes()
    raw = list(iter_records({"path": str(path), "fields": {"article": "document", "summary": "summary"}}))
    assert len(raw) == 10 and raw[3].where == f"{path}:4"
    assert sum("â‚¬78bn (Â£57bn)" in r["article"] for r in raw) == 1
    fixed = list(iter_records({"path": str(path), "fix_text": True, "fields": {"article": "document"}}))
    assert sum("€78bn (£57bn)" in r["article"] for r in fixed) == 1 and not any("â‚¬" in r["article"] for r in fixed)


def test_record_path_on_jsonl_lines_limits_carried_fields_and_reports_clashes(tmp_path):
    article = {"title": "T", "id": "a1", "paragraphs": [{"context": "C", "qas": [{"id": "q1", "question": "Q?"}]}]}
    (tmp_path / "a.jsonl").write_text(json.dumps(article) + "\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"a\.jsonl:1 paragraphs\[0\]\.qas\[0\]: fields \['id'\] exist at two levels"):
        list(iter_records({"path": "a.jsonl", "record_path": "paragraphs[].qas[]"}, tmp_path))
    spec = {"path": "a.jsonl", "record_path": "paragraphs[].qas[]", "carry": ["title", "context"]}
    assert list(iter_records(spec, tmp_path)) == [{"title": "T", "context": "C", "id": "q1", "question": "Q?"}]
    with pytest.raises(SourceError, match=r"a\.jsonl:1: no field 'sections'"):
        list(iter_records({"path": "a.jsonl", "record_path": "sections[]"}, tmp_path))
    with pytest.raises(SourceError, match=r"a\.jsonl:1 title: expected a list"):
        list(iter_records({"path": "a.jsonl", "record_path": "title[]"}, tmp_path))
    with pytest.raises(SourceError, match="must end in a list"):
        list(iter_records({"path": "a.jsonl", "record_path": "paragraphs"}, tmp_path))


def test_json_document_without_record_path_and_unknown_keys(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"version": 2, "data": RECORDS}, indent=1), encoding="utf-8")
    with pytest.raises(SourceError, match=r"d\.json: expected a JSON array of records \(or set `record_path:`"):
        list(iter_records({"path": "d.json"}, tmp_path))
    assert len(list(iter_records({"path": "d.json", "record_path": "data[]"}, tmp_path))) == 2
    with pytest.raises(SourceError, match=r"unknown keys \['records_key'\]"):
        list(iter_records({"path": "d.json", "records_key": "data"}, tmp_path))
    (tmp_path / "broken.json").write_text('[\n{"a": 1},\n{"a": \n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"broken\.json:4: not valid JSON"):
        list(iter_records({"path": "broken.json"}, tmp_path))
