"""The whole notebook, executed end to end: in a fast smoke mode, as the README's main command runs it in a clone of
the repository, and as Colab runs it (the notebook file alone, its pretrained files downloaded); and the committed
notebook as a reader and a grader see it."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import pytest
from conftest import REPO, digest
from test_download import Server

FIGURES = ["elbo_curves.png", "reconstruction_kl_curves.png", "samples.png", "interpolations.png", "digit_shares.png",
           "reconstructions.png", "latent_diagnostics.png", "study_samples.png", "mixture_samples.png", "frontier.png",
           "latent_manifold.png", "recognised_by_density.png"]
SMOKE = {"MAX_EPOCHS": 1, "LIMIT_BATCHES": 4, "IWAE_SECONDS": 1}
COMMITTED = json.loads((REPO / "vae_mnist.ipynb").read_text())


def tree_digest(folder):
    return {p.name: digest(p) for p in sorted(folder.glob("*")) if p.is_file()}


def outputs(cells):
    return [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]


def markdown_outputs(cells):
    return ["".join(o["data"]["text/markdown"]) for o in outputs(cells) if "text/markdown" in o.get("data", {})]


def results_table(cells):
    (table,) = [text for text in markdown_outputs(cells) if text.startswith("| split |")]
    return table


def printed(cells):
    return "".join("".join(o.get("text", "")) for o in outputs(cells))


@pytest.fixture
def smoke_env(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PATH_DATASETS", str(mnist_root))
    # A copy of the shipped checkpoints: the classifier and the study's results are read, not retrained.
    shutil.copytree(REPO / "checkpoints", tmp_path / "checkpoints")
    for name, path in (("CHECKPOINTS", "checkpoints"), ("FIGURES", "figures"), ("RUNS", "runs")):
        monkeypatch.setenv(f"PATH_{name}", str(tmp_path / path))
    monkeypatch.setenv("PRETRAINED_URL", "http://127.0.0.1:9/")  # nothing listens: no download is ever needed here
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures shown, as in Jupyter
    return tmp_path


def test_notebook_runs_end_to_end_in_smoke_mode(smoke_env):
    committed = {name: tree_digest(REPO / name) for name in ("checkpoints", "figures")}
    out = smoke_env / "executed.ipynb"
    papermill.execute_notebook(str(REPO / "vae_mnist.ipynb"), str(out), cwd=str(smoke_env), kernel_name="python3",
                               parameters=SMOKE, progress_bar=False)

    cells = json.loads(out.read_text())["cells"]
    assert not [o for o in outputs(cells) if o["output_type"] == "error"]
    assert "training a new model for 1 epochs" in printed(cells)
    # without ipywidgets no progress bar, whose every redraw would be an output of its own, but a line per epoch
    (training,) = [c for c in cells if "model, record = train_model(config" in "".join(c["source"])]
    if importlib.util.find_spec("ipywidgets") is None:
        assert re.search(r"^Epoch 1/1: validation −ELBO -?[\d.]+ nats \(\d+ s\)$", printed([training]), re.MULTILINE)
        assert len(training["outputs"]) <= 6 and "it/s" not in printed([training]), printed([training])[:2000]
    assert "site-packages" not in printed(cells)  # no library warning with a machine path (bf16's model summary)
    assert sorted(p.name for p in (smoke_env / "figures").iterdir()) == sorted(FIGURES)
    new = set(tree_digest(smoke_env / "checkpoints")) - set(committed["checkpoints"])
    (stem,) = [name.removesuffix(".ckpt") for name in new if name.endswith(".ckpt")]
    assert new == {f"{stem}.ckpt", f"{stem}.json"}  # the model's own measurements are cached under runs/
    assert json.loads((smoke_env / "runs" / stem / "metrics.json").read_text())["iwae_k1000"]["images"] >= 1
    images = sum("image/png" in o.get("data", {}) for o in outputs(cells))
    assert images == len(FIGURES)  # every saved figure is also shown in the notebook
    assert {name: tree_digest(REPO / name) for name in ("checkpoints", "figures")} == committed


def test_running_all_cells_twice_in_one_kernel_gives_the_same_results(smoke_env):
    notebook = json.loads((REPO / "vae_mnist.ipynb").read_text())
    # Run all, then run all again; the second pass skips the parameters cell so the smoke settings stay injected.
    again = [c for c in notebook["cells"] if "parameters" not in c["metadata"].get("tags", [])]
    copies = json.loads(json.dumps(again))
    for i, cell in enumerate(copies):
        cell["id"] = f"again-{i}"  # cell ids must stay unique
    notebook["cells"] = notebook["cells"] + copies
    twice = smoke_env / "twice.ipynb"
    twice.write_text(json.dumps(notebook))
    out = smoke_env / "twice_executed.ipynb"
    papermill.execute_notebook(str(twice), str(out), cwd=str(smoke_env), kernel_name="python3",
                               parameters={**SMOKE, "LIMIT_BATCHES": 2}, progress_bar=False)
    cells = json.loads(out.read_text())["cells"]
    first, second = markdown_outputs(cells[:-len(again)]), markdown_outputs(cells[-len(again):])
    assert first and first == second
    text = printed(cells)
    assert text.count("training a new model") == 1 and text.count("no training needed") == 1


# --- The README's main command (execute.py), in a clone of the repository --------------------------------------------

def git(folder, *args) -> str:
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory, mnist_root):
    """The repository's files (committed or not, but not ignored) in a fresh git repository of their own."""
    folder = tmp_path_factory.mktemp("clone")
    for name in git(REPO, "ls-files", "--cached", "--others", "--exclude-standard").splitlines():
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "clone")
    return folder


def execute(folder, mnist_root, *parameters, **env):
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PATH_")}
    environment.update(PATH_DATASETS=str(mnist_root), PRETRAINED_URL="http://127.0.0.1:9/", **env)
    arguments = [arg for name, value in parameters for arg in ("-p", name, str(value))]
    return subprocess.run([sys.executable, "execute.py", *arguments], cwd=folder, env=environment,
                          capture_output=True, text=True)


def test_the_settings_cell_names_the_default_config(nb):
    """The settings cell and VAEConfig's defaults both state the graded settings: "run all" reads the first, study.py
    and the tests the second, so they must name the same checkpoint."""
    import execute

    assert nb.VAEConfig.from_parameters(execute.settings_cell()) == nb.VAEConfig()


def test_the_install_cell_installs_lightning_unless_a_usable_one_is_there(nb):
    """2.6 brought WeightAveraging: anything older, or none, or a 3.x, is (re)installed with the pinned range."""
    assert [nb.lightning_usable(v) for v in [(), (2, 5), (2, 6), (2, 10), (3, 0)]] == [False, False, True, True, False]
    import pytorch_lightning

    major, minor = pytorch_lightning.__version__.split(".")[:2]
    assert nb.installed_version("pytorch-lightning") == (int(major), int(minor))
    assert nb.installed_version("no-such-package-anywhere") == ()


def test_only_the_graded_settings_draw_into_the_tracked_figures(nb, monkeypatch):
    """LIMIT_BATCHES = 1 is one batch an epoch, 1.0 all of them: equal as numbers, different models."""
    monkeypatch.delenv("PATH_FIGURES", raising=False)
    runs = Path("runs")
    assert nb.figure_folder(nb.VAEConfig(), runs) == Path("figures")
    assert nb.figure_folder(nb.VAEConfig(sigma=0.1, limit_batches=1.0), runs) == Path("figures")
    one_batch = nb.VAEConfig(limit_batches=1)
    assert one_batch == nb.VAEConfig()  # what the old check compared
    assert nb.figure_folder(one_batch, runs) == runs / one_batch.run_name() != runs / nb.VAEConfig().run_name()


def test_a_failed_run_leaves_the_notebook_byte_identical(nb, clone, mnist_root, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(clone / "checkpoints", checkpoints)
    default = checkpoints / f"{nb.VAEConfig().run_name()}.ckpt"
    assert default.exists()
    default.write_bytes(b"a truncated download")  # the run stops with "Could not read the checkpoint"
    before = digest(clone / "vae_mnist.ipynb")
    run = execute(clone, mnist_root, PATH_CHECKPOINTS=str(checkpoints))
    assert run.returncode != 0 and "Could not read the checkpoint" in run.stderr + run.stdout
    assert digest(clone / "vae_mnist.ipynb") == before
    assert git(clone, "status", "--porcelain") == ""  # no temporary file left behind either


def test_a_default_rerun_changes_no_byte(clone, mnist_root):
    """Outputs without timestamps, run times or machine paths, and figures that come out the same every time."""
    first = execute(clone, mnist_root)
    assert first.returncode == 0, first.stderr[-2000:]
    git(clone, "add", "-A")
    git(clone, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first run", "--allow-empty")
    second = execute(clone, mnist_root)
    assert second.returncode == 0, second.stderr[-2000:]
    assert git(clone, "status", "--porcelain") == ""


def test_a_tweak_writes_only_into_its_own_ignored_folder(clone, mnist_root):
    run = execute(clone, mnist_root, ("SIGMA", 0.2), ("MAX_EPOCHS", 1), ("LIMIT_BATCHES", 2), ("IWAE_SECONDS", 1))
    assert run.returncode == 0, run.stderr[-2000:]
    assert git(clone, "status", "--porcelain", "--untracked-files=no") == ""  # no tracked file touched
    (run_folder,) = [p for p in (clone / "runs").iterdir() if p.name.startswith("vae_sigma0.2_z3_")]
    assert sorted(p.name for p in run_folder.iterdir()) == sorted(FIGURES + ["metrics.json", "mixture.npz",
                                                                             "vae_mnist.ipynb"])
    assert git(clone, "check-ignore", "-q", str(run_folder.relative_to(clone))) == ""  # ignored by git
    assert (clone / "checkpoints" / f"{run_folder.name}.ckpt").exists()  # the new model, beside the shipped ones


# --- Colab: the notebook file alone ----------------------------------------------------------------------------------

def test_the_notebook_alone_downloads_its_files_trains_nothing_and_matches_the_committed_run(tmp_path, mnist_root):
    published = tmp_path / "published"
    shutil.copytree(REPO / "checkpoints", published)
    server = Server(published)
    colab = tmp_path / "colab"
    colab.mkdir()
    shutil.copy(REPO / "vae_mnist.ipynb", colab)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PATH_")}
    environment.update(PATH_DATASETS=str(mnist_root), PRETRAINED_URL=server.url)
    try:
        subprocess.run([sys.executable, "-m", "papermill", "vae_mnist.ipynb", "executed.ipynb", "--log-level", "ERROR"],
                       cwd=colab, env=environment, check=True, capture_output=True)
    finally:
        server.stop()
    cells = json.loads((colab / "executed.ipynb").read_text())["cells"]
    text = printed(cells)
    assert "Downloading vae_sigma0.1_z3_" in text and "Downloading mnist_classifier.pt" in text
    assert "training a new model" not in text and "training one" not in text and "Could not download" not in text
    assert results_table(cells) == results_table(COMMITTED["cells"])  # the same test ELBO
    assert digest(colab / "checkpoints" / "manifest.json") == digest(REPO / "checkpoints" / "manifest.json")


# --- The committed notebook as a reader sees it ----------------------------------------------------------------------

def test_the_committed_notebook_is_one_clean_run():
    code = [c for c in COMMITTED["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    assert "papermill" not in COMMITTED["metadata"]
    assert not [c for c in COMMITTED["cells"] if {"papermill", "execution"} & set(c["metadata"])]  # no timings
    assert not [o for o in outputs(COMMITTED["cells"]) if o["output_type"] == "error" or o.get("name") == "stderr"]
    text = printed(COMMITTED["cells"]) + "".join(markdown_outputs(COMMITTED["cells"]))
    assert not re.search(r"(?:^|[\s'\"(])/(?:[\w.-]+/){2,}|site-packages", text)  # no machine paths
    sources = "".join("".join(c["source"]) for c in COMMITTED["cells"])
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", sources)  # e.g. "\b" of "\beta" eaten by a string escape


def test_plumbing_is_collapsed_and_the_answers_stay_in_view():
    code = [c for c in COMMITTED["cells"] if c["cell_type"] == "code"]
    for cell in code:
        source = "".join(cell["source"])
        hidden = cell["metadata"].get("jupyter", {}).get("source_hidden", False)
        titled = source.startswith("# @title ")
        assert hidden == titled == (cell["metadata"].get("cellView") == "form"), source[:80]
        for visible in ("class VAE(", "def calc_elbo(self", "def sample(self", "class Encoder(", "class Decoder(",
                        "model, record = train_model(config", "display(Markdown(answer_summary(", "def dequantize("):
            assert not (visible in source and hidden), f"{visible} must stay in view"
    assert sum(c["metadata"].get("jupyter", {}).get("source_hidden", False) for c in code) >= 8


def test_the_readme_badge_and_the_downloads_name_the_one_published_repository():
    (repository,) = re.findall(r'^PUBLISHED_REPOSITORY = "([^"]+)"', "".join(
        "".join(c["source"]) for c in COMMITTED["cells"]), re.MULTILINE)
    readme = (REPO / "README.md").read_text()
    assert f"colab.research.google.com/github/{repository}/blob/main/vae_mnist.ipynb" in readme
    assert f"https://colab.research.google.com/github/{repository}/blob/main/vae_mnist.ipynb" in printed(
        COMMITTED["cells"]) + "".join(markdown_outputs(COMMITTED["cells"]))
    assert "raw.githubusercontent.com/{PUBLISHED_REPOSITORY}" in "".join(
        "".join(c["source"]) for c in COMMITTED["cells"])
