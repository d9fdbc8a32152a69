"""Measurements cached outside the shipped files: computed once, never written into a shipped file."""

import json

import numpy as np
import pytest

from vae_mnist.cache import cached_metrics, cached_mixture


def test_cached_metrics_compute_once_and_never_write_the_shipped_file(tmp_path):
    shipped, private, calls = tmp_path / "shipped.metrics.json", tmp_path / "run" / "metrics.json", []
    shipped.write_text(json.dumps({"shipped": {"images": 10}}))
    before = shipped.read_bytes()
    for _ in range(2):
        assert cached_metrics("answer", lambda: calls.append(1) or 42, shipped, private) == 42
    assert calls == [1]
    assert json.loads(private.read_text()) == {"answer": 42}
    assert cached_metrics("shipped", lambda: pytest.fail("recomputed"), shipped, private) == {"images": 10}
    more = cached_metrics("shipped", lambda: {"images": 20}, shipped, private, lambda cached: cached["images"] >= 20)
    assert more == {"images": 20} and json.loads(private.read_text()) == {"answer": 42, "shipped": {"images": 20}}
    assert shipped.read_bytes() == before


def test_cached_mixture_prefers_the_shipped_one_then_the_cache_and_fits_only_when_neither_exists(tmp_path):
    shipped, private, fits = tmp_path / "model.mixture.npz", tmp_path / "run" / "mixture.npz", []
    fitted = {"weights": np.array([1.0]), "means": np.zeros((1, 2)), "covariances": np.eye(2)[None]}
    for _ in range(2):
        mixture = cached_mixture(shipped, private, lambda: fits.append(1) or fitted)
        np.testing.assert_array_equal(mixture["covariances"], fitted["covariances"])
    assert fits == [1] and private.exists() and not shipped.exists()
    np.savez(shipped, **{**fitted, "weights": np.array([0.5])})
    assert cached_mixture(shipped, private, lambda: pytest.fail("fitted again"))["weights"].tolist() == [0.5]
