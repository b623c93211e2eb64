"""One factory for every CLIP the stages use: the shipped tiny model or real checkpoints.

``load_clip(name, pretrained=...)`` returns the model, its image preprocessing,
its tokenizer, the multilingual text encoder that goes with it, and the sha256
of every weights file it read (for the dataset card). What it builds is exactly
what open_clip builds for the same request:

- an open_clip pretrained *tag* (``ViT-B-32`` + ``openai``) is passed to open_clip
  as a tag, so the tag's preprocessing (mean/std, interpolation, resize mode)
  comes with it; OpenAI's weights were trained with QuickGELU, which the tag
  records, so ``ViT-B-32`` + ``openai`` builds ``ViT-B-32-quickgelu`` (the model
  LAION ran). Tags are read from open_clip's caches (the Hugging Face cache, or
  OpenAI's ``ViT-B-32.pt`` in ``~/.cache/clip``); when they are not there and
  the machine is offline, a :class:`WeightsUnavailableError` says how to supply them;
- a local file: a state dict (``.pt``/``.bin``/``.safetensors``) loaded by
  ``open_clip.load_checkpoint`` into the named architecture, or OpenAI's original
  TorchScript archive (``ViT-B-32.pt``), which open_clip reads through
  ``torch.jit.load`` and which always means QuickGELU;
- ``laion-hf-tiny``: the tiny open_clip model this project trains
  (``laion_hf/testing/train_tiny.py``) and ships with its multilingual student;
- ``hf-hub:org/repo`` and ``local-dir:/path`` as open_clip understands them;
- ``pretrained="default"`` (the default): the shipped weights for the tiny
  model, OpenAI's for the architectures OpenAI released; ``pretrained=None``
  gives random weights (benchmarks), as in open_clip.

Who published the weights (:attr:`Weights.origin`: ``openai`` for the tag or for
OpenAI's own file, recognised by the sha256 in its download URL; ``laion-hf`` for
the shipped tiny weights) is what decides which similarity thresholds apply.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from laion_hf.models.checkpoints import ModelLoadError, hub_offline, is_torchscript, reading, sha256_file
from laion_hf.models.torch_compat import import_torchvision

__all__ = ["ModelLoadError", "WeightsUnavailableError", "sha256_file"]  # re-exported for the stages and tests

TINY = "laion-hf-tiny"
OPENAI = "openai"
QUICKGELU = "-quickgelu"
SHIPPED = "laion-hf"  # origin of the shipped tiny weights
DEFAULT_WEIGHTS = "default"  # pretrained= value: the weights the model name means (see default_pretrained)
PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
WEIGHTS_DIR = PACKAGE_DIR / "weights"
TINY_WEIGHTS = WEIGHTS_DIR / f"{TINY}.safetensors"
TINY_MULTILINGUAL = WEIGHTS_DIR / f"{TINY}-multilingual"
TINY_QUALITY = WEIGHTS_DIR / f"{TINY}.quality.json"
OPENAI_URL_CACHE = Path("~/.cache/clip")  # where OpenAI's clip package and open_clip's URL downloads keep ViT-B-32.pt


class WeightsUnavailableError(ModelLoadError):
    """A pretrained tag whose weights are not on this machine and cannot be downloaded now."""


@dataclass(frozen=True)
class Weights:
    """Which weights a CLIP will be built from, decided before anything is loaded.

    ``arch`` is the open_clip config that is built (the ``-quickgelu`` variant when
    the weights need it); ``tag`` is passed to open_clip as a tag; ``file`` is the
    local file read (None for random weights, a download still to come, or a
    ``hf-hub:``/``local-dir:`` name); ``origin`` names the publisher when known.
    """

    arch: str
    tag: str | None = None
    file: str | None = None
    origin: str | None = None
    quick_gelu: bool = False
    torchscript: bool = False
    preprocess: dict | None = None  # a tag's image_mean/std/interpolation/resize_mode, when its file is read as a file

    @property
    def family(self) -> str:
        """The architecture without the activation variant (``ViT-B-32`` for ``ViT-B-32-quickgelu``)."""
        return self.arch.removesuffix(QUICKGELU)

    def describe(self) -> str:
        source = self.tag or self.file or ("random weights" if self.origin is None else self.origin)
        return f"{self.arch} ({source})"


@dataclass
class ClipModel:
    """A CLIP ready for inference, with everything a stage needs around it."""

    name: str
    model: torch.nn.Module
    preprocess: Callable  # PIL image -> CHW float tensor
    tokenizer: Callable  # list[str] -> LongTensor of token ids
    multilingual: torch.nn.Module | None = None
    checksums: dict[str, str] = field(default_factory=dict)  # weights file -> sha256
    weights: Weights | None = None

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


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a weights file, computed once per process per (path, size, mtime)."""
    stat = os.stat(path)
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


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


def _with_quickgelu(name: str) -> str:
    import open_clip

    variant = name + QUICKGELU
    return variant if not name.endswith(QUICKGELU) and variant in open_clip.list_models() else name


def _published_origin(digest: str, name: str) -> str | None:
    """``openai`` when the file is OpenAI's released checkpoint for ``name`` (sha256 in its URL), ``laion-hf``
    when it is the shipped tiny model, else None."""
    from open_clip.pretrained import get_pretrained_cfg

    url = get_pretrained_cfg(name.removesuffix(QUICKGELU), OPENAI).get("url", "")
    if "openaipublic" in url and url.split("/")[-2] == digest:
        return OPENAI
    if name == TINY and TINY_WEIGHTS.exists() and file_sha256(TINY_WEIGHTS) == digest:
        return SHIPPED
    return None


def _hub_files(cfg: dict) -> tuple[str, list[str]]:
    """The Hub repo of a pretrained config and the file names open_clip tries there, in its order."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(cfg["hf_hub"])
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        return repo, [HF_SAFE_WEIGHTS_NAME, filename]
    if filename.endswith((".bin", ".pth")):
        return repo, [filename[:-4] + ".safetensors", filename]
    return repo, [filename]


def _cached_tag_file(cfg: dict, cache_dir: str | None) -> tuple[str | None, str | None]:
    """(file in the Hugging Face cache, file in the URL cache) for a pretrained config, without any network."""
    hub_file = url_file = None
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, names = _hub_files(cfg)
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(found, str):
                hub_file = found
                break
    url = cfg.get("url", "")
    if url:
        candidate = Path(cache_dir or OPENAI_URL_CACHE.expanduser()) / os.path.basename(url)
        expected = url.split("/")[-2] if "openaipublic" in url else None
        if candidate.is_file() and (expected is None or file_sha256(candidate) == expected):
            url_file = str(candidate)
    return hub_file, url_file


def _unavailable(arch: str, tag: str, cfg: dict, cache_dir: str | None, reason: str) -> WeightsUnavailableError:
    from huggingface_hub import constants

    places = []
    if cfg.get("hf_hub"):
        places.append(f"{cfg['hf_hub'].rstrip('/')} in the Hugging Face cache {cache_dir or constants.HF_HUB_CACHE}")
    if cfg.get("url"):
        places.append(f"{os.path.basename(cfg['url'])} in {cache_dir or OPENAI_URL_CACHE.expanduser()}")
    return WeightsUnavailableError(
        f"{arch}: open_clip's {tag!r} weights are not available ({reason}; looked for {' and '.join(places)}). "
        "Supply them as a local file (laion-hf filter --pretrained FILE, laion-hf score --clip-pretrained FILE: "
        "OpenAI's ViT-B-32.pt or an open_clip checkpoint), or a cache folder holding them (--cache-dir DIR), "
        f"or run once online; for the synthetic demo domain use the shipped model ({TINY})"
    )


def _hub_reachable(repo: str) -> str | None:
    """None when the Hub answers for ``repo``, else why not (one quick request, no retries)."""
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(repo, timeout=10)
    except Exception as exc:  # DNS failure, proxy, gated or unknown repo: all mean "cannot download now"
        return f"the Hub did not answer for {repo} ({type(exc).__name__})"
    return None


def resolve_weights(name: str, pretrained: str | None, cache_dir: str | None = None) -> Weights:
    """Decide which architecture and weights ``name`` + ``pretrained`` mean, before anything is loaded.

    Reads local files only, except for a tag that is in no cache while the Hub is not
    switched off (``HF_HUB_OFFLINE``): then one quick request says whether open_clip can download it.
    """
    import_torchvision()
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    register_tiny_config()
    if name.startswith(("hf-hub:", "local-dir:")):
        return Weights(name)
    if name not in open_clip.list_models():
        raise ModelLoadError(f"unknown CLIP model {name!r}; open_clip knows e.g. ViT-B-32-quickgelu, ViT-L-14, {TINY}")
    if pretrained == DEFAULT_WEIGHTS:
        pretrained = default_pretrained(name)
    if pretrained is None:
        return Weights(name)
    path = Path(pretrained).expanduser()
    if path.is_file():
        torchscript = is_torchscript(path)
        origin = _published_origin(file_sha256(path), name)
        quick_gelu = torchscript or origin == OPENAI  # OpenAI's archives hold QuickGELU models
        arch = _with_quickgelu(name) if quick_gelu else name
        return Weights(arch, file=str(path.absolute()), origin=origin, quick_gelu=quick_gelu, torchscript=torchscript)
    cfg = get_pretrained_cfg(name, pretrained)
    if not cfg:
        tags = ", ".join(t for m, t in open_clip.list_pretrained() if m == name) or "none"
        raise ModelLoadError(f"{name}: unknown pretrained {pretrained!r} (not a file; known tags: {tags})")
    quick_gelu = bool(cfg.get("quick_gelu"))
    arch = _with_quickgelu(name) if quick_gelu else name
    hub_file, url_file = _cached_tag_file(cfg, cache_dir)
    if hub_file:
        return Weights(arch, tag=pretrained, file=hub_file, origin=pretrained, quick_gelu=quick_gelu)
    if url_file:  # OpenAI's own archive, as its clip package caches it: the tag's file, read as a file
        preprocess = {f"image_{key}": cfg[key] for key in ("mean", "std", "interpolation", "resize_mode") if key in cfg}
        return Weights(arch, file=url_file, origin=pretrained, quick_gelu=quick_gelu,
                       torchscript=is_torchscript(url_file), preprocess=preprocess)
    if hub_offline():
        raise _unavailable(arch, pretrained, cfg, cache_dir, "HF_HUB_OFFLINE is set")
    reason = _hub_reachable(_hub_files(cfg)[0]) if cfg.get("hf_hub") else None
    if reason:
        raise _unavailable(arch, pretrained, cfg, cache_dir, reason)
    return Weights(arch, tag=pretrained, origin=pretrained, quick_gelu=quick_gelu)  # open_clip downloads it


def default_pretrained(name: str) -> str:
    """The weights a model name means when none are named: the shipped ones for the tiny model,
    OpenAI's for the architectures OpenAI released (the models LAION ran); other names must say."""
    from open_clip.pretrained import get_pretrained_cfg

    if name == TINY:
        if not TINY_WEIGHTS.exists():
            raise ModelLoadError(f"{TINY_WEIGHTS}: tiny model weights missing; run python -m laion_hf.testing.train_tiny")
        return str(TINY_WEIGHTS)
    if get_pretrained_cfg(name, OPENAI):
        return OPENAI
    raise ModelLoadError(f"{name}: no default weights (OpenAI released none for it); name a pretrained tag or file")


def _build(weights: Weights, device: str, precision: str, cache_dir: str | None):
    """The open_clip model and its inference transform for ``weights``, loaded by open_clip itself.

    A TorchScript archive is read through ``torch.jit.load`` inside open_clip
    (its path for OpenAI's files), any other file as tensors only; the load is
    strict, so a checkpoint of another architecture is refused.
    """
    import open_clip

    reads = weights.tag or weights.file or weights.arch.startswith(("hf-hub:", "local-dir:"))
    source = weights.file or (f"{weights.arch} {weights.tag!r}" if weights.tag else weights.arch)
    with reading(source, f"{weights.arch} checkpoint") if reads else nullcontext():
        model, _, preprocess = open_clip.create_model_and_transforms(
            weights.arch,
            pretrained=weights.tag or weights.file,
            weights_only=not weights.torchscript,
            force_quick_gelu=weights.quick_gelu,
            device=device,
            precision=precision,
            cache_dir=cache_dir,
            **(weights.preprocess or {}),
        )
    return model, preprocess


def load_clip(
    name: str,
    *,
    pretrained: str | None = DEFAULT_WEIGHTS,
    multilingual: str | bool | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    cache_dir: str | None = None,
) -> ClipModel:
    """Load a CLIP by name and weights; see the module docstring for what they may be.

    ``multilingual``: a sentence-transformers folder or Hub id for non-English
    text; True for the default that goes with ``name`` (the shipped student
    for the tiny model, clip-ViT-B-32-multilingual-v1 otherwise); None or
    False for none.
    """
    import_torchvision()
    import open_clip

    if name == TINY and multilingual is True:
        multilingual = str(TINY_MULTILINGUAL)
    elif multilingual is True:
        from laion_hf.models.multilingual import REAL_MULTILINGUAL

        multilingual = REAL_MULTILINGUAL
    weights = resolve_weights(name, pretrained, cache_dir)
    text_folder = None
    if multilingual:  # found (or refused) before the CLIP is built
        from laion_hf.models.multilingual import multilingual_folder

        text_folder = multilingual_folder(multilingual)
    model, preprocess = _build(weights, device, precision, cache_dir)
    if weights.tag is not None and weights.file is None:  # downloaded just now: find the file for the card
        weights = resolve_weights(name, pretrained, cache_dir)
    checksums = {weights.file: file_sha256(weights.file)} if weights.file else {}
    encoder = None
    if text_folder is not None:
        from laion_hf.models.multilingual import MultilingualTextEncoder

        encoder = MultilingualTextEncoder.from_pretrained(text_folder).to(device)
        checksums.update(_sha256_tree(text_folder))
    model.eval()
    return ClipModel(
        name=weights.arch,
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(weights.arch, cache_dir=cache_dir),
        multilingual=encoder,
        checksums=checksums,
        weights=weights,
    )


def tiny_thresholds() -> dict[str, float]:
    """The similarity thresholds calibrated for the tiny model on its held-out split (see docs/models.md)."""
    quality = json.loads(TINY_QUALITY.read_text(encoding="utf-8"))
    return {"threshold": quality["threshold"], "multilingual_threshold": quality["multilingual_threshold"]}
