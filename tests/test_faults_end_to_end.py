"""Issue 13, point 7, end to end: `python -m quickstart run --epochs 1` against an embedded
local cloud whose fault rules (LOCALCLOUD_FAULTS) answer 429 or 503 to one call in five of
every kind, completes through the SDKs' retries and ours (quickstart/retries.py); an injected
allocation failure and an injected node failure are each reported in one readable line."""

from __future__ import annotations

import json
import re

import pytest

from tests.test_end_to_end import (
    assert_trained_and_downloaded,
    quickstart,
    submitted_job,
    user_env,
    workdir,  # noqa: F401 (fixture)
)

EVERY_KIND_ONE_IN_FIVE = [  # 0.1 + 0.9 * 0.1112 = 0.2 of all calls
    # AAD and ARM see a handful of calls in a run: make sure each meets a fault too.
    {"service": "identity", "status": 503, "times": 1, "retryAfter": 0},
    {"service": "arm", "status": 429, "times": 1, "retryAfter": 0},
    {"service": "*", "status": 429, "probability": 0.1, "retryAfter": 0},
    {"service": "*", "status": 503, "probability": 0.1112, "retryAfter": 0},
]


def with_faults(monkeypatch, folder, rules) -> None:
    path = folder / "faults.json"
    path.write_text(json.dumps({"rules": rules}))
    monkeypatch.setattr(
        "tests.test_end_to_end.user_env", lambda: {**user_env(), "LOCALCLOUD_FAULTS": str(path)}
    )


@pytest.mark.slow
def test_run_completes_through_faults_and_reports_compute_faults(workdir, monkeypatch):  # noqa: F811
    with_faults(monkeypatch, workdir, EVERY_KIND_ONE_IN_FIVE)
    status, output = quickstart(workdir, "run", "--epochs", "1")
    assert status == 0, output
    assert_trained_and_downloaded(output, workdir, submitted_job(output))
    faulted = re.findall(
        r"fault rule answers (\d+) \((\w+)\)", (workdir / ".localcloud/localcloud.log").read_text()
    )
    assert {code for code, _ in faulted} == {"429", "503"}
    assert {service for _, service in faulted} == {"identity", "arm", "batchai", "files"}
    assert quickstart(workdir, "teardown")[0] == 0

    with_faults(monkeypatch, workdir, [{"cluster": ".", "allocationFailure": True}])
    status, output = quickstart(workdir, "run", "--epochs", "1")
    assert status != 0
    (line,) = [x for x in output.splitlines() if "AllocationFailed" in x]
    assert line.startswith("Cluster error: AllocationFailed: Allocation failed")
    assert quickstart(workdir, "teardown")[0] == 0

    with_faults(monkeypatch, workdir, [{"job": ".", "nodeFailure": {"afterSeconds": 1}}])
    status, output = quickstart(workdir, "run", "--epochs", "1")
    assert status != 0
    (line,) = [x for x in output.splitlines() if "became unusable" in x]
    assert re.match(r"Job error: InternalError: Node \S+ became unusable while the job ran", line)
    assert quickstart(workdir, "teardown")[0] == 0
