"""Dequantization, the MNIST dataset, the tutorial's split and the offline error."""

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


def test_dequantize_refuses_what_is_not_uint8_pixels(nb):
    for bad in (torch.rand(2, 1, 28, 28), torch.randint(0, 256, (2, 1, 28, 28)), [[0, 255]]):
        with pytest.raises(ValueError, match="dequantize\\(\\) takes uint8 pixels 0..255"):
            nb.dequantize(bad)


def test_every_read_draws_fresh_noise(nb, mnist_root):
    dataset = nb.DequantizedMNIST(mnist_root, train=False)
    (first, label), (second, _) = dataset[2], dataset[2]
    assert first.shape == (1, 28, 28) and label == 1  # the third MNIST test image is a 1
    assert not torch.equal(first, second)
    assert torch.equal(torch.floor(first * 256), torch.floor(second * 256))


def test_real_mnist_loaders_split_as_the_tutorial(nb, mnist_root):
    loaders = nb.make_loaders(mnist_root, 128, 42)
    pl.seed_everything(42)
    tutorial_train, tutorial_val = random_split(range(60_000), [50_000, 10_000])
    assert list(loaders["train"].dataset.indices) == list(tutorial_train.indices)
    assert list(loaders["val"].dataset.indices) == list(tutorial_val.indices)
    assert [len(loaders[s].dataset) for s in ("train", "val", "test")] == [50_000, 10_000, 10_000]
    assert loaders["train"].drop_last and len(loaders["train"]) == 50_000 // 128
    x, y = next(iter(loaders["test"]))
    assert x.shape == (128, 1, 28, 28) and 0 <= x.min() and x.max() < 1
    assert y[:5].tolist() == [7, 2, 1, 0, 4]  # the first MNIST test labels


def test_the_decoders_starting_mean_is_mnists_mean_pixel(nb, mnist_root):
    images = nb.DequantizedMNIST(mnist_root, train=True).images
    dequantized_mean = (images.sum(dtype=torch.int64).item() / images.numel() + 0.5) / 256  # E[(x + U[0, 1)) / 256]
    assert nb.Decoder.MEAN_PIXEL == pytest.approx(dequantized_mean, abs=5e-4)


def test_missing_mnist_offline_names_the_variable(nb, tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens there
    with pytest.raises(RuntimeError, match="PATH_DATASETS") as error:
        nb.DequantizedMNIST(tmp_path / "data", train=False)
    assert "data/MNIST/raw" in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


class Numbered(torch.utils.data.Dataset):
    """300 random images whose labels are their indices, held as DequantizedMNIST holds MNIST."""

    def __init__(self, dequantize):
        torch.manual_seed(0)
        self.images, self.labels, self.dequantize = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8), \
            torch.arange(300), dequantize

    def __len__(self):
        return 300

    def __getitem__(self, index):
        return self.dequantize(self.images[index]), int(self.labels[index])


@pytest.fixture
def numbered(nb):
    return Numbered(nb.dequantize)


def test_device_batches_dequantize_like_the_per_image_dataset(nb, numbered):
    subset = torch.utils.data.Subset(numbered, list(range(250, 0, -2)))
    batches = nb.DeviceBatches(subset, batch_size=32)
    first, second = list(batches), list(batches)
    x, y = torch.cat([b[0] for b in first]), torch.cat([b[1] for b in first])
    assert len(batches) == 4 and len(first) == 4 and x.shape == (125, 1, 28, 28)
    assert y.tolist() == list(range(250, 0, -2))
    assert torch.equal(torch.floor(x * 256).to(torch.uint8), numbered.images[y])  # each pixel in its own bin
    per_image = torch.stack([subset[i][0] for i in range(len(subset))])
    noise, reference = x * 256 - torch.floor(x * 256), per_image * 256 - torch.floor(per_image * 256)
    assert 0 <= x.min() and x.max() < 1 and x.dtype == per_image.dtype == torch.float32
    assert noise.mean().item() == pytest.approx(reference.mean().item(), abs=0.01)  # both U[0, 1) within the bin
    assert noise.std().item() == pytest.approx(reference.std().item(), abs=0.01)
    assert not torch.equal(x, torch.cat([b[0] for b in second]))  # fresh noise on every pass


def test_shuffled_epochs_see_every_image_once_in_a_new_order(nb, numbered):
    batches = nb.DeviceBatches(numbered, batch_size=64, shuffle=True, drop_last=True)
    epochs = [torch.cat([y for _, y in batches]) for _ in range(2)]
    assert len(batches) == 4 and all(len(e) == 256 and len(set(e.tolist())) == 256 for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])
