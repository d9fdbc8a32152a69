"""The importance-weighted (IWAE) bound on log p(x), a tighter likelihood than the ELBO (Burda et al., 2016).

L_K = E log (1/K) Σ_k p(x, z_k) / q(z_k|x) over K samples z_k ~ q(z|x): L_1 is the ELBO, and L_K rises towards
log p(x) as K grows. All values are in nats per image; `nats_to_bpd` turns them into bits per dimension.
"""

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from vae_mnist.notebook import VAE, DequantizedMNIST, dequantize, nats_to_bpd


def check_settings(k, seconds) -> None:
    """beyond.ipynb's IWAE_SAMPLES and IWAE_SECONDS, refused by name before anything is computed."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"IWAE_SAMPLES must be a whole number ≥ 1 (importance samples per image), got {k!r}.")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not 0 < seconds < np.inf):
        raise ValueError(f"IWAE_SECONDS must be a positive number of seconds, or None for all 10,000 test images, "
                         f"got {seconds!r}.")


def chunk_sizes(total: int, step: int) -> list:
    return [min(step, total - start) for start in range(0, total, step)]


@torch.no_grad()
def iwae_log_weights(model: VAE, x: torch.Tensor, k: int, budget: int) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) for k samples z ~ q(z|x) of each image: shape (k, batch).

    The decoder sees at most max(budget, len(x)) images at a time, so any K fits in memory."""
    q, prior = model.posterior(x), model.prior(len(x))
    log_w = []
    for n in chunk_sizes(k, max(1, budget // len(x))):
        z = q.sample((n,))  # (n, batch, latent)
        log_px_z = model.likelihood(z.flatten(0, 1)).log_prob(x.repeat(n, 1, 1, 1)).view(n, len(x))
        log_w.append(log_px_z + prior.log_prob(z) - q.log_prob(z))
    return torch.cat(log_w)


def iwae_estimate(log_w: torch.Tensor) -> torch.Tensor:
    """L_K of each image from its (K, images) log-weights: the log of the mean weight, logsumexp − log K."""
    return torch.logsumexp(log_w, 0) - np.log(len(log_w))


def decoder_budget(device: torch.device) -> int:
    """Images per decoder call in the IWAE bound. On a CPU 256 of them keep the decoder's activations within the
    processor's caches, which larger calls overflow; a GPU goes faster with larger calls, and 32,768 still keeps the
    decoder's activations within the memory of a Colab T4 (docs/speed.md)."""
    return 32768 if device.type == "cuda" else 256


def iwae_bounds(model: VAE, dataset: DequantizedMNIST, k_max: int = 1000, seed: int = 0, images: int | None = None,
                budget: int | None = None) -> dict:
    """The IWAE bound L_K for K = 1, 10, 100, ... up to k_max over the first `images` of `dataset` (all by default):
    the mean over the images and its standard error, nats per image."""
    budget = decoder_budget(model.device) if budget is None else budget
    torch.manual_seed(seed)  # the dequantization noise and the z samples
    ks = sorted({10**i for i in range(len(str(k_max))) if 10**i <= k_max} | {k_max})
    x_all = dequantize(dataset.images[:images])
    per_image = {k: [] for k in ks}
    with tqdm(total=len(x_all), desc=f"IWAE bound, K = {k_max}", unit="image", mininterval=5) as bar:
        for part in x_all.split(max(1, budget // k_max)):
            log_w = iwae_log_weights(model, part.to(model.device), k_max, budget)
            for k in ks:
                per_image[k].append(iwae_estimate(log_w[:k]).cpu().double())
            bar.update(len(part))
    values = {k: torch.cat(v) for k, v in per_image.items()}
    return {"images": len(x_all), "bound": {str(k): v.mean().item() for k, v in values.items()},
            "standard_error": {str(k): (v.std() / np.sqrt(len(v))).item() if len(v) > 1 else None
                               for k, v in values.items()}}


def images_within(model: VAE, dataset: DequantizedMNIST, k: int, seconds: float | None) -> int:
    """How many test images the IWAE bound with K = k takes in about `seconds` here (all for None), timed on four."""
    if seconds is None:
        return len(dataset)
    probe = dequantize(dataset.images[:4]).to(model.device)
    start = time.perf_counter()
    iwae_log_weights(model, probe, k, decoder_budget(model.device))
    per_image = (time.perf_counter() - start) / len(probe)
    return int(np.clip(seconds / per_image, 1, len(dataset)))


def iwae_table(iwae: dict) -> str:
    lines = [f"| K | −log p(x) bound (nats/image), {iwae['images']:,} test images | bits/dim |", "|---:|---:|---:|"]
    for k, bound in iwae["bound"].items():
        error = iwae["standard_error"][k]
        spread = "" if error is None else f" ± {error:.1f}"
        lines.append(f"| {k} | {-bound:.1f}{spread} | {nats_to_bpd(-bound):.3f} |")
    return "\n".join(lines + ["", "(± one standard error of the mean over the test images)"])


def iwae_runs(metrics: dict, k: int) -> list:
    """The IWAE bounds among a model's measurements (saved as iwae_k<K_max>) that include K = k."""
    return [value for key, value in metrics.items() if key.startswith("iwae_k") and str(k) in value["bound"]]


def iwae_run(metrics: dict, k: int) -> dict:
    """The IWAE bound with K = k: the run of K = k itself when there is one (the study's runs share their test images,
    so its rows compare), else the run over the most test images that includes K = k."""
    return metrics.get(f"iwae_k{k}") or max(iwae_runs(metrics, k), key=lambda run: run["images"])
