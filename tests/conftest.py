import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from notebook_defs import load_notebook  # noqa: E402

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(scope="session")
def nb():
    """The notebook's own definitions, imported in-process."""
    return load_notebook()


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = Path(os.environ.get("PATH_DATASETS", REPO.parent / "shared" / "data"))
    missing = [name for name in MNIST_FILES if not (root / "MNIST" / "raw" / name).exists()]
    if missing:
        pytest.fail(f"MNIST is not under {root}/MNIST/raw (missing {missing}): set PATH_DATASETS to its folder.")
    return root
