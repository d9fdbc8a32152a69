import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vae_mnist.notebook import graded  # noqa: E402


@pytest.fixture(scope="session")
def nb():
    """The graded notebook's own definitions, imported in-process."""
    return graded


@pytest.fixture(scope="session")
def mnist_root(nb) -> Path:
    """The notebook's dataset folder ($PATH_DATASETS, else data/), with MNIST downloaded there if it is missing."""
    root = nb.dataset_root()
    nb.DequantizedMNIST(root, train=True)
    nb.DequantizedMNIST(root, train=False)
    return root.resolve()


QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="session")
def loaders(nb):
    """Random dequantized images as train, validation and test loaders (three different sets of 64): enough to run
    Lightning for real."""
    torch.manual_seed(0)
    images = nb.dequantize(torch.randint(0, 256, (3, 64, 1, 28, 28), dtype=torch.uint8))
    train, val, test = (TensorDataset(part, torch.zeros(64, dtype=torch.long)) for part in images)
    return {"train": DataLoader(train, batch_size=16, drop_last=True), "val": DataLoader(val, batch_size=32),
            "test": DataLoader(test, batch_size=32)}


def tiny(nb, **changes):
    """A config that trains in a second: 2 epochs of 2 batches, narrow layers."""
    return dataclasses.replace(nb.VAEConfig(max_epochs=2, limit_batches=2, channels=(4, 8), hidden=16), **changes)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def environment(**variables) -> dict:
    """This process's environment without the PATH_* folders of the test run, with `variables`."""
    kept = {key: value for key, value in os.environ.items() if not key.startswith("PATH_")}
    return {**kept, **variables}


def git(folder, *args) -> str:
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory, mnist_root):
    """The repository's files (committed or not, but not ignored) in a fresh git repository of their own."""
    folder = tmp_path_factory.mktemp("clone")
    for name in git(REPO, "ls-files", "--cached", "--others", "--exclude-standard").splitlines():
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "clone")
    return folder
