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

# What the rest of the package uses of it, by name (a name the notebook loses fails here, at import).
VAEConfig = graded.VAEConfig
VAE, Encoder, Decoder, ElboTerms = graded.VAE, graded.Encoder, graded.Decoder, graded.ElboTerms
check_images, nats_to_bpd = graded.check_images, graded.nats_to_bpd
dataset_root, best_device, training_precision = graded.dataset_root, graded.best_device, graded.training_precision
DownloadError, download, fetch_pretrained = graded.DownloadError, graded.download, graded.fetch_pretrained
dequantize, DequantizedMNIST, load_mnist = graded.dequantize, graded.DequantizedMNIST, graded.load_mnist
split_train_val, DeviceBatches, make_loaders = graded.split_train_val, graded.DeviceBatches, graded.make_loaders
load_checkpoint, train_model, evaluate = graded.load_checkpoint, graded.train_model, graded.evaluate
image_grid, show_grid = graded.image_grid, graded.show_grid
