"""Microsoft.BatchAI 2018-05-01 on the local cloud, driven by the real azure-mgmt-batchai 2.0.0
client over HTTPS, with jobs that really run on this host (small shell/Python stand-ins)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import azure.mgmt.batchai.models as models
import pytest
import requests
from msrestazure.azure_exceptions import CloudError

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.batchai import nodeagent
from quickstart.localcloud.connection import requests_session
from tests.conftest import (
    make_batchai_client,
    make_credentials,
    make_file_service,
    make_resource_client,
)

RG, WS, CLUSTER, EXP = "myresourcegroup", "myworkspace", "mycluster", "myexperiment"
SHARE, MOUNT = "batchaiquickstart", "azurefileshare"
STAND_IN = """\
import os, sys
print("training on", sys.argv[1])
print("progress to stderr", file=sys.stderr)
for epoch in range(3):
    open(os.path.join(sys.argv[2], "ConvNet_MNIST_%d.dnn" % epoch), "w").write("model %d" % epoch)
"""


# ---------------------------------------------------------------------- helpers


def cluster_params(
    connection: dict,
    file_service,
    nodes: int = 1,
    share: str = SHARE,
    key: str | None = None,
    **scale,
) -> models.ClusterCreateParameters:
    """The quickstart's cluster: STANDARD_NC6, the share mounted at azurefileshare."""
    return models.ClusterCreateParameters(
        vm_size="STANDARD_NC6",
        scale_settings=models.ScaleSettings(
            manual=scale.get("manual") or models.ManualScaleSettings(target_node_count=nodes),
            auto_scale=scale.get("auto_scale"),
        )
        if scale.get("auto_scale") is None
        else models.ScaleSettings(auto_scale=scale["auto_scale"]),
        node_setup=models.NodeSetup(
            mount_volumes=models.MountVolumes(
                azure_file_shares=[
                    models.AzureFileShareReference(
                        account_name=connection["storage_account"],
                        credentials=models.AzureStorageCredentialsInfo(
                            account_key=key or connection["storage_key"]
                        ),
                        azure_file_url=f"https://{file_service.primary_endpoint}/{share}",
                        relative_mount_path=MOUNT,
                    )
                ]
            )
        ),
        user_account_settings=models.UserAccountSettings(
            admin_user_name="demoUser", admin_user_password="Adm1n-Passw0rd!"
        ),
    )


TOOLKITS = (
    "cntk_settings",
    "py_torch_settings",
    "tensor_flow_settings",
    "caffe_settings",
    "caffe2_settings",
    "chainer_settings",
    "custom_toolkit_settings",
    "custom_mpi_settings",
    "horovod_settings",
)


def job_params(cluster_id: str, command: str | None = None, *, node_count: int = 1, **extra):
    """A job like the quickstart's: input SAMPLE, output MODEL, stdouterr on the share.
    ``command`` runs through customToolkitSettings; a toolkit's settings in ``extra`` (say
    ``py_torch_settings=...``) run that toolkit; with neither, cntkSettings runs the stand-in."""
    if command:
        settings = {"custom_toolkit_settings": models.CustomToolkitSettings(command_line=command)}
    elif any(key in TOOLKITS for key in extra):
        settings = {}
    else:
        settings = {
            "cntk_settings": models.CNTKsettings(
                python_script_file_path="$AZ_BATCHAI_INPUT_SAMPLE/ConvNet_MNIST.py",
                command_line_args="$AZ_BATCHAI_INPUT_SAMPLE $AZ_BATCHAI_OUTPUT_MODEL",
            )
        }
    settings.update(extra)
    return models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster_id),
        node_count=node_count,
        container_settings=models.ContainerSettings(
            image_source_registry=models.ImageSourceRegistry(
                image="microsoft/cntk:2.1-gpu-python3.5-cuda8.0-cudnn6.0"
            )
        ),
        std_out_err_path_prefix=f"$AZ_BATCHAI_MOUNT_ROOT/{MOUNT}",
        input_directories=[
            models.InputDirectory(
                id="SAMPLE", path=f"$AZ_BATCHAI_MOUNT_ROOT/{MOUNT}/mnistcntksample"
            )
        ],
        output_directories=[
            models.OutputDirectory(
                id="MODEL", path_prefix=f"$AZ_BATCHAI_MOUNT_ROOT/{MOUNT}", path_suffix="Models"
            )
        ],
        **settings,
    )


def job_file_mount(env, share: str, relative: str) -> models.MountVolumes:
    """A job-level mount of Azure Files share ``share`` at $AZ_BATCHAI_JOB_MOUNT_ROOT/relative."""
    return models.MountVolumes(
        azure_file_shares=[
            models.AzureFileShareReference(
                account_name=env.connection["storage_account"],
                credentials=models.AzureStorageCredentialsInfo(
                    account_key=env.connection["storage_key"]
                ),
                azure_file_url=f"https://{env.files.primary_endpoint}/{share}",
                relative_mount_path=relative,
            )
        ]
    )


def wait_for(predicate, timeout: float = 30, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


def wait_for_job(client, name: str, states=("succeeded", "failed"), timeout: float = 30):
    return wait_for(
        lambda: (lambda j: j if j.execution_state in states else None)(
            client.jobs.get(RG, WS, EXP, name)
        ),
        timeout,
    )


def wait_for_idle_cluster(client, nodes: int = 1, name: str = CLUSTER):
    return wait_for(
        lambda: (lambda c: c if c.node_state_counts.idle_node_count >= nodes else None)(
            client.clusters.get(RG, WS, name)
        )
    )


def output_file(env, job: str, ident: str, name: str) -> Path:
    segment = env.client.jobs.get(RG, WS, EXP, job).job_output_directory_path_segment
    sub = "stdouterr" if ident == "stdouterr" else "outputs/Models"
    return env.share_dir / segment / sub / name


def read_pid_group(path: Path) -> tuple[int, int]:
    pid = int(wait_for(lambda: path.exists() and path.read_text().strip()))
    return pid, os.getpgid(pid)


def assert_group_gone(pgid: int, timeout: float = 10) -> None:
    wait_for(lambda: not nodeagent.group_members(pgid), timeout)


def sdk_env(cloud: LocalCloud, tmp_path: Path, nodes: int = 1) -> SimpleNamespace:
    """RG, share with the stand-in script, workspace, a ready cluster and an experiment."""
    connection = cloud.connection
    credentials = make_credentials(connection)
    resources = make_resource_client(connection, credentials)
    client = make_batchai_client(connection, credentials)
    files = make_file_service(connection)
    resources.resource_groups.create_or_update(RG, {"location": "eastus"})
    files.create_share(SHARE, fail_on_exist=False)
    files.create_directory(SHARE, "mnistcntksample", fail_on_exist=False)
    script = tmp_path / "ConvNet_MNIST.py"
    script.write_text(STAND_IN)
    files.create_file_from_path(SHARE, "mnistcntksample", "ConvNet_MNIST.py", str(script))
    client.workspaces.create(RG, WS, "eastus").result()
    cluster = client.clusters.create(
        RG, WS, CLUSTER, cluster_params(connection, files, nodes)
    ).result()
    client.experiments.create(RG, WS, EXP).result()
    wait_for_idle_cluster(client, nodes)
    return SimpleNamespace(
        cloud=cloud,
        connection=connection,
        client=client,
        resources=resources,
        files=files,
        cluster=cluster,
        share_dir=Path(cloud.state_dir) / "shares" / SHARE,
    )


def processes_under(folder: Path) -> list[int]:
    """Live processes working in, or with job variables pointing into, ``folder``."""
    found, marker = [], str(folder).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/environ", "rb") as environ:
                variables = environ.read()
        except OSError:
            continue
        if cwd.startswith(str(folder)) or marker in variables:
            found.append(int(entry))
    return found


@pytest.fixture(autouse=True)
def no_job_process_left(tmp_path):
    """Every test must end with none of its jobs' processes alive (no orphans)."""
    yield
    deadline = time.monotonic() + 10
    while processes_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = processes_under(tmp_path)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"job processes left behind: {left}"


@pytest.fixture
def env(local_cloud, tmp_path):
    return sdk_env(local_cloud, tmp_path)


# ---------------------------------------------------------------------- the tutorial


def test_the_tutorial_steps_run_a_job_and_tear_down(local_cloud, tmp_path):
    connection = local_cloud.connection
    credentials = make_credentials(connection)
    resources = make_resource_client(connection, credentials)
    client = make_batchai_client(connection, credentials)
    files = make_file_service(connection)
    resources.resource_groups.create_or_update(RG, {"location": "eastus"})
    assert files.create_share(SHARE, fail_on_exist=False)
    files.create_directory(SHARE, "mnistcntksample", fail_on_exist=False)
    script = tmp_path / "ConvNet_MNIST.py"
    script.write_text(STAND_IN)
    files.create_file_from_path(SHARE, "mnistcntksample", "ConvNet_MNIST.py", str(script))

    client.workspaces.create(RG, WS, "eastus")  # the quickstart does not wait: applied at once
    assert client.workspaces.get(RG, WS).provisioning_state == "succeeded"
    # read at once, not after the poller's Retry-After: under load the node may be up by then
    client.clusters.create(RG, WS, CLUSTER, cluster_params(connection, files), polling=False)
    cluster = client.clusters.get(RG, WS, CLUSTER)
    assert cluster.provisioning_state == "succeeded"
    assert cluster.allocation_state == "resizing" and cluster.current_node_count == 0
    seen = set()

    def idle():
        c = client.clusters.get(RG, WS, CLUSTER)
        counts = c.node_state_counts
        seen.add((c.allocation_state, counts.preparing_node_count, counts.idle_node_count))
        return c if counts.idle_node_count == 1 else None

    cluster = wait_for(idle, interval=0.01)
    assert cluster.allocation_state == "steady" and cluster.current_node_count == 1
    assert cluster.scale_settings.manual.target_node_count == 1
    assert ("steady", 1, 0) in seen  # the node was seen preparing before it was idle

    client.experiments.create(RG, WS, EXP)
    job = client.jobs.create(RG, WS, EXP, "myjob", job_params(cluster.id)).result()
    assert job.execution_state in ("queued", "running")
    assert job.tool_type == "cntk" and job.cntk_settings.language_type == "Python"
    job = wait_for_job(client, "myjob")
    assert job.execution_state == "succeeded", job.execution_info.errors
    assert (
        job.execution_info.exit_code == 0
        and job.execution_info.end_time >= job.execution_info.start_time
    )
    assert job.container_settings.image_source_registry.image.startswith("microsoft/cntk:2.1")
    segment = job.job_output_directory_path_segment
    sub = connection["subscription_id"]
    assert segment.startswith(f"{sub}/{RG}/workspaces/{WS}/experiments/{EXP}/jobs/myjob/")

    logs = list(
        client.jobs.list_output_files(
            RG, WS, EXP, "myjob", models.JobsListOutputFilesOptions(outputdirectoryid="stdouterr")
        )
    )
    assert [f.name for f in logs] == ["execution.log", "stderr.txt", "stdout.txt"]
    assert all(f.file_type == "file" and f.download_url for f in logs)
    assert f"/{SHARE}/{segment}/stdouterr/stdout.txt?" in logs[2].download_url
    stdout = requests.get(logs[2].download_url, verify=connection["ca_cert"])
    assert stdout.status_code == 200 and stdout.text.startswith("training on ")
    execution_log = requests.get(logs[0].download_url, verify=connection["ca_cert"]).text
    assert "runs on this host" in execution_log and "microsoft/cntk:2.1" in execution_log
    models_listed = list(
        client.jobs.list_output_files(
            RG, WS, EXP, "myjob", models.JobsListOutputFilesOptions(outputdirectoryid="MODEL")
        )
    )
    assert [f.name for f in models_listed] == [f"ConvNet_MNIST_{i}.dnn" for i in range(3)]
    assert models_listed[1].content_length == len("model 1")

    client.jobs.delete(RG, WS, EXP, "myjob")
    client.clusters.delete(RG, WS, CLUSTER)
    resources.resource_groups.delete(RG)
    with pytest.raises(CloudError) as err:
        client.jobs.get(RG, WS, EXP, "myjob")
    assert err.value.status_code == 404
    assert not resources.resource_groups.check_existence(RG)
    # The job's output stays on the share, as on Azure.
    assert (
        Path(local_cloud.state_dir) / "shares" / SHARE / segment / "outputs" / "Models"
    ).is_dir()


def test_async_operation_headers_and_bodies_on_the_wire(env):
    """Creates: 202, empty body, absolute status URLs and Retry-After 0; status bodies as §10.6."""
    connection = env.connection
    token = make_credentials(connection).token["access_token"]
    session = requests_session(connection)
    session.headers["Authorization"] = f"Bearer {token}"
    base = (
        f"{connection['resource_manager_url'].rstrip('/')}/subscriptions/{connection['subscription_id']}"
        f"/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{WS}"
    )
    body = env.client.clusters._serialize.body(
        job_params(env.cluster.id, "true"), "JobCreateParameters"
    )
    answer = session.put(f"{base}/experiments/{EXP}/jobs/wirejob?api-version=2018-05-01", json=body)
    assert answer.status_code == 202 and answer.content == b""
    assert answer.headers["Retry-After"] == "0"
    for header in ("Azure-AsyncOperation", "Location"):
        assert answer.headers[header].startswith("https://127.0.0.1:")
    status = session.get(answer.headers["Azure-AsyncOperation"])
    assert status.status_code == 200 and status.headers["Retry-After"] == "0"
    assert status.json()["status"] == "Succeeded" and status.json()["name"] in status.json()["id"]
    location = session.get(answer.headers["Location"])
    assert location.status_code == 200 and location.headers["Retry-After"] == "0"
    experiment = session.put(f"{base}/experiments/other?api-version=2018-05-01")  # no body at all
    assert (
        experiment.status_code == 200
        and experiment.json()["properties"]["provisioningState"] == "succeeded"
    )
    deleted = session.delete(f"{base}/experiments/{EXP}/jobs/wirejob?api-version=2018-05-01")
    assert deleted.status_code == 202 and deleted.headers["Retry-After"] == "0"
    assert (
        session.get(f"{base}/experiments/{EXP}/jobs/wirejob?api-version=2018-05-01").status_code
        == 404
    )
    old = session.get(f"{base}?api-version=2018-03-01")
    assert old.status_code == 400 and old.json()["error"]["code"] == "InvalidApiVersionParameter"


# ---------------------------------------------------------------------- errors


def test_errors_are_arm_json_a_person_can_act_on(env):
    client, cluster_id = env.client, env.cluster.id
    with pytest.raises(CloudError) as err:
        client.jobs.get(RG, WS, EXP, "nosuchjob")
    assert err.value.status_code == 404 and err.value.error.error == "JobNotFound"
    with pytest.raises(CloudError) as err:
        client.clusters.get(RG, WS, "nosuchcluster")
    assert err.value.error.error == "ClusterNotFound"
    with pytest.raises(CloudError) as err:
        client.experiments.create(RG, "nosuchworkspace", EXP).result()
    assert err.value.error.error == "WorkspaceNotFound"

    unknown = cluster_id.rsplit("/", 1)[0] + "/nosuchcluster"
    with pytest.raises(CloudError, match="names no cluster") as err:
        client.jobs.create(RG, WS, EXP, "j1", job_params(unknown, "true")).result()
    assert err.value.status_code == 400
    # A job bigger than its cluster is accepted and waits, saying why (as the service did)
    big = client.jobs.create(RG, WS, EXP, "j2", job_params(cluster_id, "true", node_count=2))
    big = big.result()
    assert big.execution_state == "queued"
    (reason,) = big.execution_info.errors
    assert reason.code == "WaitingForClusterResize" and "at most 1" in reason.message
    client.jobs.terminate(RG, WS, EXP, "j2").result()
    ended = client.jobs.get(RG, WS, EXP, "j2")
    assert ended.execution_state == "failed"
    assert [e.code for e in ended.execution_info.errors] == ["JobTerminated"]
    no_toolkit = job_params(cluster_id, "true")
    no_toolkit.custom_toolkit_settings = None
    with pytest.raises(CloudError, match="no toolkit settings"):
        client.jobs.create(RG, WS, EXP, "j3", no_toolkit).result()
    with pytest.raises(CloudError, match="more than one toolkit"):
        client.jobs.create(
            RG,
            WS,
            EXP,
            "j4",
            job_params(
                cluster_id,
                "true",
                py_torch_settings=models.PyTorchSettings(python_script_file_path="x.py"),
            ),
        ).result()
    outside = job_params(cluster_id, "true")
    outside.std_out_err_path_prefix = "$AZ_BATCHAI_JOB_TEMP"
    with pytest.raises(CloudError, match="not on a mounted file share"):
        client.jobs.create(RG, WS, EXP, "j5", outside).result()

    client.jobs.create(RG, WS, EXP, "taken", job_params(cluster_id, "true")).result()
    with pytest.raises(CloudError) as err:
        client.jobs.create(RG, WS, EXP, "taken", job_params(cluster_id, "true")).result()
    assert err.value.status_code == 409 and "already exists" in err.value.message
    with pytest.raises(CloudError) as err:
        client.clusters.create(RG, WS, CLUSTER, cluster_params(env.connection, env.files)).result()
    assert err.value.status_code == 409

    with pytest.raises(CloudError, match="does not emulate Batch AI file servers"):
        client.file_servers.get(RG, WS, "nfs")
    with pytest.raises(CloudError, match="does not emulate usages"):
        list(client.usages.list("eastus"))
    nfs = cluster_params(env.connection, env.files)
    nfs.node_setup.mount_volumes.unmanaged_file_systems = [
        models.UnmanagedFileSystemReference(
            mount_command="mount -t nfs 10.0.0.4:/data", relative_mount_path="nfs"
        )
    ]
    with pytest.raises(CloudError, match="does not emulate unmanaged file systems"):
        client.clusters.create(RG, WS, "nfscluster", nfs).result()


def test_the_provider_lists_the_operations_it_serves(local_cloud):
    client = make_batchai_client(local_cloud.connection)
    names = {operation.name: operation for operation in client.operations.list()}
    assert {
        "Microsoft.BatchAI/workspaces/clusters/write",
        "Microsoft.BatchAI/workspaces/experiments/jobs/terminate/action",
        "Microsoft.BatchAI/workspaces/experiments/jobs/listoutputfiles/action",
    } <= set(names)
    assert not any("fileservers" in name.lower() for name in names)  # not emulated, not listed
    job_write = names["Microsoft.BatchAI/workspaces/experiments/jobs/write"]
    assert (
        job_write.display.provider == "Microsoft Batch AI" and job_write.display.resource == "Job"
    )
    anonymous = requests_session(local_cloud.connection).get(
        local_cloud.base_url + "/providers/Microsoft.BatchAI/operations",
        params={"api-version": "2018-05-01"},
    )
    assert anonymous.status_code == 401  # a token is needed, as on ARM


def test_brainscript_job_fails_saying_only_python_cntk_runs(env):
    params = job_params(
        env.cluster.id,
        cntk_settings=models.CNTKsettings(
            language_type="BrainScript",
            config_file_path="$AZ_BATCHAI_INPUT_SAMPLE/ConvNet_MNIST.cntk",
        ),
    )
    env.client.jobs.create(RG, WS, EXP, "brain", params).result()
    job = wait_for_job(env.client, "brain")
    assert job.execution_state == "failed"
    assert "only Python CNTK jobs" in job.execution_info.errors[0].message


# ---------------------------------------------------------------------- job life


def test_a_failing_job_is_failed_with_its_exit_code(env):
    env.client.jobs.create(
        RG, WS, EXP, "bad", job_params(env.cluster.id, "echo oops >&2; exit 3")
    ).result()
    job = wait_for_job(env.client, "bad")
    assert job.execution_state == "failed" and job.execution_info.exit_code == 3
    assert job.execution_info.errors[0].code == "JobFailed"
    assert "exited with code 3" in job.execution_info.errors[0].message
    assert output_file(env, "bad", "stdouterr", "stderr.txt").read_text() == "oops\n"
    # the node is free again
    wait_for_idle_cluster(env.client)


def test_terminate_a_queued_and_a_running_job(env):
    client, cluster_id = env.client, env.cluster.id
    command = 'echo $$ > "$AZ_BATCHAI_OUTPUT_MODEL/pid"; sleep 60'
    client.jobs.create(RG, WS, EXP, "long", job_params(cluster_id, command)).result()
    client.jobs.create(RG, WS, EXP, "waiting", job_params(cluster_id, "true")).result()
    pid, pgid = read_pid_group(output_file(env, "long", "MODEL", "pid"))
    assert client.jobs.get(RG, WS, EXP, "waiting").execution_state == "queued"  # one node, busy
    nodes = list(client.jobs.list_remote_login_information(RG, WS, EXP, "long"))
    assert [n.node_id for n in nodes] == [
        n.node_id for n in client.clusters.list_remote_login_information(RG, WS, CLUSTER)
    ]
    assert list(client.jobs.list_remote_login_information(RG, WS, EXP, "waiting")) == []
    cluster = client.clusters.get(RG, WS, CLUSTER)
    assert (
        cluster.node_state_counts.running_node_count == 1
        and cluster.node_state_counts.idle_node_count == 0
    )

    client.jobs.terminate(RG, WS, EXP, "waiting").result()
    waiting = client.jobs.get(RG, WS, EXP, "waiting")
    assert (
        waiting.execution_state == "failed"
        and waiting.execution_info.errors[0].code == "JobTerminated"
    )

    client.jobs.terminate(RG, WS, EXP, "long").result()
    long_job = client.jobs.get(RG, WS, EXP, "long")
    assert long_job.execution_state == "failed"
    assert long_job.execution_info.errors[0].code == "JobTerminated"
    assert not nodeagent.group_members(pgid)
    wait_for_idle_cluster(client)

    client.jobs.create(RG, WS, EXP, "quick", job_params(cluster_id, "true")).result()
    assert wait_for_job(client, "quick").execution_state == "succeeded"
    client.jobs.terminate(RG, WS, EXP, "quick").result()  # a finished job stays as it ended
    assert client.jobs.get(RG, WS, EXP, "quick").execution_state == "succeeded"


def test_queued_jobs_start_by_priority_then_age(env):
    client, cluster_id = env.client, env.cluster.id
    client.jobs.create(RG, WS, EXP, "blocker", job_params(cluster_id, "sleep 60")).result()
    wait_for_job(client, "blocker", states=("running",))
    for name, priority in (
        ("low1", "low"),
        ("normal1", "normal"),
        ("high1", "high"),
        ("normal2", "normal"),
    ):
        params = job_params(cluster_id, "true")
        params.scheduling_priority = priority
        client.jobs.create(RG, WS, EXP, name, params).result()
    client.jobs.terminate(RG, WS, EXP, "blocker").result()
    order = sorted(
        ("high1", "normal1", "normal2", "low1"),
        key=lambda n: wait_for_job(client, n).execution_info.start_time,
    )
    assert order == ["high1", "normal1", "normal2", "low1"]
    with pytest.raises(CloudError, match="LocationNotAvailableForResourceType|not available"):
        client.workspaces.create(RG, "elsewhere", "moon-central").result()


def test_secrets_reach_the_job_but_are_never_echoed(env):
    secret, password = "s3cr3t-Value-42", "Adm1n-Passw0rd!"
    params = job_params(
        env.cluster.id,
        'echo "$API_TOKEN $PLAIN" > "$AZ_BATCHAI_OUTPUT_MODEL/seen"',
        secrets=[models.EnvironmentVariableWithSecretValue(name="API_TOKEN", value=secret)],
        environment_variables=[models.EnvironmentVariable(name="PLAIN", value="visible")],
    )
    env.client.jobs.create(RG, WS, EXP, "secretive", params).result()
    job = wait_for_job(env.client, "secretive")
    assert job.execution_state == "succeeded"
    assert output_file(env, "secretive", "MODEL", "seen").read_text() == f"{secret} visible\n"
    assert job.secrets[0].name == "API_TOKEN" and job.secrets[0].value is None
    assert job.environment_variables[0].value == "visible"
    cluster = env.client.clusters.get(RG, WS, CLUSTER)
    assert cluster.user_account_settings.admin_user_password is None
    assert cluster.node_setup.mount_volumes.azure_file_shares[0].credentials.account_key is None
    # Nothing anywhere in the raw answers, the listing or the execution log.
    token = make_credentials(env.connection).token["access_token"]
    base = f"{env.connection['resource_manager_url'].rstrip('/')}{env.cluster.id.rsplit('/clusters/', 1)[0]}"
    raw = ""
    for path in (
        f"/clusters/{CLUSTER}",
        "/clusters",
        f"/experiments/{EXP}/jobs/secretive",
        f"/experiments/{EXP}/jobs",
    ):
        raw += requests.get(
            f"{base}{path}?api-version=2018-05-01",
            headers={"Authorization": f"Bearer {token}"},
            verify=env.connection["ca_cert"],
        ).text
    assert secret not in raw and password not in raw and env.connection["storage_key"] not in raw
    assert secret not in output_file(env, "secretive", "stdouterr", "execution.log").read_text()


def test_output_listing_directories_paging_and_sas_download(env):
    command = (
        'mkdir -p "$AZ_BATCHAI_OUTPUT_MODEL/sub/deeper"; for i in 1 2 3 4 5; do echo $i > '
        '"$AZ_BATCHAI_OUTPUT_MODEL/f$i.txt"; done; echo nested > "$AZ_BATCHAI_OUTPUT_MODEL/sub/n.txt"; '
        "echo started; sleep 30"
    )
    env.client.jobs.create(RG, WS, EXP, "lister", job_params(env.cluster.id, command)).result()
    wait_for(
        lambda: (
            output_file(env, "lister", "stdouterr", "stdout.txt").exists()
            and output_file(env, "lister", "stdouterr", "stdout.txt").read_text()
        )
    )
    options = models.JobsListOutputFilesOptions(
        outputdirectoryid="MODEL", max_results=2, linkexpiryinminutes=5
    )
    listed = list(
        env.client.jobs.list_output_files(RG, WS, EXP, "lister", options)
    )  # follows nextLink
    assert [f.name for f in listed] == ["f1.txt", "f2.txt", "f3.txt", "f4.txt", "f5.txt", "sub"]
    assert listed[-1].file_type == "directory" and listed[-1].download_url is None
    assert listed[0].content_length == 2 and listed[0].last_modified is not None
    url = listed[0].download_url
    assert "sp=rl" in url and "sr=f" in url and "sig=" in url
    expiry = requests.utils.unquote(url.split("se=")[1].split("&")[0])
    assert (
        abs(
            time.mktime(time.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ"))
            - time.timezone
            - time.time()
            - 300
        )
        < 60
    )
    nested = list(
        env.client.jobs.list_output_files(
            RG,
            WS,
            EXP,
            "lister",
            models.JobsListOutputFilesOptions(outputdirectoryid="MODEL", directory="sub"),
        )
    )
    assert [(f.name, f.file_type) for f in nested] == [("deeper", "directory"), ("n.txt", "file")]
    assert requests.get(nested[1].download_url, verify=env.connection["ca_cert"]).text == "nested\n"
    # a file still being written downloads with ranges, as `az batchai job file stream` did
    stdout = [
        f
        for f in env.client.jobs.list_output_files(
            RG, WS, EXP, "lister", models.JobsListOutputFilesOptions(outputdirectoryid="stdouterr")
        )
        if f.name == "stdout.txt"
    ][0]
    part = requests.get(
        stdout.download_url, headers={"Range": "bytes=2-"}, verify=env.connection["ca_cert"]
    )
    assert part.status_code == 206 and part.text == "arted\n"
    tampered = stdout.download_url.replace("sp=rl", "sp=rwl")
    assert requests.get(tampered, verify=env.connection["ca_cert"]).status_code == 403
    with pytest.raises(CloudError, match="no output directory 'NOPE'"):
        list(
            env.client.jobs.list_output_files(
                RG, WS, EXP, "lister", models.JobsListOutputFilesOptions(outputdirectoryid="NOPE")
            )
        )
    env.client.jobs.terminate(RG, WS, EXP, "lister").result()


def test_twenty_jobs_on_two_nodes_all_finish_never_more_than_two_at_once(local_cloud, tmp_path):
    env = sdk_env(local_cloud, tmp_path, nodes=2)
    log = env.share_dir / "intervals"
    log.mkdir()
    # each job runs until a second job has started (at most 10 s): under load a job's start can
    # outlast a fixed sleep, and two jobs would never overlap even with two idle nodes
    command = (
        f'echo "start $(date +%s.%N)" >> {log}/$JOB_NO; '
        f"for _ in $(seq 100); do [ $(ls {log} | wc -l) -ge 2 ] && break; sleep 0.1; done; "
        f'sleep 0.2; echo "end $(date +%s.%N)" >> {log}/$JOB_NO'
    )
    for i in range(20):
        env.client.jobs.create(
            RG,
            WS,
            EXP,
            f"job{i:02d}",
            job_params(
                env.cluster.id,
                command,
                environment_variables=[models.EnvironmentVariable(name="JOB_NO", value=str(i))],
            ),
        )
    peak = 0

    def all_done():
        nonlocal peak
        counts = env.client.clusters.get(RG, WS, CLUSTER).node_state_counts
        peak = max(peak, counts.running_node_count)
        jobs = list(env.client.jobs.list_by_experiment(RG, WS, EXP))
        return (
            len(jobs) == 20
            and all(j.execution_state in ("succeeded", "failed") for j in jobs)
            and jobs
        )

    jobs = wait_for(all_done, timeout=120)
    assert all(j.execution_state == "succeeded" for j in jobs)
    assert 1 <= peak <= 2
    events = []
    for path in log.iterdir():
        lines = dict(line.split() for line in path.read_text().splitlines())
        events += [(float(lines["start"]), 1), (float(lines["end"]), -1)]
    assert len(events) == 40
    running = max_running = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        running += delta
        max_running = max(max_running, running)
    assert max_running == 2


def test_job_preparation_runs_first_with_its_own_output(env):
    params = job_params(
        env.cluster.id,
        'cat "$AZ_BATCHAI_JOB_TEMP/prepared"',
        job_preparation=models.JobPreparation(
            command_line='echo ready > "$AZ_BATCHAI_JOB_TEMP/prepared"; echo prep'
        ),
    )
    env.client.jobs.create(RG, WS, EXP, "prepped", params).result()
    assert wait_for_job(env.client, "prepped").execution_state == "succeeded"
    assert output_file(env, "prepped", "stdouterr", "stdout.txt").read_text() == "ready\n"
    assert output_file(env, "prepped", "stdouterr", "stdout-job_prep.txt").read_text() == "prep\n"
    failing = job_params(
        env.cluster.id, "true", job_preparation=models.JobPreparation(command_line="exit 4")
    )
    env.client.jobs.create(RG, WS, EXP, "unprepared", failing).result()
    job = wait_for_job(env.client, "unprepared")
    assert job.execution_state == "failed" and job.execution_info.exit_code == 4
    assert job.execution_info.errors[0].code == "JobPreparationFailed"


# ---------------------------------------------------------------------- clusters


def test_cluster_resize_and_a_mount_that_fails(env):
    client = env.client
    client.clusters.update(
        RG,
        WS,
        CLUSTER,
        scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=3)),
    )
    cluster = wait_for_idle_cluster(client, 3)
    assert cluster.current_node_count == 3 and cluster.allocation_state == "steady"
    logins = list(client.clusters.list_remote_login_information(RG, WS, CLUSTER))
    assert len({n.node_id for n in logins}) == 3
    assert [n.ip_address for n in logins] == ["127.0.0.4", "127.0.0.5", "127.0.0.6"]
    client.clusters.update(
        RG,
        WS,
        CLUSTER,
        scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=1)),
    )
    wait_for(lambda: client.clusters.get(RG, WS, CLUSTER).current_node_count == 1)

    broken = cluster_params(env.connection, env.files, share="nosuchshare")
    client.clusters.create(RG, WS, "broken", broken).result()
    cluster = wait_for(
        lambda: (lambda c: c if c.node_state_counts.unusable_node_count else None)(
            client.clusters.get(RG, WS, "broken")
        )
    )
    assert cluster.errors[0].code == "AZFMountError"
    assert "no share named 'nosuchshare'" in cluster.errors[0].message
    [info] = cluster.errors[0].details
    assert (info.name, info.value) == (
        "Info",
        f"Could not mount Azure File Share https://{env.files.primary_endpoint}/"
        f"nosuchshare at $AZ_BATCHAI_MOUNT_ROOT/{MOUNT}",
    )
    names = [
        c.name
        for c in client.clusters.list_by_workspace(
            RG, WS, models.ClustersListByWorkspaceOptions(max_results=1)
        )
    ]
    assert names == ["broken", CLUSTER]


def test_lists_page_with_maxresults(env):
    for i in range(3):
        env.client.jobs.create(
            RG, WS, EXP, f"paged{i}", job_params(env.cluster.id, "true")
        ).result()
    env.client.experiments.create(RG, WS, "second").result()
    jobs = list(
        env.client.jobs.list_by_experiment(
            RG, WS, EXP, models.JobsListByExperimentOptions(max_results=1)
        )
    )
    assert [j.name for j in jobs] == ["paged0", "paged1", "paged2"]
    experiments = list(
        env.client.experiments.list_by_workspace(
            RG, WS, models.ExperimentsListByWorkspaceOptions(max_results=1)
        )
    )
    assert [e.name for e in experiments] == [EXP, "second"]
    assert [w.name for w in env.client.workspaces.list()] == [WS]
    assert [w.name for w in env.client.workspaces.list_by_resource_group(RG)] == [WS]
    env.client.workspaces.update(RG, WS, tags={"team": "ml"})
    assert env.client.workspaces.get(RG, WS).tags == {"team": "ml"}


# ---------------------------------------------------------------------- deletes stop jobs


@pytest.mark.parametrize("what", ["job", "experiment", "cluster", "workspace", "resource group"])
def test_deleting_a_container_stops_its_running_job(env, what):
    command = 'echo $$ > "$AZ_BATCHAI_OUTPUT_MODEL/pid"; (sleep 60) & sleep 60'
    env.client.jobs.create(RG, WS, EXP, "victim", job_params(env.cluster.id, command)).result()
    pid, pgid = read_pid_group(output_file(env, "victim", "MODEL", "pid"))
    assert nodeagent.group_members(pgid)
    delete = {
        "job": lambda: env.client.jobs.delete(RG, WS, EXP, "victim"),
        "experiment": lambda: env.client.experiments.delete(RG, WS, EXP),
        "cluster": lambda: env.client.clusters.delete(RG, WS, CLUSTER),
        "workspace": lambda: env.client.workspaces.delete(RG, WS),
        "resource group": lambda: env.resources.resource_groups.delete(RG),
    }[what]
    delete()  # no .result(): it must take effect on the first request, as the quickstart expects
    assert not nodeagent.group_members(pgid)  # the whole process group, the background child too
    if what == "cluster":
        job = env.client.jobs.get(RG, WS, EXP, "victim")
        assert (
            job.execution_state == "failed"
            and job.execution_info.errors[0].code == "ClusterDeleted"
        )
    else:
        with pytest.raises(CloudError) as err:
            env.client.jobs.get(RG, WS, EXP, "victim")
        assert err.value.status_code == 404


# ---------------------------------------------------------------------- jobs outlive servers


def test_a_job_outlives_its_server_and_a_new_server_reports_it(tmp_path):
    state = tmp_path / "state"
    command = (
        'echo $$ > "$AZ_BATCHAI_OUTPUT_MODEL/pid"; sleep 1.5; echo finished; '
        'echo kept > "$AZ_BATCHAI_OUTPUT_MODEL/after.txt"; exit 7'
    )
    with LocalCloud(state, cluster_allocation_delay=0.1) as cloud:
        env = sdk_env(cloud, tmp_path)
        env.client.jobs.create(RG, WS, EXP, "durable", job_params(env.cluster.id, command)).result()
        pid, pgid = read_pid_group(output_file(env, "durable", "MODEL", "pid"))
    assert nodeagent.group_members(pgid), "the job must keep running while no server runs"
    with LocalCloud(state, cluster_allocation_delay=0.1) as cloud:
        client = make_batchai_client(cloud.connection)
        assert client.jobs.get(RG, WS, EXP, "durable").execution_state == "running"
        job = wait_for_job(client, "durable")
        assert job.execution_state == "failed" and job.execution_info.exit_code == 7
        segment = job.job_output_directory_path_segment
        share = Path(cloud.state_dir) / "shares" / SHARE / segment
        assert (share / "stdouterr" / "stdout.txt").read_text() == "finished\n"
        assert (share / "outputs" / "Models" / "after.txt").read_text() == "kept\n"
        assert client.clusters.get(RG, WS, CLUSTER).node_state_counts.idle_node_count == 1


def test_a_job_that_vanished_while_no_server_ran_is_failed_saying_so(tmp_path):
    state = tmp_path / "state"
    with LocalCloud(state, cluster_allocation_delay=0.1) as cloud:
        env = sdk_env(cloud, tmp_path)
        env.client.jobs.create(
            RG,
            WS,
            EXP,
            "doomed",
            job_params(env.cluster.id, 'echo $$ > "$AZ_BATCHAI_OUTPUT_MODEL/pid"; sleep 60'),
        ).result()
        pid, pgid = read_pid_group(output_file(env, "doomed", "MODEL", "pid"))
    os.killpg(pgid, signal.SIGKILL)
    assert_group_gone(pgid)
    with LocalCloud(state, cluster_allocation_delay=0.1) as cloud:
        job = wait_for_job(make_batchai_client(cloud.connection), "doomed")
        assert job.execution_state == "failed" and job.execution_info.exit_code is None
        assert job.execution_info.errors[0].code == "JobProcessVanished"
        assert "without recording an exit code" in job.execution_info.errors[0].message


def test_job_environment_matches_batch_ai(env):
    command = (
        'env | grep ^AZ_BATCHAI_ | sort > "$AZ_BATCHAI_OUTPUT_MODEL/env"; '
        'ls "$AZ_BATCHAI_MOUNT_ROOT/azurefileshare/mnistcntksample" > "$AZ_BATCHAI_OUTPUT_MODEL/ls"'
    )
    env.client.jobs.create(RG, WS, EXP, "envjob", job_params(env.cluster.id, command)).result()
    job = wait_for_job(env.client, "envjob")
    assert job.execution_state == "succeeded"
    seen = dict(
        line.split("=", 1)
        for line in output_file(env, "envjob", "MODEL", "env").read_text().splitlines()
    )
    segment = job.job_output_directory_path_segment
    root = seen["AZ_BATCHAI_MOUNT_ROOT"]
    assert seen["AZ_BATCHAI_INPUT_SAMPLE"] == f"{root}/{MOUNT}/mnistcntksample"
    assert seen["AZ_BATCHAI_OUTPUT_MODEL"] == f"{root}/{MOUNT}/{segment}/outputs/Models"
    assert seen["AZ_BATCHAI_STDOUTERR_DIR"] == f"{root}/{MOUNT}/{segment}/stdouterr"
    assert seen["AZ_BATCHAI_NUM_GPUS"] == str(nodeagent.gpu_count())
    assert {"AZ_BATCHAI_JOB_TEMP", "AZ_BATCHAI_JOB_MOUNT_ROOT"} <= set(seen)
    assert output_file(env, "envjob", "MODEL", "ls").read_text() == "ConvNet_MNIST.py\n"


def test_node_setup_task_runs_before_nodes_turn_idle_and_a_failing_one_makes_them_unusable(env):
    params = cluster_params(env.connection, env.files)
    params.node_setup.setup_task = models.SetupTask(
        command_line='echo "setting up with $SETUP_KEY" ; sleep 0.3',
        environment_variables=[models.EnvironmentVariable(name="SETUP_KEY", value="key")],
        std_out_err_path_prefix=f"$AZ_BATCHAI_MOUNT_ROOT/{MOUNT}",
    )
    env.client.clusters.create(RG, WS, "withsetup", params).result()
    cluster = wait_for_idle_cluster(env.client, name="withsetup")
    suffix = cluster.node_setup.setup_task.std_out_err_path_suffix
    assert suffix.startswith(
        f"{env.connection['subscription_id']}/{RG}/workspaces/{WS}/clusters/withsetup/"
    )
    logins = list(env.client.clusters.list_remote_login_information(RG, WS, "withsetup"))
    out = env.share_dir / suffix / logins[0].node_id / "stdout.txt"
    assert out.read_text() == "setting up with key\n"

    params.node_setup.setup_task.command_line = "exit 9"
    env.client.clusters.create(RG, WS, "badsetup", params).result()
    cluster = wait_for(
        lambda: (lambda c: c if c.node_state_counts.unusable_node_count else None)(
            env.client.clusters.get(RG, WS, "badsetup")
        )
    )
    assert (
        cluster.errors[0].code == "SetupTaskFailed"
        and "exited with code 9" in cluster.errors[0].message
    )


def test_auto_scale_cluster_grows_for_queued_jobs_and_job_level_mounts_work(env):
    auto = cluster_params(
        env.connection,
        env.files,
        auto_scale=models.AutoScaleSettings(
            minimum_node_count=0, maximum_node_count=2, initial_node_count=0
        ),
    )
    cluster = env.client.clusters.create(RG, WS, "auto", auto).result()
    wait_for(lambda: env.client.clusters.get(RG, WS, "auto").allocation_state == "steady")
    assert env.client.clusters.get(RG, WS, "auto").current_node_count == 0
    env.files.create_share("jobshare")
    env.files.create_file_from_text("jobshare", None, "data.txt", "from the job share")
    params = job_params(
        cluster.id,
        'cat "$AZ_BATCHAI_JOB_MOUNT_ROOT/jobafs/data.txt"',
        mount_volumes=job_file_mount(env, "jobshare", "jobafs"),
    )
    env.client.jobs.create(RG, WS, EXP, "autojob", params).result()
    job = wait_for_job(env.client, "autojob")
    assert job.execution_state == "succeeded", job.execution_info.errors
    assert job.mount_volumes.azure_file_shares[0].credentials.account_key is None
    assert (
        output_file(env, "autojob", "stdouterr", "stdout.txt").read_text() == "from the job share"
    )
    wait_for(
        lambda: env.client.clusters.get(RG, WS, "auto").current_node_count == 0
    )  # shrinks back


def test_a_job_made_link_in_the_share_never_takes_a_later_jobs_outputs_outside(env, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    sub = env.connection["subscription_id"]
    # what a job could leave behind: the share's first segment of every job path, as a link
    first = env.client.jobs.create(RG, WS, EXP, "maker", job_params(env.cluster.id, "true"))
    assert wait_for_job(env.client, first.result().name).execution_state == "succeeded"
    shutil.rmtree(env.share_dir / sub)
    os.symlink(outside, env.share_dir / sub)
    later = env.client.jobs.create(RG, WS, EXP, "later", job_params(env.cluster.id, "true"))
    job = wait_for_job(env.client, later.result().name)
    assert job.execution_state == "failed"
    assert [e.code for e in job.execution_info.errors] == ["JobOutputPathUnsafe"]
    assert list(outside.iterdir()) == []  # nothing was written outside the share


def test_a_job_writes_its_logs_and_outputs_to_a_job_level_mount(env):
    """The recipes put stdouterr under $AZ_BATCHAI_JOB_MOUNT_ROOT/<mount>: the mount must be in
    place before the job's folders are made there, and what the job writes lands in the share."""
    env.files.create_share("joblogs")
    params = job_params(
        env.cluster.id,
        'echo to stdout; echo to stderr >&2; echo weights > "$AZ_BATCHAI_OUTPUT_MODEL/model.dnn"',
        mount_volumes=job_file_mount(env, "joblogs", "logs"),
    )
    params.std_out_err_path_prefix = "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"
    params.output_directories = [
        models.OutputDirectory(id="MODEL", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/logs")
    ]
    env.client.jobs.create(RG, WS, EXP, "writer", params).result()
    job = wait_for_job(env.client, "writer")
    assert job.execution_state == "succeeded", job.execution_info.errors
    segment = job.job_output_directory_path_segment
    assert env.files.get_file_to_text("joblogs", f"{segment}/stdouterr", "stdout.txt").content == (
        "to stdout\n"
    )
    assert env.files.get_file_to_text("joblogs", f"{segment}/stdouterr", "stderr.txt").content == (
        "to stderr\n"
    )
    listed = env.client.jobs.list_output_files(
        RG, WS, EXP, "writer", models.JobsListOutputFilesOptions(outputdirectoryid="MODEL")
    )
    model = {f.name: f for f in listed}["model.dnn"]
    got = requests.get(model.download_url, verify=env.connection["ca_cert"])
    assert got.text == "weights\n"
