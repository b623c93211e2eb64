"""`laion-hf serve`: the JSON API over HTTP on loopback, and the page in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from laion_hf.search.index import build_index
from laion_hf.search.server import SearchServer
from laion_hf.testing.vectors import random_vectors, write_embedding_folder

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def call(url: str, payload: dict | None = None, raw: bytes | None = None) -> tuple[int, object]:
    body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            data, status, kind = response.read(), response.status, response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        data, status, kind = error.read(), error.code, error.headers["Content-Type"]
    return status, json.loads(data) if kind == "application/json" else data


def _sample_bytes(filtered: Path, key: str) -> bytes:
    with tarfile.open(filtered / f"{key[:5]}.tar") as tar:
        return tar.extractfile(f"{key}.jpg").read()


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    """An index with punsafe on every row: even rows 0.1, odd rows 0.9."""
    root = tmp_path_factory.mktemp("scored-serve")
    write_embedding_folder(root / "research", random_vectors(400, 64, clusters=3, seed=7), pa.table({
        "key": [f"{i:09d}" for i in range(400)],
        "caption": [f"caption {i}" for i in range(400)],
        "punsafe": pa.array([0.1 if i % 2 == 0 else 0.9 for i in range(400)], pa.float32()),
    }))
    build_index(root / "research", root / "index", model="laion-hf-tiny")
    return root / "index"


@pytest.mark.slow
def test_knn_service_answers_text_and_image_queries(demo_index, scored):
    with SearchServer([str(demo_index.index), str(scored)]) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert call(server.url + "indices-list") == (200, ["filtered", "research"])
        status, info = call(server.url + "index-info")
        assert info["filtered"]["rows"] == 256 and info["filtered"]["thumbnails"] and not info["filtered"]["safety"]
        assert info["research"]["safety"] and info["research"]["safe_limit"] == 0.45
        status, results = call(server.url + "knn-service", {"text": "a red circle on a white background",
                                                             "modality": "image", "num_images": 3, "indice_name": "filtered"})
        assert status == 200 and len(results) == 3
        assert all(demo_index.truth[r["key"]].colour == "red" for r in results)
        key = results[0]["key"]
        status, image = call(server.url + results[0]["image"].lstrip("/"))
        assert status == 200 and image == _sample_bytes(demo_index.filtered, key)
        upload = base64.b64encode(_sample_bytes(demo_index.filtered, key)).decode()
        status, results = call(server.url + "knn-service", {"image": upload, "num_images": 1, "indice_name": "filtered"})
        assert status == 200 and results[0]["key"] == key
        status, rows = call(server.url + "metadata", {"indice_name": "filtered", "ids": [results[0]["id"]]})
        assert rows[str(results[0]["id"])]["key"] == key


@pytest.mark.slow
def test_safe_mode_hides_rows_above_the_limit(scored):
    with SearchServer([str(scored)], safe_limit=0.45) as server:
        request = {"text": "a red circle on a white background", "num_images": 50}
        status, everything = call(server.url + "knn-service", request)
        assert status == 200 and {round(r["punsafe"], 3) for r in everything} == {0.1, 0.9}
        status, safe = call(server.url + "knn-service", {**request, "use_safety_model": True})
        assert status == 200 and len(safe) == 50 and all(r["id"] % 2 == 0 for r in safe)
        assert [r["id"] for r in safe] == [r["id"] for r in call(server.url + "knn-service", {**request, "num_images": 400})[1]
                                            if r["id"] % 2 == 0][:50]


@pytest.mark.slow
def test_bad_requests_get_4xx_with_a_message(demo_index):
    with SearchServer([str(demo_index.index)]) as server:
        cases = [
            ({"text": "  "}, 400, "empty query"),
            ({"text": "a red circle", "use_safety_model": True}, 400, "has no punsafe column"),
            ({"text": "a red circle", "indice_name": "nope"}, 404, "unknown indice_name 'nope'"),
            ({"text": "a red circle", "num_images": 0}, 400, "num_images must be between 1 and 1000"),
            ({"image": "%%%"}, 400, "image: not base64"),
            ({"image": base64.b64encode(b"GIF89a nope").decode()}, 400, "uploaded image: not a readable image"),
            ({"image_url": "http://169.254.169.254/"}, 400, "image_url is not supported"),
        ]
        for payload, status, message in cases:
            got, body = call(server.url + "knn-service", payload)
            assert got == status and message in body["error"], (payload, body)
        assert call(server.url + "knn-service", raw=b"{nope")[0] == 400
        assert call(server.url + "static/..%2F..%2Fserver.py")[0] == 404
        assert call(server.url + "image/filtered/99999")[0] == 404
        status, page = call(server.url)
        assert status == 200 and b"<title>laion-hf search</title>" in page


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)")
def test_the_page_in_headless_chromium(demo_index, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        options.add_argument(flag)
    with SearchServer([str(demo_index.index)]) as server:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            driver.get(server.url)
            wait = WebDriverWait(driver, 120)
            wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "256 rows"))
            assert driver.find_element(By.ID, "safe-mode").get_attribute("disabled") is not None  # no punsafe here
            box = driver.find_element(By.ID, "query")
            box.send_keys("a red circle on a white background")
            driver.find_element(By.ID, "search-button").click()
            wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "results in"))
            cards = driver.find_elements(By.CSS_SELECTOR, "#results .result")
            assert len(cards) == 20
            keys = [card.get_attribute("data-key") for card in cards]
            wanted = {k for k, s in demo_index.truth.items() if (s.shape, s.colour, s.background) == ("circle", "red", "white")}
            assert set(keys[:3]) == wanted
            captions = [card.find_element(By.CSS_SELECTOR, ".caption").text for card in cards]
            assert all("red circle" in caption for caption in captions[:3])
            loaded = driver.execute_script(
                "return [...document.querySelectorAll('#results img')].slice(0, 3).map(i => i.complete && i.naturalWidth)")
            assert loaded == [64, 64, 64]  # thumbnails served from the shards
            driver.save_screenshot(str(tmp_path / "search-page.png"))
            if os.environ.get("LAION_HF_SCREENSHOT"):
                shutil.copy(tmp_path / "search-page.png", os.environ["LAION_HF_SCREENSHOT"])
        finally:
            driver.quit()
    assert np.frombuffer((tmp_path / "search-page.png").read_bytes()[:8], np.uint8).tolist()[1:4] == [80, 78, 71]
