"""Measurements cached outside the shipped files: computed once per checkpoint content, never written into a shipped
file, and a shipped one read only when the manifest vouches for it."""

import json

import numpy as np
import pytest

from vae_mnist.cache import cached_metrics, cached_mixture


@pytest.fixture
def files(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"the weights")
    return tmp_path / "model.metrics.json", tmp_path / "run" / "metrics.json", checkpoint


def test_cached_metrics_compute_once_and_never_write_the_shipped_file(files):
    shipped, private, checkpoint = files
    shipped.write_text(json.dumps({"shipped": {"images": 10}}))
    before, calls = shipped.read_bytes(), []
    for _ in range(2):
        assert cached_metrics("answer", lambda: calls.append(1) or 42, shipped, private, checkpoint) == 42
    assert calls == [1]
    assert json.loads(private.read_text())["answer"] == 42
    assert cached_metrics("shipped", lambda: pytest.fail("recomputed"), shipped, private, checkpoint) == {"images": 10}
    more = cached_metrics("shipped", lambda: {"images": 20}, shipped, private, checkpoint,
                          lambda cached: cached["images"] >= 20)
    assert more == {"images": 20} and json.loads(private.read_text())["shipped"] == {"images": 20}
    assert shipped.read_bytes() == before


def test_a_changed_checkpoint_never_shows_the_cached_numbers_of_another(files):
    _, private, checkpoint = files
    assert cached_metrics("answer", lambda: 42, private.with_name("none.json"), private, checkpoint) == 42
    checkpoint.write_bytes(b"retrained weights")
    assert cached_metrics("answer", lambda: 43, private.with_name("none.json"), private, checkpoint) == 43
    assert json.loads(private.read_text())["answer"] == 43  # the old model's numbers are gone from the cache


def test_a_shipped_measurement_is_read_only_when_the_manifest_vouches_for_it(files):
    shipped, private, checkpoint = files
    shipped.write_text(json.dumps({"answer": 41}))
    (shipped.parent / "manifest.json").write_text(json.dumps({shipped.name: {"bytes": 1, "sha256": "0" * 64}}))
    with pytest.raises(RuntimeError, match="model.metrics.json is not the shipped file"):
        cached_metrics("answer", lambda: 42, shipped, private, checkpoint)


def test_cached_mixture_prefers_the_shipped_one_then_the_cache_of_the_same_checkpoint(files, tmp_path):
    _, _, checkpoint = files
    shipped, private, fits = tmp_path / "model.mixture.npz", tmp_path / "run" / "mixture.npz", []
    fitted = {"weights": np.array([1.0]), "means": np.zeros((1, 2)), "covariances": np.eye(2)[None]}
    for _ in range(2):
        mixture = cached_mixture(shipped, private, checkpoint, lambda: fits.append(1) or fitted)
        assert sorted(mixture) == sorted(fitted)
        np.testing.assert_array_equal(mixture["covariances"], fitted["covariances"])
    assert fits == [1] and private.exists() and not shipped.exists()
    checkpoint.write_bytes(b"retrained weights")
    cached_mixture(shipped, private, checkpoint, lambda: fits.append(1) or fitted)
    assert fits == [1, 1]  # fitted again for the new weights
    np.savez(shipped, **{**fitted, "weights": np.array([0.5])})
    read = cached_mixture(shipped, private, checkpoint, lambda: pytest.fail("fitted again"))
    assert read["weights"].tolist() == [0.5]
