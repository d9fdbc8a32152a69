"""The "Beyond the exercise" measurements: IWAE bound, latent diagnostics, sample quality and the study runner."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import QUIET, REPO, tiny
from torch.utils.data import DataLoader


@pytest.fixture(scope="module")
def digits(nb, mnist_root):
    """Real MNIST digits: 1,024 to train on and 64 to test, so a tiny model learns a latent code that matters."""
    test_set = nb.load_mnist(mnist_root, train=False)
    subset = torch.utils.data.Subset
    return {"train": DataLoader(subset(test_set, range(1024)), batch_size=64, shuffle=True, drop_last=True),
            "val": DataLoader(subset(test_set, range(1024, 1088)), batch_size=64),
            "test": DataLoader(subset(test_set, range(9936, 10_000)), batch_size=32)}


@pytest.fixture(scope="module")
def small_model(nb, digits, tmp_path_factory):
    """A tiny VAE trained for a few seconds on real digits, so its posterior is far from the prior."""
    config = tiny(nb, latent_dim=2, max_epochs=4, limit_batches=1.0)
    model, _ = nb.train_model(config, digits, tmp_path_factory.mktemp("ckpt"), **QUIET)
    return model.eval()


def by_hand_log_weight(model, x, z):
    """log p(x|z) + log p(z) - log q(z|x) for one image and one z, from the Gaussian densities written out."""
    mean, log_std = model.encoder(x[None])
    out = model.decoder(z[None])
    pixel_mean = torch.sigmoid(out[0, :1])
    sigma = model.hparams.sigma

    def log_normal(v, m, log_s):
        return (-0.5 * ((v - m) / log_s.exp()) ** 2 - log_s - 0.5 * math.log(2 * math.pi)).sum()

    return (log_normal(x, pixel_mean, torch.tensor(math.log(sigma))) + log_normal(z, torch.zeros(()), torch.zeros(()))
            - log_normal(z, mean[0], log_std[0]))


def test_log_weights_match_the_densities_written_out(nb, small_model, digits):
    x = next(iter(digits["test"]))[0][:3]
    torch.manual_seed(1)
    log_w = nb.iwae_log_weights(small_model, x, k=5, budget=6)  # budget 6: two images per pass, chunks of 2+2+1
    torch.manual_seed(1)
    q = small_model.posterior(x)
    z = torch.cat([q.sample((n,)) for n in (2, 2, 1)])  # the same draws in the same order
    assert log_w.shape == (5, 3)
    expected = torch.stack([torch.stack([by_hand_log_weight(small_model, x[i], z[k, i]) for i in range(3)])
                            for k in range(5)])
    torch.testing.assert_close(log_w, expected, rtol=1e-4, atol=1e-3)


def test_iwae_bound_grows_with_k_and_lies_above_the_elbo(nb, small_model, digits):
    bounds = nb.iwae_bounds(small_model, digits["test"], k_max=1000, seed=0)
    assert list(bounds) == [1, 10, 100, 1000]
    assert bounds[1] < bounds[10] < bounds[100] <= bounds[1000]
    torch.manual_seed(0)
    elbo = -torch.stack([small_model.calc_elbo(x).neg_elbo for _ in range(20) for x, _ in digits["test"]]).mean()
    assert bounds[1000] > elbo + 1  # nats per image: the bound is well above the ELBO on this model


def test_iwae_with_one_sample_is_the_elbo_in_expectation(nb, small_model, digits):
    x = next(iter(digits["test"]))[0]
    torch.manual_seed(0)
    log_w = nb.iwae_log_weights(small_model, x, k=4000, budget=4096)  # 4000 independent K = 1 bounds of each image
    torch.manual_seed(0)
    elbo = -torch.stack([small_model.calc_elbo(x).neg_elbo for _ in range(400)]).mean()  # analytic KL inside
    assert log_w.mean().item() == pytest.approx(elbo.item(), abs=0.01 * abs(elbo.item()))


def test_iwae_sizes(nb, small_model, digits):
    assert list(nb.iwae_bounds(small_model, digits["test"], k_max=30, seed=0, max_batches=1)) == [1, 10, 30]


class KnownEncoder(torch.nn.Module):
    """Dimensions 0 and 2 follow the image's brightness; 1 and 3 ignore the image (posterior = prior)."""

    def forward(self, x):
        brightness, zero = x.mean((1, 2, 3)), torch.zeros(len(x))
        return (torch.stack([4 * brightness, zero, -3 * brightness, zero], 1),
                torch.stack([zero - 1, zero, zero - 2, zero], 1))


def test_active_units_and_kl_find_collapsed_dimensions(nb):
    model = nb.VAE(latent_dim=4, channels=(4, 8), hidden=16).eval()
    model.encoder = KnownEncoder()
    levels = torch.linspace(0, 255, 40).to(torch.uint8)  # from black to white images
    data = nb.dequantize(levels.view(40, 1, 1, 1).expand(40, 1, 28, 28))
    loader = DataLoader(torch.utils.data.TensorDataset(data, torch.arange(40)), batch_size=16)
    means, log_stds, labels = nb.encode_all(model, loader, seed=0)
    assert means.shape == (40, 4) and labels.shape == (40,)
    assert nb.active_units(means) == 2
    kl = nb.kl_per_dimension(means, log_stds)
    assert kl[1] == 0 and kl[3] == 0 and (kl[[0, 2]] > 0.01).all()
    q = torch.distributions.Normal(means, log_stds.exp())
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean(0)
    torch.testing.assert_close(kl, expected)


def test_frechet_distance_of_known_gaussians(nb):
    torch.manual_seed(0)
    a = torch.randn(2000, 5) @ torch.randn(5, 5)
    assert nb.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0])
    assert nb.frechet_distance(a, a + shift) == pytest.approx(shift.square().sum().item(), rel=1e-6)
    centred = a - a.mean(0)
    trace = torch.cov(centred.T.double()).trace().item()
    assert nb.frechet_distance(centred, 2 * centred) == pytest.approx(trace, rel=1e-6)  # Tr(C + 4C - 2·2C)


def test_committed_classifier_is_accurate_and_recognises_real_digits(nb, mnist_root):
    classifier = nb.load_classifier(REPO / "checkpoints" / "mnist_classifier.pt", mnist_root)
    test_set = nb.load_mnist(mnist_root, train=False)
    torch.manual_seed(0)
    probs, features = nb.classify(classifier, nb.dequantize(test_set.images))
    assert features.shape == (10_000, 128)
    assert (probs.argmax(1) == test_set.labels).float().mean() >= 0.99
    verdict = nb.judge(classifier, nb.dequantize(test_set.images[5000:]), features[:5000])
    assert verdict["recognised"] > 0.95 and sum(verdict["digit_share"]) == pytest.approx(1)
    assert 0 < verdict["frechet"] < nb.judge(classifier, torch.rand(500, 1, 28, 28), features[:5000])["frechet"]


def test_cached_metrics_compute_once(nb, tmp_path):
    config, calls = tiny(nb), []
    for _ in range(2):
        assert nb.cached_metrics(config, tmp_path, "answer", lambda: calls.append(1) or 42) == 42
    assert calls == [1]
    assert json.loads((tmp_path / f"{config.run_name()}.metrics.json").read_text()) == {"answer": 42}


def test_study_trains_measures_and_resumes(nb, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    data = nb.DequantizedMNIST(SimpleNamespace(data=images, targets=torch.arange(64) % 10))
    loaders = {"train": DataLoader(data, batch_size=16, drop_last=True), "val": DataLoader(data, batch_size=32),
               "test": DataLoader(data, batch_size=32)}
    settings = [tiny(nb, latent_dim=2), tiny(nb, sigma="per-pixel")]
    monkeypatch.setattr(nb, "study_configs", lambda base: settings)
    classifier = nb.make_classifier().eval()
    nb.run_study(settings[0], loaders, tmp_path, classifier, iwae_k=3, **QUIET)
    for config in settings:
        metrics = json.loads((tmp_path / f"{config.run_name()}.metrics.json").read_text())
        assert list(metrics["iwae_test_k3"]) == ["1", "3"] and metrics["active_units"] <= config.latent_dim
        assert set(metrics["quality"]) == {"real", "samples", "reconstructions"}
    assert "results written to" in capsys.readouterr().out

    monkeypatch.setattr(nb, "train_model", lambda *args, **kwargs: pytest.fail("a measured setting was retrained"))
    nb.run_study(settings[0], loaders, tmp_path, classifier, iwae_k=3, **QUIET)
    assert capsys.readouterr().out.count("measured already") == 2
    assert len(nb.read_study(settings[0], tmp_path)) == 2


def test_bits_by_pixel_kind_add_up_to_the_reconstruction_term(nb, small_model, mnist_root):
    images = nb.load_mnist(mnist_root, train=False).images[:50]
    kinds = nb.bits_by_pixel_kind(small_model, images, seed=3)
    assert sum(k["share"] for k in kinds.values()) == pytest.approx(1)
    torch.manual_seed(3)  # the same noise and z: the ELBO's reconstruction term in bits per pixel
    reconstruction = small_model.calc_elbo(nb.dequantize(images)).reconstruction.item()
    expected = (784 * math.log(256) - reconstruction) / (784 * math.log(2))
    assert sum(k["share"] * k["bits"] for k in kinds.values()) == pytest.approx(expected, rel=1e-4)
    assert all(k["sigma"] == pytest.approx(0.1) for k in kinds.values())
