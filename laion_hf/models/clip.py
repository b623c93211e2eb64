"""One factory for every CLIP the stages use: the shipped tiny model or real checkpoints.

``load_clip(name)`` returns the model, its image preprocessing, its tokenizer,
the multilingual text encoder that goes with it, and the sha256 of every
weights file it read (for the dataset card). Names:

- ``laion-hf-tiny``: the tiny open_clip model this project trains
  (``laion_hf/models/train_tiny.py``) and ships with its multilingual student;
  always offline.
- any open_clip architecture with ``pretrained=`` a tag (``ViT-B-32`` +
  ``openai``, ``ViT-L-14`` + ``openai``; downloaded into open_clip's cache
  when online) or a local checkpoint file; ``pretrained=None`` gives random
  weights (benchmarks).
- ``hf-hub:org/repo`` and ``local-dir:/path`` as open_clip understands them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from laion_hf.errors import UserError
from laion_hf.torch_compat import import_torchvision

TINY = "laion-hf-tiny"
PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
WEIGHTS_DIR = PACKAGE_DIR / "weights"
TINY_WEIGHTS = WEIGHTS_DIR / f"{TINY}.safetensors"
TINY_MULTILINGUAL = WEIGHTS_DIR / f"{TINY}-multilingual"
TINY_QUALITY = WEIGHTS_DIR / f"{TINY}.quality.json"


class ModelLoadError(UserError):
    """A model name, tag or checkpoint path that cannot be loaded."""


@dataclass
class ClipModel:
    """A CLIP ready for inference, with everything a stage needs around it."""

    name: str
    model: torch.nn.Module
    preprocess: Callable  # PIL image -> CHW float tensor
    tokenizer: Callable  # list[str] -> LongTensor of token ids
    multilingual: torch.nn.Module | None = None
    checksums: dict[str, str] = field(default_factory=dict)  # weights file -> sha256

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (float32) for a preprocessed batch."""
        return normalise(self.model.encode_image(pixels))

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised embeddings of English texts by the CLIP text tower."""
        device = next(self.model.parameters()).device
        return normalise(self.model.encode_text(self.tokenizer(texts).to(device)))

    @torch.no_grad()
    def encode_multilingual(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised embeddings of texts in any language by the multilingual student."""
        if self.multilingual is None:
            raise ModelLoadError(f"{self.name}: no multilingual text encoder loaded (pass multilingual=...)")
        return normalise(self.multilingual.encode(texts))


def normalise(x: torch.Tensor) -> torch.Tensor:
    """L2-normalised float32 rows (cosine similarity is then a dot product)."""
    return torch.nn.functional.normalize(x.float(), dim=-1)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _sha256_tree(folder: Path) -> dict[str, str]:
    """Checksums of the weight files in a checkpoint folder (the student's transformer and Dense)."""
    return {
        str(p): sha256_file(p) for p in sorted(folder.rglob("*")) if p.suffix in (".safetensors", ".bin", ".pt")
    }


def register_tiny_config() -> None:
    """Make ``laion-hf-tiny`` an open_clip model name (idempotent)."""
    import_torchvision()
    import open_clip

    if TINY not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def _resolve_pretrained(model_name: str, pretrained: str | None, cache_dir: str | None) -> str | None:
    """A local weights file for ``pretrained`` (a path, or an open_clip tag fetched into the cache)."""
    if pretrained is None or Path(pretrained).is_file():
        return pretrained
    import open_clip
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = ", ".join(t for m, t in open_clip.list_pretrained() if m == model_name) or "none"
        raise ModelLoadError(f"{model_name}: unknown pretrained {pretrained!r} (not a file; known tags: {tags})")
    return download_pretrained(cfg, cache_dir=cache_dir)


def load_clip(
    name: str = TINY,
    *,
    pretrained: str | None = None,
    multilingual: str | bool | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    cache_dir: str | None = None,
) -> ClipModel:
    """Load a CLIP by name or path; see the module docstring for what ``name`` may be.

    ``multilingual``: a sentence-transformers folder or Hub id for non-English
    text; True for the default that goes with ``name`` (the shipped student
    for the tiny model, clip-ViT-B-32-multilingual-v1 for ViT-B-32); None or
    False for none.
    """
    import_torchvision()
    import open_clip

    register_tiny_config()
    checksums: dict[str, str] = {}
    if name == TINY:
        if pretrained is None and not TINY_WEIGHTS.exists():
            raise ModelLoadError(f"{TINY_WEIGHTS}: tiny model weights missing; run python -m laion_hf.models.train_tiny")
        pretrained = pretrained or str(TINY_WEIGHTS)
        if multilingual is True:
            multilingual = str(TINY_MULTILINGUAL)
    elif multilingual is True:
        from laion_hf.models.multilingual import REAL_MULTILINGUAL

        multilingual = REAL_MULTILINGUAL
    if not name.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
        raise ModelLoadError(f"unknown CLIP model {name!r}; open_clip knows e.g. ViT-B-32, ViT-L-14, {TINY}")
    weights = _resolve_pretrained(name, pretrained, cache_dir)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=weights, device=device, precision=precision, cache_dir=cache_dir
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"{weights or name}: cannot load CLIP weights: {exc}") from exc
    if weights:
        checksums[weights] = sha256_file(weights)
    encoder = None
    if multilingual:
        from laion_hf.models.multilingual import MultilingualTextEncoder

        encoder = MultilingualTextEncoder.from_pretrained(multilingual).to(device)
        folder = Path(multilingual)
        if folder.is_dir():
            checksums.update(_sha256_tree(folder))
    model.eval()
    return ClipModel(
        name=name,
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(name, cache_dir=cache_dir),
        multilingual=encoder,
        checksums=checksums,
    )


def tiny_thresholds() -> dict[str, float]:
    """The similarity thresholds calibrated for the tiny model on its held-out split (see docs/models.md)."""
    quality = json.loads(TINY_QUALITY.read_text(encoding="utf-8"))
    return {"threshold": quality["threshold"], "multilingual_threshold": quality["multilingual_threshold"]}
