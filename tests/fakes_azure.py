"""Autospec'd stand-ins for the Azure SDK clients, shared by the tutorial's unit tests.

Every stand-in is `unittest.mock.create_autospec` of the real SDK class, so a call with a wrong
name or signature fails the test just as it would fail against Azure.
"""

import contextlib
import json
from unittest.mock import Mock, create_autospec, patch

import requests
from azure.mgmt.batchai import BatchAIManagementClient, models
from azure.mgmt.batchai.operations import (
    ClustersOperations,
    ExperimentsOperations,
    JobsOperations,
    WorkspacesOperations,
)
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.resource.resources.v2021_04_01.operations import ResourceGroupsOperations
from azure.storage.file import FileService
from msrestazure.azure_exceptions import CloudError

from quickstart.config import Settings

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
CLUSTER_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/myresourcegroup/providers/Microsoft.BatchAI/"
    "workspaces/myworkspace/clusters/mycluster"
)
# Recognisable secrets: tests assert they never reach any output.
CLIENT_SECRET = "CLIENT-SECRET-d41d8cd98f"
STORAGE_KEY = "U1RPUkFHRUtFWWQ0MWQ4Y2Q5OGY="
ADMIN_PASSWORD = "ADMIN-PASSWORD-8f00b204e9"


def azure_settings(**changes):
    settings = Settings(
        cloud="AzureCloud",
        tenant_id="mytenant",
        client_id="myclient",
        client_secret=CLIENT_SECRET,
        subscription_id=SUBSCRIPTION,
        storage_account="mystorage",
        storage_key=STORAGE_KEY,
        admin_user_name="demouser",
        admin_user_password=ADMIN_PASSWORD,
        poll_interval=0.01,
    )
    return settings.replace(**changes)


def cloud_error(status, code="NotFound", message="The resource is not found"):
    response = requests.Response()
    response.status_code = status
    response.reason = message
    response.headers["Content-Type"] = "application/json"
    response._content = json.dumps({"error": {"code": code, "message": message}}).encode()
    return CloudError(response)


def http_response(status, content=b"", headers=None):
    response = requests.Response()
    response.status_code = status
    response._content = content
    response._content_consumed = True
    response.headers.update(headers or {})
    response.url = "https://example/"
    return response


def cluster(allocation="steady", idle=0, preparing=0, running=0, current=0, errors=None, target=1):
    result = models.Cluster(
        vm_size="STANDARD_NC6",
        scale_settings=models.ScaleSettings(
            manual=models.ManualScaleSettings(target_node_count=target)
        ),
    )
    result.id = CLUSTER_ID
    result.name = "mycluster"
    result.allocation_state = allocation
    result.current_node_count = current
    result.errors = errors
    result.node_state_counts = models.NodeStateCounts()
    counts = result.node_state_counts
    counts.idle_node_count, counts.running_node_count, counts.preparing_node_count = (
        idle,
        running,
        preparing,
    )
    counts.unusable_node_count = counts.leaving_node_count = 0
    return result


def job(name, state, exit_code=None, errors=None, created=None):
    result = models.Job()
    result.name = name
    result.execution_state = state
    result.creation_time = created
    if state != "queued":
        result.execution_info = models.JobPropertiesExecutionInfo()
        result.execution_info.exit_code = exit_code
        result.execution_info.errors = errors
    return result


def output_file(name, url=None):
    result = models.File()
    result.name = name
    result.download_url = url
    result.file_type = "file" if url else "directory"
    return result


class FakeAzure:
    """The SDK clients the tutorial creates, each an autospec of the real class, recording call order."""

    def __init__(self):
        self.batchai = create_autospec(BatchAIManagementClient, instance=True)
        self.batchai.workspaces = create_autospec(WorkspacesOperations, instance=True)
        self.batchai.clusters = create_autospec(ClustersOperations, instance=True)
        self.batchai.experiments = create_autospec(ExperimentsOperations, instance=True)
        self.batchai.jobs = create_autospec(JobsOperations, instance=True)
        self.batchai.config = Mock()
        self.resources = create_autospec(ResourceManagementClient, instance=True)
        self.resources.resource_groups = create_autospec(ResourceGroupsOperations, instance=True)
        self.resources.config = Mock()
        self.files = create_autospec(FileService, instance=True)
        self.files.primary_endpoint = "mystorage.file.core.windows.net"
        self.http = create_autospec(requests.Session, instance=True)
        self.calls = Mock()
        for group, operations in (
            ("resource_groups", self.resources.resource_groups),
            ("workspaces", self.batchai.workspaces),
            ("clusters", self.batchai.clusters),
            ("experiments", self.batchai.experiments),
            ("jobs", self.batchai.jobs),
        ):
            real_class = operations._spec_class
            for name in dir(real_class):
                if not name.startswith("_") and callable(getattr(real_class, name)):
                    self.calls.attach_mock(getattr(operations, name), f"{group}.{name}")
        for name in (
            "create_share",
            "create_directory",
            "get_file_properties",
            "create_file_from_path",
            "set_file_properties",
            "delete_share",
        ):
            self.calls.attach_mock(getattr(self.files, name), "files." + name)

    def call_names(self):
        """The SDK calls made, in order, with consecutive repeats folded into one."""
        names = []
        for call in self.calls.mock_calls:
            name = call[0]
            if "." in name and name.count(".") > 1:  # a call on a returned poller: .result()
                continue
            if not names or names[-1] != name:
                names.append(name)
        return names


@contextlib.contextmanager
def patched_sdk():
    """Every SDK constructor the tutorial calls, patched to hand out one FakeAzure's clients."""
    fake = FakeAzure()
    with (
        patch("quickstart.steps.ServicePrincipalCredentials", autospec=True) as credentials,
        patch(
            "azure.mgmt.batchai.BatchAIManagementClient", return_value=fake.batchai
        ) as batchai_client,
        patch(
            "quickstart.steps.ResourceManagementClient", return_value=fake.resources
        ) as resource_client,
        patch("quickstart.steps.FileService", return_value=fake.files) as file_service,
        patch("quickstart.steps.reconnecting_session", return_value=fake.http),
    ):
        fake.credentials_class, fake.batchai_class = credentials, batchai_client
        fake.resource_class, fake.file_service_class = resource_client, file_service
        yield fake
