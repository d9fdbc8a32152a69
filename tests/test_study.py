"""The σ / latent-size study: its settings, the runner that trains, measures and resumes, its table and its command."""

import dataclasses
import json

import pytest
import torch
from conftest import QUIET, digest, tiny
from helpers import QUALITY, digit_set
from torch.utils.data import DataLoader

import vae_mnist.notebook as graded
from vae_mnist import study
from vae_mnist.judge import make_classifier
from vae_mnist.likelihood import iwae_bounds
from vae_mnist.mixture import load_mixture
from vae_mnist.notebook import VAEConfig, evaluate, train_model
from vae_mnist.study import chosen_settings, read_study, run_study, study_configs, study_table


def test_the_study_changes_one_setting_of_the_default_at_a_time_at_equal_cost():
    default = VAEConfig()
    configs = study_configs(default)
    assert configs[0] == default and len(configs) == len(set(configs)) == 12
    fields = [field.name for field in dataclasses.fields(VAEConfig)]
    changes = [{name for name in fields if getattr(config, name) != getattr(default, name)} for config in configs[1:]]
    assert all(changed - {"sigma", "latent_dim", "lr"} == {"max_epochs"} for changed in changes)
    assert changes.count({"max_epochs"}) == 1  # the default itself, trained for 8 epochs like the others
    assert {c.sigma for c in configs} == {0.03, 0.1, 0.3, 1.0, "learned", "per-pixel"}
    assert {c.latent_dim for c in configs} == {2, 3, 8, 16, 32}
    # a default trained for the study's epochs is its own σ = 0.1 setting: listed once
    assert len(study_configs(VAEConfig(max_epochs=8))) == 11


def test_study_trains_measures_and_resumes(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    data = digit_set(torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8), torch.arange(64) % 10)
    loaders = {"train": DataLoader(data, batch_size=16, drop_last=True), "val": DataLoader(data, batch_size=32),
               "test": DataLoader(data, batch_size=32)}
    settings = [tiny(graded, latent_dim=2), tiny(graded, sigma="per-pixel")]
    monkeypatch.setattr(study, "study_configs", lambda base: settings)  # what read_study looks for
    classifier = make_classifier().eval()
    run_study(settings, loaders, tmp_path, classifier, iwae_k=3, **QUIET)
    assert capsys.readouterr().out.count("results written to") == 2
    for config in settings:
        metrics = json.loads(config.run_file(tmp_path, ".metrics.json").read_text())
        model = train_model(config, loaders, tmp_path)[0].eval()  # the checkpoint it measured
        assert metrics["test"] == evaluate(model, loaders, config.seed)["test"]
        assert metrics["iwae_k3"] == iwae_bounds(model, data, 3, config.seed)
        assert list(metrics["iwae_k3"]["bound"]) == ["1", "3"] and metrics["active_units"] <= config.latent_dim
        assert len(metrics["kl_per_dimension"]) == config.latent_dim
        assert list(metrics["quality"]) == ["real", "samples", "reconstructions", "mixture samples"]
        mixture = load_mixture(config.run_file(tmp_path, ".mixture.npz"))
        assert len(mixture["weights"]) == metrics["mixture"]["components"] and 0 <= metrics["endpoint_fidelity"] <= 1
        assert list(metrics["mixture"]["heldout_loglik"]) == [str(k) for k in mixture["components"]]
    checkpoints = {config: digest(config.run_file(tmp_path, ".ckpt")) for config in settings}

    monkeypatch.setattr(study, "measure", lambda *args, **kwargs: pytest.fail("a measured setting was re-measured"))
    first = settings[0].run_file(tmp_path, ".metrics.json")
    before = json.loads(first.read_text())
    assert before["aggregate_posterior"]["images"] == 64  # every training image, not only the full batches
    # a measurement added later, and the bound of the study's K where only another K was measured (the graded model's
    # K = 1000 run over all test images), are taken alone, from the saved checkpoint, as the first run took them
    later = {**before, "iwae_k1000": before["iwae_k3"]}
    del later["aggregate_posterior"], later["iwae_k3"]
    first.write_text(json.dumps(later))
    run_study(settings, loaders, tmp_path, classifier, iwae_k=3, **QUIET)
    out = capsys.readouterr().out
    assert out.count("measured already") == 2 and out.count("added aggregate_posterior, iwae_k3") == 1
    assert {config: digest(config.run_file(tmp_path, ".ckpt")) for config in settings} == checkpoints  # not retrained
    after = json.loads(first.read_text())
    assert after == {**later, "aggregate_posterior": after["aggregate_posterior"], "iwae_k3": after["iwae_k3"]}
    for key in ("kl", "mutual_information"):
        assert after["aggregate_posterior"][key] == pytest.approx(before["aggregate_posterior"][key], rel=1e-6)
    assert after["iwae_k3"]["bound"] == pytest.approx(before["iwae_k3"]["bound"], rel=1e-6)
    assert [config for config, _, _ in read_study(settings[0], tmp_path)] == settings

    # a bound over other test images than the study asks for is neither skipped as measured nor overwritten
    saved = first.read_bytes()
    with pytest.raises(ValueError, match=r"over 64 test images, not 10: run the whole study over 64 \(python -m "
                                         r"vae_mnist.study --iwae-images 64\) .* its 'iwae_k3'"):
        run_study(settings, loaders, tmp_path, classifier, iwae_k=3, iwae_images=10, **QUIET)
    assert first.read_bytes() == saved


def test_read_study_takes_the_settings_with_both_measurements_and_a_training_record(tmp_path):
    configs = study_configs(VAEConfig())
    for config in configs[:3]:
        config.run_file(tmp_path, ".metrics.json").write_text(json.dumps({"setting": config.run_name()}))
    for config in configs[1:4]:
        config.run_file(tmp_path, ".json").write_text(json.dumps({"train_seconds": config.latent_dim}))
    found = read_study(VAEConfig(), tmp_path)
    assert [(config, metrics["setting"]) for config, metrics, _ in found] == [(c, c.run_name()) for c in configs[1:3]]


def test_study_table_has_one_row_per_setting_in_bits_per_dim():
    config = VAEConfig(sigma="learned", latent_dim=8)
    quality = {**QUALITY, "mixture samples": {"recognised": 0.97, "digit_share": [0.1] * 10, "frechet": 60.2}}
    # the K = 100 column comes from the bound over the most images that includes K = 100 (here the K = 1000 run)
    metrics = {"test": {"neg_elbo": -1000.0, "reconstruction": 1030.0, "kl": 30.0},
               "iwae_k10": {"images": 5000, "bound": {"1": 0.0, "10": 0.0}},
               "iwae_k1000": {"images": 2000, "bound": {"1": 1000.0, "100": 1010.0, "1000": 1020.0}}, "active_units": 6,
               "learned_sigma": 0.0512, "quality": quality, "endpoint_fidelity": 0.965,
               "aggregate_posterior": {"images": 50_000, "kl": 30.4, "mutual_information": 10.8, "marginal_kl": 19.6}}
    table = study_table([(config, metrics, {"train_seconds": 600})]).splitlines()
    assert len(table) == 3 and "IWAE K=100 (K=1) on 2,000 test images" in table[0]
    assert table[2] == ("| learned (shared) → 0.051 | 8 | -1000.0 | 6.160 | 6.141 (6.160) | 30.0 (10.8 + 19.6) | 6/8 | "
                        "85.4% / 97.0% | 171 / 60 | 88 | 96.5% | 10 |")
    # a run of K = 100 itself wins over a larger run that includes K = 100: the study's rows share their images
    metrics["iwae_k1000"]["images"] = 10_000
    metrics["iwae_k100"] = {"images": 2000, "bound": {"1": 1000.0, "100": 1020.0}}
    table = study_table([(config, metrics, {"train_seconds": 600})]).splitlines()
    assert "on 2,000 test images" in table[0] and "| 6.123 (6.160) |" in table[2]
    # a learning rate other than the default's is named
    fixed = {key: value for key, value in metrics.items() if key != "learned_sigma"}
    rows = study_table([(config, metrics, {"train_seconds": 600}),
                        (dataclasses.replace(config, sigma=0.1, lr=1e-3), fixed, {"train_seconds": 60})]).splitlines()
    assert len(rows) == 4 and rows[3].startswith("| 0.1, lr 0.001 | 8 | -1000.0 |") and rows[3].endswith("| 1 |")


def test_each_process_takes_its_part_of_the_settings_or_the_ones_named():
    configs = list("abcdefg")
    assert chosen_settings(configs, "1/1", None) == configs
    assert chosen_settings(configs, "2/3", None) == ["b", "e"]
    assert chosen_settings(configs, "1/2", "3,1") == ["c", "a"]  # --only wins, numbered from 1


def test_the_command_lists_the_settings(capsys):
    study.main(["--list"])
    lines = capsys.readouterr().out.splitlines()
    configs = study_configs(VAEConfig())
    assert len(lines) == len(configs)
    assert lines[0] == f"1: σ = 0.1, latent size 3, 100 epochs ({VAEConfig().run_name()})"
    assert lines[-1] == f"12: σ per pixel, latent size 32, 8 epochs ({configs[-1].run_name()})"


def test_the_command_runs_the_chosen_settings_with_its_options(tmp_path, monkeypatch, capsys):
    runs = []
    monkeypatch.setenv("PATH_CHECKPOINTS", str(tmp_path))
    monkeypatch.setattr(study, "make_loaders", lambda root, batch_size, seed: ("loaders", batch_size, seed))
    monkeypatch.setattr(study, "load_classifier", lambda path, root: ("classifier", path))
    monkeypatch.setattr(study, "run_study", lambda *args, **kwargs: runs.append((args, kwargs)))
    study.main(["--only", "2,4", "--iwae-k", "1000", "--iwae-images", "0"])
    configs = study_configs(VAEConfig())
    assert runs == [(([configs[1], configs[3]], ("loaders", 128, 42), tmp_path, ("classifier",
                                                                                   tmp_path / "mnist_classifier.pt"),
                      1000, None), {})]  # --iwae-images 0: all test images
    assert "Study part 1/1 finished" in capsys.readouterr().out
    study.main(["--part", "2/2"])
    assert runs[-1][0][0] == configs[1::2] and runs[-1][0][4:] == (100, 2000)
