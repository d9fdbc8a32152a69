"""What the benches in bench/ share: how they time, which model they measure, the bf16 decoder they compare with
32-bit, how they name the machine, and how they put a table into the docs.

Each bench (bench/speed.py, bench/recipe.py, bench/bound_precision.py) is a command line over this module, the graded
notebook's code (`vae_mnist.notebook`) and the measuring modules of the package; it writes its figures to a record
under bench/results/ and, for a table, between a pair of markers in docs/speed.md or docs/recipe.md.
"""

import copy
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from vae_mnist.notebook import VAE, VAEConfig, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"  # the records: what each run measured, kept as it was
DOCS = REPO / "docs"
CHECKPOINTS = REPO / "checkpoints"
BF16_BIAS_LIMIT = 0.02  # nats per image: how far a bf16 decoder may move the K = 1000 bound to be worth its speed


def synchronize(device: torch.device):
    """Wait for a GPU's queued work, so that a clock read after it times the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(run, repeats: int, device: torch.device) -> float:
    """Seconds of one call of `run`: the median of `repeats` calls, each waited for on `device`."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_throughput(runs: dict, images: int, repeats: int, baseline: str) -> dict:
    """Images per second of each run, the runs taking turns in every repeat so that a slower or faster spell of the
    machine (a virtual machine's speed drifts) touches them all alike: the median over the repeats, and the median and
    range of the per-repeat ratio to `baseline`. Each run waits for its own device's work before it returns."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    rows = {}
    for name, t in times.items():
        ratios = [b / s for b, s in zip(times[baseline], t, strict=True)]
        rows[name] = {"images_per_s": images / statistics.median(t), "ratio": statistics.median(ratios),
                      "ratio_range": [min(ratios), max(ratios)]}
    return rows


def shipped_model(checkpoints: Path = CHECKPOINTS) -> VAE:
    """The graded settings' shipped model, checked against them by the notebook's `load_checkpoint`, on the CPU in
    eval mode. A bench measures that model and never trains it (as `train_model` would where it is missing), so a
    missing checkpoint is an error here, not a 100-epoch training."""
    config = VAEConfig()
    path = config.run_file(checkpoints, ".ckpt")
    if not path.exists():
        raise FileNotFoundError(f"No shipped checkpoint {path}: run the notebook (python execute.py) to fetch or make "
                                "it, then run the bench.")
    return load_checkpoint(path, config).eval()


class InBf16(torch.nn.Module):
    """A module run under bf16 autocast: its layers multiply in bf16, what it returns is 32-bit again, so the
    densities around it keep their 32-bit arithmetic."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, dtype=torch.bfloat16):
            return self.module(z).float()


def with_decoder(model: VAE, wrapper) -> VAE:
    """A copy of `model` whose decoder runs inside `wrapper` (InBf16, say); the model itself stays as it was. Only
    the decoder changes, so the encoder, the z draws and the log-densities are those of the 32-bit model."""
    variant = copy.deepcopy(model)
    variant.decoder = wrapper(variant.decoder)
    return variant


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 in hardware (a GPU, or a CPU with AVX512-BF16 or AMX): only there can a bf16
    decoder be faster than 32-bit, so only there is it worth measuring."""
    if device.type == "cuda":
        return True
    flags = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))


def describe(device: torch.device) -> str:
    """The machine a record was measured on, in words: what its figures depend on (the GPU model; a CPU's cores,
    vector units, bf16 support and torch threads) and the torch release."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    flags = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    vector = "AVX-512" if flags.get("avx512_f") else "AVX2" if flags.get("avx2") else "no AVX2"
    bf16 = ", bf16" if native_bf16(device) else ""
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, {vector}{bf16}, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}")


def write_between_markers(path: Path, table: str, marker: str) -> bool:
    """Replace what stands between <!-- marker:start --> and <!-- marker:end --> in `path` with `table`, so a bench
    rewrites its own table and no prose around it. Returns whether the markers were there (else nothing is written)."""
    text = Path(path).read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text.split(start, 1)[1]:
        return False
    before, rest = text.split(start, 1)
    Path(path).write_text(before + start + "\n" + table + "\n" + end + rest.split(end, 1)[1])
    return True
