"""Dequantization, the MNIST dataset, the tutorial's split and the offline error."""

import types

import pytest
import pytorch_lightning as pl
import torch
import torchvision
from torch.utils.data import random_split


def test_dequantize_keeps_each_pixel_in_its_own_bin(nb):
    pixels = torch.arange(256, dtype=torch.uint8).repeat(200)
    x = nb.dequantize(pixels)
    assert x.dtype == torch.float32
    assert 0 <= x.min() and x.max() < 1
    assert torch.equal(torch.floor(x * 256).to(torch.uint8), pixels)  # scale 1/256, noise in [0, 1)
    # The noise is uniform: its mean within each bin is 1/2 (of 1/256).
    noise = x * 256 - pixels.float()
    assert noise.mean().item() == pytest.approx(0.5, abs=0.01)
    assert noise.std().item() == pytest.approx((1 / 12) ** 0.5, abs=0.01)


def test_noise_next_to_one_stays_in_its_bin(nb, monkeypatch):
    pixels = torch.arange(256, dtype=torch.uint8)
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.full(shape, 1 - 2**-24))  # largest float32 < 1
    x = nb.dequantize(pixels)
    assert x.max() < 1
    assert torch.equal(torch.floor(x * 256).to(torch.uint8), pixels)


def test_every_read_draws_fresh_noise(nb):
    fake = types.SimpleNamespace(data=torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8),
                                 targets=torch.tensor([4, 1, 9]))
    dataset = nb.DequantizedMNIST(fake)
    (first, label), (second, _) = dataset[2], dataset[2]
    assert first.shape == (1, 28, 28) and label == 9
    assert not torch.equal(first, second)
    assert torch.equal(torch.floor(first * 256), torch.floor(second * 256))


def test_split_is_the_tutorials(nb):
    pl.seed_everything(42)
    tutorial_train, tutorial_val = random_split(range(60_000), [50_000, 10_000])
    train, val = nb.split_train_val(range(60_000), 42)
    assert list(train.indices) == list(tutorial_train.indices)
    assert list(val.indices) == list(tutorial_val.indices)


def test_real_mnist_loaders(nb, mnist_root):
    loaders = nb.make_loaders(mnist_root, 128, 42)
    assert [len(loaders[s].dataset) for s in ("train", "val", "test")] == [50_000, 10_000, 10_000]
    assert loaders["train"].drop_last and len(loaders["train"]) == 50_000 // 128
    x, y = next(iter(loaders["test"]))
    assert x.shape == (128, 1, 28, 28) and 0 <= x.min() and x.max() < 1
    assert y[:5].tolist() == [7, 2, 1, 0, 4]  # the first MNIST test labels


def test_missing_mnist_offline_names_the_variable(nb, tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens there
    with pytest.raises(RuntimeError, match="PATH_DATASETS") as error:
        nb.load_mnist(tmp_path, train=False)
    assert "MNIST/raw" in str(error.value) and "t10k-images-idx3-ubyte" in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing left behind
