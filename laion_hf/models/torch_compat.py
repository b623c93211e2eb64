"""Import torchvision on machines whose torchvision wheel does not match torch's build.

A CPU-only torch with the registry's (CUDA-built) torchvision cannot load
torchvision's C++ ops, and torchvision 0.28 then fails at import while
registering fake kernels for ``nms``/``qnms``. open_clip and timm only need
torchvision's Python transforms, so when (and only when) the ops library is
missing, declare the two schemas so the import succeeds; the ops themselves
stay unavailable, as torchvision intends without its extension.
"""

from __future__ import annotations

import sys

_MISSING_OPS = "operator torchvision::nms does not exist"


def import_torchvision():
    """Import and return torchvision, working around a missing C++ extension."""
    try:
        import torchvision
    except RuntimeError as exc:
        if _MISSING_OPS not in str(exc):
            raise
        import torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        for op in ("nms", "qnms"):
            torch.library.define(
                f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
            )
        import torchvision
    return torchvision
