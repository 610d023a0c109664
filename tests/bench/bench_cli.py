"""Benchmark: how fast the CLI answers `--help`, and how small the tutorial's pieces are.

Prints the median wall time of `python -m quickstart --help` against a bare `python -c pass`
measured in the same run (the interpreter's own start-up is the floor no CLI can beat), then the
sizes a reader meets (issue 12's limits): ConvNet_MNIST.py (< 250 lines) and its longest
function, steps.py, its `run()` (<= 30 lines) and its longest step (<= 25), and the README's
lines before its figures (about 200). Decorators count in a function's lines.

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
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lengths.append((node.end_lineno - first + 1, node.name))
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
        f"python -c pass           median {base_median:.3f} s  (min {min(baseline):.3f}, max "
        f"{max(baseline):.3f}, {args.runs} runs)"
    )
    print(
        f"python -m quickstart --help  median {cli_median:.3f} s  (min {min(cli):.3f}, max "
        f"{max(cli):.3f}, {args.runs} runs)"
    )
    print(
        f"ratio --help / bare python: {cli_median / base_median:.2f}x; --help costs "
        f"{cli_median - base_median:.3f} s over the bare interpreter"
    )
    print(
        "goal --help <= {:.1f} s: {}".format(
            GOAL_SECONDS, "met" if cli_median <= GOAL_SECONDS else "NOT met"
        )
    )

    for name in ("ConvNet_MNIST.py", "quickstart/steps.py"):
        path = REPO / name
        lengths = function_lengths(path)
        total = len(path.read_text().splitlines())
        print(f"{name}: {total} lines, {len(lengths)} functions")
        print(
            f"  longest function: {lengths[0][1]} ({lengths[0][0]} lines); then "
            + ", ".join(f"{fn} ({n})" for n, fn in lengths[1:4])
        )
    run_lines = dict((fn, n) for n, fn in function_lengths(REPO / "quickstart" / "steps.py"))["run"]
    print(f"quickstart/steps.py run(): {run_lines} lines")
    readme = (REPO / "README.md").read_text().splitlines()
    before = next(i for i, line in enumerate(readme) if line == "## Figures")
    print(f"README.md: {before} lines before '## Figures', {len(readme)} in all")


if __name__ == "__main__":
    main()
