"""Shared fixtures: a real local cloud per test and the real Track-1 SDK clients pointed at it.

``local_cloud`` starts a LocalCloud on a free 127.0.0.1 port in a temporary state directory and
stops it after the test. ``make_resource_client`` / ``make_file_service`` /
``make_credentials`` build the SDK clients exactly as a user script would from connection.json:
ServicePrincipalCredentials through an msrestazure Cloud, FileService through the connection
string, both trusting ``ca_cert``.
"""

from __future__ import annotations

import signal

import pytest

from quickstart.localcloud import LocalCloud, azure_cloud
from quickstart.localcloud.connection import requests_session

# A shell starts a background job (`pytest &`, a CI step sent to the background) with Ctrl-C
# ignored, and the commands the tests start would inherit that and never see the Ctrl-C they
# are sent: restore the default, which exec'd children get as SIG_DFL.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items):
    """Tests marked slow (full training runs, soaks) are exempt from pytest.ini's time limit."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(0))


def make_credentials(connection: dict, secret: str | None = None):
    """ServicePrincipalCredentials for the local cloud (fetches a token at once, as on Azure)."""
    from msrestazure.azure_active_directory import ServicePrincipalCredentials

    return ServicePrincipalCredentials(
        connection["client_id"],
        secret if secret is not None else connection["client_secret"],
        tenant=connection["tenant"],
        cloud_environment=azure_cloud(connection),
        verify=connection["ca_cert"],
    )


def make_resource_client(connection: dict, credentials=None):
    """azure-mgmt-resource's ResourceManagementClient against the local cloud."""
    from azure.mgmt.resource import ResourceManagementClient

    client = ResourceManagementClient(
        credentials or make_credentials(connection),
        connection["subscription_id"],
        base_url=connection["resource_manager_url"],
    )
    client.config.connection.verify = connection["ca_cert"]
    return client


def make_batchai_client(connection: dict, credentials=None):
    """azure-mgmt-batchai's BatchAIManagementClient against the local cloud."""
    from azure.mgmt.batchai import BatchAIManagementClient

    client = BatchAIManagementClient(
        credentials or make_credentials(connection),
        connection["subscription_id"],
        base_url=connection["resource_manager_url"],
    )
    client.config.connection.verify = connection["ca_cert"]
    return client


def make_file_service(connection: dict, connection_string: str | None = None, session=None):
    """azure-storage-file's FileService via the connection string, trusting the local CA (through
    ``requests_session`` unless another ``session`` is given)."""
    from azure.storage.file import FileService

    return FileService(
        connection_string=connection_string or connection["storage_connection_string"],
        request_session=session or requests_session(connection),
    )


def make_blob_service(connection: dict, connection_string: str | None = None, **kwargs):
    """azure-storage-blob's BlockBlobService via the connection string (BlobEndpoint=), trusting
    the local CA, as a Batch AI recipe builds it. It does not retry: the local cloud never
    answers 5xx, so the SDK's retries (15, 18 and 24 s apart) could only hide a server error
    behind a later success, and make a test that meets one wait a minute before it fails."""
    from azure.storage.blob import BlockBlobService
    from azure.storage.common.retry import no_retry

    service = BlockBlobService(
        connection_string=connection_string or connection["storage_connection_string"],
        request_session=requests_session(connection),
        **kwargs,
    )
    service.retry = no_retry
    return service


@pytest.fixture
def local_cloud(tmp_path):
    """A running local cloud in a fresh state directory; stopped after the test."""
    cloud = LocalCloud(tmp_path / "localcloud", port=0, cluster_allocation_delay=0.1)
    cloud.start()
    try:
        yield cloud
    finally:
        cloud.stop()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """One running local cloud for a whole test module whose tests set up (and reset) what they
    use: one start instead of one per test; stopped after the module."""
    with LocalCloud(tmp_path_factory.mktemp("cloud") / "localcloud", port=0) as cloud:
        yield cloud


@pytest.fixture
def resource_client(local_cloud):
    return make_resource_client(local_cloud.connection)


@pytest.fixture
def file_service(local_cloud):
    return make_file_service(local_cloud.connection)


def clear_azure_environment(monkeypatch):
    """Unset every environment variable the settings read, so a test sees only its own config."""
    from quickstart.config import SCHEMA

    for setting in SCHEMA:
        for name in setting.env:
            monkeypatch.delenv(name, raising=False)
