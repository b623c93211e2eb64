"""The default model, ViT-B/32 as LAION ran it, through the real open_clip cache path, in fresh processes.

OpenAI's weights cannot be downloaded here, so a ViT-B/32 with random weights is
planted where open_clip's ``openai`` tag is read from: the Hugging Face cache entry
``timm/vit_base_patch32_clip_224.openai`` (what open_clip downloads for the tag).
The processes run with ``HF_HUB_OFFLINE=1`` and that cache (huggingface_hub reads
both at import), so nothing touches the network. What is checked is the loading
path (tag -> QuickGELU model, open_clip's preprocessing), the defaults of
``laion-hf filter`` (model, LAION-5B's threshold) and the errors when the
weights or the multilingual encoder are missing, not the quality of the weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.models import real_images

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
OPENAI_REPO = "timm/vit_base_patch32_clip_224.openai"


@pytest.fixture(scope="module")
def openai_cache(tmp_path_factory) -> Path:
    """A Hugging Face cache holding (random) ViT-B-32-quickgelu weights under the ``openai`` tag's file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    cache = tmp_path_factory.mktemp("hf-hub")
    commit = "0" * 40
    folder = cache / f"models--{OPENAI_REPO.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu")
    state = {k: v.half().contiguous() for k, v in model.state_dict().items()}  # OpenAI's weights are fp16 too
    save_file(state, str(folder / "snapshots" / commit / "open_clip_model.safetensors"))
    return cache


def _run(args: list[str], cache: Path, home: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HOME": str(home),  # no ~/.cache/clip of the machine's user
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "250",
    }
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


COMPARE_WITH_OPEN_CLIP = """
import json, sys, warnings
from pathlib import Path
import torch, open_clip
from open_clip.transformer import QuickGELU
from laion_hf.models.clip import load_clip, normalise
from laion_hf.models.images import decode_image

with warnings.catch_warnings(record=True) as ours_warned:
    warnings.simplefilter("always")
    ours = load_clip("ViT-B-32", pretrained="openai")
with warnings.catch_warnings(record=True) as plain_warned:
    warnings.simplefilter("always")
    open_clip.create_model("ViT-B-32", pretrained="openai", load_weights=False)  # the plain request warns
model, _, reference = open_clip.create_model_and_transforms("ViT-B-32-quickgelu", pretrained="openai")
model.eval()
pictures = [decode_image(path.read_bytes()) for path in sorted(Path(sys.argv[1]).iterdir())]
ours_pixels = torch.stack([ours.preprocess(p) for p in pictures])
reference_pixels = torch.stack([reference(p) for p in pictures])
with torch.no_grad():
    same_embeddings = torch.equal(ours.encode_images(ours_pixels), normalise(model.encode_image(reference_pixels)))
print(json.dumps({
    "name": ours.name,
    "quick_gelu": all(isinstance(m, QuickGELU) for m in ours.model.modules() if "GELU" in type(m).__name__),
    "preprocess_cfg": ours.model.visual.preprocess_cfg == model.visual.preprocess_cfg,
    "resize_mode": ours.model.visual.preprocess_cfg["resize_mode"],
    "same_pixels": torch.equal(ours_pixels, reference_pixels),
    "same_embeddings": same_embeddings,
    "ours_quickgelu_warnings": [str(w.message) for w in ours_warned if "QuickGELU" in str(w.message)],
    "plain_quickgelu_warnings": [str(w.message) for w in plain_warned if "QuickGELU" in str(w.message)],
    "checksums": ours.checksums,
}))
"""


def test_openai_tag_builds_exactly_what_open_clip_builds_for_it(openai_cache, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (extension, data) in enumerate(real_images.real_format_files(10)):
        (photos / f"{i:02d}.{extension}").write_bytes(data)
    done = _run(["-c", COMPARE_WITH_OPEN_CLIP, str(photos)], openai_cache, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["name"] == "ViT-B-32-quickgelu" and result["quick_gelu"]
    assert result["ours_quickgelu_warnings"] == []
    assert result["plain_quickgelu_warnings"], "open_clip warns when ViT-B-32 (GELU) gets OpenAI's QuickGELU weights"
    assert result["preprocess_cfg"] and result["resize_mode"] == "shortest"
    assert result["same_pixels"] and result["same_embeddings"]
    [(path, _)] = result["checksums"].items()
    assert path.startswith(str(openai_cache)) and path.endswith("open_clip_model.safetensors")


@pytest.fixture(scope="module")
def real_download(laion_pairs, tmp_path_factory) -> Path:
    """An img2dataset-layout shard: 10 real LAION (url, caption) pairs with real-format photos."""
    directory = tmp_path_factory.mktemp("download")
    rows = [{"url": row["URL"], "caption": row["TEXT"]} for row in laion_pairs.slice(0, 10).to_pylist()]
    real_images.write_shard(directory, rows, real_images.real_format_files(len(rows)))
    return directory


CLI = ["-c", "from laion_hf.cli import main; main()"]


def test_filter_defaults_to_openai_vit_b32_at_laion_5bs_threshold(openai_cache, real_download, tmp_path):
    output = tmp_path / "out"
    done = _run([*CLI, "filter", str(real_download), str(output), "--multilingual", "none"], openai_cache, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "filter: ViT-B-32-quickgelu" in done.stdout
    assert "similarity >= 0.28; LAION-5B's, for OpenAI ViT-B/32" in done.stdout
    kept = pq.read_table(output / "00000.parquet").num_rows
    removed = pq.read_table(output / "00000_removed.parquet")
    assert kept + removed.num_rows == 10 and set(removed["drop_reason"].to_pylist()) <= {"clip-similarity"}
    assert f"{kept:,} of 10 samples kept" in done.stdout


def test_filter_needs_laion_5bs_multilingual_encoder_or_says_so(openai_cache, real_download, tmp_path):
    done = _run([*CLI, "filter", str(real_download), str(tmp_path / "out")], openai_cache, tmp_path)
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert "sentence-transformers/clip-ViT-B-32-multilingual-v1: not a local folder" in message
    assert "--multilingual none" in message and "Traceback" not in done.stderr


def test_filter_without_the_weights_stops_before_writing_and_says_how_to_supply_them(real_download, tmp_path):
    empty_cache = tmp_path / "empty-cache"
    empty_cache.mkdir()
    output = tmp_path / "out"
    done = _run([*CLI, "filter", str(real_download), str(output)], empty_cache, tmp_path)
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert "ViT-B-32-quickgelu: open_clip's 'openai' weights are not available (HF_HUB_OFFLINE is set" in message
    assert f"{OPENAI_REPO} in the Hugging Face cache {empty_cache}" in message
    assert f"ViT-B-32.pt in {tmp_path}/.cache/clip" in message
    for how in ("--pretrained FILE", "--cache-dir DIR", "laion-hf-tiny"):
        assert how in message
    assert "Traceback" not in done.stderr and not output.exists()
