"""A small CLIP the tests make themselves, saved in every checkpoint layout a user may hand us.

No real CLIP weights exist offline, so the loading code paths are checked on a
model with OpenAI's ViT layout at toy size (image 32 px, patch 16, width 64,
2 layers; text context 77 and OpenAI's vocabulary, width 64, one head per 64
channels as OpenAI's builder assumes). It is saved as:

- OpenAI's original release format: a TorchScript archive whose state dict has
  OpenAI's keys (open_clip's CLIP keys, plus the ``input_resolution``,
  ``context_length`` and ``vocab_size`` entries open_clip drops) in float16;
- a ``torch.save``d state dict and a safetensors file (open_clip checkpoints).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SMALL = "laion-hf-test-small"
SMALL_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


def register_small(folder: Path) -> str:
    """Make ``laion-hf-test-small`` an open_clip model name (its config written to ``folder``)."""
    import open_clip

    if SMALL not in open_clip.list_models():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{SMALL}.json").write_text(json.dumps(SMALL_CONFIG))
        open_clip.add_model_config(folder)
    return SMALL


def small_model(quick_gelu: bool, seed: int = 0) -> torch.nn.Module:
    import open_clip

    torch.manual_seed(seed)
    return open_clip.create_model(SMALL, force_quick_gelu=quick_gelu).eval()


class _Node(torch.nn.Module):
    """One level of the archive's module tree (TorchScript needs a forward to compile)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_openai_archive(model: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Save ``model`` as OpenAI's released ``.pt`` files are laid out; return the state dict it holds.

    Only the archive's state dict matters to a loader (open_clip rebuilds the
    model from it); its keys, dtypes and extra entries are OpenAI's.
    """
    image_size = model.visual.image_size
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state["input_resolution"] = torch.tensor(image_size[0] if isinstance(image_size, tuple) else image_size)
    state["context_length"] = torch.tensor(model.context_length)
    state["vocab_size"] = torch.tensor(model.vocab_size)
    root = _Node()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        node = root
        for part in parents:
            if not hasattr(node, part):
                node.add_module(part, _Node())
            node = getattr(node, part)
        node.register_buffer(leaf, value)
    torch.jit.save(torch.jit.script(root), str(path))
    return state
