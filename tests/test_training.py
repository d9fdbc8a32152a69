"""train_model: a checkpoint is found by the settings it was trained with, never loaded or overwritten wrongly."""

import dataclasses
import hashlib
import signal

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset


@pytest.fixture(scope="module")
def loaders(nb):
    torch.manual_seed(0)
    images = nb.dequantize(torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8))
    data = TensorDataset(images, torch.zeros(64, dtype=torch.long))
    return {"train": DataLoader(data, batch_size=16, drop_last=True), "val": DataLoader(data, batch_size=32),
            "test": DataLoader(data, batch_size=32)}


def tiny(nb, **changes):
    return dataclasses.replace(nb.VAEConfig(max_epochs=2, limit_batches=2, channels=(4, 8), hidden=16), **changes)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def test_run_name_changes_with_every_setting(nb):
    base = nb.VAEConfig()
    names = {dataclasses.replace(base, **{f.name: change}).run_name()
             for f, change in zip(dataclasses.fields(base), [0.2, 8, 5, 64, 3e-4, 1, 0.5, (8, 16), 64], strict=True)}
    assert len(names) == len(dataclasses.fields(base)) and base.run_name() not in names
    assert base.run_name().startswith("vae_sigma0.1_z3_")


def test_train_then_load_then_train_beside_for_new_settings(nb, loaders, tmp_path, capsys):
    config = tiny(nb)
    model, record = nb.train_model(config, loaders, tmp_path, **QUIET)
    ckpt = tmp_path / f"{config.run_name()}.ckpt"
    assert "training a new model" in capsys.readouterr().out
    assert ckpt.exists() and (tmp_path / f"{config.run_name()}.json").exists()
    history = record["history"]
    assert history["epoch"] == [0, 1]
    for split in ("train", "val"):
        terms = [history[f"{split}_{name}"] for name in ("neg_elbo", "kl", "reconstruction")]
        for neg_elbo, kl, reconstruction in zip(*terms, strict=True):
            assert neg_elbo == pytest.approx(kl - reconstruction, rel=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ckpt.name, ckpt.with_suffix(".json").name])

    before = digest(ckpt)
    again, record_again = nb.train_model(config, loaders, tmp_path, **QUIET)
    assert "no training needed" in capsys.readouterr().out
    assert record_again == record
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

    other = tiny(nb, sigma=0.3)
    changed, _ = nb.train_model(other, loaders, tmp_path, **QUIET)
    assert "training a new model" in capsys.readouterr().out
    assert changed.hparams.sigma == 0.3
    assert digest(ckpt) == before  # the first model is untouched
    assert (tmp_path / f"{other.run_name()}.ckpt").exists()


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


def test_evaluate_reports_consistent_terms(nb, loaders):
    torch.manual_seed(0)
    model = nb.VAE(**dataclasses.asdict(tiny(nb)))
    results = nb.evaluate(model, loaders, seed=3)
    assert set(results) == {"val", "test"}
    for r in results.values():
        assert r["neg_elbo"] == pytest.approx(r["kl"] - r["reconstruction"], rel=1e-5)
    assert nb.evaluate(model, loaders, seed=3) == results  # seeded: the same noise, the same numbers


def test_interrupted_training_saves_nothing_and_leaves_ctrl_c_working(nb, loaders, tmp_path, monkeypatch):
    kept = tiny(nb, sigma=0.5)
    nb.train_model(kept, loaders, tmp_path, **QUIET)
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    calls = []

    def interrupt_on_second_batch(self, batch, batch_idx):
        calls.append(batch_idx)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return self._step(batch, "train")

    monkeypatch.setattr(nb.VAE, "training_step", interrupt_on_second_batch)
    config = tiny(nb)
    with pytest.raises(KeyboardInterrupt):
        nb.train_model(config, loaders, tmp_path, **QUIET)
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before  # nothing new, nothing changed, no temp folder
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    monkeypatch.undo()
    model, record = nb.train_model(config, loaders, tmp_path, **QUIET)  # a re-run trains cleanly
    assert record["history"]["epoch"] == [0, 1] and (tmp_path / f"{config.run_name()}.ckpt").exists()


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
