"""The latent codes: encoding a data set, KL per dimension, active units, and the KL split of the aggregate
posterior."""

import math
from types import SimpleNamespace

import pytest
import torch
from helpers import digit_set
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal
from torch.utils.data import DataLoader, TensorDataset

from vae_mnist.latent import (
    active_units,
    aggregate_posterior,
    encode_all,
    kl_decomposition,
    kl_per_dimension,
    log_aggregate_posterior,
)
from vae_mnist.notebook import VAE, dequantize


class KnownEncoder(torch.nn.Module):
    """Dimensions 0 and 2 follow the image's brightness; 1 and 3 ignore the image (posterior = prior)."""

    def forward(self, x):
        brightness, zero = x.mean((1, 2, 3)), torch.zeros(len(x))
        return (torch.stack([4 * brightness, zero, -3 * brightness, zero], 1),
                torch.stack([zero - 1, zero, zero - 2, zero], 1))


def known_model():
    model = VAE(latent_dim=4, channels=(4, 8), hidden=16).eval()
    model.encoder = KnownEncoder()
    return model


def grey_levels(n: int = 40):
    """n uint8 images, each of one grey level, from black to white."""
    levels = torch.linspace(0, 255, n).to(torch.uint8)
    return levels.view(n, 1, 1, 1).expand(n, 1, 28, 28).contiguous()


def test_active_units_and_kl_find_collapsed_dimensions():
    data = dequantize(grey_levels())
    loader = DataLoader(TensorDataset(data, torch.arange(40)), batch_size=16)
    means, log_stds, labels = encode_all(known_model(), loader, seed=0)
    assert labels.tolist() == list(range(40))  # every image once, in order
    brightness = data.mean((1, 2, 3))
    torch.testing.assert_close(means[:, 0], 4 * brightness)
    torch.testing.assert_close(log_stds, torch.tensor([-1.0, 0.0, -2.0, 0.0]).expand(40, 4))
    assert active_units(means) == 2
    kl = kl_per_dimension(means, log_stds)
    assert kl[1] == 0 and kl[3] == 0 and (kl[[0, 2]] > 0.01).all()
    q = Normal(means, log_stds.exp())
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, Normal(0.0, 1.0)).mean(0))


def test_active_units_count_the_dimensions_whose_means_vary_beyond_the_threshold():
    means = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 0.2, 0.05])
    assert active_units(means) == 2  # variances about 1, 0.04 and 0.0025
    assert active_units(means, threshold=0.001) == 3 and active_units(means, threshold=2) == 0


def test_the_aggregate_posterior_density_matches_torch_distributions():
    """log q(z) of (1/N) sum_i N(m_i, s_i²) against torch's own mixture, with wide and with 0.01-narrow posteriors."""
    generator = torch.Generator().manual_seed(0)
    for scale in (0.5, 0.01):
        means = torch.randn(30, 3, generator=generator, dtype=torch.float64)
        log_stds = math.log(scale) + 0.3 * torch.randn(30, 3, generator=generator, dtype=torch.float64)
        z = means[:10] + scale * torch.randn(10, 3, generator=generator, dtype=torch.float64)  # near the codes
        z = torch.cat([z, torch.randn(10, 3, generator=generator, dtype=torch.float64)])  # and anywhere
        mixture = MixtureSameFamily(Categorical(torch.ones(30, dtype=torch.float64)),
                                    Independent(Normal(means, log_stds.exp()), 1))
        torch.testing.assert_close(log_aggregate_posterior(z, means, log_stds), mixture.log_prob(z))


def test_the_kl_splits_into_mutual_information_and_the_marginal_kl():
    generator = torch.Generator().manual_seed(1)
    # every image with the same posterior: the code says nothing about the image, I(x; z) = 0, and the marginal KL
    # is the whole KL, 0.5 (0.25 + 0.16 - 1) - ln 0.4 per dimension
    means, log_stds = torch.full((500, 2), 0.5), torch.full((500, 2), math.log(0.4))
    same = kl_decomposition(means, log_stds, seed=0)
    expected = 2 * (0.5 * (0.25 + 0.16 - 1) - math.log(0.4))
    assert same["kl"] == pytest.approx(expected) and same["mutual_information"] == pytest.approx(0, abs=1e-9)
    assert same["marginal_kl"] == pytest.approx(expected)
    # codes far apart and narrow: each identifies its image, so I(x; z) = ln N
    means, log_stds = 3 * torch.randn(40, 2, generator=generator), torch.full((40, 2), math.log(1e-4))
    apart = kl_decomposition(means, log_stds, seed=0)
    assert apart["images"] == 40 and apart["mutual_information"] == pytest.approx(math.log(40), abs=1e-6)
    assert apart["marginal_kl"] == pytest.approx(apart["kl"] - math.log(40), abs=1e-6)
    # overlapping posteriors in one dimension: I(x; z) = mean_i ∫ q_i log(q_i / q) dz, integrated on a fine grid
    means, stds = torch.tensor([[-1.0], [0.0], [0.5], [2.0]]), torch.tensor([[0.5], [0.8], [0.3], [1.0]])
    grid = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    densities = Normal(means.double(), stds.double()).log_prob(grid).exp()  # (4, grid)
    mixture = densities.mean(0)
    integrand = densities * (densities.clamp_min(1e-300).log() - mixture.clamp_min(1e-300).log())
    information = torch.trapezoid(integrand, grid).mean().item()
    overlap = kl_decomposition(means, stds.log(), n=40_000, seed=0)
    assert 0.3 < information < math.log(4) and overlap["mutual_information"] == pytest.approx(information, abs=0.02)


def test_the_aggregate_posterior_takes_every_training_image_once():
    images = grey_levels(1500)  # more than one batch of 1,000, and not a whole number of them
    loaders = {"train": SimpleNamespace(dataset=digit_set(images, torch.zeros(1500, dtype=torch.long)))}
    split = aggregate_posterior(known_model(), loaders, seed=0)
    brightness = (images[:, 0, 0, 0].double() + 0.5) / 256  # the mean pixel, up to the noise's mean of 784 draws
    means = torch.stack([4 * brightness, 0 * brightness, -3 * brightness, 0 * brightness], 1)
    log_stds = torch.tensor([-1.0, 0.0, -2.0, 0.0], dtype=torch.float64).expand(1500, 4)
    assert split["images"] == 1500
    assert split["kl"] == pytest.approx(kl_per_dimension(means, log_stds).sum().item(), rel=1e-3)
    assert split["kl"] == pytest.approx(split["mutual_information"] + split["marginal_kl"])
