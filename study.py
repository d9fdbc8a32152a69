"""The σ / latent-size study of vae_mnist.ipynb ("What σ and the latent size do"), as one resumable command.

    python study.py [--iwae-k 10]        # MNIST from $PATH_DATASETS, else data/

Every setting of the notebook's `study_configs` is trained with the notebook's own `train_model` (a setting whose
checkpoint exists is loaded instead), then measured: test ELBO, IWAE bound, active units, sample quality. Each
result is written to checkpoints/<run name>.metrics.json beside the checkpoint; settings measured already are
skipped, so an interrupted study resumes where it stopped. Re-run the notebook afterwards to see the results.
"""

import argparse
import os
import time
from pathlib import Path

from notebook_defs import load_notebook


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iwae-k", type=int, default=10, help="importance samples per test image (default 10)")
    args = parser.parse_args()
    nb = load_notebook()
    base = nb.VAEConfig()
    checkpoints = Path(os.environ.get("PATH_CHECKPOINTS", "checkpoints"))
    data = nb.dataset_root()
    loaders = nb.make_loaders(data, base.batch_size, base.seed)
    classifier = nb.load_classifier(checkpoints / "mnist_classifier.pt", data)
    start = time.perf_counter()
    # trained as the notebook's training cell trains: bf16 mixed precision on a CPU that computes bf16
    nb.run_study(base, loaders, checkpoints, classifier, args.iwae_k,
                 precision=nb.training_precision(nb.best_device()))
    print(f"Study finished in {(time.perf_counter() - start) / 60:.1f} min; re-run vae_mnist.ipynb to see it.")


if __name__ == "__main__":
    main()
