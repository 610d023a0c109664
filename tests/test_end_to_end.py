"""Issue 6 end to end: `python -m quickstart` as a user runs it, each command a real process, in a
fresh working directory with no config file, against the embedded local cloud (a free port, its
state in ./.localcloud), training the real ConvNet_MNIST.py on the real sample with a tiny epoch.

One scenario, in the order a user meets it: a first run to the end; a second run that reuses what
exists and uploads nothing, watched by `status` from another terminal and stopped with Ctrl-C; a
third run that reattaches to the job left running instead of starting another; teardown twice;
then nothing left: no resource in the local cloud and no process of ours.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quickstart.config import SCHEMA
from quickstart.sample import job_files
from tests.test_readme import run_model_loading_code

REPO = Path(__file__).resolve().parent.parent
# A tiny epoch keeps each job to the time it takes to read the sample and test the network.
TINY_TRAINING = "--epoch-size 64 --minibatch-size 32"
COMMAND_TIMEOUT = 120


@pytest.fixture
def workdir(tmp_path):
    """An empty working directory; afterwards no process of ours may be left running in it."""
    yield tmp_path
    leftovers = processes_under(tmp_path)
    for pid in leftovers:  # only processes of this test: they run in or from its directory
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leftovers, f"processes left running: {leftovers}"


def processes_under(folder):
    """Pids of processes whose working directory or command line lies inside `folder`."""
    folder = str(folder)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(str(entry / "cwd"))
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd == folder or cwd.startswith(folder + "/") or folder in cmdline):
            found.append(int(entry.name))
    return found


def user_env():
    """The environment of a user with no quickstart or Azure settings; output unbuffered."""
    names = {name for setting in SCHEMA for name in setting.env} | {"QUICKSTART_DEBUG"}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        QUICKSTART_POLL_INTERVAL="0.2",
        QUICKSTART_EXTRA_ARGS=TINY_TRAINING,
    )
    return env


def quickstart(workdir, *args):
    """Run one command to its end; returns (exit status, stdout + stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "quickstart"] + list(args),
        cwd=str(workdir),
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    return result.returncode, result.stdout


def read_until(process, pattern, deadline):
    """Lines of a running command's output up to and including the first that matches."""
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return "".join(lines)
    raise AssertionError("no line matching {!r} in:\n{}".format(pattern, "".join(lines)))


def submitted_job(output):
    (name,) = re.findall(r"^Job (cntk_\d\d_\d\d_\d{4}_\d{6}(?:_\d)?) submitted$", output, re.M)
    return name


def assert_trained_and_downloaded(output, workdir, job):
    assert re.search(r"^\d\d:\d\d:\d\d Job state: running$", output, re.M)
    assert "Finished Epoch[1 of 1]" in output
    assert f"Job {job} succeeded with exit code 0" in output
    assert re.search(
        r"^file: ConvNet_MNIST_0\.(pt|dnn), download url: https://127\.0\.0\.1:\d+/.*&sig=\*\*\*&",
        output,
        re.M,
    )
    assert re.search(r"^Final test error: \d+\.\d\d% on 10,000 test images$", output, re.M)
    assert re.search(
        r"^Wall time: .* in all \(start-up .*, training .*, download .*\)$", output, re.M
    )
    folder = workdir / "outputs" / job
    models = {p.name for p in folder.iterdir() if p.is_file()}
    assert models & {"ConvNet_MNIST_0.pt", "ConvNet_MNIST_0.dnn"} and not any(
        m.endswith(".partial") for m in models
    )
    assert sorted(p.name for p in (folder / "stdouterr").iterdir()) == [
        "execution.log",
        "stderr.txt",
        "stdout.txt",
    ]
    assert "Final Results: Minibatch[" in (folder / "stdouterr" / "stderr.txt").read_text()


def test_run_twice_watch_interrupt_reattach_and_tear_down(workdir):
    # 1. A fresh directory, no config file: every step, to the downloaded models.
    code, first = quickstart(workdir, "run", "--epochs", "1")
    assert code == 0, first
    assert re.search(
        r"^Started the local cloud at https://127\.0\.0\.1:\d+/ for this command", first, re.M
    )
    for name in job_files():  # the sample, the script and the PyTorch port it hands over to
        assert re.search(rf"^Uploaded {re.escape(name)} \([\d,]+ bytes\)$", first, re.M)
    assert "Cluster mycluster created: 1 x STANDARD_NC6" in first
    assert re.search(
        r"^Cluster state: steady Target: 1; Allocated: 1; Idle: 1; Unusable: 0; Running: 0; "
        r"Preparing: 0; Leaving: 0$",
        first,
        re.M,
    )
    first_job = submitted_job(first)
    readme = run_model_loading_code(workdir)  # the README's snippet, verbatim, after `run`
    assert readme.returncode == 0, readme.stderr
    newest = f"outputs/{first_job}/ConvNet_MNIST_0.pt"
    assert re.fullmatch(rf"{re.escape(newest)}: \d+\.\d\d% test error\n", readme.stdout)
    assert_trained_and_downloaded(first, workdir, first_job)
    connection = json.loads((workdir / ".localcloud" / "connection.json").read_text())

    # 2. Again: everything reused, nothing uploaded, a new job; `status` from another terminal sees
    # it running; Ctrl-C stops the watching, not the job.
    second = subprocess.Popen(
        [sys.executable, "-m", "quickstart", "run", "--epochs", "1"],
        cwd=str(workdir),
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        so_far = read_until(second, r"Job state: running", time.monotonic() + COMMAND_TIMEOUT)
        code, watching = quickstart(workdir, "status")
        assert code == 0, watching
        second.send_signal(signal.SIGINT)
        rest, _ = second.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        if second.poll() is None:
            second.kill()
            second.communicate()
    interrupted = so_far + rest
    assert second.returncode == 130, interrupted
    for name in job_files():  # the sample, the script and the PyTorch port it hands over to
        assert f"Unchanged on the share, not uploaded: {name} (" in interrupted
    assert "Uploaded" not in interrupted
    assert "Cluster mycluster exists; reusing it" in interrupted
    second_job = submitted_job(interrupted)
    assert second_job != first_job
    assert (
        "Stopped. What was created so far stays, and a submitted job keeps running in the cloud: "
        "`python -m quickstart run` (or `status --follow`) reattaches to it"
    ) in interrupted
    assert "Using the local cloud serving at " + connection["resource_manager_url"] in watching
    assert f"Job {second_job}: Job state: running" in watching
    assert "Output so far" in watching

    # 3. A later run reattaches to the job still running: its output from the start, no new job.
    code, third = quickstart(workdir, "run", "--epochs", "1")
    assert code == 0, third
    assert (
        f"Job {second_job} from an earlier run is still running: following it instead of "
        "submitting another" in third
    )
    assert " submitted" not in third and "Uploaded" not in third
    assert third.index("Training 98778 parameters") < third.index("Finished Epoch[1 of 1]")
    assert_trained_and_downloaded(third, workdir, second_job)
    assert sorted(p.name for p in (workdir / "outputs").iterdir()) == sorted(
        [first_job, second_job]
    )

    # 4. Teardown says what it removed; a second one finds nothing.
    code, removed = quickstart(workdir, "teardown")
    assert code == 0, removed
    for line in (
        "Removed job " + first_job,
        "Removed job " + second_job,
        "Removed experiment myexperiment",
        "Removed cluster mycluster",
        "Removed workspace myworkspace",
        "Removed resource group myresourcegroup",
        "Removed file share batchaiquickstart (the sample and every job's files on it)",
    ):
        assert re.search(f"^{re.escape(line)}$", removed, re.M), removed
    code, again = quickstart(workdir, "teardown")
    assert code == 0, again
    assert again.splitlines()[-1] == (
        "Nothing to remove: experiment myexperiment, cluster mycluster, workspace "
        "myworkspace, resource group myresourcegroup, file share batchaiquickstart "
        "did not exist"
    )
    code, after = quickstart(workdir, "status")
    assert code == 0 and after.splitlines()[-2:] == [
        "Cluster mycluster: not found",
        "Job: none in experiment myexperiment",
    ], after

    # 5. Nothing left: no resource (asked through the SDKs), no process; the downloads stay.
    assert_local_cloud_is_empty(workdir / ".localcloud")
    assert processes_under(workdir) == []
    assert (workdir / "outputs" / second_job / "stdouterr" / "stderr.txt").is_file()
    everything = first + interrupted + watching + third + removed + again
    for secret in (connection["client_secret"], connection["storage_key"]):
        assert secret not in everything


def assert_local_cloud_is_empty(state_dir):
    from quickstart.localcloud import LocalCloud
    from tests.conftest import make_batchai_client, make_file_service, make_resource_client

    with LocalCloud(state_dir) as cloud:
        assert list(make_resource_client(cloud.connection).resource_groups.list()) == []
        assert list(make_batchai_client(cloud.connection).workspaces.list()) == []
        assert list(make_file_service(cloud.connection).list_shares()) == []
