"""train_model: a checkpoint is found by the settings it was trained with; evaluation."""

import dataclasses
import importlib.util
import math
import re
import sys
from types import ModuleType

import pytest
import pytorch_lightning as pl
import torch
from conftest import QUIET, digest, tiny
from torch.utils._python_dispatch import TorchDispatchMode


def test_run_name_changes_with_every_setting(nb):
    base = nb.VAEConfig()
    changes = [0.2, 8, 5, 64, 3e-4, 1, 0.5, (8, 16), 64, "cosine", None]
    names = {dataclasses.replace(base, **{f.name: change}).run_name()
             for f, change in zip(dataclasses.fields(base), changes, strict=True)}
    assert len(names) == len(dataclasses.fields(base)) and base.run_name() not in names
    assert base.run_name().startswith("vae_sigma0.1_z3_")


def test_train_then_load_then_train_beside_for_new_settings(nb, loaders, tmp_path, capsys):
    config = tiny(nb)
    model, record = nb.train_model(config, loaders, tmp_path, **QUIET)
    ckpt = tmp_path / f"{config.run_name()}.ckpt"
    assert re.search(r"training one for 2 epochs, about \d+ minutes here", capsys.readouterr().out)
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
    assert "training one" not in capsys.readouterr().out
    assert record_again == record
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

    other = tiny(nb, sigma=0.3)
    changed, _ = nb.train_model(other, loaders, tmp_path, **QUIET)
    assert "training one" in capsys.readouterr().out
    assert changed.hparams.sigma == 0.3
    assert digest(ckpt) == before  # the first model is untouched
    assert (tmp_path / f"{other.run_name()}.ckpt").exists()


def test_a_kernel_without_widgets_gets_a_line_per_epoch_instead_of_a_progress_bar(nb, loaders, tmp_path, monkeypatch,
                                                                                  capsys):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert nb.progress_bar_redraws()  # a terminal
    monkeypatch.setitem(sys.modules, "ipykernel", ModuleType("ipykernel"))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args, **kwargs: None if name == "ipywidgets"
                        else find_spec(name, *args, **kwargs))
    assert not nb.progress_bar_redraws()  # papermill: tqdm's text bar would be saved redraw by redraw

    _, record = nb.train_model(tiny(nb), loaders, tmp_path, enable_model_summary=False)
    printed = capsys.readouterr()
    lines = re.findall(r"^Epoch (\d+)/2: validation −ELBO (-?[\d.]+) nats \(\d+ s\)$", printed.out, re.MULTILINE)
    assert [(int(epoch), float(value)) for epoch, value in lines] == [
        (epoch + 1, round(value, 1)) for epoch, value in enumerate(record["history"]["val_neg_elbo"])]
    assert "it/s" not in printed.out + printed.err


def test_optimizer_is_the_tutorials_adam_with_step_decay(nb):
    model = nb.VAE(lr=3e-4)
    [optimizer], [scheduler] = model.configure_optimizers()
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 3e-4
    assert optimizer.defaults["fused"]  # on the CPU: the one-kernel implementation
    assert type(scheduler) is torch.optim.lr_scheduler.StepLR
    assert (scheduler.step_size, scheduler.gamma) == (1, 0.99)
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in model.parameters()}


def test_evaluate_reports_consistent_terms(nb, loaders):
    torch.manual_seed(0)
    model = nb.VAE(**dataclasses.asdict(tiny(nb)))
    results = nb.evaluate(model, loaders, seed=3)
    assert set(results) == {"val", "test"}
    for r in results.values():
        assert r["neg_elbo"] == pytest.approx(r["kl"] - r["reconstruction"], rel=1e-5)
    assert nb.evaluate(model, loaders, seed=3) == results  # seeded: the same noise, the same numbers


def test_evaluate_leaves_the_model_where_it_was(nb, loaders, monkeypatch):
    """Lightning's trainer moves a model it tested to the CPU; on a GPU that stranded the notebook's model there.
    On this CPU a trainer that changes the model it tested (it zeroes the weights) stands in for it."""
    test = nb.pl.Trainer.test

    def test_then_change(self, model, *args, **kwargs):
        metrics = test(self, model, *args, **kwargs)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return metrics

    monkeypatch.setattr(nb.pl.Trainer, "test", test_then_change)
    model = nb.VAE(**dataclasses.asdict(tiny(nb)))
    before = {name: p.clone() for name, p in model.state_dict().items()}
    nb.evaluate(model, loaders, seed=3)
    assert all(torch.equal(p, before[name]) for name, p in model.state_dict().items())


def add_trainer_callback(monkeypatch, callback: pl.Callback):
    """Every Lightning Trainer made while `monkeypatch` holds gets `callback` after its own."""
    original = pl.Trainer.__init__
    monkeypatch.setattr(pl.Trainer, "__init__", lambda self, *args, callbacks=(), **kwargs: original(
        self, *args, callbacks=[*callbacks, callback], **kwargs))


class InterruptAtEpoch(pl.Callback):
    """Ctrl+C at the start of the given epoch (0-based), as a user or a lost Colab connection would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def test_an_interrupted_training_resumes_and_ends_as_an_uninterrupted_one(nb, loaders, tmp_path, monkeypatch, capsys):
    config = tiny(nb, max_epochs=3)
    model, record = nb.train_model(config, loaders, tmp_path / "straight", **QUIET)

    interrupted = tmp_path / "interrupted"
    fit = nb.fit

    def fit_interrupted(config, loaders, run_dir, **kwargs):
        with monkeypatch.context() as patch:  # this fit only: the resumed one must run to the end
            add_trainer_callback(patch, InterruptAtEpoch(2))
            return fit(config, loaders, run_dir, **kwargs)

    monkeypatch.setattr(nb, "fit", fit_interrupted)
    with pytest.raises(KeyboardInterrupt, match="after epoch 2"):
        nb.train_model(config, loaders, interrupted, **QUIET)
    assert not (interrupted / f"{config.run_name()}.ckpt").exists()  # nothing published before the end
    assert (interrupted / f".{config.run_name()}.partial" / "last.ckpt").exists()

    monkeypatch.setattr(nb, "fit", fit)
    capsys.readouterr()
    resumed, resumed_record = nb.train_model(config, loaders, interrupted, **QUIET)
    assert "Continuing the interrupted training" in capsys.readouterr().out
    assert resumed_record["history"] == record["history"]  # the same batches, noise and weights, epoch by epoch
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert sorted(p.name for p in interrupted.iterdir()) == sorted(config.run_files()[:2])  # the run folder is gone


class WeightSnapshots(pl.Callback):
    """The weights validation scores (after the averaging callback swapped its average in) and the weights training
    ended each epoch with, on the CPU like the loaded model (a GPU trains on its own device)."""

    def __init__(self):
        self.validated, self.trained = [], []

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validated.append({k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()})

    def on_train_epoch_end(self, trainer, pl_module):
        self.trained.append({k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()})


def test_the_weights_validated_saved_and_sampled_are_the_average(nb, loaders, tmp_path, monkeypatch):
    config = tiny(nb, max_epochs=3)
    assert config.ema_decay == 0.999  # the notebook's recipe
    snapshots = WeightSnapshots()
    add_trainer_callback(monkeypatch, snapshots)
    model, record = nb.train_model(config, loaders, tmp_path, **QUIET)
    best = int(torch.tensor(record["history"]["val_neg_elbo"]).argmin())
    shipped = model.state_dict()
    for name, value in shipped.items():
        torch.testing.assert_close(value, snapshots.validated[best][name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(value, snapshots.trained[best][name]) for name, value in shipped.items())
    saved = torch.load(tmp_path / config.run_files()[0], weights_only=True)
    assert set(saved) <= {"state_dict", "hyper_parameters", "hparams_name", "pytorch-lightning_version", "epoch",
                          "global_step"}  # the average and the settings, no optimizer state or last weights
    torch.manual_seed(0)
    samples = model.sample(4)
    torch.manual_seed(0)
    by_hand = torch.sigmoid(model.decoder.float()(torch.randn(4, config.latent_dim)))
    torch.testing.assert_close(samples, by_hand.detach())  # sample() decodes with those averaged weights


def test_the_cosine_schedule_falls_to_zero_over_the_epochs(nb):
    model = nb.VAE(lr=1e-3, max_epochs=4, lr_schedule="cosine")
    [optimizer], [scheduler] = model.configure_optimizers()
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * epoch / 4)) for epoch in range(5)]
    assert rates + [optimizer.param_groups[0]["lr"]] == pytest.approx(expected)
    with pytest.raises(ValueError, match="step.*cosine"):
        nb.VAEConfig(lr_schedule="linear")


def test_the_weight_average_warms_up_then_keeps_its_decay(nb):
    """The averaging step, all weights at once, equals average + (current - average) * (1 - min(decay, (1+n)/(10+n)))
    computed by hand per weight, to the last bit, from the first update (rate 0.1) to long after the warm-up."""
    update = nb.ema_with_warmup(0.999)
    generator = torch.Generator().manual_seed(0)
    for n in (0, 1, 90, 8989, 8990, 50_000):
        averages = [torch.randn(3, 4, generator=generator), torch.randn(5, generator=generator)]
        currents = [torch.randn(3, 4, generator=generator), torch.randn(5, generator=generator)]
        rate = min(0.999, (1 + n) / (10 + n))
        expected = [a + (c - a) * (1 - rate) for a, c in zip(averages, currents, strict=True)]
        update(averages, currents, torch.tensor(n))  # in place
        for got, want in zip(averages, expected, strict=True):
            assert torch.equal(got, want), n


class HostReads(TorchDispatchMode):
    """Counts the reads of a tensor's value into Python (.item(), bool(tensor), ...) while `counting`: on a GPU each one
    waits for all the work queued before it, so a training step should make as few as it can."""

    READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)

    def __init__(self):
        super().__init__()
        self.counting, self.reads = False, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.reads += self.counting and func in self.READS
        return func(*args, **(kwargs or {}))


def test_a_training_step_reads_few_values_back(nb, loaders, tmp_path, monkeypatch):
    """Five reads a step: the images' range check, the posterior's validation (loc and scale) and two inside torch's
    AveragedModel. The weight average used to read its step count twice per weight tensor (56 more), and the prior's
    and likelihood's validation 5 more."""
    reads = HostReads()

    class Window(pl.Callback):  # the steps of the second epoch, after the average's first copy
        def on_train_batch_start(self, trainer, *_):
            reads.counting = trainer.current_epoch == 1

        def on_train_batch_end(self, *_):
            reads.counting = False

    add_trainer_callback(monkeypatch, Window())
    with reads:
        nb.train_model(tiny(nb, limit_batches=3), loaders, tmp_path, **QUIET)
    assert reads.reads == 3 * 5


def test_a_diverged_encoder_stops_at_the_posterior(nb):
    model = nb.VAE(channels=(4, 8), hidden=16)
    with torch.no_grad():
        model.encoder.convs[0].weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="loc"):
        model.calc_elbo(torch.rand(2, 1, 28, 28))


def test_the_kl_term_agrees_with_a_monte_carlo_estimate_where_it_is_large(nb):
    """KL(q || N(0, I)) in closed form against the mean of log q(z) - log p(z) over 200,000 draws z ~ q, for a
    posterior far from the prior (means of ±3, stds from 0.05 to 2): within four standard errors."""
    model = nb.VAE(latent_dim=4)
    torch.manual_seed(0)
    mean = torch.tensor([[3.0, -3.0, 0.5, 0.0]])
    log_std = torch.log(torch.tensor([[0.05, 2.0, 0.3, 1.0]]))
    model.encode = lambda x: (mean, log_std)
    x = torch.rand(1, 1, 28, 28)
    q = model.posterior(x)
    z = q.sample((200_000,))
    log_ratio = q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    closed_form = torch.distributions.kl_divergence(q, model.prior(1))
    torch.manual_seed(1)
    kl_in_elbo = model.calc_elbo(x).kl
    assert closed_form.item() > 5  # a case where a wrong formula shows
    assert kl_in_elbo.item() == pytest.approx(closed_form.item(), rel=1e-6)
    standard_error = log_ratio.std().item() / math.sqrt(len(log_ratio))
    assert abs(log_ratio.mean().item() - closed_form.item()) < 4 * standard_error


def test_sample_decodes_standard_normal_draws(nb):
    """What sample(n) hands the decoder: 20,000 z with mean 0 and covariance I within sampling error; and the images
    are the decoder's means at exactly those z."""
    model = nb.VAE(latent_dim=3, channels=(4, 8), hidden=16)
    seen = []
    decode = model.decode
    model.decode = lambda z: seen.append(z) or decode(z)
    torch.manual_seed(0)
    images = model.sample(20_000)
    (z,) = seen
    assert z.shape == (20_000, 3)
    assert z.mean(0).abs().max() < 4 / math.sqrt(20_000)
    assert (torch.cov(z.T) - torch.eye(3)).abs().max() < 4 * math.sqrt(2 / 20_000)
    torch.testing.assert_close(images, decode(z))
