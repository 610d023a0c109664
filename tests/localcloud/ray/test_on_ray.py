"""The local cloud on a real Ray cluster of two nodes on this host (issue 15), driven by the
real SDK clients over HTTPS: the tutorial's job, a 2-node PyTorch rendezvous, a cluster that
waits for Ray nodes, a restart that reattaches, a Ray node that dies under its job, and a Ray
node that cannot see the shares or cannot run the shares' check at all."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import azure.mgmt.batchai.models as models
import pytest

from quickstart.localcloud import LocalCloud
from tests.localcloud.batchai.test_batchai import (  # noqa: F401 (no_job_process_left: autouse)
    CLUSTER,
    EXP,
    RG,
    WS,
    cluster_params,
    job_params,
    no_job_process_left,
    output_file,
    sdk_env,
    wait_for,
    wait_for_job,
)
from tests.localcloud.batchai.test_multinode import GLOO_RANK, SLEEPER, alive, rank_file, upload
from tests.localcloud.ray.conftest import BUNDLES, NODE
from tests.test_end_to_end import user_env

WAIT = 120  # a shared 2-core machine starts Ray workers slowly
REPO = Path(__file__).resolve().parents[3]


def ray_options(ray_cluster) -> dict:
    return {
        "compute": "ray",
        "ray_address": ray_cluster.address,
        "ray_bundles": BUNDLES,
        "cluster_allocation_delay": 0.1,
    }


@pytest.fixture
def ray_cloud(ray_cluster, tmp_path):
    """A local cloud on the Ray cluster; afterwards nothing of it is left on Ray."""
    cloud = LocalCloud(tmp_path / "localcloud", port=0, **ray_options(ray_cluster)).start()
    try:
        yield cloud
    finally:
        cloud.stop()
        forget_everything_on_ray(ray_cluster)


def forget_everything_on_ray(ray_cluster) -> None:
    """Remove the placement groups and actors the local cloud left (clusters outlive it)."""
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table

    ray.init(address=ray_cluster.address, namespace="quickstart-localcloud")
    try:
        for entry in placement_group_table().values():
            if (entry.get("name") or "").startswith("batchai-") and entry["state"] != "REMOVED":
                group_id = ray.PlacementGroupID(bytes.fromhex(entry["placement_group_id"]))
                ray.util.remove_placement_group(PlacementGroup(group_id))
    finally:
        ray.shutdown()


def live_groups(cluster_uid: str) -> list:
    """The cluster's placement groups that Ray still holds."""
    from ray.util.placement_group import placement_group_table

    return [
        entry
        for entry in placement_group_table().values()
        if entry["name"].startswith(f"batchai-cluster-{cluster_uid}-")
        and entry["state"] != "REMOVED"
    ]


def submit_pytorch(env, name: str, script: str, args: str, nodes: int = 2) -> None:
    pytorch = models.PyTorchSettings(
        python_script_file_path=script, command_line_args=args, communication_backend="gloo"
    )
    params = job_params(env.cluster.id, node_count=nodes, py_torch_settings=pytorch)
    env.client.jobs.create(RG, WS, EXP, name, params).result()


def job_record(env, name: str):
    job = env.client.jobs.get(RG, WS, EXP, name)
    return env.cloud.context.store.get_resource(job.id)


def test_a_two_node_pytorch_job_rendezvouses_across_the_two_ray_nodes(ray_cloud, tmp_path):
    env = sdk_env(ray_cloud, tmp_path, nodes=2)
    script = upload(env, "gloo_rank.py", GLOO_RANK, tmp_path)
    submit_pytorch(env, "gloo", script, "2")
    job = wait_for_job(env.client, "gloo", timeout=WAIT)
    assert job.execution_state == "succeeded", job.execution_info.errors
    lines = [
        output_file(env, "gloo", "stdouterr", f"stdout-{i}.txt").read_text().split() for i in (0, 1)
    ]
    assert [(line[1], line[3]) for line in lines] == [("0", "3"), ("1", "3")]
    handle = job_record(env, "gloo").extra["handle"]
    cluster = env.cloud.context.store.get_resource(env.cluster.id.lower())
    assert handle["backend"] == "ray" and len(set(handle["ray_nodes"])) == 2, (
        cluster.extra["compute"],
        handle,
    )  # STRICT_SPREAD: one Batch AI node per Ray node
    logs = {
        f.name
        for f in env.client.jobs.list_output_files(
            RG, WS, EXP, "gloo", models.JobsListOutputFilesOptions(outputdirectoryid="stdouterr")
        )
    }
    assert len([n for n in logs if n.startswith("execution-")]) == 2
    nodes = env.client.clusters.list_remote_login_information(RG, WS, CLUSTER)
    assert [n.ip_address for n in nodes] == ["127.0.0.1", "127.0.0.1"]  # the Ray nodes' own
    counts = env.client.clusters.get(RG, WS, CLUSTER).node_state_counts
    assert (counts.idle_node_count, counts.running_node_count) == (2, 0)


COUNTER = """\
import sys, time
for i in range(int(sys.argv[1])):
    print("line", i, flush=True)
    time.sleep(0.25)
"""


def test_a_restarted_local_cloud_finds_its_ray_job_again_and_follows_it(
    ray_cluster, ray_cloud, tmp_path
):
    env = sdk_env(ray_cloud, tmp_path, nodes=1)
    script = upload(env, "counter.py", COUNTER, tmp_path)
    params = job_params(env.cluster.id, f"python {script} 60")
    env.client.jobs.create(RG, WS, EXP, "counter", params).result()
    stdout = output_file(env, "counter", "stdouterr", "stdout.txt")
    wait_for(lambda: stdout.exists() and "line 1" in stdout.read_text(), WAIT)
    ray_cloud.stop()  # the server goes; the job, a detached actor, runs on
    seen = stdout.read_text().count("line")
    time.sleep(1)
    assert stdout.read_text().count("line") > seen
    ray_cloud.start()  # the same state directory, Ray and options: it follows the job
    assert env.client.jobs.get(RG, WS, EXP, "counter").execution_state == "running"
    ray_cloud.stop()
    # A server taking the state directory over without --compute ray (as standby.py does)
    # follows the Ray job too, through the address its handle keeps.
    with LocalCloud(ray_cloud.state_dir, port=0) as taken_over:
        assert taken_over.base_url == env.connection["resource_manager_url"].rstrip("/")
        assert "line 59" not in stdout.read_text()  # still running when taken over
        job = wait_for_job(env.client, "counter", timeout=WAIT)
    assert job.execution_state == "succeeded" and job.execution_info.exit_code == 0
    assert stdout.read_text().count("line") == 60
    ray_cloud.start()  # for the fixture to stop


def quickstart(cwd, env: dict, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m quickstart ARGS`` as a user runs it; stdout and stderr together."""
    return subprocess.run(
        [sys.executable, "-m", "quickstart", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def serving(cwd: Path, env: dict, state: Path, *options):
    """``python -m quickstart localcloud`` in the background until the block ends; yields
    what it printed up to "serving". Its output goes to a file: a pipe nobody reads would
    fill with its access log and block it."""
    log = cwd / "localcloud.out"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "quickstart", "localcloud", "--state-dir", str(state), *options],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "Local cloud serving at" in log.read_text() or server.poll(), WAIT)
        yield log.read_text()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def test_the_tutorial_runs_on_ray_and_its_epoch_lines_stream(ray_cluster, tmp_path):
    state = tmp_path / "state"
    env = {**user_env(), "QUICKSTART_RAY_BUNDLES": BUNDLES}
    try:
        with serving(
            tmp_path, env, state, "--compute", "ray", "--ray-address", ray_cluster.address
        ) as head:
            assert "Compute: ray (the Ray cluster at " in head, head
            run = quickstart(tmp_path, env, "run", "--epochs", "1", "--state-dir", str(state))
            output = run.stdout
            assert run.returncode == 0, output
            assert re.search(r"^\d\d:\d\d:\d\d Job state: running$", output, re.M)
            assert "Finished Epoch[1 of 1]" in output  # streamed from stderr.txt while it ran
            threads = re.search(r"^Selected CPU \((\d+) threads?\)", output, re.M)
            assert threads and int(threads[1]) == len(os.sched_getaffinity(0))  # not Ray's 1
            assert re.search(r"^Final test error: \d+\.\d\d% on 10,000 test images$", output, re.M)
            (job,) = re.findall(r"^Job (cntk_\S+) submitted$", output, re.M)
            execution = (tmp_path / "outputs" / job / "stdouterr" / "execution.log").read_text()
            assert "of Ray placement group batchai-cluster-" in execution
            assert "This Ray cluster has no GPUs, so the job runs on CPU" in execution
            teardown = quickstart(tmp_path, env, "teardown", "--state-dir", str(state))
            assert teardown.returncode == 0, teardown.stdout
    finally:
        forget_everything_on_ray(ray_cluster)


def test_a_cluster_larger_than_ray_shows_the_allocation_error_and_grows_when_a_node_joins(
    ray_cluster, ray_cloud, tmp_path
):
    env = sdk_env(ray_cloud, tmp_path, nodes=1)
    env.client.clusters.update(
        RG,
        WS,
        CLUSTER,
        scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=3)),
    )
    cluster = wait_for(
        lambda: (lambda c: c if c.errors else None)(env.client.clusters.get(RG, WS, CLUSTER)),
        WAIT,
    )
    assert cluster.allocation_state == "resizing"
    (error,) = cluster.errors
    assert error.code == "AllocationFailed"
    assert "the Ray cluster has 2 live node(s), 2 of them with 1 CPU" in error.message
    assert "It needs 1 more Ray node(s) with 1 CPU" in error.message
    third = ray_cluster.cluster.add_node(**NODE)
    try:
        cluster = wait_for(
            lambda: (lambda c: c if c.node_state_counts.idle_node_count == 3 else None)(
                env.client.clusters.get(RG, WS, CLUSTER)
            ),
            WAIT,
        )
        assert cluster.allocation_state == "steady" and not cluster.errors
        assert cluster.current_node_count == 3
        # terminate stops every process of a running job on its Ray node
        script = upload(env, "sleeper.py", SLEEPER, tmp_path)
        params = job_params(env.cluster.id, f"python {script}")
        env.client.jobs.create(RG, WS, EXP, "stopped", params).result()
        models_dir = output_file(env, "stopped", "MODEL", "x").parent
        pid = wait_for(lambda: rank_file(models_dir, 0, "pid"), WAIT)
        env.client.jobs.terminate(RG, WS, EXP, "stopped").result()
        job = wait_for_job(env.client, "stopped", timeout=WAIT)
        assert job.execution_state == "failed" and job.execution_info.errors
        wait_for(lambda: not alive(pid), 30)
        # delete releases the cluster's bundles: its placement group goes
        uid = env.cloud.context.store.get_resource(env.cluster.id.lower()).extra["compute"]["uid"]
        assert live_groups(uid)
        env.client.clusters.delete(RG, WS, CLUSTER).result()
        wait_for(lambda: not live_groups(uid), 30)
    finally:
        ray_cluster.cluster.remove_node(third)


def test_killing_a_ray_node_fails_its_job_and_frees_the_other_node(
    ray_cluster, ray_cloud, tmp_path
):
    env = sdk_env(ray_cloud, tmp_path, nodes=2)
    script = upload(env, "sleeper.py", SLEEPER, tmp_path)
    submit_pytorch(env, "victim", script, "")
    models_dir = output_file(env, "victim", "MODEL", "x").parent
    pids = wait_for(
        lambda: (
            [rank_file(models_dir, i, "pid") for i in (0, 1)]
            if all(rank_file(models_dir, i, "pid") for i in (0, 1))
            else None
        ),
        WAIT,
    )
    ray_cluster.cluster.remove_node(ray_cluster.second, allow_graceful=False)
    job = wait_for_job(env.client, "victim", timeout=WAIT)
    assert job.execution_state == "failed"
    (error,) = job.execution_info.errors
    assert error.code == "InternalError" and "became unusable" in error.message, error.message
    wait_for(lambda: not any(alive(pid) for pid in pids), 30)
    counts = env.client.clusters.get(RG, WS, CLUSTER).node_state_counts
    assert counts.running_node_count == 0


def live_ray_nodes() -> set:
    import ray

    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def processes_in(mount_namespace: str) -> list:
    """Live processes in a mount namespace (``/proc/PID/ns/mnt`` reads ``mnt:[inode]``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/mnt") != mount_namespace:
                continue
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


@contextlib.contextmanager
def blind_ray_node(ray_cluster, hidden: Path | None, log: Path, env: dict | None = None):
    """One more one-CPU Ray node, joined with ``ray start --block`` from its own mount namespace
    where ``hidden`` (if given) is an empty tmpfs: the same path as the local cloud's state
    directory, not the same filesystem. ``env`` adds to its environment. Yields its Ray node ID
    (``id``), how many live Ray nodes there are with it (``count``), its view of the filesystem
    (``root``, through /proc) and a process in its namespace (``pid``).
    Afterwards its processes are gone and Ray has marked it dead."""
    known = live_ray_nodes()
    mount = '{ [ -z "$1" ] || mount -t tmpfs tmpfs "$1"; } && shift && exec "$@"'
    argv = [
        *("unshare", "--mount", "--propagation", "private"),
        *("sh", "-c", mount, "sh", str(hidden or "")),
        *(str(Path(sys.executable).with_name("ray")), "start", "--block", "--disable-usage-stats"),
        *("--address", ray_cluster.address, "--temp-dir", ray_cluster.temp),
        *("--num-cpus", str(NODE["num_cpus"])),
        *("--object-store-memory", str(NODE["object_store_memory"])),
        *("--min-worker-port", "0", "--max-worker-port", "0", "--dashboard-agent-listen-port", "0"),
    ]
    with open(log, "w") as out:
        node = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    blind, namespace = None, None
    try:
        joined = wait_for(lambda: node.poll() is not None or live_ray_nodes() - known, WAIT)
        assert node.poll() is None, log.read_text()[-3000:]
        (blind,) = joined
        namespace = os.readlink(f"/proc/{node.pid}/ns/mnt")
        assert namespace != os.readlink("/proc/self/ns/mnt")
        # Ray marks a node it lost a test ago dead only after missed heartbeats: wait for that,
        # so that the count is of the nodes that really live (the head, the Cluster's, this one).
        count = 1 + len(ray_cluster.cluster.worker_nodes) + 1
        wait_for(lambda: len(live_ray_nodes()) == count, WAIT)
        yield SimpleNamespace(
            id=blind, count=count, root=Path(f"/proc/{node.pid}/root"), pid=node.pid
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGTERM)  # the raylet leaves the cluster, Ray notes it
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)
        if blind is not None:
            wait_for(lambda: blind not in live_ray_nodes(), WAIT)
        if namespace is not None:
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not processes_in(namespace), 30)
            left = processes_in(namespace)
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            assert not left, f"processes of the blind Ray node left running: {left}"


def assert_the_cluster_reports_azfmounterror(env, name: str, blind) -> None:
    """A cluster with one Batch AI node on every live Ray node (STRICT_SPREAD), so one lands on
    the blind one: all its nodes turn unusable and it names that node and the share's folder.
    Then it is deleted and its placement group goes."""
    params = cluster_params(env.connection, env.files, blind.count)
    env.client.clusters.create(RG, WS, name, params).result()
    cluster = wait_for(
        lambda: (lambda c: c if c.node_state_counts.unusable_node_count == blind.count else None)(
            env.client.clusters.get(RG, WS, name)
        ),
        WAIT,
    )
    assert cluster.allocation_state == "steady" and cluster.current_node_count == blind.count
    assert cluster.node_state_counts.idle_node_count == 0
    (error,) = cluster.errors
    assert error.code == "AZFMountError", error.message
    assert error.message.startswith("Unable to mount Azure File share 'batchaiquickstart': ")
    # named by its address and its Ray node ID, alone: the other nodes see the share
    assert (
        f"the node(s) at 127.0.0.1 (Ray node {blind.id}) cannot see the share's folder "
        f"{env.share_dir}; every node must see the local cloud's state directory at the "
        "same path (a shared filesystem)"
    ) in error.message
    (info,) = error.details
    assert info.name == "Info"
    assert info.value.endswith("/batchaiquickstart at $AZ_BATCHAI_MOUNT_ROOT/azurefileshare")
    uid = env.cloud.context.store.get_resource(cluster.id.lower()).extra["compute"]["uid"]
    assert live_groups(uid)
    env.client.clusters.delete(RG, WS, name).result()
    wait_for(lambda: not live_groups(uid), 30)


def test_a_ray_node_that_cannot_see_the_state_directory_makes_the_cluster_report_azfmounterror(
    ray_cluster, ray_cloud, tmp_path
):
    env = sdk_env(ray_cloud, tmp_path, nodes=0)
    with blind_ray_node(ray_cluster, Path(ray_cloud.state_dir), tmp_path / "blind.log") as blind:
        assert_the_cluster_reports_azfmounterror(env, "blind", blind)
        # The same path with the share's folder in it, on another filesystem (an NFS export
        # that is not mounted, a folder made by hand): only the server's marker tells. The
        # folder is made in the blind node's tmpfs through its root as /proc shows it.
        (blind.root / env.share_dir.relative_to("/")).mkdir(parents=True)
        assert_the_cluster_reports_azfmounterror(env, "lookalike", blind)


def in_namespace_of(node, *argv: str) -> None:
    """Run ``argv`` in the Ray node's mount namespace (``nsenter``), as root there."""
    subprocess.run(["nsenter", "-t", str(node.pid), "-m", *argv], check=True, timeout=30)


def test_a_ray_node_that_runs_no_check_keeps_the_cluster_resizing_with_an_error_naming_it(
    ray_cluster, ray_cloud, tmp_path, monkeypatch
):
    """A Ray node that cannot start a Ray worker (its Python cannot find Ray's worker script:
    as if its environment were hidden) never runs the cluster's mount check. The cluster stays
    ``resizing`` with ``AllocationFailed`` naming that node and what to check; once the node can
    start workers again the cluster turns ``steady`` and the error goes. The node's raylet waits
    ``RAY_worker_register_timeout_seconds`` for a worker that never registers before it starts
    another; shortened here, as is the local cloud's CHECK_TIMEOUT (in this process)."""
    import ray._private.workers

    from quickstart.localcloud.batchai.backends import ray_backend

    monkeypatch.setattr(ray_backend, "CHECK_TIMEOUT", 5.0)
    workers = str(Path(ray._private.workers.__file__).parent)
    env = sdk_env(ray_cloud, tmp_path, nodes=0)
    quick = {"RAY_worker_register_timeout_seconds": "10"}
    with blind_ray_node(ray_cluster, None, tmp_path / "silent.log", env=quick) as silent:
        in_namespace_of(silent, "mount", "-t", "tmpfs", "tmpfs", workers)
        params = cluster_params(env.connection, env.files, silent.count)
        env.client.clusters.create(RG, WS, "silent", params).result()
        named = f"127.0.0.1 (Ray node {silent.id})"
        cluster = wait_for(
            lambda: (lambda c: c if any(named in e.message for e in c.errors or []) else None)(
                env.client.clusters.get(RG, WS, "silent")
            ),
            WAIT,
        )
        assert cluster.allocation_state == "resizing" and cluster.current_node_count == 0
        (error,) = cluster.errors
        assert error.code == "AllocationFailed", error.message
        assert error.message.startswith(
            f"Allocation failed: Ray placed the cluster's {silent.count} node(s), but the check "
            "that each node sees the shares (a small Ray task in its bundle) did not answer "
            "within 5 s on "
        )
        assert (
            "(ray list nodes) and runs Python with the same Ray as the local cloud and can "
            "start Ray workers"
        ) in error.message
        assert error.message.endswith("the cluster keeps trying.")
        (unanswered,) = error.details
        assert unanswered.name == "Unanswered" and named in unanswered.value
        in_namespace_of(silent, "umount", workers)  # the node can start workers again
        cluster = wait_for(
            lambda: (lambda c: c if c.node_state_counts.idle_node_count == silent.count else None)(
                env.client.clusters.get(RG, WS, "silent")
            ),
            WAIT,
        )
        assert cluster.allocation_state == "steady" and not cluster.errors
        uid = env.cloud.context.store.get_resource(cluster.id.lower()).extra["compute"]["uid"]
        env.client.clusters.delete(RG, WS, "silent").result()
        wait_for(lambda: not live_groups(uid), 30)
