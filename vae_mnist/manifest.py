"""checkpoints/manifest.json: the size and SHA-256 of every shipped file, which a download is checked against.

    python -m vae_mnist.manifest checkpoints   # after adding or retraining a shipped model
"""

import hashlib
import json
import sys
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> Path:
    """manifest.json of every file in `folder` but hidden ones (a training's run folder) and itself."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name != "manifest.json")
    manifest = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files}
    path = Path(folder) / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


if __name__ == "__main__":
    print(f"Wrote {write_manifest(Path(sys.argv[1] if len(sys.argv) > 1 else 'checkpoints'))}")
