"""The pipeline's steps: each reads a folder, hands its units to a runner and writes a folder.

extract (WAT files -> candidates), download (candidates -> image shards),
filter and score (image passes), dedup (a run-wide decision between two image
passes). Single-step commands and ``laion-hf build`` run the same functions.
"""
