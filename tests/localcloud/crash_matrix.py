"""The crash fault matrix (issue 13, point 4): kill the server with SIGKILL at chosen points of
multi-step operations, start it again on the same state directory, and check what a user
relies on.

Each scenario runs a real local cloud in its own process (``serve_forever``) with
``LOCALCLOUD_CRASH_AT`` armed (see quickstart/localcloud/crashpoints.py), drives it with the
real SDK clients (retries off, so a dead server is an error at once), waits for the SIGKILL,
restarts the server unarmed and checks:

* every acknowledged write is intact byte for byte (``bytes_lost``);
* a Put Range is all or nothing (``torn_ranges``);
* a job that ran is never reported as never having run;
* no job or setup-task process outlives its deleted record;
* SQLite's integrity_check says ok.

A scenario returns a ``Result``; the test (test_crash_matrix.py) asserts on it and
tests/bench/bench_crash_matrix.py prints the figures.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import azure.mgmt.batchai.models as models
from azure.storage.common.retry import no_retry
from msrestazure.azure_exceptions import CloudError

from quickstart.localcloud.connection import read_connection
from tests.conftest import (
    make_batchai_client,
    make_credentials,
    make_file_service,
    make_resource_client,
)
from tests.localcloud.batchai.test_batchai import processes_under

REPO = Path(__file__).resolve().parents[2]
RG, WS, CLUSTER, EXP, SHARE, MOUNT = "crashrg", "crashws", "crashcl", "crashexp", "crashes", "afs"
MiB = 1024 * 1024
RANGE = 4 * MiB

_SERVE = (
    "import sys; from quickstart.localcloud import serve_forever; "
    "sys.exit(serve_forever(sys.argv[1], int(sys.argv[2]), cluster_allocation_delay=0.1, "
    "access_log=False))"
)


@dataclass
class Result:
    scenario: str
    crashed: bool = False  # the armed point was reached (the server died of SIGKILL)
    bytes_lost: int = 0
    torn_ranges: int = 0
    problems: list = field(default_factory=list)

    @property
    def survived(self) -> bool:
        return self.crashed and not self.problems and not self.bytes_lost and not self.torn_ranges


class Server:
    """A local cloud in its own process on a fixed port, so clients outlive its restarts."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen | None = None

    def start(self, crash_at: str | None = None) -> dict:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("LOCALCLOUD_CRASH_AT", None)
        if crash_at:
            env["LOCALCLOUD_CRASH_AT"] = crash_at
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(self.state_dir), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        line = self.process.stdout.readline()
        if "serving" not in line:
            self.kill()
            raise AssertionError(f"the local cloud did not start: {line!r}")
        return read_connection(self.state_dir)

    def died_of_sigkill(self, timeout: float = 30) -> bool:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return code == -signal.SIGKILL

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Clients:
    def __init__(self, connection: dict):
        credentials = make_credentials(connection)
        self.resources = make_resource_client(connection, credentials)
        self.batchai = make_batchai_client(connection, credentials)
        for client in (self.resources, self.batchai):
            client.config.retry_policy.retries = 0
        self.files = make_file_service(connection)
        self.files.retry = no_retry


def wait_for(predicate, timeout: float = 30, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except CloudError as err:
            value = None if err.status_code != 404 else "gone"
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


def integrity(state_dir: Path) -> str:
    db = sqlite3.connect(str(state_dir / "localcloud.sqlite3"))
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def _batchai_setup(c: Clients, connection: dict, nodes: int = 1, setup: str | None = None):
    c.resources.resource_groups.create_or_update(RG, {"location": "eastus"})
    c.files.create_share(SHARE, fail_on_exist=False)
    c.batchai.workspaces.create(RG, WS, "eastus").result()
    share = models.AzureFileShareReference(
        account_name=connection["storage_account"],
        credentials=models.AzureStorageCredentialsInfo(account_key=connection["storage_key"]),
        azure_file_url=f"https://{c.files.primary_endpoint}/{SHARE}",
        relative_mount_path=MOUNT,
    )
    params = models.ClusterCreateParameters(
        vm_size="STANDARD_NC6",
        scale_settings=_manual(nodes),
        node_setup=models.NodeSetup(
            mount_volumes=models.MountVolumes(azure_file_shares=[share]),
            setup_task=models.SetupTask(
                command_line=setup, std_out_err_path_prefix=f"$AZ_BATCHAI_MOUNT_ROOT/{MOUNT}"
            )
            if setup
            else None,
        ),
        user_account_settings=models.UserAccountSettings(
            admin_user_name="crash", admin_user_password="Adm1n-Passw0rd!"
        ),
    )
    cluster = c.batchai.clusters.create(RG, WS, CLUSTER, params).result()
    c.batchai.experiments.create(RG, WS, EXP).result()
    return cluster


def _manual(count: int) -> models.ScaleSettings:
    return models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=count))


def _job(c: Clients, cluster_id: str, name: str, command: str) -> None:
    params = models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster_id),
        node_count=1,
        std_out_err_path_prefix=f"$AZ_BATCHAI_MOUNT_ROOT/{MOUNT}",
        output_directories=[
            models.OutputDirectory(id="MODEL", path_prefix=f"$AZ_BATCHAI_MOUNT_ROOT/{MOUNT}")
        ],
        custom_toolkit_settings=models.CustomToolkitSettings(command_line=command),
    )
    c.batchai.jobs.create(RG, WS, EXP, name, params).result()


def _quietly(call) -> None:
    """Make a call the crash interrupts (its error is the point)."""
    try:
        call()
    except Exception:  # noqa: BLE001 - a dead server fails a call in many ways
        pass


# ---------------------------------------------------------------------- scenarios


def parallel_upload(server: Server, crash_at: str) -> Result:
    """Four threads put 4 MiB ranges of one file (as create_file_from_* does) while the server
    dies; an earlier file must be intact, every acknowledged range too, and none torn."""
    result = Result(f"parallel upload, {crash_at}")
    c = Clients(server.start(None if crash_at == "external" else crash_at))
    c.files.create_share(SHARE)
    before = os.urandom(3 * MiB + 5)
    c.files.create_file_from_bytes(SHARE, None, "before.bin", before)
    ranges = 12
    data = os.urandom(ranges * RANGE)
    c.files.create_file(SHARE, None, "big.bin", len(data))

    def put(index: int) -> None:
        start = index * RANGE
        c.files.update_range(
            SHARE, None, "big.bin", data[start : start + RANGE], start, start + RANGE - 1
        )

    acknowledged = set()
    with ThreadPoolExecutor(4) as pool:
        futures = {pool.submit(put, i): i for i in range(ranges)}
        if crash_at == "external":
            while len([f for f in futures if f.done() and not f.exception()]) < 4:
                time.sleep(0.005)
            server.process.send_signal(signal.SIGKILL)
        for future, index in futures.items():
            if future.exception() is None:
                acknowledged.add(index)
    result.crashed = server.died_of_sigkill()
    c = Clients(server.start())
    content = c.files.get_file_to_bytes(SHARE, None, "big.bin").content
    if c.files.get_file_to_bytes(SHARE, None, "before.bin").content != before:
        result.problems.append("a file written before the crash changed")
    for index in range(ranges):
        start = index * RANGE
        got, sent = content[start : start + RANGE], data[start : start + RANGE]
        if index in acknowledged:
            result.bytes_lost += sum(1 for a, b in zip(got, sent, strict=True) if a != b)
        elif got not in (sent, bytes(RANGE)):
            result.torn_ranges += 1
    if len(acknowledged) == ranges:
        result.problems.append("the crash came after every range was acknowledged")
    server.stop()
    return result


def job_launch(server: Server, crash_at: str) -> Result:
    """The server dies while starting a job: a job that ran must be reported as run."""
    result = Result(f"job launch, {crash_at}")
    connection = server.start(crash_at)
    c = Clients(connection)
    cluster = _batchai_setup(c, connection)
    command = 'echo ran > "$AZ_BATCHAI_OUTPUT_MODEL/ran.txt"; sleep 1'
    _quietly(lambda: _job(c, cluster.id, "launched", command))  # the crash may cut its polling
    result.crashed = server.died_of_sigkill()
    c = Clients(server.start())
    job = wait_for(
        lambda: (lambda j: j if j.execution_state in ("succeeded", "failed") else None)(
            c.batchai.jobs.get(RG, WS, EXP, "launched")
        )
    )
    time.sleep(1.5)  # a launch the restart cancelled must not start late either
    share = server.state_dir / "shares" / SHARE
    ran = any(share.rglob("ran.txt"))
    said_never_ran = job.execution_state == "failed" and any(
        e.code == "JobProcessVanished" for e in job.execution_info.errors or []
    )
    if ran and said_never_ran:
        result.problems.append("the job ran but is reported as never having run")
    if not ran and job.execution_state == "succeeded":
        result.problems.append("the job is reported succeeded but never ran")
    _tear_down(c, server, result)
    return result


def job_delete(server: Server, crash_at: str) -> Result:
    """The server dies while deleting a running job: after the restart the record goes and
    no process of the job is left."""
    return _delete_running_job(
        server,
        crash_at,
        "job delete",
        lambda c: c.batchai.jobs.delete(RG, WS, EXP, "long").result(),
        lambda c: c.batchai.jobs.get(RG, WS, EXP, "long"),
    )


def group_delete(server: Server, crash_at: str) -> Result:
    return _delete_running_job(
        server,
        crash_at,
        "resource-group delete",
        lambda c: c.resources.resource_groups.delete(RG).result(),
        lambda c: c.resources.resource_groups.get(RG),
    )


def _delete_running_job(server, crash_at, what, delete, get) -> Result:
    result = Result(f"{what}, {crash_at}")
    connection = server.start(crash_at)
    c = Clients(connection)
    cluster = _batchai_setup(c, connection)
    _job(c, cluster.id, "long", "sleep 600")
    wait_for(lambda: _job_command_started(server.state_dir))
    _quietly(lambda: delete(c))
    result.crashed = server.died_of_sigkill()
    c = Clients(server.start())
    if wait_for(lambda: _gone(lambda: get(c))) != "gone":
        result.problems.append(f"the {what} was not finished after the restart")
    if _processes_left(server.state_dir):
        result.problems.append("a job process outlived its deleted record")
    server.stop()
    return result


def cluster_resize(server: Server, crash_at: str) -> Result:
    """The server dies while a resize starts or stops setup tasks (which ignore SIGTERM):
    after the restart every setup task is tracked, and a shrink leaves none behind."""
    result = Result(f"cluster resize, {crash_at}")
    connection = server.start(crash_at)
    c = Clients(connection)
    stubborn = "trap '' TERM; sleep 600 & wait; sleep 600"
    _batchai_setup(c, connection, nodes=0, setup=stubborn)
    _quietly(lambda: c.batchai.clusters.update(RG, WS, CLUSTER, scale_settings=_manual(2)))
    if crash_at.startswith("setup-task.stopping"):
        _quietly(lambda: _until_setup_running(c, server, 2))
        _quietly(lambda: c.batchai.clusters.update(RG, WS, CLUSTER, scale_settings=_manual(0)))
    result.crashed = server.died_of_sigkill()
    c = Clients(server.start())
    c.batchai.clusters.update(RG, WS, CLUSTER, scale_settings=_manual(2))
    _until_setup_running(c, server, 2)
    if len(processes_under(server.state_dir)) > 2 * 3:  # wrapper, shell, sleep per node
        result.problems.append("a setup task started before the crash is not tracked")
    c.batchai.clusters.update(RG, WS, CLUSTER, scale_settings=_manual(0))
    wait_for(lambda: c.batchai.clusters.get(RG, WS, CLUSTER).current_node_count == 0)
    if _processes_left(server.state_dir):
        result.problems.append("a setup task outlived its node")
    _tear_down(c, server, result)
    return result


def _until_setup_running(c: Clients, server: Server, nodes: int):
    """Until ``nodes`` setup-task wrappers run (each node stays preparing meanwhile)."""
    return wait_for(
        lambda: (
            c.batchai.clusters.get(RG, WS, CLUSTER).node_state_counts.preparing_node_count == nodes
            and len(_wrappers(server.state_dir)) == nodes
        )
    )


def _wrappers(state_dir: Path) -> list[int]:
    return [
        pid
        for pid in processes_under(state_dir)
        if b"nodeagent.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def _job_command_started(state_dir: Path) -> bool:
    """True once a job's node agent has started its command (its execution.log says so)."""
    return any(
        "Job started as process" in log.read_text()
        for log in (state_dir / "shares").rglob("execution.log")
    )


def _gone(get) -> str | None:
    try:
        get()
    except CloudError as err:
        return "gone" if err.status_code == 404 else None
    return None


def _processes_left(state_dir: Path, timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while processes_under(state_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_under(state_dir)


def _tear_down(c: Clients, server: Server, result: Result) -> None:
    c.resources.resource_groups.delete(RG).result()
    if _processes_left(server.state_dir):
        result.problems.append("a process outlived its deleted resource group")
    server.stop()


SCENARIOS = [
    (parallel_upload, "put-range.journaled:3"),
    (parallel_upload, "put-range.copying:6"),
    (parallel_upload, "external"),
    (job_launch, "job-launch.before-start"),
    (job_launch, "job-launch.started"),
    (job_delete, "job-stop.marked"),
    (job_delete, "job-stop.stopped"),
    (group_delete, "group-delete.marked"),
    (group_delete, "job-stop.marked"),
    (group_delete, "group-delete.stopped"),
    (cluster_resize, "setup-task.started"),
    (cluster_resize, "setup-task.stopping"),
]


def run(scenario, crash_at: str, state_dir: Path) -> Result:
    """One scenario on a fresh state directory; kills whatever it left (and says so)."""
    server = Server(state_dir)
    try:
        result = scenario(server, crash_at)
    finally:
        server.kill()
        for pid in processes_under(state_dir):
            os.kill(pid, signal.SIGKILL)
    verdict = integrity(state_dir)
    if verdict != "ok":
        result.problems.append(f"SQLite integrity_check: {verdict}")
    return result
