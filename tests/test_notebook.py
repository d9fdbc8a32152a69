"""The whole notebook, executed end to end on the real MNIST in a fast smoke mode (papermill)."""

import json
import shutil
from pathlib import Path

import papermill
import pytest
from conftest import digest

REPO = Path(__file__).resolve().parents[1]
FIGURES = ["results_table.png", "elbo_curves.png", "reconstruction_kl_curves.png", "samples.png",
           "interpolations.png", "digit_shares.png", "reconstructions.png", "latent_diagnostics.png",
           "study_samples.png", "latent_manifold.png"]
SMOKE = {"MAX_EPOCHS": 1, "LIMIT_BATCHES": 4, "IWAE_SAMPLES": 10}


def tree_digest(folder: Path) -> dict:
    return {p.name: digest(p) for p in sorted(folder.glob("*")) if p.is_file()}


@pytest.fixture
def smoke_env(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PATH_DATASETS", str(mnist_root))
    # A copy of the committed checkpoints: the classifier and the study's results are read, not retrained.
    shutil.copytree(REPO / "checkpoints", tmp_path / "checkpoints")
    monkeypatch.setenv("PATH_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("PATH_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures shown, as in Jupyter
    return tmp_path


def test_notebook_runs_end_to_end_in_smoke_mode(smoke_env):
    committed = {name: tree_digest(REPO / name) for name in ("checkpoints", "figures")}
    out = smoke_env / "executed.ipynb"
    papermill.execute_notebook(str(REPO / "vae_mnist.ipynb"), str(out), cwd=str(smoke_env), kernel_name="python3",
                               parameters=SMOKE, progress_bar=False)

    cells = json.loads(out.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "training a new model for 1 epochs" in text
    assert sorted(p.name for p in (smoke_env / "figures").iterdir()) == sorted(FIGURES)
    new = set(tree_digest(smoke_env / "checkpoints")) - set(committed["checkpoints"])
    (stem,) = [name.removesuffix(".ckpt") for name in new if name.endswith(".ckpt")]
    assert new == {f"{stem}.ckpt", f"{stem}.json", f"{stem}.metrics.json"}
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images == len(FIGURES)  # every saved figure is also shown in the notebook
    assert {name: tree_digest(REPO / name) for name in ("checkpoints", "figures")} == committed


def markdown_outputs(cells: list) -> list:
    return ["".join(o["data"]["text/markdown"]) for c in cells if c["cell_type"] == "code"
            for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]


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
    text = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    assert text.count("training a new model") == 1 and text.count("no training needed") == 1
