"""An interactive latent explorer: sliders over z, the decoded digit live, and how typical z is under the prior.

With latent size 3 every point of the code space decodes to an image, and the gaps between the digit clusters are where
N(0, I) samples fail. Beside the decoded mean the explorer shows what the judging classifier makes of it and how typical
z is under N(0, I) (its log-density and the χ² quantile of |z|²), and a map of the test codes with z marked on it.
Latent sizes up to 4 get one slider per dimension; larger ones get sliders along the leading principal directions of
the training codes, the other directions held at the codes' mean.

In Colab and JupyterLab (ipywidgets) the sliders redraw the view; elsewhere, and in a static render of the notebook
(GitHub, nbviewer, nbconvert), the cell shows a picture of the same view.
"""

import importlib.util
import io
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, display
from torch.distributions import Normal

from vae_mnist.judge import classify
from vae_mnist.latent import encode_all
from vae_mnist.notebook import VAE, DequantizedMNIST, DeviceBatches

MAX_SLIDERS = 4


class Axes(NamedTuple):
    """z = origin + coordinates @ directions: the sliders' coordinates and their ranges."""

    origin: torch.Tensor  # (latent,)
    directions: torch.Tensor  # (sliders, latent), orthonormal rows
    ranges: torch.Tensor  # (sliders, 2): low and high of each slider


class View(NamedTuple):
    z: torch.Tensor
    image: torch.Tensor  # (28, 28), the decoder's mean
    digit: int  # the judging classifier's most likely digit
    confidence: float  # its probability
    log_prior: float  # log N(z; 0, I), nats
    chi2_quantile: float  # P(|z'|² ≤ |z|²) for z' ~ N(0, I): near 1, z lies far out in the prior's tail


def slider_axes(codes: torch.Tensor, max_sliders: int = MAX_SLIDERS) -> Axes:
    """The latent dimensions themselves when there are at most `max_sliders` of them, else the leading principal
    directions of `codes` through their mean. Each slider covers the prior's ±3 standard deviations and the codes'
    0.1-99.9 % range."""
    codes = codes.double()
    latent = codes.shape[1]
    if latent <= max_sliders:
        origin, directions = torch.zeros(latent, dtype=torch.float64), torch.eye(latent, dtype=torch.float64)
    else:
        origin = codes.mean(0)
        directions = torch.linalg.svd(codes - origin, full_matrices=False).Vh[:max_sliders]
    coordinates = (codes - origin) @ directions.T
    low = torch.minimum(coordinates.quantile(0.001, dim=0), torch.full((len(directions),), -3.0, dtype=torch.float64))
    high = torch.maximum(coordinates.quantile(0.999, dim=0), torch.full((len(directions),), 3.0, dtype=torch.float64))
    return Axes(origin.float(), directions.float(), torch.stack([low, high], 1).float())


def to_z(axes: Axes, coordinates) -> torch.Tensor:
    return axes.origin + torch.as_tensor(coordinates, dtype=torch.float32) @ axes.directions


def to_coordinates(axes: Axes, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """The slider positions nearest to z (exactly z when the sliders span the latent space), within their ranges
    unless `clamp` is off."""
    coordinates = (z.float() - axes.origin) @ axes.directions.T
    return coordinates.clamp(axes.ranges[:, 0], axes.ranges[:, 1]) if clamp else coordinates


@torch.no_grad()
def describe(model: VAE, classifier: torch.nn.Sequential, z: torch.Tensor) -> View:
    """What the explorer shows for one z: the decoded mean, the classifier's verdict and how typical z is."""
    z = z.float().reshape(1, -1)
    image = model.decode(z.to(model.device)).cpu()
    confidence, digit = classify(classifier, image).max(dim=1)
    squared = z.double().square().sum()
    return View(z[0], image[0, 0], int(digit), float(confidence), float(Normal(0.0, 1.0).log_prob(z).sum()),
                float(torch.special.gammainc(torch.tensor(z.shape[1] / 2, dtype=torch.float64), squared / 2)))


@torch.no_grad()
def posterior_mean(model: VAE, dataset: DequantizedMNIST, index: int, seed: int = 0) -> torch.Tensor:
    """The code of one test image: its posterior mean (the dequantization noise drawn from `seed`)."""
    torch.manual_seed(seed)
    x = dataset[index][0][None].to(model.device)
    return model.posterior(x).mean[0].cpu()


def first_of_digit(dataset: DequantizedMNIST, digit: int) -> int:
    return int((dataset.labels == digit).nonzero()[0])


class Explorer:
    """The view for any slider position, drawn into one figure whose artists are updated in place (fast enough to
    follow a slider); `codes` and `labels` are the test images' codes, drawn as the map beside the digit."""

    def __init__(self, model: VAE, classifier: torch.nn.Sequential, axes: Axes, codes: torch.Tensor,
                 labels: torch.Tensor):
        self.model, self.classifier, self.axes = model, classifier, axes
        self.figure, (self.ax_image, self.ax_map) = plt.subplots(1, 2, figsize=(9, 4.2),
                                                                gridspec_kw={"width_ratios": [1, 1.25]})
        self.picture = self.ax_image.imshow(np.zeros((28, 28)), cmap="gray", vmin=0, vmax=1)
        self.ax_image.set_xticks([])
        self.ax_image.set_yticks([])
        self.ax_image.set_xlabel("the decoder's mean at z")
        mapped = to_coordinates(axes, codes, clamp=False)
        second = mapped[:, 1] if mapped.shape[1] > 1 else torch.zeros(len(mapped))
        self.ax_map.scatter(mapped[:, 0], second, s=1, c=[plt.cm.tab10(int(d)) for d in labels], alpha=0.3,
                            rasterized=True)
        self.marker = self.ax_map.scatter([0], [0], s=160, marker="X", color="black", edgecolor="white", zorder=3)
        for digit in range(10):
            self.ax_map.scatter([], [], s=20, color=plt.cm.tab10(digit), label=str(digit))
        self.ax_map.legend(title="test digit", fontsize=7, title_fontsize=8, loc="center left",
                           bbox_to_anchor=(1.0, 0.5), markerscale=1.5)
        own = len(axes.directions) == len(axes.origin)  # the sliders are the latent dimensions themselves
        names = [f"z{'₁₂'[i]}" if own else f"principal direction {i + 1} of the codes" for i in range(2)]
        self.ax_map.set_xlabel(f"slider 1: {names[0]}")
        self.ax_map.set_ylabel(f"slider 2: {names[1]}" if len(axes.directions) > 1 else "")
        self.ax_map.set_title("Codes of the 10,000 test images; × marks z", fontsize=10)
        self.figure.tight_layout()
        plt.close(self.figure)  # drawn on demand, never shown twice by the inline backend

    def draw(self, coordinates) -> View:
        view = describe(self.model, self.classifier, to_z(self.axes, coordinates))
        self.picture.set_data(view.image.numpy())
        coordinates = torch.as_tensor(coordinates, dtype=torch.float32)
        self.marker.set_offsets([[coordinates[0], coordinates[1] if len(coordinates) > 1 else 0.0]])
        verdict = "recognised" if view.confidence >= 0.9 else "not recognised (p < 0.9)"
        self.ax_image.set_title(f"classifier: {view.digit} with p = {view.confidence:.2f}, {verdict}\n"
                                f"log N(z; 0, I) = {view.log_prior:.1f} nats; |z|² is at the "
                                f"{100 * view.chi2_quantile:.0f} % quantile of χ²({len(view.z)})", fontsize=10)
        return view

    def png(self, coordinates) -> bytes:
        self.draw(coordinates)
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")  # the two-line title too
        return buffer.getvalue()


def explorer_for(model: VAE, classifier: torch.nn.Sequential, loaders: dict, seed: int) -> Explorer:
    """The explorer of a trained model: its map from the test codes, and its sliders from them too when they span the
    latent space, else along the principal directions of the training codes."""
    codes, _, labels = encode_all(model, loaders["test"], seed)
    if codes.shape[1] <= MAX_SLIDERS:
        return Explorer(model, classifier, slider_axes(codes), codes, labels)
    training = encode_all(model, DeviceBatches(loaders["train"].dataset, 1000), seed)[0]  # each image once
    return Explorer(model, classifier, slider_axes(training), codes, labels)


def widgets_available() -> bool:
    return importlib.util.find_spec("ipywidgets") is not None


def explore(explorer: Explorer, test_set: DequantizedMNIST, seed: int, start=None) -> None:
    """Show the explorer: a picture of the view at `start` (slider coordinates; the origin by default), then, where
    ipywidgets is installed, the sliders and buttons that redraw that picture in place."""
    start = torch.zeros(len(explorer.axes.directions)) if start is None else torch.as_tensor(start)
    picture = display(Image(explorer.png(start)), display_id=True)
    if widgets_available():
        display(controls(explorer, test_set, seed, start, picture))
    else:
        print("A picture of the explorer at its start: its sliders need ipywidgets (pip install ipywidgets; Colab "
              "and JupyterLab users with it installed see them here).")


def controls(explorer: Explorer, test_set: DequantizedMNIST, seed: int, start: torch.Tensor, picture):
    """The sliders, the "start from a test image" controls and the "random z" button, each redrawing `picture`."""
    import ipywidgets as widgets

    sliders = [widgets.FloatSlider(value=float(value), min=float(low), max=float(high), step=0.01,
                                   description=f"slider {i + 1}", continuous_update=True, readout_format=".2f")
               for i, (value, (low, high)) in enumerate(zip(start, explorer.axes.ranges, strict=True))]
    index = widgets.BoundedIntText(value=0, min=0, max=len(test_set) - 1, description="test image")
    digit = widgets.Dropdown(options=list(range(10)), value=7, description="or digit")
    from_image, from_digit = widgets.Button(description="start from it"), widgets.Button(description="start from it")
    draw_random = widgets.Button(description="random z ~ N(0, I)")
    generator = torch.Generator().manual_seed(seed)

    def redraw(_=None):
        picture.update(Image(explorer.png([slider.value for slider in sliders])))

    def move_to(z: torch.Tensor):
        for slider, value in zip(sliders, to_coordinates(explorer.axes, z), strict=True):
            slider.unobserve(redraw, "value")
            slider.value = float(value)
            slider.observe(redraw, "value")
        redraw()

    for slider in sliders:
        slider.observe(redraw, "value")
    from_image.on_click(lambda _: move_to(posterior_mean(explorer.model, test_set, index.value, seed)))
    from_digit.on_click(lambda _: move_to(posterior_mean(explorer.model, test_set,
                                                         first_of_digit(test_set, digit.value), seed)))
    draw_random.on_click(lambda _: move_to(torch.randn(len(explorer.axes.origin), generator=generator)))
    return widgets.VBox([*sliders, widgets.HBox([index, from_image]), widgets.HBox([digit, from_digit]), draw_random])
