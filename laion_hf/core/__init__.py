"""The contract every other layer builds on: errors for people, LAION schemas, hashes, the Stage and its counts.

Nothing here imports from the rest of laion_hf.
"""
