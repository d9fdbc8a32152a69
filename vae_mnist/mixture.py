"""A mixture prior: Gaussians fitted to the training images' codes, to sample from where the codes are instead of
from N(0, I), whose wide regions between the codes decode to no digit."""

from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from vae_mnist.latent import encode_all
from vae_mnist.notebook import VAE, DeviceBatches, verify_shipped


def fit_mixture(train_means: torch.Tensor, heldout_means: torch.Tensor, seed: int,
                components: tuple = (1, 2, 5, 10, 20, 50)) -> dict:
    """Gaussian mixtures (full covariances, scikit-learn) fitted to the posterior means of the training images, one
    per number of components; the one whose log-likelihood of the held-out images' means is highest is kept."""
    heldout, best = {}, None
    for k in components:
        mixture = GaussianMixture(k, covariance_type="full", max_iter=500, random_state=seed)
        mixture.fit(train_means.double().numpy())
        heldout[k] = mixture.score(heldout_means.double().numpy())  # mean log-density per image (nats)
        if best is None or heldout[k] > heldout[best.n_components]:
            best = mixture
    return {"weights": best.weights_, "means": best.means_, "covariances": best.covariances_,
            "components": np.array(list(heldout)), "heldout_loglik": np.array(list(heldout.values()))}


def mixture_sample(mixture: dict, n: int, seed: int) -> torch.Tensor:
    """n latent vectors from the mixture: a component by its weight, then its Gaussian."""
    generator = torch.Generator().manual_seed(seed)
    weights, means = torch.as_tensor(mixture["weights"]), torch.as_tensor(mixture["means"])
    scale = torch.linalg.cholesky(torch.as_tensor(mixture["covariances"]))
    component = torch.multinomial(weights, n, replacement=True, generator=generator)
    noise = torch.randn(n, means.shape[1], 1, generator=generator, dtype=means.dtype)
    return (means[component] + (scale[component] @ noise)[..., 0]).float()


def load_mixture(path: Path) -> dict:
    with np.load(verify_shipped(path), allow_pickle=False) as saved:  # plain arrays, no code
        return dict(saved)


def model_mixture(model: VAE, loaders: dict, seed: int) -> dict:
    """The mixture prior of a model: fitted to its posterior means of the 50,000 training images, the number of
    components chosen by the log-likelihood of the 10,000 validation images' means."""
    train = DeviceBatches(loaders["train"].dataset, 1000)  # every training image once, in order
    return fit_mixture(encode_all(model, train, seed)[0], encode_all(model, loaders["val"], seed)[0], seed)


def mixture_log_density(mixture: dict, z: torch.Tensor) -> torch.Tensor:
    """log m(z) of a fitted mixture prior at each row of z (float64)."""
    components = MultivariateNormal(torch.as_tensor(mixture["means"]), torch.as_tensor(mixture["covariances"]))
    return MixtureSameFamily(Categorical(torch.as_tensor(mixture["weights"])), components).log_prob(z.double())
