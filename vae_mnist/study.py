"""The σ / latent-size study: what σ, the latent size and the prior buy, as one resumable command.

    python -m vae_mnist.study [--iwae-k 100 --iwae-images 2000]  # MNIST from $PATH_DATASETS, else data/
    python -m vae_mnist.study --part 1/2 --threads 1 &  # two processes of a thread each: more throughput on 2 cores
    python -m vae_mnist.study --part 2/2 --threads 1
    python -m vae_mnist.study --list                    # the settings and their numbers; --only 3,5 takes those

Every setting of `study_configs` is trained with the graded notebook's own `train_model` (a setting whose checkpoint
exists is loaded instead), then measured: test ELBO, IWAE bound, active units, sample quality with N(0, I) and with
the mixture prior fitted to its codes, endpoint fidelity. The results go to checkpoints/<run name>.metrics.json and
the mixture to <run name>.mixture.npz beside the checkpoint; settings measured already are skipped, so an interrupted
study resumes where it stopped (what such a setting lacks, such as the bound with another --iwae-k, is measured
alone). Afterwards `python execute.py` shows the results in both notebooks, and
`python -m vae_mnist.manifest checkpoints` lists the new files for download.
"""

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vae_mnist.figures import setting_label
from vae_mnist.judge import endpoint_fidelity, load_classifier, sample_quality
from vae_mnist.latent import active_units, aggregate_posterior, encode_all, kl_per_dimension
from vae_mnist.likelihood import iwae_bounds, iwae_run
from vae_mnist.mixture import model_mixture
from vae_mnist.notebook import (
    VAE,
    VAEConfig,
    best_device,
    dataset_root,
    evaluate,
    load_checkpoint,
    make_loaders,
    nats_to_bpd,
    train_model,
    verify_shipped,
)


def study_configs(default: VAEConfig, epochs: int = 8) -> list:
    """The graded default, then the default with one setting changed, each trained for `epochs` (the default's own
    σ and latent size among them), so that the settings compare at equal cost."""
    base = dataclasses.replace(default, max_epochs=epochs)
    changes = [{"sigma": s} for s in (0.03, 0.1, 0.3, 1.0, "learned", "per-pixel")]
    # 1e-3: latent 8 at 2e-3 (seed 42) died when the decoder started near 0.5 (docs/recipe.md); latent 32 took the
    # same rate
    changes += [{"latent_dim": 2}, {"latent_dim": 8, "lr": 1e-3}, {"latent_dim": 16}, {"latent_dim": 32, "lr": 1e-3},
                {"sigma": "per-pixel", "latent_dim": 32}]
    return list(dict.fromkeys([default] + [dataclasses.replace(base, **change) for change in changes]))


def separate_measurements(loaders: dict, iwae_k: int, iwae_images: int | None, seed: int) -> dict:
    """The measurements of `measure` that a setting measured before may lack, each of which `run_study` takes alone
    from the checkpoint: the KL split (added later) and the bound with the study's K (where another K was measured,
    as for the graded model's K = 1000 over all test images). Each seeds itself, so alone or with the rest it gives
    the same numbers."""
    return {"aggregate_posterior": lambda model: aggregate_posterior(model, loaders, seed),
            f"iwae_k{iwae_k}": lambda model: iwae_bounds(model, loaders["test"].dataset, iwae_k, seed,
                                                         images=iwae_images)}


def measure(model: VAE, loaders: dict, classifier: nn.Sequential, iwae_k: int, iwae_images: int | None,
            seed: int) -> tuple:
    """Everything the study shows about one trained model, and its mixture prior (the IWAE bound over the first
    `iwae_images` test images; None: all)."""
    test_set = loaders["test"].dataset
    means, log_stds, _ = encode_all(model, loaders["test"], seed)
    mixture = model_mixture(model, loaders, seed)
    metrics = {"test": evaluate(model, loaders, seed)["test"],
               "active_units": active_units(means),
               "kl_per_dimension": kl_per_dimension(means, log_stds).tolist(),
               "quality": sample_quality(model, classifier, test_set, seed, mixture),
               "endpoint_fidelity": endpoint_fidelity(model, classifier, test_set, seed),
               **{name: measurement(model) for name, measurement in
                  separate_measurements(loaders, iwae_k, iwae_images, seed).items()},
               "mixture": {"components": int(len(mixture["weights"])),
                           "heldout_loglik": dict(zip(mixture["components"].tolist(),
                                                      mixture["heldout_loglik"].tolist(), strict=True))}}
    if model.hparams.sigma == "learned":
        metrics["learned_sigma"] = model.log_sigma.exp().item()
    return metrics, mixture


def run_study(configs: list, loaders: dict, checkpoint_dir: Path, classifier: nn.Sequential,
              iwae_k: int = 100, iwae_images: int | None = None, **trainer_kwargs) -> None:
    """Train (or load) and measure each setting; settings already measured are skipped, so it resumes."""
    images = len(loaders["test"].dataset.images[:iwae_images])  # what iwae_bounds will take
    for i, config in enumerate(configs, 1):
        path = config.run_file(checkpoint_dir, ".metrics.json")
        head = f"[{i}/{len(configs)}] {config.sigma_label()}, latent size {config.latent_dim}"
        metrics = json.loads(path.read_text()) if path.exists() else {}
        measured = metrics.get(f"iwae_k{iwae_k}", {}).get("images", images)
        if measured != images:  # the table compares the settings' bounds over the same test images
            raise ValueError(f"{path} holds the bound with K = {iwae_k} over {measured:,} test images, not {images:,}: "
                             f"run the whole study over {measured} (python -m vae_mnist.study --iwae-images "
                             f"{measured}) to keep it, or remove its 'iwae_k{iwae_k}' entry to measure it again over "
                             f"{images:,}")
        if "mixture" in metrics:
            missing = {name: measurement for name, measurement in
                       separate_measurements(loaders, iwae_k, iwae_images, config.seed).items() if name not in metrics}
            if missing:
                model = load_checkpoint(config.run_file(checkpoint_dir, ".ckpt"), config).to(best_device()).eval()
                metrics.update({name: measurement(model) for name, measurement in missing.items()})
                path.write_text(json.dumps(metrics, indent=1))
            print(f"{head}: measured already{' (added ' + ', '.join(missing) + ')' if missing else ''}, see {path}")
            continue
        print(f"{head}: training or loading, then measuring")
        model, _ = train_model(config, loaders, checkpoint_dir, **trainer_kwargs)
        measured, mixture = measure(model.to(best_device()).eval(), loaders, classifier, iwae_k, iwae_images,
                                    config.seed)
        np.savez(config.run_file(checkpoint_dir, ".mixture.npz"), **mixture)
        path.write_text(json.dumps({**metrics, **measured}, indent=1))
        print(f"{head}: results written to {path}")


def read_study(base: VAEConfig, checkpoint_dir: Path) -> list:
    """(config, metrics, training record) of every study setting measured so far."""
    found = []
    for config in study_configs(base):
        metrics, record = config.run_file(checkpoint_dir, ".metrics.json"), config.run_file(checkpoint_dir, ".json")
        if metrics.exists() and record.exists():
            found.append((config, *(json.loads(verify_shipped(path).read_text()) for path in (metrics, record))))
    return found


def study_table(study: list, iwae_k: int = 100) -> str:
    images = ", ".join(sorted({f"{iwae_run(m, iwae_k)['images']:,}" for _, m, _ in study}))
    lines = [f"| σ | latent | −ELBO (nats) | −ELBO (bpd) | IWAE K={iwae_k} (K=1) on {images} test images (bpd) | "
             "KL, test (training codes: I(x; z) + KL(q(z) ‖ N(0, I))) | "
             "active units | samples recognised: N(0, I) / mixture | samples Fréchet: N(0, I) / mixture | "
             "reconstructions Fréchet | endpoint fidelity | training (min) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for config, metrics, record in study:
        test, quality, bound = metrics["test"], metrics["quality"], iwae_run(metrics, iwae_k)["bound"]
        split = metrics["aggregate_posterior"]
        lines.append(
            f"| {setting_label(config, metrics)} | {config.latent_dim} | {test['neg_elbo']:.1f} | "
            f"{nats_to_bpd(test['neg_elbo']):.3f} | {nats_to_bpd(-bound[str(iwae_k)]):.3f} "
            f"({nats_to_bpd(-bound['1']):.3f}) | {test['kl']:.1f} ({split['mutual_information']:.1f} + "
            f"{split['marginal_kl']:.1f}) | "
            f"{metrics['active_units']}/{config.latent_dim} | {quality['samples']['recognised']:.1%} / "
            f"{quality['mixture samples']['recognised']:.1%} | {quality['samples']['frechet']:.0f} / "
            f"{quality['mixture samples']['frechet']:.0f} | {quality['reconstructions']['frechet']:.0f} | "
            f"{metrics['endpoint_fidelity']:.1%} | {record['train_seconds'] / 60:.0f} |")
    return "\n".join(lines)


def chosen_settings(configs: list, part: str, only: str | None) -> list:
    """The settings this process runs: those numbered in `only` ("3,5", from 1), else its `part` ("k/n": settings k,
    k + n, k + 2n, ...)."""
    if only:
        return [configs[int(i) - 1] for i in only.split(",")]
    k, n = map(int, part.split("/"))
    return configs[k - 1::n]


def main(argv: list | None = None):
    parser = argparse.ArgumentParser(prog="python -m vae_mnist.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iwae-k", type=int, default=100, help="importance samples per test image (default 100)")
    parser.add_argument("--iwae-images", type=int, default=2000,
                        help="test images of the IWAE bound (default 2000, with its standard error; 0: all 10,000)")
    parser.add_argument("--part", default="1/1", help="k/n: this process takes settings k, k + n, k + 2n, ...")
    parser.add_argument("--only", help="comma-separated numbers of the settings to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the settings with their numbers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = study_configs(VAEConfig())
    if args.list:
        for number, config in enumerate(configs, 1):
            print(f"{number}: {config.sigma_label()}, latent size {config.latent_dim}, {config.max_epochs} epochs "
                  f"({config.run_name()})")
        return
    configs = chosen_settings(configs, args.part, args.only)
    checkpoints = Path(os.environ.get("PATH_CHECKPOINTS", "checkpoints"))
    data = dataset_root()
    loaders = make_loaders(data, VAEConfig().batch_size, VAEConfig().seed)
    classifier = load_classifier(checkpoints / "mnist_classifier.pt", data)
    start = time.perf_counter()
    run_study(configs, loaders, checkpoints, classifier, args.iwae_k, args.iwae_images or None)
    print(f"Study part {args.part} finished in {(time.perf_counter() - start) / 60:.1f} min; re-run the notebooks "
          "(python execute.py) to see it.")


if __name__ == "__main__":
    main()
