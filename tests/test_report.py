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
    assert "| test | -158.5 | " + f"{nb.nats_to_bpd(-158.5):.3f} | 170.0 | 11.50 |" in table
    assert "| validation | -160.0 |" in table
    config = nb.VAEConfig()
    record = {"history": HISTORY, "train_seconds": 600.0, "hardware": "CPU, 2 cores"}
    summary = nb.answer_summary(config, record, RESULTS)
    assert "−ELBO = -158.5 nats per image = " + f"{nb.nats_to_bpd(-158.5):.3f} bits/dim" in summary
    assert "checkpoint kept is epoch 3" in summary and "(-160.0 nats)" in summary
    assert "10.0 minutes of training on CPU, 2 cores" in summary


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
