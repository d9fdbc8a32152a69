"""Measurements cached outside the shipped files: a run reads a model's shipped measurements (checkpoints/, tracked by
git) when they are there and good enough, else its own cache (runs/, untracked), and writes only to the cache, so
that trying a setting never changes a shipped file."""

import json
from pathlib import Path

import numpy as np

from vae_mnist.mixture import load_mixture


def cached_metrics(name: str, compute, shipped: Path, private: Path, good_enough=lambda value: True):
    """metrics[name] from the shipped measurements or this machine's own cache when `good_enough`; otherwise
    computed and saved to the cache only, so that no run ever writes into a shipped (tracked) file."""
    for path in (shipped, private):
        value = json.loads(path.read_text()).get(name) if path.exists() else None
        if value is not None and good_enough(value):
            return value
    value = compute()
    private.parent.mkdir(parents=True, exist_ok=True)
    metrics = json.loads(private.read_text()) if private.exists() else {}
    private.write_text(json.dumps({**metrics, name: value}, indent=1))
    return value


def cached_mixture(shipped: Path, private: Path, fit) -> dict:
    """The shipped mixture prior of a model, else this machine's cached one, else a new fit (saved to the cache)."""
    for path in (shipped, private):
        if path.exists():
            return load_mixture(path)
    mixture = fit()
    private.parent.mkdir(parents=True, exist_ok=True)
    np.savez(private, **mixture)
    return mixture
