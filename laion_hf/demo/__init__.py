"""Demo data made by the project itself (no downloads): a sample LAION copy with removal lists."""

from laion_hf.demo.sample_copy import SampleCopy, clean_sample_copy, generate_sample_copy

__all__ = ["SampleCopy", "clean_sample_copy", "generate_sample_copy"]
