"""The multilingual text encoder: a sentence-transformers student distilled into a CLIP text space.

LAION-5B scored non-English captions with ``clip-ViT-B-32-multilingual-v1``
(a multilingual DistilBERT, mean pooling and a Dense projection, trained so
its output matches the CLIP ViT-B/32 text tower's embedding of the English
translation). That checkpoint is a sentence-transformers folder:
``modules.json`` listing a Transformer (the folder root), ``1_Pooling`` and
``2_Dense``. This module reads exactly that layout with ``transformers``
alone, so the real checkpoint (from a local folder or, when online, the Hub)
and the tiny student this project ships load through the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from laion_hf.models.checkpoints import ModelLoadError, hub_offline, read_tensors
from laion_hf.models.torch_compat import import_torchvision

REAL_MULTILINGUAL = "sentence-transformers/clip-ViT-B-32-multilingual-v1"
_ACTIVATIONS = {"torch.nn.modules.linear.Identity": nn.Identity, "torch.nn.modules.activation.Tanh": nn.Tanh}


class MultilingualCheckpointError(ModelLoadError):
    """A multilingual encoder folder that is not a readable sentence-transformers checkpoint."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MultilingualCheckpointError(f"{path}: missing (not a sentence-transformers checkpoint?)") from None
    except json.JSONDecodeError as exc:
        raise MultilingualCheckpointError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


def _load_module_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return read_tensors(folder / name, "Dense layer state dict")
    raise MultilingualCheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin")


def multilingual_folder(name_or_path: str | Path) -> Path:
    """The checkpoint folder: a local folder, else the Hub repo's snapshot from the Hugging Face cache, else
    downloaded when online (never a long offline retry)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    repo_id = str(name_or_path)
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as cached_exc:  # not cached (or not a repo id at all)
        reason = type(cached_exc).__name__
    if not hub_offline():
        try:
            return Path(snapshot_download(repo_id))
        except Exception as exc:  # offline, unknown repo, gated: one clear line for the user
            reason = type(exc).__name__
    raise MultilingualCheckpointError(
        f"{repo_id}: not a local folder and not downloadable from the Hub ({reason}); pass a local "
        "sentence-transformers folder (laion-hf filter --multilingual DIR), or --multilingual none to embed "
        "every caption with the CLIP text tower (LAION-400M's recipe)"
    )


class Dense(nn.Module):
    """sentence-transformers' Dense module: ``activation(linear(x))``."""

    def __init__(self, in_features: int, out_features: int, bias: bool, activation: str) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        try:
            self.activation = _ACTIVATIONS[activation]()
        except KeyError:
            raise MultilingualCheckpointError(f"unsupported Dense activation {activation!r}") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


class MultilingualTextEncoder(nn.Module):
    """Transformer -> pooling -> Dense projections, as listed in the checkpoint's ``modules.json``."""

    def __init__(self, transformer: nn.Module, tokenizer, pooling: str, dense: list[Dense], max_length: int) -> None:
        super().__init__()
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.dense = nn.ModuleList(dense)
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> MultilingualTextEncoder:
        """Load a sentence-transformers folder, or a Hub repo id (downloaded once, when online)."""
        folder = multilingual_folder(name_or_path)
        import_torchvision()  # transformers imports torchvision when present
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a CLI prints its own progress, not per-tensor bars

        modules = _read_json(folder / "modules.json")
        pooling, dense = "mean", []
        for module in modules:
            kind = module["type"].rsplit(".", 1)[-1]
            sub = folder / module.get("path", "")
            if kind == "Transformer":
                transformer = AutoModel.from_pretrained(str(sub))
                tokenizer = AutoTokenizer.from_pretrained(str(sub))
                config = sub / "sentence_bert_config.json"
                max_length = _read_json(config).get("max_seq_length", 128) if config.exists() else 128
            elif kind == "Pooling":
                config = _read_json(sub / "config.json")
                pooling = "cls" if config.get("pooling_mode_cls_token") else "mean"
            elif kind == "Dense":
                config = _read_json(sub / "config.json")
                layer = Dense(
                    config["in_features"],
                    config["out_features"],
                    config.get("bias", True),
                    config.get("activation_function", "torch.nn.modules.activation.Tanh"),
                )
                layer.load_state_dict(_load_module_weights(sub))
                dense.append(layer)
            else:
                raise MultilingualCheckpointError(f"{folder / 'modules.json'}: unsupported module type {kind}")
        return cls(transformer.eval(), tokenizer, pooling, dense, max_length)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        for layer in self.dense:
            pooled = layer(pooled)
        return pooled

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised embeddings in the CLIP text space, one row per text."""
        tokens = self.tokenize(texts)
        device = next(self.parameters()).device
        return self(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the sentence-transformers layout this class reads (used by the training script)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": self.max_length}) + "\n")
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
        pooling_dir = folder / "1_Pooling"
        pooling_dir.mkdir(exist_ok=True)
        width = self.transformer.config.hidden_size
        (pooling_dir / "config.json").write_text(json.dumps({
            "word_embedding_dimension": width,
            "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean",
        }, indent=2) + "\n")
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
        for i, layer in enumerate(self.dense, start=2):
            dense_dir = folder / f"{i}_Dense"
            dense_dir.mkdir(exist_ok=True)
            activation = next(k for k, v in _ACTIVATIONS.items() if isinstance(layer.activation, v))
            (dense_dir / "config.json").write_text(json.dumps({
                "in_features": layer.linear.in_features,
                "out_features": layer.linear.out_features,
                "bias": layer.linear.bias is not None,
                "activation_function": activation,
            }, indent=2) + "\n")
            save_file({k: v.contiguous() for k, v in layer.state_dict().items()}, str(dense_dir / "model.safetensors"))
            modules.append({"idx": i, "name": str(i), "path": f"{i}_Dense", "type": "sentence_transformers.models.Dense"})
        (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
