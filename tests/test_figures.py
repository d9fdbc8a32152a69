"""The figures beyond the exercise, drawn from known inputs: what each shows, where, and how it is labelled."""

import dataclasses

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import QUALITY, digit_set  # noqa: E402

from vae_mnist.figures import (  # noqa: E402
    plot_digit_shares,
    plot_frontier,
    plot_latent_diagnostics,
    plot_manifold,
    plot_recognised_by_density,
    plot_reconstructions,
    plot_study_samples,
    setting_label,
)
from vae_mnist.judge import reconstruct  # noqa: E402
from vae_mnist.mixture import mixture_sample  # noqa: E402
from vae_mnist.notebook import VAE, VAEConfig, dequantize, image_grid  # noqa: E402

REAL = {"recognised": 0.986, "frechet": 49.6}


def tiny_model(config: VAEConfig) -> VAE:
    torch.manual_seed(0)
    return VAE(**{**dataclasses.asdict(config), "channels": (4, 8), "hidden": 16}).eval()


def shown(ax) -> torch.Tensor:
    return torch.as_tensor(np.asarray(ax.images[0].get_array()))


def test_setting_labels_name_sigma_what_it_learned_and_a_learning_rate_other_than_the_default():
    assert setting_label(VAEConfig(), {}) == "0.1"
    assert setting_label(VAEConfig(sigma="learned"), {"learned_sigma": 0.05123}) == "learned (shared) → 0.051"
    assert setting_label(VAEConfig(sigma="per-pixel", latent_dim=8, lr=1e-3), {}) == "per pixel, lr 0.001"


def test_digit_shares_stand_beside_their_legend(tmp_path):
    fig = plot_digit_shares(QUALITY, "Which digits?", tmp_path / "shares.png")
    ax = fig.axes[0]
    assert "samples (85% recognised, Fréchet 170.7)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert [round(bar.get_height(), 6) for bar in ax.containers[1]] == [10.0] * 10  # percent of the images
    assert "%" in ax.get_ylabel() and ax.get_title() == "Which digits?" and (tmp_path / "shares.png").exists()
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # beside the bars, never over them


def test_reconstructions_show_the_test_images_above_their_reconstructions(tmp_path):
    model = tiny_model(VAEConfig(latent_dim=2))
    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    fig = plot_reconstructions(model, digit_set(images, torch.zeros(20, dtype=torch.long)), tmp_path / "r.png", n=4)
    torch.manual_seed(0)
    x = dequantize(images[:4])
    torch.testing.assert_close(shown(fig.axes[0]), image_grid(torch.cat([x, reconstruct(model, x)]), 4))
    assert (tmp_path / "r.png").exists()


def test_latent_diagnostics_map_the_codes_and_count_the_active_dimensions(tmp_path):
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(300, 4, generator=generator) * torch.tensor([2.0, 1.0, 0.01, 0.01])
    kl = torch.tensor([2.0, 0.5, 0.0, 0.0])
    fig = plot_latent_diagnostics(means, torch.arange(300) % 10, kl, tmp_path / "latent.png")
    ax_map, ax_kl = fig.axes[:2]
    assert len(ax_map.collections) == 10 and sum(len(c.get_offsets()) for c in ax_map.collections) == 300
    assert [bar.get_height() for bar in ax_kl.patches] == kl.tolist()
    assert ax_kl.get_title() == "KL per dimension (2 of 4 active)"


def test_recognised_by_density_shows_each_group_in_percent_with_its_range(tmp_path):
    groups = [{"low": -3.25, "high": -1.0, "recognised": 0.5}, {"low": -1.0, "high": 2.0, "recognised": 0.95}]
    split = {"images": 50_000, "kl": 14.7, "mutual_information": 10.7, "marginal_kl": 4.0}
    fig = plot_recognised_by_density(groups, split, 0.986, tmp_path / "density.png")
    ax = fig.axes[0]
    assert [bar.get_height() for bar in ax.patches] == [50.0, 95.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["−3.2 to −1.0", "−1.0 to 2.0"]
    assert "14.7 nats = I(x; z) 10.7 (at most ln 50,000 = 10.8) + KL(q(z) ‖ N(0, I)) 4.0" in ax.get_title()
    assert ax.lines[0].get_ydata()[0] == pytest.approx(98.6)  # the real digits' share


def test_study_samples_pair_the_prior_with_the_mixture_for_every_setting(tmp_path):
    configs = [VAEConfig(latent_dim=2, max_epochs=8), VAEConfig(sigma="learned", latent_dim=2, max_epochs=8),
               VAEConfig(latent_dim=3, max_epochs=8)]
    quality = {"samples": {"recognised": 0.8}, "mixture samples": {"recognised": 0.95}}
    study = [(c, {"quality": quality, "mixture": {"components": 5}, "learned_sigma": 0.05}, {}) for c in configs]
    models = {c: tiny_model(c) for c in configs}
    mixtures = {c: {"weights": np.ones(1), "means": np.ones((1, c.latent_dim)),
                    "covariances": np.eye(c.latent_dim)[None]} for c in configs}
    fig = plot_study_samples(study, models, mixtures, tmp_path / "study.png", n=4)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 8 and len(drawn) == 6  # two rows of two pairs; the spare pair stays empty
    config = configs[1]
    torch.manual_seed(config.seed)
    prior = models[config].sample(4)
    mixture = models[config].decode(mixture_sample(mixtures[config], 4, config.seed))
    torch.testing.assert_close(shown(drawn[2]), image_grid(prior, 2))
    torch.testing.assert_close(shown(drawn[3]), image_grid(mixture, 2))
    assert drawn[3].get_title() == "learned (shared) → 0.050, latent 2\nz ~ mixture of 5: 95% recognised"


def test_the_frontier_shows_every_setting_with_both_priors(tmp_path):
    study = []
    for i, changes in enumerate([{}, {"sigma": 0.3}, {"latent_dim": 16}, {"sigma": "learned"},
                                 {"sigma": "per-pixel", "latent_dim": 32}]):
        quality = {"samples": {"recognised": 0.8 + 0.01 * i, "frechet": 150.0 - i},
                   "mixture samples": {"recognised": 0.95, "frechet": 60.0 + i}}
        metrics = {"iwae_k100": {"images": 2000, "bound": {"100": -100.0 * i}}, "quality": quality,
                   **({"learned_sigma": 0.2} if changes.get("sigma") == "learned" else {})}
        study.append((dataclasses.replace(VAEConfig(), **changes), metrics, {}))
    fig = plot_frontier(study, REAL, tmp_path / "frontier.png")
    share, fid = fig.axes
    assert len(share.collections) == len(fid.collections) == 2 * len(study)  # a filled and an open point each
    assert "bits per dimension" in share.get_xlabel() and share.get_xscale() == "log"
    assert "%" in share.get_ylabel() and "Fréchet" in fid.get_ylabel() and fid.get_yscale() == "log"
    offsets = [c.get_offsets()[0] for c in share.collections]
    assert [round(float(y), 6) for _, y in offsets[:2]] == [80.0, 95.0]  # N(0, I) then mixture, in percent
    assert [round(float(y), 6) for _, y in (c.get_offsets()[0] for c in fid.collections[2:4])] == [149.0, 61.0]
    assert [round(float(x), 6) for x, _ in offsets[::2]] == [
        round((100.0 * i + 784 * np.log(256)) / (784 * np.log(2)), 6) for i in range(5)]  # the K = 100 bound in bpd
    assert [h.get_label() for h in fig.legends[1].legend_handles] == [
        "σ 0.1, z3 (graded)", "σ 0.3, z3", "σ 0.1, z16", "σ learned (shared) → 0.200, z3", "σ per pixel, z32"]
    assert (tmp_path / "frontier.png").stat().st_size > 20_000


def test_the_frontier_numbers_a_crowded_cluster_without_overlap(tmp_path):
    # six settings within 0.05 bits/dim and half a percent of each other, and one far away that sets the scale (as
    # the per-pixel models do): every number stays separate and readable
    study = []
    for i, changes in enumerate([{}, {"sigma": 0.3}, {"sigma": 0.03}, {"latent_dim": 2}, {"latent_dim": 8},
                                 {"sigma": 1.0}, {"sigma": "per-pixel"}]):
        crowded = i < 6
        quality = {"samples": {"recognised": 0.82 + 0.001 * i if crowded else 0.25,
                               "frechet": 160.0 + 0.5 * i if crowded else 700.0},
                   "mixture samples": {"recognised": 0.95, "frechet": 60.0}}
        metrics = {"iwae_k100": {"images": 2000, "bound": {"100": 5.0 * i if crowded else 2100.0}}, "quality": quality}
        study.append((dataclasses.replace(VAEConfig(), **changes), metrics, {}))
    fig = plot_frontier(study, REAL, tmp_path / "frontier.png")
    fig.canvas.draw()
    for ax in fig.axes:
        numbers = [t for t in ax.texts if t.get_text().isdigit()]
        assert sorted(int(t.get_text()) for t in numbers) == list(range(1, 8))
        boxes = [t.get_window_extent() for t in numbers]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert [h.get_label() for h in fig.legends[1].legend_handles][0] == "σ 0.1, z3 (graded)"


def test_the_manifold_decodes_prior_quantiles_and_names_its_model(tmp_path):
    config = VAEConfig(sigma=0.2, latent_dim=2, channels=(4, 8), hidden=16)
    model = tiny_model(config)
    fig = plot_manifold(model, config, tmp_path / "manifold.png", n=3)
    assert fig.axes[0].get_title().startswith("The decoded 2-D latent space (σ = 0.2, latent size 2)")
    q = torch.distributions.Normal(0, 1).icdf(torch.tensor([0.03, 0.5, 0.97]))
    # rows from the top: z2 from high to low; across a row z1 from low to high
    z = torch.tensor([[q[j], q[2 - i]] for i in range(3) for j in range(3)])
    with torch.no_grad():
        expected = image_grid(model.decode(z), 3)
    torch.testing.assert_close(shown(fig.axes[0]), expected)
    assert (tmp_path / "manifold.png").exists()
