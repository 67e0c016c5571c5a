"""Smoke run of the benchmark harness on tiny inputs: tables have the expected rows, columns and sane values.

Nothing here asserts speed; the numbers of a tiny run mean nothing. What is
checked is that every benchmark runs end to end on the real nuclei image and
generated images, and that the report it feeds is well formed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import json

import pytest

from benchmarks import (_common, _report, _tasks, bench_deep, bench_forest_vs_skimage, bench_synthetic,
                        bench_tiling, run_all)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> _common.BenchConfig:
    """Smallest configuration that still exercises every code path (tiling in process, scratch in tmp)."""
    return _common.QUICK.with_(
        name="tiny",
        train_budgets_s=(1.0, 2.0),
        steps_per_minute=120,
        spread_seeds=(0, 1),
        spread_draws=(0,),
        spread_budget_s=1.0,
        train_patch_size=64,
        deep_variants=("scratch",),
        synthetic_shape=(128, 128),
        synthetic_budget_s=1.0,
        throughput_epochs=2,
        throughput_steps=1,
        patch_size=64,
        batch_size=2,
        tile_size=64,
        tile_batch=2,
        tiling_image_size=160,
        tiling_model_steps=1,
        memory_sizes=(128, 192),
        forest_image_size=256,
        isolate=False,
        work_dir=str(tmp_path_factory.mktemp("bench-work")),
    )


def _check_table(result: _common.BenchmarkResult, n_rows: int) -> None:
    table = result.tables[0].splitlines()
    assert table[0].count("|") == len(result.columns) + 1
    assert len(table) == 2 + n_rows
    present = set().union(*(set(row) for row in result.rows[:n_rows]))
    assert set(result.columns) <= present, set(result.columns) - present


def _check_scores(row: dict) -> None:
    for key in ("ap50", "ap75", "map", "iou", "dice"):
        assert 0.0 <= row[key] <= 1.0, (key, row[key])
    assert row["map"] <= row["ap50"] + 1e-12
    assert row["tp50"] + row["fn50"] == row["n_gt"] > 0
    assert row["tp50"] + row["fp50"] == row["n_pred"]


def _check_targets(result: _common.BenchmarkResult) -> None:
    assert result.targets
    for target in result.targets:
        assert target.goal and target.measured
        assert target.met in (True, False)
        assert target.met or target.why, f"a missed target must say why: {target.goal}"


def test_nuclei_split_keeps_train_and_test_apart():
    task = _tasks.nuclei_split(0.25)
    assert task.train_image.shape == task.test_image.shape == (512, 256)
    assert 0.0 < task.labelled_fraction <= 0.25
    assert task.painted_objects > 0
    assert set(np.unique(task.train_targets)) == {-1, 0, 1, 2}
    assert task.test_gt.max() > 0


def test_deep_benchmark_rows_and_targets(tiny, tmp_path):
    result = bench_deep.run(tiny, ["cpu"])
    forests = ["scikit-image forest (reference)", "workbench forest (classic path)"]
    # Each forest twice: default post-processing, and with seeds cut at their necks (a project setting).
    assert [row["method"] for row in result.rows][:4] == forests + [f + ", seeds cut at necks" for f in forests]
    assert all(row.get("forest") for row in result.rows[:4])
    curve = [row for row in result.rows if not row.get("spread") and not row.get("default_thresholds")]
    spread = [row for row in result.rows if row.get("spread")]
    assert len(curve) == 4 + len(tiny.deep_variants) * len(tiny.train_budgets_s)
    # Each U-Net row is scored with the thresholds the model chose, and again with the defaults.
    defaults = [row for row in result.rows if row.get("default_thresholds")]
    assert [row["ap50"] for row in defaults] == [row["ap50_default"] for row in curve[4:]]
    assert all(row["thresholds"] for row in curve[4:])
    assert len(spread) == len(tiny.spread_seeds) * len(tiny.spread_draws)
    _check_table(result, len(curve) + len(defaults))
    for row in result.rows:
        _check_scores(row)
        assert row["device"] == "cpu"
    # Budgets are run as their step equivalents, along one run per variant.
    deep = curve[4:]
    assert [row["steps"] for row in deep] == [tiny.steps_for(b) for b in sorted(tiny.train_budgets_s)]
    assert all(row["train_s"] > 0 for row in deep)
    assert deep[-1]["hint"] is not None
    assert {row["seed"] for row in spread} == set(tiny.spread_seeds)
    assert result.rows[0]["map_vs_skimage"] == pytest.approx(1.0)
    assert (Path(tiny.work_dir) / bench_deep.PLOT_NAME).stat().st_size > 0
    _check_targets(result)

    # The same section again from the JSON lines that `--curve` runs print, one run per line.
    lines = tmp_path / "curves.jsonl"
    runs = deep + [row for row in spread if row["seed"] != 0]  # seed 0's spread row is on its curve
    lines.write_text("".join(json.dumps(dict(row, draw=0), default=float) + "\n" for row in runs))
    again = bench_deep.report(lines, tiny)
    assert [row["ap50"] for row in again.rows[:len(result.rows) - len(spread)]] == \
        [row["ap50"] for row in result.rows if not row.get("spread")]
    assert len(again.rows) == len(result.rows)
    assert [t.goal for t in again.targets] == [t.goal for t in result.targets]


def test_synthetic_benchmark_reports_the_lead_over_the_best_forest(tiny):
    result = bench_synthetic.run(tiny, ["cpu"])
    assert len(result.rows) == 5
    _check_table(result, 5)
    for row in result.rows:
        _check_scores(row)
    best_forest = max(row["ap50"] for row in result.rows[:4])  # both forests, seeds whole and cut
    assert result.rows[4]["ap50_lead"] == pytest.approx(result.rows[4]["ap50"] - best_forest)
    assert len(result.targets) == 1
    _check_targets(result)


def test_throughput_benchmark(tiny):
    result = bench_deep.run_throughput(tiny, ["cpu"])
    (row,) = result.rows
    assert row["steps_timed"] == 1 and row["patch"] == "64²"
    assert row["step_mps"] > 0 and row["end_to_end_mps"] > 0 and row["parameters"] > 0
    _check_table(result, 1)
    _check_targets(result)


def test_forest_benchmark_compares_with_scikit_image(tiny):
    result = bench_forest_vs_skimage.run(tiny)
    reference, ours = result.rows
    assert reference["n_features"] == 15 and ours["n_features"] > 0
    assert reference["speedup"] == pytest.approx(1.0)
    assert ours["speedup"] == pytest.approx(ours["predict_mps"] / reference["predict_mps"])
    for row in result.rows:
        _check_scores(row)
        assert row["feature_mps"] > 0 and row["forest_mps"] > 0 and row["predict_mps"] > 0
    _check_table(result, 2)
    _check_targets(result)


def test_tiling_benchmark_measures_seams_and_memory(tiny):
    result = bench_tiling.run(tiny, ["cpu"])
    compared = [row for row in result.rows if "key" in row]
    scaled = [row for row in result.rows if "edge" in row]
    assert [row["key"] for row in compared] == ["whole", "workbench", "workbench_halo", "monai"]
    whole, ours, ours_with_halo, monai = compared
    assert whole["seam_max"] == 0.0 and whole["tiles"] == 1
    assert ours["tiles"] == ours_with_halo["tiles"] == monai["tiles"] == 9  # 160 px, tile 64, step 48: 3 x 3
    for row in compared:
        assert 0.0 <= row["seam_mean"] <= row["seam_max"] <= 1.0
        assert 0.0 < row["model_share"] <= 1.0 + 1e-9
        assert row["peak_rss_mb"] > 0 and row["mps"] > 0
    assert monai["speedup"] == pytest.approx(1.0)
    assert [row["edge"] for row in scaled] == [128, 192]
    assert scaled[0]["growth"] == pytest.approx(1.0)
    assert len(result.tables) == 2
    assert result.tables[1].count("\n") == 1 + len(scaled)
    # The tiling benchmark's own scratch folder goes (the deep benchmark's plot may share the scratch root).
    assert not (Path(tiny.work_dir) / "tiling").exists(), "scratch files must be removed"
    _check_targets(result)


def test_report_has_header_targets_and_sections(tiny, tmp_path):
    rows = [{"method": "a", "value": 0.5}, {"method": "b|c", "value": None}]
    result = _common.BenchmarkResult(
        name="demo", title="Demo", description="what it measures", rows=rows, columns=["method", "value"],
        tables=[_common.markdown_table(rows, ["method", "value"])],
        targets=[_common.Target("x ≥ 1", _common.margin_text(0.5, 1.0), False, "too small")], seconds=1.0)
    text = _report.render_report([result], ["## External\n\ntext"], [], tiny, ["cpu"],
                                 "python benchmarks/run_all.py --quick", 60.0)
    assert text.startswith("# Benchmark results")
    for expected in ("TINY configuration", "python benchmarks/run_all.py --quick", "| CPU |", "| RAM |",
                     "torch", "monai", "## Targets", "| x ≥ 1 | 0.500 (short by 0.500) | **missed** | too small |",
                     "## Demo", "| b\\|c | – |", "## External", "## Configuration"):
        assert expected in text, expected
    output = tmp_path / "report.md"
    _common.write_atomic(output, text)
    assert output.read_text(encoding="utf-8") == text


def test_command_line_choices():
    everything = list(run_all.BENCHMARKS) + list(run_all.EXTERNAL)
    assert run_all._parse_only(None) == everything
    assert run_all._parse_only(["tiling,deep"]) == ["deep", "tiling"]
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run_all._parse_only(["nonsense"])
    assert run_all._default_output(False, everything) == run_all.DEFAULT_OUTPUT
    assert run_all._default_output(True, everything).parent == _common.WORK_DIR
    assert run_all._default_output(False, ["deep"]).name == "RESULTS-partial-deep.md"
    assert run_all.parse_args(["--quick", "--device", "cpu"]).device == "cpu"
