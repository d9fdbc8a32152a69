"""Speed of the notebook's pipeline against the tutorial-style one, on this machine, in one run.

    PATH_DATASETS=../shared/data python bench/speed.py [--repeats 3] [--steps 40] [--time-to-bar]

Training throughput (images/s, a plain forward/backward/Adam loop of the notebook's VAE, so only the data path and
the model's memory layout differ) of:
  * tutorial-style: torchvision MNIST with a per-image transform (to tensor, dequantize) and 2 DataLoader workers,
    the model in the default NCHW layout;
  * the same data with the channels-last model;
  * the notebook: `DeviceBatches` (one uint8 tensor, whole batches dequantized) and the channels-last model;
  * the notebook with 1 thread, with batches of 256, and under torch.compile.
Also `sample(10_000)`, the IWAE bound (K = 1000) per test image, and "run all" of the notebook from the shipped
checkpoint; with --time-to-bar, the wall time of a real training until it reaches the shipped model's validation
-ELBO. Every figure is the median of --repeats runs. Results go to bench/results/speed.json and into the README
between the speed markers.
"""

import argparse
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
DATA = Path(os.environ.get("PATH_DATASETS", "data"))


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
    dataset = torchvision.datasets.MNIST(DATA, train=True, transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=2,
                      persistent_workers=True)


def throughput(nb, loader, steps: int, repeats: int, memory_format=torch.channels_last, compile_model=False) -> float:
    """Images per second of training steps fed by `loader` (after 3 warm-up steps)."""
    nb.VAE.MEMORY_FORMAT = memory_format
    try:
        torch.manual_seed(0)
        model = nb.VAE()
        step_fn = torch.compile(model.calc_elbo) if compile_model else model.calc_elbo
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = iter(loader)

        def train(n):
            nonlocal batches
            for _ in range(n):
                try:
                    x, _ = next(batches)
                except StopIteration:
                    batches = iter(loader)
                    x, _ = next(batches)
                loss = step_fn(x).neg_elbo
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        train(3)
        return steps * loader.batch_size / median_time(lambda: train(steps), repeats)
    finally:
        nb.VAE.MEMORY_FORMAT = torch.channels_last


def with_threads(n: int, run):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return run()
    finally:
        torch.set_num_threads(before)


def run_all_seconds(repeats: int) -> float:
    """Wall time of papermill executing the notebook from the shipped checkpoint (figures to a temporary folder)."""
    def run():
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PATH_DATASETS": str(DATA.resolve()), "PATH_FIGURES": tmp}
            subprocess.run([sys.executable, "-m", "papermill", str(REPO / "vae_mnist.ipynb"), f"{tmp}/out.ipynb",
                            "--log-level", "ERROR"], cwd=REPO, env=env, check=True, capture_output=True)
    return median_time(run, repeats)


def time_to_bar(nb, loaders: dict) -> dict:
    """Train the default settings with Lightning until the validation -ELBO reaches the shipped model's."""
    import pytorch_lightning as pl

    config = nb.VAEConfig()
    bar = json.loads((REPO / "checkpoints" / f"{config.run_name()}.json").read_text())["history"]["val_neg_elbo"]
    target = min(bar)

    class StopAtBar(pl.Callback):
        def on_validation_epoch_end(self, trainer, module):
            if trainer.callback_metrics["val_neg_elbo"] <= target:
                trainer.should_stop = True

    pl.seed_everything(config.seed)
    model = nb.VAE(**nb.dataclasses.asdict(config))
    trainer = pl.Trainer(max_epochs=config.max_epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[StopAtBar()])
    start = time.perf_counter()
    trainer.fit(model, loaders["train"], loaders["val"])
    return {"target_val_neg_elbo": target, "reached": float(trainer.callback_metrics["val_neg_elbo"]),
            "epochs": trainer.current_epoch, "seconds": time.perf_counter() - start}


def markdown(results: dict) -> str:
    t = results["train_images_per_s"]
    base = t["tutorial-style data, NCHW model"]
    rows = [f"| training, {name} | {v:,.0f} images/s | {v / base:.2f}× |" for name, v in t.items()]
    rows += [f"| `sample(10_000)` | {results['sample_10000_s']:.2f} s | |",
             f"| IWAE bound, K = 1000, per test image | {results['iwae_k1000_ms_per_image']:.0f} ms "
             f"(10,000 images: {results['iwae_k1000_ms_per_image'] * 10:.0f} s) | |",
             f"| \"run all\" from the shipped checkpoint (papermill) | {results['run_all_s']:.0f} s | |"]
    if "time_to_bar" in results:
        bar = results["time_to_bar"]
        rows.append(f"| training to the shipped model's validation −ELBO ({bar['target_val_neg_elbo']:.1f} nats) | "
                    f"{bar['seconds'] / 60:.1f} min ({bar['epochs']} epochs) | |")
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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="training steps per throughput measurement")
    parser.add_argument("--time-to-bar", action="store_true", help="also train until the quality bar (minutes)")
    args = parser.parse_args()
    nb = load_notebook()
    loaders = nb.make_loaders(DATA, 128, 42)
    tutorial = tutorial_loader(nb, 128)
    measure = {
        "tutorial-style data, NCHW model": lambda: throughput(nb, tutorial, args.steps, args.repeats,
                                                              torch.contiguous_format),
        "tutorial-style data, channels-last model": lambda: throughput(nb, tutorial, args.steps, args.repeats),
        "notebook (device batches, channels-last)": lambda: throughput(nb, loaders["train"], args.steps, args.repeats),
        "notebook, 1 thread": lambda: with_threads(1, lambda: throughput(nb, loaders["train"], args.steps,
                                                                         args.repeats)),
        "notebook, batches of 256": lambda: throughput(nb, nb.DeviceBatches(loaders["train"].dataset, 256, True, True),
                                                       args.steps // 2, args.repeats),
        "notebook, torch.compile": lambda: throughput(nb, loaders["train"], args.steps, args.repeats,
                                                      compile_model=True),
    }
    train = {}
    for name, run in measure.items():
        try:
            train[name] = run()
            print(f"{name}: {train[name]:,.0f} images/s")
        except Exception as error:  # torch.compile needs a working C++ toolchain; record and go on
            print(f"{name}: failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    config = nb.VAEConfig()
    model = nb.load_checkpoint(REPO / "checkpoints" / f"{config.run_name()}.ckpt", config).eval()
    sample_s = median_time(lambda: model.sample(10_000), args.repeats)
    subset = nb.DeviceBatches(torch.utils.data.Subset(loaders["test"].dataset, range(256)), 128)
    iwae_s = median_time(lambda: nb.iwae_bounds(model, subset, 1000, 0), args.repeats)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
                   + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"),
        "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats, "train_images_per_s": train,
        "sample_10000_s": sample_s, "iwae_k1000_ms_per_image": 1000 * iwae_s / 256,
        "run_all_s": run_all_seconds(args.repeats),
    }
    if args.time_to_bar:
        results["time_to_bar"] = time_to_bar(nb, loaders)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    table = markdown(results)
    write_into_readme(table)
    print(table, f"\nWritten to {RESULTS} and README.md", sep="\n")


if __name__ == "__main__":
    main()
