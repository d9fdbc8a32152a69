"""Can a bf16 decoder make the K = 1000 bound fast enough without moving it? Measured, not assumed.

    python bench/bound_precision.py                 # the shipped model, the first 64 test images, K = 1000

On the same images and the same z draws as a 32-bit run (the encoder, the z and the log-density stay 32-bit), it
measures the log-weights log p(x|z) + log p(z) - log q(z|x) with one decoder layer at a time in bf16 and with all of
them, and reports each variant's error per log-weight and the bias of the bound (nats per image, with its standard
error over the images; `vae_mnist.benchmarks.BF16_BIAS_LIMIT` is the bias allowed). One more variant keeps every
layer 32-bit but lets oneDNN round their inputs to bf16 (its bf16 math mode, torch.backends.mkldnn's fp32_precision;
sums and outputs stay 32-bit).
Then a screen-and-refine scheme: the bf16 log-weights pick, per image, those within T nats of their largest, only
those are computed again in 32-bit, and the bound takes the 32-bit values where it has them. The share that needs
32-bit sets the scheme's cost: the bf16 pass plus that share of a 32-bit pass (bench/speed.py times both passes).
Last, the 32-bit decoder, the whole decoder in bf16 and the math mode are timed in turns (--rounds). Writes
bench/results/bound_precision.json.
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, for `python bench/bound_precision.py`
from vae_mnist.benchmarks import RESULTS, InBf16, interleaved_throughput, shipped_model, with_decoder  # noqa: E402
from vae_mnist.likelihood import decoder_budget, iwae_estimate, iwae_log_weights  # noqa: E402
from vae_mnist.notebook import DequantizedMNIST, dataset_root, dequantize  # noqa: E402

RECORD = RESULTS / "bound_precision.json"
THRESHOLDS = (5, 10, 15, 20, 30, 40)  # nats below an image's largest bf16 log-weight


def log_weights(model, x: torch.Tensor, k: int) -> torch.Tensor:
    """The (k, images) log-weights, in float64 for the comparisons; the seed fixes the z draws."""
    torch.manual_seed(1)
    return iwae_log_weights(model, x, k, decoder_budget(model.device)).double()


class Bf16Math(torch.nn.Module):
    """A module whose 32-bit convolutions and matrix products let oneDNN round their inputs to bf16 (AMX where the CPU
    has it), their sums and outputs staying 32-bit."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        mkldnn = torch.backends.mkldnn
        saved = mkldnn.conv.fp32_precision, mkldnn.matmul.fp32_precision
        mkldnn.conv.fp32_precision = mkldnn.matmul.fp32_precision = "bf16"
        try:
            return self.module(z)
        finally:
            mkldnn.conv.fp32_precision, mkldnn.matmul.fp32_precision = saved


def refined(exact: torch.Tensor, screen: torch.Tensor, threshold: float) -> dict:
    """The screen-and-refine bound: the log-weights within `threshold` nats of each image's (column's) largest
    `screen` value take their `exact` value, the rest keep the screen's. Their share, and the bound's mean bias
    against the exact bound (nats per image)."""
    refine = screen.max(0).values - screen <= threshold
    return {"threshold": threshold, "share": refine.double().mean().item(),
            "bias": (iwae_estimate(torch.where(refine, exact, screen)) - iwae_estimate(exact)).mean().item()}


def weighted_layers(decoder) -> list:
    """(container, index) of each of the decoder's layers with weights, in order."""
    return [(part, i) for part in (decoder.fc, decoder.deconvs) for i, layer in enumerate(part)
            if hasattr(layer, "weight")]


def in_bf16(model, chosen: list) -> tuple:
    """A copy of `model` whose decoder runs its weighted layers at the `chosen` indices in bf16, and their names."""
    variant = copy.deepcopy(model)
    layers = weighted_layers(variant.decoder)
    names = []
    for j in chosen:
        part, i = layers[j]
        names.append(f"{type(part[i]).__name__} {j + 1}")
        part[i] = InBf16(part[i])
    return variant, names


def main(argv: list | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="of the interleaved timing")
    args = parser.parse_args(argv)
    model = shipped_model()
    torch.manual_seed(0)
    x = dequantize(DequantizedMNIST(dataset_root(), train=False).images[:args.images])
    exact = log_weights(model, x, args.k)
    results = {"images": args.images, "k": args.k, "variants": []}
    layers = len(weighted_layers(model.decoder))
    whole = list(range(layers))
    variants = [(*in_bf16(model, chosen), chosen == whole) for chosen in [[j] for j in range(layers)] + [whole]]
    math_mode = with_decoder(model, Bf16Math)
    variants.append((math_mode, [], False))  # no layer in bf16: oneDNN rounds the 32-bit layers' inputs
    for variant, names, screens in variants:
        approx = log_weights(variant, x, args.k)
        error, shift = approx - exact, iwae_estimate(approx) - iwae_estimate(exact)
        row = {"bf16 layers": names, "onednn_bf16_math": variant is math_mode,
               "error_sd": error.std().item(), "error_max": error.abs().max().item(),
               "bias": shift.mean().item(), "bias_standard_error": (shift.std() / np.sqrt(len(shift))).item()}
        if screens:  # the whole decoder in bf16 screens for the 32-bit refinement
            row["refine"] = [refined(exact, approx, threshold) for threshold in THRESHOLDS]
        results["variants"].append(row)
        print(json.dumps(row), flush=True)
    # one autocast around the whole decoder, as bench/speed.py times it
    timed = {"32-bit": model, "bf16 decoder": with_decoder(model, InBf16), "oneDNN bf16 math mode": math_mode}
    budget = decoder_budget(model.device)
    for variant in timed.values():  # a warm-up call each: oneDNN prepares a variant's kernels on its first call
        iwae_log_weights(variant, x[:2], args.k, budget)
    runs = {name: lambda v=variant: iwae_log_weights(v, x, args.k, budget) for name, variant in timed.items()}
    results["speed"] = {"rounds": args.rounds, **interleaved_throughput(runs, len(x), args.rounds, "32-bit")}
    print(json.dumps(results["speed"]))
    RECORD.write_text(json.dumps(results, indent=1))
    print(f"Written to {RECORD}")


if __name__ == "__main__":
    main()
