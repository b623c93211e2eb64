"""The TensorFlow-free reader of LAION's NSFW SavedModels, against the real files and TensorFlow's own outputs."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from laion_hf.models.tf_savedmodel import (
    SavedModelError,
    SavedModelFiles,
    TensorBundle,
    load_nsfw_savedmodel,
    read_nsfw_savedmodel,
    sstable_items,
)

# punsafe that TensorFlow 2.21 (tensorflow-cpu, a throwaway venv outside the project) computed for
# `_vectors(dim)` below, through `tf.saved_model.load(dir).signatures["serving_default"]
# (input_1=tf.constant(x, tf.float64))` on the unzipped /work/shared/models/nsfw_{l14,b32}.zip.
TF_L14 = [
    0.00015334949421230704,
    0.046322278678417206,
    0.2522280812263489,
    0.00011423224350437522,
    0.006702278275042772,
    3.2342343274649465e-06,
]
TF_B32 = [
    1.1316428683016966e-08,
    5.5123520331656906e-11,
    1.892206273623742e-05,
    0.9904693365097046,
    2.273877752756448e-09,
    3.974188530264655e-06,
]
MODELS = {
    "l14": ("nsfw_l14.zip", 768, [64, 512, 256], [180, 316, 413, 440, 644], [10425, 2266, 2190, 2293, 2241], TF_L14),
    "b32": ("nsfw_b32.zip", 512, [32, 32], [92, 133, 312], [1566, 747, 745], TF_B32),
}


def _vectors(dim: int, n: int = 6, seed: int = 0) -> np.ndarray:
    """Random unit vectors rounded to float16, as LAION's released embeddings are."""
    x = np.random.default_rng(seed).standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float64)


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, shared_dir):
    name = request.param
    path = shared_dir / "models" / MODELS[name][0]
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return name, path


def test_reads_architecture_vocabularies_and_statistics(model):
    name, path = model
    _, dim, hidden, columns, vocab_sizes, _ = MODELS[name]
    parts = read_nsfw_savedmodel(path)
    assert parts["embed_dim"] == dim
    assert parts["hidden"] == hidden
    assert parts["categorical_columns"] == columns
    assert [len(v) for v in parts["vocabularies"]] == vocab_sizes
    assert all(len(set(v)) == len(v) for v in parts["vocabularies"])
    assert all(token == "%f" % float(np.float32(token)) for v in parts["vocabularies"] for token in v[:50])
    assert parts["count"] == 242067
    assert parts["mean"].shape == parts["variance"].shape == (dim,)
    assert (parts["variance"] > 0).all()
    widths = [dim, *hidden, 1]
    assert [k.shape for k in parts["kernels"]] == list(zip(widths[:-1], widths[1:]))
    assert [b.shape for b in parts["biases"]] == [(w,) for w in widths[1:]]


def test_every_inference_weight_in_the_checkpoint_is_used(model):
    name, path = model
    bundle = TensorBundle(SavedModelFiles(path))
    inference = {k for k in bundle.keys() if k.startswith("layer_with_weights-") and "token_counts" not in k}
    n_dense = len(MODELS[name][2]) + 1
    expected = {f"layer_with_weights-1/{v}/.ATTRIBUTES/VARIABLE_VALUE" for v in ("mean", "variance", "count")} | {
        f"layer_with_weights-{i}/{v}/.ATTRIBUTES/VARIABLE_VALUE" for i in range(2, 2 + n_dense) for v in ("kernel", "bias")
    }
    assert inference == expected
    # The graph constants the serving function uses equal the adapted variables.
    parts = read_nsfw_savedmodel(path)
    np.testing.assert_array_equal(
        bundle.read("layer_with_weights-1/mean/.ATTRIBUTES/VARIABLE_VALUE").reshape(-1), parts["mean"]
    )
    # autokeras's token_counts tables are empty string->int64 tables.
    keys = bundle.read(f"layer_with_weights-0/encoding_layers/{MODELS[name][3][0]}/token_counts/.ATTRIBUTES/table-keys")
    assert keys.shape == (0,)


def test_port_reproduces_tensorflow(model):
    """TensorFlow's numbers for fixed vectors (see TF_L14/TF_B32), including the categorical-column lookups."""
    name, path = model
    dim, expected = MODELS[name][1], MODELS[name][5]
    detector = load_nsfw_savedmodel(path)
    x = torch.from_numpy(_vectors(dim))
    with torch.no_grad():
        punsafe = detector(x).numpy()
        hits = detector.encoding(x)[:, detector.encoding.columns]
    assert ((punsafe >= 0) & (punsafe <= 1)).all()
    np.testing.assert_allclose(punsafe, expected, rtol=1e-4, atol=1e-7)
    assert (hits > 0).any(), "the fixed vectors must exercise the vocabulary lookup"


def test_vocabulary_lookup_changes_the_output():
    """The quirk matters: a value found in the vocabulary is replaced by its 1-based index, absent ones by 0."""
    from laion_hf.models.heads import CategoricalColumns

    encode = CategoricalColumns([1], [["0.125000", "-0.500000"]])
    x = torch.tensor([[0.3, 0.125, 7.0], [float("nan"), -0.5, 1.0], [0.0, 0.25, 2.0]])
    out = encode(x)
    assert out.tolist() == [[pytest.approx(0.3), 1.0, 7.0], [0.0, 2.0, 1.0], [0.0, 0.0, 2.0]]


def test_accepts_an_unzipped_directory(shared_dir, tmp_path):
    import zipfile

    path = shared_dir / "models" / "nsfw_b32.zip"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    zipfile.ZipFile(path).extractall(tmp_path)
    from_dir = load_nsfw_savedmodel(tmp_path / "clip_autokeras_nsfw_b32")
    x = torch.from_numpy(_vectors(512, n=2, seed=1))
    with torch.no_grad():
        torch.testing.assert_close(from_dir(x), load_nsfw_savedmodel(path)(x))


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """An SSTable block without prefix compression (shared = 0), one restart point."""
    body = b"".join(bytes([0, len(k), len(v)]) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1)


def test_sstable_reader_on_a_hand_written_table():
    data_block = _block([(b"a", b"1"), (b"b", b"22")])
    table = data_block + b"\x00\0\0\0\0"
    handle = bytes([0, len(data_block)])
    index_block = _block([(b"b", handle)])
    index_offset = len(table)
    table += index_block + b"\x00\0\0\0\0"
    footer = bytes([0, 0]) + bytes([index_offset, len(index_block)])
    footer = footer.ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    assert list(sstable_items(table + footer)) == [(b"a", b"1"), (b"b", b"22")]


def test_not_a_savedmodel_is_a_clear_error(tmp_path):
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"hello")
    with pytest.raises(SavedModelError, match="model.bin"):
        load_nsfw_savedmodel(bogus)
    with pytest.raises(SavedModelError, match="bad magic"):
        list(sstable_items(b"\0" * 64, "x.index"))


def test_converts_to_a_safetensors_head_that_scores_the_same(model, tmp_path):
    from laion_hf.models.heads import load_head
    from laion_hf.models.tf_savedmodel import convert_nsfw_savedmodel

    name, path = model
    out = tmp_path / f"nsfw_{name}.safetensors"
    original = convert_nsfw_savedmodel(path, out)
    converted = load_head(out)
    x = torch.from_numpy(_vectors(MODELS[name][1]))
    with torch.no_grad():
        torch.testing.assert_close(converted(x), original(x))
    assert converted.encoding.vocabularies == original.encoding.vocabularies
