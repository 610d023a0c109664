"""Issue 14: `python -m quickstart run --nodes 2` as a user runs it: the article's cluster with two
nodes, the CNTK job with nodeCount 2 under mpirun, the PyTorch port training data-parallel over
both ranks, rank 0 alone reporting, every rank's progress in the job's stderr.txt."""

import re
import shutil

import pytest

from tests.test_end_to_end import quickstart, submitted_job, user_env, workdir  # noqa: F401

# 1024 samples in one epoch: the test error after it, measured on this machine with two ranks
# and with one process, is in tests/bench/README.md ("Two nodes"); the bound leaves room for
# the dropout masks, which differ between the two.
TWO_NODE_TRAINING = "--epoch-size 1024 --minibatch-size 64"
ERROR_BOUND = 75.0
# Two ranks each import torch and read the whole sample: on the shared 2-core machine under
# load this run outlasted the single-node tests' limit (tests/bench/README.md, issue 14).
COMMAND_TIMEOUT = 300


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs apt-get install openmpi-bin")
def test_run_on_two_nodes_trains_data_parallel_and_rank_0_reports(workdir, monkeypatch):  # noqa: F811
    monkeypatch.setattr(
        "tests.test_end_to_end.user_env",
        lambda: {**user_env(), "QUICKSTART_EXTRA_ARGS": TWO_NODE_TRAINING},
    )
    monkeypatch.setattr("tests.test_end_to_end.COMMAND_TIMEOUT", COMMAND_TIMEOUT)
    code, output = quickstart(workdir, "run", "--nodes", "2", "--epochs", "1")
    assert code == 0, output
    assert "Cluster mycluster created: 2 x STANDARD_NC6" in output
    job = submitted_job(output)
    error = float(re.search(r"^Final test error: (\d+\.\d\d)% on 10,000", output, re.M)[1])
    assert error < ERROR_BOUND
    stdouterr = workdir / "outputs" / job / "stdouterr"
    logs = sorted(p.name for p in stdouterr.iterdir())
    assert logs[2:] == ["stderr.txt", "stdout.txt"]
    assert len(logs) == 4 and all(re.fullmatch(r"execution-tvm-.*\.log", n) for n in logs[:2])
    lines = (stdouterr / "stderr.txt").read_text()
    assert "Training data-parallel on 2 MPI ranks" in lines
    assert re.search(r"^Finished Epoch\[1 of 1\]: .* \* 1024, ", lines, re.M)
    assert re.search(r"^Rank 1: Finished Epoch\[1 of 1\]: .* \* 512, ", lines, re.M)
    assert lines.count("Final Results: Minibatch[") == 1
    code, _ = quickstart(workdir, "teardown", "--delete-share")
    assert code == 0
