"""Held-out synthetic scenes with known overlays, and the tiny heads that score them (stage and step tests)."""

from __future__ import annotations

from laion_hf.models.clip import TINY
from laion_hf.testing.synthetic import sample

HELD_OUT = 9_000_000  # seeds no tiny model was trained on
TINY_MODELS = {"nsfw": "tiny", "aesthetic": "tiny", "watermark": "tiny", "clip": TINY}  # the synthetic domain's
KINDS = {"clean": {}, "unsafe": {"unsafe": True}, "watermark": {"watermark": True}}


def scenes(per_kind: int = 8, size: int = 96):
    """(key, kind, jpeg bytes, generator's aesthetic score) for clean, unsafe-motif and watermarked scenes."""
    rows = []
    for k, (kind, overlays) in enumerate(KINDS.items()):
        for i in range(per_kind):
            flags = {"unsafe": False, "watermark": False, **overlays}
            scene = sample(HELD_OUT + 100 * k + i, size=size, **flags)
            rows.append((f"{len(rows):09d}", kind, scene.encode("JPEG", quality=90), scene.aesthetic))
    return rows
