"""Faults a careless user or a crash makes: damaged shipped files, two trainings of one setting, a run folder from
another version, a missing record, settings out of range. Each is refused at once with a message that says what to
do, and nothing a user made is lost."""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import QUIET, REPO, digest, environment, git, tiny
from test_notebook import printed

from vae_mnist import likelihood


def flip_a_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x80
    path.write_bytes(bytes(data))


@pytest.fixture
def shipped(tmp_path):
    """A copy of checkpoints/ with its manifest: what a clone holds."""
    folder = tmp_path / "checkpoints"
    shutil.copytree(REPO / "checkpoints", folder)
    return folder


def test_a_shipped_checkpoint_with_one_changed_byte_is_refused_by_name(nb, shipped, loaders):
    config = nb.VAEConfig()
    path = config.run_file(shipped, ".ckpt")
    flip_a_byte(path)
    changed = digest(path)
    with pytest.raises(RuntimeError, match=r"is not the shipped file.*git checkout.*delete it to download it again") \
            as refused:
        nb.train_model(config, loaders, shipped)
    assert "Could not read" not in str(refused.value)  # one instruction, not two
    assert digest(path) == changed  # left as it is, for the user to restore


@pytest.mark.parametrize("suffix", [".json", ".metrics.json", ".mixture.npz"])
def test_every_shipped_file_is_checked_when_it_loads(nb, shipped, suffix):
    path = nb.VAEConfig().run_file(shipped, suffix)
    assert nb.verify_shipped(path) == path
    flip_a_byte(path, offset=10)
    with pytest.raises(RuntimeError, match=f"{path.name} is not the shipped file"):
        nb.verify_shipped(path)


def test_the_shipped_classifier_is_checked_when_it_loads(shipped, mnist_root):
    from vae_mnist.judge import load_classifier

    flip_a_byte(shipped / "mnist_classifier.pt")
    with pytest.raises(RuntimeError, match="mnist_classifier.pt is not the shipped file"):
        load_classifier(shipped / "mnist_classifier.pt", mnist_root)


def test_a_file_the_manifest_does_not_list_loads_as_it_is(nb, shipped, tmp_path):
    own = shipped / "vae_sigma0.2_z3_00000000.json"  # a model a user trained, beside the shipped ones
    own.write_text("{}")
    assert nb.verify_shipped(own) == own
    alone = tmp_path / "no_manifest" / "model.ckpt"
    alone.parent.mkdir()
    alone.write_bytes(b"anything")
    assert nb.verify_shipped(alone) == alone


def test_a_second_training_of_one_setting_is_refused_while_the_first_lives(nb, tmp_path):
    run_dir = tmp_path / ".run.partial"
    with nb.training_lock(run_dir):
        assert (run_dir / "lock").read_text() == str(os.getpid())
        (run_dir / "lock").write_text(str(os.getppid()))  # another live process holds it now
        with pytest.raises(RuntimeError, match=f"Process {os.getppid()} is training these settings already"), \
                nb.training_lock(run_dir):
            pass
        (run_dir / "lock").write_text(str(os.getpid()))
    assert not (run_dir / "lock").exists()  # released


def test_a_lock_whose_owner_has_not_written_its_number_yet_is_held(nb, tmp_path):
    run_dir = tmp_path / ".run.partial"
    run_dir.mkdir()
    (run_dir / "lock").write_text("")  # made by os.open a moment ago; the number follows
    with pytest.raises(RuntimeError, match="Another process is training these settings already"), \
            nb.training_lock(run_dir):
        pass
    assert (run_dir / "lock").read_text() == ""  # left to its owner


def test_the_lock_of_a_killed_training_is_taken_over_with_a_line(nb, tmp_path, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its number now names no process
    run_dir = tmp_path / ".run.partial"
    run_dir.mkdir()
    (run_dir / "lock").write_text(str(gone.pid))
    (run_dir / "last.ckpt").write_bytes(b"the killed run's last epoch")
    with nb.training_lock(run_dir):
        assert (run_dir / "lock").read_text() == str(os.getpid())
    assert f"from process {gone.pid}, which stopped without finishing" in capsys.readouterr().out
    assert (run_dir / "last.ckpt").read_bytes() == b"the killed run's last epoch"  # what resumes is kept


def test_a_run_folder_from_another_version_is_reported_with_what_to_do(nb, loaders, tmp_path):
    config = tiny(nb)
    run_dir = tmp_path / f".{config.run_name()}.partial"
    run_dir.mkdir()
    older = {"hyper_parameters": dataclasses.asdict(config), "callbacks": {"ResumeState": {}}}  # before TrainingState
    torch.save(older, run_dir / "last.ckpt")
    with pytest.raises(RuntimeError, match=r"left by another version of this notebook.*delete that folder"):
        nb.train_model(config, loaders, tmp_path, **QUIET)
    assert (run_dir / "last.ckpt").exists()


def test_a_missing_training_record_is_explained(nb, loaders, tmp_path):
    config = tiny(nb)
    nb.train_model(config, loaders, tmp_path, **QUIET)
    config.run_file(tmp_path, ".json").unlink()
    with pytest.raises(RuntimeError, match=r"has no training record beside it .*restore it.*move the checkpoint away"):
        nb.train_model(config, loaders, tmp_path, **QUIET)


def test_sample_has_an_upper_bound_that_says_what_to_do(nb):
    model = nb.VAE(channels=(4, 8), hidden=16)
    with pytest.raises(ValueError, match="at most 100,000 \\(call it again for more\\)"):
        model.sample(10**9)
    assert model.sample(model.MAX_SAMPLES).shape == (100_000, 1, 28, 28)


@pytest.mark.parametrize("k, seconds, message", [
    (0, 60, "IWAE_SAMPLES must be a whole number ≥ 1"), (2.5, 60, "IWAE_SAMPLES"), (True, 60, "IWAE_SAMPLES"),
    (1000, -5, "IWAE_SECONDS must be a positive number of seconds, or None"), (1000, 0, "IWAE_SECONDS"),
    (1000, math.inf, "IWAE_SECONDS"), (1000, "60", "IWAE_SECONDS")])
def test_the_iwae_settings_are_checked_where_they_enter(k, seconds, message):
    with pytest.raises(ValueError, match=message):
        likelihood.check_settings(k, seconds)
    likelihood.check_settings(1, None)
    likelihood.check_settings(1000, 0.5)


class LinearGaussian:
    """p(z) = N(0, 1), p(x|z) = N(x; w z + b, s² I) over 784 pixels, and q(z|x) its exact posterior: every importance
    weight p(x, z) / q(z|x) equals p(x), so the IWAE bound is log p(x) for every K, not only in the limit."""

    def __init__(self, w: torch.Tensor, b: float, s: float):
        self.w, self.b, self.s, self.device = w.double(), b, s, torch.device("cpu")

    def prior(self, n):
        return torch.distributions.Independent(torch.distributions.Normal(torch.zeros(n, 1).double(), 1.0), 1)

    def posterior(self, x):
        precision = 1 + self.w.square().sum() / self.s**2
        mean = ((x.double().flatten(1) - self.b) @ self.w.flatten()) / self.s**2 / precision
        return torch.distributions.Independent(torch.distributions.Normal(mean[:, None], precision**-0.5), 1)

    def likelihood(self, z):
        mean = self.b + z.double()[:, :, None, None] * self.w
        return torch.distributions.Independent(torch.distributions.Normal(mean[:, None, 0], self.s), 3)

    def log_p(self, x):
        covariance = self.s**2 * torch.eye(784).double() + torch.outer(self.w.flatten(), self.w.flatten())
        marginal = torch.distributions.MultivariateNormal(torch.full((784,), self.b).double(), covariance)
        return marginal.log_prob(x.double().flatten(1))


def test_the_iwae_bound_is_log_p_x_for_every_k_where_the_posterior_is_exact():
    torch.manual_seed(0)
    model = LinearGaussian(w=0.3 * torch.randn(1, 28, 28), b=0.5, s=0.2)
    x = (model.b + torch.randn(3, 1)[:, :, None, None] * model.w + 0.2 * torch.randn(3, 1, 28, 28)).clamp(0, 1).float()
    exact = model.log_p(x)
    log_w = likelihood.iwae_log_weights(model, x, k=100, budget=1000)
    assert log_w.shape == (100, 3)
    for k in (1, 10, 100):
        torch.testing.assert_close(likelihood.iwae_estimate(log_w[:k]), exact, rtol=0, atol=1e-6)


def test_a_bound_below_the_exact_posterior_is_caught():
    """The same model with a posterior twice too wide: the ELBO lies KL(q || posterior) = (3 - ln 4) / 2 = 0.81 nats
    below log p(x), and the bound with K = 100 between the two, as the bound must."""
    torch.manual_seed(0)
    model = LinearGaussian(w=0.3 * torch.randn(1, 28, 28), b=0.5, s=0.2)
    x = (model.b + 0.2 * torch.randn(2, 1, 28, 28)).clamp(0, 1).float()
    exact_posterior = model.posterior
    model.posterior = lambda images: torch.distributions.Independent(torch.distributions.Normal(
        exact_posterior(images).mean, 2 * exact_posterior(images).stddev), 1)
    log_w = likelihood.iwae_log_weights(model, x, k=4000, budget=8000)
    exact = model.log_p(x)
    elbo = log_w.mean(0)
    l100 = torch.stack([likelihood.iwae_estimate(group) for group in log_w.split(100)]).mean(0)
    torch.testing.assert_close(exact - elbo, torch.full_like(elbo, (3 - math.log(4)) / 2), rtol=0, atol=0.1)
    assert (elbo < l100).all() and (l100 < exact).all()


def test_the_manifest_records_each_files_size_and_sha256(tmp_path):
    from vae_mnist.manifest import write_manifest

    (tmp_path / "a.ckpt").write_bytes(b"weights")
    (tmp_path / ".a.ckpt.part").write_bytes(b"half")  # a download under way: not a shipped file
    manifest = json.loads(write_manifest(tmp_path).read_text())
    assert manifest == {"a.ckpt": {"bytes": 7, "sha256": digest(tmp_path / "a.ckpt")}}


# --- A separate process killed or interrupted (slow) -----------------------------------------------------------------

CHILD = """
import sys, time
from pathlib import Path
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
sys.path.insert(0, {repo!r})
from vae_mnist.notebook import graded as nb
from conftest import tiny, QUIET

torch.manual_seed(0)
images = nb.dequantize(torch.randint(0, 256, (3, 64, 1, 28, 28), dtype=torch.uint8))
train, val, test = (TensorDataset(part, torch.zeros(64, dtype=torch.long)) for part in images)
loaders = {{"train": DataLoader(train, batch_size=16, drop_last=True), "val": DataLoader(val, batch_size=32)}}


class Hang(pl.Callback):  # in the middle of the third epoch, say so and wait to be killed
    def on_train_batch_start(self, trainer, module, batch, index):
        if trainer.current_epoch == 2 and index == 1:
            Path({marker!r}).write_text("mid-epoch")
            time.sleep(600)


original = pl.Trainer.__init__
pl.Trainer.__init__ = lambda self, *a, callbacks=(), **k: original(self, *a, callbacks=[*callbacks, Hang()], **k)
nb.train_model(tiny(nb, max_epochs=4), loaders, Path({folder!r}), **QUIET)
"""


@pytest.mark.slow
def test_a_training_killed_mid_epoch_in_another_process_resumes_to_the_same_weights(nb, loaders, tmp_path, capsys):
    config = tiny(nb, max_epochs=4)
    straight, record = nb.train_model(config, loaders, tmp_path / "straight", **QUIET)
    marker, folder = tmp_path / "marker", tmp_path / "killed"
    script = CHILD.format(repo=str(REPO), marker=str(marker), folder=str(folder))
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO / "tests", stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        while not marker.exists():
            assert child.poll() is None, "the training process ended before it was killed"
            time.sleep(0.2)
        child.kill()  # SIGKILL: no clean-up of any kind
        child.wait()
    finally:
        child.kill()
    run_dir = folder / f".{config.run_name()}.partial"
    assert (run_dir / "lock").read_text() == str(child.pid)  # the killed process still "holds" it
    capsys.readouterr()
    resumed, resumed_record = nb.train_model(config, loaders, folder, **QUIET)
    printed = capsys.readouterr().out
    assert f"from process {child.pid}, which stopped without finishing" in printed
    assert "Continuing the interrupted training" in printed
    assert resumed_record["history"] == record["history"]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert sorted(p.name for p in folder.iterdir()) == sorted(config.run_files()[:2])


def children(pid: int) -> list:
    """The processes whose parent is `pid` (the notebook's kernel of an execute.py)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def start_execute(folder, mnist_root, *arguments):
    """`python execute.py` as a terminal starts it: with Ctrl+C working even where this test run ignores SIGINT (a
    background job of a non-interactive shell does, and its children inherit that)."""
    return subprocess.Popen([sys.executable, "execute.py", *arguments], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment(PATH_DATASETS=str(mnist_root.resolve())),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@contextlib.contextmanager
def new_setting_in(clone, mnist_root, config):
    """A function that starts `python execute.py` with NEW_SETTING in the clone; afterwards, whatever the test did, the
    clone is as it was: no process left, no model of `config` kept."""
    started = []

    def start():
        started.append(start_execute(clone, mnist_root, *NEW_SETTING))
        return started[-1]

    try:
        yield start
    finally:
        for process in started:
            process.kill()
            process.wait()
        for name in config.run_files()[:2]:
            (clone / "checkpoints" / name).unlink(missing_ok=True)
        shutil.rmtree(run_folder(clone, config), ignore_errors=True)


def run_folder(clone, config):
    """Where a training of `config` keeps its last epoch and its lock until it ends."""
    return clone / "checkpoints" / f".{config.run_name()}.partial"


def wait_for(path, process, seconds=300):
    deadline = time.time() + seconds
    while not path.exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.2)


NEW_SETTING = ("-p", "SIGMA", "0.2", "-p", "MAX_EPOCHS", "3", "-p", "LIMIT_BATCHES", "0.5")


def new_config(nb):
    """The config NEW_SETTING names."""
    return nb.VAEConfig(sigma=0.2, max_epochs=3, limit_batches=0.5)


def printed_by_run(clone, config) -> str:
    """What the graded notebook of `config`'s run printed, as execute.py left it in the run's folder."""
    return printed(json.loads((clone / "runs" / config.run_name() / "vae_mnist.ipynb").read_text())["cells"])


@pytest.mark.slow
def test_ctrl_c_on_execute_says_which_epoch_was_saved_and_how_to_continue(nb, clone, mnist_root):
    config = new_config(nb)
    with new_setting_in(clone, mnist_root, config) as start:
        run = start()
        wait_for(run_folder(clone, config) / "last.ckpt", run)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=120)
        said = [line for line in err.splitlines() if line.strip() and "Executing:" not in line]  # not the bar
        assert run.returncode != 0 and len(said) <= 2, err[-3000:]
        assert "keeps its epoch 1" in said[-1] and "`python execute.py -p SIGMA 0.2 -p MAX_EPOCHS 3" in said[-1]
        assert git(clone, "status", "--porcelain", "--untracked-files=all") == ""  # the rest waits, ignored
        again = start()
        _, err = again.communicate(timeout=600)
        assert again.returncode == 0, err[-3000:]
        text = printed_by_run(clone, config)
        assert "Continuing the interrupted training" in text and "Epoch 2/3" in text and "Epoch 1/3" not in text


@pytest.mark.slow
def test_a_killed_default_run_leaves_no_file_behind(clone, mnist_root):
    run = start_execute(clone, mnist_root)
    wait_for(clone / ".vae_mnist.running.ipynb", run)
    kernels = children(run.pid)
    time.sleep(3)
    run.kill()
    run.wait()
    for kernel in kernels + [k for pid in kernels for k in children(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(kernel, signal.SIGKILL)
    assert git(clone, "status", "--porcelain") == ""  # the temporary notebook is ignored, nothing tracked changed


@pytest.mark.slow
def test_a_damaged_default_checkpoint_stops_the_main_command_naming_it(nb, clone, mnist_root):
    path = nb.VAEConfig().run_file(clone / "checkpoints", ".ckpt")
    original = path.read_bytes()
    try:
        flip_a_byte(path)
        run = start_execute(clone, mnist_root)
        _, err = run.communicate(timeout=300)
        assert run.returncode != 0 and f"{path.name} is not the shipped file" in err
        assert git(clone, "status", "--porcelain") == f" M checkpoints/{path.name}\n"
    finally:
        path.write_bytes(original)


@pytest.mark.slow
def test_two_runs_of_one_new_setting_never_corrupt_each_other(nb, clone, mnist_root):
    config = new_config(nb)
    with new_setting_in(clone, mnist_root, config) as start:
        first = start()
        wait_for(run_folder(clone, config) / "lock", first)
        second = start()
        _, err = second.communicate(timeout=300)
        assert second.returncode != 0 and "is training these settings already" in err
        assert first.wait(timeout=600) == 0, first.communicate()[1][-3000:]
        third = start()
        assert third.wait(timeout=600) == 0
        text = printed_by_run(clone, config)
        assert "training one" not in text and "Model trained with these settings" in text  # the first one's model
