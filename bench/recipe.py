"""The training recipe, measured: what each candidate change does to the graded model, epoch by epoch.

    python bench/recipe.py baseline --latent 3 --epochs 20              # MNIST from $PATH_DATASETS, else data/
    python bench/recipe.py cosine --latent 3 --epochs 20 --threads 1    # two at once, a core each
    python bench/recipe.py --table          # the table of bench/results/recipe/, printed and put in docs/recipe.md

Every candidate trains the notebook's own VAE on the notebook's own batches (`DeviceBatches`) with the tutorial's
process (Adam, learning rate 1e-3, StepLR(1 epoch, 0.99), batches of 128, seed 42 unless --seed) and one change. The
loop is the same arithmetic as the notebook's Lightning loop (32-bit), written out so that one run can measure what
Lightning's loop does not log: after every epoch the validation -ELBO of the trained weights *and* of their
exponential moving average (the notebook's `ema_with_warmup(0.999)`, the average its Lightning `WeightAveraging`
keeps), the -ELBO of 10,000 training images measured like the validation set (so the train/validation gap without the
average over a changing epoch); every few epochs the sample quality, Fréchet distances and endpoint fidelity of both
(`vae_mnist.judge`), and the KL term of the average's training codes split into I(x; z) + KL(q(z) || N(0, I))
(`vae_mnist.latent`). Results go to bench/results/recipe/<candidate>_z<latent>[_seed<seed>][_<tag>].json (--tag keeps
an earlier run of the same candidate; --seed changes the initial weights, batches and noise, not the tutorial's
split); --table puts their table into docs/recipe.md between the recipe markers.
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, for `python bench/recipe.py`
from vae_mnist import benchmarks  # noqa: E402
from vae_mnist.judge import endpoint_fidelity, load_classifier, sample_quality  # noqa: E402
from vae_mnist.latent import aggregate_posterior  # noqa: E402
from vae_mnist.notebook import VAE, DeviceBatches, best_device, dataset_root, graded, make_loaders  # noqa: E402

RESULTS = benchmarks.RESULTS / "recipe"
DOC = benchmarks.DOCS / "recipe.md"
SEED = 42  # tutorial 12's: always the split's, and the training's unless --seed gives another
CANDIDATES = {  # the change each candidate makes to the tutorial's process
    "baseline": {},
    "lr_2e-3": {"lr": 2e-3},
    "cosine": {"schedule": "cosine"},  # the learning rate falls to 0 along a half cosine over the epochs
    "clip": {"clip": 3000.0},  # the gradient's norm is clipped to 3,000 (its median over the first two epochs)
    "batch_256": {"batch_size": 256},
    "lr_2e-3_clip": {"lr": 2e-3, "clip": 3000.0},  # both; with --latent 8 it tests the fix for the dead decoder
    "wide": {"channels": (32, 64), "hidden": 512},  # more capacity than the notebook's (24, 48) channels, 256 units
    # twice the fully connected units (512) in the encoder and in the decoder, whose layers map the 3-d code to its
    # feature maps: does a more flexible network let the codes fill N(0, I) more evenly (a smaller KL(q(z) || N(0, I)))?
    "lr_2e-3_hidden_512": {"lr": 2e-3, "hidden": 512},
    # AdamW's decoupled weight decay (each step also multiplies every parameter by 1 - lr * decay): does a regularized
    # network fit the training digits no more closely than new ones (a smaller train/validation gap)?
    "lr_2e-3_wd_0.1": {"lr": 2e-3, "weight_decay": 0.1},
    "lr_2e-3_wd_1": {"lr": 2e-3, "weight_decay": 1.0},
    # the control of the decoder's mean-pixel start: the recipe with the mean channel's last bias drawn the way PyTorch
    # draws it (uniform on ±1/√fan-in, from a generator of its own), every other weight and random number the same
    "lr_2e-3_random_bias": {"lr": 2e-3, "random_bias": True},
}


def make_optimizer(parameters, change: dict):
    """Adam, as the tutorial; AdamW where the candidate decays the weights (the rows before it ran with Adam)."""
    if change["weight_decay"]:
        return torch.optim.AdamW(parameters, lr=change["lr"], weight_decay=change["weight_decay"], fused=True)
    return torch.optim.Adam(parameters, lr=change["lr"], fused=True)


def result_path(name: str, latent: int, seed: int, tag: str) -> Path:
    """bench/results/recipe/<candidate>_z<latent>[_seed<seed>][_<tag>].json: another seed or a tag never overwrites
    the seed-42 run."""
    parts = [f"{name}_z{latent}"] + [f"seed{seed}"] * (seed != SEED) + [tag.lstrip("_")] * bool(tag)
    return RESULTS / f"{'_'.join(parts)}.json"


def redraw_mean_bias(decoder, seed: int):
    """The mean channel's last bias as PyTorch's default initialisation draws a transposed convolution's bias, from
    a generator of its own so that no other random number changes."""
    layer = decoder.deconvs[-1]
    bound = 1 / math.sqrt(torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)[0])  # as reset_parameters
    with torch.no_grad():
        layer.bias[0] = (2 * torch.rand((), generator=torch.Generator().manual_seed(seed)) - 1) * bound


def learning_rate_schedule(optimizer, kind: str, epochs: int):
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.99)  # the tutorial's


@torch.no_grad()
def mean_neg_elbo(model, loader, seed: int = 0) -> float:
    torch.manual_seed(seed)
    total = count = 0
    for x, _ in loader:
        total += model.calc_elbo(x).neg_elbo.item() * len(x)
        count += len(x)
    return total / count


def quality(model, classifier, test_set, seed: int = 0) -> dict:
    q = sample_quality(model, classifier, test_set, seed)
    return {"samples_recognised": q["samples"]["recognised"], "samples_frechet": q["samples"]["frechet"],
            "reconstructions_frechet": q["reconstructions"]["frechet"], "digit_share": q["samples"]["digit_share"],
            "endpoint_fidelity": endpoint_fidelity(model, classifier, test_set, seed)}


def first_images(batches: DeviceBatches, n: int, batch_size: int = 500) -> DeviceBatches:
    """The first `n` images of `batches` in order, to measure the training images' -ELBO as the validation set's
    (fixed weights, no shuffling), not as the running average over an epoch whose weights change."""
    return DeviceBatches(SimpleNamespace(images=batches.images[:n], labels=batches.labels[:n]), batch_size)


def run(name: str, latent: int, epochs: int, quality_every: int, seed: int = SEED, tag: str = "") -> dict:
    change = {"lr": 1e-3, "schedule": "step", "clip": 0.0, "batch_size": 128, "weight_decay": 0.0, "random_bias": False,
              **CANDIDATES[name]}
    data = dataset_root()
    loaders = make_loaders(data, change["batch_size"], SEED)  # the tutorial's split, whatever the training's seed
    train = loaders["train"]
    train_eval = first_images(train, 10_000)
    classifier = load_classifier(benchmarks.CHECKPOINTS / "mnist_classifier.pt", data)
    torch.manual_seed(seed)
    device = best_device()  # where DeviceBatches put the batches
    layers = {key: change[key] for key in ("channels", "hidden") if key in change}
    model = VAE(latent_dim=latent, **layers).to(device)
    if change["random_bias"]:
        redraw_mean_bias(model.decoder, seed)
    optimizer = make_optimizer(model.parameters(), change)
    schedule = learning_rate_schedule(optimizer, change["schedule"], epochs)
    average = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=graded.ema_with_warmup(0.999))
    log = {"candidate": name, "change": change, "latent_dim": latent, "seed": seed, "epochs": [],
           # the decoder's starting bias of the means (the logit of the mean pixel, or the control's random draw):
           # the start the candidates are compared from
           "mean_bias_start": model.decoder.deconvs[-1].bias[0].item(),
           "machine": f"{benchmarks.describe(device)}, {torch.backends.cpu.get_cpu_capability()} kernels"}
    out = result_path(name, latent, seed, tag)
    out.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, epochs + 1):
        model.train()
        start, running = time.perf_counter(), []
        for x, _ in train:
            loss = model.calc_elbo(x).neg_elbo
            optimizer.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), change["clip"] or math.inf)
            optimizer.step()
            average.update_parameters(model)
            running.append(torch.stack([loss.detach(), norm]))  # read once an epoch: no wait for the GPU per step
        schedule.step()
        model.eval()
        losses, norms = torch.stack(running).double().T.tolist()
        row = {"epoch": epoch, "seconds": time.perf_counter() - start,
               "train_running": sum(losses) / len(losses), "grad_norm_median": sorted(norms)[len(norms) // 2]}
        # The measurements seed themselves; without the fork every epoch would start from the same random state and
        # train on the same batches with the same noise.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            row["val"] = mean_neg_elbo(model, loaders["val"])
            row["val_ema"] = mean_neg_elbo(average.module, loaders["val"])
            if epoch % quality_every == 0 or epoch == epochs:
                row["train_measured"] = mean_neg_elbo(model, train_eval)
                row["quality"] = quality(model, classifier, loaders["test"].dataset)
                row["quality_ema"] = quality(average.module, classifier, loaders["test"].dataset)
                # the KL term of the training codes split into I(x; z) + KL(q(z) || N(0, I)); seed 0 like the rest
                row["codes_ema"] = aggregate_posterior(average.module, loaders, 0)
        log["epochs"].append(row)
        out.write_text(json.dumps(log, indent=1))
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("quality")}), flush=True)
    return log


def median_jump(series: list) -> str:
    """How far the validation -ELBO jumps off its trend: the median over the last 10 epochs of its distance from
    the mean of the epochs before and after (0 for a smooth curve, however steep); a dash for under 3 epochs."""
    last = series[-12:]
    jumps = [abs(b - (a + c) / 2) for a, b, c in zip(last, last[1:], last[2:], strict=False)]
    return f"{statistics.median(jumps):.1f}" if jumps else "–"


def table() -> str:
    """One row per candidate and latent size: the best validation -ELBO of the trained and of the averaged weights,
    how much validation jumps from epoch to epoch, the train/validation gap of the trained weights, and the last
    measured sample quality (of the averaged weights) with the epoch it was measured at."""
    lines = ["| candidate | latent | epochs | best val −ELBO, trained weights (epoch) | … averaged weights (epoch) | "
             "val jumps, trained / averaged | measured at epoch | train − val, trained weights | samples recognised | "
             "endpoint fidelity | Fréchet: samples / reconstructions |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for path in sorted(RESULTS.glob("*.json")):
        log = json.loads(path.read_text())
        rows = log["epochs"]
        val, ema = [r["val"] for r in rows], [r["val_ema"] for r in rows]
        best, best_ema = min(range(len(val)), key=val.__getitem__), min(range(len(ema)), key=ema.__getitem__)
        measured = [r for r in rows if "quality" in r]
        quality_cells = "– | – | – | – | – / –"  # a run in progress, before its first quality measurement
        if measured:
            last, q = measured[-1], measured[-1]["quality_ema"]
            quality_cells = (f"{last['epoch']} | {last['train_measured'] - last['val']:.1f} | "
                             f"{q['samples_recognised']:.1%} | {q['endpoint_fidelity']:.1%} | "
                             f"{q['samples_frechet']:.0f} / {q['reconstructions_frechet']:.0f}")
        tag = path.stem.removeprefix(f"{log['candidate']}_z{log['latent_dim']}").lstrip("_")  # lr_2e-3_z3_cpu: "cpu"
        label = f"{log['candidate']} ({tag})" if tag else log["candidate"]
        lines.append(f"| {label} | {log['latent_dim']} | {len(rows)} | {val[best]:.1f} ({best + 1}) | "
                     f"{ema[best_ema]:.1f} ({best_ema + 1}) | {median_jump(val)} / {median_jump(ema)} | "
                     f"{quality_cells} |")
    return "\n".join(lines)


def main(argv: list | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate", nargs="?", choices=list(CANDIDATES))
    parser.add_argument("--latent", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quality-every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the initial weights, the batch order and the "
                        "noise; the split stays the tutorial's (default 42; another goes into the file name)")
    parser.add_argument("--tag", default="", help="appended to the result's file name after an underscore, to keep "
                        "an earlier run of the candidate (letters, digits, - and _)")
    parser.add_argument("--table", action="store_true", help="print the table of all results so far")
    args = parser.parse_args(argv)
    if args.tag and not (all(c.isalnum() or c in "-_" for c in args.tag) and args.tag.strip("-_")):
        parser.error(f"--tag takes letters, digits, - and _ only, with at least one letter or digit; got {args.tag!r}")
    if args.table:
        text = table()
        benchmarks.write_between_markers(DOC, text, "recipe")
        print(text)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.candidate, args.latent, args.epochs, args.quality_every, args.seed, args.tag)


if __name__ == "__main__":
    main()
