"""What the tests of the measuring modules share: real MNIST digits, a tiny VAE trained on them (made once per
session), data sets of given images, and a record of sample quality."""

import copy
import tempfile
from functools import cache

import torch
from conftest import QUIET, tiny
from torch.utils.data import DataLoader, Subset

import vae_mnist.notebook as graded
from vae_mnist.notebook import DequantizedMNIST, dataset_root, train_model

QUALITY = {name: {"recognised": share, "digit_share": [0.1] * 10, "frechet": fid}
           for name, share, fid in (("real", 0.986, 0.5), ("samples", 0.854, 170.7), ("reconstructions", 0.97, 87.9))}


@cache
def mnist_test_set() -> DequantizedMNIST:
    return DequantizedMNIST(dataset_root(), train=False)


def digit_set(images: torch.Tensor, labels: torch.Tensor) -> DequantizedMNIST:
    """A DequantizedMNIST of the given uint8 images (N, 1, 28, 28) and their labels."""
    dataset = copy.copy(mnist_test_set())
    dataset.images, dataset.labels = images, labels
    return dataset


@cache
def digits() -> dict:
    """Real MNIST digits: 1,024 to train on, 64 to validate and 64 to test (also as `test_set`), so that a tiny model
    learns a latent code that matters."""
    test_set = mnist_test_set()
    return {"train": DataLoader(Subset(test_set, range(1024)), batch_size=64, shuffle=True, drop_last=True),
            "val": DataLoader(Subset(test_set, range(1024, 1088)), batch_size=64),
            "test": DataLoader(Subset(test_set, range(9936, 10_000)), batch_size=32),
            "test_set": digit_set(test_set.images[9936:], test_set.labels[9936:])}


@cache
def small_model():
    """A tiny VAE (latent size 2) trained for a few seconds on real digits, so its posterior is far from the prior."""
    config = tiny(graded, latent_dim=2, max_epochs=4, limit_batches=1.0)
    with tempfile.TemporaryDirectory() as folder:
        model, _ = train_model(config, digits(), folder, **QUIET)
    return model.eval()
