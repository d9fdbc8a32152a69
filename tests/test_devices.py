"""Training on several devices: two CPU processes (DDP over gloo) learn what one process learns."""

import math

import pytest
import torch
from conftest import QUIET, tiny


def test_two_processes_train_like_one(nb, mnist_root, tmp_path):
    test_set = nb.load_mnist(mnist_root, train=False)
    subset = torch.utils.data.Subset
    config = tiny(nb, latent_dim=2, max_epochs=1, limit_batches=1.0, batch_size=64)

    def loaders(batch_size):
        return {"train": nb.DeviceBatches(subset(test_set, range(2048)), batch_size, shuffle=True, drop_last=True),
                "val": nb.DeviceBatches(subset(test_set, range(2048, 2560)), 64)}

    # 2 processes x 32 images: each step averages the gradients of the same 64 images as one process's batch.
    _, one = nb.train_model(config, loaders(64), tmp_path / "one", **QUIET)
    _, two = nb.train_model(config, loaders(32), tmp_path / "two", accelerator="cpu", devices=2,
                            strategy="ddp_notebook", **QUIET)
    assert (one["processes"], two["processes"]) == (1, 2)
    for key in ("train_neg_elbo", "val_neg_elbo", "val_reconstruction"):  # (the KL is ~0.02 nats: all noise)
        assert math.isfinite(two["history"][key][0])
        assert two["history"][key][0] == pytest.approx(one["history"][key][0], rel=0.03), key
