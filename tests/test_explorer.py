"""The latent explorer: the view of a z against the decoder and the classifier called directly, the sliders' axes and
ranges, and the "start from a test image" mapping."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import REPO  # noqa: E402
from scipy.stats import chi2  # noqa: E402

from vae_mnist import explorer  # noqa: E402
from vae_mnist.judge import load_classifier  # noqa: E402


@pytest.fixture(scope="module")
def shipped(nb, mnist_root):
    config = nb.VAEConfig()
    model = nb.load_checkpoint(config.run_file(REPO / "checkpoints", ".ckpt"), config).eval()
    classifier = load_classifier(REPO / "checkpoints" / "mnist_classifier.pt", mnist_root)
    return model, classifier, nb.DequantizedMNIST(mnist_root, train=False)


def test_the_view_of_z_is_what_the_decoder_and_the_classifier_say(shipped):
    model, classifier, _ = shipped
    for z in (torch.zeros(3), torch.tensor([2.5, -1.0, 0.3]), torch.tensor([-4.0, 4.0, 4.0])):
        view = explorer.describe(model, classifier, z)
        with torch.no_grad():
            image = torch.sigmoid(model.decoder(z[None])).cpu()
            probabilities = torch.softmax(classifier(image.to(next(classifier.parameters()).device)), dim=1)[0]
        torch.testing.assert_close(view.image, image[0, 0])
        assert view.digit == int(probabilities.argmax())
        assert view.confidence == pytest.approx(float(probabilities.max()), abs=1e-6)
        assert view.log_prior == pytest.approx(float(-0.5 * (z.square().sum() + 3 * torch.log(torch.tensor(
            2 * torch.pi)))), abs=1e-5)
        assert view.chi2_quantile == pytest.approx(chi2.cdf(float(z.double().square().sum()), df=3), abs=1e-12)
    assert explorer.describe(model, classifier, torch.tensor([-4.0, 4.0, 4.0])).chi2_quantile > 0.999  # far out


def test_small_latents_slide_along_their_own_dimensions_over_the_prior_and_the_codes():
    codes = torch.cat([torch.randn(1000, 3), torch.tensor([[5.0, 0.0, 0.0], [0.0, -6.0, 0.0]]).repeat(50, 1)])
    axes = explorer.slider_axes(codes)
    assert torch.equal(axes.origin, torch.zeros(3)) and torch.equal(axes.directions, torch.eye(3))
    assert (axes.ranges[:, 0] <= -3).all() and (axes.ranges[:, 1] >= 3).all()
    assert axes.ranges[0, 1] > 4 and axes.ranges[1, 0] < -5  # the codes' own extremes are within reach
    z = torch.tensor([0.5, -2.0, 1.0])
    torch.testing.assert_close(explorer.to_z(axes, explorer.to_coordinates(axes, z)), z)
    assert explorer.to_coordinates(axes, torch.tensor([0.0, 0.0, 100.0]))[2] == axes.ranges[2, 1]  # clamped


def test_large_latents_slide_along_the_leading_principal_directions_of_the_codes():
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=generator)).Q.T  # orthonormal rows
    scales = torch.tensor([8.0, 6.0, 4.0, 3.0] + [0.1] * 12)
    mean = torch.randn(16, generator=generator)
    codes = mean + (torch.randn(20_000, 16, generator=generator) * scales) @ basis
    axes = explorer.slider_axes(codes)
    assert axes.directions.shape == (4, 16)
    torch.testing.assert_close(axes.origin, codes.mean(0))
    agreement = (axes.directions @ basis[:4].T).abs()  # each slider along one of the four widest directions
    torch.testing.assert_close(agreement, torch.eye(4), rtol=0, atol=0.02)
    z = explorer.to_z(axes, torch.tensor([1.0, -2.0, 0.0, 0.5]))  # a slider position away from the others' mean
    torch.testing.assert_close(explorer.to_coordinates(axes, z, clamp=False), torch.tensor([1.0, -2.0, 0.0, 0.5]))
    assert (axes.ranges[:, 1] - axes.ranges[:, 0] > 2 * 2.5 * scales[:4]).all()  # the codes' spread, each way


def test_starting_from_a_test_image_moves_the_sliders_to_its_posterior_mean(shipped):
    model, _, test_set = shipped
    index = explorer.first_of_digit(test_set, 4)
    assert int(test_set.labels[index]) == 4 and not (test_set.labels[:index] == 4).any()
    z = explorer.posterior_mean(model, test_set, index, seed=3)
    torch.manual_seed(3)
    with torch.no_grad():
        expected = model.posterior(test_set[index][0][None]).mean[0]
    torch.testing.assert_close(z, expected)
    axes = explorer.slider_axes(torch.randn(100, 3))
    torch.testing.assert_close(explorer.to_z(axes, explorer.to_coordinates(axes, z)), z)


def test_without_ipywidgets_the_explorer_is_a_picture_and_one_line(shipped, monkeypatch, capsys):
    model, classifier, test_set = shipped
    codes, labels = torch.randn(500, 3), torch.randint(0, 10, (500,))
    view = explorer.Explorer(model, classifier, explorer.slider_axes(codes), codes, labels)
    shown = []
    monkeypatch.setattr(explorer, "display", lambda obj, **kwargs: shown.append(obj))
    monkeypatch.setattr(explorer, "widgets_available", lambda: False)
    assert explorer.explore(view, test_set, seed=0) is None
    (picture,) = shown
    assert picture.data[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "pip install ipywidgets" in printed
    drawn = view.draw([1.0, -1.0, 0.5])
    assert view.marker.get_offsets().tolist() == [[1.0, -1.0]]
    assert f"{drawn.digit} with p = {drawn.confidence:.2f}" in view.ax_image.get_title()
