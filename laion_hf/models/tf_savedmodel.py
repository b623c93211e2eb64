"""Read LAION's NSFW detectors (TF/Keras SavedModels exported by autokeras) without TensorFlow.

A SavedModel is three protobuf/SSTable files, and the detector needs only a
little of each:

- ``variables/variables.index`` is a TF *tensor bundle*: an SSTable (LevelDB
  table format) mapping checkpoint keys to ``BundleEntryProto`` (dtype, shape,
  shard, offset, size); ``variables.data-*`` holds the raw little-endian bytes.
  The Dense kernels (stored ``[in, out]``) and biases come from here.
- ``saved_model.pb`` holds the serving graph. autokeras baked the
  ``StringLookup`` vocabularies *and* the ``Normalization`` mean/variance
  into it as constants; the serving function takes them as arguments, so we
  read exactly the tensors TensorFlow would use by following its inputs.
- ``keras_metadata.pb`` carries the Keras config as JSON: the input width,
  which columns autokeras typed as categorical, and the Dense widths.

The protobuf messages are declared here as the small subsets of TensorFlow's
``.proto`` files we read (same field numbers; unknown fields are skipped by
the ``protobuf`` runtime), so no TensorFlow package is needed.
Both a SavedModel directory and a zip holding one are accepted.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from laion_hf.models.checkpoints import ModelLoadError
from laion_hf.models.heads import NsfwDetector, save_head


class SavedModelError(ModelLoadError):
    """A SavedModel that is missing a file or uses a feature this reader does not implement."""


# --- protobuf subsets of tensorflow/core/{framework,protobuf}/*.proto -------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_MESSAGES: dict[str, list[tuple[str, int, int, int, str | None]]] = {
    "TensorShapeDim": [("size", 1, _F.TYPE_INT64, _OPTIONAL, None)],
    "TensorShapeProto": [("dim", 2, _F.TYPE_MESSAGE, _REPEATED, "TensorShapeDim")],
    "TensorProto": [
        ("dtype", 1, _F.TYPE_INT32, _OPTIONAL, None),
        ("tensor_shape", 2, _F.TYPE_MESSAGE, _OPTIONAL, "TensorShapeProto"),
        ("tensor_content", 4, _F.TYPE_BYTES, _OPTIONAL, None),
        ("float_val", 5, _F.TYPE_FLOAT, _REPEATED, None),
        ("string_val", 8, _F.TYPE_BYTES, _REPEATED, None),
        ("int64_val", 10, _F.TYPE_INT64, _REPEATED, None),
    ],
    "AttrValue": [("tensor", 8, _F.TYPE_MESSAGE, _OPTIONAL, "TensorProto")],
    # map<string, AttrValue> is wire-identical to a repeated (key, value) message.
    "AttrEntry": [("key", 1, _F.TYPE_STRING, _OPTIONAL, None), ("value", 2, _F.TYPE_MESSAGE, _OPTIONAL, "AttrValue")],
    "NodeDef": [
        ("name", 1, _F.TYPE_STRING, _OPTIONAL, None),
        ("op", 2, _F.TYPE_STRING, _OPTIONAL, None),
        ("input", 3, _F.TYPE_STRING, _REPEATED, None),
        ("attr", 5, _F.TYPE_MESSAGE, _REPEATED, "AttrEntry"),
    ],
    "GraphDef": [("node", 1, _F.TYPE_MESSAGE, _REPEATED, "NodeDef")],
    "MetaGraphDef": [("graph_def", 2, _F.TYPE_MESSAGE, _OPTIONAL, "GraphDef")],
    "SavedModel": [("meta_graphs", 2, _F.TYPE_MESSAGE, _REPEATED, "MetaGraphDef")],
    "BundleHeaderProto": [("num_shards", 1, _F.TYPE_INT32, _OPTIONAL, None), ("endianness", 2, _F.TYPE_INT32, _OPTIONAL, None)],
    "BundleEntryProto": [
        ("dtype", 1, _F.TYPE_INT32, _OPTIONAL, None),
        ("shape", 2, _F.TYPE_MESSAGE, _OPTIONAL, "TensorShapeProto"),
        ("shard_id", 3, _F.TYPE_INT32, _OPTIONAL, None),
        ("offset", 4, _F.TYPE_INT64, _OPTIONAL, None),
        ("size", 5, _F.TYPE_INT64, _OPTIONAL, None),
        ("slices", 7, _F.TYPE_BYTES, _REPEATED, None),
    ],
    "SavedObjectMetadata": [
        ("node_path", 3, _F.TYPE_STRING, _OPTIONAL, None),
        ("identifier", 4, _F.TYPE_STRING, _OPTIONAL, None),
        ("metadata", 5, _F.TYPE_STRING, _OPTIONAL, None),
    ],
    "SavedMetadata": [("nodes", 1, _F.TYPE_MESSAGE, _REPEATED, "SavedObjectMetadata")],
}


@cache
def _proto(name: str) -> type:
    """The generated message class ``name`` of the subset above."""
    return _message_classes()[name]


@cache
def _message_classes() -> dict[str, type]:
    package = "laion_hf_tf_subset"
    file = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto3")
    for message_name, fields in _MESSAGES.items():
        message = file.message_type.add(name=message_name)
        for field_name, number, kind, label, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".{package}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{n}")) for n in _MESSAGES}


# --- TF DataType enum -> numpy (types.proto) --------------------------------------------------------------------

DT_STRING = 7
NUMPY_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}


def tensor_proto_to_numpy(tensor) -> np.ndarray:
    """A ``TensorProto`` constant as a numpy array (strings as a list-like object array of ``str``)."""
    shape = tuple(d.size for d in tensor.tensor_shape.dim)
    if tensor.dtype == DT_STRING:
        values = np.array([s.decode("utf-8") for s in tensor.string_val], dtype=object)
        return np.full(shape, values[0], dtype=values.dtype) if values.size == 1 else values.reshape(shape)
    if tensor.dtype not in NUMPY_DTYPES:
        raise SavedModelError(f"constant of TF dtype {tensor.dtype} is not supported")
    dtype = np.dtype(NUMPY_DTYPES[tensor.dtype]).newbyteorder("<")
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape)
    repeated = {np.float32: tensor.float_val, np.int64: tensor.int64_val}.get(NUMPY_DTYPES[tensor.dtype])
    if repeated is None:
        raise SavedModelError(f"constant of TF dtype {tensor.dtype} without tensor_content is not supported")
    values = np.array(list(repeated) or [0], dtype=dtype)
    # TF writes a constant whose elements are all equal as that one value.
    return np.full(shape, values[0], dtype=values.dtype) if values.size == 1 else values.reshape(shape)


# --- files of a SavedModel (directory or zip) --------------------------------------------------------------------


class SavedModelFiles:
    """The files of one SavedModel, in a directory or anywhere inside a zip."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self._zip = None
            self._root = self.path
        elif zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            roots = [PurePosixPath(n).parent for n in self._zip.namelist() if PurePosixPath(n).name == "saved_model.pb"]
            if len(roots) != 1:
                raise SavedModelError(f"{self.path}: expected one saved_model.pb inside the zip, found {len(roots)}")
            self._root = roots[0]
        else:
            raise SavedModelError(f"{self.path}: not a SavedModel directory or a zip of one")

    def read(self, name: str) -> bytes:
        try:
            if self._zip is None:
                return (self._root / name).read_bytes()
            return self._zip.read(str(self._root / name))
        except (FileNotFoundError, KeyError):
            raise SavedModelError(f"{self.path}: {name} is missing") from None


# --- tensor bundle: SSTable of BundleEntryProto + raw data shards ------------------------------------------------

SSTABLE_MAGIC = 0xDB4775248B80FB57
SSTABLE_FOOTER = 48  # two BlockHandles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER = 5  # compression type (1 byte) + masked crc32c (4 bytes)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _block(data: bytes, handle: bytes, source: str) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    compression = data[offset + size]
    if compression != 0:
        raise SavedModelError(f"{source}: compressed SSTable blocks (type {compression}) are not supported")
    return data[offset : offset + size]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Entries of one SSTable block: keys are prefix-compressed against the previous key."""
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_size, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_size]
        pos += value_size


def sstable_items(data: bytes, source: str = "sstable") -> Iterator[tuple[bytes, bytes]]:
    """All (key, value) pairs of a LevelDB-format table, in key order."""
    if len(data) < SSTABLE_FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != SSTABLE_MAGIC:
        raise SavedModelError(f"{source}: not an SSTable (bad magic number)")
    footer = data[-SSTABLE_FOOTER:]
    _, pos = _varint(footer, 0)  # metaindex handle: offset
    _, pos = _varint(footer, pos)  # metaindex handle: size
    index = _block(data, footer[pos:], source)
    for _, handle in _block_entries(index):
        yield from _block_entries(_block(data, handle, source))


class TensorBundle:
    """A TF checkpoint (``variables/variables``): tensor names -> numpy arrays, read on demand."""

    def __init__(self, files: SavedModelFiles, prefix: str = "variables/variables") -> None:
        self.files = files
        self.prefix = prefix
        index_name = f"{prefix}.index"
        entries = dict(sstable_items(files.read(index_name), f"{files.path}: {index_name}"))
        header = _proto("BundleHeaderProto").FromString(entries.pop(b"", b""))
        if header.endianness != 0:
            raise SavedModelError(f"{files.path}: big-endian checkpoints are not supported")
        self.num_shards = header.num_shards or 1
        self.entries = {k.decode("utf-8"): _proto("BundleEntryProto").FromString(v) for k, v in entries.items()}
        self._shards: dict[int, bytes] = {}

    def keys(self) -> list[str]:
        return sorted(self.entries)

    def read(self, key: str) -> np.ndarray:
        entry = self.entries.get(key)
        if entry is None:
            raise SavedModelError(f"{self.files.path}: checkpoint has no tensor {key!r}")
        if entry.slices:
            raise SavedModelError(f"{self.files.path}: {key} is a partitioned variable; not supported")
        shard = self._shard(entry.shard_id)
        raw = shard[entry.offset : entry.offset + entry.size]
        shape = tuple(d.size for d in entry.shape.dim)
        if entry.dtype == DT_STRING:
            return self._strings(raw, int(np.prod(shape)), key).reshape(shape)
        if entry.dtype not in NUMPY_DTYPES:
            raise SavedModelError(f"{self.files.path}: {key} has TF dtype {entry.dtype}; not supported")
        dtype = np.dtype(NUMPY_DTYPES[entry.dtype]).newbyteorder("<")
        if len(raw) != dtype.itemsize * int(np.prod(shape)):
            raise SavedModelError(f"{self.files.path}: {key} holds {len(raw)} bytes, not a {shape} {dtype} tensor")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def _shard(self, shard_id: int) -> bytes:
        if shard_id not in self._shards:
            name = f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}"
            self._shards[shard_id] = self.files.read(name)
        return self._shards[shard_id]

    @staticmethod
    def _strings(raw: bytes, count: int, key: str) -> np.ndarray:
        """String tensors: ``count`` varint lengths, a 4-byte checksum of them, then the bytes."""
        lengths, pos = [], 0
        for _ in range(count):
            length, pos = _varint(raw, pos)
            lengths.append(length)
        pos += 4 if count else 0
        values = []
        for length in lengths:
            values.append(raw[pos : pos + length].decode("utf-8", "replace"))
            pos += length
        return np.array(values, dtype=object)


# --- the autokeras NSFW detector ----------------------------------------------------------------------------------


def keras_config(files: SavedModelFiles) -> dict:
    """The root Keras model config (JSON in ``keras_metadata.pb``)."""
    metadata = _proto("SavedMetadata").FromString(files.read("keras_metadata.pb"))
    for node in metadata.nodes:
        if node.node_path == "root":
            return json.loads(node.metadata)["config"]
    raise SavedModelError(f"{files.path}: keras_metadata.pb has no root model")


def graph_nodes(files: SavedModelFiles) -> dict[str, object]:
    """Top-level nodes of the first meta graph in ``saved_model.pb``, by name."""
    saved_model = _proto("SavedModel").FromString(files.read("saved_model.pb"))
    if not saved_model.meta_graphs:
        raise SavedModelError(f"{files.path}: saved_model.pb has no meta graph")
    return {node.name: node for node in saved_model.meta_graphs[0].graph_def.node}


def _constant(node) -> np.ndarray | None:
    if node is None or node.op != "Const":
        return None
    for attr in node.attr:
        if attr.key == "value":
            return tensor_proto_to_numpy(attr.value.tensor)
    return None


def _serving_call(nodes: dict, source: Path):
    for node in nodes.values():
        if node.input and node.input[0].startswith("serving_default_"):
            return node
    raise SavedModelError(f"{source}: no serving_default signature call in saved_model.pb")


def read_nsfw_savedmodel(path: str | Path) -> dict:
    """Everything the NSFW detector needs from the SavedModel, as plain numpy arrays and lists.

    Returns ``{"embed_dim", "hidden", "categorical_columns", "vocabularies",
    "mean", "variance", "kernels", "biases", "count"}``.
    """
    files = SavedModelFiles(path)
    config = keras_config(files)
    layers = {layer["class_name"]: layer["config"] for layer in config["layers"]}
    embed_dim = int(layers["InputLayer"]["batch_input_shape"]["items"][1])
    encoding = layers.get("Custom>MultiCategoryEncoding", {}).get("encoding", [])
    categorical = [i for i, kind in enumerate(encoding) if kind != "none"]
    dense_units = [int(layer["config"]["units"]) for layer in config["layers"] if layer["class_name"] == "Dense"]

    nodes = graph_nodes(files)
    serving = _serving_call(nodes, files.path)
    # Lookup tables are created by one call and filled by another: init(table, keys, values).
    initialisers = {
        n.input[0]: (n.input[1], n.input[2])
        for n in nodes.values()
        if n.op == "StatefulPartitionedCall" and len(n.input) == 3 and _constant(nodes.get(n.input[1])) is not None
    }
    tables = [name for name in serving.input if name in initialisers]
    if len(tables) != len(categorical):
        raise SavedModelError(
            f"{files.path}: {len(categorical)} categorical columns in the Keras config "
            f"but {len(tables)} lookup tables in the serving graph"
        )
    vocabularies = []
    for column, table in zip(categorical, tables):
        keys_name, values_name = initialisers[table]
        keys, values = _constant(nodes[keys_name]), _constant(nodes[values_name])
        default = _constant(nodes.get(serving.input[list(serving.input).index(table) + 1]))
        if not np.array_equal(values, np.arange(1, len(keys) + 1)) or default is None or int(default) != 0:
            raise SavedModelError(f"{files.path}: lookup table of column {column} is not a 1-based vocabulary")
        vocabularies.append([str(k) for k in keys])
    statistics = [c for c in (_constant(nodes.get(name)) for name in serving.input) if c is not None and c.ndim == 2]
    if len(statistics) != 2:
        raise SavedModelError(f"{files.path}: expected the Normalization mean and variance as serving constants")

    bundle = TensorBundle(files)
    value = ".ATTRIBUTES/VARIABLE_VALUE"
    dense_layers = sorted(
        int(k.split("/")[0].split("-")[1]) for k in bundle.keys() if k.startswith("layer_with_weights-") and "/kernel/" in k
    )
    kernels = [bundle.read(f"layer_with_weights-{i}/kernel/{value}") for i in dense_layers]
    biases = [bundle.read(f"layer_with_weights-{i}/bias/{value}") for i in dense_layers]
    if [k.shape[1] for k in kernels] != dense_units or kernels[0].shape[0] != embed_dim:
        raise SavedModelError(
            f"{files.path}: checkpoint kernels {[k.shape for k in kernels]} do not match the Keras config {dense_units}"
        )
    return {
        "embed_dim": embed_dim,
        "hidden": dense_units[:-1],
        "categorical_columns": categorical,
        "vocabularies": vocabularies,
        "mean": statistics[0].reshape(-1).astype(np.float32),
        "variance": statistics[1].reshape(-1).astype(np.float32),
        "count": int(bundle.read(f"layer_with_weights-1/count/{value}")),
        "kernels": kernels,
        "biases": biases,
    }


def load_nsfw_savedmodel(path: str | Path) -> NsfwDetector:
    """LAION's autokeras NSFW detector (SavedModel dir or zip) as an :class:`NsfwDetector` in eval mode."""
    parts = read_nsfw_savedmodel(path)
    detector = NsfwDetector(parts["embed_dim"], parts["hidden"], parts["categorical_columns"], parts["vocabularies"])
    with torch.no_grad():
        detector.mean.copy_(torch.from_numpy(parts["mean"]))
        detector.variance.copy_(torch.from_numpy(parts["variance"]))
        for layer, kernel, bias in zip([*detector.dense, detector.output], parts["kernels"], parts["biases"]):
            layer.weight.copy_(torch.from_numpy(kernel.T.astype(np.float32)))
            layer.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return detector.eval()


def convert_nsfw_savedmodel(source: str | Path, destination: str | Path) -> NsfwDetector:
    """Write LAION's NSFW SavedModel as a safetensors head (:func:`laion_hf.models.heads.load_head` reads it)."""
    detector = load_nsfw_savedmodel(source)
    config = {
        "embed_dim": detector.embed_dim,
        "hidden": list(detector.hidden),
        "categorical_columns": detector.encoding.columns,
        "vocabularies": detector.encoding.vocabularies,
    }
    save_head(detector, config, destination)
    return detector


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m laion_hf.models.tf_savedmodel SAVEDMODEL(.zip|dir) OUTPUT.safetensors")
    convert_nsfw_savedmodel(sys.argv[1], sys.argv[2])
