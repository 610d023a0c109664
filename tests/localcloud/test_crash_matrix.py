"""SIGKILL at chosen points of five operations, then a restart: nothing acknowledged is lost,
no range is torn, no job that ran is reported as never run, no process outlives its record,
and SQLite's integrity check passes (see crash_matrix.py)."""

from __future__ import annotations

import pytest

from tests.localcloud import crash_matrix

# One point per operation runs by default; the whole matrix with -m slow (and in
# tests/bench/bench_crash_matrix.py).
DEFAULT = {
    ("parallel_upload", "put-range.copying:6"),
    ("job_launch", "job-launch.started"),
    ("job_delete", "job-stop.stopped"),
    ("group_delete", "group-delete.marked"),
    ("cluster_resize", "setup-task.stopping"),
}
CASES = [
    pytest.param(
        scenario,
        point,
        id=f"{scenario.__name__}-{point}",
        marks=() if (scenario.__name__, point) in DEFAULT else pytest.mark.slow,
    )
    for scenario, point in crash_matrix.SCENARIOS
]


@pytest.mark.parametrize(("scenario", "crash_at"), CASES)
def test_a_crash_at_a_chosen_point_loses_and_leaves_nothing(scenario, crash_at, tmp_path):
    result = crash_matrix.run(scenario, crash_at, tmp_path / "state")
    assert result.crashed, "the server never reached the armed crash point"
    assert result.bytes_lost == 0
    assert result.torn_ranges == 0
    assert not result.problems
