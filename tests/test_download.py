"""Pretrained files from a loopback HTTP server: verified, atomic, never overwriting, every failure explained."""

import functools
import http.server
import json
import shutil
import subprocess
import threading

import pytest
import torch
from conftest import REPO, digest

# a shipped study model (latent size 2): its files are what a notebook for that setting fetches
SHIPPED = sorted(json.loads((REPO / "checkpoints" / "manifest.json").read_text()))
MODEL = next(name.removesuffix(".ckpt") for name in SHIPPED
             if name.startswith("vae_sigma0.1_z2_") and name.endswith(".ckpt"))


@pytest.fixture(scope="module")
def manifest():
    return json.loads((REPO / "checkpoints" / "manifest.json").read_text())


def shipped_files() -> list:
    """The files of checkpoints/ that the repository holds: git's list where there is one, so that a model a user
    trained there (saved beside the shipped ones, untracked) does not fail this check; else every file there."""
    if (REPO / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "checkpoints"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout
        paths = [REPO / line for line in listed.splitlines()]
    else:
        paths = [p for p in (REPO / "checkpoints").iterdir() if p.is_file()]
    return sorted(p.name for p in paths if p.name != "manifest.json")


def test_manifest_lists_every_shipped_file_with_its_size_and_hash(nb, manifest):
    shipped = shipped_files()
    assert sorted(manifest) == shipped, "refresh it: python -m vae_mnist.manifest checkpoints"
    for name, entry in manifest.items():
        path = REPO / "checkpoints" / name
        assert entry == {"bytes": path.stat().st_size, "sha256": digest(path)}, name


class Server:
    """A copy of checkpoints/ served on 127.0.0.1 in a thread; `stop()` closes it (a machine gone offline)."""

    def __init__(self, folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *args: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "published"
    shutil.copytree(REPO / "checkpoints", folder)
    server = Server(folder)
    yield folder, server
    server.stop()


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_missing_files_are_downloaded_and_verified(nb, served, tmp_path, capsys):
    published, server = served
    local = tmp_path / "local"
    names = [f"{MODEL}{suffix}" for suffix in (".ckpt", ".json", ".metrics.json")]
    assert nb.fetch_pretrained(local, names, server.url) == []
    assert files(local) == sorted([*names, "manifest.json"])  # nothing else, no partial files
    assert digest(local / "manifest.json") == digest(published / "manifest.json")  # what they are checked against
    for name in names:
        assert digest(local / name) == digest(published / name)
    assert f"Downloading {MODEL}.ckpt" in capsys.readouterr().out


def test_without_an_address_nothing_is_fetched(nb, tmp_path, capsys):
    """The placeholder PUBLISHED_REPOSITORY gives no address: the missing files are named, nothing is tried."""
    assert nb.fetch_pretrained(tmp_path / "local", [f"{MODEL}.ckpt"], None) == [f"{MODEL}.ckpt"]
    assert capsys.readouterr().out == "" and not (tmp_path / "local").exists()


def test_a_present_file_is_never_downloaded_again_or_overwritten(nb, served, tmp_path, capsys):
    _, server = served
    local = tmp_path / "local"
    local.mkdir()
    (local / f"{MODEL}.json").write_text("my own record")
    server.stop()  # any download attempt would now fail loudly
    assert nb.fetch_pretrained(local, [f"{MODEL}.json"], server.url) == []
    assert (local / f"{MODEL}.json").read_text() == "my own record"
    assert capsys.readouterr().out == ""


def test_a_file_missing_on_the_server_is_reported(nb, served, tmp_path, capsys):
    published, server = served
    (published / f"{MODEL}.ckpt").unlink()
    local = tmp_path / "local"
    missing = nb.fetch_pretrained(local, [f"{MODEL}.ckpt", f"{MODEL}.json"], server.url)
    out = capsys.readouterr().out
    assert missing == [f"{MODEL}.ckpt", f"{MODEL}.json"]
    assert "404" in out and "nothing was kept" in out and out.count("Could not download") == 1
    assert files(local) == []  # no partial file


def test_a_model_comes_whole_or_not_at_all(nb, served, tmp_path, capsys):
    """The checkpoint downloads, its record does not: the checkpoint is removed again, or the notebook would load it
    and find no training history to draw; a file that was there before stays."""
    published, server = served
    (published / f"{MODEL}.json").unlink()
    local = tmp_path / "local"
    local.mkdir()
    (local / f"{MODEL}.metrics.json").write_text("my own measurements")
    names = [f"{MODEL}{suffix}" for suffix in (".ckpt", ".json", ".metrics.json")]
    assert nb.fetch_pretrained(local, names, server.url) == names[:2]
    out = capsys.readouterr().out
    assert f"Downloading {MODEL}.ckpt" in out and "404" in out
    assert files(local) == [f"{MODEL}.metrics.json"]
    assert (local / f"{MODEL}.metrics.json").read_text() == "my own measurements"


def test_an_interrupted_download_keeps_no_part_of_the_model(nb, served, tmp_path, monkeypatch):
    """Ctrl+C between a checkpoint and its record: the checkpoint goes too, and the interrupt goes on."""
    _, server = served
    local = tmp_path / "local"
    real_download = torch.hub.download_url_to_file

    def interrupted_after_the_first(url, path, *args):
        if path.endswith(".json"):
            raise KeyboardInterrupt
        real_download(url, path, *args)

    monkeypatch.setattr(torch.hub, "download_url_to_file", interrupted_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        nb.fetch_pretrained(local, [f"{MODEL}.ckpt", f"{MODEL}.json"], server.url)
    assert files(local) == []


def flip_a_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


@pytest.mark.parametrize("damage", [flip_a_byte, lambda data: data[:100_000]])
def test_a_damaged_file_is_caught_and_nothing_is_kept(nb, served, tmp_path, capsys, damage):
    published, server = served
    ckpt = published / f"{MODEL}.ckpt"
    ckpt.write_bytes(damage(ckpt.read_bytes()))
    local = tmp_path / "local"
    assert nb.fetch_pretrained(local, [f"{MODEL}.ckpt"], server.url) == [f"{MODEL}.ckpt"]
    assert "invalid hash value" in capsys.readouterr().out
    assert files(local) == []


def test_a_stopped_server_means_training_with_an_explanation(nb, served, tmp_path, capsys):
    _, server = served
    server.stop()
    local = tmp_path / "local"
    assert nb.fetch_pretrained(local, [f"{MODEL}.ckpt"], server.url) == [f"{MODEL}.ckpt"]
    out = capsys.readouterr().out
    assert "Could not download" in out and "Connection refused" in out
    assert not local.exists() or files(local) == []
