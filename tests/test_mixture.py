"""The mixture prior: fitted to the codes, sampled, saved and read back, its density, and a model's own."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import digit_set
from sklearn.mixture import GaussianMixture
from torch.utils.data import DataLoader

import vae_mnist.mixture as mixture_module
from vae_mnist.mixture import fit_mixture, load_mixture, mixture_log_density, mixture_sample, model_mixture
from vae_mnist.notebook import VAE


def two_clusters(n: int, generator: torch.Generator) -> torch.Tensor:
    centres = torch.tensor([[-4.0, 0.0], [4.0, 1.0]])
    return centres[torch.randint(0, 2, (n,), generator=generator)] + 0.5 * torch.randn(n, 2, generator=generator)


def test_fit_mixture_keeps_the_number_of_components_the_held_out_codes_like_best():
    generator = torch.Generator().manual_seed(0)
    mixture = fit_mixture(two_clusters(3000, generator), two_clusters(1000, generator), seed=0, components=(2, 1))
    assert mixture["components"].tolist() == [2, 1] and mixture["heldout_loglik"][0] > mixture["heldout_loglik"][1]
    assert len(mixture["weights"]) == 2  # the better of the two, though fitted first
    order = np.argsort(mixture["means"][:, 0])
    np.testing.assert_allclose(mixture["means"][order], [[-4.0, 0.0], [4.0, 1.0]], atol=0.1)
    np.testing.assert_allclose(mixture["covariances"][order], 0.25 * np.eye(2)[None].repeat(2, 0), atol=0.03)
    np.testing.assert_allclose(mixture["weights"], [0.5, 0.5], atol=0.03)


def test_mixture_samples_come_from_the_fitted_mixture():
    mixture = {"weights": np.array([0.25, 0.75]), "means": np.array([[-10.0, 0.0, 3.0], [10.0, 2.0, -1.0]]),
               "covariances": np.stack([np.diag([0.5, 1.0, 2.0]), [[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0, 0, 0.1]]])}
    z = mixture_sample(mixture, 40_000, seed=3).double()
    assert z.shape == (40_000, 3)
    second = z[:, 0] > 0  # the two components are 20 apart along the first axis
    assert second.double().mean().item() == pytest.approx(0.75, abs=0.01)
    for part, k in ((z[~second], 0), (z[second], 1)):
        np.testing.assert_allclose(part.mean(0).numpy(), mixture["means"][k], atol=0.05)
        np.testing.assert_allclose(np.cov(part.numpy().T), mixture["covariances"][k], atol=0.06)
    torch.testing.assert_close(mixture_sample(mixture, 10, seed=3), mixture_sample(mixture, 10, seed=3))
    assert not torch.equal(mixture_sample(mixture, 10, seed=3), mixture_sample(mixture, 10, seed=4))


def test_a_mixture_is_saved_and_read_back_without_pickles(tmp_path):
    mixture = fit_mixture(torch.randn(300, 2), torch.randn(100, 2), seed=0, components=(1, 2))
    np.savez(tmp_path / "m.npz", **mixture)
    again = load_mixture(tmp_path / "m.npz")
    assert set(again) == set(mixture)
    for key in mixture:
        np.testing.assert_array_equal(again[key], mixture[key])
    np.savez(tmp_path / "pickled.npz", weights=np.array([{"code": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_mixture(tmp_path / "pickled.npz")


def test_mixture_density_matches_scikit_learn():
    codes = torch.cat([torch.randn(300, 2) - 3, 0.5 * torch.randn(200, 2) + 2])
    fitted = GaussianMixture(2, covariance_type="full", random_state=0).fit(codes.double().numpy())
    mixture = {"weights": fitted.weights_, "means": fitted.means_, "covariances": fitted.covariances_}
    z = 3 * torch.randn(50, 2)
    np.testing.assert_allclose(mixture_log_density(mixture, z).numpy(), fitted.score_samples(z.double().numpy()),
                               rtol=1e-9, atol=1e-9)


def test_a_model_mixture_is_fitted_to_every_training_code_and_chosen_on_the_validation_codes(monkeypatch):
    torch.manual_seed(0)
    model = VAE(latent_dim=2, channels=(4, 8), hidden=16).eval()
    images = torch.randint(0, 256, (1200, 1, 28, 28), dtype=torch.uint8)
    train = SimpleNamespace(dataset=digit_set(images[:1100], torch.zeros(1100, dtype=torch.long)))
    val = DataLoader(digit_set(images[1100:], torch.zeros(100, dtype=torch.long)), batch_size=50)
    fitted = []
    monkeypatch.setattr(mixture_module, "fit_mixture", lambda train_means, heldout_means, seed: fitted.append(
        (len(train_means), len(heldout_means), seed)) or "fitted")
    assert model_mixture(model, {"train": train, "val": val}, seed=5) == "fitted"
    assert fitted == [(1100, 100, 5)]  # every training image, the last partial batch of 1,000 too
