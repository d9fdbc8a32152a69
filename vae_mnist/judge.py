"""The judging classifier, an MNIST network trained on blurred and sharp digits, and what it says of a model's images:
the share it recognises as a digit, which digits, the Fréchet distance of its features to real test digits, and
whether a decoded code keeps its image's digit."""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch.distributions import Normal
from torch.utils.data import Dataset
from torchmetrics.image.fid import FrechetInceptionDistance
from tqdm.auto import tqdm

from vae_mnist.mixture import mixture_log_density, mixture_sample
from vae_mnist.notebook import VAE, DequantizedMNIST, DeviceBatches, best_device, dequantize, verify_shipped


def make_classifier() -> nn.Sequential:
    # channels-last, like the VAE: its convolutions and pooling run faster so on a CPU
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),  # the 128 features
        nn.Dropout(0.25), nn.Linear(128, 10),
    ).to(memory_format=torch.channels_last)


def random_blur(x: torch.Tensor) -> torch.Tensor:
    """Blur a random half of the batch with a Gaussian of std 0.5 to 1.5 pixels: a VAE's decoder means are blurred
    digits, which the classifier must judge by their shape, not by their sharpness."""
    blurred = TF.gaussian_blur(x, kernel_size=7, sigma=float(torch.empty(1).uniform_(0.5, 1.5)))
    return torch.where(torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5, x, blurred)


def train_classifier(train_set: Dataset, epochs: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    loader = DeviceBatches(train_set, batch_size=128, shuffle=True)
    classifier = make_classifier().to(best_device())
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * len(loader))
    for epoch in range(epochs):
        for x, y in tqdm(loader, desc=f"classifier epoch {epoch + 1}/{epochs}", mininterval=5):
            loss = F.cross_entropy(classifier(random_blur(x)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return classifier.eval()


def load_classifier(path: Path, root: Path) -> nn.Sequential:
    """The shipped MNIST classifier, or a new one trained on the 60,000 training images of `root` (saved to `path`);
    on the best device, where it stays: `classify` sends the images to it."""
    classifier = make_classifier()
    if Path(path).exists():
        classifier.load_state_dict(torch.load(verify_shipped(path), map_location="cpu", weights_only=True))
        return classifier.to(best_device()).eval()
    print(f"No classifier at {path}: training one.")
    classifier = train_classifier(DequantizedMNIST(root, train=True))  # trained on the best device
    torch.save(classifier.state_dict(), path)
    return classifier


@torch.no_grad()
def classify(classifier: nn.Sequential, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities of every image, on the classifier's device (the classifier itself is never moved: the
    Fréchet metric's feature layers are its own)."""
    device = next(classifier.parameters()).device
    return torch.cat([F.softmax(classifier(chunk.to(device)), dim=1) for chunk in images.split(1000)])


def recognise(classifier: nn.Sequential, images: torch.Tensor) -> tuple:
    """Each image's most likely digit, and whether the classifier is sure of it (p >= 0.9: "recognised")."""
    confidence, digit = classify(classifier, images).max(dim=1)
    return confidence >= 0.9, digit


class ClassifierFeatures(nn.Module):
    """The classifier's 128 penultimate-layer features, in float64: the feature module of torchmetrics' Fréchet
    distance (the FID recipe of Heusel et al., 2017, with an MNIST network instead of Inception)."""

    def __init__(self, classifier: nn.Sequential):
        super().__init__()
        self.body, self.num_features = classifier[:10], classifier[-1].in_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images).double()


def frechet_metric(classifier: nn.Sequential, reference: torch.Tensor) -> FrechetInceptionDistance:
    """A Fréchet distance to the features of the `reference` images, computed once and kept."""
    metric = FrechetInceptionDistance(feature=ClassifierFeatures(classifier), input_img_size=(1, 28, 28),
                                      normalize=True, reset_real_features=False)
    metric = metric.to(next(classifier.parameters()).device)
    for chunk in reference.split(1000):
        metric.update(chunk.to(metric.device), real=True)
    return metric


@torch.no_grad()
def judge(classifier: nn.Sequential, images: torch.Tensor, metric: FrechetInceptionDistance) -> dict:
    """Share recognised (max p >= 0.9), share of each predicted digit, Fréchet distance to the reference."""
    recognised, digit = recognise(classifier, images)
    metric.reset()  # the images judged before; the reference features stay
    for chunk in images.split(1000):
        metric.update(chunk.to(metric.device), real=False)
    return {"recognised": recognised.float().mean().item(),
            "digit_share": (torch.bincount(digit.cpu(), minlength=10) / len(images)).tolist(),
            "frechet": metric.compute().item()}


@torch.no_grad()
def reconstruct(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """The decoder mean at the posterior mean of each image."""
    return model.decode(model.posterior(x.to(model.device)).mean)


@torch.no_grad()
def sample_quality(model: VAE, classifier: nn.Sequential, test_set: DequantizedMNIST, seed: int,
                   mixture: dict | None = None, known: dict | None = None) -> dict:
    """Recognised share, digit histogram and Fréchet distance of real held-out digits, samples (z ~ N(0, I)) and
    reconstructions, 5,000 each, and of samples from a mixture prior when one is given; the reference is the other
    half of the test set. The sets in `known`, judged before with the same model, classifier, test set and seed, are
    taken as they are instead of judged again (none after the samples draws a random number, so skipping them changes
    nothing)."""
    torch.manual_seed(seed)
    half = len(test_set) // 2
    reference, real = dequantize(test_set.images[:half]), dequantize(test_set.images[half:])
    metric = frechet_metric(classifier, reference)
    sets = {"real": lambda: real, "samples": lambda: model.sample(len(real)).cpu(),
            "reconstructions": lambda: reconstruct(model, real).cpu()}
    if mixture is not None:
        sets["mixture samples"] = lambda: model.decode(mixture_sample(mixture, len(real), seed).to(model.device)).cpu()
    known = known or {}
    return {name: known[name] if name in known else judge(classifier, images(), metric)
            for name, images in sets.items()}


@torch.no_grad()
def endpoint_fidelity(model: VAE, classifier: nn.Sequential, dataset: DequantizedMNIST, seed: int) -> float:
    """The share of images whose decoded posterior sample (the decoder mean at one z ~ q(z|x), what an interpolation
    starts from) the classifier recognises (p >= 0.9) as the image's own digit."""
    torch.manual_seed(seed)
    x = dequantize(dataset.images).to(model.device)
    decoded = torch.cat([model.decode(model.posterior(chunk).sample()) for chunk in x.split(1000)])
    recognised, digit = recognise(classifier, decoded)  # on the model's device, where the labels are brought
    return (recognised & (digit == dataset.labels.to(digit.device))).float().mean().item()


@torch.no_grad()
def recognised_by_density(model: VAE, classifier: nn.Sequential, mixture: dict, seed: int, n: int = 5000,
                          groups: int = 10) -> list:
    """Where N(0, I) samples fail. For n draws z ~ N(0, I): log m(z) − log p(z), how much denser the training codes
    (their mixture m) are than the prior at z, and whether the decoder mean is recognised (max p >= 0.9). Per tenth
    of the draws, sparsest codes first: the range of that ratio and the share recognised."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.hparams.latent_dim, generator=generator)
    ratio = mixture_log_density(mixture, z) - Normal(0.0, 1.0).log_prob(z.double()).sum(1)
    recognised = recognise(classifier, model.decode(z.to(model.device)))[0].cpu()
    return [{"low": ratio[part].min().item(), "high": ratio[part].max().item(),
             "recognised": recognised[part].float().mean().item()} for part in ratio.argsort().tensor_split(groups)]


def quality_table(quality: dict) -> str:
    lines = ["| images (5,000 each) | recognised (p ≥ 0.9) | Fréchet distance to test features |", "|---|---:|---:|"]
    rows = [f"| {name} | {q['recognised']:.1%} | {q['frechet']:.2f} |" for name, q in quality.items()]
    return "\n".join(lines + rows)
