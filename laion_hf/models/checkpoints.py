"""Reading weights files people hand us: one error type, the file named, never a raw loader traceback.

torch, safetensors and open_clip fail on a file that is not what they expect
with whatever their parser hits first (``EOFError``, ``IndexError: pop from
empty list``, ``KeyError: 101``, ``UnpicklingError``, ``SafetensorError``,
``RuntimeError: Invalid magic number``). Those are not enumerable, so every
read of a user's checkpoint goes through :func:`reading`, which turns any of
them into a :class:`ModelLoadError` naming the file and what was expected.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from laion_hf.core.errors import UserError


class ModelLoadError(UserError):
    """A model name, tag or checkpoint file that cannot be loaded (exit 2, file named)."""


@contextmanager
def reading(path: str | Path, expected: str) -> Iterator[None]:
    """Run a checkpoint read; any failure of the loader becomes a ModelLoadError about ``path``."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as exc:  # the loaders' failure modes on foreign bytes are open-ended (see module doc)
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelLoadError(f"{path}: not a readable {expected} ({type(exc).__name__}: {detail})") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_torchscript(path: str | Path) -> bool:
    """True for a TorchScript archive (``torch.jit.save``; OpenAI's original CLIP ``.pt`` files are these).

    Such archives hold code as well as tensors, so ``torch.load(weights_only=True)``
    refuses them; they are recognised by the ``constants.pkl`` record that only
    TorchScript writes.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_tensors(path: str | Path, expected: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A state dict of tensors from a safetensors file or a ``torch.save``d dict (no pickled code).

    ``{"state_dict": {...}}`` wrappers (training checkpoints) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: {expected} not found")
    with reading(path, expected):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: not a readable {expected} (expected a non-empty state dict of tensors)")
    return state


def hub_offline() -> bool:
    """The Hugging Face offline switch (``HF_HUB_OFFLINE=1``): never try the network for weights."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)
