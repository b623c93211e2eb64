"""Load published datasets into training, and LAION's own metadata repos into our readers.

Training: a repo config is streamed with ``load_dataset(..., streaming=True)``,
split across ranks with ``split_dataset_by_node`` and across DataLoader
workers by shard (so ``n_shards`` should be >= workers x ranks), decoded and
CLIP-preprocessed in the workers (a picklable collate), and wrapped in
torchdata's ``StatefulDataLoader`` so a checkpoint's ``state_dict()`` resumes
mid-epoch without repeating or skipping samples.

Metadata: LAION's repos spell columns differently (``URL``/``TEXT``/``WIDTH``
upper-case in the base releases, lower-case ``url``/``caption`` in Re-LAION).
:func:`iter_metadata` reads any of them, local or ``hf://``, into canonical
lower-case columns, optionally swapping the WIDTH/HEIGHT of the original
LAION-5B metadata.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import PIL.Image
import PIL.ImageOps
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.schema import canonical_names
from laion_hf.hub.errors import hub_http_errors

#: OpenAI CLIP normalisation (open_clip's OPENAI_DATASET_MEAN/STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image")
CAPTION_COLUMNS = ("txt", "caption", "text", "TEXT")


def stream(
    repo_id: str,
    config: str | None = None,
    *,
    split: str = "train",
    rank: int = 0,
    world_size: int = 1,
    revision: str | None = None,
    token: str | bool | None = None,
):
    """``load_dataset(repo_id, config, streaming=True)`` restricted to this rank's part."""
    import datasets
    from datasets.distributed import split_dataset_by_node

    with hub_http_errors(repo_id, token=token):
        dataset = datasets.load_dataset(repo_id, config, split=split, streaming=True, revision=revision, token=token)
    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    return dataset


def clip_preprocess(image_size: int = 224) -> Callable:
    """CLIP's evaluation transform (resize, center crop, RGB, normalise) from open_clip, no weights needed."""
    from laion_hf.models.torch_compat import import_torchvision

    import_torchvision()
    from open_clip.transform import image_transform

    return image_transform(image_size, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)


class ClipCollate:
    """Batch rows into ``{"pixel_values", "caption", "key"}``; runs in the DataLoader workers.

    Images arrive decoded (PIL) from ``datasets``' Image feature, or as
    ``{"bytes": ...}`` where a repo does not declare the feature. LAION shards
    mix formats, so each row's image is whichever of ``jpg``/``png``/``webp``...
    it holds (:func:`row_image`). A row without an image is an error, not a
    silent skip: a published repo holds successful samples only.
    """

    def __init__(self, preprocess: Callable, image_column: str | None = None, caption_column: str | None = None) -> None:
        self.preprocess = preprocess
        self.image_column = image_column
        self.caption_column = caption_column

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        caption_column = self.caption_column or _first_present(rows[0], CAPTION_COLUMNS, "caption")
        pixels = [self.preprocess(row_image(row, self.image_column).convert("RGB")) for row in rows]
        return {
            "pixel_values": torch.stack(pixels),
            "caption": [row[caption_column] for row in rows],
            "key": [row.get("__key__") or row.get("key") for row in rows],
        }


def row_image(row: dict[str, Any], image_column: str | None = None) -> PIL.Image.Image:
    """The row's image: ``image_column``, else the first of :data:`IMAGE_COLUMNS` that holds one.

    A WebDataset row has a column per extension seen in the repo (``jpg``,
    ``png``, ``webp``) and only its own is set. Undecoded bytes are opened and
    turned upright by their EXIF orientation, as ``datasets``' Image feature does.
    """
    names = [image_column] if image_column else [n for n in IMAGE_COLUMNS if n in row]
    if not names:
        raise KeyError(f"no image column among {list(row)} (expected one of {', '.join(IMAGE_COLUMNS)})")
    image = next((row[n] for n in names if row.get(n) is not None), None)
    if image is None:
        raise ValueError(f"sample {row.get('__key__') or row.get('key')} has no image (looked in {', '.join(names)})")
    if isinstance(image, dict):  # undecoded (a repo without pinned features, or decode=False)
        image = PIL.ImageOps.exif_transpose(PIL.Image.open(io.BytesIO(image["bytes"])))
    return image


def _first_present(row: dict, candidates: Sequence[str], what: str) -> str:
    for name in candidates:
        if name in row:
            return name
    raise KeyError(f"no {what} column among {list(row)} (expected one of {', '.join(candidates)})")


def training_loader(
    repo_id: str,
    config: str | None = None,
    *,
    batch_size: int = 32,
    num_workers: int = 2,
    rank: int = 0,
    world_size: int = 1,
    image_size: int = 224,
    preprocess: Callable | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    split: str = "train",
    revision: str | None = None,
    token: str | bool | None = None,
):
    """A resumable DataLoader over this rank's part of a repo config, yielding CLIP-ready batches.

    Save ``loader.state_dict()`` with the checkpoint; a new loader built the
    same way and given ``loader.load_state_dict(state)`` continues where it stopped.
    """
    from torchdata.stateful_dataloader import StatefulDataLoader

    dataset = stream(repo_id, config, split=split, rank=rank, world_size=world_size, revision=revision, token=token)
    if num_workers > dataset.num_shards:
        raise ValueError(
            f"{repo_id} [{config}]: {dataset.num_shards} shard(s) for this rank cannot feed {num_workers} workers; "
            "publish more shards (smaller target_shard_bytes) or use fewer workers"
        )
    collate = ClipCollate(preprocess or clip_preprocess(image_size), image_column, caption_column)
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=False,
    )


def webdataset_urls(repo_id: str, config: str, *, split: str = "train", revision: str = "main", endpoint: str | None = None) -> list[str]:
    """HTTP URLs of a WebDataset config's shards, for the ``webdataset`` library (which streams them with curl)."""
    from huggingface_hub import HfApi, hf_hub_url

    api = HfApi(endpoint=endpoint)
    with hub_http_errors(repo_id, api.endpoint):
        listed = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
    files = sorted(f for f in listed if f.startswith(f"{config}/{split}-") and f.endswith(".tar"))
    return [hf_hub_url(repo_id, f, repo_type="dataset", revision=revision, endpoint=api.endpoint) for f in files]


def laion_metadata_files(repo_id: str, *, revision: str | None = None, token: str | bool | None = None, pattern: str = "**/*.parquet") -> list[str]:
    """``hf://`` paths of the parquet files of a (LAION) metadata repo, sorted."""
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem(token=token)
    root = f"datasets/{repo_id}" + (f"@{revision}" if revision else "")
    with hub_http_errors(repo_id, token=token):
        return sorted(f"hf://{path}" for path in fs.glob(f"{root}/{pattern}"))


def iter_metadata(
    paths: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    swap_width_height: bool = False,
    batch_size: int = 65536,
) -> Iterator[pa.RecordBatch]:
    """Stream LAION metadata parquet (local or ``hf://``) as batches with canonical column names.

    ``columns`` are canonical names (``url``, ``caption``, ``width``...; see
    :func:`laion_hf.core.schema.canonical_names`, which keeps both pairs of a download
    saved with LAION's ``WIDTH``/``HEIGHT`` beside its own); ``swap_width_height``
    exchanges LAION's width and height, as LAION's own join scripts do for the
    original LAION-5B metadata.
    """
    import fsspec

    for path in paths:
        with hub_http_errors(path), fsspec.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            renames = canonical_names(parquet.schema_arrow.names, swap_width_height)
            wanted = None
            if columns is not None:
                by_canonical = {canonical: actual for actual, canonical in renames.items()}
                missing = [c for c in columns if c not in by_canonical]
                if missing:
                    from laion_hf.core.schema import SchemaError

                    raise SchemaError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(parquet.schema_arrow.names)})")
                wanted = [by_canonical[c] for c in columns]
            for batch in parquet.iter_batches(batch_size=batch_size, columns=wanted):
                yield pa.RecordBatch.from_arrays(batch.columns, names=[renames[n] for n in batch.schema.names])
