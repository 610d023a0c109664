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

# Toolkits whose launch is "<python> <script> <args>"; the value names the args field.
PYTHON_TOOLKITS = {
    "cntkSettings": "commandLineArgs",
    "pyTorchSettings": "commandLineArgs",
    "tensorFlowSettings": "masterCommandLineArgs",
    "caffeSettings": "commandLineArgs",
    "caffe2Settings": "commandLineArgs",
    "chainerSettings": "commandLineArgs",
    "horovodSettings": "commandLineArgs",
}
TOOL_TYPES = {
    "cntkSettings": "cntk",
    "pyTorchSettings": "pytorch",
    "tensorFlowSettings": "tensorflow",
    "caffeSettings": "caffe",
    "caffe2Settings": "caffe2",
    "chainerSettings": "chainer",
    "customToolkitSettings": "custom",
    "customMpiSettings": "custommpi",
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
) -> JobPlan:
    """Work out the environment, directories and command of one job (nothing is touched).

    ``props`` are the job's stored properties (secret values are given separately, by name);
    ``job_mounts`` maps each job-level mount's relativeMountPath to the folder it mounts.
    Raises PlanError only for what makes the job's directories unknowable; a job that can be
    laid out but not run (BrainScript, MPI without mpirun) gets ``spec.failure`` instead, so
    it fails like a real job with its stdouterr/ and execution.log in place.
    """
    job_temp = os.path.join(node.job_temp_root, segment.rsplit("/", 1)[-1])
    env = _node_environment(node, job_mount_root, job_temp)
    host_env = dict(os.environ)
    stdouterr_dir, record_dir = _plan_stdouterr(props, segment, env, host_env)
    _plan_inputs(props, env, host_env)
    outputs = _plan_outputs(props, segment, env, host_env)
    _add_job_variables(props, secret_values, env)

    toolkit = toolkit_of(props)
    notes = _host_notes(job_name, props)
    command, failure = _plan_command(toolkit, props, env, host_env, node, notes)
    spec = LaunchSpec(
        job=job_name,
        record_dir=record_dir,
        stdouterr_dir=stdouterr_dir,
        cwd=job_temp,
        env=env,
        secret_values=[v for v in secret_values.values() if v],
        preparation=(props.get("jobPreparation") or {}).get("commandLine"),
        command=command,
        failure=failure,
        max_seconds=_max_seconds(props),
        notes=notes,
        make_dirs=[
            stdouterr_dir,
            record_dir,
            job_temp,
            env["AZ_BATCHAI_SHARED_JOB_TEMP"],
            job_mount_root,
            *outputs.values(),
        ],
        links={
            os.path.join(job_mount_root, rel): target for rel, target in (job_mounts or {}).items()
        },
    )
    return JobPlan(
        segment=segment,
        stdouterr_dir=stdouterr_dir,
        output_dirs=outputs,
        tool_type=TOOL_TYPES.get(toolkit, "custom"),
        spec=spec,
    )


def _node_environment(node: NodeContext, job_mount_root: str, job_temp: str) -> dict:
    """The ``$AZ_BATCHAI_*`` variables a node set for every job, before its directories."""
    return {
        "AZ_BATCHAI_MOUNT_ROOT": node.mount_root,
        "AZ_BATCHAI_JOB_MOUNT_ROOT": job_mount_root,
        "AZ_BATCHAI_JOB_TEMP_DIR": node.job_temp_root,
        "AZ_BATCHAI_JOB_TEMP": job_temp,
        "AZ_BATCHAI_SHARED_JOB_TEMP": os.path.join(job_temp, "shared"),
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
) -> tuple[str | None, dict | None]:
    """(command line, None), or (None, failure) for a job that can be laid out but not run
    here; adds the interpreter and shell to ``notes``."""
    try:
        command, interpreter = _command_line(
            toolkit,
            props.get(toolkit) if toolkit else None,
            env,
            host_env,
            node,
            props.get("nodeCount") or 1,
        )
    except PlanError as err:
        return None, {"code": err.code, "message": err.message}
    if interpreter:
        notes.append(f"Interpreter: {interpreter}")
    notes.append(f"Shell: {' '.join(_shell())} (command lines and $VARIABLES as on a node)")
    return command, None


def _max_seconds(props: dict) -> float | None:
    """constraints.maxWallClockTime in seconds, or None without one."""
    wall_clock = (props.get("constraints") or {}).get("maxWallClockTime")
    return duration_seconds(wall_clock) if wall_clock else None


def _command_line(
    toolkit: str | None,
    settings: dict | None,
    env: dict,
    host_env: dict,
    node: NodeContext,
    node_count: int,
) -> tuple[str, str | None]:
    """(shell command line, interpreter or None) for the job's toolkit, or PlanError."""
    if toolkit is None or settings is None:
        raise PlanError("InvalidParameter", "The job has no toolkit settings.")
    if toolkit == "customToolkitSettings":
        return settings.get("commandLine") or "", None
    if toolkit == "customMpiSettings":
        return _with_mpi(
            settings.get("commandLine") or "", settings.get("processCount"), node_count
        ), None
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
    if toolkit == "tensorFlowSettings" and (
        (settings.get("workerCount") or 1) > 1 or (settings.get("parameterServerCount") or 0) > 0
    ):
        raise PlanError(
            "UnsupportedToolkit",
            "The local cloud runs TensorFlow jobs as a single master process; set "
            "workerCount to 1 and parameterServerCount to 0 (or leave them out).",
        )
    script = settings.get("pythonScriptFilePath")
    if not script:
        raise PlanError("InvalidParameter", f"{toolkit}.pythonScriptFilePath is required.")
    interpreter = expand(
        settings.get("pythonInterpreterPath") or node.default_python, {**host_env, **env}
    )
    args = settings.get(PYTHON_TOOLKITS[toolkit]) or ""
    line = f"{shlex.quote(interpreter)} {shlex.quote(expand(script, {**host_env, **env}))}"
    if args:
        line += " " + args  # the shell expands $VARs and honours quoting, as on a node
    process_count = settings.get("processCount")
    if toolkit in ("pyTorchSettings",) and process_count is None:
        process_count = 1
    return _with_mpi(line, process_count, node_count), interpreter


def _with_mpi(line: str, process_count: int | None, node_count: int) -> str:
    count = node_count if process_count is None else process_count
    if count <= 1:
        return "exec " + line
    if shutil.which("mpirun") is None:
        raise PlanError(
            "UnsupportedToolkit",
            f"processCount {count} needs MPI (mpirun), which this host lacks; set "
            "processCount to 1 (and nodeCount to 1) to run the job as one process.",
        )
    return f"exec mpirun -np {count} {line}"


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

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.error is None


def launch(spec: LaunchSpec, python: str | None = None) -> JobHandle:
    """Lay out the job's folders and start its detached wrapper; returns once it is running.

    Raises OSError if a folder cannot be made or the wrapper cannot start.
    """
    # Mount first, then make the job's folders: they may lie on a job-level mount (stdouterr
    # under $AZ_BATCHAI_JOB_MOUNT_ROOT/<mount>), and a folder made first would block the link.
    for link, target in spec.links.items():
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(target, link, target_is_directory=True)
    for folder in spec.make_dirs:
        os.makedirs(folder, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(spec.record_dir, EXIT_FILE))  # a stale record must never count
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
    """Live (non-zombie) processes whose process group is ``pgid`` (Linux /proc)."""
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
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
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
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(handle):
            return
        time.sleep(0.02)
    _signal_group(handle.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while group_alive(handle) and time.monotonic() < deadline:
        time.sleep(0.02)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


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
    """The detached process that runs one job and records how it ended."""

    def __init__(self, spec: LaunchSpec):
        self.spec = spec
        self.log = open(
            os.path.join(spec.stdouterr_dir, "execution.log"), "a", encoding="utf-8", buffering=1
        )
        self.terminating = False
        self.started = time.time()
        self.env = {**os.environ, **spec.env}

    def say(self, line: str) -> None:
        self.log.write(f"{_utc()} {mask(line, self.spec.secret_values)}\n")

    def record(self, exit_code: int | None, phase: str, error: dict | None = None) -> None:
        _write_json_atomically(
            os.path.join(self.spec.record_dir, EXIT_FILE),
            {
                "exit_code": exit_code,
                "phase": phase,
                "error": error,
                "started": self.started,
                "ended": time.time(),
            },
        )

    def on_sigterm(self, signum, frame) -> None:
        # The whole group got it; note it and keep waiting so the exit code is recorded.
        self.terminating = True

    def run_phase(self, command: str, out_name: str, err_name: str, phase: str) -> int:
        """Run ``command`` through the shell; returns the exit code, 128+N for signal N."""
        with (
            open(os.path.join(self.spec.stdouterr_dir, out_name), "ab") as out,
            open(os.path.join(self.spec.stdouterr_dir, err_name), "ab") as err,
        ):
            child = subprocess.Popen(
                _shell() + [command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.spec.cwd,
                env=self.env,
                close_fds=True,
            )
        self.say(f"{phase} started as process {child.pid}.")
        deadline = None if self.spec.max_seconds is None else self.started + self.spec.max_seconds
        try:
            code = child.wait(
                timeout=None if deadline is None else max(0.0, deadline - time.time())
            )
        except subprocess.TimeoutExpired:
            self.say(
                f"The job exceeded its maxWallClockTime ({self.spec.max_seconds:g} s); stopping it."
            )
            self.timed_out = True
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # this process must live to record it
            _signal_group(os.getpgid(0), signal.SIGTERM)
            try:
                code = child.wait(timeout=TERMINATE_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
        return 128 - code if code < 0 else code

    def run(self) -> int:
        spec = self.spec
        self.timed_out = False
        signal.signal(signal.SIGTERM, self.on_sigterm)
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
        if spec.preparation:
            self.say(f"Job preparation command line: {spec.preparation}")
            code = self.run_phase(
                spec.preparation, "stdout-job_prep.txt", "stderr-job_prep.txt", "Job preparation"
            )
            self.say(f"Job preparation exited with code {code}.")
            if code != 0 or self.terminating or self.timed_out:
                self.record(code, "jobPreparation", self._stop_error(code, "jobPreparation"))
                self.say("The job's command was not started.")
                return 0
        if self.terminating:
            self.record(128 + signal.SIGTERM, "job", self._stop_error(0, "job"))
            return 0
        self.say(f"Command line: {spec.command}")
        self.say("Expanded: " + expand(spec.command, self.env))
        code = self.run_phase(spec.command, "stdout.txt", "stderr.txt", "Job")
        self.say(f"Job exited with code {code}.")
        self.record(code, "job", self._stop_error(code, "job"))
        return 0

    def finish(self) -> None:
        """End like a node's container: nothing the job started in its group survives it.

        SIGKILL to the whole group, this process included (its work is recorded by now)."""
        self.say("Node agent finished.")
        self.log.close()
        _signal_group(os.getpgid(0), signal.SIGKILL)

    def _stop_error(self, code: int, phase: str) -> dict | None:
        if self.timed_out:
            return {
                "code": "JobMaxWallClockTimeExceeded",
                "message": f"The job ran longer than its constraints.maxWallClockTime "
                f"({self.spec.max_seconds:g} s) and was stopped.",
            }
        if self.terminating:
            return {"code": "JobTerminated", "message": "The job was terminated (SIGTERM)."}
        return None


def _run_wrapper() -> int:
    """``nodeagent.py run``: read the spec, detach, print the detached pid, run the job."""
    spec = LaunchSpec(**json.loads(sys.stdin.buffer.read().decode("utf-8")))
    pid = os.fork()
    if pid:
        # The server waits for this first process; the job runs in the child, which init
        # adopts, so no zombie is ever left with the server.
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
        os._exit(0)
    os.setsid()  # own session and process group: outlives the server, killable as a group
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    wrapper = None
    try:
        wrapper = _Wrapper(spec)
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
    sys.stderr.write(
        "usage: nodeagent.py run   (the local cloud starts this; the job spec comes on stdin)\n"
    )
    sys.exit(2)
