"""The graded notebook's short "Beyond the exercise" section: the headline numbers of beyond.ipynb and its frontier.

Shipped measurements are read as they are; for any other model they are computed once and cached in its run folder.
"""

from pathlib import Path

from vae_mnist import explorer
from vae_mnist.cache import cached_metrics
from vae_mnist.figures import plot_frontier
from vae_mnist.judge import endpoint_fidelity, load_classifier, sample_quality
from vae_mnist.likelihood import images_within, iwae_bounds
from vae_mnist.notebook import VAE, VAEConfig, dataset_root, nats_to_bpd
from vae_mnist.study import read_study

IWAE_K = 1000
IWAE_SECONDS = 20  # for a model not measured yet: a bound over as many test images as fit in this time


def measurements(model: VAE, config: VAEConfig, loaders: dict, checkpoint_dir: Path, run_dir: Path) -> dict:
    """The IWAE bound, the sample quality and the endpoint fidelity of `model`, shipped or cached or computed."""
    test_set, seed = loaders["test"].dataset, config.seed
    where = {"shipped": config.run_file(checkpoint_dir, ".metrics.json"), "private": Path(run_dir) / "metrics.json",
             "checkpoint": config.run_file(checkpoint_dir, ".ckpt")}
    classifier = None

    def judged(measure):
        nonlocal classifier
        classifier = classifier or load_classifier(Path(checkpoint_dir) / "mnist_classifier.pt", dataset_root())
        return measure(model, classifier, test_set, seed)

    def bound():  # over as many test images as fit in IWAE_SECONDS, timed only when it is computed
        return iwae_bounds(model, test_set, IWAE_K, seed, images=images_within(model, test_set, IWAE_K, IWAE_SECONDS))

    return {"iwae": cached_metrics(f"iwae_k{IWAE_K}", bound, **where),
            "quality": cached_metrics("quality", lambda: judged(sample_quality), **where),
            "endpoint_fidelity": cached_metrics("endpoint_fidelity", lambda: judged(endpoint_fidelity), **where)}


def headline(found: dict) -> str:
    """A Markdown table of the measurements that go beyond the exercise, as `measurements` found them."""
    bound, quality = -found["iwae"]["bound"][str(IWAE_K)], found["quality"]
    samples, real = quality["samples"], quality["real"]
    rows = [
        f"| −log p(x), IWAE bound with K = {IWAE_K} ({found['iwae']['images']:,} test images) | {bound:.1f} nats = "
        f"{nats_to_bpd(bound):.3f} bits/dim | the ELBO is a looser bound |",
        f"| samples recognised as a digit by a separate classifier (5,000, p ≥ 0.9) | {samples['recognised']:.1%} | "
        f"real test digits: {real['recognised']:.1%} |",
        f"| Fréchet distance of the samples to test digits (classifier features) | {samples['frechet']:.1f} | two "
        f"halves of the test set: {real['frechet']:.1f} |",
        f"| endpoint fidelity: test images whose decoded posterior sample is their own digit | "
        f"{found['endpoint_fidelity']:.1%} | where each interpolation starts |",
    ]
    if "mixture samples" in quality:
        mixture = quality["mixture samples"]
        rows.append(f"| samples from a mixture prior fitted to the codes after training | {mixture['recognised']:.1%} "
                    f"recognised, Fréchet {mixture['frechet']:.1f} | `sample(n)` keeps N(0, I) |")
    return "\n".join(["| measure | this model | for comparison |", "|---|---:|---|", *rows])


def plot_study_frontier(real: dict, checkpoint_dir: Path, path: Path):
    """beyond.ipynb's frontier of the σ / latent-size study: likelihood against sample quality, every setting, with
    `real` (the real test digits' quality) as the reference lines."""
    study = read_study(VAEConfig(), checkpoint_dir)
    if study:
        return plot_frontier(study, real, path)
    print(f"No study in {checkpoint_dir}: python -m vae_mnist.study measures it.")


def explore(model: VAE, config: VAEConfig, loaders: dict, checkpoint_dir: Path) -> None:
    """beyond.ipynb's latent explorer for `model`: sliders over z where ipywidgets is installed, else its picture."""
    classifier = load_classifier(Path(checkpoint_dir) / "mnist_classifier.pt", dataset_root())
    explorer.explore(explorer.explorer_for(model, classifier, loaders, config.seed), loaders["test"].dataset,
                     config.seed)
