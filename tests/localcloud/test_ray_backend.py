"""Issue 15: the local cloud's compute on a real Ray cluster. The scenarios live in
tests/localcloud/ray/ and run here, all in one private network namespace that has only
loopback (Ray binds the machine's interface address otherwise): one Ray cluster start-up for
all of them. Nothing of Ray may be left running afterwards. ``QUICKSTART_RAY_SELECT``, a pytest
``-k`` expression, runs only some of them (the cluster start-up is the same)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests import privatenet

REPO = Path(__file__).resolve().parents[2]
SELECT = "QUICKSTART_RAY_SELECT"


def ray_processes(prefix: str = "rayq-") -> list:
    """Live processes of a Ray cluster started from a tests' temp folder (/tmp/<prefix>*)."""
    marker = f"/tmp/{prefix}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X") and marker in cmdline:
            found.append(int(entry))
    return found


@pytest.mark.timeout(1200)  # past privatenet.run's own 900 s, which says more
def test_the_ray_scenarios_pass_in_a_private_network_and_leave_no_ray_process(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed: pip install -r requirements.txt")
    reason = privatenet.why_not()
    if reason:
        pytest.skip(reason)
    figures = tmp_path / "figures.jsonl"
    prefix = f"rayq-{os.getpid()}-"  # this run's cluster only: another run's may be up beside
    env = {
        **os.environ,
        "QUICKSTART_RAY_FIGURES": str(figures),
        "QUICKSTART_RAY_TEMP_PREFIX": prefix,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/localcloud/ray"]
    if os.environ.get(SELECT):
        argv += ["-k", os.environ[SELECT]]
    result = privatenet.run(argv, env, timeout=900, cwd=REPO)
    if figures.exists():
        for line in figures.read_text().splitlines():
            print("ray figures:", json.loads(line))
    assert result.returncode == 0, result.stdout[-20000:]
    assert " passed" in result.stdout and " skipped" not in result.stdout, result.stdout[-5000:]
    assert not ray_processes(prefix), "Ray processes left running"
