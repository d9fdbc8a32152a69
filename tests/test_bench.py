"""The benches' own code, run on the CPU at toy sizes: the GPU mode is the same code with the device as a parameter.
Nothing here is timed; the benches write their figures down."""

import copy
import datetime
import itertools
import json
import sys

import pytest
import torch
from conftest import REPO, tiny

from vae_mnist import benchmarks
from vae_mnist.likelihood import iwae_bounds
from vae_mnist.notebook import VAE, DequantizedMNIST, DeviceBatches, dataset_root, dequantize, make_loaders

sys.path.insert(0, str(REPO))  # the bench scripts, as a package of the repository
from bench import bound_precision, recipe, speed  # noqa: E402


@pytest.fixture(scope="module")
def mnist_loaders():
    """The notebook's loaders of real MNIST, in batches of 16 so that a training step costs little."""
    return make_loaders(dataset_root(), 16, 42)


def small_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(channels=(4, 8), hidden=16).eval()


def test_the_timing_loop_gives_each_ratio_per_repeat(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(benchmarks.time, "perf_counter", lambda: now[0])
    durations = {"slow": iter([2.0, 4.0, 2.0]), "fast": iter([1.0, 1.0, 0.5])}

    def runner(name):
        return lambda: now.__setitem__(0, now[0] + next(durations[name]))

    rows = benchmarks.interleaved_throughput({"slow": runner("slow"), "fast": runner("fast")}, 100, 3, "slow")
    assert rows["slow"]["ratio"] == 1 and rows["slow"]["images_per_s"] == pytest.approx(100 / 2.0)
    assert rows["fast"]["ratio"] == pytest.approx(4.0) and rows["fast"]["ratio_range"] == [2.0, 4.0]
    durations = iter([3.0, 1.0, 2.0])
    assert benchmarks.median_time(lambda: now.__setitem__(0, now[0] + next(durations)), 3, torch.device("cpu")) == 2.0


def test_a_table_goes_between_its_markers_and_nowhere_else(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nprose\n<!-- speed:start -->\nold\n<!-- speed:end -->\nafter\n")
    assert benchmarks.write_between_markers(doc, "| new |", "speed")
    assert doc.read_text() == "# Title\n\nprose\n<!-- speed:start -->\n| new |\n<!-- speed:end -->\nafter\n"
    before = doc.read_text()
    assert not benchmarks.write_between_markers(doc, "| other |", "recipe")  # no such markers: nothing written
    assert doc.read_text() == before


def test_each_bench_writes_into_the_doc_that_holds_its_markers():
    for doc, marker in ((speed.DOC, "speed"), (recipe.DOC, "recipe")):
        assert doc.parent == REPO / "docs"
        text = doc.read_text()
        assert text.count(f"<!-- {marker}:start -->") == 1 and text.count(f"<!-- {marker}:end -->") == 1, doc


def test_the_shipped_model_is_loaded_with_the_graded_settings_and_never_trained(tmp_path):
    model = benchmarks.shipped_model()
    assert not model.training and model.hparams.latent_dim == 3
    with pytest.raises(FileNotFoundError, match="No shipped checkpoint"):
        benchmarks.shipped_model(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_machine_is_named_with_what_its_figures_depend_on():
    name = benchmarks.describe(torch.device("cpu"))
    assert "CPU" in name and f"{torch.get_num_threads()} torch threads" in name and torch.__version__ in name


def test_training_steps_train_the_graded_model_on_the_given_device(mnist_loaders, monkeypatch):
    made, graded_model = [], speed.graded_model
    monkeypatch.setattr(speed, "graded_model", lambda device, fmt: made.append(graded_model(device, fmt)) or made[-1])
    run = speed.training_steps(mnist_loaders["train"], torch.device("cpu"))
    (model,) = made
    before = {name: value.clone() for name, value in model.state_dict().items()}
    run(2 * mnist_loaders["train"].batch_size)  # two steps of the notebook's batches
    assert any(not torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_an_epoch_is_its_timed_batches_scaled_to_the_whole_epoch(mnist_loaders, monkeypatch):
    ran = []
    monkeypatch.setattr(speed, "training_steps", lambda loader, device: ran.append)
    clock = itertools.chain([10.0, 13.0], itertools.repeat(13.0))
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(clock))
    seconds = speed.epoch_seconds(mnist_loaders, torch.device("cpu"), batches=2)
    assert ran == [2 * mnist_loaders["train"].batch_size]  # the images of two batches were trained on
    assert seconds == pytest.approx(3.0 * len(mnist_loaders["train"]) / 2)


def test_the_tutorial_rows_train_an_nchw_model_and_the_notebooks_a_channels_last_one():
    weight = {fmt: speed.graded_model(torch.device("cpu"), fmt).encoder.convs[2].weight
              for fmt in (torch.contiguous_format, torch.channels_last)}
    assert weight[torch.contiguous_format].is_contiguous()
    assert weight[torch.channels_last].is_contiguous(memory_format=torch.channels_last)
    assert not weight[torch.channels_last].is_contiguous()


def test_the_throughput_rows_are_the_notebooks_32_bit_pipeline_and_its_variants(mnist_loaders):
    rows = speed.training_setups(mnist_loaders, torch.device("cpu"))
    assert list(rows)[0] == speed.BASELINE and "notebook (32-bit)" in rows
    assert not [name for name in rows if "bf16" in name or "CUDA" in name]


def test_the_timed_bound_scales_a_partial_timing_to_the_whole_test_set(mnist_loaders, monkeypatch):
    clock = itertools.count(step=0.5)  # every reading of the clock half a second after the last
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(clock))
    model = small_vae()
    bound, seconds = speed.timed_bound(model, mnist_loaders["test"].dataset, images=2, k=10)
    assert seconds == pytest.approx(0.5 * 5000)
    assert bound == iwae_bounds(model, mnist_loaders["test"].dataset, 10, 0, images=2)["bound"]["10"]


def test_the_bf16_bound_differs_only_by_the_decoders_rounding(mnist_loaders):
    model = small_vae()
    test_set = mnist_loaders["test"].dataset

    def bias():
        return speed.iwae_bf16_bias(model, test_set, 4, speed.timed_bound(model, test_set, 4, 10)[0], 10)

    rounded = bias()
    assert rounded["bias"] == pytest.approx(rounded["bf16"] - rounded["fp32"]) and rounded["bias"] != 0
    # a decoder whose every output is 0 (exact in bf16): the bias is 0 only if the z draws and the encoder, which
    # stay 32-bit, are the same in both runs
    torch.nn.init.zeros_(model.decoder.deconvs[-1].weight)
    torch.nn.init.zeros_(model.decoder.deconvs[-1].bias)
    assert bias()["bias"] == 0


@pytest.mark.parametrize("recognised, passes", [(0.79, False), (0.80, True)])
def test_a_students_retrain_is_stopped_by_the_time_budget_then_judged(nb, loaders, monkeypatch, recognised, passes):
    def train_model(config, loaders, folder, **trainer_kwargs):  # what Lightning's max_time would leave: 9 epochs
        assert trainer_kwargs == {"enable_progress_bar": False,
                                  "max_time": datetime.timedelta(seconds=speed.BUDGET_S)}  # 32-bit, as the notebook
        return VAE(channels=(4, 8), hidden=16), {"history": {"epoch": list(range(9))}, "train_seconds": 180.0}

    monkeypatch.setattr(speed, "train_model", train_model)
    monkeypatch.setattr(speed, "evaluate", lambda *_: {"val": {"neg_elbo": 41.2}, "test": {"neg_elbo": 40.0}})
    monkeypatch.setattr(speed, "sample_quality", lambda *_: {"samples": {"recognised": recognised}})
    result = speed.time_to_bar(loaders, tiny(nb, max_epochs=100), classifier=None)
    assert result["epochs"] == 9 and result["cut_short"] and result["passes"] is passes


def test_the_table_says_when_the_gpu_is_not_measured():
    cpu = {"machine": "x86_64 CPU", "date": "2026-11-25", "repeats": 5, "epoch_s": 45.0, "sample_10000_s": 1.5,
           "iwae_k1000_test_s": 1800.0, "iwae_images_timed": 256, "run_all_s": 60.0,
           "training": {"tutorial-style data, NCHW model": {"images_per_s": 800, "ratio": 1, "ratio_range": [1, 1]}}}
    table = speed.markdown({"cpu": cpu})
    assert "30.0 min (256 images timed, scaled)" in table and "GPU**: not measured yet" in table
    assert "not measured" not in speed.markdown({"cpu": cpu, "cuda NVIDIA H200": {**cpu, "iwae_images_timed": 10_000}})
    assert "bf16" not in table  # no row for a bias that was not measured
    bias = {"fp32": 40.0, "bf16": 40.5, "bf16_s": 600.0, "images": 256, "bias": 0.5}
    assert ("10.0 min (256 images, the same z as the 32-bit row): bias +0.500 nats per image, over the 0.02 "
            "allowed") in speed.markdown({"cpu": {**cpu, "iwae_bf16": bias}})
    assert "bias -0.010 nats per image, within the 0.02" in speed.markdown(
        {"cpu": {**cpu, "iwae_bf16": {**bias, "bf16": 39.99, "bias": -0.01}}})


def test_the_committed_speed_record_still_makes_its_table():
    stored = json.loads(speed.RECORD.read_text())
    table = speed.markdown(stored)
    assert table.count("| training, tutorial-style data, NCHW model |") == len(stored)


@pytest.mark.slow
def test_the_speed_bench_measures_every_row_at_toy_sizes(monkeypatch):
    """The whole measurement of one device, at toy sizes: the rows' setups, the shipped model, the bounds. The full
    epoch, "run all" (papermill) and torch.compile (a C++ toolchain) are left out: each is timed alone elsewhere."""
    monkeypatch.setattr(speed, "epoch_seconds", lambda loaders, device: 1.0)
    monkeypatch.setattr(speed, "run_all_seconds", lambda repeats: 2.0)
    monkeypatch.setattr(speed.torch, "compile", lambda function: function)
    monkeypatch.setattr(speed, "native_bf16", lambda device: True)
    results = speed.measure(torch.device("cpu"), repeats=1, steps=1, iwae_images=2, bar=False, run_all_repeats=1)
    assert list(results["training"]) == list(speed.training_setups({"train": None}, torch.device("cpu")))
    assert results["epoch_s"] == 1.0 and results["sample_10000_s"] > 0 and results["iwae_bf16"]["images"] == 2
    assert "| training, notebook (32-bit) |" in speed.markdown({"cpu": results})


def test_recipe_jumps_measure_distance_from_the_trend_not_its_slope():
    assert recipe.median_jump([100.0 - 7 * i for i in range(15)]) == "0.0"  # steep but smooth
    assert recipe.median_jump([50.0, 54.0] * 7) == "4.0"  # each epoch 4 nats off its neighbours' mean
    assert recipe.median_jump([80.0, 60.0]) == "–"  # too short to say


def test_recipe_table_keeps_a_tagged_run_apart_and_reports_its_last_measured_epoch(tmp_path, monkeypatch):
    quality = {"samples_recognised": 0.875, "endpoint_fidelity": 0.9, "samples_frechet": 120.4,
               "reconstructions_frechet": 80.6}
    earlier = {**quality, "samples_recognised": 0.5}
    epochs = [{"val": 50.0, "val_ema": 40.0, "train_measured": 60.0, "quality_ema": earlier, "quality": earlier},
              {"val": 30.0, "val_ema": 35.0, "train_measured": 20.0, "quality_ema": quality, "quality": quality},
              {"val": 45.0, "val_ema": 33.0}]
    for i, row in enumerate(epochs, 1):
        row["epoch"] = i
    for name, logged in (("lr_2e-3_z3.json", epochs), ("lr_2e-3_z3_cpu30.json", epochs), ("lr_2e-3_z3_new.json", [
            {"epoch": 1, "val": 90.0, "val_ema": 95.0}])):  # a run in progress, its quality not measured yet
        (tmp_path / name).write_text(json.dumps({"candidate": "lr_2e-3", "latent_dim": 3, "epochs": logged}))
    monkeypatch.setattr(recipe, "RESULTS", tmp_path)
    rows = recipe.table().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| lr_2e-3", "| lr_2e-3 (cpu30)", "| lr_2e-3 (new)"]
    assert rows[2].split(" | ")[1:] == ["3", "1", "90.0 (1)", "95.0 (1)", "– / –", "–", "–", "–", "–", "– / – |"]
    # best trained weights at epoch 2, best average at epoch 3; jumps |30 - (50 + 45) / 2| and |35 - (40 + 33) / 2|;
    # quality from epoch 2, train - val = 20 - 30
    assert rows[1].split(" | ")[1:] == ["3", "3", "30.0 (2)", "33.0 (3)", "17.5 / 1.5", "2", "-10.0", "87.5%", "90.0%",
                                        "120 / 81 |"]
    doc = tmp_path / "recipe.md"
    doc.write_text("prose\n<!-- recipe:start -->\nold\n<!-- recipe:end -->\n")
    monkeypatch.setattr(recipe, "DOC", doc)
    recipe.main(["--table"])
    assert doc.read_text() == f"prose\n<!-- recipe:start -->\n{recipe.table()}\n<!-- recipe:end -->\n"


@pytest.mark.parametrize("tag", ["../x", "___"])  # leaves the results folder; a row the table cannot label
def test_recipe_refuses_a_tag_that_would_leave_its_results_folder_or_name_nothing(capsys, tag):
    with pytest.raises(SystemExit):
        recipe.main(["lr_2e-3", "--tag", tag])
    assert f"--tag takes letters, digits, - and _ only, with at least one letter or digit; got {tag!r}" in (
        capsys.readouterr().err)


def test_recipe_keeps_another_seed_or_a_tag_apart_from_the_seed_42_run(monkeypatch):
    ran = []
    monkeypatch.setattr(recipe, "run", lambda *args: ran.append(args))
    recipe.main(["lr_2e-3_wd_0.1", "--seed", "43", "--tag", "_cpu30"])
    assert ran == [("lr_2e-3_wd_0.1", 3, 30, 5, 43, "_cpu30")]
    names = [recipe.result_path("lr_2e-3", 3, seed, tag).name for seed, tag in ((42, ""), (43, ""), (42, "_cpu30"),
                                                                                  (43, "x"))]
    assert names == ["lr_2e-3_z3.json", "lr_2e-3_z3_seed43.json", "lr_2e-3_z3_cpu30.json", "lr_2e-3_z3_seed43_x.json"]
    assert all(path.parent == recipe.RESULTS for path in map(recipe.result_path, ["a"], [3], [42], ["b"]))


def test_recipe_decays_the_weights_only_for_the_candidates_that_ask():
    weights = [torch.nn.Parameter(torch.ones(2))]
    for name, kind, decay in (("lr_2e-3", torch.optim.Adam, 0.0), ("lr_2e-3_wd_0.1", torch.optim.AdamW, 0.1)):
        change = {"lr": 1e-3, "weight_decay": 0.0, **recipe.CANDIDATES[name]}
        optimizer = recipe.make_optimizer(weights, change)
        assert type(optimizer) is kind and optimizer.param_groups[0]["weight_decay"] == decay
    optimizer.zero_grad()
    weights[0].grad = torch.zeros(2)
    optimizer.step()  # no gradient: AdamW's step is the decay alone, 1 - lr * decay
    assert weights[0].detach().tolist() == pytest.approx([1 - 2e-3 * 0.1] * 2)


def test_recipe_control_redraws_only_the_means_bias_the_way_pytorch_draws_it():
    def model(redraw: bool, seed: int = 44):
        torch.manual_seed(seed)
        vae = VAE()
        if redraw:
            recipe.redraw_mean_bias(vae.decoder, seed)
        return vae

    start = model(False)
    torch.manual_seed(44)
    decoder = VAE().decoder
    state = torch.get_rng_state()
    recipe.redraw_mean_bias(decoder, 44)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator: the training's random numbers stay
    control = model(True)
    differ = [name for (name, a), (_, b) in zip(start.named_parameters(), control.named_parameters(), strict=True)
              if not torch.equal(a, b)]
    assert differ == ["decoder.deconvs.6.bias"]
    bias = control.decoder.deconvs[6].bias[0].item()
    assert abs(bias) <= 1 / 3  # PyTorch's bound, 1/sqrt(fan-in), fan-in = 1 output channel x 3 x 3
    assert bias == pytest.approx(0.14639362692832947)  # the committed seed-44 control's record
    assert bias == model(True).decoder.deconvs[6].bias[0].item() != model(True, 45).decoder.deconvs[6].bias[0].item()
    assert recipe.CANDIDATES["lr_2e-3_random_bias"] == {**recipe.CANDIDATES["lr_2e-3"], "random_bias": True}


def test_recipe_measures_the_first_training_images_in_order(mnist_loaders):
    train = mnist_loaders["train"]
    measured = recipe.first_images(train, 1000)
    assert len(measured) == 2 and measured.batch_size == 500 and not measured.shuffle
    torch.manual_seed(0)
    x, y = next(iter(measured))
    torch.manual_seed(0)
    assert torch.equal(x, dequantize(train.images[:500])) and torch.equal(y, train.labels[:500])


@pytest.mark.slow
def test_recipe_runs_a_candidate_and_records_every_measurement(monkeypatch, tmp_path):
    """One epoch of a candidate on a few real digits, with every measurement the recipe records."""
    digits = DequantizedMNIST(dataset_root(), train=False)
    test_set = copy.copy(digits)  # 1,000 of them judge the samples and the reconstructions
    test_set.images, test_set.labels = digits.images[-1000:], digits.labels[-1000:]
    subset = torch.utils.data.Subset
    monkeypatch.setattr(recipe, "make_loaders", lambda root, batch_size, seed: {
        "train": DeviceBatches(subset(digits, range(512)), batch_size, shuffle=True, drop_last=True),
        "val": DeviceBatches(subset(digits, range(512, 768)), batch_size), "test": DeviceBatches(test_set, 500)})
    monkeypatch.setattr(recipe, "RESULTS", tmp_path)
    log = recipe.run("lr_2e-3_random_bias", latent=2, epochs=1, quality_every=1, seed=44, tag="toy")
    row = log["epochs"][0]
    assert {"val", "val_ema", "train_measured", "quality", "quality_ema", "codes_ema"} <= set(row)
    assert 0 <= row["quality_ema"]["samples_recognised"] <= 1 and row["codes_ema"]["kl"] > 0
    assert json.loads((tmp_path / "lr_2e-3_random_bias_z2_seed44_toy.json").read_text()) == json.loads(
        json.dumps(log))


def test_bound_precision_puts_exactly_the_chosen_layers_in_bf16(mnist_loaders):
    model = small_vae()
    x = dequantize(mnist_loaders["test"].dataset.images[:2])
    exact = bound_precision.log_weights(model, x, 8)
    assert exact.shape == (8, 2)
    assert torch.equal(bound_precision.log_weights(bound_precision.in_bf16(model, [])[0], x, 8), exact)  # same z
    variant, names = bound_precision.in_bf16(model, [1, 5])
    assert names == ["Linear 2", "ConvTranspose2d 6"]
    assert [type(layer).__name__ for layer in variant.decoder.modules() if hasattr(layer, "module")] == ["InBf16"] * 2
    assert not torch.equal(bound_precision.log_weights(variant, x, 8), exact)


@pytest.mark.skipif(getattr(getattr(torch.backends.mkldnn, "conv", None), "fp32_precision", None) is None,
                    reason="this torch has no oneDNN math modes (torch.backends.mkldnn.conv.fp32_precision)")
def test_bf16_math_mode_holds_only_inside_the_wrapped_module():
    mkldnn = torch.backends.mkldnn
    before = mkldnn.conv.fp32_precision, mkldnn.matmul.fp32_precision
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, z):
            seen.append((mkldnn.conv.fp32_precision, mkldnn.matmul.fp32_precision))
            if z.sum() < 0:
                raise ValueError("a failing layer")
            return 2 * z

    assert torch.equal(bound_precision.Bf16Math(Probe())(torch.ones(3)), torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="failing"):
        bound_precision.Bf16Math(Probe())(-torch.ones(3))
    assert seen == [("bf16", "bf16")] * 2
    assert (mkldnn.conv.fp32_precision, mkldnn.matmul.fp32_precision) == before  # restored, after an error too


def test_the_refinement_takes_the_exact_log_weights_near_each_images_largest_screened_one():
    exact = torch.tensor([[0.0, -50.0], [-4.0, -1.0], [-7.0, -8.0]], dtype=torch.float64)  # (k = 3, 2 images)
    screen = exact + torch.tensor([[2.0, 0.0], [3.0, 3.0], [5.0, 4.0]], dtype=torch.float64)
    # chosen by the screen, within 4 nats of its largest: all three of image 1 (the exact -7 lies 7 below the exact
    # largest, but its screened -2 only 4 below 2), only the second of image 2, whose screened -4 (6 below 2) stays
    near = bound_precision.refined(exact, screen, 4)
    assert near["share"] == pytest.approx(4 / 6)
    mixed = torch.tensor([[0.0, -50.0], [-4.0, -1.0], [-7.0, -4.0]], dtype=torch.float64)
    by_hand = (torch.logsumexp(mixed, 0) - torch.logsumexp(exact, 0)).mean().item()
    assert near["bias"] == pytest.approx(by_hand) and near["bias"] > 0
    everything = bound_precision.refined(exact, screen, 100)
    assert everything["share"] == 1 and everything["bias"] == 0


@pytest.mark.slow
def test_bound_precision_measures_every_variant_at_toy_sizes(monkeypatch, tmp_path):
    monkeypatch.setattr(bound_precision, "RECORD", tmp_path / "bound_precision.json")
    bound_precision.main(["--images", "2", "--k", "4", "--rounds", "1"])
    results = json.loads((tmp_path / "bound_precision.json").read_text())
    variants = results["variants"]
    assert len(variants) == len(bound_precision.weighted_layers(benchmarks.shipped_model().decoder)) + 2
    assert [v["onednn_bf16_math"] for v in variants].count(True) == 1 and "refine" in variants[-2]
    assert set(results["speed"]) == {"rounds", "32-bit", "bf16 decoder", "oneDNN bf16 math mode"}
