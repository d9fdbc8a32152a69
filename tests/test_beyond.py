"""The "Beyond the exercise" measurements: IWAE bound, latent diagnostics, sample quality and the study runner."""

import json
import math
from types import SimpleNamespace

import numpy as np
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
            "test": DataLoader(subset(test_set, range(9936, 10_000)), batch_size=32),
            "test_set": nb.DequantizedMNIST(SimpleNamespace(data=test_set.images[9936:, 0],
                                                            targets=test_set.labels[9936:]))}


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
    iwae = nb.iwae_bounds(small_model, digits["test_set"], k_max=1000, seed=0)
    assert iwae["images"] == 64 and list(iwae["bound"]) == ["1", "10", "100", "1000"]
    bounds = {int(k): v for k, v in iwae["bound"].items()}
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
    iwae = nb.iwae_bounds(small_model, digits["test_set"], k_max=30, seed=0, images=5)
    assert iwae["images"] == 5 and list(iwae["bound"]) == list(iwae["standard_error"]) == ["1", "10", "30"]


def test_iwae_bound_is_the_mean_of_logsumexp_minus_log_k_with_its_standard_error(nb, small_model, digits):
    iwae = nb.iwae_bounds(small_model, digits["test_set"], k_max=50, seed=4, images=6, budget=600)
    torch.manual_seed(4)  # the same noise and draws, by hand: one decoder pass of 6 images x 50 samples
    x = nb.dequantize(digits["test_set"].images[:6])
    log_w = nb.iwae_log_weights(small_model, x, 50, budget=600).double()
    for k in (1, 10, 50):
        per_image = torch.logsumexp(log_w[:k], 0) - math.log(k)
        assert iwae["bound"][str(k)] == pytest.approx(per_image.mean().item(), rel=1e-6)  # float32 sums
        assert iwae["standard_error"][str(k)] == pytest.approx(per_image.std().item() / math.sqrt(6), rel=1e-3)
    top = log_w.max(0).values  # the log of the mean weight, shifted so that the weights do not underflow
    assert nb.iwae_estimate(log_w).tolist() == pytest.approx((top + (log_w - top).exp().mean(0).log()).tolist())


def test_images_within_a_time_budget(nb, small_model, digits):
    assert nb.images_within(small_model, digits["test_set"], 10, None) == 64  # None: all of them
    assert nb.images_within(small_model, digits["test_set"], 10, 1e-9) == 1
    assert nb.images_within(small_model, digits["test_set"], 10, 1e9) == 64


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


class FirstPixels(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :5]


def feature_classifier():
    """A stand-in classifier whose 'penultimate features' (its first 10 layers) are the first 5 pixel values."""
    return torch.nn.Sequential(torch.nn.Flatten(), *[torch.nn.Identity() for _ in range(8)], FirstPixels(),
                               torch.nn.Linear(5, 10))


def as_images(features):
    return torch.nn.functional.pad(features, (0, 784 - features.shape[1])).view(-1, 1, 28, 28)


def frechet_by_hand(a, b):
    """||mu_a - mu_b||² + Tr(C_a + C_b - 2 (C_a^½ C_b C_a^½)^½), in float64 with symmetric square roots."""
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return ((a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross).item()


def test_frechet_distance_of_known_gaussians(nb):
    torch.manual_seed(0)
    a = torch.randn(2000, 5) @ torch.randn(5, 5)
    classifier = feature_classifier()
    metric = nb.frechet_metric(classifier, as_images(a))
    assert nb.judge(classifier, as_images(a), metric)["frechet"] == pytest.approx(0, abs=1e-5)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0])
    assert nb.judge(classifier, as_images(a + shift), metric)["frechet"] == pytest.approx(
        shift.square().sum().item(), rel=1e-5)
    b = torch.randn(1500, 5) * torch.tensor([0.5, 1, 2, 3, 1]) + 0.3
    assert nb.judge(classifier, as_images(b), metric)["frechet"] == pytest.approx(frechet_by_hand(b, a), rel=1e-6)


def test_committed_classifier_is_accurate_and_recognises_real_digits(nb, mnist_root):
    classifier = nb.load_classifier(REPO / "checkpoints" / "mnist_classifier.pt", mnist_root)
    test_set = nb.load_mnist(mnist_root, train=False)
    torch.manual_seed(0)
    images = nb.dequantize(test_set.images)
    assert (nb.classify(classifier, images).argmax(1) == test_set.labels).float().mean() >= 0.99
    metric = nb.frechet_metric(classifier, images[:5000])
    verdict = nb.judge(classifier, images[5000:], metric)
    assert verdict["recognised"] > 0.95 and sum(verdict["digit_share"]) == pytest.approx(1)
    assert 0 < verdict["frechet"] < nb.judge(classifier, torch.rand(500, 1, 28, 28), metric)["frechet"]
    # torchmetrics agrees with the Fréchet distance written out, on the classifier's own features
    with torch.no_grad():
        features = nb.ClassifierFeatures(classifier)(images)
    assert verdict["frechet"] == pytest.approx(frechet_by_hand(features[5000:], features[:5000]), rel=1e-6)


def test_cached_metrics_compute_once_and_never_write_the_shipped_file(nb, tmp_path):
    shipped, private, calls = tmp_path / "shipped.metrics.json", tmp_path / "run" / "metrics.json", []
    shipped.write_text(json.dumps({"shipped": {"images": 10}}))
    before = shipped.read_bytes()
    for _ in range(2):
        assert nb.cached_metrics("answer", lambda: calls.append(1) or 42, shipped, private) == 42
    assert calls == [1]
    assert json.loads(private.read_text()) == {"answer": 42}
    assert nb.cached_metrics("shipped", lambda: pytest.fail("recomputed"), shipped, private) == {"images": 10}
    more = nb.cached_metrics("shipped", lambda: {"images": 20}, shipped, private, lambda cached: cached["images"] >= 20)
    assert more == {"images": 20} and json.loads(private.read_text())["shipped"] == {"images": 20}
    assert shipped.read_bytes() == before


def test_study_trains_measures_and_resumes(nb, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    data = nb.DequantizedMNIST(SimpleNamespace(data=images, targets=torch.arange(64) % 10))
    loaders = {"train": DataLoader(data, batch_size=16, drop_last=True), "val": DataLoader(data, batch_size=32),
               "test": DataLoader(data, batch_size=32)}
    settings = [tiny(nb, latent_dim=2), tiny(nb, sigma="per-pixel")]
    monkeypatch.setattr(nb, "study_configs", lambda base: settings)  # what read_study looks for
    classifier = nb.make_classifier().eval()
    nb.run_study(settings, loaders, tmp_path, classifier, iwae_k=3, **QUIET)
    for config in settings:
        metrics = json.loads((tmp_path / f"{config.run_name()}.metrics.json").read_text())
        assert list(metrics["iwae_k3"]["bound"]) == ["1", "3"] and metrics["active_units"] <= config.latent_dim
        assert set(metrics["quality"]) == {"real", "samples", "reconstructions", "mixture samples"}
        mixture = nb.load_mixture(config.run_file(tmp_path, ".mixture.npz"))
        assert len(mixture["weights"]) == metrics["mixture"]["components"] and 0 <= metrics["endpoint_fidelity"] <= 1
    assert "results written to" in capsys.readouterr().out

    monkeypatch.setattr(nb, "train_model", lambda *args, **kwargs: pytest.fail("a measured setting was retrained"))
    monkeypatch.setattr(nb, "measure", lambda *args, **kwargs: pytest.fail("a measured setting was re-measured"))
    first = tmp_path / f"{settings[0].run_name()}.metrics.json"
    before = json.loads(first.read_text())
    assert before["aggregate_posterior"]["images"] == 64  # every training image, not only the full batches
    # a measurement added later, and the bound of the study's K where only another K was measured (the graded model's
    # K = 1000 run over all test images), are taken alone, from the saved checkpoint, as the first run took them
    later = {**before, "iwae_k1000": before["iwae_k3"]}
    del later["aggregate_posterior"], later["iwae_k3"]
    first.write_text(json.dumps(later))
    nb.run_study(settings, loaders, tmp_path, classifier, iwae_k=3, **QUIET)
    out = capsys.readouterr().out
    assert out.count("measured already") == 2 and out.count("added aggregate_posterior, iwae_k3") == 1
    after = json.loads(first.read_text())
    assert after == {**later, "aggregate_posterior": after["aggregate_posterior"], "iwae_k3": after["iwae_k3"]}
    for key in ("kl", "mutual_information"):
        assert after["aggregate_posterior"][key] == pytest.approx(before["aggregate_posterior"][key], rel=1e-6)
    assert after["iwae_k3"]["bound"] == pytest.approx(before["iwae_k3"]["bound"], rel=1e-6)
    assert len(nb.read_study(settings[0], tmp_path)) == 2

    # a bound over other test images than the study asks for is neither skipped as measured nor overwritten
    saved = first.read_bytes()
    with pytest.raises(ValueError, match="over 64 test images, not 10: run the whole study over 64 .* its 'iwae_k3'"):
        nb.run_study(settings, loaders, tmp_path, classifier, iwae_k=3, iwae_images=10, **QUIET)
    assert first.read_bytes() == saved


def test_bits_by_pixel_kind_add_up_to_the_reconstruction_term(nb, small_model, mnist_root):
    images = nb.load_mnist(mnist_root, train=False).images[:50]
    kinds = nb.bits_by_pixel_kind(small_model, images, seed=3)
    assert sum(k["share"] for k in kinds.values()) == pytest.approx(1)
    torch.manual_seed(3)  # the same noise and z: the ELBO's reconstruction term in bits per pixel
    reconstruction = small_model.calc_elbo(nb.dequantize(images)).reconstruction.item()
    expected = (784 * math.log(256) - reconstruction) / (784 * math.log(2))
    assert sum(k["share"] * k["bits"] for k in kinds.values()) == pytest.approx(expected, rel=1e-4)
    assert all(k["sigma"] == pytest.approx(0.1) for k in kinds.values())


def test_fit_mixture_keeps_the_number_of_components_the_held_out_codes_like_best(nb):
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-4.0, 0.0], [4.0, 1.0]])

    def codes(n):
        which = torch.randint(0, 2, (n,), generator=generator)
        return centres[which] + 0.5 * torch.randn(n, 2, generator=generator)

    mixture = nb.fit_mixture(codes(3000), codes(1000), seed=0, components=(1, 2))
    assert len(mixture["weights"]) == 2 and mixture["heldout_loglik"][1] > mixture["heldout_loglik"][0]
    order = np.argsort(mixture["means"][:, 0])
    np.testing.assert_allclose(mixture["means"][order], centres.numpy(), atol=0.1)


def test_sample_quality_takes_the_known_sets_as_they_are_and_judges_the_rest_alike(nb, small_model, digits):
    torch.manual_seed(0)
    classifier = nb.make_classifier().eval()
    mixture = {"weights": np.array([0.5, 0.5]), "means": np.array([[-1.0, 0.0], [1.0, 0.0]]),
               "covariances": np.stack([np.eye(2) * 0.1] * 2)}
    everything = nb.sample_quality(small_model, classifier, digits["test_set"], 3, mixture)
    assert set(everything) == {"real", "samples", "reconstructions", "mixture samples"}
    known = {"real": {"judged": "before"}, "samples": everything["samples"]}
    again = nb.sample_quality(small_model, classifier, digits["test_set"], 3, mixture, known=known)
    assert again["real"] is known["real"] and again["samples"] is known["samples"]
    # the sets after the skipped ones come out as in the full run, to the last digit
    assert again["reconstructions"] == everything["reconstructions"]
    assert again["mixture samples"] == everything["mixture samples"]


def test_mixture_samples_come_from_the_fitted_mixture(nb):
    mixture = {"weights": np.array([0.25, 0.75]), "means": np.array([[-10.0, 0.0, 3.0], [10.0, 2.0, -1.0]]),
               "covariances": np.stack([np.diag([0.5, 1.0, 2.0]), [[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0, 0, 0.1]]])}
    z = nb.mixture_sample(mixture, 40_000, seed=3).double()
    assert z.shape == (40_000, 3)
    second = z[:, 0] > 0  # the two components are 20 apart along the first axis
    assert second.double().mean().item() == pytest.approx(0.75, abs=0.01)
    for part, k in ((z[~second], 0), (z[second], 1)):
        np.testing.assert_allclose(part.mean(0).numpy(), mixture["means"][k], atol=0.05)
        np.testing.assert_allclose(np.cov(part.numpy().T), mixture["covariances"][k], atol=0.06)
    torch.testing.assert_close(nb.mixture_sample(mixture, 10, seed=3), nb.mixture_sample(mixture, 10, seed=3))


def test_a_mixture_is_saved_and_read_back_without_pickles(nb, tmp_path):
    mixture = nb.fit_mixture(torch.randn(300, 2), torch.randn(100, 2), seed=0, components=(1, 2))
    np.savez(tmp_path / "m.npz", **mixture)
    again = nb.load_mixture(tmp_path / "m.npz")
    assert set(again) == set(mixture)
    for key in mixture:
        np.testing.assert_array_equal(again[key], mixture[key])


def test_the_gaussian_floor_of_a_dequantized_pixel(nb):
    """KL(U[0, 1/256) || best Gaussian) integrated numerically: the 0.25 bits the per-pixel model cannot beat."""
    x = (np.arange(200_000) + 0.5) / 200_000 / 256  # midpoints across the bin
    s = 1 / 256 / np.sqrt(12)
    log_gauss = -0.5 * ((x - 0.5 / 256) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi))
    kl_nats = np.mean(np.log(256) - log_gauss)
    assert nb.gaussian_floor_bits() == pytest.approx(kl_nats / np.log(2), rel=1e-6)
    assert nb.gaussian_floor_bits() == pytest.approx(0.2546, abs=1e-4)


def test_the_aggregate_posterior_density_matches_torch_distributions(nb):
    """log q(z) of (1/N) sum_i N(m_i, s_i²) against torch's own mixture, with wide and with 0.01-narrow posteriors."""
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    generator = torch.Generator().manual_seed(0)
    for scale in (0.5, 0.01):
        means = torch.randn(30, 3, generator=generator, dtype=torch.float64)
        log_stds = np.log(scale) + 0.3 * torch.randn(30, 3, generator=generator, dtype=torch.float64)
        z = means[:10] + scale * torch.randn(10, 3, generator=generator, dtype=torch.float64)  # near the codes
        z = torch.cat([z, torch.randn(10, 3, generator=generator, dtype=torch.float64)])  # and anywhere
        mixture = MixtureSameFamily(Categorical(torch.ones(30, dtype=torch.float64)),
                                    Independent(Normal(means, log_stds.exp()), 1))
        torch.testing.assert_close(nb.log_aggregate_posterior(z, means, log_stds), mixture.log_prob(z))


def test_the_kl_splits_into_mutual_information_and_the_marginal_kl(nb):
    generator = torch.Generator().manual_seed(1)
    # every image with the same posterior: the code says nothing about the image, I(x; z) = 0, and the marginal KL
    # is the whole KL, 0.5 (0.25 + 0.16 - 1) - ln 0.4 per dimension
    means, log_stds = torch.full((500, 2), 0.5), torch.full((500, 2), math.log(0.4))
    same = nb.kl_decomposition(means, log_stds, seed=0)
    expected = 2 * (0.5 * (0.25 + 0.16 - 1) - math.log(0.4))
    assert same["kl"] == pytest.approx(expected) and same["mutual_information"] == pytest.approx(0, abs=1e-9)
    assert same["marginal_kl"] == pytest.approx(expected)
    # codes far apart and narrow: each identifies its image, so I(x; z) = ln N
    means, log_stds = 3 * torch.randn(40, 2, generator=generator), torch.full((40, 2), math.log(1e-4))
    apart = nb.kl_decomposition(means, log_stds, seed=0)
    assert apart["images"] == 40 and apart["mutual_information"] == pytest.approx(math.log(40), abs=1e-6)
    assert apart["marginal_kl"] == pytest.approx(apart["kl"] - math.log(40), abs=1e-6)
    # overlapping posteriors in one dimension: I(x; z) = mean_i ∫ q_i log(q_i / q) dz, integrated on a fine grid
    means, stds = torch.tensor([[-1.0], [0.0], [0.5], [2.0]]), torch.tensor([[0.5], [0.8], [0.3], [1.0]])
    grid = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    densities = torch.distributions.Normal(means.double(), stds.double()).log_prob(grid).exp()  # (4, grid)
    mixture = densities.mean(0)
    integrand = densities * (densities.clamp_min(1e-300).log() - mixture.clamp_min(1e-300).log())
    information = torch.trapezoid(integrand, grid).mean().item()
    overlap = nb.kl_decomposition(means, stds.log(), n=40_000, seed=0)
    assert 0.3 < information < math.log(4) and overlap["mutual_information"] == pytest.approx(information, abs=0.02)


def test_mixture_density_matches_scikit_learn(nb):
    from sklearn.mixture import GaussianMixture

    codes = torch.cat([torch.randn(300, 2) - 3, 0.5 * torch.randn(200, 2) + 2])
    fitted = GaussianMixture(2, covariance_type="full", random_state=0).fit(codes.double().numpy())
    mixture = {"weights": fitted.weights_, "means": fitted.means_, "covariances": fitted.covariances_}
    z = 3 * torch.randn(50, 2)
    np.testing.assert_allclose(nb.mixture_log_density(mixture, z).numpy(), fitted.score_samples(z.double().numpy()),
                               rtol=1e-9, atol=1e-9)


def test_recognised_by_density_groups_the_draws_by_how_dense_the_codes_are(nb, small_model):
    def classifier(logit):  # every image the same class probabilities: all recognised, or none
        stub = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        torch.nn.init.zeros_(stub[1].weight)
        with torch.no_grad():
            stub[1].bias.copy_(torch.tensor([logit] + [0.0] * 9))
        return stub

    prior = {"weights": np.ones(1), "means": np.zeros((1, 2)), "covariances": np.eye(2)[None]}
    groups = nb.recognised_by_density(small_model, classifier(20.0), prior, seed=0, n=1000)
    assert len(groups) == 10 and all(g["low"] == pytest.approx(0) == g["high"] for g in groups)  # m = p: ratio 0
    assert all(g["recognised"] == 1 for g in groups)
    wide = {**prior, "covariances": 4 * np.eye(2)[None]}  # ratio 3/8 |z|² - 2 ln 2: rises with |z|
    groups = nb.recognised_by_density(small_model, classifier(0.0), wide, seed=0, n=1000)
    assert groups[0]["low"] == pytest.approx(-2 * math.log(2), abs=0.01) and all(g["recognised"] == 0 for g in groups)
    assert all(a["high"] <= b["low"] for a, b in zip(groups, groups[1:], strict=False))
    # a decoder that draws a white image for |z| > 1.5 and a black one inside, and a classifier sure of white images
    # only (p = 0.88 < 0.9 for black ones): exactly the draws with a ratio above 3/8 · 1.5² − 2 ln 2 are recognised
    def white_outside_decode(z):
        return (z.norm(dim=1) > 1.5).float()[:, None, None, None].expand(-1, 1, 28, 28)

    white_outside = SimpleNamespace(hparams=SimpleNamespace(latent_dim=2), device=torch.device("cpu"),
                                    decode=white_outside_decode)
    sure_of_white = classifier(math.log(0.88 * 9 / 0.12))  # bias: p = 0.88 on a black image
    torch.nn.init.constant_(sure_of_white[1].weight[0], 0.01)  # a white image adds 7.84 to the first logit
    edge = 3 / 8 * 1.5**2 - 2 * math.log(2)
    groups = nb.recognised_by_density(white_outside, sure_of_white, wide, seed=0, n=1000)
    expected = [1.0 if g["low"] > edge else 0.0 if g["high"] < edge else None for g in groups]
    assert 0 in expected and 1 in expected
    assert all(g["recognised"] == e for g, e in zip(groups, expected, strict=True) if e is not None)
