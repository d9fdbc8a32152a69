"""The model, the ELBO and sampling, checked against independent computations."""

import inspect
import math
import re

import numpy as np
import pytest
import torch
import torch.nn as nn


@pytest.fixture
def model(nb):
    torch.manual_seed(0)
    return nb.VAE(sigma=0.1, latent_dim=3)


@pytest.fixture
def images(nb):
    torch.manual_seed(1)
    return nb.dequantize(torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8))


def test_calc_elbo_matches_the_gaussian_formulas(nb, model, images):
    torch.manual_seed(123)
    terms = model.calc_elbo(images)

    torch.manual_seed(123)  # the same reparameterization noise, drawn by hand
    mean, log_std = model.encoder(images)
    std = log_std.exp()
    z = mean + std * torch.randn_like(mean)
    pixel_mean = torch.sigmoid(model.decoder(z))  # the decoder gives the logits of the pixel means
    sigma = 0.1
    log_lik = (-0.5 * ((images - pixel_mean) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi))
    reconstruction = log_lik.sum(dim=(1, 2, 3))
    kl = 0.5 * (std**2 + mean**2 - 1 - 2 * log_std).sum(dim=1)

    torch.testing.assert_close(terms.reconstruction, reconstruction.mean())
    torch.testing.assert_close(terms.kl, kl.mean())
    torch.testing.assert_close(terms.neg_elbo, (kl - reconstruction).mean())
    assert terms.kl > 0


def test_kl_is_zero_when_the_posterior_is_the_prior(model, images):
    for head in (model.encoder.mean, model.encoder.log_std):
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    assert model.calc_elbo(images).kl.item() == 0.0


def test_pixel_sigma_scales_the_reconstruction_term(nb, images):
    torch.manual_seed(0)
    a = nb.VAE(sigma=0.1, latent_dim=3)
    b = nb.VAE(sigma=0.2, latent_dim=3)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(5)
    rec_a = a.calc_elbo(images).reconstruction
    torch.manual_seed(5)
    rec_b = b.calc_elbo(images).reconstruction
    # log N(x; m, s) = -SSE / (2 s^2) - D log s - D/2 log 2pi: recover the SSE from a and predict b.
    d = 784
    sse = -2 * 0.01 * (rec_a + d * math.log(0.1) + d / 2 * math.log(2 * math.pi))
    torch.testing.assert_close(rec_b, -sse / (2 * 0.04) - d * math.log(0.2) - d / 2 * math.log(2 * math.pi))


def test_gradients_reach_encoder_and_decoder(model, images):
    model.calc_elbo(images).neg_elbo.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_encoder_is_convolutions_with_two_stride_2_then_linear_layers(model):
    layers = [m for m in model.encoder.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert len(convs) >= 3
    assert sum(conv.stride == (2, 2) for conv in convs) == 2
    first_linear = next(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
    assert all(isinstance(m, nn.Linear) for m in layers[first_linear:])
    assert len(layers) - first_linear >= 3  # several fully connected layers plus the heads
    assert model.encoder.mean.out_features == model.encoder.log_std.out_features == 3


def test_posterior_is_diagonal_gaussian_with_exp_log_std(model, images):
    q = model.posterior(images)
    mean, log_std = model.encoder(images)
    torch.testing.assert_close(q.mean, mean)
    torch.testing.assert_close(q.stddev, log_std.exp())
    assert q.event_shape == (3,)


def test_decoder_is_linear_layers_then_transposed_convolutions(model):
    layers = [m for m in model.decoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    kinds = [type(m) for m in layers]
    n_linear = kinds.count(nn.Linear)
    assert n_linear >= 2 and kinds[:n_linear] == [nn.Linear] * n_linear
    assert all(k is nn.ConvTranspose2d for k in kinds[n_linear:]) and len(kinds) - n_linear >= 2
    assert model.decoder(torch.randn(7, 3)).shape == (7, 1, 28, 28)
    means = model.decode(torch.randn(7, 3))
    assert means.shape == (7, 1, 28, 28) and means.min() >= 0 and means.max() <= 1


def test_the_decoder_starts_at_the_mean_pixel(nb):
    for sigma in (0.1, "learned", "per-pixel"):
        torch.manual_seed(0)
        model = nb.VAE(sigma=sigma, latent_dim=5)
        assert torch.sigmoid(model.decoder.deconvs[-1].bias[0]).item() == pytest.approx(nb.Decoder.MEAN_PIXEL)
        # the untrained means are about as bright as the data, not sigmoid(0) = 0.5
        assert model.decode(torch.randn(64, 5)).mean().item() == pytest.approx(nb.Decoder.MEAN_PIXEL, abs=0.02)


def by_hand_reconstruction(images, pixel_mean, sigma):
    return (-0.5 * ((images - pixel_mean) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)).sum((1, 2, 3))


def test_learned_sigma_is_one_shared_parameter_in_the_likelihood(nb, images):
    torch.manual_seed(0)
    model = nb.VAE(sigma="learned", latent_dim=3)
    assert model.log_sigma.exp().item() == pytest.approx(0.1)  # starts at the exercise's sigma
    with torch.no_grad():
        model.log_sigma.fill_(math.log(0.37))
    z = torch.randn(5, 3)
    expected = by_hand_reconstruction(images, torch.sigmoid(model.decoder(z)), torch.tensor(0.37))
    torch.testing.assert_close(model.likelihood(z).log_prob(images), expected)
    model.calc_elbo(images).neg_elbo.backward()
    assert model.log_sigma.grad is not None and model.log_sigma.grad != 0


def test_per_pixel_sigma_comes_from_a_second_decoder_channel(nb, images):
    torch.manual_seed(0)
    model = nb.VAE(sigma="per-pixel", latent_dim=3)
    z = torch.randn(5, 3)
    out = model.decoder(z)
    assert out.shape == (5, 2, 28, 28)
    sigma = 1e-3 + torch.nn.functional.softplus(out[:, 1:])
    expected = by_hand_reconstruction(images, torch.sigmoid(out[:, :1]), sigma)
    torch.testing.assert_close(model.likelihood(z).log_prob(images), expected)
    with torch.no_grad():  # however small the predicted std, it stays above the floor and the density finite
        model.decoder.deconvs[-1].bias.fill_(-1e4)
    assert model.likelihood(z).stddev.min() >= 1e-3 and torch.isfinite(model.likelihood(z).log_prob(images)).all()


@pytest.mark.parametrize("sigma", [0, -0.1, float("inf"), float("nan"), "learnt", None, True])
def test_bad_sigma_is_refused_with_the_choices(nb, sigma):
    with pytest.raises(ValueError, match="learned.*per-pixel"):
        nb.VAEConfig(sigma=sigma)


@pytest.mark.parametrize("setting, value, message", [
    ("latent_dim", 0, "LATENT_DIM must be a whole number ≥ 1"), ("latent_dim", 2.0, "LATENT_DIM"),
    ("max_epochs", 0, "MAX_EPOCHS must be a whole number ≥ 1"), ("max_epochs", -1, "MAX_EPOCHS"),
    ("batch_size", 0, "BATCH_SIZE must be a whole number from 1 to 50,000"), ("batch_size", 60_000, "50,000"),
    ("seed", -1, "SEED must be a whole number from 0"), ("seed", "42", "SEED"),
    ("lr", 0, "LR must be a positive number"), ("lr", float("nan"), "LR"), ("lr", "2e-3", "LR"),
    ("limit_batches", 0, "LIMIT_BATCHES must be a share"), ("limit_batches", 0.0, "LIMIT_BATCHES"),
    ("limit_batches", 1.5, "LIMIT_BATCHES"), ("limit_batches", True, "LIMIT_BATCHES"),
    ("limit_batches", 0.01, "LIMIT_BATCHES must be a share of the batches from 0.013 (one validation batch) to 1.0"),
    ("lr_schedule", "linear", 'LR_SCHEDULE must be "step" or "cosine"'),
])
def test_a_setting_that_cannot_train_is_refused_by_name(nb, setting, value, message):
    """Before this check MAX_EPOCHS = 0 or BATCH_SIZE = 60,000 trained nothing and failed later in torch.load(".")."""
    with pytest.raises(ValueError, match=re.escape(message)):
        nb.VAEConfig(**{setting: value})


@pytest.mark.parametrize("setting, value", [("limit_batches", 1), ("limit_batches", 0.5), ("limit_batches", 1 / 79),
                                            ("batch_size", 50_000),
                                            ("seed", 0), ("lr", 1)])
def test_settings_at_the_edges_are_accepted(nb, setting, value):
    assert getattr(nb.VAEConfig(**{setting: value}), setting) == value


def test_integer_sigma_names_the_same_checkpoint_as_its_float(nb):
    assert nb.VAEConfig(sigma=1).run_name() == nb.VAEConfig(sigma=1.0).run_name()
    assert nb.VAEConfig(sigma="learned").run_name().startswith("vae_sigmalearned_z3_")


def test_prior_has_no_parameters(nb, model):
    own = sum(p.numel() for p in model.parameters())
    assert own == sum(p.numel() for p in model.encoder.parameters()) + sum(
        p.numel() for p in model.decoder.parameters())
    p = model.prior(4)
    assert not p.mean.requires_grad and (p.mean == 0).all() and (p.stddev == 1).all()
    assert len(model.state_dict()) == len(model.encoder.state_dict()) + len(model.decoder.state_dict())


def test_sample_shape_range_and_no_gradients(model):
    samples = model.sample(6)
    assert samples.shape == (6, 1, 28, 28)
    assert not samples.requires_grad
    assert 0 <= samples.min() and samples.max() <= 1


def test_sample_takes_only_the_number_of_samples(model):
    assert list(inspect.signature(model.sample).parameters) == ["n"]


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", None, True])
def test_sample_rejects_anything_but_a_positive_integer(model, bad):
    with pytest.raises(ValueError, match="positive integer"):
        model.sample(bad)


def test_bits_per_dim_conversion(nb):
    assert nb.nats_to_bpd(0.0) == pytest.approx(8.0)  # a uniform density on [0,1)^D: 8 bits per 8-bit pixel
    assert nb.nats_to_bpd(784 * math.log(2)) == pytest.approx(9.0)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(5, 28, 28), "got torch.float32 \\(5, 28, 28\\).*unsqueeze\\(1\\)"),  # no channel axis
    (torch.rand(5, 3, 28, 28), "shape \\(batch ≥ 1, 1, 28, 28\\), got torch.float32 \\(5, 3, 28, 28\\)"),
    (torch.rand(5, 1, 32, 32), "got torch.float32 \\(5, 1, 32, 32\\)"),
    (torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8), "got torch.uint8 .*dequantize\\(uint8_images\\)"),
    (torch.randint(0, 256, (5, 1, 28, 28)), "got torch.int64"),
    (torch.rand(5, 1, 28, 28, dtype=torch.float64), "got torch.float64"),
    (torch.rand(5, 1, 28, 28).half(), "got torch.float16"),
    (torch.rand(0, 1, 28, 28), "batch ≥ 1.*got torch.float32 \\(0, 1, 28, 28\\)"),
    (torch.full((2, 1, 28, 28), float("nan")), "pixels in \\[0, 1\\].*NaN"),
    (torch.rand(2, 1, 28, 28).index_put_((torch.tensor([0]), torch.tensor([0]), torch.tensor([3]), torch.tensor([3])),
                                         torch.tensor(float("inf"))), "pixels in \\[0, 1\\]"),
    (torch.rand(5, 1, 28, 28) * 255, "pixels in \\[0, 1\\]"),
    (torch.rand(5, 1, 28, 28) - 0.5, "pixels in \\[0, 1\\]"),
    ([[0.5]], "got list"),
    (np.zeros((5, 1, 28, 28), dtype=np.float32), "got ndarray"),
])
def test_every_entry_that_takes_images_rejects_what_is_not_a_batch_of_dequantized_images(model, bad, message):
    for entry in (model.calc_elbo, model.posterior, model.encode):
        with pytest.raises(ValueError, match=message) as error:
            entry(bad)
        assert len(str(error.value)) < 200  # short, and it says what to pass


def test_sample_is_the_decoder_mean_at_standard_normal_draws(model):
    torch.manual_seed(11)
    samples = model.sample(7)
    torch.manual_seed(11)
    z = torch.randn(7, 3)  # what N(0, I) draws, written out
    torch.testing.assert_close(samples, torch.sigmoid(model.decoder(z)).detach())


def test_the_reconstruction_term_alone_trains_the_encoders_mean_through_the_sample(model, images):
    """The reparameterized z = mean + std * eps carries the reconstruction's gradient into the encoder's mean head; a
    z drawn with .sample() would leave that head with the KL's gradient only."""
    model.calc_elbo(images).reconstruction.backward()
    for head in (model.encoder.mean, model.encoder.log_std):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
