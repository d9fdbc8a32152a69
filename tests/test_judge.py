"""The judging classifier and its measures: recognised share, Fréchet distance, sample quality, and where N(0, I)
samples fail."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO
from helpers import QUALITY, digit_set, digits, mnist_test_set, small_model

from vae_mnist import judge
from vae_mnist.judge import (
    ClassifierFeatures,
    classify,
    endpoint_fidelity,
    frechet_metric,
    load_classifier,
    make_classifier,
    quality_table,
    random_blur,
    recognised_by_density,
    sample_quality,
    train_classifier,
)
from vae_mnist.notebook import dataset_root, dequantize


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


def sure_classifier(logit: float):
    """Every image the same class probabilities: digit 0 with p = e^logit / (e^logit + 9)."""
    stub = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    torch.nn.init.zeros_(stub[1].weight)
    with torch.no_grad():
        stub[1].bias.copy_(torch.tensor([logit] + [0.0] * 9))
    return stub


def test_frechet_distance_of_known_gaussians():
    torch.manual_seed(0)
    a = torch.randn(2000, 5) @ torch.randn(5, 5)
    classifier = feature_classifier()
    metric = frechet_metric(classifier, as_images(a))
    assert judge.judge(classifier, as_images(a), metric)["frechet"] == pytest.approx(0, abs=1e-5)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0])
    assert judge.judge(classifier, as_images(a + shift), metric)["frechet"] == pytest.approx(
        shift.square().sum().item(), rel=1e-5)
    b = torch.randn(1500, 5) * torch.tensor([0.5, 1, 2, 3, 1]) + 0.3
    assert judge.judge(classifier, as_images(b), metric)["frechet"] == pytest.approx(frechet_by_hand(b, a), rel=1e-6)


def test_judge_counts_the_recognised_images_and_their_digits():
    images = torch.cat([torch.zeros(30, 1, 28, 28), torch.ones(10, 1, 28, 28)])
    classifier = sure_classifier(math.log(0.88 * 9 / 0.12))  # p = 0.88 of digit 0 on a black image: not sure enough
    torch.nn.init.constant_(classifier[1].weight[3], 0.01)  # a white image: digit 3, p = 0.998
    verdict = judge.judge(classifier, images, frechet_metric(feature_classifier(), images))
    assert verdict["recognised"] == pytest.approx(0.25)
    assert verdict["digit_share"] == pytest.approx([0.75, 0, 0, 0.25, 0, 0, 0, 0, 0, 0])


def test_endpoint_fidelity_is_the_share_decoded_to_their_own_digit():
    # a model that decodes each image to itself, and a classifier that is sure of white images (digit 3) only
    identity = SimpleNamespace(device=torch.device("cpu"), decode=lambda z: z,
                               posterior=lambda x: SimpleNamespace(sample=lambda: x))
    images = torch.cat([torch.full((6, 1, 28, 28), 255), torch.zeros(4, 1, 28, 28)]).to(torch.uint8)
    labels = torch.tensor([3, 3, 3, 5, 5, 3, 0, 0, 3, 3])  # white: four 3s of six; black: never recognised
    dataset = digit_set(images, labels)
    classifier = sure_classifier(math.log(0.88 * 9 / 0.12))
    torch.nn.init.constant_(classifier[1].weight[3], 0.01)
    assert endpoint_fidelity(identity, classifier, dataset, seed=0) == pytest.approx(0.4)


def test_committed_classifier_is_accurate_and_recognises_real_digits():
    classifier = load_classifier(REPO / "checkpoints" / "mnist_classifier.pt", dataset_root())
    test_set = mnist_test_set()
    torch.manual_seed(0)
    images = dequantize(test_set.images)
    with torch.no_grad():  # the features, and from them the classes (the classifier's last layers)
        features = torch.cat([ClassifierFeatures(classifier)(chunk) for chunk in images.split(1000)])
        predicted = classifier[10:](features.float()).argmax(1)
    assert (predicted == test_set.labels).float().mean() >= 0.99
    metric = frechet_metric(classifier, images[:5000])
    verdict = judge.judge(classifier, images[5000:], metric)
    assert verdict["recognised"] > 0.95 and sum(verdict["digit_share"]) == pytest.approx(1)
    assert verdict["digit_share"] == pytest.approx((predicted[5000:].bincount(minlength=10) / 5000).tolist())
    assert 0 < verdict["frechet"] < judge.judge(classifier, torch.rand(500, 1, 28, 28), metric)["frechet"]
    # torchmetrics agrees with the Fréchet distance written out, on the classifier's own features
    assert verdict["frechet"] == pytest.approx(frechet_by_hand(features[5000:], features[:5000]), rel=1e-6)


def test_random_blur_blurs_about_half_the_batch():
    torch.manual_seed(0)
    x = torch.zeros(400, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1  # a square in the middle: blurring spreads it, keeping its mass
    out = random_blur(x)
    blurred = (out != x).flatten(1).any(1)
    assert 160 < blurred.sum() < 240
    torch.testing.assert_close(out[~blurred], x[~blurred])
    assert (out[blurred].amax((1, 2, 3)) < 1).all()
    torch.testing.assert_close(out[blurred].sum((1, 2, 3)), x[blurred].sum((1, 2, 3)))


def test_a_classifier_trained_briefly_tells_the_digits_apart():
    test_set = mnist_test_set()
    classifier = train_classifier(torch.utils.data.Subset(test_set, range(1024)), epochs=2)  # 16 steps
    assert not classifier.training
    torch.manual_seed(0)
    held_out = dequantize(test_set.images[5000:6000])
    accuracy = (classify(classifier, held_out).argmax(1).cpu() == test_set.labels[5000:6000]).float().mean()
    assert accuracy > 0.6  # chance: 0.1


def test_a_missing_classifier_is_trained_on_the_training_images_and_saved(tmp_path, monkeypatch):
    trained = make_classifier().eval()
    sizes = []
    monkeypatch.setattr(judge, "train_classifier", lambda train_set: sizes.append(len(train_set)) or trained)
    path = tmp_path / "classifier.pt"
    assert load_classifier(path, dataset_root()) is trained and sizes == [60_000]
    monkeypatch.setattr(judge, "train_classifier", lambda train_set: pytest.fail("trained again"))
    loaded = load_classifier(path, dataset_root())
    assert not loaded.training
    for saved, read in zip(trained.state_dict().values(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(read.cpu(), saved)


def test_sample_quality_takes_the_known_sets_as_they_are_and_judges_the_rest_alike():
    model, test_set = small_model(), digits()["test_set"]
    torch.manual_seed(0)
    classifier = make_classifier().eval()
    mixture = {"weights": np.array([0.5, 0.5]), "means": np.array([[-1.0, 0.0], [1.0, 0.0]]),
               "covariances": np.stack([np.eye(2) * 0.1] * 2)}
    everything = sample_quality(model, classifier, test_set, 3, mixture)
    assert list(everything) == ["real", "samples", "reconstructions", "mixture samples"]
    assert list(sample_quality(model, classifier, test_set, 3)) == ["real", "samples", "reconstructions"]
    known = {"real": {"judged": "before"}, "samples": everything["samples"]}
    again = sample_quality(model, classifier, test_set, 3, mixture, known=known)
    assert again["real"] is known["real"] and again["samples"] is known["samples"]
    # the sets after the skipped ones come out as in the full run, to the last digit
    assert again["reconstructions"] == everything["reconstructions"]
    assert again["mixture samples"] == everything["mixture samples"]


def test_quality_table_quotes_the_numbers():
    table = quality_table(QUALITY).splitlines()
    assert table[2:] == ["| real | 98.6% | 0.50 |", "| samples | 85.4% | 170.70 |",
                         "| reconstructions | 97.0% | 87.90 |"]


def test_recognised_by_density_groups_the_draws_by_how_dense_the_codes_are():
    model = small_model()
    prior = {"weights": np.ones(1), "means": np.zeros((1, 2)), "covariances": np.eye(2)[None]}
    groups = recognised_by_density(model, sure_classifier(20.0), prior, seed=0, n=1000)
    assert len(groups) == 10 and all(g["low"] == pytest.approx(0) == g["high"] for g in groups)  # m = p: ratio 0
    assert all(g["recognised"] == 1 for g in groups)
    wide = {**prior, "covariances": 4 * np.eye(2)[None]}  # ratio 3/8 |z|² - 2 ln 2: rises with |z|
    groups = recognised_by_density(model, sure_classifier(0.0), wide, seed=0, n=1000)
    assert groups[0]["low"] == pytest.approx(-2 * math.log(2), abs=0.01) and all(g["recognised"] == 0 for g in groups)
    assert all(a["high"] <= b["low"] for a, b in zip(groups, groups[1:], strict=False))

    # a decoder that draws a white image for |z| > 1.5 and a black one inside, and a classifier sure of white images
    # only (p = 0.88 < 0.9 for black ones): exactly the draws with a ratio above 3/8 · 1.5² − 2 ln 2 are recognised
    def white_outside_decode(z):
        return (z.norm(dim=1) > 1.5).float()[:, None, None, None].expand(-1, 1, 28, 28)

    white_outside = SimpleNamespace(hparams=SimpleNamespace(latent_dim=2), device=torch.device("cpu"),
                                    decode=white_outside_decode)
    sure_of_white = sure_classifier(math.log(0.88 * 9 / 0.12))  # bias: p = 0.88 on a black image
    torch.nn.init.constant_(sure_of_white[1].weight[0], 0.01)  # a white image adds 7.84 to the first logit
    edge = 3 / 8 * 1.5**2 - 2 * math.log(2)
    groups = recognised_by_density(white_outside, sure_of_white, wide, seed=0, n=1000)
    expected = [1.0 if g["low"] > edge else 0.0 if g["high"] < edge else None for g in groups]
    assert 0 in expected and 1 in expected
    assert all(g["recognised"] == e for g, e in zip(groups, expected, strict=True) if e is not None)
