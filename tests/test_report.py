"""The figures and the answer text, drawn from the defs-only import (so they use no notebook globals)."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

HISTORY = {"epoch": [0, 1, 2],
           "train_neg_elbo": [900.0, -100.0, -150.0], "val_neg_elbo": [500.0, -120.0, -160.0],
           "train_reconstruction": [-890.0, 110.0, 162.0], "val_reconstruction": [-490.0, 130.0, 172.0],
           "train_kl": [10.0, 10.0, 12.0], "val_kl": [10.0, 10.0, 12.0]}
RESULTS = {"val": {"neg_elbo": -160.0, "reconstruction": 172.0, "kl": 12.0},
           "test": {"neg_elbo": -158.5, "reconstruction": 170.0, "kl": 11.5}}


def test_curves_are_saved_with_the_elbo_sign_and_zoom(nb, tmp_path):
    fig = nb.plot_elbo_curves(HISTORY, tmp_path / "elbo.png")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["training", "validation"]
    assert list(ax.lines[1].get_ydata()) == [-500.0, 120.0, 160.0]  # ELBO = -loss
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3]
    low, high = ax.get_ylim()
    assert low < 100 and 160 < high < 200  # the first epoch is left off the scale
    assert "ELBO" in ax.get_ylabel() and "nats" in ax.get_ylabel() and ax.get_title()
    fig = nb.plot_term_curves(HISTORY, tmp_path / "terms.png")
    assert all(ax.get_title() and "nats" in ax.get_ylabel() for ax in fig.axes)
    assert (tmp_path / "elbo.png").stat().st_size > 10_000 and (tmp_path / "terms.png").exists()


def test_results_table_and_summary_quote_the_numbers(nb):
    table = nb.results_table(RESULTS)
    assert "| test | -158.5 | " + f"{nb.nats_to_bpd(-158.5):.3f}" in table
    config = nb.VAEConfig()
    record = {"history": HISTORY, "train_seconds": 600.0, "hardware": "CPU (x86_64, 2 cores)", "precision": "32-true"}
    summary = nb.answer_summary(config, record, RESULTS, QUALITY, 0.9731)
    assert "−ELBO = -158.5 nats" in summary and "epoch 3" in summary and "10.0 minutes" in summary
    assert "85.4% of 5,000" in summary and "97.3% of the test images" in summary
    assert "in 32-bit floats" in summary and "32-true" not in summary and "threads" not in summary


def test_interpolation_walks_from_z1_to_z2(nb):
    torch.manual_seed(0)
    model = nb.VAE(latent_dim=2).eval()
    x1, x2 = torch.rand(2, 1, 28, 28)
    torch.manual_seed(7)
    path = nb.interpolate(model, x1, x2)
    torch.manual_seed(7)
    z1, z2 = model.posterior(torch.stack([x1, x2])).sample()
    assert path.shape == (10, 1, 28, 28)
    torch.testing.assert_close(path[0], torch.sigmoid(model.decoder(z1[None]))[0].detach())
    torch.testing.assert_close(path[-1], torch.sigmoid(model.decoder(z2[None]))[0].detach())
    torch.testing.assert_close(path[4], torch.sigmoid(model.decoder((5 / 9 * z1 + 4 / 9 * z2)[None]))[0].detach())


@pytest.mark.parametrize("digits", [[3, 8], [1, 7]])
def test_first_index_of_digits(nb, digits):
    fake = type("D", (), {"labels": torch.tensor([1, 3, 7, 8, 3, 1])})()
    assert [int(fake.labels[i]) for i in nb.first_index_of_digits(fake, digits)] == digits


QUALITY = {name: {"recognised": share, "digit_share": [0.1] * 10, "frechet": fid}
           for name, share, fid in (("real", 0.986, 0.5), ("samples", 0.854, 170.7), ("reconstructions", 0.97, 87.9))}


def test_quality_and_iwae_tables_quote_the_numbers(nb, tmp_path):
    assert "| samples | 85.4% | 170.70 |" in nb.quality_table(QUALITY)
    iwae = {"images": 10_000, "bound": {"1": -43.8, "1000": -40.0}, "standard_error": {"1": 0.21, "1000": None}}
    table = nb.iwae_table(iwae)
    assert "| 1 | 43.8 ± 0.2 | 8.081 |" in table
    assert "| 1000 | 40.0 | 8.074 |" in table  # bpd = (40 + 784 ln 256) / (784 ln 2)
    assert "10,000 test images" in table
    fig = nb.plot_digit_shares(QUALITY, "Which digits?", tmp_path / "shares.png")
    ax = fig.axes[0]
    assert "samples (85% recognised, Fréchet 170.7)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "%" in ax.get_ylabel() and ax.get_xlabel() and (tmp_path / "shares.png").exists()
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # beside the bars, never over them


def test_study_table_has_one_row_per_setting_in_bits_per_dim(nb):
    config = nb.VAEConfig(sigma="learned", latent_dim=8)
    quality = {**QUALITY, "mixture samples": {"recognised": 0.97, "digit_share": [0.1] * 10, "frechet": 60.2}}
    # the K = 100 column comes from the bound over the most images that includes K = 100 (here the K = 1000 run)
    metrics = {"test": {"neg_elbo": -1000.0, "reconstruction": 1030.0, "kl": 30.0},
               "iwae_k10": {"images": 5000, "bound": {"1": 0.0, "10": 0.0}},
               "iwae_k1000": {"images": 2000, "bound": {"1": 1000.0, "100": 1010.0, "1000": 1020.0}}, "active_units": 6,
               "learned_sigma": 0.0512, "quality": quality, "endpoint_fidelity": 0.965,
               "aggregate_posterior": {"images": 50_000, "kl": 30.4, "mutual_information": 10.8, "marginal_kl": 19.6}}
    table = nb.study_table([(config, metrics, {"train_seconds": 600})]).splitlines()
    assert len(table) == 3 and "IWAE K=100 (K=1) on 2,000 test images" in table[0]
    assert table[2] == ("| learned (shared) → 0.051 | 8 | -1000.0 | 6.160 | 6.141 (6.160) | 30.0 (10.8 + 19.6) | 6/8 | "
                        "85.4% / 97.0% | 171 / 60 | 88 | 96.5% | 10 |")
    # a run of K = 100 itself wins over a larger run that includes K = 100: the study's rows share their images
    metrics["iwae_k1000"]["images"] = 10_000
    metrics["iwae_k100"] = {"images": 2000, "bound": {"1": 1000.0, "100": 1020.0}}
    table = nb.study_table([(config, metrics, {"train_seconds": 600})]).splitlines()
    assert "on 2,000 test images" in table[0] and "| 6.123 (6.160) |" in table[2]


def test_the_frontier_shows_every_setting_with_both_priors(nb, tmp_path):
    study = []
    for i, changes in enumerate([{}, {"sigma": 0.3}, {"latent_dim": 16}, {"sigma": "learned"},
                                 {"sigma": "per-pixel", "latent_dim": 32}]):
        quality = {"samples": {"recognised": 0.8 + 0.01 * i, "frechet": 150.0 - i},
                   "mixture samples": {"recognised": 0.95, "frechet": 60.0 + i}}
        metrics = {"iwae_k100": {"images": 2000, "bound": {"100": -100.0 * i}}, "quality": quality,
                   "learned_sigma": 0.2}
        study.append((nb.dataclasses.replace(nb.VAEConfig(), **changes), metrics, {}))
    fig = nb.plot_frontier(study, {"recognised": 0.986, "frechet": 49.6}, tmp_path / "frontier.png")
    share, fid = fig.axes
    assert len(share.collections) == len(fid.collections) == 2 * len(study)  # a filled and an open point each
    assert "bits per dimension" in share.get_xlabel() and share.get_xscale() == "log"
    assert "%" in share.get_ylabel() and "Fréchet" in fid.get_ylabel()
    offsets = [c.get_offsets()[0] for c in share.collections]
    assert [round(float(y), 6) for _, y in offsets[:2]] == [80.0, 95.0]  # N(0, I) then mixture, in percent
    assert (tmp_path / "frontier.png").stat().st_size > 20_000


def test_the_frontier_numbers_a_crowded_cluster_without_overlap(nb, tmp_path):
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
        study.append((nb.dataclasses.replace(nb.VAEConfig(), **changes), metrics, {}))
    fig = nb.plot_frontier(study, {"recognised": 0.986, "frechet": 49.6}, tmp_path / "frontier.png")
    fig.canvas.draw()
    for ax in fig.axes:
        numbers = [t for t in ax.texts if t.get_text().isdigit()]
        assert sorted(int(t.get_text()) for t in numbers) == list(range(1, 8))
        boxes = [t.get_window_extent() for t in numbers]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert [h.get_label() for h in fig.legends[1].legend_handles][0] == "σ 0.1, z3 (graded)"



def test_the_manifold_decodes_prior_quantiles_and_names_its_model(nb, tmp_path):
    torch.manual_seed(0)
    config = nb.VAEConfig(sigma=0.2, latent_dim=2, channels=(4, 8), hidden=16)
    model = nb.VAE(**nb.dataclasses.asdict(config)).eval()
    fig = nb.plot_manifold(model, config, tmp_path / "manifold.png", n=3)
    assert fig.axes[0].get_title().startswith("The decoded 2-D latent space (σ = 0.2, latent size 2)")
    q = torch.distributions.Normal(0, 1).icdf(torch.tensor([0.03, 0.5, 0.97]))
    # rows from the top: z2 from high to low; across a row z1 from low to high
    z = torch.tensor([[q[j], q[2 - i]] for i in range(3) for j in range(3)])
    with torch.no_grad():
        expected = nb.image_grid(model.decode(z), 3)
    torch.testing.assert_close(torch.as_tensor(fig.axes[0].images[0].get_array().data), expected)
    assert (tmp_path / "manifold.png").exists()
