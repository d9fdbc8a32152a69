"""Run vae_mnist.ipynb top to bottom, headless, without ever damaging it.

    python execute.py                              # the default settings: refresh the notebook's outputs
    python execute.py -p SIGMA 0.3 -p LATENT_DIM 8  # any other: runs/<run name>/vae_mnist.ipynb

With the default settings the notebook runs into a hidden temporary copy, which replaces vae_mnist.ipynb only when
every cell succeeded; a failed run leaves the notebook as it was. The outputs are made repeatable first (no
timestamps or run times in the metadata), so a re-run that computes the same numbers changes no byte. With other
settings the executed copy goes to the run's own folder under runs/, beside its figures and measurements, and
nothing tracked is touched. The README's Colab badge is refreshed from the notebook's PUBLISHED_REPOSITORY.
"""

import argparse
import ast
import os
import re
import sys
from pathlib import Path

import nbformat
import papermill

REPO = Path(__file__).resolve().parent
NOTEBOOK = REPO / "vae_mnist.ipynb"


def parameter(text: str):
    """A papermill parameter from the command line: a Python literal (0.3, 8, None), else the text ("learned")."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def repeatable(notebook: dict) -> dict:
    """The executed notebook without what changes on every run: papermill's timings and the kernel's timestamps."""
    notebook["metadata"].pop("papermill", None)
    for cell in notebook["cells"]:
        for key in ("papermill", "execution"):
            cell["metadata"].pop(key, None)
    return notebook


def published_repository(notebook: dict) -> str:
    source = "".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    return re.search(r'^PUBLISHED_REPOSITORY = "([^"]+)"', source, re.MULTILINE).group(1)


def refresh_readme_badge(notebook: dict, readme: Path = REPO / "README.md"):
    text = readme.read_text()
    badge = f"colab.research.google.com/github/{published_repository(notebook)}/blob/main/vae_mnist.ipynb"
    updated = re.sub(r"colab\.research\.google\.com/github/[^/]+/[^/]+/blob/main/vae_mnist\.ipynb", badge, text)
    if updated != text:
        readme.write_text(updated)


def settings_cell() -> dict:
    """The notebook's parameters as its settings cell sets them."""
    return {name: parameter(p["default"]) for name, p in papermill.inspect_notebook(str(NOTEBOOK)).items()}


def output_path(parameters: dict) -> Path:
    """The notebook itself for the default settings, else the run's folder (where its figures go too)."""
    if not parameters:
        return NOTEBOOK
    sys.path.insert(0, str(REPO))
    from notebook_defs import load_notebook

    nb = load_notebook()
    config = nb.VAEConfig.from_parameters({**settings_cell(), **parameters})
    return Path(os.environ.get("PATH_RUNS", REPO / "runs")) / config.run_name() / "vae_mnist.ipynb"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a setting of the notebook's parameters cell, e.g. -p SIGMA 0.3")
    args = parser.parse_args()
    parameters = {name: parameter(value) for name, value in args.parameter}
    target = output_path(parameters)
    target.parent.mkdir(parents=True, exist_ok=True)
    running = target.with_name(f".{target.stem}.running.ipynb")
    try:
        papermill.execute_notebook(str(NOTEBOOK), str(running), parameters=parameters, cwd=str(REPO),
                                   kernel_name="python3")
        executed = repeatable(nbformat.read(running, as_version=4))
        nbformat.write(executed, running)
        os.replace(running, target)  # only a complete, successful run replaces anything
    except papermill.PapermillExecutionError as error:
        sys.exit(f"The notebook failed in cell {error.exec_count} ({error.ename}: {error.evalue}); "
                 f"{target} was left as it was.")
    finally:
        running.unlink(missing_ok=True)
    if target == NOTEBOOK:
        refresh_readme_badge(executed)
    print(f"Executed notebook written to {target}")


if __name__ == "__main__":
    main()
