"""Jobs over several nodes, as Batch AI ran them (docs/distributed-jobs.md), driven by the real
azure-mgmt-batchai client over HTTPS: PyTorch gloo ranks that all-reduce, MPI ranks on the
hostfile's nodes, TensorFlow roles with TF_CONFIG, and one node's process dying.

One local cloud serves the whole module. The jobs that only have to succeed (gloo, MPI, TF)
each get a two-node cluster of their own and are submitted together, so the slow one (two
ranks importing torch) runs while the other tests use "mycluster", one after the other: those
need its two nodes to themselves (a second job must queue) and, after each, none of its jobs'
processes left on its nodes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import azure.mgmt.batchai.models as models
import pytest

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.batchai import launch_plans
from quickstart.localcloud.batchai.nodeagent import PlanError
from tests.localcloud.batchai.test_batchai import (
    CLUSTER,
    EXP,
    RG,
    WS,
    cluster_params,
    job_params,
    output_file,
    processes_under,
    sdk_env,
    wait_for,
    wait_for_idle_cluster,
    wait_for_job,
)

# Generous: the machine these run on is shared, and a busy one starts processes slowly.
WAIT = 90
needs_mpirun = pytest.mark.skipif(
    shutil.which("mpirun") is None, reason="mpirun missing: apt-get install openmpi-bin"
)

GLOO_RANK = """\
import os, sys, torch, torch.distributed as dist
dist.init_process_group(
    os.environ["AZ_BATCHAI_PYTORCH_BACKEND"],
    init_method=os.environ["AZ_BATCHAI_PYTORCH_INIT_METHOD"],
    world_size=int(sys.argv[1]),
    rank=int(os.environ["AZ_BATCHAI_TASK_INDEX"]),
)
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
print("rank", dist.get_rank(), "sum", int(value.item()), "temp", os.environ["AZ_BATCHAI_JOB_TEMP"])
dist.destroy_process_group()
"""
TF_ROLE = """\
import json, os, socket, time
config = json.loads(os.environ["TF_CONFIG"])
print(json.dumps(config, sort_keys=True), flush=True)
print("ps", os.environ["AZ_BATCHAI_PS_HOSTS"], "workers", os.environ["AZ_BATCHAI_WORKER_HOSTS"])
if config["task"]["type"] == "ps":  # serve on its address until stopped (server.join())
    host, port = config["cluster"]["ps"][config["task"]["index"]].split(":")
    server = socket.create_server((host, int(port)))
    while True:
        server.accept()[0].close()
for address in config["cluster"]["ps"]:  # a worker starts once every ps answers
    host, port = address.split(":")
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
"""
SLEEPER = """\
import os, time
with open(os.path.join(os.environ["AZ_BATCHAI_OUTPUT_MODEL"], "pid-" + os.environ["AZ_BATCHAI_TASK_INDEX"]), "w") as f:
    f.write(str(os.getpid()))
time.sleep(600)
"""


# The jobs that run side by side, each on its own two-node cluster named after it.
SIDE_JOBS = ("gloo", "mpi", "tf")


def assert_no_process_under(folders) -> None:
    """Wait up to 10 s for the processes working in ``folders`` to end; kill and fail if any."""
    left = []
    for _ in range(200):
        left = [pid for folder in folders for pid in processes_under(folder)]
        if not left:
            return
        time.sleep(0.05)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"job processes left behind: {left}")


@pytest.fixture(scope="module")
def cloud_env(tmp_path_factory):
    """The local cloud of this module: "mycluster" and one cluster per side job, two nodes
    each, the share mounted, an experiment. Afterwards no process of any job may be left."""
    folder = tmp_path_factory.mktemp("multinode")
    cloud = LocalCloud(folder / "localcloud", port=0, cluster_allocation_delay=0.1)
    cloud.start()
    try:
        env = sdk_env(cloud, folder, nodes=2)
        for name in SIDE_JOBS:
            params = cluster_params(env.connection, env.files, 2)
            env.client.clusters.create(RG, WS, name, params).result()
        for name in SIDE_JOBS:
            wait_for_idle_cluster(env.client, 2, name)
        env.folder = folder
        yield env
    finally:
        cloud.stop()
    assert_no_process_under([folder])


@pytest.fixture(scope="module")
def side_jobs(cloud_env):
    """Submits the gloo, MPI and TensorFlow jobs at once, each to its own cluster."""
    env, folder = cloud_env, cloud_env.folder
    gloo = models.PyTorchSettings(
        python_script_file_path=upload(env, "gloo_rank.py", GLOO_RANK, folder),
        command_line_args="2",
        communication_backend="gloo",
    )
    submit(env, "gloo", cluster="gloo", py_torch_settings=gloo)
    report = (
        "echo rank $OMPI_COMM_WORLD_RANK of $OMPI_COMM_WORLD_SIZE"
        ' entry "$(sed -n "$((AZ_BATCHAI_TASK_INDEX + 1))p" "$AZ_BATCHAI_MPI_HOST_FILE")"'
        " temp $AZ_BATCHAI_JOB_TEMP"
    )
    mpi = models.CustomMpiSettings(command_line=f"sh -c '{report}'", process_count=2)
    if shutil.which("mpirun"):  # else its test is skipped
        submit(env, "mpi", cluster="mpi", custom_mpi_settings=mpi)
    tf = models.TensorFlowSettings(
        python_script_file_path=upload(env, "tf_role.py", TF_ROLE, folder),
        worker_count=2,
        parameter_server_count=1,
    )
    submit(env, "tf", cluster="tf", tensor_flow_settings=tf)
    return env


@pytest.fixture
def env2(cloud_env):
    """ "mycluster" idle with its two nodes; afterwards none of its jobs' processes left."""
    wait_for(lambda: cluster_counts(cloud_env) == (2, 0), timeout=WAIT)
    yield cloud_env
    compute = cloud_env.folder / "localcloud" / "compute" / "nodes"
    assert_no_process_under([compute / node for node in cluster_node_ids(cloud_env)])


def upload(env, name: str, text: str, tmp_path) -> str:
    path = tmp_path / name
    path.write_text(text)
    env.files.create_file_from_path("batchaiquickstart", "mnistcntksample", name, str(path))
    return f"$AZ_BATCHAI_INPUT_SAMPLE/{name}"


def submit(env, name: str, node_count: int = 2, cluster: str = CLUSTER, **toolkit):
    cluster_id = f"{env.cluster.id.rsplit('/', 1)[0]}/{cluster}"
    params = job_params(cluster_id, node_count=node_count, **toolkit)
    env.client.jobs.create(RG, WS, EXP, name, params).result()


def stdouterr(env, job: str, name: str) -> str:
    return output_file(env, job, "stdouterr", name).read_text()


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has ended; it only waits to be collected)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def rank_file(folder, rank: int, prefix: str = "rank") -> int:
    """The pid a rank wrote, or 0 while its file is missing or still empty."""
    try:
        return int((folder / f"{prefix}-{rank}").read_text().strip() or 0)
    except FileNotFoundError:
        return 0


def cluster_counts(env, cluster: str = CLUSTER):
    counts = env.client.clusters.get(RG, WS, cluster).node_state_counts
    return counts.idle_node_count, counts.running_node_count


def cluster_node_ids(env, cluster: str = CLUSTER) -> list:
    """The cluster's node ids (a two-node job on a two-node cluster uses both)."""
    return [n.node_id for n in env.client.clusters.list_remote_login_information(RG, WS, cluster)]


@needs_mpirun
def test_mpi_ranks_run_on_the_nodes_of_the_hostfile_batch_ai_wrote(side_jobs):
    env = side_jobs
    job = wait_for_job(env.client, "mpi", timeout=WAIT)
    assert job.execution_state == "succeeded", stdouterr(env, "mpi", "stderr.txt")
    assert job.tool_type == "mpi"
    ranks = sorted(line for line in stdouterr(env, "mpi", "stdout.txt").splitlines() if line)
    assert [r.split(" entry ")[0] for r in ranks] == ["rank 0 of 2", "rank 1 of 2"]
    entries = [r.split(" entry ")[1].split(" temp ")[0] for r in ranks]
    assert entries == ["127.0.0.4 slots=1", "127.0.0.5 slots=1"]
    assert len({r.split(" temp ")[1] for r in ranks}) == 2
    assert cluster_counts(env, "mpi") == (2, 0)


def test_tensorflow_roles_get_tf_config_and_parameter_servers_stop_after_the_workers(side_jobs):
    env = side_jobs
    job = wait_for_job(env.client, "tf", timeout=WAIT)
    assert job.execution_state == "succeeded", stdouterr(env, "tf", "stderr-wk-0.txt")
    configs = {
        name: json.loads(stdouterr(env, "tf", f"stdout-{name}.txt").splitlines()[0])
        for name in ("wk-0", "wk-1", "ps-0")
    }
    assert {n: (c["task"]["type"], c["task"]["index"]) for n, c in configs.items()} == {
        "wk-0": ("worker", 0),
        "wk-1": ("worker", 1),
        "ps-0": ("ps", 0),
    }
    cluster = configs["wk-0"]["cluster"]
    assert all(c["cluster"] == cluster for c in configs.values())
    assert [h.split(":")[0] for h in cluster["worker"]] == ["127.0.0.4", "127.0.0.5"]
    assert [h.split(":")[0] for h in cluster["ps"]] == ["127.0.0.4"]
    hosts = stdouterr(env, "tf", "stdout-wk-1.txt").splitlines()[1]
    assert hosts == f"ps {cluster['ps'][0]} workers {','.join(cluster['worker'])}"
    assert cluster_counts(env, "tf") == (2, 0)


def test_one_node_dying_fails_the_job_stops_the_other_and_frees_both_nodes(env2, tmp_path):
    script = upload(env2, "sleeper.py", SLEEPER, tmp_path)
    submit(env2, "doomed", py_torch_settings=models.PyTorchSettings(python_script_file_path=script))
    models_dir = output_file(env2, "doomed", "MODEL", "x").parent
    wait_for(lambda: all(rank_file(models_dir, i, "pid") for i in (0, 1)), timeout=WAIT)
    pids = [rank_file(models_dir, i, "pid") for i in (0, 1)]
    assert cluster_counts(env2) == (0, 2)
    submit(
        env2,
        "waiting",
        node_count=1,
        custom_toolkit_settings=models.CustomToolkitSettings(command_line="echo ran"),
    )
    assert env2.client.jobs.get(RG, WS, EXP, "waiting").execution_state == "queued"
    os.kill(pids[1], signal.SIGKILL)
    job = wait_for_job(env2.client, "doomed", timeout=WAIT)
    assert job.execution_state == "failed" and job.execution_info.exit_code == 128 + signal.SIGKILL
    error = job.execution_info.errors[0]
    assert error.code == "JobFailed"
    assert "process 1 on node" in error.message and "stderr-1.txt" in error.message
    wait_for(lambda: not alive(pids[0]), timeout=10)
    assert wait_for_job(env2.client, "waiting").execution_state == "succeeded"
    wait_for(lambda: cluster_counts(env2) == (2, 0), timeout=WAIT)


@needs_mpirun
def test_terminating_an_mpi_job_stops_every_rank_and_frees_the_nodes(env2):
    settings = models.CustomMpiSettings(
        command_line='sh -c \'echo $$ > "$AZ_BATCHAI_OUTPUT_MODEL/rank-$OMPI_COMM_WORLD_RANK"; '
        "exec sleep 600'",
        process_count=2,
    )
    submit(env2, "long", custom_mpi_settings=settings)
    submit(env2, "queued", custom_mpi_settings=settings)
    models_dir = output_file(env2, "long", "MODEL", "x").parent
    wait_for(lambda: all(rank_file(models_dir, i) for i in (0, 1)), timeout=WAIT)
    ranks = [rank_file(models_dir, i) for i in (0, 1)]
    assert env2.client.jobs.get(RG, WS, EXP, "queued").execution_state == "queued"
    env2.client.jobs.terminate(RG, WS, EXP, "long").result()
    assert not any(alive(pid) for pid in ranks)
    assert env2.client.jobs.get(RG, WS, EXP, "long").execution_state == "failed"
    wait_for(
        lambda: env2.client.jobs.get(RG, WS, EXP, "queued").execution_state == "running",
        timeout=WAIT,
    )
    env2.client.jobs.delete(RG, WS, EXP, "queued").result()
    wait_for(lambda: cluster_counts(env2) == (2, 0), timeout=WAIT)


@needs_mpirun
def test_an_mpi_rank_failing_fails_the_job_with_its_code_and_stops_the_others(env2):
    settings = models.CustomMpiSettings(
        command_line="sh -c '[ $OMPI_COMM_WORLD_RANK = 1 ] && exit 3; exec sleep 600'",
        process_count=2,
    )
    submit(env2, "rankfails", custom_mpi_settings=settings)
    job = wait_for_job(env2.client, "rankfails", timeout=WAIT)
    assert job.execution_state == "failed" and job.execution_info.exit_code == 3
    assert job.execution_info.errors[0].code == "JobFailed"
    wait_for(lambda: cluster_counts(env2) == (2, 0), timeout=WAIT)


def test_on_a_host_without_mpirun_the_job_fails_saying_what_to_install(env2, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # the local cloud runs in this process
    settings = models.CustomMpiSettings(command_line="echo never", process_count=2)
    submit(env2, "nompi", custom_mpi_settings=settings)
    job = wait_for_job(env2.client, "nompi")
    assert job.execution_state == "failed" and job.execution_info.exit_code == -1
    message = job.execution_info.errors[0].message
    assert "apt-get install openmpi-bin" in message and "\n" not in message
    assert cluster_counts(env2) == (2, 0)


def test_without_mpirun_an_mpi_job_fails_with_one_line_naming_the_package():
    with pytest.raises(PlanError) as caught:
        launch_plans.mpi_command("python train.py", 2, mpirun=None)
    assert "\n" not in caught.value.message
    assert "apt-get install openmpi-bin" in caught.value.message


def test_hostfile_spreads_ranks_over_the_nodes_earlier_nodes_first():
    nodes = [
        launch_plans.JobNode(f"n{i}", launch_plans.node_address(i + 1), "/t") for i in range(2)
    ]
    assert launch_plans.hostfile(nodes, 5) == "127.0.0.4 slots=3\n127.0.0.5 slots=2\n"
    assert launch_plans.hostfile(nodes, 1) == "127.0.0.4 slots=1\n127.0.0.5 slots=1\n"


@pytest.mark.parametrize(
    "addresses, interface",
    [(["127.0.0.4", "127.0.0.5"], "lo"), (["10.0.0.4", "10.0.0.5"], None)],
)
def test_gloo_is_held_to_loopback_only_when_every_node_is_on_this_host(addresses, interface):
    nodes = [launch_plans.JobNode(f"n{i}", a, "/t") for i, a in enumerate(addresses)]
    tasks = launch_plans._pytorch_tasks({}, nodes, "python train.py", "/shared", mpirun=None)
    assert [t.env.get("GLOO_SOCKET_IFNAME") for t in tasks] == [interface, interface]


def test_each_nodes_mpi_daemon_keeps_its_session_folder_in_its_own_job_temp(tmp_path):
    """Open MPI's daemons of one job must not share a session folder on this host: they would
    remove and overwrite each other's files (mpirun exiting 213, or 139 from inside hwloc)."""
    nodes = []
    for i in (1, 2):
        (tmp_path / f"node{i}").mkdir()
        nodes.append(
            launch_plans.JobNode(f"n{i}", launch_plans.node_address(i), str(tmp_path / f"node{i}"))
        )
    agent = tmp_path / "agent"
    agent.write_text(launch_plans.rsh_agent(nodes))
    agent.chmod(0o755)
    seen = [
        subprocess.run(
            [str(agent), "-x", node.address, 'echo "$PWD $OMPI_MCA_orte_tmpdir_base"'],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for node in nodes
    ]
    assert seen == [[n.job_temp, os.path.join(n.job_temp, "openmpi")] for n in nodes]


def test_pytorch_gloo_ranks_on_two_nodes_all_reduce_and_agree(side_jobs):
    """Last in the module: its ranks import torch while the tests above run."""
    env = side_jobs
    job = wait_for_job(env.client, "gloo", timeout=WAIT)
    assert job.execution_state == "succeeded", stdouterr(env, "gloo", "stderr-1.txt")
    assert job.tool_type == "pytorch" and job.py_torch_settings.process_count == 2
    lines = [stdouterr(env, "gloo", f"stdout-{i}.txt").split() for i in (0, 1)]
    assert [(line[1], line[3]) for line in lines] == [("0", "3"), ("1", "3")]
    assert lines[0][5] != lines[1][5]  # each node its own job temp
    names = {
        f.name
        for f in env.client.jobs.list_output_files(
            RG, WS, EXP, "gloo", models.JobsListOutputFilesOptions(outputdirectoryid="stdouterr")
        )
    }
    assert {"stdout-0.txt", "stderr-1.txt"} <= names
    assert {n for n in names if n.startswith("execution")} == {
        f"execution-{node}.log" for node in cluster_node_ids(env, "gloo")
    }
    assert cluster_counts(env, "gloo") == (2, 0)
