"""Common Crawl WAT files -> deduplicated LAION image/text candidates (``laion-hf extract``)."""

from laion_hf.extract.extract import CANDIDATE_SCHEMA, ExtractReport, expand_inputs, extract, extract_file

__all__ = ["CANDIDATE_SCHEMA", "ExtractReport", "expand_inputs", "extract", "extract_file"]
