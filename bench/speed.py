"""Speed of the notebook's heavy paths on one device, measured in one run and written down.

    python bench/speed.py                      # the CPU (or the GPU when there is one): throughput, epoch, bounds...
    python bench/speed.py --device cpu --time-to-bar --iwae-images 10000

For the device it measures:
  * training throughput (images/s) of a plain forward/backward/Adam loop of the notebook's VAE, so only the data path,
    the model's memory layout and Adam's implementation differ: tutorial-style (torchvision MNIST with a per-image
    transform and 2 DataLoader workers, NCHW layout, unfused Adam) against the notebook (`DeviceBatches`: MNIST as one
    uint8 tensor on the device, whole batches dequantized there; channels-last; fused Adam), all 32-bit as the
    notebook trains, and variants of the notebook's. The rows take turns within every repeat (the machine's speed
    drifts), and each ratio is the median, with the range, of the per-repeat ratios;
  * one epoch of the notebook's training (50,000 images, device-resident batches, validation excluded);
  * `sample(10_000)`; the IWAE bound with K = 1000 (all 10,000 test images, or --iwae-images of them and the rest
    extrapolated), and where the device multiplies bf16 natively the same bound with the decoder's layers in bf16,
    its bias against 32-bit on the same z; "run all" of the notebook from the shipped checkpoints (papermill);
  * with --time-to-bar, a student's retrain: the graded settings trained from scratch with the notebook's own
    `train_model`, stopped after 3 minutes of training by Lightning's `max_time`, then judged against the bar
    (validation -ELBO no worse than 41.2 nats, at least 80 % of samples recognised); its time includes the judging.
Results go to bench/results/speed.json under the device's name, each GPU model apart (other devices' results are kept),
and into docs/speed.md between the speed markers.
"""

import argparse
import dataclasses
import datetime
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, for `python bench/speed.py`
from vae_mnist.benchmarks import (  # noqa: E402
    BF16_BIAS_LIMIT,
    CHECKPOINTS,
    DOCS,
    REPO,
    RESULTS,
    InBf16,
    describe,
    interleaved_throughput,
    median_time,
    native_bf16,
    shipped_model,
    synchronize,
    with_decoder,
    write_between_markers,
)
from vae_mnist.judge import load_classifier, sample_quality  # noqa: E402
from vae_mnist.likelihood import iwae_bounds  # noqa: E402
from vae_mnist.notebook import (  # noqa: E402
    VAE,
    DeviceBatches,
    VAEConfig,
    best_device,
    dataset_root,
    dequantize,
    evaluate,
    make_loaders,
    train_model,
)

RECORD = RESULTS / "speed.json"
DOC = DOCS / "speed.md"
BAR = {"val_neg_elbo": 41.2, "samples_recognised": 0.80}  # the exercise's bar for a retrained model
BUDGET_S = 180  # a student's retrain to the bar
BASELINE = "tutorial-style data, NCHW model"


def tutorial_loader(batch_size: int) -> DataLoader:
    """The common recipe: a torchvision dataset whose transform dequantizes each PIL image, DataLoader workers."""
    transform = torchvision.transforms.Compose([torchvision.transforms.PILToTensor(), dequantize])
    dataset = torchvision.datasets.MNIST(dataset_root(), train=True, transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=2,
                      persistent_workers=True, pin_memory=torch.cuda.is_available())


def graded_model(device: torch.device, memory_format=torch.channels_last) -> VAE:
    """A fresh VAE of the graded settings' layers on `device`; channels-last as the notebook makes it, or NCHW for the
    tutorial-style rows (the input, with its one channel, is laid out alike either way, so the weights decide)."""
    torch.manual_seed(0)
    return VAE(**dataclasses.asdict(VAEConfig())).to(device).to(memory_format=memory_format)


def training_steps(loader, device: torch.device, memory_format=torch.channels_last, compile_model=False,
                   threads: int | None = None, fused_adam=True):
    """A function that trains a fresh graded model on `device`, fed by `loader`, on a given number of images, with
    the notebook's arithmetic (`calc_elbo`, 32-bit, Adam); warmed up by 3 steps."""
    model = graded_model(device, memory_format)
    step_fn = torch.compile(model.calc_elbo) if compile_model else model.calc_elbo
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused_adam)
    batches = iter(loader)

    def train(images: int):
        nonlocal batches
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        for _ in range(images // loader.batch_size):
            try:
                x, _ = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, _ = next(batches)
            loss = step_fn(x.to(device, non_blocking=True)).neg_elbo
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        synchronize(device)
        torch.set_num_threads(before)

    train(3 * loader.batch_size)
    return train


def epoch_seconds(loaders: dict, device: torch.device, batches: int | None = None) -> float:
    """One epoch of the notebook's training arithmetic on device-resident batches (or its first `batches`, scaled)."""
    total = len(loaders["train"]) if batches is None else batches
    run = training_steps(loaders["train"], device)
    synchronize(device)
    start = time.perf_counter()
    run(total * loaders["train"].batch_size)
    return (time.perf_counter() - start) * len(loaders["train"]) / total


def timed_bound(model, dataset, images: int, k: int = 1000) -> tuple:
    """The IWAE bound with K = k on the first `images` of `dataset` (nats per image), and its time scaled to all of
    them."""
    synchronize(model.device)
    start = time.perf_counter()
    bound = iwae_bounds(model, dataset, k, 0, images=images)["bound"][str(k)]
    synchronize(model.device)
    return bound, (time.perf_counter() - start) * len(dataset) / images


def iwae_bf16_bias(model, dataset, images: int, fp32: float, k: int = 1000) -> dict:
    """The K = k bound with the decoder's layers in bf16 against `fp32`, timed_bound's 32-bit bound on the same
    images: the same z draws, since the encoder, the z and the log-density stay 32-bit. The bias of the mean bound in
    nats per image, and the bf16 run's time scaled to the whole test set (the 32-bit time is timed_bound's)."""
    bound, seconds = timed_bound(with_decoder(model, InBf16), dataset, images, k)
    return {"fp32": fp32, "bf16": bound, "bf16_s": seconds, "images": images, "bias": bound - fp32}


def run_all_seconds(repeats: int) -> float:
    """Wall time of papermill executing the notebook from the shipped checkpoints (figures to a temporary folder)."""
    def run():
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PATH_FIGURES": tmp, "PATH_RUNS": tmp}
            subprocess.run([sys.executable, "-m", "papermill", str(REPO / "vae_mnist.ipynb"), f"{tmp}/out.ipynb",
                            "--log-level", "ERROR"], cwd=REPO, env=env, check=True, capture_output=True)
    return median_time(run, repeats, torch.device("cpu"))


def time_to_bar(loaders: dict, config: VAEConfig, classifier) -> dict:
    """A student's retrain of the graded settings with the notebook's own train_model, stopped by Lightning's
    max_time after BUDGET_S of training, then its evaluate and sample_quality: does the model pass the bar, and how
    long did it all take?"""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model, record = train_model(config, loaders, Path(tmp), enable_progress_bar=False,
                                    max_time=datetime.timedelta(seconds=BUDGET_S))
        model = model.to(best_device()).eval()
        results = evaluate(model, loaders, config.seed)
        quality = sample_quality(model, classifier, loaders["test"].dataset, config.seed)
        seconds = time.perf_counter() - start
    val, recognised = results["val"]["neg_elbo"], quality["samples"]["recognised"]
    epochs = len(record["history"]["epoch"])
    return {"epochs": epochs, "cut_short": epochs < config.max_epochs, "train_seconds": record["train_seconds"],
            "seconds": seconds, "val_neg_elbo": val, "test_neg_elbo": results["test"]["neg_elbo"],
            "samples_recognised": recognised,
            "passes": val <= BAR["val_neg_elbo"] and recognised >= BAR["samples_recognised"]}


def training_setups(loaders: dict, device: torch.device) -> dict:
    """The throughput rows: the tutorial-style pipeline in two layouts, the notebook's, and variants of it."""
    return {
        BASELINE: lambda: training_steps(tutorial_loader(128), device, torch.contiguous_format, fused_adam=False),
        "tutorial-style data, channels-last model": lambda: training_steps(tutorial_loader(128), device,
                                                                           fused_adam=False),
        "notebook (32-bit)": lambda: training_steps(loaders["train"], device),
        "… on 1 thread": lambda: training_steps(loaders["train"], device, threads=1),
        "… with batches of 256": lambda: training_steps(
            DeviceBatches(loaders["train"].dataset, 256, True, True), device),
        "… under torch.compile": lambda: training_steps(loaders["train"], device, compile_model=True),
    }


def measure(device: torch.device, repeats: int, steps: int, iwae_images: int, bar: bool,
            run_all_repeats: int) -> dict:
    loaders = make_loaders(dataset_root(), 128, 42)
    runs = {}
    for name, setup in training_setups(loaders, device).items():
        try:
            runs[name] = functools.partial(setup(), steps * 128)
        except Exception as error:  # torch.compile needs a working C++ toolchain; record and go on
            print(f"{name}: failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    results = {"machine": describe(device), "date": time.strftime("%Y-%m-%d"), "repeats": repeats}

    def record(key, value):  # printed as measured, so a later failure loses nothing
        results[key] = value
        print(f"{key}: {value}", flush=True)

    record("training", interleaved_throughput(runs, steps * 128, repeats, BASELINE))
    config = VAEConfig()
    model = shipped_model().to(device)
    record("epoch_s", epoch_seconds(loaders, device))
    record("sample_10000_s", median_time(lambda: model.sample(10_000), repeats, device))
    bound, seconds = timed_bound(model, loaders["test"].dataset, iwae_images)
    record("iwae_k1000_test_s", seconds)
    record("iwae_images_timed", iwae_images)
    if native_bf16(device):  # elsewhere emulated bf16 is slower, so the question does not arise
        record("iwae_bf16", iwae_bf16_bias(model, loaders["test"].dataset, iwae_images, bound))
    record("run_all_s", run_all_seconds(run_all_repeats))
    record("run_all_repeats", run_all_repeats)
    if bar:
        classifier = load_classifier(CHECKPOINTS / "mnist_classifier.pt", dataset_root())
        shipped = json.loads(config.run_file(CHECKPOINTS, ".json").read_text())
        record("time_to_bar", {**time_to_bar(loaders, config, classifier),
                               "shipped_epochs": len(shipped["history"]["epoch"]),
                               "shipped_train_seconds": shipped["train_seconds"]})
    return results


def minutes_or_seconds(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def bf16_row(bias: dict | None) -> list:
    if bias is None:
        return []
    usable = "within" if abs(bias["bias"]) <= BF16_BIAS_LIMIT else "over"
    return [f"| … with the decoder's layers in bf16 | {minutes_or_seconds(bias['bf16_s'])} ({bias['images']:,} "
            f"images, the same z as the 32-bit row): bias {bias['bias']:+.3f} nats per image, {usable} the "
            f"{BF16_BIAS_LIMIT} allowed | |"]


def result_key(device: torch.device) -> str:
    """Where speed.json keeps a device's figures: the CPU's, and each GPU model's apart (their figures differ)."""
    return "cpu" if device.type == "cpu" else f"cuda {torch.cuda.get_device_name(device)}"


def markdown(all_results: dict) -> str:
    lines = []
    for key, r in all_results.items():
        device = key.split()[0]
        lines += [f"**{device.upper()}**: measured by `python bench/speed.py --device {device}` on {r['machine']} "
                  f"({r['date']}); medians of {r['repeats']} repeats, ratios with their range over the repeats.", "",
                  "| what | time or speed | vs tutorial-style |", "|---|---:|---:|"]
        lines += [f"| training, {name} | {t['images_per_s']:,.0f} images/s | {t['ratio']:.2f}× "
                  f"({t['ratio_range'][0]:.2f}–{t['ratio_range'][1]:.2f}) |" for name, t in r["training"].items()]
        timed = r["iwae_images_timed"]
        lines += [f"| one training epoch (50,000 images, device-resident batches) | {r['epoch_s']:.1f} s | |",
                  f"| `sample(10_000)` | {r['sample_10000_s']:.3g} s | |",
                  f"| IWAE bound, K = 1000, all 10,000 test images | {minutes_or_seconds(r['iwae_k1000_test_s'])}"
                  + ("" if timed == 10_000 else f" ({timed:,} images timed, scaled)") + " | |",
                  *bf16_row(r.get("iwae_bf16")),
                  f"| \"run all\" from the shipped checkpoints (papermill, median of "
                  f"{r.get('run_all_repeats', r['repeats'])}) | "
                  + (f"{r['run_all_s']:.0f} s" if r.get("run_all_s") is not None else r["run_all_failed"])
                  + (f" ({r['run_all_note']})" if r.get("run_all_note") else "") + " | |"]
        if "time_to_bar" in r:
            b = r["time_to_bar"]
            verdict = "passes" if b["passes"] else "misses"
            lines += [f"| a student's retrain of the graded settings, stopped after {BUDGET_S // 60} min of "
                      f"training (Lightning's `max_time`): {b['epochs']} epochs"
                      + (", the last cut short" if b.get("cut_short") else "") + " | "
                      f"{b['seconds'] / 60:.1f} min with its evaluation: validation −ELBO "
                      f"{b['val_neg_elbo']:.1f} nats, {b['samples_recognised']:.1%} of samples recognised; it "
                      f"{verdict} the bar (≤ {BAR['val_neg_elbo']} nats, ≥ {BAR['samples_recognised']:.0%}) | |",
                      f"| the shipped recipe's full training ({b['shipped_epochs']} epochs) | "
                      f"{b['shipped_train_seconds'] / 60:.0f} min | |"]
        lines.append("")
    if not any(key.startswith("cuda") for key in all_results):
        lines.append("**GPU**: not measured yet. The GPU mode (`--device cuda`) runs the same code with the device "
                     "as a parameter, and the tests run it on the CPU; no GPU was available where these figures were "
                     "made.")
    return "\n".join(lines).rstrip()


def main(argv: list | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="training steps of 128 images per measurement")
    parser.add_argument("--iwae-images", type=int, default=None,
                        help="test images the K = 1000 bound is timed on (default: 10,000 on a GPU, 256 on a CPU)")
    parser.add_argument("--run-all-repeats", type=int, default=None, help="repeats of \"run all\" (default: --repeats)")
    parser.add_argument("--time-to-bar", action="store_true", help="also time a student's retrain (minutes)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    iwae_images = args.iwae_images or (10_000 if device.type == "cuda" else 256)
    results = measure(device, args.repeats, args.steps, iwae_images, args.time_to_bar,
                      args.run_all_repeats or args.repeats)
    stored = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    stored = {**{k: v for k, v in stored.items() if k == "cpu" or k.startswith("cuda ")}, result_key(device): results}
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(stored, indent=1))
    table = markdown(stored)
    write_between_markers(DOC, table, "speed")
    print(table, f"\nWritten to {RECORD} and {DOC}", sep="\n")


if __name__ == "__main__":
    main()
