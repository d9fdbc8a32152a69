"""The σ / latent-size study of vae_mnist.ipynb ("What σ and the latent size do"), as one resumable command.

    python study.py [--iwae-k 100 --iwae-images 2000]  # MNIST from $PATH_DATASETS, else data/
    python study.py --part 1/2 --threads 1 &       # two processes, a core each: about 1.2x the throughput
    python study.py --part 2/2 --threads 1
    python study.py --list                         # the settings and their numbers; --only 3,5 takes those

Every setting of the notebook's `study_configs` is trained with the notebook's own `train_model` (a setting whose
checkpoint exists is loaded instead), then measured: test ELBO, IWAE bound, active units, sample quality with
N(0, I) and with the mixture prior fitted to its codes, endpoint fidelity. The results go to
checkpoints/<run name>.metrics.json and the mixture to <run name>.mixture.npz beside the checkpoint; settings
measured already are skipped, so an interrupted study resumes where it stopped (what such a setting lacks, such as
the bound with another --iwae-k, is measured alone). Re-run the notebook afterwards
(python execute.py) to see the results, and refresh checkpoints/manifest.json (see the README).
"""

import argparse
import os
import time
from pathlib import Path

import torch

from notebook_defs import load_notebook


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iwae-k", type=int, default=100, help="importance samples per test image (default 100)")
    parser.add_argument("--iwae-images", type=int, default=2000,
                        help="test images of the IWAE bound (default 2000, with its standard error; 0: all 10,000)")
    parser.add_argument("--part", default="1/1", help="k/n: this process takes settings k, k + n, k + 2n, ...")
    parser.add_argument("--only", help="comma-separated numbers of the settings to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the settings with their numbers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    nb = load_notebook()
    configs = nb.study_configs(nb.VAEConfig())
    if args.list:
        for number, config in enumerate(configs, 1):
            print(f"{number}: {config.sigma_label()}, latent size {config.latent_dim}, {config.max_epochs} epochs "
                  f"({config.run_name()})")
        return
    k, n = map(int, args.part.split("/"))
    configs = [configs[int(i) - 1] for i in args.only.split(",")] if args.only else configs[k - 1::n]
    checkpoints = Path(os.environ.get("PATH_CHECKPOINTS", "checkpoints"))
    data = nb.dataset_root()
    loaders = nb.make_loaders(data, nb.VAEConfig().batch_size, nb.VAEConfig().seed)
    classifier = nb.load_classifier(checkpoints / "mnist_classifier.pt", data)
    start = time.perf_counter()
    # trained as the notebook's training cell trains: bf16 mixed precision on a CPU that computes bf16
    nb.run_study(configs, loaders, checkpoints, classifier, args.iwae_k, args.iwae_images or None,
                 precision=nb.training_precision(nb.best_device()))
    print(f"Study part {args.part} finished in {(time.perf_counter() - start) / 60:.1f} min; run python execute.py "
          "to see it in the notebook.")


if __name__ == "__main__":
    main()
