import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.io.removal_lists import RemovalListError, load_list, load_removal_sets, parse_spec, parse_value

MD5 = "0123456789abcdef0123456789abcdef"
SHA = "ab" * 32


def test_hex_values_are_case_and_whitespace_insensitive():
    assert parse_value("url-md5", f"  {MD5.upper()} \t") == MD5
    assert parse_value("image-sha256", f"{SHA[:10]} {SHA[10:]}") == SHA
    assert parse_value("url-md5", SHA) is None  # a sha256 is not an md5
    assert parse_value("url-sha256", "zz" * 32) is None


def test_laion_hash_and_sample_id_values():
    assert parse_value("laion-hash", " -9223372036854775808 ") == -(2**63)
    assert parse_value("laion-hash", str(2**63)) is None
    assert parse_value("laion-hash", "12ab") is None
    assert parse_value("sample-id", " 000010005 ") == "000010005"
    assert parse_value("sample-id", "a b") is None


def test_text_list_skips_blank_and_comment_lines(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text(f"# header\n\n{MD5.upper()}\n  {MD5}  \n")
    loaded = load_list("url-md5", str(path))
    assert loaded.values.to_pylist() == [bytes.fromhex(MD5)] * 2  # URL lists hold raw digests


def test_invalid_line_names_file_and_line(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text(f"{MD5}\n# comment\nnot-a-hash\n")
    with pytest.raises(RemovalListError, match=r"urls\.txt: line 3: 'not-a-hash' is not a valid url-md5"):
        load_list("url-md5", str(path))


def test_skip_invalid_counts_instead_of_failing(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text(f"{MD5}\nbad\nworse\n")
    sets = load_removal_sets([("url-md5", str(path))], skip_invalid=True)
    assert sets.invalid == 2
    assert sets.get("url-md5").to_pylist() == [bytes.fromhex(MD5)]
    assert sets.summary() == [{"kind": "url-md5", "path": str(path), "values": 1, "invalid_skipped": 2}]


def test_csv_list_picks_the_kind_column_and_reports_csv_lines(tmp_path):
    path = tmp_path / "images.csv"
    path.write_text(f"source,image_sha256\npartner,{SHA.upper()}\npartner,nope\n")
    with pytest.raises(RemovalListError, match=r"images\.csv: line 3"):
        load_list("image-sha256", str(path))
    assert load_list("image-sha256", str(path), skip_invalid=True).values.to_pylist() == [SHA]


def test_csv_without_a_recognisable_column_is_an_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(RemovalListError, match="cannot tell which column"):
        load_list("laion-hash", str(path))


def test_parquet_list_and_null_rows(tmp_path):
    path = tmp_path / "hashes.parquet"
    pq.write_table(pa.table({"hash": pa.array([5, None, -7], pa.int64())}), path)
    with pytest.raises(RemovalListError, match=r"hashes\.parquet: row 1: None"):
        load_list("laion-hash", str(path))
    sets = load_removal_sets([("laion-hash", str(path))], skip_invalid=True)
    assert sorted(sets.get("laion-hash").to_pylist()) == [-7, 5]


def test_lists_of_one_kind_merge_into_one_unique_set(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("1\n2\n")
    b.write_text("2\n3\n")
    sets = load_removal_sets([("laion-hash", str(a)), ("laion-hash", str(b))])
    assert sorted(sets.get("laion-hash").to_pylist()) == [1, 2, 3]


def test_missing_file_and_bad_spec(tmp_path):
    with pytest.raises(RemovalListError, match="not found"):
        load_list("url-md5", str(tmp_path / "absent.txt"))
    with pytest.raises(RemovalListError, match="unknown kind 'url-sha1'"):
        parse_spec("url-sha1=x.txt")
    with pytest.raises(RemovalListError, match="expected KIND=FILE"):
        parse_spec("url-md5")
    assert parse_spec("url-md5=a=b.txt") == ("url-md5", "a=b.txt")


def test_lists_exported_on_windows_with_a_bom_and_crlf_are_read(tmp_path):
    text = tmp_path / "urls.txt"
    text.write_bytes(b"\xef\xbb\xbf" + f"{MD5}\r\n{MD5.upper()}\r\n".encode())
    assert load_list("url-md5", str(text)).values.to_pylist() == [bytes.fromhex(MD5)] * 2
    table = tmp_path / "images.csv"
    table.write_bytes(b"\xef\xbb\xbf" + f"image_sha256,source\r\n{SHA},partner\r\n".encode())
    assert load_list("image-sha256", str(table)).values.to_pylist() == [SHA]


def test_a_keyword_file_with_a_bom_gives_clean_keywords(tmp_path):
    from laion_hf.stages.removal import load_keywords

    path = tmp_path / "keywords.txt"
    path.write_bytes(b"\xef\xbb\xbfnsfw\r\nexplicit\r\n")
    assert load_keywords(str(path)) == ["nsfw", "explicit"]
