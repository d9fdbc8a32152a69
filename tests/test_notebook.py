"""The notebooks: the committed ones as a reader and a grader see them (fast), and executed end to end (slow): in a
smoke mode, as the README's main command runs them in a clone of the repository, and as Colab runs the graded one
(the notebook file alone, with and without a published repository to fetch its model from)."""

import json
import re
import shutil
import subprocess
import sys

import papermill
import pytest
from conftest import REPO, digest, environment, git
from test_download import Server

from vae_mnist import execute

GRADED_FIGURES = ["elbo_curves.png", "reconstruction_kl_curves.png", "samples.png", "interpolations.png",
                  "frontier.png"]
BEYOND_FIGURES = ["digit_shares.png", "reconstructions.png", "latent_diagnostics.png", "study_samples.png",
                  "mixture_samples.png", "frontier.png", "latent_manifold.png", "recognised_by_density.png"]
SMOKE = {"MAX_EPOCHS": 1, "LIMIT_BATCHES": 4}
COMMITTED = {name: json.loads((REPO / name).read_text()) for name in ("vae_mnist.ipynb", "beyond.ipynb")}
GRADED = COMMITTED["vae_mnist.ipynb"]["cells"]


def outputs(cells):
    return [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]


def markdown_outputs(cells):
    return ["".join(o["data"]["text/markdown"]) for o in outputs(cells) if "text/markdown" in o.get("data", {})]


def results_table(cells):
    (table,) = [text for text in markdown_outputs(cells) if text.startswith("| split |")]
    return table


def printed(cells):
    return "".join("".join(o.get("text", "")) for o in outputs(cells))


def code_lines(cell) -> int:
    return sum(1 for line in "".join(cell["source"]).splitlines() if line.strip())


# --- The committed notebooks, as a reader sees them (fast) ------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_the_committed_notebook_is_one_clean_run(name):
    cells = COMMITTED[name]["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    assert "papermill" not in COMMITTED[name]["metadata"]
    assert not [c for c in cells if {"papermill", "execution"} & set(c["metadata"])]  # no timings
    assert not [o for o in outputs(cells) if o["output_type"] == "error" or o.get("name") == "stderr"]
    text = printed(cells) + "".join(markdown_outputs(cells))
    assert not re.search(r"(?:^|[\s'\"(])/(?:[\w.-]+/){2,}|site-packages", text)  # no machine paths
    sources = "".join("".join(c["source"]) for c in cells)
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", sources)  # e.g. "\b" of "\beta" eaten by a string escape


def test_the_graded_notebook_is_the_size_of_the_tutorial_and_keeps_the_exercise_in_view():
    code = [c for c in GRADED if c["cell_type"] == "code"]
    question_1 = next(i for i, c in enumerate(GRADED) if "".join(c["source"]).startswith("## Question 1"))
    assert sum(map(code_lines, code)) <= 700
    assert sum(code_lines(c) for c in GRADED[:question_1] if c["cell_type"] == "code") <= 250
    assert max(map(code_lines, code)) <= 80
    sources = ["".join(c["source"]) for c in code]
    for exercise in ("class Encoder(", "class Decoder(", "class VAE(", "def calc_elbo(self", "def sample(self, n",
                     "def dequantize(", "def train_model(", "ModelCheckpoint(", "def plot_interpolations("):
        assert sum(exercise in source for source in sources) == 1, exercise
    assert not [c for c in code if c["metadata"].get("jupyter", {}).get("source_hidden")]  # nothing hidden
    assert "README" not in "".join("".join(c["source"]) for c in GRADED)  # a grader has only the notebook


def test_the_readme_and_the_notebook_name_the_one_published_repository():
    repository = execute.published_repository()
    readme = (REPO / "README.md").read_text()
    badge = f"colab.research.google.com/github/{repository}/blob/main/vae_mnist.ipynb"
    assert badge in readme and badge in "".join(GRADED[0]["source"])
    assert f"git clone https://github.com/{repository}" in readme
    assert "raw.githubusercontent.com/{PUBLISHED_REPOSITORY}/main/checkpoints/" in "".join(
        "".join(c["source"]) for c in GRADED)
    assert execute.with_repository(readme, "someone/vae") != readme
    assert "someone/vae/blob/main" in execute.with_repository(readme, "someone/vae")
    assert "git clone https://github.com/someone/vae" in execute.with_repository(readme, "someone/vae")


def test_the_settings_cell_names_the_default_config(nb):
    """The settings cell and VAEConfig's defaults both state the graded settings: "run all" reads the first, the study
    and the tests the second, so they must name the same checkpoint."""
    assert nb.VAEConfig.from_parameters(execute.settings_cell()) == nb.VAEConfig()
    companion = execute.settings_cell(REPO / "beyond.ipynb")
    assert nb.VAEConfig.from_parameters(companion) == nb.VAEConfig()


def test_execute_refuses_unknown_settings_and_reads_negative_numbers():
    assert execute.parse_parameters(["-p", "LR", "-1e-3", "-p", "SIGMA", "learned"]) == {"LR": -1e-3,
                                                                                       "SIGMA": "learned"}
    assert execute.parse_parameters(["--parameter", "IWAE_SECONDS", "None"]) == {"IWAE_SECONDS": None}
    with pytest.raises(SystemExit, match="Unknown setting 'SIGMAA'.*LATENT_DIM, LIMIT_BATCHES"):
        execute.parse_parameters(["-p", "SIGMAA", "0.2"])
    with pytest.raises(SystemExit, match="usage"):
        execute.parse_parameters(["-p", "SIGMA"])


# --- Executed end to end (slow) ---------------------------------------------------------------------------------------

@pytest.fixture
def smoke_env(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PATH_DATASETS", str(mnist_root))
    # A copy of the shipped checkpoints: the classifier and the study's results are read, not retrained.
    shutil.copytree(REPO / "checkpoints", tmp_path / "checkpoints")
    for name, path in (("CHECKPOINTS", "checkpoints"), ("FIGURES", "figures"), ("RUNS", "runs")):
        monkeypatch.setenv(f"PATH_{name}", str(tmp_path / path))
    monkeypatch.setenv("PRETRAINED_URL", "http://127.0.0.1:9/")  # nothing listens: no download is ever needed here
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures shown, as in Jupyter
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the package, as in a clone
    return tmp_path


def tree_digest(folder):
    return {p.name: digest(p) for p in sorted(folder.glob("*")) if p.is_file()}


@pytest.mark.slow
def test_both_notebooks_run_end_to_end_in_smoke_mode(smoke_env):
    committed = {name: tree_digest(REPO / name) for name in ("checkpoints", "figures")}
    for name, parameters in (("vae_mnist.ipynb", SMOKE), ("beyond.ipynb", {**SMOKE, "IWAE_SECONDS": 1})):
        papermill.execute_notebook(str(REPO / name), str(smoke_env / name), cwd=str(smoke_env), kernel_name="python3",
                                   parameters=parameters, progress_bar=False)
    graded = json.loads((smoke_env / "vae_mnist.ipynb").read_text())["cells"]
    text = printed(graded)
    assert re.search(r"training one for 1 epochs, about \d+ minutes here", text)
    assert re.search(r"^Epoch 1/1: validation −ELBO -?[\d.]+ nats \(\d+ s\)$", text, re.MULTILINE)  # no bar redraws
    assert "site-packages" not in text
    beyond = json.loads((smoke_env / "beyond.ipynb").read_text())["cells"]
    assert not [o for o in outputs(graded + beyond) if o["output_type"] == "error"]
    assert sorted(p.name for p in (smoke_env / "figures").iterdir()) == sorted({*GRADED_FIGURES, *BEYOND_FIGURES})
    new = set(tree_digest(smoke_env / "checkpoints")) - set(committed["checkpoints"])
    (stem,) = [name.removesuffix(".ckpt") for name in new if name.endswith(".ckpt")]
    assert new == {f"{stem}.ckpt", f"{stem}.json"}  # the model's own measurements are cached under runs/
    cached = json.loads((smoke_env / "runs" / stem / "metrics.json").read_text())
    assert cached["iwae_k1000"]["images"] >= 1 and 0 <= cached["endpoint_fidelity"] <= 1
    assert {name: tree_digest(REPO / name) for name in ("checkpoints", "figures")} == committed


@pytest.mark.slow
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
    assert printed(cells).count("training one") == 1


# --- The README's main command (execute.py), in a clone of the repository --------------------------------------------

def run_execute(folder, mnist_root, *parameters, **env):
    arguments = [arg for name, value in parameters for arg in ("-p", name, str(value))]
    return subprocess.run([sys.executable, "execute.py", *arguments], cwd=folder, capture_output=True, text=True,
                          env=environment(PATH_DATASETS=str(mnist_root.resolve()), **env))


@pytest.mark.slow
def test_a_failed_run_leaves_the_notebook_byte_identical(nb, clone, mnist_root, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(clone / "checkpoints", checkpoints)
    default = checkpoints / f"{nb.VAEConfig().run_name()}.ckpt"
    default.write_bytes(b"a truncated download")  # the run stops with "... is not the shipped file"
    before = digest(clone / "vae_mnist.ipynb")
    run = run_execute(clone, mnist_root, PATH_CHECKPOINTS=str(checkpoints))
    assert run.returncode != 0 and "is not the shipped file" in run.stderr + run.stdout
    assert digest(clone / "vae_mnist.ipynb") == before
    assert git(clone, "status", "--porcelain") == ""  # no temporary file left behind either


@pytest.mark.slow
def test_the_main_command_with_an_absolute_dataset_path_changes_no_byte(clone, mnist_root):
    """The README's main command from the shipped files: outputs without timestamps, run times or machine paths (the
    dataset's absolute path among them), and figures that come out the same every time."""
    run = run_execute(clone, mnist_root)
    assert run.returncode == 0, run.stderr[-2000:]
    assert git(clone, "status", "--porcelain") == ""


@pytest.mark.slow
def test_a_tweak_writes_only_into_its_own_ignored_folder(clone, mnist_root):
    run = run_execute(clone, mnist_root, ("SIGMA", 0.2), ("MAX_EPOCHS", 1), ("LIMIT_BATCHES", 2), ("IWAE_SECONDS", 1))
    assert run.returncode == 0, run.stderr[-2000:]
    assert git(clone, "status", "--porcelain", "--untracked-files=no") == ""  # no tracked file touched
    (run_folder,) = [p for p in (clone / "runs").iterdir() if p.name.startswith("vae_sigma0.2_z3_")]
    assert sorted(p.name for p in run_folder.iterdir()) == sorted(
        {*GRADED_FIGURES, *BEYOND_FIGURES, "metrics.json", "mixture.npz", "vae_mnist.ipynb", "beyond.ipynb"})
    assert git(clone, "check-ignore", "-q", str(run_folder.relative_to(clone))) == ""  # ignored by git
    assert (clone / "checkpoints" / f"{run_folder.name}.ckpt").exists()  # the new model, beside the shipped ones


# --- Colab: the graded notebook file alone ----------------------------------------------------------------------------

def run_alone(folder, parameters: dict, **variables):
    """The graded notebook copied alone into `folder` and executed there, as Colab runs it."""
    folder.mkdir(exist_ok=True)
    shutil.copy(REPO / "vae_mnist.ipynb", folder)
    subprocess.run([sys.executable, "-m", "papermill", "vae_mnist.ipynb", "executed.ipynb", "--log-level", "ERROR",
                    *[arg for name, value in parameters.items() for arg in ("-p", name, str(value))]],
                   cwd=folder, env=environment(**variables), check=True, capture_output=True)
    return json.loads((folder / "executed.ipynb").read_text())["cells"]


@pytest.mark.slow
def test_the_notebook_alone_downloads_its_model_and_trains_nothing(tmp_path, mnist_root):
    published = tmp_path / "published"
    shutil.copytree(REPO / "checkpoints", published)
    server = Server(published)
    try:  # the graded settings, not the smoke ones: the shipped model is what a student opening it alone gets
        cells = run_alone(tmp_path / "colab", {}, PATH_DATASETS=str(mnist_root), PRETRAINED_URL=server.url)
    finally:
        server.stop()
    text = printed(cells)
    assert "Downloading vae_sigma0.1_z3_" in text and "training one" not in text and "Could not download" not in text
    assert results_table(cells) == results_table(GRADED)  # the same test ELBO
    assert "Beyond the exercise needs this repository's package vae_mnist" in text  # one line, no failure


@pytest.mark.slow
def test_the_notebook_alone_with_the_placeholder_says_so_then_how_long_training_takes(tmp_path, mnist_root):
    cells = run_alone(tmp_path, SMOKE, PATH_DATASETS=str(mnist_root))
    text = printed(cells)
    placeholder = text.index('PUBLISHED_REPOSITORY is still the placeholder "OWNER/REPO"')
    estimate = re.search(r"training one for 1 epochs, about \d+ minutes here\. To make it shorter", text)
    assert estimate and placeholder < estimate.start()
    assert "Downloading" not in text and "Could not download" not in text
