"""A Batch AI recipe (CNTK-GPU-Python's shape) against the local cloud, with only the endpoints
and the certificate changed: the dataset uploaded to a Blob container, a cluster mounting it
with blobfuse, a job that reads it there and writes its logs and model to a job-level Azure
Files mount, then its outputs listed, streamed and downloaded. Real SDK clients, real HTTPS."""

from __future__ import annotations

import azure.mgmt.batchai.models as models
import requests

from tests.conftest import (
    make_batchai_client,
    make_blob_service,
    make_credentials,
    make_file_service,
    make_resource_client,
)
from tests.localcloud.batchai.test_batchai import (
    no_job_process_left,  # noqa: F401 (autouse: no job process outlives its test)
    wait_for,
)

RG, WS, EXP, CLUSTER, JOB = "batchai.recipes", "recipes", "cntk_experiment", "nc6", "cntk_python"
TRAINER = """\
import os, sys
data, out = sys.argv[1], sys.argv[2]
samples = open(os.path.join(data, "Train-28x28_cntk_text.txt")).read().splitlines()
print("Training on %d samples from %s" % (len(samples), data))
print("Finished Epoch[1 of 1]: loss = 0.1", file=sys.stderr)
open(os.path.join(out, "ConvNet_MNIST_0.dnn"), "w").write("model of %d samples" % len(samples))
"""


def test_the_cntk_recipe_runs_with_a_blob_dataset_and_job_level_logs(local_cloud, tmp_path):
    connection = local_cloud.connection
    credentials = make_credentials(connection)
    resources = make_resource_client(connection, credentials)
    client = make_batchai_client(connection, credentials)
    blobs = make_blob_service(connection)
    files = make_file_service(connection)
    account, key = connection["storage_account"], connection["storage_key"]
    storage = models.AzureStorageCredentialsInfo(account_key=key)

    # the recipe's utilities: upload the dataset and the script to a container
    blobs.create_container("data", fail_on_exist=False)
    dataset = tmp_path / "Train-28x28_cntk_text.txt"
    dataset.write_text("".join(f"|labels {i % 10} |features 0\n" for i in range(600)))
    blobs.create_blob_from_path("data", "mnist_cntk/Train-28x28_cntk_text.txt", str(dataset))
    blobs.create_blob_from_text("data", "scripts/ConvNet_MNIST.py", TRAINER)
    files.create_share("logs", fail_on_exist=False)

    resources.resource_groups.create_or_update(RG, {"location": "eastus"})
    client.workspaces.create(RG, WS, "eastus").result()
    client.experiments.create(RG, WS, EXP).result()
    cluster = client.clusters.create(
        RG,
        WS,
        CLUSTER,
        models.ClusterCreateParameters(
            vm_size="STANDARD_NC6",
            vm_priority="dedicated",
            scale_settings=models.ScaleSettings(
                manual=models.ManualScaleSettings(target_node_count=1)
            ),
            node_setup=models.NodeSetup(
                mount_volumes=models.MountVolumes(
                    azure_blob_file_systems=[
                        models.AzureBlobFileSystemReference(
                            account_name=account,
                            container_name="data",
                            credentials=storage,
                            relative_mount_path="bfs",
                        )
                    ]
                )
            ),
            user_account_settings=models.UserAccountSettings(
                admin_user_name="recipe", admin_user_password="Recipe-Passw0rd!"
            ),
        ),
    ).result()
    wait_for(lambda: client.clusters.get(RG, WS, CLUSTER).node_state_counts.idle_node_count)

    job = client.jobs.create(
        RG,
        WS,
        EXP,
        JOB,
        models.JobCreateParameters(
            cluster=models.ResourceId(id=cluster.id),
            node_count=1,
            mount_volumes=models.MountVolumes(
                azure_file_shares=[
                    models.AzureFileShareReference(
                        account_name=account,
                        credentials=storage,
                        azure_file_url=f"https://{files.primary_endpoint}/logs",
                        relative_mount_path="afs",
                    )
                ]
            ),
            input_directories=[
                models.InputDirectory(id="DATASET", path="$AZ_BATCHAI_MOUNT_ROOT/bfs/mnist_cntk")
            ],
            std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/afs",
            output_directories=[
                models.OutputDirectory(id="MODEL", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/afs")
            ],
            container_settings=models.ContainerSettings(
                image_source_registry=models.ImageSourceRegistry(
                    image="microsoft/cntk:2.5.1-gpu-python2.7-cuda9.0-cudnn7.0"
                )
            ),
            cntk_settings=models.CNTKsettings(
                python_script_file_path="$AZ_BATCHAI_MOUNT_ROOT/bfs/scripts/ConvNet_MNIST.py",
                command_line_args="$AZ_BATCHAI_INPUT_DATASET $AZ_BATCHAI_OUTPUT_MODEL",
            ),
        ),
    ).result()
    assert job.mount_volumes.azure_file_shares[0].credentials.account_key is None

    job = wait_for(
        lambda: (lambda j: j if j.execution_state in ("succeeded", "failed") else None)(
            client.jobs.get(RG, WS, EXP, JOB)
        ),
        timeout=60,
    )
    assert job.execution_state == "succeeded", job.execution_info.errors
    assert job.execution_info.exit_code == 0

    def listed(directory: str) -> dict:
        options = models.JobsListOutputFilesOptions(outputdirectoryid=directory)
        return {f.name: f for f in client.jobs.list_output_files(RG, WS, EXP, JOB, options)}

    verify = connection["ca_cert"]
    logs = listed("stdouterr")
    assert {"stdout.txt", "stderr.txt"} <= set(logs)
    streamed = requests.get(
        logs["stdout.txt"].download_url, headers={"Range": "bytes=9-"}, verify=verify
    )
    assert streamed.status_code == 206 and streamed.text.startswith("on 600 samples")
    assert "Finished Epoch" in requests.get(logs["stderr.txt"].download_url, verify=verify).text
    model = listed("MODEL")["ConvNet_MNIST_0.dnn"]
    assert requests.get(model.download_url, verify=verify).text == "model of 600 samples"
    # the logs and the model are in the job-level share, under the job's path segment
    segment = job.job_output_directory_path_segment
    assert (
        files.get_file_to_text("logs", f"{segment}/outputs", "ConvNet_MNIST_0.dnn").content
        == "model of 600 samples"
    )
    # and the dataset is still the blob that was uploaded, untouched by the job's read
    back = blobs.get_blob_to_text("data", "mnist_cntk/Train-28x28_cntk_text.txt").content
    assert back == dataset.read_text()
