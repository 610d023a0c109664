"""The crash fault matrix's figures (issue 13, point 4): survived / tried, bytes lost, torn
ranges, over every scenario of tests/localcloud/crash_matrix.py.

    .venv/bin/python tests/bench/bench_crash_matrix.py [--rounds 1]

Each round runs every (operation, crash point) pair once on a fresh state directory: a server
in its own process is killed with SIGKILL at the point, restarted, and checked.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.localcloud import crash_matrix  # noqa: E402


def main() -> None:
    logging.getLogger("azure.storage").setLevel(logging.CRITICAL)  # each dead call logs a line
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    tried = survived = lost = torn = 0
    for _ in range(args.rounds):
        for scenario, point in crash_matrix.SCENARIOS:
            with tempfile.TemporaryDirectory() as state:
                result = crash_matrix.run(scenario, point, Path(state) / "state")
            tried += 1
            survived += result.survived
            lost += result.bytes_lost
            torn += result.torn_ranges
            verdict = "survived" if result.survived else f"FAILED {result.problems}"
            print(f"{result.scenario:<50} {verdict}")
    print(f"survived {survived}/{tried}; bytes lost {lost}; torn ranges {torn}")


if __name__ == "__main__":
    main()
