"""The tutorial's steps against autospec'd SDK clients: the exact models built, the order of calls,
monitoring with live streaming, failures, teardown and status."""

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from unittest.mock import ANY, call

import pytest
import requests
from azure.common import AzureMissingResourceHttpError
from azure.mgmt.batchai import models
from azure.storage.file.models import File as FileModel
from msrest import Serializer
from msrestazure import azure_cloud

from quickstart import downloads, jobs, status, steps, teardown
from quickstart.config import NAME_RULES
from quickstart.timing import StepClock
from tests.fakes_azure import (
    ADMIN_PASSWORD,
    CLIENT_SECRET,
    CLUSTER_ID,
    STORAGE_KEY,
    SUBSCRIPTION,
    azure_settings,
    cloud_error,
    cluster,
    http_response,
    job,
    output_file,
    patched_sdk,
)

STDERR_URL = (
    "https://mystorage.file.core.windows.net/batchaiquickstart/seg/stdouterr/stderr.txt?sv=x&sig=y"
)
MODEL_URL = (
    "https://mystorage.file.core.windows.net/batchaiquickstart/seg/outputs/Models/{}?sv=x&sig=y"
)
SERIALIZER = Serializer({name: cls for name, cls in vars(models).items() if isinstance(cls, type)})


@pytest.fixture
def azure():
    with patched_sdk() as fake:
        yield fake


@pytest.fixture
def sample_files(tmp_path, monkeypatch):
    """Three small files standing in for the built sample (the sample module has its own tests)."""
    paths = []
    for name, size in (
        ("Train-28x28_cntk_text.txt", 3000),
        ("Test-28x28_cntk_text.txt", 1000),
        ("ConvNet_MNIST.py", 200),
    ):
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        paths.append(path)
    monkeypatch.setattr(steps, "prepare_sample_files", lambda settings: as_sample_files(paths))
    return paths


def as_sample_files(paths):
    return {path.name: path for path in paths}


class JobScript:
    """A job that writes stderr.txt while it runs: each jobs.get advances it one step."""

    def __init__(self, states, chunks, exit_code=0, errors=None):
        self.states, self.chunks, self.exit_code, self.errors = states, chunks, exit_code, errors
        self.content = b""
        self.polls = 0
        self.range_headers = []

    def get(self, resource_group, workspace, experiment, job_name, **kwargs):
        state = self.states[min(self.polls, len(self.states) - 1)]
        if self.polls < len(self.chunks):
            self.content += self.chunks[self.polls]
        self.polls += 1
        finished = state in ("succeeded", "failed")
        result = job(
            job_name,
            state,
            exit_code=self.exit_code if finished else None,
            errors=self.errors if finished else None,
        )
        if finished:
            result.execution_info.start_time = datetime(2018, 5, 1, 9, 30, tzinfo=UTC)
            result.execution_info.end_time = datetime(2018, 5, 1, 9, 42, 5, tzinfo=UTC)
        return result

    def http_get(self, url, headers=None, stream=False, timeout=None):
        if url == STDERR_URL and headers is None:  # a download of the whole file
            return http_response(200, self.content)
        if url == STDERR_URL:
            self.range_headers.append(headers["Range"])
            start = int(re.match(r"bytes=(\d+)-$", headers["Range"]).group(1))
            if start >= len(self.content):
                return http_response(416)
            return http_response(
                206,
                self.content[start:],
                {"Content-Range": f"bytes {start}-{len(self.content) - 1}/{len(self.content)}"},
            )
        return http_response(200, b"model:" + url.encode())

    @staticmethod
    def list_output_files(resource_group, workspace, experiment, job_name, options, **kwargs):
        if options.outputdirectoryid == "stdouterr":
            return iter(
                [
                    output_file("execution.log", STDERR_URL.replace("stderr.txt", "execution.log")),
                    output_file("stderr.txt", STDERR_URL),
                    output_file("counters"),
                ]
            )
        return iter(
            [
                output_file(name, MODEL_URL.format(name))
                for name in ("ConvNet_MNIST_0.dnn", "ConvNet_MNIST_1.dnn")
            ]
        )


def script_job(azure, script):
    azure.batchai.jobs.get.side_effect = script.get
    azure.batchai.jobs.list_output_files.side_effect = script.list_output_files
    azure.http.get.side_effect = script.http_get


def allocating_cluster(azure):
    """No cluster yet; once created it goes resizing -> preparing -> idle."""
    azure.batchai.clusters.get.side_effect = [
        cloud_error(404, "ClusterNotFound"),
        cluster("resizing"),
        cluster("resizing"),
        cluster("steady", preparing=1, current=1),
        cluster("steady", idle=1, current=1),
    ]


# 1. Credentials and clients ----------------------------------------------------------------------


def test_clients_sign_in_with_the_service_principal_on_the_chosen_cloud(azure):
    clients = steps.create_clients(azure_settings(cloud="AzureChinaCloud"))

    azure.credentials_class.assert_called_once_with(
        client_id="myclient",
        secret=CLIENT_SECRET,
        tenant="mytenant",
        cloud_environment=azure_cloud.AZURE_CHINA_CLOUD,
        verify=True,
    )
    credentials = azure.credentials_class.return_value
    azure.batchai_class.assert_called_once_with(
        credentials, SUBSCRIPTION, base_url="https://management.chinacloudapi.cn"
    )
    azure.resource_class.assert_called_once_with(
        credentials, SUBSCRIPTION, base_url="https://management.chinacloudapi.cn"
    )
    assert clients == (azure.batchai, azure.resources, azure.http)


def test_local_cloud_clients_trust_its_ca_certificate_explicitly(azure, tmp_path):
    settings = azure_settings(
        cloud="local",
        resource_manager_url="https://127.0.0.1:4443/",
        active_directory_url="https://127.0.0.1:4443/adfs",
        active_directory_resource_id="https://127.0.0.1:4443/",
        storage_connection_string="AccountName=acct;AccountKey=a2V5;FileEndpoint=https://127.0.0.1:4443/acct",
        ca_cert=str(tmp_path / "ca.pem"),
    )

    clients = steps.create_clients(settings)
    steps.create_file_share(settings, clients.http)

    kwargs = azure.credentials_class.call_args.kwargs
    assert kwargs["verify"] == str(tmp_path / "ca.pem")
    assert kwargs["cloud_environment"].endpoints.active_directory == "https://127.0.0.1:4443/adfs"
    assert kwargs["cloud_environment"].endpoints.resource_manager == "https://127.0.0.1:4443/"
    assert azure.batchai.config.connection.verify == str(tmp_path / "ca.pem")
    assert azure.resources.config.connection.verify == str(tmp_path / "ca.pem")
    assert azure.http.verify == str(tmp_path / "ca.pem")
    assert azure.http.trust_env is False  # REQUESTS_CA_BUNDLE must not replace the CA certificate
    azure.file_service_class.assert_called_once_with(
        connection_string=settings.storage_connection_string, request_session=azure.http
    )


# 2-3. Resource group, share, directory, sample, upload -------------------------------------------


def test_resource_group_share_and_directory_are_created_or_reused(azure):
    settings = azure_settings()
    steps.create_resource_group(azure.resources, settings)
    service = steps.create_file_share(settings, azure.http)
    steps.create_sample_directory(service, settings)

    azure.resources.resource_groups.create_or_update.assert_called_once_with(
        "myresourcegroup", {"location": "eastus"}
    )
    azure.file_service_class.assert_called_once_with(
        "mystorage", STORAGE_KEY, request_session=azure.http, endpoint_suffix="core.windows.net"
    )
    azure.files.create_share.assert_called_once_with("batchaiquickstart", fail_on_exist=False)
    azure.files.create_directory.assert_called_once_with(
        "batchaiquickstart", "mnistcntksample", fail_on_exist=False
    )


def test_upload_sends_each_sample_file_with_a_progress_callback(azure, sample_files, capsys):
    azure.files.get_file_properties.side_effect = AzureMissingResourceHttpError("Not found", 404)
    steps.upload_sample_files(azure.files, azure_settings(), as_sample_files(sample_files))

    assert azure.files.create_file_from_path.call_args_list == [
        call("batchaiquickstart", "mnistcntksample", path.name, str(path), progress_callback=ANY)
        for path in sample_files
    ]
    progress = azure.files.create_file_from_path.call_args.kwargs["progress_callback"]
    progress(100, 200)  # the SDK calls it as chunks finish; it must accept (current, total)
    assert "Uploaded Train-28x28_cntk_text.txt (3,000 bytes)" in capsys.readouterr().out


def share_file(size, md5):
    result = FileModel()
    result.properties.content_length = size
    result.properties.content_settings.content_md5 = md5
    return result


def test_only_files_that_changed_are_uploaded_and_the_md5_is_stored_after_the_upload(
    azure, sample_files, capsys
):
    train, test, script = sample_files
    md5 = {
        path.name: base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()
        for path in sample_files
    }
    on_share = {
        train.name: share_file(3000, md5[train.name]),  # the same file
        test.name: share_file(1000, md5[train.name]),  # same size, other content
        script.name: share_file(300, md5[script.name]),
    }  # other size
    azure.files.get_file_properties.side_effect = lambda share, directory, name: on_share[name]

    steps.upload_sample_files(azure.files, azure_settings(), as_sample_files(sample_files))

    assert [c.args[2] for c in azure.files.create_file_from_path.call_args_list] == [
        test.name,
        script.name,
    ]
    assert azure.call_names() == [
        "files.get_file_properties",
        "files.create_file_from_path",
        "files.set_file_properties",
        "files.get_file_properties",
        "files.create_file_from_path",
        "files.set_file_properties",
    ]
    stored = [
        c.args[:3] + (c.args[3].content_md5, c.args[3].content_type)
        for c in azure.files.set_file_properties.call_args_list
    ]
    assert stored == [
        ("batchaiquickstart", "mnistcntksample", test.name, md5[test.name], "text/plain"),
        ("batchaiquickstart", "mnistcntksample", script.name, md5[script.name], "text/x-python"),
    ]
    out = capsys.readouterr().out
    assert (
        "Unchanged on the share, not uploaded: Train-28x28_cntk_text.txt (3,000 bytes, same MD5)"
        in out
    )
    assert (
        "Uploaded Test-28x28_cntk_text.txt (1,000 bytes)" in out
        and "Uploaded ConvNet_MNIST.py" in out
    )


def test_an_upload_that_breaks_off_stores_no_md5(azure, sample_files):
    azure.files.get_file_properties.side_effect = AzureMissingResourceHttpError("Not found", 404)
    azure.files.create_file_from_path.side_effect = ConnectionError("reset")
    with pytest.raises(ConnectionError):
        steps.upload_sample_files(azure.files, azure_settings(), as_sample_files(sample_files))
    azure.files.set_file_properties.assert_not_called()


def test_sample_files_are_the_built_ctf_files_the_training_script_and_its_pytorch_port(
    tmp_path, capsys
):
    from quickstart import sample

    files = steps.prepare_sample_files(azure_settings(data_dir=str(sample.DEFAULT_DATA_DIR)))

    assert list(files)[:3] == [
        "Train-28x28_cntk_text.txt",
        "Test-28x28_cntk_text.txt",
        "ConvNet_MNIST.py",
    ]
    port = {name for name in files if name.startswith("convnet_pytorch/")}
    assert {"convnet_pytorch/__init__.py", "convnet_pytorch/conv1_pool.c"} <= port
    assert port == {
        f"convnet_pytorch/{p.name}"
        for p in sample.PYTORCH_PORT.iterdir()
        if p.suffix in (".py", ".c")
    }  # what the job imports and compiles, no caches
    assert all(path.is_file() for path in files.values())
    assert capsys.readouterr().out == (
        "Sample files ready: Train-28x28_cntk_text.txt, Test-28x28_cntk_text.txt, "
        "ConvNet_MNIST.py, convnet_pytorch/\n"
    )


def test_files_in_a_folder_go_into_that_folder_of_the_sample_directory(azure, tmp_path):
    azure.files.get_file_properties.side_effect = AzureMissingResourceHttpError("Not found", 404)
    (tmp_path / "train.py").write_text("print('train')\n")
    files = {"ConvNet_MNIST.py": tmp_path / "train.py", "port/train.py": tmp_path / "train.py"}

    steps.upload_sample_files(azure.files, azure_settings(), files)

    azure.files.create_directory.assert_called_once_with(
        "batchaiquickstart", "mnistcntksample/port", fail_on_exist=False
    )
    assert [c.args[1:3] for c in azure.files.create_file_from_path.call_args_list] == [
        ("mnistcntksample", "ConvNet_MNIST.py"),
        ("mnistcntksample/port", "train.py"),
    ]


# 4-5. Workspace and cluster -----------------------------------------------------------------------


def test_cluster_is_built_exactly_as_the_article_builds_it(azure):
    allocating_cluster(azure)
    steps.create_workspace(azure.batchai, azure_settings())
    steps.create_cluster(azure.batchai, azure_settings(), azure.files)

    azure.batchai.workspaces.create.assert_called_once_with(
        "myresourcegroup", "myworkspace", "eastus"
    )
    expected = models.ClusterCreateParameters(
        vm_size="STANDARD_NC6",
        scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=1)),
        node_setup=models.NodeSetup(
            mount_volumes=models.MountVolumes(
                azure_file_shares=[
                    models.AzureFileShareReference(
                        account_name="mystorage",
                        credentials=models.AzureStorageCredentialsInfo(account_key=STORAGE_KEY),
                        azure_file_url="https://mystorage.file.core.windows.net/batchaiquickstart",
                        relative_mount_path="azurefileshare",
                    )
                ]
            )
        ),
        user_account_settings=models.UserAccountSettings(
            admin_user_name="demouser", admin_user_password=ADMIN_PASSWORD
        ),
    )
    azure.batchai.clusters.create.assert_called_once_with(
        "myresourcegroup", "myworkspace", "mycluster", expected
    )
    body = SERIALIZER.body(
        azure.batchai.clusters.create.call_args.args[3], "ClusterCreateParameters"
    )
    assert body == {
        "properties": {
            "vmSize": "STANDARD_NC6",
            "vmPriority": "dedicated",
            "scaleSettings": {
                "manual": {"targetNodeCount": 1, "nodeDeallocationOption": "requeue"}
            },
            "nodeSetup": {
                "mountVolumes": {
                    "azureFileShares": [
                        {
                            "accountName": "mystorage",
                            "azureFileUrl": "https://mystorage.file.core.windows.net/batchaiquickstart",
                            "credentials": {"accountKey": STORAGE_KEY},
                            "relativeMountPath": "azurefileshare",
                            "fileMode": "0777",
                            "directoryMode": "0777",
                        }
                    ]
                }
            },
            "userAccountSettings": {
                "adminUserName": "demouser",
                "adminUserPassword": ADMIN_PASSWORD,
            },
        }
    }


def test_cluster_with_ssh_key_and_more_nodes(azure):
    allocating_cluster(azure)
    settings = azure_settings(
        admin_user_password="",
        admin_ssh_public_key="ssh-rsa AAAAB3Nz me@host",
        node_count=3,
        vm_size="Standard_NC6s_v3",
    )
    steps.create_cluster(azure.batchai, settings, azure.files)

    parameters = azure.batchai.clusters.create.call_args.args[3]
    assert parameters.vm_size == "Standard_NC6s_v3"
    assert parameters.scale_settings.manual.target_node_count == 3
    assert parameters.user_account_settings == models.UserAccountSettings(
        admin_user_name="demouser", admin_user_ssh_public_key="ssh-rsa AAAAB3Nz me@host"
    )


def test_an_existing_cluster_is_reused(azure, capsys):
    azure.batchai.clusters.get.return_value = cluster("steady", idle=1, current=1)
    result = steps.create_cluster(azure.batchai, azure_settings(), azure.files)

    azure.batchai.clusters.create.assert_not_called()
    assert result.id == CLUSTER_ID
    assert "Cluster mycluster exists; reusing it" in capsys.readouterr().out


def test_waiting_prints_the_status_line_at_each_poll_until_a_node_is_idle(azure, capsys):
    allocating_cluster(azure)
    next(azure.batchai.clusters.get.side_effect)  # the cluster exists already
    sleeps = []
    result = steps.wait_for_idle_node(azure.batchai, azure_settings(poll_interval=7), sleeps.append)

    assert result.node_state_counts.idle_node_count == 1
    assert sleeps == [7, 7, 7]
    assert capsys.readouterr().out.splitlines() == [
        "Cluster state: resizing Target: 1; Allocated: 0; Idle: 0; Unusable: 0; Running: 0; "
        "Preparing: 0; Leaving: 0",
        "Cluster state: resizing Target: 1; Allocated: 0; Idle: 0; Unusable: 0; Running: 0; "
        "Preparing: 0; Leaving: 0",
        "Cluster state: steady Target: 1; Allocated: 1; Idle: 0; Unusable: 0; Running: 0; "
        "Preparing: 1; Leaving: 0",
        "Cluster state: steady Target: 1; Allocated: 1; Idle: 1; Unusable: 0; Running: 0; "
        "Preparing: 0; Leaving: 0",
    ]


def test_a_cluster_allocation_error_is_printed_with_its_details(azure, capsys):
    error = models.BatchAIError()
    error.code, error.message = "AllocationFailed", "Not enough cores quota"
    detail = models.NameValuePair(name="Quota", value="NC cores: 0 of 6")
    error.details = [detail]
    azure.batchai.clusters.get.return_value = cluster("steady", errors=[error])

    with pytest.raises(steps.StepFailed, match="could not allocate"):
        steps.wait_for_idle_node(azure.batchai, azure_settings(), lambda seconds: None)

    out = capsys.readouterr().out
    assert "Cluster error: AllocationFailed: Not enough cores quota" in out
    assert "  Quota: NC cores: 0 of 6" in out


# 6-7. Experiment and job --------------------------------------------------------------------------


def test_job_is_built_exactly_as_the_article_builds_it(azure):
    steps.create_experiment(azure.batchai, azure_settings())
    steps.create_job(azure.batchai, azure_settings(), cluster(), "cntk_05_01_2018_093000")

    azure.batchai.experiments.create.assert_called_once_with(
        "myresourcegroup", "myworkspace", "myexperiment"
    )
    expected = models.JobCreateParameters(
        cluster=models.ResourceId(id=CLUSTER_ID),
        node_count=1,
        std_out_err_path_prefix="$AZ_BATCHAI_MOUNT_ROOT/azurefileshare",
        input_directories=[
            models.InputDirectory(
                id="SAMPLE", path="$AZ_BATCHAI_MOUNT_ROOT/azurefileshare/mnistcntksample"
            )
        ],
        output_directories=[
            models.OutputDirectory(
                id="MODEL",
                path_prefix="$AZ_BATCHAI_MOUNT_ROOT/azurefileshare",
                path_suffix="Models",
            )
        ],
        container_settings=models.ContainerSettings(
            image_source_registry=models.ImageSourceRegistry(
                image="microsoft/cntk:2.1-gpu-python3.5-cuda8.0-cudnn6.0"
            )
        ),
        cntk_settings=models.CNTKsettings(
            python_script_file_path="$AZ_BATCHAI_INPUT_SAMPLE/ConvNet_MNIST.py",
            command_line_args="$AZ_BATCHAI_INPUT_SAMPLE $AZ_BATCHAI_OUTPUT_MODEL",
        ),
    )
    azure.batchai.jobs.create.assert_called_once_with(
        "myresourcegroup", "myworkspace", "myexperiment", "cntk_05_01_2018_093000", expected
    )
    azure.batchai.jobs.delete.assert_not_called()
    body = SERIALIZER.body(azure.batchai.jobs.create.call_args.args[4], "JobCreateParameters")
    assert body == {
        "properties": {
            "schedulingPriority": "normal",
            "cluster": {"id": CLUSTER_ID},
            "nodeCount": 1,
            "containerSettings": {
                "imageSourceRegistry": {
                    "image": "microsoft/cntk:2.1-gpu-python3.5-cuda8.0-cudnn6.0"
                }
            },
            "cntkSettings": {
                "pythonScriptFilePath": "$AZ_BATCHAI_INPUT_SAMPLE/ConvNet_MNIST.py",
                "commandLineArgs": "$AZ_BATCHAI_INPUT_SAMPLE $AZ_BATCHAI_OUTPUT_MODEL",
            },
            "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/azurefileshare",
            "inputDirectories": [
                {"id": "SAMPLE", "path": "$AZ_BATCHAI_MOUNT_ROOT/azurefileshare/mnistcntksample"}
            ],
            "outputDirectories": [
                {
                    "id": "MODEL",
                    "pathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/azurefileshare",
                    "pathSuffix": "Models",
                }
            ],
        }
    }


def test_job_takes_image_extra_args_and_epochs_from_settings(azure):
    settings = azure_settings(
        container_image="myregistry/cntk:2.5", extra_args="--seed 7", epochs=3
    )
    steps.create_job(azure.batchai, settings, cluster(), "myjob")

    parameters = azure.batchai.jobs.create.call_args.args[4]
    assert parameters.container_settings.image_source_registry.image == "myregistry/cntk:2.5"
    assert parameters.cntk_settings.command_line_args == (
        "$AZ_BATCHAI_INPUT_SAMPLE $AZ_BATCHAI_OUTPUT_MODEL --seed 7 --max-epochs 3"
    )


def test_a_pinned_job_name_replaces_the_finished_job_of_that_name_and_says_so(azure, capsys):
    azure.batchai.jobs.get.return_value = job("myjob", "succeeded", exit_code=0)
    steps.create_job(azure.batchai, azure_settings(job="myjob"), cluster(), "myjob")
    assert azure.call_names() == ["jobs.get", "jobs.delete", "jobs.create"]
    assert (
        "Replaced job myjob from an earlier run (succeeded; its files stay on the share): the job "
        "name is "
        "pinned in the settings"
    ) in capsys.readouterr().out

    azure.batchai.jobs.get.side_effect = cloud_error(404, "JobNotFound")
    steps.create_job(azure.batchai, azure_settings(job="myjob"), cluster(), "myjob")
    assert azure.batchai.jobs.create.call_count == 2 and azure.batchai.jobs.delete.call_count == 1
    assert "Replaced" not in capsys.readouterr().out


def test_a_pinned_job_that_is_still_running_is_never_deleted(azure):
    azure.batchai.jobs.get.return_value = job("myjob", "running")
    with pytest.raises(
        steps.StepFailed, match="job myjob from an earlier run is running; follow it with"
    ):
        steps.create_job(azure.batchai, azure_settings(job="myjob"), cluster(), "myjob")
    azure.batchai.jobs.delete.assert_not_called()
    azure.batchai.jobs.create.assert_not_called()


def test_a_timestamped_name_already_taken_gets_a_suffix(azure, capsys):
    azure.batchai.jobs.create.side_effect = [
        cloud_error(409, "JobAlreadyExists"),
        cloud_error(409, "JobAlreadyExists"),
        azure.batchai.jobs.create.return_value,
    ]
    assert (
        steps.create_job(azure.batchai, azure_settings(), cluster(), "cntk_05_01_2018_093000")
        == "cntk_05_01_2018_093000_3"
    )
    assert [c.args[3] for c in azure.batchai.jobs.create.call_args_list] == [
        "cntk_05_01_2018_093000",
        "cntk_05_01_2018_093000_2",
        "cntk_05_01_2018_093000_3",
    ]
    assert "Job cntk_05_01_2018_093000_3 submitted" in capsys.readouterr().out

    azure.batchai.jobs.create.side_effect = cloud_error(409, "JobAlreadyExists")
    azure.batchai.jobs.get.side_effect = cloud_error(404, "JobNotFound")
    with pytest.raises(Exception, match="JobAlreadyExists"):  # a pinned name is never renamed
        steps.create_job(azure.batchai, azure_settings(job="myjob"), cluster(), "myjob")


def test_job_names_are_timestamped_unless_pinned():
    now = datetime(2018, 5, 1, 9, 30, 0, tzinfo=UTC)
    name = jobs.choose_job_name(azure_settings(), now)
    assert name == "cntk_05_01_2018_093000"
    assert NAME_RULES["job"][0].match(name)
    assert jobs.choose_job_name(azure_settings(job="myjob"), now) == "myjob"
    later = jobs.choose_job_name(azure_settings(), now + timedelta(seconds=1))
    assert later != name


# 8. Monitoring ------------------------------------------------------------------------------------


def test_monitoring_streams_growing_output_live_and_ends_with_the_exit_code(azure, capsys):
    chunks = [
        b"",
        b"Selected CPU as the process wide default device.\n",
        b"Finished Epoch[1 of 2]: loss = 0.4",
        b"05960 caf\xc3",
        b"\xa9\nFinished Epoch[2 of 2]\n",
        b"Final Results: errs = 0.54%\n",
    ]
    script = JobScript(["queued", "running", "running", "running", "running", "succeeded"], chunks)
    script_job(azure, script)

    result = steps.monitor_job(
        steps.Clients(azure.batchai, azure.resources, azure.http),
        azure_settings(),
        "myjob",
        sleep=lambda seconds: None,
    )

    out = capsys.readouterr().out
    full_log = b"".join(chunks).decode()
    assert full_log in out
    assert "café" in out  # a UTF-8 character split across two reads comes out whole
    # Live: the first epoch line appears before the job is reported finished.
    assert out.index("Finished Epoch[1 of 2]") < out.index("Job state: succeeded")
    assert re.search(r"^\d\d:\d\d:\d\d Job state: queued$", out, re.M)
    assert re.search(r"^\d\d:\d\d:\d\d Job state: running$", out, re.M)
    assert out.count("Job state: running") == 1  # state changes only
    assert "Job myjob succeeded with exit code 0; execution took 0:12:05" in out
    assert result.execution_state == "succeeded"
    # Range reads start where the last one ended.
    offsets = [int(h[6:-1]) for h in script.range_headers]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert set(offsets) >= {len(b"".join(chunks[: i + 1])) for i in range(1, len(chunks))}
    listed = [
        c.args[4].outputdirectoryid for c in azure.batchai.jobs.list_output_files.call_args_list
    ]
    assert listed == ["stdouterr"]  # the download URL is looked up once


def test_output_without_a_final_newline_does_not_run_into_the_next_line(azure, capsys):
    script_job(
        azure, JobScript(["running", "running", "succeeded"], [b"epoch 1 ", b"loss 0.4", b""])
    )
    steps.monitor_job(
        steps.Clients(azure.batchai, azure.resources, azure.http),
        azure_settings(),
        "myjob",
        sleep=lambda seconds: None,
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "epoch 1 loss 0.4"
    assert lines[2].endswith(" Job state: succeeded")
    assert lines[3].startswith("Job myjob succeeded with exit code 0")


def test_monitoring_renews_an_expired_download_link(azure, capsys):
    script = JobScript(["running", "running", "succeeded"], [b"one\n", b"two\n", b""])
    script_job(azure, script)
    responses = iter([http_response(403)])

    def http_get(url, headers=None, **kwargs):
        response = next(responses, None)  # (a Response is falsy when not ok)
        return script.http_get(url, headers=headers) if response is None else response

    azure.http.get.side_effect = http_get

    steps.monitor_job(
        steps.Clients(azure.batchai, azure.resources, azure.http),
        azure_settings(),
        "myjob",
        sleep=lambda seconds: None,
    )
    assert "one\ntwo\n" in capsys.readouterr().out
    assert azure.batchai.jobs.list_output_files.call_count == 2


def test_a_failed_job_reports_its_exit_code_and_errors(azure, capsys):
    error = models.BatchAIError()
    error.code, error.message, error.details = "JobFailed", "The job failed with exit code 3", None
    script = JobScript(["running", "failed"], [b"Traceback ...\n"], exit_code=3, errors=[error])
    script_job(azure, script)

    result = steps.monitor_job(
        steps.Clients(azure.batchai, azure.resources, azure.http),
        azure_settings(),
        "myjob",
        sleep=lambda seconds: None,
    )

    out = capsys.readouterr().out
    assert "Job myjob failed with exit code 3" in out
    assert "Job error: JobFailed: The job failed with exit code 3" in out
    assert jobs.job_exit_status(result) == 3
    assert jobs.job_exit_status(job("x", "failed", exit_code=-1)) == 1
    assert jobs.job_exit_status(job("x", "failed", exit_code=None)) == 1
    assert jobs.job_exit_status(job("x", "succeeded", exit_code=0)) == 0


# 9-10. Output files and models -------------------------------------------------------------------


def test_output_files_are_listed_with_urls_and_downloaded(azure, tmp_path, capsys):
    script = JobScript(["succeeded"], [b"all done\n"])
    script_job(azure, script)
    script.get("myresourcegroup", "myworkspace", "myexperiment", "myjob")
    settings = azure_settings(download_dir=str(tmp_path / "outputs"))

    listing = steps.list_output_files(azure.batchai, settings, "myjob")
    target = steps.download_output_files(azure.http, settings, "myjob", listing)

    out = capsys.readouterr().out
    hidden = "https://mystorage.file.core.windows.net/batchaiquickstart/seg/{}?sv=x&sig=***"
    assert "file: stderr.txt, download url: " + hidden.format("stdouterr/stderr.txt") in out
    assert (
        "file: ConvNet_MNIST_1.dnn, download url: "
        + hidden.format("outputs/Models/ConvNet_MNIST_1.dnn")
        in out
    )
    assert "sig=y" not in out  # SAS signatures are secrets
    assert "counters" not in out  # directories have no download URL
    options = [c.args[4] for c in azure.batchai.jobs.list_output_files.call_args_list]
    assert options == [
        models.JobsListOutputFilesOptions(outputdirectoryid="stdouterr"),
        models.JobsListOutputFilesOptions(outputdirectoryid="MODEL"),
    ]
    assert target == tmp_path / "outputs" / "myjob"
    assert sorted(p.name for p in target.iterdir()) == [
        "ConvNet_MNIST_0.dnn",
        "ConvNet_MNIST_1.dnn",
        "stdouterr",
    ]
    assert (target / "ConvNet_MNIST_0.dnn").read_bytes() == b"model:" + MODEL_URL.format(
        "ConvNet_MNIST_0.dnn"
    ).encode()
    assert (target / "stdouterr" / "stderr.txt").read_bytes() == b"all done\n"
    assert f"Downloaded 2 model files to {target}" in out


def test_a_failed_download_leaves_no_partial_file_in_place(azure, tmp_path):
    (tmp_path / "myjob").mkdir()
    (tmp_path / "myjob" / "ConvNet_MNIST_0.dnn").write_bytes(b"earlier model")
    azure.http.get.return_value = http_response(403)
    listing = {
        "MODEL": [output_file("ConvNet_MNIST_0.dnn", MODEL_URL.format("ConvNet_MNIST_0.dnn"))]
    }
    with pytest.raises(requests.HTTPError):
        steps.download_output_files(
            azure.http, azure_settings(download_dir=str(tmp_path)), "myjob", listing
        )
    assert (tmp_path / "myjob.earlier" / "ConvNet_MNIST_0.dnn").read_bytes() == b"earlier model"
    assert not (tmp_path / "myjob" / "ConvNet_MNIST_0.dnn").exists()


# The whole run ------------------------------------------------------------------------------------


def test_run_calls_every_step_in_the_articles_order(azure, sample_files, tmp_path, capsys):
    allocating_cluster(azure)
    azure.batchai.jobs.list_by_experiment.return_value = iter([])
    azure.files.get_file_properties.side_effect = AzureMissingResourceHttpError("Not found", 404)
    script_job(azure, JobScript(["queued", "running", "succeeded"], [b"", b"epoch 1\n", b"done\n"]))
    settings = azure_settings(download_dir=str(tmp_path / "outputs"))

    assert steps.run(settings, sleep=lambda seconds: None) == 0

    assert azure.call_names() == [
        "jobs.list_by_experiment",
        "resource_groups.create_or_update",
        "files.create_share",
        "files.create_directory",
        "files.get_file_properties",
        "files.create_file_from_path",
        "files.set_file_properties",
        "files.get_file_properties",
        "files.create_file_from_path",
        "files.set_file_properties",
        "files.get_file_properties",
        "files.create_file_from_path",
        "files.set_file_properties",
        "workspaces.create",
        "clusters.get",
        "clusters.create",
        "clusters.get",
        "experiments.create",
        "jobs.create",
        "jobs.get",
        "jobs.list_output_files",
        "jobs.get",
        "jobs.list_output_files",
    ]
    assert azure.files.create_file_from_path.call_count == 3
    job_name = azure.batchai.jobs.create.call_args.args[3]
    assert re.match(r"^cntk_\d\d_\d\d_\d{4}_\d{6}$", job_name)
    assert len(list((tmp_path / "outputs" / job_name).glob("*.dnn"))) == 2
    out = capsys.readouterr().out
    for secret in (CLIENT_SECRET, STORAGE_KEY, ADMIN_PASSWORD):
        assert secret not in out


def test_run_ends_with_the_test_error_from_the_jobs_output_and_the_time_of_each_step(
    azure, sample_files, tmp_path, capsys
):
    allocating_cluster(azure)
    azure.batchai.jobs.list_by_experiment.return_value = iter([])
    final = b"Finished Epoch[2 of 2]\n\nFinal Results: Minibatch[1-11]: errs = 1.25% * 10000\n\n"
    script_job(
        azure,
        JobScript(
            ["running", "succeeded"], [b"Final Results: Minibatch[1-2]: errs = 9.00% * 5\n", final]
        ),
    )
    settings = azure_settings(download_dir=str(tmp_path / "outputs"))
    with StepClock().running() as clock:  # (the "sample" step is stubbed here: not timed)
        assert steps.run(settings, sleep=lambda seconds: None) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "Final test error: 1.25% on 10,000 test images"  # the job's last one
    assert re.fullmatch(
        r"Wall time: \d+\.\d s in all \(sign-in \d+\.\d s, resource group \d+\.\d s, "
        r"share \d+\.\d s, upload \d+\.\d s, workspace \d+\.\d s, cluster \d+\.\d s, "
        r"experiment and job \d+\.\d s, training \d+\.\d s, output files \d+\.\d s, "
        r"download \d+\.\d s\)",
        clock.summary(),
    ), clock.summary()


def test_a_job_without_final_results_says_so(tmp_path, capsys):
    (tmp_path / "stdouterr").mkdir()
    (tmp_path / "stdouterr" / "stderr.txt").write_text("Traceback ...\n")
    assert downloads.report_test_error(tmp_path) is None
    assert capsys.readouterr().out == (
        "Final test error: not reported (no 'Final Results' line in the job's stderr.txt)\n"
    )


def test_run_follows_a_job_an_earlier_run_left_running_instead_of_submitting(
    azure, sample_files, tmp_path, capsys
):
    azure.batchai.jobs.list_by_experiment.return_value = iter([job("cntk_a", "running")])
    script = JobScript(["running", "succeeded"], [b"epoch 1 (before the reattach)\n", b"epoch 2\n"])
    script_job(azure, script)

    assert (
        steps.run(
            azure_settings(download_dir=str(tmp_path / "outputs")), sleep=lambda seconds: None
        )
        == 0
    )

    out = capsys.readouterr().out
    assert (
        "Job cntk_a from an earlier run is still running: following it instead of submitting "
        "another; "
        "its output so far comes first"
    ) in out
    assert "epoch 1 (before the reattach)\nepoch 2\n" in out
    assert script.range_headers[0] == "bytes=0-"  # the output so far, from its first byte
    for never in (
        "resource_groups.create_or_update",
        "files.create_file_from_path",
        "clusters.create",
        "jobs.create",
        "jobs.delete",
    ):
        assert never not in azure.call_names()
    assert (tmp_path / "outputs" / "cntk_a" / "ConvNet_MNIST_1.dnn").exists()


def test_run_with_a_pinned_name_follows_that_job_while_it_runs_and_never_deletes_it(
    azure, sample_files, tmp_path, capsys
):
    states = iter(["running", "running", "succeeded"])
    azure.batchai.jobs.get.side_effect = lambda *args, **kwargs: job(
        "myjob", next(states), exit_code=0
    )
    azure.batchai.jobs.list_output_files.side_effect = JobScript.list_output_files
    azure.http.get.side_effect = JobScript([], []).http_get

    assert (
        steps.run(
            azure_settings(job="myjob", download_dir=str(tmp_path)), sleep=lambda seconds: None
        )
        == 0
    )

    assert "Job myjob from an earlier run is still running: following it" in capsys.readouterr().out
    azure.batchai.jobs.delete.assert_not_called()
    azure.batchai.jobs.create.assert_not_called()
    azure.batchai.jobs.list_by_experiment.assert_not_called()


def test_ctrl_c_while_monitoring_leaves_the_job_alone(azure, sample_files, capsys):
    """The command line says what to do next (tests/test_cli.py); the job is never deleted."""
    allocating_cluster(azure)
    azure.batchai.jobs.get.side_effect = [
        cloud_error(404, "JobNotFound"),
        cloud_error(404, "JobNotFound"),
        KeyboardInterrupt,
    ]

    with pytest.raises(KeyboardInterrupt):
        steps.run(azure_settings(job="myjob"), sleep=lambda seconds: None)
    azure.batchai.jobs.delete.assert_not_called()


def test_steps_are_timed_only_while_a_clock_runs(azure, capsys):
    steps.create_resource_group(azure.resources, azure_settings())
    with StepClock().running() as clock:
        steps.create_resource_group(azure.resources, azure_settings())
    assert list(clock.seconds) == ["resource group"]
    assert capsys.readouterr().out.count("Resource group myresourcegroup ready") == 2


def test_downloads_of_an_earlier_job_of_the_same_name_are_kept_aside(azure, tmp_path, capsys):
    earlier = tmp_path / "myjob"
    (earlier / "stdouterr").mkdir(parents=True)
    (earlier / "ConvNet_MNIST_39.dnn").write_bytes(b"earlier model")
    (tmp_path / "myjob.earlier").mkdir()  # taken already
    script_job(azure, JobScript(["succeeded"], [b"done\n"]))
    listing = {
        "MODEL": [output_file("ConvNet_MNIST_0.dnn", MODEL_URL.format("ConvNet_MNIST_0.dnn"))]
    }

    steps.download_output_files(
        azure.http, azure_settings(download_dir=str(tmp_path)), "myjob", listing
    )

    assert (tmp_path / "myjob.earlier-2" / "ConvNet_MNIST_39.dnn").read_bytes() == b"earlier model"
    assert sorted(p.name for p in (tmp_path / "myjob").iterdir()) == ["ConvNet_MNIST_0.dnn"]
    assert (
        "Kept the earlier downloads of myjob in {}".format(tmp_path / "myjob.earlier-2")
        in capsys.readouterr().out
    )


# Teardown and status ------------------------------------------------------------------------------


def test_teardown_deletes_jobs_then_cluster_workspace_and_resource_group(azure, capsys):
    azure.batchai.jobs.list_by_experiment.return_value = iter(
        [job("cntk_1", "succeeded"), job("cntk_2", "failed")]
    )

    assert teardown.teardown(azure_settings()) == 0

    assert azure.call_names() == [
        "jobs.list_by_experiment",
        "jobs.delete",
        "experiments.delete",
        "clusters.delete",
        "workspaces.delete",
        "resource_groups.delete",
    ]
    assert azure.batchai.jobs.delete.call_args_list == [
        call("myresourcegroup", "myworkspace", "myexperiment", "cntk_1"),
        call("myresourcegroup", "myworkspace", "myexperiment", "cntk_2"),
    ]
    azure.batchai.clusters.delete.assert_called_once_with(
        "myresourcegroup", "myworkspace", "mycluster"
    )
    azure.batchai.workspaces.delete.assert_called_once_with("myresourcegroup", "myworkspace")
    azure.resources.resource_groups.delete.assert_called_once_with("myresourcegroup")
    azure.files.delete_share.assert_not_called()  # on Azure the share stays unless asked
    assert capsys.readouterr().out.splitlines()[1:] == [
        "Removed job cntk_1",
        "Removed job cntk_2",
        "Removed experiment myexperiment",
        "Removed cluster mycluster",
        "Removed workspace myworkspace",
        "Removed resource group myresourcegroup",
        "Kept file share batchaiquickstart (`teardown --delete-share` removes it)",
    ]


def test_teardown_on_the_local_cloud_removes_the_share_too_unless_kept(azure, capsys):
    azure.batchai.jobs.list_by_experiment.return_value = iter([])
    local = azure_settings(
        cloud="local", storage_connection_string="FileEndpoint=https://127.0.0.1/x"
    )
    azure.files.delete_share.return_value = True
    teardown.teardown(local)
    azure.files.delete_share.assert_called_once_with("batchaiquickstart", fail_not_exist=False)
    assert (
        "Removed file share batchaiquickstart (the sample and every job's files on it)"
        in capsys.readouterr().out
    )
    for choice, setting in ((False, None), (None, False)):
        teardown.teardown(local.replace(delete_share=setting), delete_share=choice)
    assert azure.files.delete_share.call_count == 1
    teardown.teardown(azure_settings(delete_share=True))
    assert azure.files.delete_share.call_count == 2


def test_teardown_says_when_there_is_nothing_to_remove(azure, capsys):
    gone = cloud_error(404, "ResourceGroupNotFound")
    azure.batchai.jobs.list_by_experiment.side_effect = gone
    for delete in (
        azure.batchai.experiments.delete,
        azure.batchai.clusters.delete,
        azure.batchai.workspaces.delete,
        azure.resources.resource_groups.delete,
    ):
        delete.side_effect = gone
    azure.files.delete_share.return_value = False

    assert teardown.teardown(azure_settings(), delete_share=True) == 0

    assert capsys.readouterr().out.splitlines()[1:] == [
        "Nothing to remove: experiment myexperiment, cluster mycluster, workspace myworkspace, "
        "resource group myresourcegroup, file share batchaiquickstart did not exist"
    ]
    azure.files.delete_share.assert_called_once_with("batchaiquickstart", fail_not_exist=False)


def test_teardown_names_what_was_already_gone(azure, capsys):
    azure.batchai.jobs.list_by_experiment.return_value = iter([])
    azure.batchai.clusters.delete.side_effect = cloud_error(404, "ClusterNotFound")
    teardown.teardown(azure_settings())
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "Already gone: cluster mycluster"
    assert "Removed resource group myresourcegroup" in out


def test_teardown_stops_on_errors_other_than_not_found(azure):
    azure.batchai.clusters.delete.side_effect = cloud_error(409, "Conflict", "The cluster is busy")
    with pytest.raises(Exception, match="The cluster is busy"):
        teardown.teardown(azure_settings(job="myjob"))
    azure.batchai.workspaces.delete.assert_not_called()


def test_status_shows_the_cluster_the_latest_job_its_output_so_far_and_its_files(azure, capsys):
    azure.batchai.clusters.get.return_value = cluster("steady", running=1, current=1)
    early, late = datetime(2018, 5, 1, tzinfo=UTC), datetime(2018, 5, 2, tzinfo=UTC)
    azure.batchai.jobs.list_by_experiment.return_value = iter(
        [
            job("cntk_b", "succeeded", exit_code=0, created=early),
            job("cntk_a", "running", created=late),
        ]
    )
    script = JobScript(["running"], [])
    script.content = "".join(f"Finished Epoch[{n} of 40]\n" for n in range(1, 26)).encode()
    script_job(azure, script)

    assert status.status(azure_settings()) == 0

    out = capsys.readouterr().out
    assert "Cluster state: steady Target: 1; Allocated: 1; Idle: 0; Unusable: 0; Running: 1;" in out
    assert "Job cntk_a: Job state: running" in out
    assert "Output so far (last 20 of 25 lines of stderr.txt):\n  Finished Epoch[6 of 40]\n" in out
    assert (
        "  Finished Epoch[25 of 40]\nThe job is still running: `python -m quickstart status "
        "--follow`" in out
    )
    assert "file: stderr.txt, download url: " in out
    assert azure.batchai.jobs.list_output_files.call_args.args[3] == "cntk_a"
    azure.batchai.clusters.create.assert_not_called()
    azure.batchai.jobs.get.assert_not_called()


def test_status_of_a_finished_job_shows_its_result_and_test_error(azure, capsys):
    azure.batchai.clusters.get.return_value = cluster("steady", idle=1, current=1)
    azure.batchai.jobs.list_by_experiment.return_value = iter(
        [job("cntk_a", "succeeded", exit_code=0)]
    )
    script = JobScript(["succeeded"], [])
    script.content = (
        b"Finished Epoch[40 of 40]\n\nFinal Results: Minibatch[1-11]: errs = 0.58% * 10000\n\n"
    )
    script_job(azure, script)

    assert status.status(azure_settings()) == 0

    out = capsys.readouterr().out
    assert (
        "Job cntk_a succeeded with exit code 0\nFinal test error: 0.58% on 10,000 test images\n"
        in out
    )
    assert "Output so far" not in out


def test_status_follow_watches_a_running_job_to_its_end_and_downloads_it(azure, tmp_path, capsys):
    azure.batchai.clusters.get.return_value = cluster("steady", running=1, current=1)
    azure.batchai.jobs.list_by_experiment.return_value = iter([job("cntk_a", "running")])
    script_job(
        azure,
        JobScript(["running", "running", "failed"], [b"epoch 1\n", b"epoch 2\n", b""], exit_code=5),
    )

    settings = azure_settings(download_dir=str(tmp_path / "outputs"))
    assert status.status(settings, follow=True, sleep=lambda seconds: None) == 5

    out = capsys.readouterr().out
    assert "epoch 1\nepoch 2\n" in out
    assert "Job cntk_a failed with exit code 5" in out
    assert "Final test error: not reported (no 'Final Results' line in the job's stderr.txt)" in out
    assert out.index("Job cntk_a failed") < out.index("file: stderr.txt")
    job_folder = tmp_path / "outputs" / "cntk_a"  # downloaded, as `run` does
    assert sorted(p.name for p in job_folder.glob("*.dnn")) == [
        "ConvNet_MNIST_0.dnn",
        "ConvNet_MNIST_1.dnn",
    ]
    assert (job_folder / "stdouterr" / "stderr.txt").read_bytes() == b"epoch 1\nepoch 2\n"


def test_download_fetches_a_finished_jobs_files_into_outputs_job(azure, tmp_path, capsys):
    azure.batchai.jobs.get.side_effect = lambda *args, **kwargs: job("cntk_b", "succeeded", 0)
    azure.batchai.jobs.list_output_files.side_effect = JobScript.list_output_files
    script = JobScript(["succeeded"], [])
    script.content = b"Final Results: Minibatch[1-11]: errs = 0.61% * 10000\n"
    azure.http.get.side_effect = script.http_get

    settings = azure_settings(download_dir=str(tmp_path / "outputs"))
    assert status.download(settings, "cntk_b") == 0

    assert azure.batchai.jobs.get.call_args.args[3] == "cntk_b"
    assert (tmp_path / "outputs" / "cntk_b" / "ConvNet_MNIST_1.dnn").is_file()
    out = capsys.readouterr().out
    assert "Downloaded 2 model files to " + str(tmp_path / "outputs" / "cntk_b") in out
    assert out.endswith("Final test error: 0.61% on 10,000 test images\n")


def test_download_of_an_unfinished_or_unknown_job_says_what_to_do(azure, tmp_path):
    azure.batchai.jobs.get.return_value = job("cntk_c", "running")
    with pytest.raises(steps.StepFailed, match="is still running; `python -m quickstart status"):
        status.download(azure_settings(download_dir=str(tmp_path)), "cntk_c")
    azure.batchai.jobs.get.side_effect = cloud_error(404, "JobNotFound")
    with pytest.raises(steps.StepFailed, match="job nope does not exist in experiment"):
        status.download(azure_settings(download_dir=str(tmp_path)), "nope")
    assert list(tmp_path.iterdir()) == []


def test_status_when_nothing_exists(azure, capsys):
    azure.batchai.clusters.get.side_effect = cloud_error(404, "ClusterNotFound")
    azure.batchai.jobs.list_by_experiment.side_effect = cloud_error(404, "ResourceGroupNotFound")

    assert status.status(azure_settings()) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "Cluster mycluster: not found",
        "Job: none in experiment myexperiment",
    ]


def test_steps_module_keeps_no_state():
    """One function per step and no module-level state: only constants, imports and definitions."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(steps))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            assert all(
                isinstance(t, ast.Name) and t.id.isupper() or t.id == "Clients"
                for t in node.targets
            )
            assert (
                not isinstance(node.value, (ast.List, ast.Dict, ast.Set, ast.Call))
                or isinstance(node.value, ast.Call)
                and node.value.func.id == "namedtuple"
                or isinstance(node.value, ast.Dict)
                and all(isinstance(v, ast.Constant) for v in node.value.values)
            )
