"""The graded notebook's code: the one copy of the model, its data and its training, reached from here alone.

vae_mnist.ipynb must run on its own (a student opens it in Colab), so its definitions live in it; this module loads
them without running its cells (importnb, definitions only) for the rest of the package, the tests and the bench.
"""

import textwrap
from pathlib import Path

from importnb import Notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "vae_mnist.ipynb"


class DefinitionsOnly(Notebook):
    def markdown(self, text):
        # importnb turns markdown into string literals, where LaTeX such as \underbrace is a bad escape.
        return textwrap.indent(text, "# ")


graded = DefinitionsOnly.load_file(str(NOTEBOOK), main=False, include_non_defs=False)

# What the rest of the package uses of it, by name (a name the notebook loses fails here, at import); the tests reach
# everything else through `graded`.
VAEConfig = graded.VAEConfig
VAE = graded.VAE
nats_to_bpd = graded.nats_to_bpd
dequantize = graded.dequantize
dataset_root = graded.dataset_root
best_device = graded.best_device
verify_shipped = graded.verify_shipped
DequantizedMNIST = graded.DequantizedMNIST
DeviceBatches = graded.DeviceBatches
make_loaders = graded.make_loaders
train_model = graded.train_model
load_checkpoint = graded.load_checkpoint
evaluate = graded.evaluate
image_grid = graded.image_grid
show_grid = graded.show_grid
