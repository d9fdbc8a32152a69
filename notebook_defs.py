"""The definitions of vae_mnist.ipynb (its imports, functions and classes) as a module, without running its cells.

The notebook is the only copy of the code: tests and benchmarks reach it through importnb's defs-only loading.
"""

import textwrap
from functools import cache
from pathlib import Path

from importnb import Notebook

NOTEBOOK = Path(__file__).resolve().parent / "vae_mnist.ipynb"


class DefsOnly(Notebook):
    def markdown(self, text):
        # importnb turns markdown into string literals, where LaTeX such as \underbrace is a bad escape.
        return textwrap.indent(text, "# ")


@cache
def load_notebook(path: Path = NOTEBOOK):
    return DefsOnly.load_file(str(path), main=False, include_non_defs=False)
