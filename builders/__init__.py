"""``datasets`` builder classes per LAION family (see :mod:`builders.laion`)."""

from builders.laion import Laion5B, Laion400M, LaionBuilder, LaionConfig, ReLaion5B

__all__ = ["Laion400M", "Laion5B", "LaionBuilder", "LaionConfig", "ReLaion5B"]
