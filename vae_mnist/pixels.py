"""σ per pixel: where a model spends its bits, on the black, white and grey pixels of a digit, and the floor that no
Gaussian p(x|z) can go below on a dequantized pixel."""

import numpy as np
import torch

from vae_mnist.notebook import VAE, dequantize


def gaussian_floor_bits() -> float:
    """The fewest bits a Gaussian density can spend on one dequantized pixel even when it knows the 8-bit value: the
    pixel is uniform on a bin of width 1/256, and the closest Gaussian, N(bin centre, (1/256)² / 12), is still
    KL = ½ ln(2πe/12) nats from it."""
    return 0.5 * np.log2(2 * np.pi * np.e / 12)


@torch.no_grad()
def bits_by_pixel_kind(model: VAE, images: torch.Tensor, seed: int) -> dict:
    """Where the bits go: bits per pixel of the 8-bit image under p(x|z), one z ~ q(z|x) per image, and the
    median predicted σ, for black, white and grey pixels of uint8 `images`."""
    torch.manual_seed(seed)
    x = dequantize(images).to(model.device)
    p = model.likelihood(model.posterior(x).sample()).base_dist
    bits, sigma = ((np.log(256) - p.log_prob(x)) / np.log(2)).cpu(), p.scale.expand_as(x).cpu()
    kinds = {"black (0)": images == 0, "white (250–255)": images >= 250, "grey (1–249)": (images > 0) & (images < 250)}
    return {kind: {"share": mask.float().mean().item(), "bits": bits[mask].mean().item(),
                   "sigma": sigma[mask].median().item()} for kind, mask in kinds.items()}


def bits_table(rows: dict) -> str:
    first = next(iter(rows.values()))
    kinds, shares = list(first), ", ".join(f"{kind} {first[kind]['share']:.0%}" for kind in first)
    lines = ["| model | " + " | ".join(f"{kind}: bits/pixel (median σ)" for kind in kinds) + " |",
             "|---|" + "---:|" * len(kinds)]
    lines += [f"| {label} | " + " | ".join(f"{r[k]['bits']:.2f} ({r[k]['sigma']:.4f})" for k in kinds) + " |"
              for label, r in rows.items()]
    floor = gaussian_floor_bits()
    lines.append(f"| floor of any Gaussian | {floor:.2f} ({1 / 256 / np.sqrt(12):.4f}) | {floor:.2f} | {floor:.2f} |")
    return "\n".join(lines + ["", f"Share of the pixels: {shares}."])
