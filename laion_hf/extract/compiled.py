"""The compiled per-link rules when built, else their pure-Python reference.

:mod:`laion_hf.extract._rules` (Cython, built by ``make`` / ``pip install``) runs
:func:`laion_hf.extract.rules.page_pairs` for every page of the crawl 2.3x faster
(docs/benchmarks.md); its result equals the reference's for every input
(tests/extract/test_compiled_rules.py).
A checkout where it is not built (``python setup.py build_ext --inplace`` builds it)
runs the reference, with a warning, since extraction is then several times slower.
"""

from __future__ import annotations

import logging

try:
    from laion_hf.extract._rules import page_pairs

    COMPILED = True
except ImportError:  # not built: same results, slower
    from laion_hf.extract.rules import page_pairs

    COMPILED = False
    logging.getLogger(__name__).warning(
        "laion_hf.extract._rules is not built: extraction runs the pure-Python rules (same output, slower); "
        "`make install` or `python setup.py build_ext --inplace` builds it"
    )

__all__ = ["COMPILED", "page_pairs"]
