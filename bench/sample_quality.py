"""How many VAE samples look like digits: a blur-tolerant MNIST classifier judges `sample(n)` of a checkpoint.

    python bench/sample_quality.py checkpoints/vae_*.ckpt [--n 1000] [--seeds 5]

The classifier (a small CNN) is trained once on the 60,000 training images, with random Gaussian blur so that a
VAE's smooth decoder means are judged by shape rather than sharpness, and saved to
checkpoints/mnist_classifier.pt; it is retrained only when that file is missing. A sample is "recognised" when
the classifier gives one digit a probability of at least 0.9. The same numbers for real test digits are printed
beside it, and everything is written to bench/results/sample_quality.json.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.functional as TF

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from notebook_defs import load_notebook  # noqa: E402

CLASSIFIER = REPO / "checkpoints" / "mnist_classifier.pt"
RESULTS = REPO / "bench" / "results" / "sample_quality.json"
CONFIDENT = 0.9


def make_classifier() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10),
    )


def random_blur(x: torch.Tensor) -> torch.Tensor:
    """Blur half of the batch with a Gaussian of std 0.5 to 1.5 pixels."""
    sigma = float(torch.empty(1).uniform_(0.5, 1.5))
    blurred = TF.gaussian_blur(x, kernel_size=7, sigma=sigma)
    keep = torch.rand(len(x), 1, 1, 1) < 0.5
    return torch.where(keep, x, blurred)


def train_classifier(nb, root: Path, epochs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    train = nb.load_mnist(root, train=True)
    loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True)
    model = make_classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * len(loader))
    for epoch in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(random_blur(x)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        seconds = time.perf_counter() - start
        print(f"classifier epoch {epoch + 1}/{epochs}: last loss {loss.item():.3f} ({seconds:.0f} s)")
    return model.eval()


def load_classifier(nb, root: Path) -> nn.Module:
    model = make_classifier()
    if CLASSIFIER.exists():
        model.load_state_dict(torch.load(CLASSIFIER, weights_only=True))
        return model.eval()
    print(f"No classifier at {CLASSIFIER}: training one (a few minutes on a CPU).")
    model = train_classifier(nb, root)
    torch.save(model.state_dict(), CLASSIFIER)
    return model


@torch.no_grad()
def judge(classifier: nn.Module, images: torch.Tensor) -> dict:
    probs = torch.cat([F.softmax(classifier(chunk), dim=1) for chunk in images.split(500)])
    confidence, digit = probs.max(dim=1)
    confident = confidence >= CONFIDENT
    return {
        "n": len(images),
        "recognised_share": confident.float().mean().item(),
        "digit_histogram": torch.bincount(digit[confident], minlength=10).tolist(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--n", type=int, default=1000, help="samples per seed")
    parser.add_argument("--seeds", type=int, default=5, help="independent sets of samples")
    args = parser.parse_args()
    nb = load_notebook()
    root = Path(os.environ.get("PATH_DATASETS", "data"))
    classifier = load_classifier(nb, root)
    test = nb.load_mnist(root, train=False)
    torch.manual_seed(0)
    x_test = torch.stack([test[i][0] for i in range(len(test))])
    accuracy = (classifier(x_test).argmax(1) == test.labels).float().mean().item()
    real = judge(classifier, x_test[: args.n])
    print(f"classifier test accuracy {accuracy:.4f}; real test digits recognised: {real['recognised_share']:.1%}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["classifier"] = {"test_accuracy": accuracy, "confidence_threshold": CONFIDENT, "real_test_digits": real}
    for path in args.checkpoints:
        model = nb.VAE.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()
        verdicts = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            verdicts.append(judge(classifier, model.sample(args.n)))
        shares = [v["recognised_share"] for v in verdicts]
        mean = sum(shares) / len(shares)
        results[path.name] = {
            "hparams": {k: v for k, v in model.hparams.items() if k in ("sigma", "latent_dim", "max_epochs")},
            "recognised_share_mean": mean, "recognised_share_per_seed": shares,
            "digit_histogram_seed0": verdicts[0]["digit_histogram"],
        }
        print(f"{path.name}: {mean:.1%} of {args.n} samples recognised on average over "
              f"{args.seeds} seeds (from {min(shares):.1%} to {max(shares):.1%}); "
              f"per digit (seed 0) {verdicts[0]['digit_histogram']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"Written to {RESULTS}")


if __name__ == "__main__":
    main()
