"""LAION's scoring heads as torch modules: ``punsafe``, ``aesthetic`` and ``pwatermark``.

Each class reproduces the published architecture exactly (layer sizes,
activations and, for the NSFW detector, autokeras's preprocessing quirk) so
that LAION's checkpoints load into it unchanged, and takes its widths as
parameters so the tiny heads of the synthetic domain are the same classes at
a smaller size:

- :class:`NsfwDetector`: CLIP-based NSFW detector (LAION-AI/CLIP-based-NSFW-Detector).
  L/14: 768 -> 64 -> 512 -> 256 -> 1; B/32: 512 -> 32 -> 32 -> 1; ReLU, sigmoid,
  after autokeras's ``MultiCategoryEncoding`` and Keras ``Normalization``.
- :class:`AestheticV1`: ``Linear(768, 1)`` (LAION-AI/aesthetic-predictor).
- :class:`AestheticV2`: the MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 of
  christophschuhmann/improved-aesthetic-predictor (no activations, dropouts as published).
- :class:`WatermarkDetector`: timm ``efficientnet_b3a`` with a 1536 -> 625 -> 256 -> 2
  head on 256x256 images (LAION-AI/LAION-5B-WatermarkDetection); ``pwatermark = softmax(out)[:, 0]``.

The embedding heads take L2-normalised CLIP image embeddings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from laion_hf.models.checkpoints import ModelLoadError, read_tensors, reading

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), the floor of Normalization's std

NSFW_L14 = {"embed_dim": 768, "hidden": (64, 512, 256)}
NSFW_B32 = {"embed_dim": 512, "hidden": (32, 32)}
AESTHETIC_V2_WIDTHS = (1024, 128, 64, 16)
WATERMARK_HIDDEN = (625, 256)
WATERMARK_IMAGE_SIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CategoricalColumns(nn.Module):
    """autokeras ``MultiCategoryEncoding``: a few embedding columns replaced by vocabulary indices.

    autokeras treated the embedding as a table whose columns it typed during
    its search; columns it judged categorical go through ``tf.strings.as_string``
    (``"%f"`` of the float32 value) and a ``StringLookup`` whose i-th entry maps
    to i (1-based) and anything else to 0. Every other column passes through
    with NaN replaced by 0. The lookup is on strings, so it runs on the CPU in
    Python; it touches only ``len(columns)`` values per row.
    """

    def __init__(self, columns: Sequence[int] = (), vocabularies: Sequence[Sequence[str]] = ()) -> None:
        super().__init__()
        if len(columns) != len(vocabularies):
            raise ValueError(f"{len(columns)} categorical columns but {len(vocabularies)} vocabularies")
        self.columns = [int(c) for c in columns]
        self.vocabularies = [list(v) for v in vocabularies]
        self._index = [{token: i + 1 for i, token in enumerate(v)} for v in self.vocabularies]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nan_to_num(x.float(), nan=0.0)
        if not self.columns:
            return x
        x = x.clone()
        values = x[:, self.columns].detach().cpu().numpy().astype(np.float32)
        for j, (column, index) in enumerate(zip(self.columns, self._index)):
            codes = [index.get("%f" % v, 0) for v in values[:, j].tolist()]
            x[:, column] = torch.tensor(codes, dtype=x.dtype, device=x.device)
        return x

    def extra_repr(self) -> str:
        sizes = [len(v) for v in self.vocabularies]
        return f"columns={self.columns}, vocabulary_sizes={sizes}"


class NsfwDetector(nn.Module):
    """CLIP-embedding NSFW MLP: encode -> normalise -> (Dense, ReLU)* -> Dense(1) -> sigmoid.

    ``mean``/``variance`` are the Keras ``Normalization`` statistics (identity
    by default); ``forward`` returns ``punsafe`` in [0, 1] with shape ``[N]``.
    """

    def __init__(
        self,
        embed_dim: int = 768,
        hidden: Sequence[int] = (64, 512, 256),
        categorical_columns: Sequence[int] = (),
        vocabularies: Sequence[Sequence[str]] = (),
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.hidden = tuple(hidden)
        self.encoding = CategoricalColumns(categorical_columns, vocabularies)
        self.register_buffer("mean", torch.zeros(embed_dim))
        self.register_buffer("variance", torch.ones(embed_dim))
        widths = (embed_dim, *self.hidden)
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = nn.Linear(widths[-1], 1)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = self.encoding(embeddings)
        x = (x - self.mean) / torch.clamp(torch.sqrt(self.variance), min=KERAS_EPSILON)
        for layer in self.dense:
            x = torch.relu(layer(x))
        return self.output(x).squeeze(-1)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(embeddings))


class AestheticV1(nn.Linear):
    """LAION aesthetic predictor v1: one linear layer on the normalised embedding (state-dict keys ``weight``, ``bias``)."""

    def __init__(self, embed_dim: int = 768) -> None:
        super().__init__(embed_dim, 1)

    @property
    def embed_dim(self) -> int:
        return self.in_features

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return super().forward(embeddings.float()).squeeze(-1)


class AestheticV2(nn.Module):
    """LAION improved aesthetic predictor: a purely linear stack with dropouts, as published.

    The ``layers`` indices (0, 2, 4, 6, 7 hold weights) match the published
    ``sac+logos+ava1-l14-linearMSE.pth`` state dict.
    """

    def __init__(self, embed_dim: int = 768, widths: Sequence[int] = AESTHETIC_V2_WIDTHS) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.embed_dim = embed_dim
        self.widths = tuple(widths)
        self.layers = nn.Sequential(
            nn.Linear(embed_dim, w1),
            nn.Dropout(0.2),
            nn.Linear(w1, w2),
            nn.Dropout(0.2),
            nn.Linear(w2, w3),
            nn.Dropout(0.1),
            nn.Linear(w3, w4),
            nn.Linear(w4, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings.float()).squeeze(-1)


def watermark_classifier(in_features: int, hidden: Sequence[int] = WATERMARK_HIDDEN) -> nn.Sequential:
    """LAION's watermark head (Linear, ReLU, Dropout(0.3), Linear, ReLU, Linear -> 2); indices 0, 3, 5 hold weights."""
    h1, h2 = hidden
    return nn.Sequential(
        nn.Linear(in_features, h1),
        nn.ReLU(),
        nn.Dropout(p=0.3),
        nn.Linear(h1, h2),
        nn.ReLU(),
        nn.Linear(h2, 2),
    )


class WatermarkDetector(nn.Module):
    """A timm backbone whose ``classifier`` is LAION's watermark head; image batch -> 2 logits.

    ``self.model`` carries exactly the published state-dict keys
    (``conv_stem.*``, ..., ``classifier.{0,3,5}.*``). ``backbone`` is any timm
    model name with a ``classifier`` attribute; the tiny domain uses a small one.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_b3a",
        hidden: Sequence[int] = WATERMARK_HIDDEN,
        image_size: int = WATERMARK_IMAGE_SIZE,
        **backbone_kwargs,
    ) -> None:
        super().__init__()
        from laion_hf.models.torch_compat import import_torchvision

        import_torchvision()
        import timm

        self.backbone = backbone
        self.hidden = tuple(hidden)
        self.image_size = image_size
        self.model = timm.create_model(backbone, pretrained=False, num_classes=2, **backbone_kwargs)
        self.model.classifier = watermark_classifier(self.model.get_classifier().in_features, hidden)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)

    def pwatermark(self, pixels: torch.Tensor) -> torch.Tensor:
        """Probability of a watermark: softmax over the 2 logits, class 0 (LAION's convention)."""
        return torch.softmax(self.forward(pixels), dim=-1)[:, 0]

    def preprocess(self, images: Sequence) -> torch.Tensor:
        return watermark_pixels(images, self.image_size)


def watermark_pixels(images: Sequence, size: int = WATERMARK_IMAGE_SIZE) -> torch.Tensor:
    """PIL images -> the batch LAION fed the watermark model: RGB, resized square, ImageNet mean/std."""
    from PIL import Image

    # torchvision's Resize on a PIL image is PIL's bilinear resize; PIL's own default is bicubic.
    arrays = [
        np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0 for im in images
    ]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


# --- checkpoints ---------------------------------------------------------------------------------------------------


class CheckpointError(ModelLoadError):
    """A head checkpoint that is missing, unreadable or not of the expected layout."""


#: LAION's published head checkpoints, by (kind, CLIP architecture whose embeddings they read), under the
#: file names their repositories publish them with.
PUBLISHED = {
    ("nsfw", "ViT-L-14"): ("clip_autokeras_binary_nsfw.zip", "github.com/LAION-AI/CLIP-based-NSFW-Detector"),
    ("nsfw", "ViT-B-32"): ("clip_autokeras_nsfw_b32.zip", "github.com/LAION-AI/CLIP-based-NSFW-Detector"),
    ("aesthetic", "ViT-L-14"): (
        "sac+logos+ava1-l14-linearMSE.pth", "github.com/christophschuhmann/improved-aesthetic-predictor"),
    ("aesthetic", "ViT-B-32"): ("sa_0_4_vit_b_32_linear.pth", "github.com/LAION-AI/aesthetic-predictor"),
    ("watermark", None): ("watermark_model_v1.pt", "github.com/LAION-AI/LAION-5B-WatermarkDetection"),
}
MODELS_DIR_ENV = "LAION_HF_MODELS"


def default_models_dir() -> Path:
    """Where LAION's published heads are looked for: ``$LAION_HF_MODELS``, else ``~/.cache/laion_hf/models``."""
    return Path(os.environ.get(MODELS_DIR_ENV) or "~/.cache/laion_hf/models").expanduser()


def published_checkpoint(kind: str, clip_family: str, models_dir: str | Path | None = None) -> Path:
    """LAION's published ``kind`` head for ``clip_family`` embeddings, under its published name in ``models_dir``.

    An NSFW detector may also be the unzipped SavedModel folder (the zip's name without ``.zip``).
    """
    folder = Path(models_dir).expanduser() if models_dir else default_models_dir()
    key = (kind, None if kind == "watermark" else clip_family)
    if key not in PUBLISHED:
        families = sorted(family for k, family in PUBLISHED if k == kind)
        raise CheckpointError(
            f"LAION published no {kind} head for {clip_family} embeddings (only for {', '.join(families)}); "
            f"name a checkpoint file, or 'tiny' for the shipped heads of the synthetic demo domain"
        )
    filename, source = PUBLISHED[key]
    candidates = [folder / filename] + ([folder / filename.removesuffix(".zip")] if filename.endswith(".zip") else [])
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise CheckpointError(
        f"{folder / filename}: LAION's {kind} checkpoint is not on this machine. Download {filename} from "
        f"{source} into {folder} (or set {MODELS_DIR_ENV}, or pass --models-dir DIR), or name the file "
        f"(--{kind} PATH), or skip the column (--{kind} none); for the synthetic demo domain: "
        "--nsfw tiny --watermark tiny --aesthetic tiny --clip laion-hf-tiny"
    )


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: does not match {type(module).__name__} ({first})") from None


def _required(state: dict[str, torch.Tensor], key: str, path: str | Path) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{path}: no {key!r} in the state dict")
    return state[key]


def load_aesthetic_v1(path: str | Path) -> AestheticV1:
    """LAION aesthetic predictor v1 (e.g. ``sa_0_4_vit_l_14_linear.pth``: keys ``weight`` [1, D], ``bias`` [1])."""
    state = read_tensors(path, "torch state dict")
    head = AestheticV1(_required(state, "weight", path).shape[1])
    _load_into(head, state, path)
    return head.eval()


def load_aesthetic_v2(path: str | Path) -> AestheticV2:
    """LAION improved aesthetic predictor (e.g. ``sac+logos+ava1-l14-linearMSE.pth``: ``layers.{0,2,4,6,7}.*``)."""
    state = read_tensors(path, "torch state dict")
    widths = tuple(_required(state, f"layers.{i}.weight", path).shape[0] for i in (0, 2, 4, 6))
    head = AestheticV2(state["layers.0.weight"].shape[1], widths)
    _load_into(head, state, path)
    return head.eval()


def load_watermark(path: str | Path, backbone: str = "efficientnet_b3a", image_size: int = WATERMARK_IMAGE_SIZE):
    """LAION's watermark model (e.g. ``watermark_model_v1.pt``: the timm model's state dict with the custom head)."""
    state = read_tensors(path, "torch state dict")
    hidden = tuple(_required(state, f"classifier.{i}.weight", path).shape[0] for i in (0, 3))
    detector = WatermarkDetector(backbone, hidden, image_size)
    _load_into(detector.model, state, path)
    return detector.eval()


HEAD_KINDS = {"nsfw": NsfwDetector, "aesthetic_v1": AestheticV1, "aesthetic_v2": AestheticV2, "watermark": WatermarkDetector}


def save_head(head: nn.Module, config: dict, path: str | Path) -> None:
    """Write a head as safetensors with its constructor arguments in the metadata (how the tiny heads ship)."""
    from safetensors.torch import save_file

    kind = next(k for k, cls in HEAD_KINDS.items() if type(head) is cls)
    tensors = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(path), metadata={"kind": kind, "config": json.dumps(config)})


def load_head(path: str | Path) -> nn.Module:
    """A head written by :func:`save_head`, in eval mode."""
    from safetensors import safe_open

    with reading(path, "laion-hf head checkpoint (safetensors with kind and config metadata)"):
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        kind, config = metadata["kind"], json.loads(metadata["config"])
        head = HEAD_KINDS[kind](**config)
    _load_into(head, read_tensors(path, "laion-hf head checkpoint"), path)
    return head.eval()
