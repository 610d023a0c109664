"""The job and the cluster are built from every setting that feeds them, checked with values
other than the defaults, so a setting wired to the wrong field (or not at all) shows."""

import pytest
from azure.mgmt.batchai import models

from quickstart import steps
from tests.fakes_azure import CLUSTER_ID, azure_settings, cluster

ENDPOINT = "acct7.file.core.chinacloudapi.cn"


class Share:
    primary_endpoint = ENDPOINT


def unusual_settings(**changes):
    """Every setting that feeds the job or the cluster, none at its default."""
    values = dict(
        directory="sample-dir_7",
        container_image="myregistry.azurecr.io/cntk:2.5-gpu",
        extra_args="--seed 7 --minibatch-size 32",
        epochs=3,
        node_count=4,
        vm_size="STANDARD_NC24",
        storage_account="acct7",
        storage_key="a2V5LWZvci1hY2N0Nw==",
        share="share-7",
        admin_user_name="trainer_7",
        admin_user_password="pw-7-secret",
        admin_ssh_public_key="",
    )
    values.update(changes)
    return azure_settings(**values)


def test_a_job_asks_for_the_configured_nodes_whatever_the_cluster_holds():
    """The job runs on node_count nodes (run --nodes N; the article's 1): a 4-node cluster must
    not give every job 4 nodes, and a 2-node setting must reach the job."""
    big = cluster(target=4, idle=4, current=4)
    assert steps.job_parameters(unusual_settings(node_count=1), big).node_count == 1
    parameters = steps.job_parameters(unusual_settings(node_count=2), big)
    assert parameters.node_count == 2
    assert parameters.cluster.id == CLUSTER_ID


def test_the_job_takes_directory_image_arguments_and_epochs_from_the_settings():
    parameters = steps.job_parameters(unusual_settings(), cluster())
    mount = "$AZ_BATCHAI_MOUNT_ROOT/azurefileshare"
    assert parameters.std_out_err_path_prefix == mount
    assert [(d.id, d.path) for d in parameters.input_directories] == [
        ("SAMPLE", f"{mount}/sample-dir_7")
    ]
    assert [(d.id, d.path_prefix, d.path_suffix) for d in parameters.output_directories] == [
        ("MODEL", mount, "Models")
    ]
    image = parameters.container_settings.image_source_registry
    assert image.image == "myregistry.azurecr.io/cntk:2.5-gpu"
    assert image.server_url is None and image.credentials is None
    assert parameters.cntk_settings.python_script_file_path == (
        "$AZ_BATCHAI_INPUT_SAMPLE/ConvNet_MNIST.py"
    )
    assert parameters.cntk_settings.command_line_args == (
        "$AZ_BATCHAI_INPUT_SAMPLE $AZ_BATCHAI_OUTPUT_MODEL --seed 7 --minibatch-size 32"
        " --max-epochs 3"
    )


@pytest.mark.parametrize(
    "extra_args, epochs, expected_tail",
    [
        ("", None, ""),
        ("", 1, " --max-epochs 1"),
        ("--seed 3", None, " --seed 3"),
        ("--seed 3", 40, " --seed 3 --max-epochs 40"),
    ],
)
def test_command_line_has_no_stray_spaces_or_missing_parts(extra_args, epochs, expected_tail):
    parameters = steps.job_parameters(
        unusual_settings(extra_args=extra_args, epochs=epochs), cluster()
    )
    assert parameters.cntk_settings.command_line_args == (
        "$AZ_BATCHAI_INPUT_SAMPLE $AZ_BATCHAI_OUTPUT_MODEL" + expected_tail
    )


def test_the_cluster_takes_size_count_share_and_admin_from_the_settings():
    parameters = steps.cluster_parameters(unusual_settings(), Share())
    assert parameters.vm_size == "STANDARD_NC24"
    assert parameters.scale_settings.manual.target_node_count == 4
    assert parameters.scale_settings.auto_scale is None
    (share,) = parameters.node_setup.mount_volumes.azure_file_shares
    assert share.account_name == "acct7"
    assert share.credentials.account_key == "a2V5LWZvci1hY2N0Nw=="
    assert share.azure_file_url == f"https://{ENDPOINT}/share-7"
    assert share.relative_mount_path == "azurefileshare"
    account = parameters.user_account_settings
    assert account.admin_user_name == "trainer_7"
    assert account.admin_user_password == "pw-7-secret"
    assert account.admin_user_ssh_public_key is None  # empty means not sent, not ""


def test_a_cluster_with_only_an_ssh_key_sends_no_empty_password():
    key = "ssh-rsa AAAAB3NzaC1yc2E7 trainer@host"
    parameters = steps.cluster_parameters(
        unusual_settings(admin_user_password="", admin_ssh_public_key=key), Share()
    )
    account = parameters.user_account_settings
    assert account.admin_user_password is None
    assert account.admin_user_ssh_public_key == key


def test_the_clusters_status_line_shows_each_count_in_its_place():
    """The article's status line; each count distinct, so a swapped field shows."""
    result = models.Cluster(
        vm_size="STANDARD_NC6",
        scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=9)),
    )
    result.allocation_state = "resizing"
    result.current_node_count = 8
    result.node_state_counts = models.NodeStateCounts()
    counts = result.node_state_counts
    counts.idle_node_count, counts.unusable_node_count, counts.running_node_count = 1, 2, 3
    counts.preparing_node_count, counts.leaving_node_count = 4, 5
    assert steps.cluster_status_line(result) == (
        "Cluster state: resizing Target: 9; Allocated: 8; Idle: 1; Unusable: 2; Running: 3; "
        "Preparing: 4; Leaving: 5"
    )


def test_a_cluster_without_scale_settings_or_counts_still_has_a_status_line():
    result = models.Cluster(vm_size="STANDARD_NC6")
    result.allocation_state = "steady"
    result.current_node_count = 0
    assert steps.cluster_status_line(result) == (
        "Cluster state: steady Target: n/a; Allocated: 0; Idle: None; Unusable: None; "
        "Running: None; Preparing: None; Leaving: None"
    )
