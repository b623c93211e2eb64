"""Damage img2dataset-layout shards the ways real copies get damaged: a tar cut short, a sample gone.

A download or copy interrupted at the wrong moment leaves a tar that ends at a
member boundary (``tarfile`` in stream mode then simply stops) or in the
middle of a member; a tar rewritten by a tool that lost a sample leaves a
``status=success`` row with no member.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from laion_hf.io.tar import iter_members, sample_key, write_samples

CUTS = ("member-boundary", "mid-member")


def member_offsets(tar: Path) -> list[tuple[str, int, int]]:
    """``(name, header offset, data size)`` of every member, read with tarfile's own index."""
    with tarfile.open(tar) as archive:
        return [(m.name, m.offset, m.size) for m in archive.getmembers()]


def cut_tar(tar: Path, how: str) -> str:
    """Cut ``tar`` inside its second sample: at that sample's first header, or halfway through its first member.

    Returns the key of the first sample lost.
    """
    members = member_offsets(tar)
    first_key = sample_key(members[0][0])
    name, offset, size = next(m for m in members if sample_key(m[0]) != first_key)
    end = offset if how == "member-boundary" else offset + tarfile.BLOCKSIZE + max(size // 2, 1)
    if how not in CUTS:
        raise ValueError(f"unknown cut {how!r}: one of {CUTS}")
    tar.write_bytes(tar.read_bytes()[:end])
    return sample_key(name)


def drop_sample(tar: Path, key: str) -> None:
    """Rewrite ``tar`` (complete, well-formed) without the sample ``key``; its sidecar row stays ``success``."""
    samples: dict[str, dict[str, bytes]] = {}
    for info, data in iter_members(str(tar)):
        member_key = sample_key(info.name)
        if member_key != key:
            samples.setdefault(member_key, {})[info.name.split(".", 1)[1]] = data
    write_samples(str(tar), samples.items())
