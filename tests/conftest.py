import dataclasses
import hashlib
import os
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

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


QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="session")
def loaders(nb):
    """64 random dequantized images as train, validation and test loaders: enough to run Lightning for real."""
    torch.manual_seed(0)
    images = nb.dequantize(torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8))
    data = TensorDataset(images, torch.zeros(64, dtype=torch.long))
    return {"train": DataLoader(data, batch_size=16, drop_last=True), "val": DataLoader(data, batch_size=32),
            "test": DataLoader(data, batch_size=32)}


def tiny(nb, **changes):
    """A config that trains in a second: 2 epochs of 2 batches, narrow layers."""
    return dataclasses.replace(nb.VAEConfig(max_epochs=2, limit_batches=2, channels=(4, 8), hidden=16), **changes)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
