"""`workbench pretrain`: a tiny run writes a loadable model with its starter card, the same seed gives the same
weights, and bad input is one error line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from workbench.cli import main
from workbench.deep import build_unet, load_model, sha256_file
from workbench.errors import WorkbenchError
from workbench.pretrain import PretrainSettings, pretrain, pretrain_pool

# Bit-identical reruns are a CPU promise: the tests pin the device.
TINY = dict(minutes=None, pool_size=2, pool_steps=2, image_size=64, patch_size=64, batch_size=2, device="cpu")


def _weights(folder):
    return torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)


def test_a_tiny_run_writes_a_model_and_its_starter_card(tmp_path):
    result = pretrain(tmp_path / "starter", PretrainSettings(steps=3, seed=4, **TINY))
    folder = result.directory
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "starter.json", "weights.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no scratch left beside the output"
    model, card = load_model(folder)
    assert card.in_channels == 1 and card.mode == "instance" and card.classes == ["background", "interior", "boundary"]
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    info = json.loads((folder / "starter.json").read_text())
    assert info == result.info
    assert info["weights_sha256"] == sha256_file(folder / "weights.pt")
    assert info["training"]["steps"] == 3 and result.steps == 3 and card.metrics["total_steps"] == 3
    assert info["trained_on"]["pools"] == 2 == result.pools  # 2 + 1 steps: a fresh pool after pool_steps
    assert info["training"]["seed"] == 4 and info["training"]["device"] == "cpu"
    assert "--steps 3" in info["command"] and "--seed 4" in info["command"]
    assert "never used for pretraining" in info["trained_on"]["real_images"]
    assert info["scores"] == {}
    # Its thresholds were chosen on whole objects of images drawn after training, and the card carries them.
    calibration = info["instance_options"]
    assert calibration["objects"] >= 4 and card.instance_options == calibration["options"]
    assert set(card.instance_options) == {"boundary_threshold", "foreground_threshold"}
    assert "instance_options" not in card.metrics, "not the last pool's own choice beside it"
    # The folder is a whole-network start for training, like the shipped starter.
    start = build_unet(1, 3, weights=folder).state_dict()
    assert all(torch.equal(start[key], value) for key, value in model.state_dict().items())


def test_a_starter_with_the_distance_output_gives_all_its_outputs_to_fine_tuning(tmp_path, nuclei_image):
    from workbench.deep import make_predictor

    result = pretrain(tmp_path / "starter", PretrainSettings(steps=3, seed=4, distance=True, **TINY))
    model, card = load_model(result.directory)
    assert card.distance and card.n_outputs == 4 and result.info["model"]["distance_output"] is True
    assert result.info["command"].endswith("--distance")
    assert card.instance_options["seeds"] == "distance"
    start = build_unet(1, 3, weights=result.directory, distance=True).state_dict()
    assert all(torch.equal(start[key], value) for key, value in model.state_dict().items())
    probabilities = make_predictor(model, card, device="cpu")(nuclei_image[None, None, :64, :64])
    assert probabilities.shape == (1, 4, 64, 64) and np.allclose(probabilities[0, :3].sum(0), 1, atol=1e-5)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    settings = dict(steps=4, **TINY)
    first = pretrain(tmp_path / "a", PretrainSettings(seed=1, **settings)).directory
    second = pretrain(tmp_path / "b", PretrainSettings(seed=1, **settings)).directory
    third = pretrain(tmp_path / "c", PretrainSettings(seed=2, **settings)).directory
    a, b, c = _weights(first), _weights(second), _weights(third)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_a_time_budget_ends_the_run_with_the_model_so_far(tmp_path):
    settings = PretrainSettings(**{**TINY, "minutes": 0.08, "pool_steps": 3})
    result = pretrain(tmp_path / "starter", settings)
    assert result.stop_reason == "time" and result.steps >= 1 and result.pools >= 1
    assert result.seconds < 0.08 * 60 + 15
    assert result.info["training"]["steps"] == result.steps
    assert "--minutes 0.08" in result.info["command"]


def test_pools_follow_the_store_instance_convention():
    from workbench.store import labels_from_instances, training_targets
    from workbench.datasets import corpus_samples

    settings = PretrainSettings(steps=1, **TINY)
    pool = pretrain_pool(7, settings)
    samples = corpus_samples(2, (64, 64), seed=7)
    for (image, targets), sample in zip(pool, samples):
        assert image.shape == (1, 64, 64) and image.dtype == np.float32
        assert np.array_equal(targets, training_targets(labels_from_instances(sample.labels), "instance"))


def test_the_output_is_replaced_only_when_asked(tmp_path):
    out = tmp_path / "starter"
    pretrain(out, PretrainSettings(steps=1, **TINY))
    with pytest.raises(WorkbenchError, match="not empty"):
        pretrain(out, PretrainSettings(steps=1, **TINY))
    before = sha256_file(out / "weights.pt")
    pretrain(out, PretrainSettings(steps=1, seed=9, **TINY), force=True)
    assert sha256_file(out / "weights.pt") != before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(WorkbenchError, match="does not hold a model"):
        pretrain(tmp_path / "notes", PretrainSettings(steps=1, **TINY), force=True)
    assert (tmp_path / "notes" / "a.txt").read_text() == "mine"


def test_command_line_run_records_the_command_and_reruns_byte_for_byte(tmp_path, capsys):
    out = tmp_path / "starter"
    options = ["--steps", "2", "--pool-size", "2", "--pool-steps", "1", "--image-size", "128", "--device", "cpu",
               "--seed", "3"]
    assert main(["pretrain", str(out), *options]) == 0
    assert "wrote" in capsys.readouterr().out
    info = json.loads((out / "starter.json").read_text())
    assert info["command"] == f"workbench pretrain {out} " + " ".join(options)
    assert info["training"]["steps"] == 2 and info["trained_on"]["pools"] == 2
    # The same command in another process writes the same weights file (the sha256 in the card).
    again = subprocess.run([sys.executable, "-m", "workbench.cli", "pretrain", str(tmp_path / "again"), *options],
                           capture_output=True, text=True)  # same environment, so the same CPU threads
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "again" / "starter.json").read_text())["weights_sha256"] == info["weights_sha256"]


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--minutes", "-1"], "--minutes must be a positive"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--steps", "1", "--image-size", "64"], "`patch_size` (128) must not exceed `image_size` (64)"),
    (["--steps", "1", "--device", "tpu"], "`device`"),
    (["--steps", "1", "--pool-size", "0"], "pool_size"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, argv, message):
    code = main(["pretrain", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_unusable_output_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    for out, message in ((tmp_path / "file", "is a file"), (tmp_path / "full", "not empty")):
        assert main(["pretrain", str(out), "--steps", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and len(err.splitlines()) == 1


def test_the_pretrain_benchmark_runs_on_a_tiny_configuration(tmp_path):
    """Every part of benchmarks/bench_pretrain.py end to end (numbers of a tiny run mean nothing)."""
    from benchmarks import _common, bench_pretrain

    tiny = _common.QUICK.with_(name="tiny", train_budgets_s=(1.0, 2.0), steps_per_minute=60, train_patch_size=64,
                               synthetic_shape=(96, 96), deep_variants=("scratch",), work_dir=str(tmp_path))
    result = bench_pretrain.run(tiny, ("cpu",), styles=("fluorescence", "histology"))
    parts = [row["part"] for row in result.rows]
    assert parts.count("nuclei half split") == 4 and parts.count("zero-shot, right half") == 1  # 2 starts x 2 budgets
    assert parts.count("synthetic style") == 4
    for row in result.rows:
        assert 0.0 <= row["ap50"] <= 1.0 and row["tp50"] + row["fn50"] == row["n_gt"] > 0
    assert {row["channels"] for row in result.rows if row["style"] == "histology"} == {3}
    assert result.targets and all(t.met or t.why for t in result.targets)
    assert (tmp_path / bench_pretrain.PLOT_NAME).is_file()
    assert result.tables[0].count("\n") == len(result.rows) + 1
    # Parts written by separate runs (--jsonl) come back as one section, plot and targets (--report).
    (tmp_path / bench_pretrain.PLOT_NAME).unlink()
    files = [tmp_path / "curves.jsonl", tmp_path / "rest.jsonl"]
    for path, rows in zip(files, ([r for r in result.rows if r["part"] == "nuclei half split"],
                                  [r for r in result.rows if r["part"] != "nuclei half split"])):
        path.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows))
    again = bench_pretrain.report(files, tiny)
    assert again.rows == json.loads(json.dumps(result.rows, default=str))
    assert again.tables == result.tables and (tmp_path / bench_pretrain.PLOT_NAME).is_file()
    assert [(t.goal, t.measured, t.met) for t in again.targets] == [(t.goal, t.measured, t.met) for t in result.targets]
    # A new starter's style rows alone (--parts styles --variants starter) are the whole run's starter rows.
    alone = bench_pretrain.run(tiny, ("cpu",), styles=("fluorescence", "histology"), variants=("starter",),
                               parts=("styles",))
    assert alone.rows == [r for r in result.rows if r["part"] == "synthetic style" and r["variant"] == "starter"]
    # Scores go into a starter's card, leaving its weights (and their sha256) alone.
    folder = pretrain(tmp_path / "starter", PretrainSettings(steps=1, **TINY)).directory
    path = bench_pretrain.record_scores(result, folder)
    info = json.loads(path.read_text())
    assert info["scores"]["zero-shot, right half"]["zero-shot"][0]["ap50"] == round(result.rows[4]["ap50"], 4)
    assert info["weights_sha256"] == sha256_file(folder / "weights.pt")
