"""The figures beyond the exercise: which digits a model draws, its reconstructions and codes, where its N(0, I)
samples fail, and the σ / latent-size study (its samples, the likelihood against sample quality, the decoded 2-D
latent space). Each is saved to `path` and returned."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import ticker
from torch.distributions import Normal

from vae_mnist.judge import reconstruct
from vae_mnist.latent import active_units
from vae_mnist.likelihood import iwae_run
from vae_mnist.mixture import mixture_sample
from vae_mnist.notebook import VAE, DequantizedMNIST, VAEConfig, dequantize, image_grid, nats_to_bpd, show_grid


def setting_label(config: VAEConfig, metrics: dict) -> str:
    """A study setting's σ (with the value it learned, where it learned one) and its learning rate where that is not
    the default's."""
    sigma = config.sigma_label().removeprefix("σ = ").removeprefix("σ ")
    learned = f" → {metrics['learned_sigma']:.3f}" if "learned_sigma" in metrics else ""
    lr = f", lr {config.lr:g}" if config.lr != VAEConfig().lr else ""
    return f"{sigma}{learned}{lr}"


def plot_digit_shares(quality: dict, title: str, path: Path):
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(quality)
    for i, (name, q) in enumerate(quality.items()):
        ax.bar(np.arange(10) + (i - (len(quality) - 1) / 2) * width, 100 * np.array(q["digit_share"]), width,
               label=f"{name} ({q['recognised']:.0%} recognised, Fréchet {q['frechet']:.1f})")
    ax.axhline(10, color="gray", lw=0.8, ls="--", label="every digit equally often (10 %)")
    ax.set_xticks(range(10))
    ax.set_xlabel("digit predicted by the classifier")
    ax.set_ylabel("share of the images (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    fig.savefig(path, bbox_inches="tight", dpi=150)
    return fig


def plot_reconstructions(model: VAE, test_set: DequantizedMNIST, path: Path, n: int = 12):
    torch.manual_seed(0)
    x = dequantize(test_set.images[:n])
    rows = torch.cat([x, reconstruct(model, x).cpu()])
    return show_grid(rows, n, "Test images (top) and their reconstructions (bottom)", path, figsize=(12, 2.4))


def plot_latent_diagnostics(means: torch.Tensor, labels: torch.Tensor, kl: torch.Tensor, path: Path):
    fig, (ax_map, ax_kl) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.3, 1]})
    centred = means - means.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    points = centred @ v[:2].T if means.shape[1] > 1 else torch.cat([centred, torch.zeros_like(centred)], 1)
    for digit in range(10):
        chosen = labels == digit
        ax_map.scatter(points[chosen, 0], points[chosen, 1], s=2, alpha=0.5, color=plt.cm.tab10(digit), label=digit)
    ax_map.set_xlabel("principal component 1 of the posterior means")
    ax_map.set_ylabel("principal component 2")
    ax_map.set_title("Posterior means of the 10,000 test images")
    ax_map.legend(title="digit", markerscale=5, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    ax_kl.bar(np.arange(1, len(kl) + 1), kl.numpy(), color="tab:purple")
    ax_kl.set_xlabel("latent dimension")
    ax_kl.set_ylabel("average KL (nats per image)")
    ax_kl.set_title(f"KL per dimension ({active_units(means)} of {len(kl)} active)")
    ax_kl.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", dpi=150)
    return fig


def plot_recognised_by_density(groups: list, split: dict, real_share: float, path: Path):
    """The share recognised per group of `judge.recognised_by_density`, titled with the KL split of
    `latent.aggregate_posterior`."""
    fig, ax = plt.subplots(figsize=(11, 4.8))
    shares = [100 * group["recognised"] for group in groups]
    bars = ax.bar(range(len(groups)), shares, color="tab:blue", label="samples z ~ N(0, I), decoder means")
    ax.bar_label(bars, fmt="%.0f %%", fontsize=8)
    ax.axhline(100 * real_share, color="gray", ls="--", lw=0.8, label=f"real test digits ({real_share:.1%})")
    ranges = [f"{g['low']:.1f} to {g['high']:.1f}".replace("-", "−") for g in groups]
    ax.set_xticks(range(len(groups)), ranges, fontsize=8)
    ax.set_xlabel("log m(z) − log N(z; 0, I) in nats: how much denser the training codes (their mixture m) are than "
                  "the prior at z\n(each bar a tenth of the draws, from the sparsest codes on the left to the densest)")
    ax.set_ylabel("samples recognised as a digit (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper left", fontsize=8)  # above the short bars of the sparse codes
    ax.set_title(f"Where N(0, I) samples fail. KL term of the training codes, {split['kl']:.1f} nats = "
                 f"I(x; z) {split['mutual_information']:.1f} (at most ln {split['images']:,} = "
                 f"{np.log(split['images']):.1f}) + KL(q(z) ‖ N(0, I)) {split['marginal_kl']:.1f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", dpi=130)
    return fig


@torch.no_grad()
def plot_study_samples(study: list, models: dict, mixtures: dict, path: Path, n: int = 36):
    """For every setting, 36 samples decoded from z ~ N(0, I) (left) and from z ~ its mixture prior (right)."""
    cols, rows = 4, int(np.ceil(len(study) / 2))
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.5 * rows), squeeze=False)
    for pair, (config, metrics, _) in zip(axes.reshape(-1, 2), study, strict=False):  # spare panels stay empty
        model, quality = models[config], metrics["quality"]
        torch.manual_seed(config.seed)
        prior = model.sample(n)
        mixture = model.decode(mixture_sample(mixtures[config], n, config.seed).to(model.device))
        for ax, images, kind in ((pair[0], prior, "samples"), (pair[1], mixture, "mixture samples")):
            ax.imshow(image_grid(images, int(np.sqrt(n))), cmap="gray", vmin=0, vmax=1)
            prior_name = "N(0, I)" if kind == "samples" else f"mixture of {metrics['mixture']['components']}"
            ax.set_title(f"{setting_label(config, metrics)}, latent {config.latent_dim}\n"
                         f"z ~ {prior_name}: {quality[kind]['recognised']:.0%} recognised", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.suptitle("Samples of every study setting: decoder means for z ~ N(0, I) (left of each pair) and z ~ the "
                 "mixture fitted to the training codes (right)", y=1.01)
    fig.savefig(path, bbox_inches="tight", dpi=110)
    return fig


def label_points(ax, points: list, fontsize: float = 8):
    """Numbers beside points, each on the first side (right, above, below, left, ...) where it covers no point and
    no number placed before, so that a crowded cluster stays readable."""
    to_points = ax.transData.transform  # pixels; converted to typographic points below
    per_point = ax.figure.dpi / 72
    markers = [to_points((x, y)) / per_point for x, y, _, _ in points]
    dots = [to_points(xy) / per_point for c in ax.collections for xy in c.get_offsets()]
    taken = [(px - 3.5, py - 3.5, px + 3.5, py + 3.5) for px, py in dots]  # every plotted point
    for (x, y, text, color), (mx, my) in sorted(zip(points, markers, strict=True), key=lambda p: (p[1][0], -p[1][1])):
        width, height = 0.65 * fontsize * len(text) + 1, 1.2 * fontsize  # a bold number's box, in points
        sides = [side for gap in (4, 4 + height) for side in (
            (gap, -height / 2), (-width / 2, gap), (-width / 2, -gap - height), (-gap - width, -height / 2),
            (gap, gap), (gap, -gap - height), (-gap - width, gap), (-gap - width, -gap - height))]
        boxes = [(mx + dx, my + dy, mx + dx + width, my + dy + height) for dx, dy in sides]
        free = [box for box in boxes if not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3]
                                                for t in taken)]
        box = (free or boxes)[0]
        taken.append(box)
        ax.annotate(text, (x, y), xytext=(box[0] - mx, box[1] - my), textcoords="offset points", fontsize=fontsize,
                    color=color, fontweight="bold", va="bottom", ha="left")


def log_axis(axis):
    """Plain numbers on a log-scaled axis, at its major and minor ticks."""
    axis.set_major_formatter(ticker.ScalarFormatter())
    axis.set_minor_formatter(ticker.FormatStrFormatter("%g"))


def plot_frontier(study: list, real: dict, path: Path, iwae_k: int = 100):
    """Likelihood against sample quality for every study setting, with N(0, I) and mixture samples; each setting is
    numbered in both panels and named in the key."""
    colors = {"fixed σ": "tab:blue", "latent size": "tab:green", "learned σ": "tab:purple", "per-pixel σ": "tab:red"}
    fig, (ax_share, ax_fid) = plt.subplots(1, 2, figsize=(14, 6))
    numbers, key = {ax_share: [], ax_fid: []}, []
    panels = ((ax_share, "recognised", 100), (ax_fid, "frechet", 1))  # axes, measure, scale to the axis
    for number, (config, metrics, _) in enumerate(study, 1):
        bpd = nats_to_bpd(-iwae_run(metrics, iwae_k)["bound"][str(iwae_k)])
        quality = metrics["quality"]
        family = ("per-pixel σ" if config.sigma == "per-pixel" else "learned σ" if config.sigma == "learned"
                  else "latent size" if config.latent_dim != VAEConfig().latent_dim else "fixed σ")
        label = f"{setting_label(config, metrics)}, z{config.latent_dim}" + (" (graded)" * config.is_graded())
        key.append(plt.Line2D([], [], ls="", marker=f"${number}$", markersize=9, color=colors[family],
                              label=f"σ {label}"))
        for ax, kind, scale in panels:
            prior, mixture = scale * quality["samples"][kind], scale * quality["mixture samples"][kind]
            ax.annotate("", (bpd, mixture), (bpd, prior),
                        arrowprops={"arrowstyle": "->", "color": colors[family], "lw": 0.8})
            ax.scatter([bpd], [prior], color=colors[family], s=36, zorder=3,
                       edgecolor="black" if config.is_graded() else colors[family])
            ax.scatter([bpd], [mixture], facecolor="white", edgecolor=colors[family], s=36, zorder=3)
            numbers[ax].append((bpd, prior, str(number), colors[family]))
    for ax, kind, scale in panels:
        ax.axhline(scale * real[kind], color="gray", ls="--", lw=0.8)
        ax.set_xscale("log")
        log_axis(ax.xaxis)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(f"likelihood: IWAE bound, K = {iwae_k} (bits per dimension, lower is better; log scale)")
        ax.grid(alpha=0.3, which="both")
    ax_share.set_ylabel("samples recognised as a digit (%)")
    ax_share.set_title("Sample quality: share recognised (higher is better)")
    ax_fid.set_ylabel("Fréchet distance to test digits (log scale)")
    ax_fid.set_yscale("log")
    log_axis(ax_fid.yaxis)
    ax_fid.set_title("Sample quality: Fréchet distance (lower is better)")
    handles = [plt.Line2D([], [], ls="", marker="o", color=color, label=family) for family, color in colors.items()]
    handles += [plt.Line2D([], [], ls="", marker="o", color="gray", label="z ~ N(0, I) (filled)"),
                plt.Line2D([], [], ls="", marker="o", mfc="white", color="gray", label="z ~ mixture prior (open)"),
                plt.Line2D([], [], ls="--", color="gray", label="real test digits")]
    fig.legend(handles=handles, loc="lower center", ncol=7, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.legend(handles=key, loc="center left", bbox_to_anchor=(1.0, 0.55), fontsize=8, title="settings",
               title_fontsize=9, frameon=False)
    fig.suptitle("What σ, the latent size and the prior buy: likelihood against sample quality, every study setting")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    for ax, points in numbers.items():  # after the layout, which moves the points on the page
        label_points(ax, points)
    fig.savefig(path, bbox_inches="tight", dpi=130)
    return fig


@torch.no_grad()
def plot_manifold(model: VAE, config: VAEConfig, path: Path, n: int = 20):
    """Decoder means over a grid of z in the 2-D latent space of `model` (trained with `config`), placed at evenly
    spaced quantiles of the prior."""
    coords = Normal(0, 1).icdf(torch.linspace(0.03, 0.97, n))
    z = torch.cartesian_prod(coords.flip(0), coords)[:, [1, 0]]  # rows from top (high z2) to bottom, z1 across
    fig = show_grid(model.decode(z.to(model.device)), n,
                    f"The decoded 2-D latent space ({config.sigma_label()}, latent size 2)", path, figsize=(9, 9))
    fig.axes[0].set_title(f"{fig.axes[0].get_title()}\nz₁ from {coords[0]:.1f} (left) to {coords[-1]:.1f} (right), "
                          f"z₂ from {coords[-1]:.1f} (top) to {coords[0]:.1f} (bottom): prior quantiles 3 % to 97 %")
    fig.savefig(path, bbox_inches="tight", dpi=150)
    return fig
