"""The node agent: runs one Batch AI job on this host, detached from the local cloud's server.

A Batch AI node ran each job's command for the service and uploaded what it wrote; here the
"node" is this machine and the share *is* the mount, so the agent's work is:

* ``plan_job`` (pure): from a job's stored properties, work out what a node would have done:
  the ``$AZ_BATCHAI_*`` environment, the job's output directory path segment, where
  ``stdouterr/`` and each ``outputs/<suffix>`` go, and the command line of its toolkit.
* ``launch`` (in the server): link the job-level mounts, lay out ``stdouterr/`` and the output
  directories (which may lie on those mounts), then start
  this file as a small wrapper process (``python nodeagent.py run``, spec on stdin: secrets never
  touch the disk) that detaches into its own session and process group, so the job outlives the
  server. The server gets back a ``JobHandle`` (pid, kernel start time, boot id) to keep.
* the wrapper (``_run_wrapper``): runs ``jobPreparation`` then the job, with their stdout and
  stderr going straight into ``stdout.txt``/``stderr.txt`` (so they can be streamed while the
  job runs), writes ``execution.log`` as it goes, enforces ``maxWallClockTime``, and finally
  records the exit code atomically (write then rename) in ``exit.json`` beside the output, in
  the hidden ``.nodeagent/`` folder next to ``stdouterr/``.
* ``probe`` (in any server, also one started later): running while the wrapper lives, else the
  outcome recorded beside the output, else "vanished" (the process died without recording an
  exit: killed, or the host restarted).
* ``terminate``: SIGTERM to the whole process group, SIGKILL after a grace period.

This file imports only the standard library, and the wrapper runs it by path rather than with
``-m quickstart...``, so starting a job costs one bare interpreter start, not the local cloud's
imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RECORD_DIR_NAME = ".nodeagent"
EXIT_FILE = "exit.json"
AGENT_FILE = "agent.json"
STDOUTERR_DIR_NAME = "stdouterr"
OUTPUTS_DIR_NAME = "outputs"
TERMINATE_GRACE_SECONDS = 3.0

# Exit code reported when the job could not be started at all (the 2021 service reported -1
# for a job that failed before its command ran, e.g. a mount error).
NOT_STARTED_EXIT_CODE = -1

_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

TOOL_TYPES = {
    "cntkSettings": "cntk",
    "pyTorchSettings": "pytorch",
    "tensorFlowSettings": "tensorflow",
    "caffeSettings": "caffe",
    "caffe2Settings": "caffe2",
    "chainerSettings": "chainer",
    "customToolkitSettings": "custom",
    "customMpiSettings": "mpi",
    "horovodSettings": "horovod",
}


class PlanError(Exception):
    """The job cannot be run on this host as specified; ``code``/``message`` say why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------- pure helpers


def expand(text: str, env: dict) -> str:
    """Expand ``$NAME`` and ``${NAME}`` from ``env``; unknown names stay as written (as
    ``os.path.expandvars`` does), so a typo shows up verbatim in the error it causes."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return env[name] if name in env else match.group(0)

    return _VARIABLE.sub(replace, text)


def gpu_count() -> int:
    """GPUs this host offers a job: CUDA_VISIBLE_DEVICES if set, else the NVIDIA devices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return len(list(proc.iterdir()))
    try:
        return len([d for d in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", d)])
    except OSError:
        return 0


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value replaced by ``***`` (for logs)."""
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


# ---------------------------------------------------------------------- planning


@dataclass
class NodeContext:
    """Where one node of a cluster keeps things; the server makes these directories."""

    mount_root: str  # AZ_BATCHAI_MOUNT_ROOT: holds one link per cluster-level mount
    job_temp_root: str  # AZ_BATCHAI_JOB_TEMP_DIR: per-job temp folders go below it
    default_python: str  # the interpreter a Python toolkit uses without pythonInterpreterPath
    num_gpus: int


@dataclass
class LaunchSpec:
    """Everything the wrapper needs; travels on its stdin (it holds secret values)."""

    job: str  # a display name for logs
    record_dir: str  # .nodeagent/ beside stdouterr/
    stdouterr_dir: str
    cwd: str
    env: dict  # added to the host's environment
    secret_values: list = field(default_factory=list)
    preparation: str | None = None  # shell command line of jobPreparation
    command: str | None = None  # shell command line of the job
    failure: dict | None = None  # {"code","message"}: do not run, fail with this
    max_seconds: float | None = None
    notes: list = field(default_factory=list)  # lines for the head of execution.log
    make_dirs: list = field(default_factory=list)
    links: dict = field(default_factory=dict)  # symlink path -> target (job-level mounts)
    # A job over several nodes (launch_plans.Layout): its processes, per-node job preparation,
    # files written before the start (hostfiles, Open MPI's node shell), per-node log names.
    # Without tasks the wrapper runs ``preparation`` then ``command`` (one node, one process).
    tasks: list = field(default_factory=list)
    preparation_tasks: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    executables: list = field(default_factory=list)
    logs: dict = field(default_factory=dict)
    # Run only this node's tasks (a compute backend that starts one agent per node, each
    # where its node is); None: this agent runs every node's tasks.
    node: str | None = None
    # The error to record when the process that started this agent ends first (it dies with
    # it: a node that left its cluster); None: the agent is detached and outlives its starter.
    node_lost_error: dict | None = None


@dataclass
class JobPlan:
    segment: str
    stdouterr_dir: str
    output_dirs: dict  # id -> absolute path
    tool_type: str
    spec: LaunchSpec


def job_path_segment(
    subscription: str, group: str, workspace: str, experiment: str, job: str, uid: str
) -> str:
    """``jobOutputDirectoryPathSegment`` as the 2018-05-01 service made it."""
    return (
        f"{subscription}/{group}/workspaces/{workspace}/experiments/{experiment}/jobs/{job}/{uid}"
    )


def toolkit_of(props: dict) -> str | None:
    """The one toolkit settings key present in job properties, or None."""
    present = [key for key in TOOL_TYPES if props.get(key) is not None]
    return present[0] if len(present) == 1 else None


def duration_seconds(iso: str) -> float:
    """Seconds in an ISO-8601 duration such as ``P7D`` or ``PT1H30M`` (raises ValueError)."""
    match = re.fullmatch(
        r"P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
        r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?",
        iso or "",
    )
    if not match or iso in ("P", "PT") or iso.endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {iso!r}")
    weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def plan_job(
    props: dict,
    *,
    job_name: str,
    segment: str,
    node: NodeContext,
    job_mount_root: str,
    secret_values: dict,
    job_mounts: dict | None = None,
    nodes: list | None = None,
    shared_temp: str | None = None,
) -> JobPlan:
    """Work out the environment, directories and command of one job (nothing is touched).

    ``props`` are the job's stored properties (secret values are given separately, by name);
    ``job_mounts`` maps each job-level mount's relativeMountPath to the folder it mounts.
    Raises PlanError only for what makes the job's directories unknowable; a job that can be
    laid out but not run (BrainScript, MPI without mpirun) gets ``spec.failure`` instead, so
    it fails like a real job with its stdouterr/ and execution.log in place.

    ``nodes`` are the job's nodes (launch_plans.JobNode, the master first; default: one node
    whose job temp is under ``node.job_temp_root``) and ``shared_temp`` the folder all of them
    share (default: ``shared`` in the master's job temp).
    """
    from . import launch_plans  # here, not at the top: the wrapper runs this file by path

    if not nodes:
        uid = segment.rsplit("/", 1)[-1]
        nodes = [launch_plans.JobNode("node", "127.0.0.4", os.path.join(node.job_temp_root, uid))]
    job_temp = nodes[0].job_temp
    shared_temp = shared_temp or os.path.join(job_temp, "shared")
    env = _node_environment(node, job_mount_root, job_temp, shared_temp)
    host_env = dict(os.environ)
    stdouterr_dir, record_dir = _plan_stdouterr(props, segment, env, host_env)
    _plan_inputs(props, env, host_env)
    outputs = _plan_outputs(props, segment, env, host_env)
    _add_job_variables(props, secret_values, env)

    toolkit = toolkit_of(props)
    notes = _host_notes(job_name, props)
    layout, failure = _plan_command(toolkit, props, env, host_env, node, notes, nodes, shared_temp)
    tasks = [task.to_json() for task in layout.tasks] if layout else []
    env.update(layout.env if layout else {})
    spec = LaunchSpec(
        job=job_name,
        record_dir=record_dir,
        stdouterr_dir=stdouterr_dir,
        cwd=job_temp,
        env=env,
        secret_values=[v for v in secret_values.values() if v],
        preparation=(props.get("jobPreparation") or {}).get("commandLine"),
        command=tasks[0]["command"] if len(tasks) == 1 else None,
        failure=failure,
        max_seconds=_max_seconds(props),
        notes=notes,
        make_dirs=[
            stdouterr_dir,
            record_dir,
            job_temp,
            shared_temp,
            job_mount_root,
            *outputs.values(),
            *(n.job_temp for n in nodes),
        ],
        links={
            os.path.join(job_mount_root, rel): target for rel, target in (job_mounts or {}).items()
        },
        tasks=tasks,
        preparation_tasks=[
            t.to_json()
            for t in launch_plans.preparation_tasks(
                (props.get("jobPreparation") or {}).get("commandLine"), nodes
            )
        ],
        files=layout.files if layout else {},
        executables=layout.executables if layout else [],
        logs=layout.logs if layout else {nodes[0].id: "execution.log"},
    )
    return JobPlan(
        segment=segment,
        stdouterr_dir=stdouterr_dir,
        output_dirs=outputs,
        tool_type=TOOL_TYPES.get(toolkit, "custom"),
        spec=spec,
    )


def _node_environment(
    node: NodeContext, job_mount_root: str, job_temp: str, shared_temp: str
) -> dict:
    """The ``$AZ_BATCHAI_*`` variables a node set for every job, before its directories (the
    master node's; launch_plans.node_env holds what differs on the others)."""
    return {
        "AZ_BATCHAI_MOUNT_ROOT": node.mount_root,
        "AZ_BATCHAI_JOB_MOUNT_ROOT": job_mount_root,
        "AZ_BATCHAI_JOB_TEMP_DIR": os.path.dirname(job_temp),
        "AZ_BATCHAI_JOB_TEMP": job_temp,
        "AZ_BATCHAI_SHARED_JOB_TEMP": shared_temp,
        "AZ_BATCHAI_NUM_GPUS": str(node.num_gpus),
        "AZ_BATCHAI_TASK_INDEX": "0",
        # Python buffers a redirected stdout in 8 KiB blocks; a node streamed what the job
        # printed, so ask Python jobs to write through.
        "PYTHONUNBUFFERED": "1",
    }


def _resolve(path: str, what: str, env: dict, host_env: dict) -> str:
    """An absolute, normalised path from one of the job's path fields, with its $VARIABLES
    expanded as a node would (the variables planned so far, then the host's)."""
    value = expand(path, {**host_env, **env})
    if "$" in value:
        raise PlanError(
            "InvalidParameter",
            f"{what} '{path}' names an environment variable the local cloud does not "
            "set; use $AZ_BATCHAI_MOUNT_ROOT, $AZ_BATCHAI_JOB_MOUNT_ROOT or "
            "$AZ_BATCHAI_JOB_TEMP.",
        )
    if not os.path.isabs(value):
        raise PlanError(
            "InvalidParameter",
            f"{what} '{path}' must be an absolute path (for example under $AZ_BATCHAI_MOUNT_ROOT).",
        )
    return os.path.normpath(value)


def _plan_stdouterr(props: dict, segment: str, env: dict, host_env: dict) -> tuple[str, str]:
    """(stdouterr/, .nodeagent/) under the job's path segment; sets AZ_BATCHAI_STDOUTERR_DIR."""
    prefix = _resolve(props["stdOutErrPathPrefix"], "stdOutErrPathPrefix", env, host_env)
    stdouterr_dir = os.path.join(prefix, segment, STDOUTERR_DIR_NAME)
    env["AZ_BATCHAI_STDOUTERR_DIR"] = stdouterr_dir
    return stdouterr_dir, os.path.join(prefix, segment, RECORD_DIR_NAME)


def _plan_inputs(props: dict, env: dict, host_env: dict) -> None:
    """AZ_BATCHAI_INPUT_<id> for each input directory."""
    for item in props.get("inputDirectories") or []:
        env[f"AZ_BATCHAI_INPUT_{item['id']}"] = _resolve(
            item["path"], f"inputDirectories[{item['id']}].path", env, host_env
        )


def _plan_outputs(props: dict, segment: str, env: dict, host_env: dict) -> dict:
    """{id: path} of each output directory (``<prefix>/<segment>/outputs[/<suffix>]``), also
    set as AZ_BATCHAI_OUTPUT_<id>."""
    outputs = {}
    for item in props.get("outputDirectories") or []:
        prefix = _resolve(
            item["pathPrefix"], f"outputDirectories[{item['id']}].pathPrefix", env, host_env
        )
        base = os.path.join(prefix, segment, OUTPUTS_DIR_NAME)
        suffix = item.get("pathSuffix")
        path = os.path.normpath(os.path.join(base, suffix)) if suffix else base
        outputs[item["id"]] = path
        env[f"AZ_BATCHAI_OUTPUT_{item['id']}"] = path
    return outputs


def _add_job_variables(props: dict, secret_values: dict, env: dict) -> None:
    """The job's own environmentVariables, then its secrets (which win on a shared name)."""
    for item in props.get("environmentVariables") or []:
        env[item["name"]] = item.get("value") or ""
    for name, value in secret_values.items():
        env[name] = value or ""


def _host_notes(job_name: str, props: dict) -> list[str]:
    """The head of execution.log: how running here differs from running on a Batch AI node."""
    notes = [
        f"Job {job_name} runs on this host ({os.uname().nodename}), directly, not in a container "
        "and not on an Azure VM: the local cloud's node is this machine and its mounts are "
        "folders of the local cloud's shares."
    ]
    image = ((props.get("containerSettings") or {}).get("imageSourceRegistry") or {}).get("image")
    if image:
        notes.append(
            f"Container image {image} is recorded on the job but not pulled or run: "
            "the job's command runs with this host's programs."
        )
    return notes


def _plan_command(
    toolkit: str | None,
    props: dict,
    env: dict,
    host_env: dict,
    node: NodeContext,
    notes: list,
    nodes: list,
    shared_temp: str,
):
    """(launch_plans.Layout, None), or (None, failure) for a job that can be laid out but not
    run here; adds the interpreter and shell to ``notes``."""
    from . import launch_plans

    settings = props.get(toolkit) if toolkit else None
    try:
        python_line, interpreter = _python_line(toolkit, settings, env, host_env, node)
        layout = launch_plans.layout(
            toolkit,
            settings,
            nodes,
            python_line=python_line,
            shared_temp=shared_temp,
            mpirun=shutil.which("mpirun", path=host_env.get("PATH")),
        )
    except PlanError as err:
        return None, {"code": err.code, "message": err.message}
    if interpreter:
        notes.append(f"Interpreter: {interpreter}")
    notes.append(f"Shell: {' '.join(_shell())} (command lines and $VARIABLES as on a node)")
    return layout, None


def _max_seconds(props: dict) -> float | None:
    """constraints.maxWallClockTime in seconds, or None without one."""
    wall_clock = (props.get("constraints") or {}).get("maxWallClockTime")
    return duration_seconds(wall_clock) if wall_clock else None


def _python_line(
    toolkit: str | None,
    settings: dict | None,
    env: dict,
    host_env: dict,
    node: NodeContext,
) -> tuple[str | None, str | None]:
    """(``<interpreter> <script>``, interpreter) of a Python toolkit, (None, None) for the
    custom ones, or PlanError for what this host cannot run."""
    if toolkit is None or settings is None:
        raise PlanError("InvalidParameter", "The job has no toolkit settings.")
    if toolkit in ("customToolkitSettings", "customMpiSettings"):
        return None, None
    if toolkit == "cntkSettings":
        language = (settings.get("languageType") or "Python").lower()
        if language != "python" or (
            settings.get("configFilePath") and not settings.get("pythonScriptFilePath")
        ):
            raise PlanError(
                "UnsupportedToolkit",
                "The local cloud runs only Python CNTK jobs (cntkSettings with languageType "
                "Python and pythonScriptFilePath); BrainScript jobs need the cntk executable "
                "of the CNTK container, which this host does not run.",
            )
    if toolkit == "caffeSettings" and not settings.get("pythonScriptFilePath"):
        raise PlanError(
            "UnsupportedToolkit",
            "The local cloud runs only Python Caffe jobs (caffeSettings.pythonScriptFilePath); "
            "a configFilePath job needs the caffe executable of the Caffe container.",
        )
    script = settings.get("pythonScriptFilePath")
    if not script:
        raise PlanError("InvalidParameter", f"{toolkit}.pythonScriptFilePath is required.")
    interpreter = expand(
        settings.get("pythonInterpreterPath") or node.default_python, {**host_env, **env}
    )
    line = f"{shlex.quote(interpreter)} {shlex.quote(expand(script, {**host_env, **env}))}"
    return line, interpreter


# ---------------------------------------------------------------------- server side


@dataclass(frozen=True)
class JobHandle:
    """What the server keeps to find a job's wrapper again, even after a restart."""

    pid: int  # the wrapper; also its process group and session id
    start_ticks: int  # its start time in clock ticks since boot (guards against pid reuse)
    boot_id: str
    record_dir: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> JobHandle:
        return cls(
            int(data["pid"]),
            int(data["start_ticks"]),
            str(data["boot_id"]),
            str(data["record_dir"]),
        )


@dataclass(frozen=True)
class Outcome:
    """How a job ended. ``exit_code`` None: unknown (the process vanished)."""

    exit_code: int | None
    phase: str  # "job", "jobPreparation" or "launch"
    error: dict | None  # {"code", "message"} when the agent knows more than a code
    ended: float
    started: float | None = None
    task: dict | None = None  # on several nodes: the failing process (name, node, its files)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.error is None


def launch(spec: LaunchSpec, python: str | None = None) -> JobHandle:
    """Lay out the job's folders and start its detached wrapper; returns once it is running.

    Raises OSError if a folder cannot be made or the wrapper cannot start.
    """
    lay_out(spec)
    process = subprocess.Popen(
        [python or sys.executable, "-I", os.path.abspath(__file__), "run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        cwd=spec.cwd,
    )
    out, _ = process.communicate(json.dumps(asdict(spec)).encode("utf-8"), timeout=60)
    if process.returncode != 0 or not out.strip():
        raise OSError(f"the node agent did not start (exit status {process.returncode})")
    pid = int(out.split()[0])
    return JobHandle(pid, _start_ticks(pid) or 0, _boot_id(), spec.record_dir)


def lay_out(spec: LaunchSpec) -> None:
    """Make what a job needs before any of its processes starts: its job-level mount links,
    its folders, the files of its plan (hostfiles, Open MPI's node shell), and a clean record.

    Raises OSError if a folder cannot be made (UnsafePath for one through a job's link).
    """
    # Mount first, then make the job's folders: they may lie on a job-level mount (stdouterr
    # under $AZ_BATCHAI_JOB_MOUNT_ROOT/<mount>), and a folder made first would block the link.
    for link, target in spec.links.items():
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(target, link, target_is_directory=True)
    trusted = _mount_links(spec)
    for folder in spec.make_dirs:
        make_dirs_on_mount(folder, trusted)
    for path, content in spec.files.items():
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
    for path in spec.executables:
        os.chmod(path, 0o755)
    for stale in (EXIT_FILE, AGENT_FILE):  # a stale record or claim must never count
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(spec.record_dir, stale))


class UnsafePath(OSError):
    """A job folder would be made through a symbolic link that a job, not the node, made."""

    code = "JobOutputPathUnsafe"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _mount_links(spec: LaunchSpec) -> set[str]:
    """The links the node itself made: one per share mount, in the mount roots."""
    trusted = set(spec.links)
    for root in (spec.env.get("AZ_BATCHAI_MOUNT_ROOT"), spec.env.get("AZ_BATCHAI_JOB_MOUNT_ROOT")):
        for folder, dirs, files in os.walk(root) if root else ():
            for name in dirs + files:  # os.walk lists links to folders as dirs, never enters
                if os.path.islink(os.path.join(folder, name)):
                    trusted.add(os.path.join(folder, name))
    return trusted


def make_dirs_on_mount(folder: str, trusted_links: set[str]) -> None:
    """``os.makedirs(folder)``, following no symbolic link below a share's mount point.

    Share contents are written by jobs, so a job can leave a link in a share that points
    anywhere (``/etc``, another share, another job's folders). Only the mount links themselves
    are followed; a folder that would pass through any other link raises UnsafePath, so a later
    job's stdouterr and outputs always land inside its share.
    """
    folder = os.path.abspath(folder)
    mount = next(
        (link for link in trusted_links if folder == link or folder.startswith(link + os.sep)),
        None,
    )
    if mount is None:
        os.makedirs(folder, exist_ok=True)
        return
    path = mount
    for part in os.path.relpath(folder, mount).split(os.sep):
        if part in ("", "."):
            continue
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise UnsafePath(
                f"The job's folder '{folder}' would pass through the symbolic link '{path}' "
                "inside its share (made by a job); the local cloud follows no such link. "
                "Remove the link from the share."
            )
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path) or os.path.islink(path):
                raise UnsafePath(
                    f"The job's folder '{folder}' cannot be made: '{path}' is not a directory."
                ) from None


def _create_exclusively(path: str, data: dict) -> bool:
    """Create ``path`` holding ``data`` unless it exists (then False): the one atomic step that
    decides between a starting wrapper and a server that gave up on it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    return True


def claim_or_find(record_dir: str, wait: float = 2.0) -> JobHandle | None:
    """After a crash cut a launch short: the wrapper's handle if it started (it claimed
    ``agent.json`` first), else None, and then it never will (this claims the file for the
    server, and a wrapper that finds it taken exits without running anything)."""
    path = os.path.join(record_dir, AGENT_FILE)
    with contextlib.suppress(OSError):
        if _create_exclusively(path, {"cancelled": True}):
            return None
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            if data.get("cancelled"):
                return None
            return JobHandle.from_json(data)
        except (OSError, ValueError, KeyError):
            if time.monotonic() > deadline:  # unreadable and not being written: no wrapper
                return None
            time.sleep(0.02)  # the wrapper is between creating and filling it


def read_outcome(record_dir: str) -> Outcome | None:
    """The outcome recorded beside the job's output, or None if none is recorded (yet)."""
    try:
        with open(os.path.join(record_dir, EXIT_FILE), encoding="utf-8") as handle:
            data = json.load(handle)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return None  # cannot happen for a renamed-into-place file; treat as not yet written
    return Outcome(
        data.get("exit_code"),
        data.get("phase", "job"),
        data.get("error"),
        float(data.get("ended") or time.time()),
        data.get("started"),
        data.get("task"),
    )


def is_alive(handle: JobHandle) -> bool:
    """True while the job's wrapper process (the one ``launch`` started) lives."""
    if handle.boot_id and _boot_id() and handle.boot_id != _boot_id():
        return False  # the host restarted: every process of the job is gone
    ticks = _start_ticks(handle.pid)
    if ticks is None:
        if Path("/proc").is_dir():
            return False
        try:
            os.kill(handle.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return ticks == handle.start_ticks or handle.start_ticks == 0


def group_alive(handle: JobHandle) -> bool:
    """True while any live process of the job's process group is left (including children the
    job started after its wrapper died). Zombies do not count: they have ended and only wait
    for init to collect them, which some container inits do only every few seconds."""
    if handle.boot_id and _boot_id() and handle.boot_id != _boot_id():
        return False
    if Path("/proc").is_dir():
        return bool(group_members(handle.pid))
    try:
        os.killpg(handle.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group or session is ``pgid`` (Linux /proc).

    The wrapper leads both its group and its session; the session also holds what left the
    group (each task's own group, Open MPI's daemons and ranks)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if (
            len(fields) > 3
            and fields[0] not in ("Z", "X")
            and pgid in (int(fields[2]), int(fields[3]))
        ):
            members.append(int(entry))
    return members


def probe(handle: JobHandle) -> tuple[str, Outcome | None]:
    """("running", None), ("ended", outcome) or ("vanished", outcome with the reason)."""
    outcome = read_outcome(handle.record_dir)
    if outcome is not None:
        return "ended", outcome
    if is_alive(handle):
        return "running", None
    outcome = read_outcome(handle.record_dir)  # it may have finished between the two looks
    if outcome is not None:
        return "ended", outcome
    return "vanished", Outcome(
        None,
        "job",
        {
            "code": "JobProcessVanished",
            "message": f"The job's node agent process (pid {handle.pid}) ended without "
            "recording an exit code: it was killed or this host restarted while the job ran.",
        },
        time.time(),
    )


def terminate(handle: JobHandle, grace: float = TERMINATE_GRACE_SECONDS) -> None:
    """Stop the job's whole process group: SIGTERM, then SIGKILL if anything is left after
    ``grace`` seconds. Returns once no process of the group remains (or after a last SIGKILL)."""
    ticks = _start_ticks(handle.pid)
    if ticks is not None and handle.start_ticks and ticks != handle.start_ticks:
        return  # the pid is someone else's now, so no group of ours can be left under it
    if not group_alive(handle):
        return
    _signal_group(handle.pid, signal.SIGTERM)
    # Each look scans /proc; backing off keeps a stop that waits out the grace period (a job
    # ignoring SIGTERM) from taking the CPU from the server it runs in.
    pause, deadline = 0.01, time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(handle):
            return
        time.sleep(pause)
        pause = min(0.2, pause * 1.5)
    _signal_group(handle.pid, signal.SIGKILL)
    pause, deadline = 0.01, time.monotonic() + 5
    while group_alive(handle) and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(0.2, pause * 1.5)


def _signal_group(pgid: int, signum: int) -> None:
    """``signum`` to the process group ``pgid``, then to the rest of the session it leads."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
    if Path("/proc").is_dir():
        for pid in group_members(pgid):
            if pid != os.getpid():
                with contextlib.suppress(OSError):
                    os.kill(pid, signum)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks after boot); None if it does not exist, is a
    zombie, or /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


# ---------------------------------------------------------------------- the wrapper


def _utc(ts: float | None = None) -> str:
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _write_json_atomically(path: str, data: dict) -> None:
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _shell() -> list[str]:
    bash = shutil.which("bash")
    return [bash, "-c"] if bash else ["/bin/sh", "-c"]


class _Wrapper:
    """The detached process that runs one job's processes on all its nodes and records how
    the job ended.

    A job of one process runs in the wrapper's process group, as it always did. With several,
    each process (task) gets its own group inside the wrapper's session, so one can be stopped
    with everything it started while the others run on; the session holds them all, so
    ``terminate`` and ``finish`` reach every one, Open MPI's daemons and ranks too.
    """

    def __init__(self, spec: LaunchSpec):
        self.spec = spec
        names = spec.logs or {"": "execution.log"}
        # A record names the failing process only for a job of several nodes.
        self.several_nodes = len(names) > 1
        if spec.node is not None and spec.node in names:
            names = {spec.node: names[spec.node]}  # this agent writes its own node's log only
        self.orphaned = False  # set when the process that started this agent went away
        self.parent = os.getppid()
        self.logs = {
            node: open(os.path.join(spec.stdouterr_dir, name), "a", encoding="utf-8", buffering=1)
            for node, name in names.items()
        }
        self.master = next(iter(self.logs))
        self.terminating = False
        self.timed_out = False
        self.started = time.time()
        self.env = {**os.environ, **spec.env}

    def say(self, line: str, node: str | None = None) -> None:
        """A line in the master node's execution log, and in ``node``'s own if it has one."""
        text = f"{_utc()} {mask(line, self.spec.secret_values)}\n"
        self.logs[self.master].write(text)
        if node is not None and node != self.master and node in self.logs:
            self.logs[node].write(text)

    def record(
        self, exit_code: int | None, phase: str, error: dict | None = None, task: dict | None = None
    ) -> None:
        _write_json_atomically(
            os.path.join(self.spec.record_dir, EXIT_FILE),
            {
                "exit_code": exit_code,
                "phase": phase,
                "error": error,
                "started": self.started,
                "ended": time.time(),
                "task": {k: task[k] for k in ("name", "node", "stdout", "stderr")}
                if task and self.several_nodes
                else None,
            },
        )

    def on_sigterm(self, signum, frame) -> None:
        # The whole session got it; note it and keep waiting so the exit code is recorded.
        self.terminating = True
        self.orphaned = self.spec.node_lost_error is not None and os.getppid() != self.parent

    def mine(self, tasks: list) -> list:
        """The tasks this agent runs: all, or its own node's."""
        return [t for t in tasks if self.spec.node is None or t["node"] == self.spec.node]

    def _single(self, command: str, stdout: str, stderr: str) -> list:
        return [
            {
                "name": "job",
                "node": None,
                "command": command,
                "env": {},
                "cwd": self.spec.cwd,
                "stdout": stdout,
                "stderr": stderr,
                "main": True,
            }
        ]

    def run_tasks(self, tasks: list, phase: str) -> tuple[int, dict | None]:
        """Start ``tasks`` and wait until every main one has ended, one has failed, the job is
        terminated or out of time; then stop what is left. Returns (exit code, the task it
        came from): the first failure's, else that of a main task stopped, else (0, None).
        Codes are the shell's: 128+N for a process ended by signal N."""
        running = []
        for task in tasks:
            out_path = os.path.join(self.spec.stdouterr_dir, task["stdout"])
            err_path = os.path.join(self.spec.stdouterr_dir, task["stderr"])
            with open(out_path, "ab") as out, open(err_path, "ab") as err:
                child = subprocess.Popen(
                    _shell() + [task["command"]],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=task["cwd"],
                    env={**self.env, **task["env"]},
                    close_fds=True,
                    # Several tasks: each in its own group, so one can be stopped alone.
                    process_group=0 if len(tasks) > 1 else None,
                )
            running.append((task, child))
            self.say(
                f"{self._label(phase, task, tasks)} started as process {child.pid}.", task["node"]
            )
        deadline = None if self.spec.max_seconds is None else self.started + self.spec.max_seconds
        failed = None
        while True:
            for task, child in list(running):
                code = child.poll()
                if code is None:
                    continue
                running.remove((task, child))
                code = 128 - code if code < 0 else code
                self.say(
                    f"{self._label(phase, task, tasks)} exited with code {code}.", task["node"]
                )
                if code != 0 and failed is None:
                    failed = (code, task)
            if failed or self.terminating or not any(t.get("main", True) for t, _ in running):
                break
            if deadline is not None and time.time() >= deadline:
                self.timed_out = True
                self.say(
                    f"The job exceeded its maxWallClockTime ({self.spec.max_seconds:g} s); "
                    "stopping it."
                )
                break
            time.sleep(0.02)
        stopped = self._stop(running, phase, tasks)
        if failed:
            return failed
        mains = [(code, task) for code, task in stopped if task.get("main", True)]
        return mains[0] if mains else (0, None)

    def _label(self, phase: str, task: dict, tasks: list) -> str:
        if len(tasks) == 1 and task["node"] in (None, self.master):
            return phase
        return f"{phase} process {task['name']} on node {task['node']}"

    def _stop(self, running: list, phase: str, tasks: list) -> list:
        """SIGTERM each left task's process group, SIGKILL after the grace period; returns
        [(exit code, task)] of those stopped."""
        if not running:
            return []
        own_group = os.getpgid(0)
        for task, child in running:
            self.say(f"Stopping {self._label(phase, task, tasks)}.", task["node"])
            if os.getpgid(child.pid) == own_group:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # this process must live on
                _signal_group(own_group, signal.SIGTERM)
            else:
                _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        while time.monotonic() < deadline and any(c.poll() is None for _, c in running):
            time.sleep(0.02)
        stopped = []
        for task, child in running:
            if child.poll() is None and os.getpgid(child.pid) == own_group:
                child.kill()  # the rest of the group gets SIGKILL in finish()
            elif child.poll() is None:
                _signal_group(child.pid, signal.SIGKILL)
            code = child.wait()
            stopped.append((128 - code if code < 0 else code, task))
        return stopped

    def run(self) -> int:
        spec = self.spec
        signal.signal(signal.SIGTERM, self.on_sigterm)
        if self.spec.node_lost_error is not None and os.getppid() != self.parent:
            self.terminating = self.orphaned = True  # its starter ended before this handler
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for line in spec.notes:
            self.say(line)
        self.say(
            f"Node agent pid {os.getpid()} (process group {os.getpgid(0)}); working directory "
            f"{spec.cwd}."
        )
        if spec.failure:
            self.say(f"The job cannot run here: {spec.failure['message']}")
            self.record(NOT_STARTED_EXIT_CODE, "launch", spec.failure)
            return 0
        if spec.preparation_tasks:
            preparation = self.mine(spec.preparation_tasks)
        elif spec.preparation:
            preparation = self._single(
                spec.preparation, "stdout-job_prep.txt", "stderr-job_prep.txt"
            )
        else:
            preparation = []
        if preparation:
            self.say(f"Job preparation command line: {spec.preparation}")
            code, task = self.run_tasks(preparation, "Job preparation")
            if code != 0 or self.terminating or self.timed_out:
                self.record(code, "jobPreparation", self._stop_error(code, "jobPreparation"), task)
                self.say("The job's command was not started.")
                return 0
        if self.terminating:
            self.record(128 + signal.SIGTERM, "job", self._stop_error(0, "job"))
            return 0
        tasks = (
            self.mine(spec.tasks)
            if spec.tasks
            else self._single(spec.command, "stdout.txt", "stderr.txt")
        )
        for task in tasks:
            label = self._label("Job", task, tasks)
            self.say(f"{label} command line: {task['command']}", task["node"])
            expanded = expand(task["command"], {**self.env, **task["env"]})
            self.say(f"{label} expanded: {expanded}", task["node"])
        code, task = self.run_tasks(tasks, "Job")
        if len(tasks) > 1 and spec.node is None:
            self.say(f"The job ended with exit code {code}.")
        self.record(code, "job", self._stop_error(code, "job"), task)
        return 0

    def finish(self) -> None:
        """End like a node's container: nothing the job started in its session survives it.

        SIGKILL to every other process of the session, then to this one's group (this
        process included: its work is recorded by now)."""
        self.say("Node agent finished.")
        for log in self.logs.values():
            log.close()
        me = os.getpid()
        for pid in group_members(os.getpgid(0)):
            if pid != me:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        _signal_group(os.getpgid(0), signal.SIGKILL)

    def _stop_error(self, code: int, phase: str) -> dict | None:
        if self.orphaned:
            return self.spec.node_lost_error
        if self.timed_out:
            return {
                "code": "JobMaxWallClockTimeExceeded",
                "message": f"The job ran longer than its constraints.maxWallClockTime "
                f"({self.spec.max_seconds:g} s) and was stopped.",
            }
        if self.terminating:
            return {"code": "JobTerminated", "message": "The job was terminated (SIGTERM)."}
        return None


def _die_with_parent() -> None:
    """Have the kernel send SIGTERM when the parent ends (Linux prctl PR_SET_PDEATHSIG), so
    an agent started by a node's process stops its job when that node goes away."""
    import ctypes

    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # it ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_over(spec: LaunchSpec) -> None:
    """Fork a watchdog that outlives this agent in its session: if the agent is killed
    outright (SIGKILL, as a Ray worker's children are when it dies), it stops what is left of
    the session and records ``spec.node_lost_error``, so no process of the job lingers and
    the job's record says why it ended. An agent that ends normally kills it in finish()."""
    agent = os.getpid()
    if os.fork():
        return
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the session's own stop is not for it
        while os.getppid() == agent:
            time.sleep(0.2)
        me = os.getpid()
        for signum, pause in ((signal.SIGTERM, TERMINATE_GRACE_SECONDS), (signal.SIGKILL, 0)):
            for pid in group_members(os.getsid(0)):
                if pid != me:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signum)
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline and set(group_members(os.getsid(0))) - {me}:
                time.sleep(0.05)
        if read_outcome(spec.record_dir) is None:
            _write_json_atomically(
                os.path.join(spec.record_dir, EXIT_FILE),
                {
                    "exit_code": None,
                    "phase": "job",
                    "error": spec.node_lost_error,
                    "ended": time.time(),
                },
            )
    finally:
        os._exit(0)


def _run_wrapper(attached: bool = False) -> int:
    """``nodeagent.py run``: read the spec, detach, print the detached pid, run the job.

    ``nodeagent.py run-attached`` (``attached``): the same without the fork, for a starter
    that keeps the agent as its child and wants it to end with it (a Ray actor)."""
    starter = os.getppid()
    spec = LaunchSpec(**json.loads(sys.stdin.buffer.read().decode("utf-8")))
    if not attached and os.fork():
        # The server waits for this first process; the job runs in the child, which init
        # adopts, so no zombie is ever left with the server.
        os._exit(0)
    os.setsid()  # own session and process group: outlives the server, killable as a group
    if attached:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # until the wrapper handles it
        _die_with_parent()
    # Claim the record before the server learns the pid: a server restarted after a crash
    # mid-launch finds either this claim (and tracks the job) or its own (and this exits).
    pid = os.getpid()
    claim = JobHandle(pid, _start_ticks(pid) or 0, _boot_id(), spec.record_dir)
    if not _create_exclusively(os.path.join(spec.record_dir, AGENT_FILE), claim.to_json()):
        os._exit(0)
    with contextlib.suppress(OSError):  # a server that died meanwhile finds the claim
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    if attached and spec.node_lost_error is not None:
        _watch_over(spec)
    wrapper = None
    try:
        wrapper = _Wrapper(spec)
        wrapper.parent = starter if attached else wrapper.parent
        wrapper.run()
        wrapper.finish()
        return 0
    except BaseException as err:  # record *something*: a silent death reads as "vanished"
        try:
            if wrapper is not None:
                wrapper.say(f"The node agent failed: {type(err).__name__}: {err}")
            _write_json_atomically(
                os.path.join(spec.record_dir, EXIT_FILE),
                {
                    "exit_code": NOT_STARTED_EXIT_CODE,
                    "phase": "launch",
                    "ended": time.time(),
                    "error": {
                        "code": "NodeAgentFailed",
                        "message": "The node agent could not run the job: "
                        f"{type(err).__name__}: {err}",
                    },
                },
            )
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    if sys.argv[1:] == ["run"]:
        sys.exit(_run_wrapper())
    if sys.argv[1:] == ["run-attached"]:
        sys.exit(_run_wrapper(attached=True))
    sys.stderr.write(
        "usage: nodeagent.py run   (the local cloud starts this; the job spec comes on stdin)\n"
    )
    sys.exit(2)
