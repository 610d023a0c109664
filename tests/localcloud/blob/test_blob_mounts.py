"""Blob containers mounted on Batch AI nodes (azureBlobFileSystems, blobfuse on the real
service), at cluster and at job level, driven by the real SDK clients over HTTPS."""

from __future__ import annotations

import azure.mgmt.batchai.models as models
import pytest

from tests.conftest import make_blob_service
from tests.localcloud.batchai.test_batchai import (
    EXP,
    RG,
    WS,
    cluster_params,
    job_params,
    no_job_process_left,  # noqa: F401 (autouse: no job process outlives its test)
    sdk_env,
    wait_for,
    wait_for_idle_cluster,
    wait_for_job,
)


def blob_mount(connection: dict, container: str, relative: str, key: str | None = None):
    return models.AzureBlobFileSystemReference(
        account_name=connection["storage_account"],
        container_name=container,
        credentials=models.AzureStorageCredentialsInfo(
            account_key=key or connection["storage_key"]
        ),
        relative_mount_path=relative,
    )


@pytest.fixture
def env(local_cloud, tmp_path):
    env = sdk_env(local_cloud, tmp_path)
    env.blobs = make_blob_service(env.connection)
    env.blobs.create_container("datasets")
    env.blobs.create_blob_from_text("datasets", "mnist/Train-28x28_cntk_text.txt", "|labels 1")
    return env


def blob_cluster(env, name: str, container: str = "datasets", key: str | None = None):
    params = cluster_params(env.connection, env.files)
    params.node_setup.mount_volumes.azure_blob_file_systems = [
        blob_mount(env.connection, container, "bfs", key)
    ]
    return env.client.clusters.create(RG, WS, name, params).result()


def test_a_cluster_blob_mount_reads_blobs_as_files_and_written_files_become_blobs(env):
    cluster = blob_cluster(env, "blobs")
    assert cluster.node_setup.mount_volumes.azure_blob_file_systems[0].credentials.account_key is (
        None
    )
    wait_for_idle_cluster(env.client, name="blobs")
    command = (
        'cat "$AZ_BATCHAI_MOUNT_ROOT/bfs/mnist/Train-28x28_cntk_text.txt"; '
        'mkdir -p "$AZ_BATCHAI_MOUNT_ROOT/bfs/results" && '
        'echo 0.99 > "$AZ_BATCHAI_MOUNT_ROOT/bfs/results/accuracy.txt"'
    )
    env.client.jobs.create(RG, WS, EXP, "reader", job_params(cluster.id, command)).result()
    job = wait_for_job(env.client, "reader")
    assert job.execution_state == "succeeded", job.execution_info.errors
    stdout = env.files.get_file_to_text(
        "batchaiquickstart", f"{job.job_output_directory_path_segment}/stdouterr", "stdout.txt"
    )
    assert stdout.content == "|labels 1"
    assert env.blobs.get_blob_to_text("datasets", "results/accuracy.txt").content == "0.99\n"
    assert sorted(b.name for b in env.blobs.list_blobs("datasets")) == [
        "mnist/Train-28x28_cntk_text.txt",
        "results/accuracy.txt",
    ]


def test_a_job_level_blob_mount_and_its_failures(env):
    env.blobs.create_container("jobdata")
    env.blobs.create_blob_from_text("jobdata", "input.txt", "job-level blob")
    mounts = models.MountVolumes(
        azure_blob_file_systems=[blob_mount(env.connection, "jobdata", "jb")]
    )
    params = job_params(
        env.cluster.id, 'cat "$AZ_BATCHAI_JOB_MOUNT_ROOT/jb/input.txt"', mount_volumes=mounts
    )
    env.client.jobs.create(RG, WS, EXP, "jobblob", params).result()
    job = wait_for_job(env.client, "jobblob")
    assert job.execution_state == "succeeded", job.execution_info.errors

    elsewhere = blob_mount(env.connection, "jobdata", "jb")
    elsewhere.account_name = "someoneelse"
    params = job_params(
        env.cluster.id,
        "true",
        mount_volumes=models.MountVolumes(azure_blob_file_systems=[elsewhere]),
    )
    env.client.jobs.create(RG, WS, EXP, "otheraccount", params).result()
    job = wait_for_job(env.client, "otheraccount")
    assert job.execution_state == "failed"
    assert job.execution_info.errors[0].message == (
        "Unable to mount blob fuse file system for container 'jobdata': the storage account "
        f"'someoneelse' is not the local cloud's ('{env.connection['storage_account']}'); use "
        "the account from connection.json."
    )

    missing = models.MountVolumes(
        azure_blob_file_systems=[blob_mount(env.connection, "nope", "jb")]
    )
    params = job_params(env.cluster.id, "true", mount_volumes=missing)
    env.client.jobs.create(RG, WS, EXP, "nocontainer", params).result()
    job = wait_for_job(env.client, "nocontainer")
    assert job.execution_state == "failed" and job.execution_info.exit_code == -1
    error = job.execution_info.errors[0]
    assert error.code == "BFSMountError"
    assert error.message == (
        "Unable to mount blob fuse file system for container 'nope': there is no container "
        f"named 'nope' in account '{env.connection['storage_account']}'; create it "
        "(BlockBlobService.create_container) before the nodes mount it."
    )


def test_a_cluster_blob_mount_with_a_wrong_key_makes_the_nodes_unusable(env):
    blob_cluster(env, "badkey", key="V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc=")
    cluster = wait_for(
        lambda: (lambda c: c if c.node_state_counts.unusable_node_count else None)(
            env.client.clusters.get(RG, WS, "badkey")
        )
    )
    error = cluster.errors[0]
    account = env.connection["storage_account"]
    assert error.code == "BFSMountError"
    assert error.message == (
        "Unable to mount blob fuse file system for container 'datasets': the account key given "
        f"for '{account}' is wrong."
    )
    assert [(d.name, d.value) for d in error.details] == [
        (
            "Info",
            f"Could not mount Azure Blob container https://{account}.blob.core.windows.net/"
            "datasets at $AZ_BATCHAI_MOUNT_ROOT/bfs",
        )
    ]
    # an Azure Files share that is not there: AZFMountError, its own words
    env.client.clusters.create(
        RG, WS, "noshare", cluster_params(env.connection, env.files, share="nosuchshare")
    ).result()
    cluster = wait_for(
        lambda: (lambda c: c if c.node_state_counts.unusable_node_count else None)(
            env.client.clusters.get(RG, WS, "noshare")
        )
    )
    [error] = cluster.errors
    assert (error.code, error.message) == (
        "AZFMountError",
        "Unable to mount Azure File share 'nosuchshare': there is no share named 'nosuchshare' "
        f"in account '{account}'; create it (FileService.create_share) before the nodes mount it.",
    )
    assert [(d.name, d.value) for d in error.details] == [
        (
            "Info",
            f"Could not mount Azure File Share https://{env.files.primary_endpoint}/nosuchshare "
            "at $AZ_BATCHAI_MOUNT_ROOT/azurefileshare",
        )
    ]
    blob_cluster(env, "nocontainer", container="missing")
    cluster = wait_for(
        lambda: (lambda c: c if c.node_state_counts.unusable_node_count else None)(
            env.client.clusters.get(RG, WS, "nocontainer")
        )
    )
    assert cluster.errors[0].code == "BFSMountError"


def test_a_blob_mount_azure_would_refuse_is_a_400_naming_the_field(env):
    """Each malformed mountVolumes of a cluster: 400 with the code Batch AI used and the JSON
    path of the field at fault; nothing is created."""
    from tests.localcloud.fuzzing import FuzzTarget

    arm = FuzzTarget(env.cloud)
    account, key = env.connection["storage_account"], env.connection["storage_key"]
    good = {
        "accountName": account,
        "containerName": "datasets",
        "credentials": {"accountKey": key},
        "relativeMountPath": "bfs",
    }
    at = "properties.nodeSetup.mountVolumes"
    blob = f"{at}.azureBlobFileSystems"
    share = {
        "accountName": account,
        "azureFileUrl": f"https://{env.files.primary_endpoint}/batchaiquickstart",
        "credentials": {"accountKey": key},
        "relativeMountPath": "afs",
    }
    files = f"{at}.azureFileShares"
    refused = [
        ([], "InvalidParameter", f"'{at}' must be a JSON object."),
        ({"azureFileShares": {}}, "InvalidParameter", f"'{files}' must be a JSON array."),
        ({"azureFileShares": [None]}, "InvalidParameter", f"'{files}[0]' is required."),
        (
            {"azureFileShares": [{**share, "azureFileUrl": ""}]},
            "InvalidParameter",
            f"'{files}[0].azureFileUrl' is required.",
        ),
        (
            {"azureFileShares": [{**share, "relativeMountPath": ".."}]},
            "InvalidParameter",
            f"'{files}[0].relativeMountPath' must be one folder name",
        ),
        (
            {
                "azureFileShares": [share],
                "azureBlobFileSystems": [{**good, "relativeMountPath": "afs"}],
            },
            "InvalidParameter",
            f"'{blob}[0].relativeMountPath' 'afs' is used by two mounts.",
        ),
        (
            {"fileServers": [{"fileServer": {"id": "x"}}]},
            "NotSupported",
            f"'{at}.fileServers': the local cloud does not emulate Batch AI file servers (NFS); "
            f"mount an Azure Files share with '{at}.azureFileShares' (or a Blob container with "
            f"'{blob}') instead.",
        ),
        (
            {"unmanagedFileSystems": [{"mountCommand": "mount x"}]},
            "NotSupported",
            f"'{at}.unmanagedFileSystems': the local cloud does not emulate unmanaged file systems",
        ),
        ({"azureBlobFileSystems": good}, "InvalidParameter", f"'{blob}' must be a JSON array."),
        (
            {"azureBlobFileSystems": ["x"]},
            "InvalidParameter",
            f"'{blob}[0]' must be a JSON object.",
        ),
        ({"azureBlobFileSystems": [None]}, "InvalidParameter", f"'{blob}[0]' is required."),
        (
            {"azureBlobFileSystems": [{**good, "accountName": ""}]},
            "InvalidParameter",
            f"'{blob}[0].accountName' is required.",
        ),
        (
            {"azureBlobFileSystems": [good, {**good, "containerName": None}]},
            "InvalidParameter",
            f"'{blob}[1].containerName' is required.",
        ),
        (
            {"azureBlobFileSystems": [{**good, "mountOptions": 5}]},
            "InvalidParameter",
            f"'{blob}[0].mountOptions' must be a string.",
        ),
        (
            {"azureBlobFileSystems": [{**good, "relativeMountPath": "a/b"}]},
            "InvalidParameter",
            f"'{blob}[0].relativeMountPath' must be one folder name",
        ),
        (
            {"azureBlobFileSystems": [good, good]},
            "InvalidParameter",
            f"'{blob}[1].relativeMountPath' 'bfs' is used by two mounts.",
        ),
        (
            {"azureBlobFileSystems": [{**good, "credentials": {}}]},
            "InvalidParameter",
            f"'{blob}[0].credentials.accountKey' is required.",
        ),
    ]
    path = (
        f"/subscriptions/{arm.sub}/resourceGroups/{RG}/providers/Microsoft.BatchAI/workspaces/{WS}"
    )
    for mounts, code, message in refused:
        body = {
            "properties": {
                "vmSize": "STANDARD_NC6",
                "scaleSettings": {"manual": {"targetNodeCount": 0}},
                "nodeSetup": {"mountVolumes": mounts},
                "userAccountSettings": {"adminUserName": "u", "adminUserPassword": "P-1234567"},
            }
        }
        answer = arm.arm("PUT", f"{path}/clusters/refused", body)
        assert answer.status_code == 400, (mounts, answer.text)
        error = answer.json()["error"]
        assert error["code"] == code and error["message"].startswith(message), error
        assert arm.arm("GET", f"{path}/clusters/refused").status_code == 404

    with_options = {**good, "mountOptions": "-o attr_timeout=240"}
    body["properties"]["nodeSetup"]["mountVolumes"] = {
        "azureBlobFileSystems": [with_options],
        "azureFileShares": [share],
    }
    created = arm.arm("PUT", f"{path}/clusters/accepted", body)
    assert created.status_code == 202, created.text  # accepted; created in the background
    shown = arm.arm("GET", f"{path}/clusters/accepted").json()
    mounts = shown["properties"]["nodeSetup"]["mountVolumes"]
    assert mounts["azureBlobFileSystems"] == [{**with_options, "credentials": {}}]
    # a share's file and folder modes default to 0777, as Batch AI showed them
    assert mounts["azureFileShares"] == [
        {**share, "credentials": {}, "fileMode": "0777", "directoryMode": "0777"}
    ]
