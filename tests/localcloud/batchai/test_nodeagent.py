"""The node agent runs real processes on this host: these tests start them and watch them end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from quickstart.localcloud.batchai import nodeagent
from quickstart.localcloud.batchai.nodeagent import JobHandle, NodeContext, plan_job

SEGMENT = "sub/rg/workspaces/ws/experiments/exp/jobs/job/0123-uuid"


@pytest.fixture
def node(tmp_path) -> NodeContext:
    share = tmp_path / "shares" / "myshare"
    share.mkdir(parents=True)
    mounts = tmp_path / "node" / "mounts"
    mounts.mkdir(parents=True)
    (mounts / "afs").symlink_to(share, target_is_directory=True)
    return NodeContext(
        mount_root=str(mounts),
        job_temp_root=str(tmp_path / "node" / "jobs"),
        default_python=sys.executable,
        num_gpus=0,
    )


def share_of(node: NodeContext) -> Path:
    return Path(node.mount_root) / "afs"


def job_props(**toolkit) -> dict:
    props = {
        "nodeCount": 1,
        "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/afs",
        "inputDirectories": [{"id": "SAMPLE", "path": "$AZ_BATCHAI_MOUNT_ROOT/afs/sample"}],
        "outputDirectories": [
            {"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/afs", "pathSuffix": "Models"}
        ],
    }
    props.update(toolkit or {"customToolkitSettings": {"commandLine": "echo hello"}})
    return props


def wait_for_end(handle: JobHandle, timeout: float = 30) -> tuple[str, nodeagent.Outcome]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, outcome = nodeagent.probe(handle)
        if state != "running":
            return state, outcome
        time.sleep(0.02)
    nodeagent.terminate(handle, grace=0.5)
    raise AssertionError("the job did not end in time")


def assert_no_process_left(handle: JobHandle) -> None:
    deadline = time.monotonic() + 5
    while nodeagent.group_alive(handle) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert nodeagent.group_members(handle.pid) == []


def process_lives(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def run_job(node, props, secrets=None, timeout=30):
    plan = plan_job(
        props,
        job_name="rg/ws/exp/job",
        segment=SEGMENT,
        node=node,
        job_mount_root=os.path.join(node.job_temp_root, "mounts"),
        secret_values=secrets or {},
    )
    handle = nodeagent.launch(plan.spec)
    state, outcome = wait_for_end(handle, timeout)
    assert_no_process_left(handle)
    return plan, handle, state, outcome


# ---------------------------------------------------------------------- planning


def test_plan_lays_out_the_documented_paths_and_variables(node):
    plan = plan_job(
        job_props(),
        job_name="j",
        segment=SEGMENT,
        node=node,
        job_mount_root="/jm",
        secret_values={"TOKEN": "s3cret"},
    )
    root = os.path.join(node.mount_root, "afs", SEGMENT)
    assert plan.stdouterr_dir == os.path.join(root, "stdouterr")
    assert plan.output_dirs == {"MODEL": os.path.join(root, "outputs", "Models")}
    env = plan.spec.env
    assert env["AZ_BATCHAI_MOUNT_ROOT"] == node.mount_root
    assert env["AZ_BATCHAI_INPUT_SAMPLE"] == os.path.join(node.mount_root, "afs", "sample")
    assert env["AZ_BATCHAI_OUTPUT_MODEL"] == plan.output_dirs["MODEL"]
    assert env["AZ_BATCHAI_STDOUTERR_DIR"] == plan.stdouterr_dir
    assert env["AZ_BATCHAI_JOB_MOUNT_ROOT"] == "/jm"
    assert env["AZ_BATCHAI_NUM_GPUS"] == "0"
    assert env["TOKEN"] == "s3cret" and plan.spec.secret_values == ["s3cret"]
    assert plan.tool_type == "custom"


def test_output_directory_without_suffix_is_the_outputs_folder(node):
    props = job_props()
    props["outputDirectories"] = [{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/afs"}]
    plan = plan_job(
        props, job_name="j", segment=SEGMENT, node=node, job_mount_root="/jm", secret_values={}
    )
    assert plan.output_dirs["OUT"] == os.path.join(node.mount_root, "afs", SEGMENT, "outputs")


def test_cntk_python_runs_the_local_clouds_interpreter_or_the_given_one(node):
    cntk = {
        "pythonScriptFilePath": "$AZ_BATCHAI_INPUT_SAMPLE/ConvNet_MNIST.py",
        "commandLineArgs": "$AZ_BATCHAI_INPUT_SAMPLE $AZ_BATCHAI_OUTPUT_MODEL",
    }
    plan = plan_job(
        job_props(cntkSettings=cntk),
        job_name="j",
        segment=SEGMENT,
        node=node,
        job_mount_root="/jm",
        secret_values={},
    )
    script = os.path.join(node.mount_root, "afs", "sample", "ConvNet_MNIST.py")
    assert plan.spec.command == (
        f"exec {sys.executable} {script} $AZ_BATCHAI_INPUT_SAMPLE $AZ_BATCHAI_OUTPUT_MODEL"
    )
    assert plan.tool_type == "cntk" and plan.spec.failure is None
    assert any(sys.executable in note for note in plan.spec.notes)
    cntk["pythonInterpreterPath"] = "/opt/py/bin/python3"
    plan = plan_job(
        job_props(cntkSettings=cntk),
        job_name="j",
        segment=SEGMENT,
        node=node,
        job_mount_root="/jm",
        secret_values={},
    )
    assert plan.spec.command.startswith("exec /opt/py/bin/python3 ")


def test_brainscript_is_planned_as_a_clear_failure(node):
    props = job_props(
        cntkSettings={
            "languageType": "BrainScript",
            "configFilePath": "$AZ_BATCHAI_INPUT_SAMPLE/x.cntk",
        }
    )
    plan = plan_job(
        props, job_name="j", segment=SEGMENT, node=node, job_mount_root="/jm", secret_values={}
    )
    assert plan.spec.command is None
    assert "only Python CNTK jobs" in plan.spec.failure["message"]


def test_a_path_outside_the_known_variables_is_refused(node):
    props = job_props()
    props["stdOutErrPathPrefix"] = "$NO_SUCH_MOUNT/afs"
    with pytest.raises(nodeagent.PlanError, match="NO_SUCH_MOUNT"):
        plan_job(
            props, job_name="j", segment=SEGMENT, node=node, job_mount_root="/jm", secret_values={}
        )


def test_iso_durations():
    assert nodeagent.duration_seconds("P7D") == 7 * 86400
    assert nodeagent.duration_seconds("PT1H30M5S") == 5405
    with pytest.raises(ValueError):
        nodeagent.duration_seconds("7 days")


# ---------------------------------------------------------------------- running


def test_a_job_runs_with_its_environment_and_writes_its_output_on_the_share(node):
    script = textwrap.dedent("""\
        echo "out $AZ_BATCHAI_OUTPUT_MODEL"; echo "err line" >&2
        echo "$GREETING $TOKEN" > "$AZ_BATCHAI_OUTPUT_MODEL/result.txt"
        pwd > "$AZ_BATCHAI_OUTPUT_MODEL/cwd.txt"
    """)
    props = job_props(customToolkitSettings={"commandLine": script})
    props["environmentVariables"] = [{"name": "GREETING", "value": "hello"}]
    plan, handle, state, outcome = run_job(node, props, secrets={"TOKEN": "s3cret-value"})
    assert state == "ended" and outcome.succeeded and outcome.exit_code == 0
    stdouterr = share_of(node) / SEGMENT / "stdouterr"
    assert (stdouterr / "stdout.txt").read_text() == f"out {plan.output_dirs['MODEL']}\n"
    assert (stdouterr / "stderr.txt").read_text() == "err line\n"
    model = share_of(node) / SEGMENT / "outputs" / "Models"
    assert (model / "result.txt").read_text() == "hello s3cret-value\n"
    assert (model / "cwd.txt").read_text().strip() == plan.spec.env["AZ_BATCHAI_JOB_TEMP"]
    log = (stdouterr / "execution.log").read_text()
    assert "runs on this host" in log and "exited with code 0" in log
    assert "s3cret-value" not in log


def test_a_python_toolkit_job_says_which_interpreter_runs_it(node):
    sample = share_of(node) / "sample"
    sample.mkdir()
    (sample / "train.py").write_text(
        "import sys\nprint('args', sys.argv[1:])\nprint(sys.executable, file=sys.stderr)\n"
    )
    props = job_props(
        cntkSettings={
            "pythonScriptFilePath": "$AZ_BATCHAI_INPUT_SAMPLE/train.py",
            "commandLineArgs": "$AZ_BATCHAI_INPUT_SAMPLE 'two words'",
        }
    )
    plan, handle, state, outcome = run_job(node, props)
    assert outcome.succeeded
    stdouterr = share_of(node) / SEGMENT / "stdouterr"
    assert (stdouterr / "stdout.txt").read_text() == f"args ['{sample}', 'two words']\n"
    assert (stdouterr / "stderr.txt").read_text().strip() == sys.executable
    assert f"Interpreter: {sys.executable}" in (stdouterr / "execution.log").read_text()


def test_a_failing_job_records_its_exit_code(node):
    plan, handle, state, outcome = run_job(
        node, job_props(customToolkitSettings={"commandLine": "echo bad >&2; exit 3"})
    )
    assert state == "ended" and outcome.exit_code == 3 and not outcome.succeeded
    assert outcome.phase == "job" and outcome.error is None


def test_brainscript_job_fails_with_its_reason_in_execution_log(node):
    props = job_props(cntkSettings={"languageType": "BrainScript", "configFilePath": "/x.cntk"})
    plan, handle, state, outcome = run_job(node, props)
    assert outcome.exit_code == nodeagent.NOT_STARTED_EXIT_CODE
    assert outcome.error["code"] == "UnsupportedToolkit"
    log = (share_of(node) / SEGMENT / "stdouterr" / "execution.log").read_text()
    assert "only Python CNTK jobs" in log


def test_failing_job_preparation_stops_the_job(node):
    props = job_props(customToolkitSettings={"commandLine": "touch $AZ_BATCHAI_OUTPUT_MODEL/ran"})
    props["jobPreparation"] = {"commandLine": "echo preparing; exit 5"}
    plan, handle, state, outcome = run_job(node, props)
    assert outcome.exit_code == 5 and outcome.phase == "jobPreparation"
    stdouterr = share_of(node) / SEGMENT / "stdouterr"
    assert (stdouterr / "stdout-job_prep.txt").read_text() == "preparing\n"
    assert not (Path(plan.output_dirs["MODEL"]) / "ran").exists()


def test_output_streams_while_the_job_runs(node):
    props = job_props(customToolkitSettings={"commandLine": "echo first; sleep 30; echo never"})
    plan = plan_job(
        props,
        job_name="j",
        segment=SEGMENT,
        node=node,
        job_mount_root="/tmp/jm-x",
        secret_values={},
    )
    handle = nodeagent.launch(plan.spec)
    try:
        stdout = Path(plan.stdouterr_dir) / "stdout.txt"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (stdout.exists() and stdout.read_text()):
            time.sleep(0.02)
        assert stdout.read_text() == "first\n"
        assert nodeagent.probe(handle) == ("running", None)
    finally:
        nodeagent.terminate(handle, grace=1)
    assert_no_process_left(handle)
    state, outcome = nodeagent.probe(handle)
    assert state == "ended" and outcome.exit_code == 128 + signal.SIGTERM
    assert outcome.error["code"] == "JobTerminated"


def test_terminate_kills_the_whole_process_group_even_a_stubborn_one(node):
    # A background child that ignores SIGTERM: only SIGKILL to the group ends it.
    command = (
        "trap '' TERM; (trap '' TERM; sleep 60) & echo $! > $AZ_BATCHAI_OUTPUT_MODEL/bg; sleep 60"
    )
    plan = plan_job(
        job_props(customToolkitSettings={"commandLine": command}),
        job_name="j",
        segment=SEGMENT,
        node=node,
        job_mount_root="/tmp/jm-y",
        secret_values={},
    )
    handle = nodeagent.launch(plan.spec)
    bg_file = Path(plan.output_dirs["MODEL"]) / "bg"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (bg_file.exists() and bg_file.read_text().strip()):
        time.sleep(0.02)
    background = int(bg_file.read_text())
    assert os.getpgid(background) == handle.pid
    nodeagent.terminate(handle, grace=0.3)
    assert_no_process_left(handle)
    assert not process_lives(background)


def test_background_processes_end_with_the_job(node):
    command = "sleep 60 & echo $! > $AZ_BATCHAI_OUTPUT_MODEL/bg; echo done"
    plan, handle, state, outcome = run_job(
        node, job_props(customToolkitSettings={"commandLine": command})
    )
    assert outcome.succeeded
    background = int((Path(plan.output_dirs["MODEL"]) / "bg").read_text())
    assert not process_lives(background)


def test_a_job_over_its_wall_clock_limit_is_stopped(node):
    props = job_props(customToolkitSettings={"commandLine": "sleep 60"})
    props["constraints"] = {"maxWallClockTime": "PT0.5S"}
    started = time.monotonic()
    plan, handle, state, outcome = run_job(node, props)
    assert time.monotonic() - started < 10
    assert outcome.error["code"] == "JobMaxWallClockTimeExceeded"
    assert outcome.exit_code == 128 + signal.SIGTERM


def test_a_job_outlives_the_process_that_launched_it(node, tmp_path):
    """The server is just a process: start a job from one that exits at once, then find the
    job again from here by its handle, as a restarted server does."""
    props = job_props(customToolkitSettings={"commandLine": "sleep 1; echo finished"})
    plan = plan_job(
        props,
        job_name="j",
        segment=SEGMENT,
        node=node,
        job_mount_root="/tmp/jm-z",
        secret_values={},
    )
    spec_file = tmp_path / "spec.json"
    import dataclasses
    import json

    spec_file.write_text(json.dumps(dataclasses.asdict(plan.spec)))
    launcher = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""\
            import json, sys
            from quickstart.localcloud.batchai import nodeagent
            spec = nodeagent.LaunchSpec(**json.load(open({str(spec_file)!r})))
            print(json.dumps(nodeagent.launch(spec).to_json()))
        """),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    handle = JobHandle.from_json(json.loads(launcher.stdout))
    assert nodeagent.probe(handle) == ("running", None)
    state, outcome = wait_for_end(handle)
    assert state == "ended" and outcome.succeeded
    assert (Path(plan.stdouterr_dir) / "stdout.txt").read_text() == "finished\n"
    assert_no_process_left(handle)


def test_a_job_killed_without_a_record_is_reported_vanished(node):
    plan = plan_job(
        job_props(customToolkitSettings={"commandLine": "sleep 60"}),
        job_name="j",
        segment=SEGMENT,
        node=node,
        job_mount_root="/tmp/jm-w",
        secret_values={},
    )
    handle = nodeagent.launch(plan.spec)
    os.killpg(handle.pid, signal.SIGKILL)
    state, outcome = wait_for_end(handle)
    assert state == "vanished" and outcome.exit_code is None
    assert outcome.error["code"] == "JobProcessVanished"
    assert "without recording an exit code" in outcome.error["message"]
    assert_no_process_left(handle)


def test_job_level_mounts_are_links_under_the_job_mount_root(node, tmp_path):
    target = tmp_path / "other-share"
    target.mkdir()
    (target / "data.txt").write_text("mounted")
    props = job_props(
        customToolkitSettings={"commandLine": "cat $AZ_BATCHAI_JOB_MOUNT_ROOT/jobafs/data.txt"}
    )
    jm = tmp_path / "jobmounts"
    plan = plan_job(
        props,
        job_name="j",
        segment=SEGMENT,
        node=node,
        job_mount_root=str(jm),
        secret_values={},
        job_mounts={"jobafs": str(target)},
    )
    handle = nodeagent.launch(plan.spec)
    state, outcome = wait_for_end(handle)
    assert outcome.succeeded
    assert (Path(plan.stdouterr_dir) / "stdout.txt").read_text() == "mounted"
