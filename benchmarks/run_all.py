"""Run every benchmark and write benchmarks/RESULTS.md.

One command measures this project beside its peers in the same run (the
scikit-image forest, MONAI's sliding-window inference) on the CPU, and on CUDA
as well when a GPU is present:

    python -m benchmarks.run_all                  # full run (~21 min on a quiet 2-core CPU)
    python -m benchmarks.run_all --quick          # smoke configuration (a few minutes)
    python -m benchmarks.run_all --only deep,forest --device cpu

The report holds a table per benchmark, a "Targets" section (met / missed,
by how much and why), the machine, library versions and the exact command.
The raw rows go to a ``.json`` file beside the report. Only a full run of
everything writes ``benchmarks/RESULTS.md``; quick or partial runs write to
``benchmarks/_work/RESULTS-<quick|partial>[-names].md`` (or ``--output``), so
they never replace the full results.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from benchmarks._common import BENCH_DIR, FULL, QUICK, WORK_DIR, BenchConfig, BenchmarkResult, dump_json, write_atomic
from benchmarks._report import render_report

DEFAULT_OUTPUT = BENCH_DIR / "RESULTS.md"
_EXTERNAL_TIMEOUT_S = 1800


def _deep(config, devices):
    from benchmarks import bench_deep

    return bench_deep.run(config, devices)


def _throughput(config, devices):
    from benchmarks import bench_deep

    return bench_deep.run_throughput(config, devices)


def _synthetic(config, devices):
    from benchmarks import bench_synthetic

    return bench_synthetic.run(config, devices)


def _tiling(config, devices):
    from benchmarks import bench_tiling

    return bench_tiling.run(config, devices)


def _pretrain(config, devices):
    from benchmarks import bench_pretrain

    return bench_pretrain.run(config, devices)


def _forest(config, devices):
    from benchmarks import bench_forest_vs_skimage

    return bench_forest_vs_skimage.run(config, devices)


#: The harness's own benchmarks, in the order they run: name -> run(config, devices) -> BenchmarkResult.
BENCHMARKS: dict[str, Callable[[BenchConfig, Sequence[str]], BenchmarkResult]] = {
    "deep": _deep,
    "synthetic": _synthetic,
    "throughput": _throughput,
    "forest": _forest,
    "tiling": _tiling,
    "pretrain": _pretrain,
}


@dataclass(frozen=True)
class ExternalBenchmark:
    """A standalone script that prints a markdown report; included verbatim."""

    module: str
    title: str
    full_args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()


#: Scripts owned by other modules' authors, run as subprocesses when they exist.
EXTERNAL: dict[str, ExternalBenchmark] = {
    "classic": ExternalBenchmark("benchmarks.bench_classic", "Classic path details (bench_classic.py)",
                                 quick_args=("--repeats", "1")),
    "annotator": ExternalBenchmark("benchmarks.bench_annotator", "Annotator latency (bench_annotator.py)",
                                   quick_args=("--sizes", "512", "--repeats", "2")),
    "volumes": ExternalBenchmark("benchmarks.bench_volumes", "Z-stacks as volumes (bench_volumes.py)",
                                 full_args=("--epochs", "12", "--large", "32,1024,1024"), quick_args=("--quick",)),
}


def available_devices(requested: str) -> list[str]:
    """Devices to benchmark the deep path on: "auto" = CPU plus CUDA when present."""
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "auto":
        return ["cpu"] + (["cuda"] if has_cuda else [])
    if requested == "cuda" and not has_cuda:
        raise SystemExit("--device cuda: no CUDA device is available here; use --device cpu or auto.")
    return [requested]


def _parse_only(text: Sequence[str] | None) -> list[str]:
    """Benchmark names from the ``--only`` values (comma-separated, repeatable), in running order."""
    names = list(BENCHMARKS) + list(EXTERNAL)
    if not text:
        return names
    chosen = [part.strip() for chunk in text for part in chunk.split(",") if part.strip()]
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {unknown}; choose from {names}.")
    return [name for name in names if name in chosen]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the harness."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fast smoke configuration (tiny budgets and sizes; numbers are not benchmarks)")
    parser.add_argument("--only", action="append", metavar="NAME[,NAME]",
                        help=f"run only these benchmarks: {', '.join(list(BENCHMARKS) + list(EXTERNAL))}")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="deep-path devices: auto = CPU, plus CUDA when present (default)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"report path (default: {DEFAULT_OUTPUT.relative_to(BENCH_DIR.parent)} for a full run "
                             "of everything, benchmarks/_work/RESULTS-<quick|partial>-....md otherwise)")
    return parser.parse_args(argv)


def _run_external(external: ExternalBenchmark, quick: bool) -> tuple[str, bool, float]:
    """Run a standalone module in a fresh process; return its markdown section, success and seconds."""
    started = time.perf_counter()
    args = list(external.quick_args if quick else external.full_args)
    command = [sys.executable, "-m", external.module, *args]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=_EXTERNAL_TIMEOUT_S,
                                   cwd=BENCH_DIR.parent)
    except subprocess.TimeoutExpired:
        seconds = time.perf_counter() - started
        return (f"## {external.title}\n\n**Failed:** timed out after {seconds:.0f} s "
                f"(`{shlex.join(command[1:])}`).", False, seconds)
    seconds = time.perf_counter() - started
    header = f"## {external.title}\n\nCommand: `python {shlex.join(command[1:])}`\n\n"
    if completed.returncode != 0:
        tail = completed.stderr.strip()[-2000:]
        return header + f"**Failed** (exit code {completed.returncode}):\n\n```\n{tail}\n```", False, seconds
    return header + completed.stdout.strip() + f"\n\n_Benchmark wall time: {seconds:.0f} s._", True, seconds


def run(names: Sequence[str], config: BenchConfig, devices: Sequence[str], output: Path, command: str, *,
        explicit: Sequence[str] = ()) -> int:
    """Run the named benchmarks, write the report and JSON; return the exit status (1 if any failed).

    External scripts are skipped in the quick configuration unless named in ``explicit``.
    """
    started = time.perf_counter()
    results, extra, failures, raw = [], [], [], {}
    for name in names:
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        bench_started = time.perf_counter()
        if name in EXTERNAL:
            if config.name == "quick" and name not in explicit:
                extra.append(f"## {EXTERNAL[name].title}\n\n_Skipped in the quick configuration "
                             f"(select it with `--only {name}`)._")
                continue
            section, ok, seconds = _run_external(EXTERNAL[name], config.name == "quick")
            extra.append(section)
            if not ok:
                failures.append(name)
            raw[name] = {"ok": ok, "seconds": seconds}
        else:
            try:
                result = BENCHMARKS[name](config, devices)
            except Exception:  # one broken benchmark must not lose the others' results
                failures.append(name)
                trace = traceback.format_exc()
                print(trace, file=sys.stderr)
                extra.append(f"## {name}\n\n**Failed:**\n\n```\n{trace[-3000:]}\n```")
                continue
            results.append(result)
            raw[name] = {"rows": result.rows, "targets": [asdict(t) for t in result.targets],
                         "seconds": result.seconds}
        print(f"[run_all] {name} done in {time.perf_counter() - bench_started:.0f} s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    report = render_report(results, extra, failures, config, devices, command, seconds)
    write_atomic(output, report)
    dump_json(output.with_suffix(".json"), {"command": command, "config": asdict(config), "devices": list(devices),
                                            "seconds": seconds, "failures": failures, "benchmarks": raw})
    print(f"[run_all] wrote {output} in {seconds / 60:.1f} min", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None, *, default_only: Sequence[str] | None = None) -> int:
    """Entry point: parse options, run, write the report; returns the exit status."""
    args = parse_args(argv)
    if args.only is None and default_only:
        args.only = [",".join(default_only)]
    names = _parse_only(args.only)
    config = QUICK if args.quick else FULL
    devices = available_devices(args.device)
    output = args.output or _default_output(args.quick, names)
    argv_shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "benchmarks.run_all", *argv_shown])
    return run(names, config, devices, Path(output), command, explicit=names if args.only else ())


def _default_output(quick: bool, names: Sequence[str]) -> Path:
    """RESULTS.md only for a full run of everything; quick or partial runs go to _work/ so they never replace it."""
    everything = list(BENCHMARKS) + list(EXTERNAL)
    if not quick and list(names) == everything:
        return DEFAULT_OUTPUT
    tag = "quick" if quick else "partial"
    if list(names) != everything:
        tag += "-" + "-".join(names)
    return WORK_DIR / f"RESULTS-{tag}.md"


if __name__ == "__main__":
    sys.exit(main())
