"""Speed of the notebook's pipeline against the tutorial-style one, on this machine, in one run.

    python bench/speed.py [--repeats 5] [--steps 40] [--time-to-bar]

Training throughput (images/s, a plain forward/backward/Adam loop of the notebook's VAE, so only the data path, the
model's memory layout, the arithmetic's precision and Adam's implementation differ) of:
  * tutorial-style: torchvision MNIST with a per-image transform (to tensor, dequantize) and 2 DataLoader workers,
    the model in the default NCHW layout, 32-bit, the default (unfused) Adam;
  * the same data with the channels-last model;
  * the notebook's data (`DeviceBatches`: one uint8 tensor, whole batches dequantized) and model, fused Adam, 32-bit;
  * the notebook as it trains on this machine (`training_precision`: bf16 mixed precision where the CPU has bf16);
  * that with 1 thread, with batches of 256, under torch.compile, and with narrower layers (16, 32).
Also `sample(10_000)`, the IWAE bound (K = 1000) per test image, and "run all" of the notebook from the shipped
checkpoint; with --time-to-bar, a real training of the graded settings as the notebook runs it (and one with the
narrower layers), the epoch at which it reaches the shipped model's validation -ELBO, and its test -ELBO and sample
quality. Every figure but the training
is the median of --repeats runs. Results go to bench/results/speed.json and into the README between the speed
markers.
"""

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from notebook_defs import load_notebook  # noqa: E402

RESULTS = REPO / "bench" / "results" / "speed.json"
NARROW = (16, 32)  # convolution channels to compare with the notebook's own


def median_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tutorial_loader(nb, batch_size: int) -> DataLoader:
    """The common recipe: a torchvision dataset whose transform dequantizes each PIL image, DataLoader workers."""
    transform = torchvision.transforms.Compose([torchvision.transforms.PILToTensor(), nb.dequantize])
    dataset = torchvision.datasets.MNIST(nb.dataset_root(), train=True, transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=2,
                      persistent_workers=True)


def training_steps(nb, loader, memory_format=torch.channels_last, precision="32-true", compile_model=False,
                   channels: tuple | None = None, threads: int | None = None, fused_adam=True):
    """A function that trains a fresh VAE (the notebook's layers unless `channels` is given), fed by `loader`, on a
    given number of images (warmed up by 3 steps)."""
    torch.manual_seed(0)
    model = nb.VAE() if channels is None else nb.VAE(channels=channels)
    model.MEMORY_FORMAT = memory_format  # this instance only
    model.to(memory_format=memory_format)
    step_fn = torch.compile(model.calc_elbo) if compile_model else model.calc_elbo
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused_adam)  # fused as in the notebook
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
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                loss = step_fn(x).neg_elbo
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.set_num_threads(before)

    train(3 * loader.batch_size)
    return train


def interleaved_throughput(runs: dict, images: int, repeats: int) -> dict:
    """Images per second of each run of `images` training images, the runs taking turns in every repeat so that a
    slower or faster spell of a shared machine touches them all alike; the median over the repeats."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: images / statistics.median(t) for name, t in times.items()}


def run_all_seconds(repeats: int) -> float:
    """Wall time of papermill executing the notebook from the shipped checkpoint (figures to a temporary folder)."""
    def run():
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PATH_FIGURES": tmp}
            subprocess.run([sys.executable, "-m", "papermill", str(REPO / "vae_mnist.ipynb"), f"{tmp}/out.ipynb",
                            "--log-level", "ERROR"], cwd=REPO, env=env, check=True, capture_output=True)
    return median_time(run, repeats)


def time_to_bar(nb, loaders: dict, config, precision: str, classifier) -> dict:
    """Train `config` as the notebook does (a fresh checkpoint folder); when did the validation -ELBO reach the
    shipped model's best, and do its test -ELBO and samples match the shipped model's?"""
    shipped = REPO / "checkpoints" / nb.VAEConfig().run_name()  # + ".json": the name has a dot (sigma0.1)
    bar = min(json.loads(Path(f"{shipped}.json").read_text())["history"]["val_neg_elbo"])
    with tempfile.TemporaryDirectory() as tmp:
        model, record = nb.train_model(config, loaders, Path(tmp), precision=precision, enable_progress_bar=False)
    val = record["history"]["val_neg_elbo"]
    epoch_at_bar = next((epoch + 1 for epoch, v in enumerate(val) if v <= bar), None)
    test = nb.evaluate(model, loaders, config.seed)["test"]["neg_elbo"]
    quality = nb.sample_quality(model, classifier, loaders["test"].dataset, config.seed)
    shipped_metrics = json.loads(Path(f"{shipped}.metrics.json").read_text())
    return {"channels": list(config.channels), "precision": precision, "epochs": len(val),
            "seconds": record["train_seconds"], "bar_val_neg_elbo": bar,
            "best_val_neg_elbo": min(val), "epoch_at_bar": epoch_at_bar,
            "minutes_to_bar": epoch_at_bar and record["train_seconds"] * epoch_at_bar / len(val) / 60,
            "test_neg_elbo": test, "test_bpd": nb.nats_to_bpd(test),
            "samples_recognised": quality["samples"]["recognised"],
            "shipped_test_neg_elbo": shipped_metrics["test"]["neg_elbo"],
            "shipped_samples_recognised": shipped_metrics["quality"]["samples"]["recognised"]}


def markdown(results: dict) -> str:
    t = results["train_images_per_s"]
    base = t["tutorial-style data, NCHW model"]
    rows = [f"| training, {name} | {v:,.0f} images/s | {v / base:.2f}× |" for name, v in t.items()]
    rows += [f"| `sample(10_000)` | {results['sample_10000_s']:.2f} s | |",
             f"| IWAE bound, K = 1000, per test image | {results['iwae_k1000_ms_per_image']:.0f} ms "
             f"(10,000 images: {results['iwae_k1000_ms_per_image'] * 10:.0f} s) | |",
             f"| \"run all\" from the shipped checkpoint (papermill) | {results['run_all_s']:.0f} s | |"]
    for bar in results.get("time_to_bar", []):
        reached = (f"reached at epoch {bar['epoch_at_bar']}: ≈ {bar['minutes_to_bar']:.1f} min "
                   f"({bar['epoch_at_bar']}/{bar['epochs']} of the training time)" if bar["epoch_at_bar"]
                   else f"not reached (best {bar['best_val_neg_elbo']:.1f} nats)")
        graded = results["time_to_bar"][0]["channels"]  # the first training is the notebook's own layers
        layers = "" if bar["channels"] == graded else f", layers {tuple(bar['channels'])}"
        rows += [f"| training the graded settings ({bar['epochs']} epochs, {bar['precision']}{layers}) | "
                 f"{bar['seconds'] / 60:.1f} min | |",
                 f"| … to the shipped model's validation −ELBO ({bar['bar_val_neg_elbo']:.1f} nats) | {reached} | |",
                 f"| … its test −ELBO and recognised samples (shipped: {bar['shipped_test_neg_elbo']:.1f} nats, "
                 f"{bar['shipped_samples_recognised']:.1%}) | {bar['test_neg_elbo']:.1f} nats "
                 f"({bar['test_bpd']:.3f} bits/dim), {bar['samples_recognised']:.1%} | |"]
    head = [f"Measured by `python bench/speed.py` on {results['machine']} ({results['date']}), median of "
            f"{results['repeats']} runs.", "", "| what | speed | vs tutorial-style |", "|---|---:|---:|"]
    return "\n".join(head + rows)


def write_into_readme(table: str):
    readme = REPO / "README.md"
    text = readme.read_text()
    start, end = "<!-- speed:start -->", "<!-- speed:end -->"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        readme.write_text(before + start + "\n" + table + "\n" + end + rest.split(end, 1)[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="training steps of 128 images per measurement")
    parser.add_argument("--time-to-bar", action="store_true", help="also train until the quality bar (minutes)")
    args = parser.parse_args()
    nb = load_notebook()
    loaders = nb.make_loaders(nb.dataset_root(), 128, 42)
    tutorial = tutorial_loader(nb, 128)
    precision = nb.training_precision(nb.best_device())
    train_256 = nb.DeviceBatches(loaders["train"].dataset, 256, True, True)
    setups = {
        "tutorial-style data, NCHW model": lambda: training_steps(nb, tutorial, torch.contiguous_format,
                                                                  fused_adam=False),
        "tutorial-style data, channels-last model": lambda: training_steps(nb, tutorial, fused_adam=False),
        "notebook data and model, 32-bit": lambda: training_steps(nb, loaders["train"]),
        f"notebook as it trains here ({precision})": lambda: training_steps(nb, loaders["train"], precision=precision),
        "… on 1 thread": lambda: training_steps(nb, loaders["train"], precision=precision, threads=1),
        "… with batches of 256": lambda: training_steps(nb, train_256, precision=precision),
        "… under torch.compile": lambda: training_steps(nb, loaders["train"], precision=precision, compile_model=True),
        f"… with narrower layers {NARROW}": lambda: training_steps(nb, loaders["train"], precision=precision,
                                                                   channels=NARROW),
    }
    runs = {}
    for name, setup in setups.items():
        try:
            runs[name] = functools.partial(setup(), args.steps * 128)
        except Exception as error:  # torch.compile needs a working C++ toolchain; record and go on
            print(f"{name}: failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    train = interleaved_throughput(runs, args.steps * 128, args.repeats)
    for name, images_per_s in train.items():
        print(f"{name}: {images_per_s:,.0f} images/s")
    config = nb.VAEConfig()
    model = nb.load_checkpoint(REPO / "checkpoints" / f"{config.run_name()}.ckpt", config).eval()
    sample_s = median_time(lambda: model.sample(10_000), args.repeats)
    iwae_s = median_time(lambda: nb.iwae_bounds(model, loaders["test"].dataset, 1000, 0, images=256), args.repeats)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
                   + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"),
        "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats, "train_images_per_s": train,
        "sample_10000_s": sample_s, "iwae_k1000_ms_per_image": 1000 * iwae_s / 256,
        "run_all_s": run_all_seconds(args.repeats),
    }
    if args.time_to_bar:
        classifier = nb.load_classifier(REPO / "checkpoints" / "mnist_classifier.pt", nb.dataset_root())
        results["time_to_bar"] = [time_to_bar(nb, loaders, c, precision, classifier)
                                  for c in (config, nb.dataclasses.replace(config, channels=NARROW))]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    table = markdown(results)
    write_into_readme(table)
    print(table, f"\nWritten to {RESULTS} and README.md", sep="\n")


if __name__ == "__main__":
    main()
