"""Builds the compiled extraction rules (Cython); everything else is declared in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("laion_hf.extract._rules", ["laion_hf/extract/_rules.pyx"], extra_compile_args=["-O2"])],
        compiler_directives={"language_level": 3},
    )
)
