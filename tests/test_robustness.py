"""Faults and bad input: each case a real run on a tiny budget; nothing a user made is lost, every error explained.

Also in this suite: bad `sample`/`calc_elbo` arguments (test_model.py), MNIST missing offline (test_data.py) and
running all cells twice in one kernel (test_notebook.py).
"""

import dataclasses
import signal

import pytest
import torch
from conftest import QUIET, digest, tiny


def test_checkpoint_of_other_settings_under_this_name_is_refused(nb, loaders, tmp_path):
    trained = tiny(nb, latent_dim=2)
    nb.train_model(trained, loaders, tmp_path, **QUIET)
    wanted = tiny(nb, latent_dim=5)
    impostor = tmp_path / f"{wanted.run_name()}.ckpt"
    (tmp_path / f"{trained.run_name()}.ckpt").rename(impostor)
    with pytest.raises(RuntimeError, match="was trained with"):
        nb.train_model(wanted, loaders, tmp_path, **QUIET)
    assert impostor.exists()


def test_corrupt_checkpoint_is_reported_and_kept(nb, loaders, tmp_path):
    config = tiny(nb)
    broken = tmp_path / f"{config.run_name()}.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="Could not read the checkpoint") as error:
        nb.train_model(config, loaders, tmp_path, **QUIET)
    assert str(broken) in str(error.value)
    assert broken.read_bytes() == b"not a checkpoint"


def test_interrupted_training_publishes_nothing_and_leaves_ctrl_c_working(nb, loaders, tmp_path, monkeypatch):
    kept = tiny(nb, sigma=0.5)
    nb.train_model(kept, loaders, tmp_path, **QUIET)
    before = {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()}
    calls, training_step = [], nb.VAE.training_step

    def interrupt_on_second_batch(self, batch, batch_idx):
        calls.append(batch_idx)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(nb.VAE, "training_step", interrupt_on_second_batch)
    config = tiny(nb)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl+C working, as in a notebook
    try:
        with pytest.raises(KeyboardInterrupt, match="before its first epoch ended"):
            nb.train_model(config, loaders, tmp_path, **QUIET)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # still working afterwards
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()} == before  # nothing published or changed

    monkeypatch.undo()
    model, record = nb.train_model(config, loaders, tmp_path, **QUIET)  # a re-run trains cleanly
    assert record["history"]["epoch"] == [0, 1] and (tmp_path / f"{config.run_name()}.ckpt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the run's folder is gone once published


class RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # creates the marker file if the pickle is trusted


def test_checkpoint_loading_runs_no_code_from_the_pickle(nb, tmp_path):
    config = tiny(nb)
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": RunsCodeWhenUnpickled(marker)}, tmp_path / f"{config.run_name()}.ckpt")
    with pytest.raises(RuntimeError, match="Could not read the checkpoint"):
        nb.load_checkpoint(tmp_path / f"{config.run_name()}.ckpt", config)
    assert not marker.exists()


def test_truncated_checkpoint_is_reported_and_kept(nb, loaders, tmp_path):
    config = tiny(nb)
    nb.train_model(config, loaders, tmp_path, **QUIET)
    ckpt = tmp_path / f"{config.run_name()}.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    truncated = digest(ckpt)
    with pytest.raises(RuntimeError, match=f"Could not read the checkpoint {ckpt}"):
        nb.train_model(config, loaders, tmp_path, **QUIET)
    assert digest(ckpt) == truncated


@pytest.mark.parametrize("changes", [{"sigma": 1e-3}, {"sigma": 10.0}, {"latent_dim": 1}, {"latent_dim": 256}])
def test_extreme_settings_train_with_finite_losses_and_gradients(nb, loaders, changes):
    torch.manual_seed(0)
    model = nb.VAE(**dataclasses.asdict(tiny(nb, **changes)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for x, _ in loaders["train"]:
        terms = model.calc_elbo(x)
        optimizer.zero_grad()
        terms.neg_elbo.backward()
        assert all(torch.isfinite(t) for t in terms), terms
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()


def test_same_seed_gives_identical_training_on_the_cpu(nb, loaders, tmp_path):
    config = tiny(nb)
    _, first = nb.train_model(config, loaders, tmp_path / "a", **QUIET)
    _, second = nb.train_model(config, loaders, tmp_path / "b", **QUIET)
    assert first["history"] == second["history"]
