"""Benchmark: how fast the CLI answers `--help`, and how small the tutorial's steps are.

Prints the median wall time of `python -m quickstart --help` against a bare `python -c pass`
measured in the same run (the interpreter's own start-up is the floor no CLI can beat), then the
line counts of quickstart/steps.py and of its longest function.

    .venv/bin/python tests/bench/bench_cli.py [--runs N]
"""

import argparse
import ast
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOAL_SECONDS = 1.0


def wall_times(argv, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        times.append(time.perf_counter() - start)
    return times


def function_lengths(path):
    """(lines, name) of every function and method in the module, docstring included."""
    tree = ast.parse(path.read_text())
    lengths = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lengths.append((node.end_lineno - node.lineno + 1, node.name))
    return sorted(lengths, reverse=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    subprocess.run(
        [sys.executable, "-m", "quickstart", "--help"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )  # warm the bytecode cache once
    baseline = wall_times([sys.executable, "-c", "pass"], args.runs)
    cli = wall_times([sys.executable, "-m", "quickstart", "--help"], args.runs)
    base_median, cli_median = statistics.median(baseline), statistics.median(cli)
    print(
        f"python -c pass           median {base_median:.3f} s  (min {min(baseline):.3f}, max {max(baseline):.3f}, {args.runs} runs)"
    )
    print(
        f"python -m quickstart --help  median {cli_median:.3f} s  (min {min(cli):.3f}, max {max(cli):.3f}, {args.runs} runs)"
    )
    print(
        f"ratio --help / bare python: {cli_median / base_median:.2f}x; --help costs {cli_median - base_median:.3f} s over the bare interpreter"
    )
    print(
        "goal --help <= {:.1f} s: {}".format(
            GOAL_SECONDS, "met" if cli_median <= GOAL_SECONDS else "NOT met"
        )
    )

    steps = REPO / "quickstart" / "steps.py"
    lengths = function_lengths(steps)
    total = len(steps.read_text().splitlines())
    print(f"quickstart/steps.py: {total} lines, {len(lengths)} functions")
    print(
        "longest function: {} ({} lines); then {}".format(
            lengths[0][1], lengths[0][0], ", ".join(f"{name} ({n})" for n, name in lengths[1:4])
        )
    )


if __name__ == "__main__":
    main()
