"""The latent codes: posterior means of a data set, the KL term per dimension, active units, and the KL term split
into what the codes tell about their images and how far they lie, together, from the prior."""

import numpy as np
import torch
from torch.distributions import Independent, Normal
from torch.utils.data import DataLoader

from vae_mnist.notebook import VAE, DeviceBatches


@torch.no_grad()
def encode_all(model: VAE, loader: DataLoader, seed: int) -> tuple:
    """Posterior means, log-stds and labels of every image of the loader."""
    torch.manual_seed(seed)
    parts = [(*model.encode(x.to(model.device)), y) for x, y in loader]
    means, log_stds, labels = (torch.cat(column).cpu() for column in zip(*parts, strict=True))
    return means, log_stds, labels


def kl_per_dimension(means: torch.Tensor, log_stds: torch.Tensor) -> torch.Tensor:
    """KL(q(z_d|x) || N(0, 1)) of each dimension, averaged over the images (nats)."""
    return (0.5 * (means.square() + (2 * log_stds).exp() - 1) - log_stds).mean(0)


def active_units(means: torch.Tensor, threshold: float = 0.01) -> int:
    """The dimensions whose posterior mean varies across the images (variance above `threshold`): a dimension whose
    mean stays put tells the decoder nothing about the image."""
    return int((means.var(0) > threshold).sum())


def log_aggregate_posterior(z: torch.Tensor, means: torch.Tensor, log_stds: torch.Tensor) -> torch.Tensor:
    """log q(z) of the aggregate posterior q(z) = mean over the images of q(z|x_i), at each row of z. In float64: with
    posterior stds near 0.01 the terms of the quadratic form reach 10⁴ before they cancel."""
    z, means, log_stds = z.double(), means.double(), log_stds.double()
    precision = (-2 * log_stds).exp()
    # log N(z; m_i, s_i²) = c_i − ½ z²·(1/s_i²) + z·(m_i/s_i²): matrix products, no (n, images, d) tensor
    constant = -log_stds.sum(1) - 0.5 * (means.square() * precision).sum(1) - 0.5 * means.shape[1] * np.log(2 * np.pi)
    log_q = [torch.logsumexp(constant - 0.5 * part.square() @ precision.T + part @ (means * precision).T, dim=1)
             for part in z.split(256)]
    return torch.cat(log_q) - np.log(len(means))


def kl_decomposition(means: torch.Tensor, log_stds: torch.Tensor, n: int = 2000, seed: int = 0) -> dict:
    """The KL term, averaged over the images, split in two ("ELBO surgery", Hoffman & Johnson, 2016): I(x; z), what a
    code tells about which image it encodes (at most ln N for N images), plus KL(q(z) || N(0, I)), how far the codes
    taken together lie from the prior that samples are drawn from; nats. I(x; z) = E log q(z|x) / q(z) by Monte Carlo
    over n draws of an image and z ~ q(z|x) (no draw above ln N); the second term is the rest."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(means), (n,), generator=generator)
    posterior = Independent(Normal(means[pick].double(), log_stds[pick].double().exp()), 1)
    z = posterior.mean + posterior.stddev * torch.randn(n, means.shape[1], generator=generator, dtype=torch.float64)
    information = (posterior.log_prob(z) - log_aggregate_posterior(z, means, log_stds)).mean().item()
    kl = kl_per_dimension(means.double(), log_stds.double()).sum().item()
    return {"images": len(means), "kl": kl, "mutual_information": information, "marginal_kl": kl - information}


def aggregate_posterior(model: VAE, loaders: dict, seed: int) -> dict:
    """The kl_decomposition of the 50,000 training images' codes, the KL term the model was trained on."""
    means, log_stds, _ = encode_all(model, DeviceBatches(loaders["train"].dataset, 1000), seed)
    return kl_decomposition(means, log_stds, seed=seed)
