"""Measurements cached outside the shipped files: a run reads a model's shipped measurements (checkpoints/, tracked by
git, checked against the manifest) when they are there and good enough, else its own cache (runs/, untracked), and
writes only to the cache, so that trying a setting never changes a shipped file. The cache is keyed by the content of
the checkpoint it measured: a changed or retrained checkpoint never shows another one's numbers."""

import hashlib
import json
from pathlib import Path

import numpy as np

from vae_mnist.mixture import load_mixture
from vae_mnist.notebook import verify_shipped

KEY = "checkpoint_sha256"


def content_key(checkpoint: Path) -> str:
    return hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()


def cached_metrics(name: str, compute, shipped: Path, private: Path, checkpoint: Path, good_enough=lambda value: True):
    """metrics[name] from the shipped measurements or this machine's own cache of the same `checkpoint` when
    `good_enough`; otherwise computed and saved to the cache only."""
    key = content_key(checkpoint)
    cache = json.loads(private.read_text()) if private.exists() else {}
    cache = cache if cache.get(KEY) == key else {KEY: key}
    shipped_metrics = json.loads(verify_shipped(shipped).read_text()) if shipped.exists() else {}
    for metrics in (shipped_metrics, cache):
        if metrics.get(name) is not None and good_enough(metrics[name]):
            return metrics[name]
    value = compute()
    private.parent.mkdir(parents=True, exist_ok=True)
    private.write_text(json.dumps({**cache, name: value}, indent=1))
    return value


def cached_mixture(shipped: Path, private: Path, checkpoint: Path, fit) -> dict:
    """The shipped mixture prior of a model, else this machine's cached one of the same `checkpoint`, else a new fit
    (saved to the cache)."""
    if shipped.exists():
        return load_mixture(shipped)
    key = content_key(checkpoint)
    if private.exists():
        cached = load_mixture(private)
        if str(cached.pop(KEY, "")) == key:
            return cached
    mixture = fit()
    private.parent.mkdir(parents=True, exist_ok=True)
    np.savez(private, **mixture, **{KEY: np.array(key)})
    return mixture
