"""How each toolkit's processes are laid out over a job's nodes, as Batch AI launched them.

Pure planning (nothing is started here): from the job's toolkit settings and the nodes the
scheduler gave it, the list of tasks the node agent starts (command line, the environment
that differs per node or task, which ``stdouterr`` files it writes, whether the job waits for
it), the per-node hostfile Batch AI wrote for MPI, and the small remote-shell agent that lets
Open MPI reach the other "nodes" of this host. The facts and assumptions behind every choice
are in ``docs/distributed-jobs.md`` (section 7 is the plan followed here).

Standard library only, like the node agent that uses it (whose PlanError it raises).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import socket
from dataclasses import asdict, dataclass, field

from .nodeagent import PlanError

HOSTFILE_NAME = "hostfile"
RSH_AGENT_NAME = "mpi-node-shell"
PYTORCH_INIT_FILE = "pytorch_init"
# The folder in each node's job temp where its Open MPI daemon keeps its session directory.
OPEN_MPI_TMP = "openmpi"
MPI_INSTALL_HINT = "install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin)"

# Open MPI's settings for a job on this host: start the other nodes' daemons through our agent
# instead of ssh, keep every byte on loopback, and allow root (containers often run as root).
_OMPI_ENV = {
    "OMPI_MCA_oob_tcp_if_include": "lo",
    "OMPI_MCA_btl_tcp_if_include": "lo",
    "OMPI_MCA_btl": "self,vader,tcp",
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
}
# Toolkits Batch AI started under mpirun when they had more than one process.
MPI_TOOLKITS = (
    "customMpiSettings",
    "horovodSettings",
    "cntkSettings",
    "chainerSettings",
    "caffeSettings",
)


def node_address(index: int) -> str:
    """Loopback address of a cluster's ``index``-th node (1-based, in creation order):
    127.0.0.4, .5, ... as Batch AI's 10.0.0.4, .5, ...; Linux routes all of 127/8 to lo."""
    return f"127.0.0.{4 + (index - 1) % 250}"


@dataclass
class JobNode:
    """One node of a running job: its id, rendezvous address and own job temp folder."""

    id: str
    address: str
    job_temp: str  # this node's AZ_BATCHAI_JOB_TEMP


@dataclass
class Task:
    """One process a node starts for the job."""

    name: str  # "job", "0", "wk-1", "ps-0", "job_prep"...
    node: str  # node id
    command: str  # shell command line
    env: dict  # variables that differ from the job's (master node's) environment
    cwd: str
    stdout: str  # file names in stdouterr/
    stderr: str
    main: bool = True  # the job ends when every main task has ended; others are then stopped

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Layout:
    """Everything the node agent needs to start a job over its nodes."""

    tasks: list
    preparation: list  # job preparation tasks (one per node), may be empty
    files: dict = field(default_factory=dict)  # path -> content (hostfiles, the agent)
    executables: list = field(default_factory=list)  # paths among ``files`` to chmod +x
    env: dict = field(default_factory=dict)  # added to every task's environment
    logs: dict = field(default_factory=dict)  # node id -> execution log file name


def node_env(node: JobNode, index: int) -> dict:
    """The variables that differ per node: its job temp, its hostfile and its index."""
    return {
        "AZ_BATCHAI_JOB_TEMP_DIR": os.path.dirname(node.job_temp),
        "AZ_BATCHAI_JOB_TEMP": node.job_temp,
        "AZ_BATCHAI_MPI_HOST_FILE": os.path.join(node.job_temp, HOSTFILE_NAME),
        "AZ_BATCHAI_TASK_INDEX": str(index),
    }


def hostfile(nodes: list, process_count: int) -> str:
    """Open MPI hostfile: one ``<address> slots=<n>`` line per node, ``process_count`` ranks
    split as evenly as possible with earlier nodes taking the remainder."""
    base, extra = divmod(max(process_count, len(nodes)), len(nodes))
    return "".join(
        f"{node.address} slots={base + (1 if i < extra else 0)}\n" for i, node in enumerate(nodes)
    )


def daemon_session_base(node: JobNode) -> str:
    """Where the node's Open MPI daemon keeps its session directory (its ``orte_tmpdir_base``).

    Open MPI names a daemon's session directory after the host name, the user and the job
    family, so on one host every node's ``orted`` of a job would share one. Each daemon clears
    it of stale files, creates it again and builds its hwloc topology inside a file there,
    ``hwloc.sm``, mapped into its memory for its ranks. Two daemons in one directory remove
    what the other just made (``orte_init`` fails, "mkdir ... File exists": mpirun exits 213)
    or build their topologies in the same file at once, each overwriting the other's pointers
    (SIGSEGV in ``hwloc_shmem_topology_write``: mpirun exits 139). Real nodes each have their
    own ``/tmp``; a base folder per node in its own job temp restores that. mpirun keeps its
    folder under ``/tmp``: named after its pid, it is never shared, and a base of its own
    would be passed on to the daemons' command lines, over the node's.
    """
    return os.path.join(node.job_temp, OPEN_MPI_TMP)


def rsh_agent(nodes: list) -> str:
    """A shell script Open MPI runs instead of ``ssh <host> <command>``: it gives the command
    the environment of the node whose address is ``<host>`` (and that node's own session folder
    for Open MPI's daemon) and runs it on this host."""

    def exports(node: JobNode, index: int) -> dict:
        return {**node_env(node, index), "OMPI_MCA_orte_tmpdir_base": daemon_session_base(node)}

    cases = "".join(
        f"  {node.address}) export "
        + " ".join(f"{k}={shlex.quote(v)}" for k, v in exports(node, i).items())
        + f"; cd {shlex.quote(node.job_temp)} ;;\n"
        for i, node in enumerate(nodes)
    )
    return (
        "#!/bin/sh\n"
        "# Written by the local cloud: Open MPI's remote shell to this job's nodes.\n"
        'while [ "${1#-}" != "$1" ]; do shift; done\n'
        'host="$1"; shift\n'
        'case "$host" in\n'
        f"{cases}"
        '  *) echo "no node of this job has the address $host" >&2; exit 255 ;;\n'
        "esac\n"
        'exec /bin/sh -c "$*"\n'
    )


def free_port(address: str) -> int:
    """A port free on ``address`` now (several local clouds share this host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _stdouterr(name: str) -> tuple[str, str]:
    return f"stdout-{name}.txt", f"stderr-{name}.txt"


def _task(name: str, node: JobNode, index: int, command: str, files: tuple, **extra) -> Task:
    env = node_env(node, index)
    env.update(extra.pop("env", {}))
    return Task(name, node.id, command, env, node.job_temp, files[0], files[1], **extra)


def preparation_tasks(command: str | None, nodes: list) -> list:
    """jobPreparation on every node; output per node when the job has several."""
    if not command:
        return []
    if len(nodes) == 1:
        return [
            _task("job_prep", nodes[0], 0, command, ("stdout-job_prep.txt", "stderr-job_prep.txt"))
        ]
    return [
        _task(f"job_prep-{n.id}", n, i, command, _stdouterr(f"job_prep-{n.id}"))
        for i, n in enumerate(nodes)
    ]


def mpi_command(line: str, process_count: int, mpirun: str | None) -> str:
    """``mpirun -np P --hostfile $AZ_BATCHAI_MPI_HOST_FILE <line>`` (the master's hostfile)."""
    if mpirun is None:
        raise PlanError(
            "MpiNotInstalled",
            f"processCount {process_count} runs the job under mpirun, which this host lacks; "
            f"{MPI_INSTALL_HINT}, or set processCount and nodeCount to 1.",
        )
    hostfile_arg = '--hostfile "$AZ_BATCHAI_MPI_HOST_FILE"'
    return f"exec {shlex.quote(mpirun)} -np {process_count} {hostfile_arg} {line}"


def layout(
    toolkit: str,
    settings: dict,
    nodes: list,
    *,
    python_line: str | None,
    shared_temp: str,
    mpirun: str | None,
) -> Layout:
    """The tasks of a job with ``toolkit`` over ``nodes`` (the first is the master).

    ``python_line`` is ``<interpreter> <script>`` for Python toolkits (None for the custom
    ones); ``mpirun`` the path of mpirun on this host, or None.
    """
    count = len(nodes)
    master = nodes[0]
    result = Layout(tasks=[], preparation=[])
    process_count = settings.get("processCount") or count
    for node in nodes:
        result.files[os.path.join(node.job_temp, HOSTFILE_NAME)] = hostfile(nodes, process_count)
    agent = os.path.join(os.path.dirname(shared_temp), RSH_AGENT_NAME)
    result.files[agent] = rsh_agent(nodes)
    result.executables.append(agent)
    result.env = {"OMPI_MCA_plm_rsh_agent": agent, **_OMPI_ENV}
    result.logs = (
        {master.id: "execution.log"}
        if count == 1
        else {n.id: f"execution-{n.id}.log" for n in nodes}
    )
    args = settings.get("commandLineArgs") or ""
    if toolkit == "customToolkitSettings":
        result.tasks = [
            _task("job", master, 0, settings.get("commandLine") or "", ("stdout.txt", "stderr.txt"))
        ]
    elif toolkit == "customMpiSettings":
        line = settings.get("commandLine") or ""
        result.tasks = [_mpi_or_direct(master, line, process_count, count, mpirun, always=True)]
    elif toolkit == "pyTorchSettings":
        result.tasks = _pytorch_tasks(
            settings, nodes, f"{python_line} {args}".strip(), shared_temp, mpirun
        )
    elif toolkit == "caffe2Settings":
        line = f"{python_line} {args}".strip()
        result.tasks = [
            _task(str(i), n, i, f"exec {line}", _stdouterr(str(i))) for i, n in enumerate(nodes)
        ]
    elif toolkit == "tensorFlowSettings":
        result.tasks = _tensorflow_tasks(settings, nodes, python_line)
    elif toolkit in MPI_TOOLKITS:
        line = f"{python_line} {args}".strip()
        result.tasks = [_mpi_or_direct(master, line, process_count, count, mpirun)]
    else:
        raise PlanError("InvalidParameter", f"The local cloud cannot launch {toolkit} jobs.")
    return result


def _mpi_or_direct(
    master: JobNode, line: str, process_count: int, node_count: int, mpirun, always=False
) -> Task:
    """One task on the master: ``line`` itself for one process on one node, else under mpirun
    (customMpiSettings always used mpirun)."""
    files = ("stdout.txt", "stderr.txt")
    if process_count <= 1 and node_count <= 1 and not (always and mpirun):
        return _task("job", master, 0, f"exec {line}", files)
    return _task("job", master, 0, mpi_command(line, process_count, mpirun), files)


def _pytorch_tasks(settings: dict, nodes: list, line: str, shared_temp: str, mpirun) -> list:
    """One process per task (processCount, default one per node), task i on node i mod N,
    rendezvous through a file in the shared job temp; backend MPI runs under mpirun."""
    backend = (settings.get("communicationBackend") or "gloo").lower()
    count = settings.get("processCount") or len(nodes)
    if backend == "mpi":
        return [_mpi_or_direct(nodes[0], line, count, len(nodes), mpirun)]
    init = f"file://{os.path.join(shared_temp, PYTORCH_INIT_FILE)}"
    tasks = []
    for i in range(count):
        node = nodes[i % len(nodes)]
        env = {"AZ_BATCHAI_PYTORCH_BACKEND": backend, "AZ_BATCHAI_PYTORCH_INIT_METHOD": init}
        if all(_is_loopback(n.address) for n in nodes):
            env["GLOO_SOCKET_IFNAME"] = "lo"  # nodes on one host: gloo's connections stay there
        tasks.append(_task(str(i), node, i, f"exec {line}", _stdouterr(str(i)), env=env))
    return tasks


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _tensorflow_tasks(settings: dict, nodes: list, python_line: str) -> list:
    """Parameter servers and workers, one process per role instance, with the hosts lists and
    TF_CONFIG Batch AI set; the job waits for the workers, then stops the parameter servers."""
    count = len(nodes)
    workers = settings.get("workerCount") or count
    servers = settings.get("parameterServerCount")
    if servers is None:
        servers = 1 if count > 1 or workers > 1 else 0
    placed = {"ps": [nodes[j % count] for j in range(servers)]}
    placed["worker"] = [nodes[i % count] for i in range(workers)]
    hosts = {role: [f"{n.address}:{free_port(n.address)}" for n in placed[role]] for role in placed}
    cluster = {"worker": hosts["worker"]}
    if servers:
        cluster = {"ps": hosts["ps"], "worker": hosts["worker"]}
    tasks = []
    for role, short in (("ps", "ps"), ("worker", "wk")):
        for index, node in enumerate(placed[role]):
            if role == "ps":
                args = settings.get("parameterServerCommandLineArgs") or ""
            elif index == 0:
                args = settings.get("masterCommandLineArgs") or ""
            else:
                args = settings.get("workerCommandLineArgs") or ""
            config = {
                "cluster": cluster,
                "task": {"type": role, "index": index},
                "environment": "cloud",
            }
            env = {
                "AZ_BATCHAI_PS_HOSTS": ",".join(hosts["ps"]),
                "AZ_BATCHAI_WORKER_HOSTS": ",".join(hosts["worker"]),
                "TF_CONFIG": json.dumps(config, separators=(",", ":")),
            }
            task = _task(
                f"{short}-{index}",
                node,
                index,
                f"exec {python_line} {args}".rstrip(),
                _stdouterr(f"{short}-{index}"),
                env=env,
                main=role == "worker",
            )
            task.env["AZ_BATCHAI_TASK_INDEX"] = str(index)
            tasks.append(task)
    return tasks
