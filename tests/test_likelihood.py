"""The IWAE bound: its log-weights written out, its estimate and standard error, and how its runs are read back."""

import math

import pytest
import torch
from helpers import digit_set, digits, small_model

from vae_mnist.likelihood import (
    chunk_sizes,
    decoder_budget,
    images_within,
    iwae_bounds,
    iwae_estimate,
    iwae_log_weights,
    iwae_run,
    iwae_table,
)
from vae_mnist.notebook import dequantize


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


def test_chunks_cover_the_total_in_steps():
    assert chunk_sizes(10, 4) == [4, 4, 2]
    assert chunk_sizes(8, 4) == [4, 4]
    assert chunk_sizes(3, 5) == [3]


def test_log_weights_match_the_densities_written_out():
    model = small_model()
    x = next(iter(digits()["test"]))[0][:3]
    torch.manual_seed(1)
    log_w = iwae_log_weights(model, x, k=5, budget=6)  # budget 6: two images per pass, chunks of 2+2+1
    torch.manual_seed(1)
    q = model.posterior(x)
    z = torch.cat([q.sample((n,)) for n in (2, 2, 1)])  # the same draws in the same order
    assert log_w.shape == (5, 3)
    expected = torch.stack([torch.stack([by_hand_log_weight(model, x[i], z[k, i]) for i in range(3)])
                            for k in range(5)])
    torch.testing.assert_close(log_w, expected, rtol=1e-4, atol=1e-3)


def test_the_decoder_sees_at_most_the_budget():
    model = small_model()
    x = next(iter(digits()["test"]))[0][:8]
    seen = []
    hook = model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    try:
        iwae_log_weights(model, x, k=10, budget=24)  # 3 samples of the 8 images per call
        assert seen == [24, 24, 24, 8]
        seen.clear()
        iwae_log_weights(model, x, k=2, budget=4)  # a budget below the batch: one sample of all images per call
        assert seen == [8, 8]
    finally:
        hook.remove()
    assert decoder_budget(torch.device("cpu")) < decoder_budget(torch.device("cuda"))


def test_iwae_bound_grows_with_k_and_lies_above_the_elbo():
    model, data = small_model(), digits()
    iwae = iwae_bounds(model, data["test_set"], k_max=1000, seed=0)
    assert iwae["images"] == 64 and list(iwae["bound"]) == ["1", "10", "100", "1000"]
    bounds = {int(k): v for k, v in iwae["bound"].items()}
    assert bounds[1] < bounds[10] < bounds[100] <= bounds[1000]
    torch.manual_seed(0)
    elbo = -torch.stack([model.calc_elbo(x).neg_elbo for _ in range(20) for x, _ in data["test"]]).mean()
    assert bounds[1000] > elbo + 1  # nats per image: the bound is well above the ELBO on this model


def test_iwae_with_one_sample_is_the_elbo_in_expectation():
    model = small_model()
    x = next(iter(digits()["test"]))[0]
    torch.manual_seed(0)
    log_w = iwae_log_weights(model, x, k=1000, budget=4096)  # 1000 independent K = 1 bounds of each image
    torch.manual_seed(0)
    elbo = -torch.stack([model.calc_elbo(x).neg_elbo for _ in range(100)]).mean()  # analytic KL inside
    # both about -2,300 nats; each log-weight varies by about 70 nats around its image's mean, so the two estimates
    # differ by about 1.3 nats (one standard error): 5 nats is four of them
    assert log_w.mean().item() == pytest.approx(elbo.item(), abs=5)


def test_iwae_takes_the_first_images_and_k_max_itself():
    model, test_set = small_model(), digits()["test_set"]
    iwae = iwae_bounds(model, test_set, k_max=30, seed=0, images=5)
    assert iwae["images"] == 5 and list(iwae["bound"]) == list(iwae["standard_error"]) == ["1", "10", "30"]
    first_five = digit_set(test_set.images[:5], test_set.labels[:5])
    assert iwae_bounds(model, first_five, k_max=30, seed=0) == iwae  # the same noise and draws, the same numbers
    one = iwae_bounds(model, test_set, k_max=30, seed=0, images=1)
    assert set(one["standard_error"].values()) == {None}  # no spread from a single image


def test_iwae_bound_is_the_mean_of_logsumexp_minus_log_k_with_its_standard_error():
    model, test_set = small_model(), digits()["test_set"]
    iwae = iwae_bounds(model, test_set, k_max=50, seed=4, images=6, budget=600)
    torch.manual_seed(4)  # the same noise and draws, by hand: one decoder pass of 6 images x 50 samples
    x = dequantize(test_set.images[:6])
    log_w = iwae_log_weights(model, x, 50, budget=600).double()
    for k in (1, 10, 50):
        per_image = torch.logsumexp(log_w[:k], 0) - math.log(k)
        assert iwae["bound"][str(k)] == pytest.approx(per_image.mean().item(), rel=1e-6)  # float32 sums
        assert iwae["standard_error"][str(k)] == pytest.approx(per_image.std().item() / math.sqrt(6), rel=1e-3)
    top = log_w.max(0).values  # the log of the mean weight, shifted so that the weights do not underflow
    assert iwae_estimate(log_w).tolist() == pytest.approx((top + (log_w - top).exp().mean(0).log()).tolist())


def test_images_within_a_time_budget():
    model, test_set = small_model(), digits()["test_set"]
    assert images_within(model, test_set, 10, None) == 64  # None: all of them
    assert images_within(model, test_set, 10, 1e-9) == 1
    assert images_within(model, test_set, 10, 1e9) == 64


def test_iwae_table_quotes_the_bounds_in_nats_and_bits_per_dim():
    iwae = {"images": 10_000, "bound": {"1": -43.8, "1000": -40.0}, "standard_error": {"1": 0.21, "1000": None}}
    table = iwae_table(iwae).splitlines()
    assert "10,000 test images" in table[0]
    assert table[2:4] == ["| 1 | 43.8 ± 0.2 | 8.081 |",
                          "| 1000 | 40.0 | 8.074 |"]  # bpd = (40 + 784 ln 256) / (784 ln 2)


def test_the_bound_of_a_k_comes_from_its_own_run_else_the_largest_that_includes_it():
    small, large = {"images": 2000, "bound": {"1": 0.0, "100": 1.0}}, {"images": 10_000, "bound": {"100": 2.0}}
    other = {"images": 50_000, "bound": {"1": 0.0, "10": 3.0}}
    assert iwae_run({"iwae_k100": small, "iwae_k1000": large, "iwae_k10": other}, 100) is small
    assert iwae_run({"iwae_k1000": large, "iwae_k300": small, "iwae_k10": other}, 100) is large
    with pytest.raises(ValueError):  # no run includes K = 100
        iwae_run({"iwae_k10": other, "test": {}}, 100)
