"""σ per pixel: the bits by kind of pixel add up to the ELBO's reconstruction term; the floor of any Gaussian."""

import math

import numpy as np
import pytest
import torch
from helpers import mnist_test_set, small_model

from vae_mnist.notebook import dequantize
from vae_mnist.pixels import bits_by_pixel_kind, bits_table, gaussian_floor_bits


def test_bits_by_pixel_kind_add_up_to_the_reconstruction_term():
    model, images = small_model(), mnist_test_set().images[:50]
    kinds = bits_by_pixel_kind(model, images, seed=3)
    assert list(kinds) == ["black (0)", "white (250–255)", "grey (1–249)"]
    assert sum(k["share"] for k in kinds.values()) == pytest.approx(1)
    assert kinds["black (0)"]["share"] == pytest.approx((images == 0).float().mean().item())
    torch.manual_seed(3)  # the same noise and z: the ELBO's reconstruction term in bits per pixel
    reconstruction = model.calc_elbo(dequantize(images)).reconstruction.item()
    expected = (784 * math.log(256) - reconstruction) / (784 * math.log(2))
    assert sum(k["share"] * k["bits"] for k in kinds.values()) == pytest.approx(expected, rel=1e-4)
    assert all(k["sigma"] == pytest.approx(0.1) for k in kinds.values())


def test_the_gaussian_floor_of_a_dequantized_pixel():
    """KL(U[0, 1/256) || best Gaussian) integrated numerically: the 0.25 bits the per-pixel model cannot beat."""
    x = (np.arange(200_000) + 0.5) / 200_000 / 256  # midpoints across the bin
    s = 1 / 256 / np.sqrt(12)
    log_gauss = -0.5 * ((x - 0.5 / 256) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi))
    kl_nats = np.mean(np.log(256) - log_gauss)
    assert gaussian_floor_bits() == pytest.approx(kl_nats / np.log(2), rel=1e-6)
    assert gaussian_floor_bits() == pytest.approx(0.2546, abs=1e-4)


def test_bits_table_has_a_row_per_model_and_the_floor():
    kinds = {"black (0)": (0.8, 1.5, 0.01), "white (250–255)": (0.1, 2.25, 0.02), "grey (1–249)": (0.1, 6.0, 0.1)}
    row = {kind: {"share": share, "bits": bits, "sigma": sigma} for kind, (share, bits, sigma) in kinds.items()}
    table = bits_table({"σ = 0.1": row, "σ per pixel": row}).splitlines()
    assert table[0] == ("| model | black (0): bits/pixel (median σ) | white (250–255): bits/pixel (median σ) | "
                        "grey (1–249): bits/pixel (median σ) |")
    assert table[2] == "| σ = 0.1 | 1.50 (0.0100) | 2.25 (0.0200) | 6.00 (0.1000) |"
    assert table[3] == table[2].replace("σ = 0.1", "σ per pixel")
    assert table[4] == "| floor of any Gaussian | 0.25 (0.0011) | 0.25 | 0.25 |"
    assert table[-1] == "Share of the pixels: black (0) 80%, white (250–255) 10%, grey (1–249) 10%."
