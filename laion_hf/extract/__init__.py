"""Common Crawl WAT files -> LAION image/text candidates: the rules and the per-file pass.

The run (files in parallel, then the global dedup) is the extract step, :mod:`laion_hf.steps.extract`.
"""

from laion_hf.extract.extract import CANDIDATE_SCHEMA, expand_inputs, extract_file

__all__ = ["CANDIDATE_SCHEMA", "expand_inputs", "extract_file"]
