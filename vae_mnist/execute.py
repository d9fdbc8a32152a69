"""Run the graded notebook and its companion top to bottom, headless, without ever damaging them.

    python execute.py                              # the default settings: refresh both notebooks' outputs
    python execute.py -p SIGMA 0.3 -p LATENT_DIM 8  # any other setting: runs/<run name>/, nothing tracked touched

Each notebook runs into a hidden temporary copy, which replaces the target only when every cell succeeded, so a failed
or interrupted run leaves it as it was. The outputs are made repeatable first (no timestamps or run times in the
metadata), so a re-run that computes the same numbers changes no byte. The README's and the notebook's Colab badges
and the README's clone line follow the notebook's PUBLISHED_REPOSITORY.
"""

import ast
import os
import re
import sys
from pathlib import Path

import nbformat
import papermill

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = [REPO / "vae_mnist.ipynb", REPO / "beyond.ipynb"]
USAGE = "usage: python execute.py [-p NAME VALUE]...   (NAME: a setting of the notebooks' parameters cell)"


def parameter(text: str):
    """A parameter from the command line: a Python literal (0.3, -1e-3, 8, None), else the text ("learned")."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def settings_cell(notebook: Path = NOTEBOOKS[0]) -> dict:
    """The notebook's parameters as its settings cell sets them."""
    return {name: parameter(p["default"]) for name, p in papermill.inspect_notebook(str(notebook)).items()}


def parse_parameters(arguments: list) -> dict:
    """-p NAME VALUE pairs; a VALUE may start with a minus sign (-p LR -1e-3). Unknown names are refused."""
    parameters, known = {}, {name for notebook in NOTEBOOKS for name in settings_cell(notebook)}
    while arguments:
        if arguments[0] not in ("-p", "--parameter") or len(arguments) < 3:
            raise SystemExit(USAGE)
        name, value, arguments = arguments[1], arguments[2], arguments[3:]
        if name not in known:
            raise SystemExit(f"Unknown setting {name!r}; the notebooks' settings are: {', '.join(sorted(known))}.")
        parameters[name] = parameter(value)
    return parameters


def repeatable(notebook: dict) -> dict:
    """The executed notebook without what changes on every run: papermill's timings and the kernel's timestamps."""
    notebook["metadata"].pop("papermill", None)
    for cell in notebook["cells"]:
        for key in ("papermill", "execution"):
            cell["metadata"].pop(key, None)
    return notebook


def published_repository(notebook: Path = NOTEBOOKS[0]) -> str:
    return settings_cell(notebook)["PUBLISHED_REPOSITORY"]


def with_repository(text: str, repository: str) -> str:
    """`text` with its Colab badge and clone line naming `repository`."""
    text = re.sub(r"(colab\.research\.google\.com/github/)[^/\s]+/[^/\s]+(/blob/main/)", rf"\g<1>{repository}\g<2>",
                  text)
    return re.sub(r"(git clone https://github\.com/)[^/\s]+/[^/\s.]+", rf"\g<1>{repository}", text)


def refresh_badges(repository: str) -> None:
    for path in (REPO / "README.md", *NOTEBOOKS):
        text = path.read_text()
        if with_repository(text, repository) != text:
            path.write_text(with_repository(text, repository))


def config_of(parameters: dict):
    """The VAEConfig the notebooks run with these parameters."""
    from vae_mnist.notebook import VAEConfig

    return VAEConfig.from_parameters({**settings_cell(), **parameters})


def output_path(notebook: Path, parameters: dict) -> Path:
    """The notebook itself for the default settings, else the run's own folder (where its figures go too)."""
    config = config_of(parameters)
    if config.is_graded():
        return notebook
    return Path(os.environ.get("PATH_RUNS", REPO / "runs")) / config.run_name() / notebook.name


def execute(notebook: Path, parameters: dict) -> Path:
    target = output_path(notebook, parameters)
    target.parent.mkdir(parents=True, exist_ok=True)
    running = target.with_name(f".{target.stem}.running.ipynb")  # ignored by git
    known = settings_cell(notebook)
    try:
        papermill.execute_notebook(str(notebook), str(running), cwd=str(REPO), kernel_name="python3",
                                   parameters={name: value for name, value in parameters.items() if name in known},
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])  # the kernel's own log is
        # noise here: its warning about TCP on this machine, its traceback when an interrupt stops it
        nbformat.write(repeatable(nbformat.read(running, as_version=4)), running)
        os.replace(running, target)  # only a complete, successful run replaces anything
    except papermill.PapermillExecutionError as error:
        sys.exit(f"{notebook.name} failed in cell {error.exec_count} ({error.ename}: {error.evalue}); "
                 f"{target} was left as it was.")
    finally:
        running.unlink(missing_ok=True)
    return target


def main(arguments: list = sys.argv[1:]):
    if arguments and arguments[0] in ("-h", "--help"):
        print(__doc__)
        return
    parameters = parse_parameters(arguments)
    refresh_badges(published_repository())
    try:
        for notebook in NOTEBOOKS:
            print(f"Executed notebook written to {execute(notebook, parameters)}")
    except KeyboardInterrupt:
        sys.exit(f"Interrupted; the notebooks were left as they were. {saved_training(parameters)}")


def saved_training(parameters: dict) -> str:
    """What an interrupted run leaves to continue from: the last completed epoch of a training, if one was running."""
    config = config_of(parameters)
    checkpoints = Path(os.environ.get("PATH_CHECKPOINTS", REPO / "checkpoints"))
    last = checkpoints / f".{config.run_name()}.partial" / "last.ckpt"
    if not last.exists():
        return "No training epoch was saved."
    import torch

    epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"] + 1  # written by the notebook's fit()
    command = " ".join(["python execute.py", *(f"-p {name} {value}" for name, value in parameters.items())])
    return f"The training of {config.run_name()} keeps its epoch {epoch}; `{command}` continues it."
