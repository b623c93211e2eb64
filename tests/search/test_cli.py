"""`laion-hf index` / `search` as a user runs them, an index pushed next to a dataset, and bad input (exit 2)."""

from __future__ import annotations

import json
import shutil
import tarfile

import pytest
from huggingface_hub import HfApi

from laion_hf.search.hub import HubIndexError, download_index


@pytest.mark.slow
def test_index_then_search_by_text_and_image(demo_index, tmp_path, cli):
    code, out, err = cli("index", demo_index.filtered, tmp_path / "index", "--model", "laion-hf-tiny")
    assert code == 0, err
    assert "256 rows, dim 64, model laion-hf-tiny" in out and "Flat" in out
    code, out, err = cli("search", tmp_path / "index", "a red circle on a white background", "--k", "3", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert [demo_index.truth[r["key"]].shape for r in results] == ["circle"] * 3
    assert all(demo_index.truth[r["key"]].colour == "red" for r in results)
    image = tmp_path / "query.jpg"
    with tarfile.open(demo_index.filtered / "00001.tar") as tar:
        image.write_bytes(tar.extractfile("000010005.jpg").read())
    code, out, err = cli("search", tmp_path / "index", "--image", image, "--k", "2")
    assert code == 0, err
    assert "000010005" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{index}", "  "], "empty query"),
        (["{index}"], "give either a text query or --image FILE"),
        (["{index}", "a red circle", "--model", "ViT-B-32"], "built from 'laion-hf-tiny' embeddings"),
        (["{index}", "a red circle", "--max-punsafe", "0.45"], "cannot filter on punsafe"),
        (["{index}", "--image", "{missing}"], "missing.png: cannot read the query image"),
        (["{tmp}", "a red circle"], "not a laion-hf index (index_info.json is missing"),
    ],
)
def test_bad_search_input_exits_2_with_one_line(demo_index, tmp_path, cli, args, message):
    values = {"index": demo_index.index, "missing": tmp_path / "missing.png", "tmp": tmp_path}
    code, out, err = cli("search", *[a.format(**values) for a in args])
    assert code == 2 and message in err, err
    assert "Traceback" not in err + out


def test_bad_index_input_exits_2_naming_the_file(tmp_path, cli):
    (tmp_path / "build" / "configs" / "research" / "img_emb").mkdir(parents=True)
    code, _, err = cli("index", tmp_path / "build", tmp_path / "index", "--config", "safe", "--model", "laion-hf-tiny")
    assert code == 2 and f"{tmp_path / 'build'}: unknown config 'safe'; it has embeddings of: research" in err
    code, _, err = cli("index", tmp_path / "build", tmp_path / "index", "--max-memory", "lots")
    assert code == 2 and "--max-memory 'lots'" in err


def test_corrupt_index_file_exits_2_naming_it(demo_index, tmp_path, cli):
    broken = tmp_path / "broken"
    shutil.copytree(demo_index.index, broken)
    (broken / "image.index").write_bytes(b"IxFI" + b"\0" * 20)
    code, out, err = cli("search", broken, "a red circle")
    assert code == 2 and f"{broken / 'image.index'}: not a readable faiss index" in err
    assert "Traceback" not in err + out


@pytest.mark.slow
def test_an_index_pushed_next_to_its_dataset_is_searched_from_the_hub(demo_index, hub, tmp_path, cli):
    api = HfApi()
    api.create_repo("tester/demo", repo_type="dataset")
    api.upload_folder(folder_path=str(demo_index.index), path_in_repo="index/filtered", repo_id="tester/demo",
                      repo_type="dataset")
    api.upload_file(path_or_fileobj=b"data", path_in_repo="filtered/train-00000-of-00001.parquet",
                    repo_id="tester/demo", repo_type="dataset")
    local = download_index("hf://datasets/tester/demo/index/filtered")
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in demo_index.index.iterdir())
    assert not (local.parents[1] / "filtered").exists()  # only the index folder was downloaded
    code, out, err = cli("search", "hf://datasets/tester/demo/index/filtered", "a red circle on a white background",
                         "--k", "3", "--json")
    assert code == 0, err
    assert all(demo_index.truth[r["key"]].colour == "red" for r in json.loads(out))
    with pytest.raises(HubIndexError, match="no index_info.json in tester/demo/filtered"):
        download_index("hf://datasets/tester/demo/filtered")
    with pytest.raises(HubIndexError, match="hf://datasets/tester/absent/index: "):
        download_index("hf://datasets/tester/absent/index")


@pytest.mark.slow
def test_serve_refuses_an_index_whose_model_weights_differ(demo_index, tmp_path, cli):
    forged = tmp_path / "forged"
    shutil.copytree(demo_index.index, forged)
    info = json.loads((forged / "index_info.json").read_text())
    info["model"]["checksums"] = {"other.safetensors": "0" * 64}
    (forged / "index_info.json").write_text(json.dumps(info))
    code, out, err = cli("serve", forged, "--port", "0")
    assert code == 2 and "are not the ones the index recorded" in err
    assert "search page" not in out
