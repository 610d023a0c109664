"""Storage authentication on Azure Blob for every verb the SDK uses, through the real
BlockBlobService over HTTPS: the account key opens each operation and a wrong key is refused
and changes nothing. A container or blob SAS is checked as Azure checks it, for the version it
names: the 2016-05-31 links Batch AI hands out sign no resource type, SDKs from 2018-11-09 on
sign it; a SAS never creates, deletes or lists containers, and its IP range is the client's."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta
from urllib.parse import urlencode

import pytest
import requests
from azure.common import AzureHttpError
from azure.storage.blob import BlobPermissions, ContainerPermissions, ContentSettings
from azure.storage.blob.models import BlobBlock
from azure.storage.blob.sharedaccesssignature import BlobSharedAccessSignature

from tests.conftest import make_blob_service

WRONG_KEY = "V1JPTkctS0VZLXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="

# Each Blob operation azure-storage-blob 2.1.0 makes (the HTTP verb in the name), on a
# container "data" holding d/f.txt and an empty container "spare".
OPERATIONS = {
    "GET list containers": lambda s: list(s.list_containers()),
    "PUT container": lambda s: s.create_container("newcontainer", fail_on_exist=True),
    "GET container properties": lambda s: s.get_container_properties("data"),
    "HEAD container exists": lambda s: s.exists("data"),
    "GET container metadata": lambda s: s.get_container_metadata("data"),
    "DELETE container": lambda s: s.delete_container("spare", fail_not_exist=True),
    "GET list blobs": lambda s: list(s.list_blobs("data")),
    "PUT blob": lambda s: s.create_blob_from_bytes("data", "d/new.txt", b"new"),
    "PUT block": lambda s: s.put_block("data", "d/blocks.txt", b"block", "YmxvY2sx"),
    "PUT block list": lambda s: s.put_block_list("data", "d/f.txt", []),
    "GET block list": lambda s: s.get_block_list("data", "d/f.txt"),
    "GET blob": lambda s: s.get_blob_to_bytes("data", "d/f.txt"),
    "GET blob range": lambda s: s.get_blob_to_bytes("data", "d/f.txt", start_range=0, end_range=2),
    "HEAD blob properties": lambda s: s.get_blob_properties("data", "d/f.txt"),
    "HEAD blob exists": lambda s: s.exists("data", "d/f.txt"),
    "PUT blob properties": lambda s: s.set_blob_properties(
        "data", "d/f.txt", ContentSettings(content_type="text/x-changed")
    ),
    "GET blob metadata": lambda s: s.get_blob_metadata("data", "d/f.txt"),
    "PUT blob metadata": lambda s: s.set_blob_metadata("data", "d/f.txt", {"k": "v"}),
    "DELETE blob": lambda s: s.delete_blob("data", "d/f.txt"),
}


@pytest.fixture
def good(cloud):
    """The account's own service, with fresh containers data (holding d/f.txt) and spare."""
    service = make_blob_service(cloud.connection)
    for container in ("data", "spare", "newcontainer"):
        service.delete_container(container)
    service.create_container("data")
    service.create_container("spare")
    service.create_blob_from_bytes("data", "d/f.txt", b"hello world")
    return service


def snapshot(service):
    """What a user could see: containers, blob names, content, content type and metadata."""
    containers = sorted(c.name for c in service.list_containers())
    names = sorted(b.name for b in service.list_blobs("data")) if "data" in containers else None
    if not names or "d/f.txt" not in names:
        return containers, names
    blob = service.get_blob_properties("data", "d/f.txt")
    return (
        containers,
        names,
        service.get_block_list("data", "d/f.txt", block_list_type="all").uncommitted_blocks,
        service.get_blob_to_bytes("data", "d/f.txt").content,
        blob.properties.content_settings.content_type,
        blob.metadata,
    )


@pytest.mark.parametrize("operation", OPERATIONS, ids=list(OPERATIONS))
def test_the_account_key_opens_every_operation_and_a_wrong_key_none(cloud, good, operation):
    wrong = make_blob_service(
        cloud.connection,
        cloud.connection["storage_connection_string"].replace(
            cloud.connection["storage_key"], WRONG_KEY
        ),
    )
    before = snapshot(good)
    with pytest.raises(AzureHttpError) as refused:
        OPERATIONS[operation](wrong)
    assert refused.value.status_code == 403
    assert "AuthenticationFailed" in str(refused.value) or operation.startswith("HEAD")
    assert snapshot(good) == before
    OPERATIONS[operation](good)  # the same call with the account key goes through


def sign(key_b64: str, string: str) -> str:
    digest = hmac.new(base64.b64decode(key_b64), string.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def blob_url(cloud, path: str, params: dict) -> str:
    endpoint = cloud.connection["storage_connection_string"].split("BlobEndpoint=")[1]
    return f"{endpoint.split(';')[0].rstrip('/')}/{path}?{urlencode(params)}"


def get(cloud, url: str):
    return requests.get(url, verify=cloud.connection["ca_cert"])


def expiry() -> str:
    return (datetime.utcnow() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def old_sas(cloud, resource: str, sr: str, **extra) -> dict:
    """A SAS of version 2016-05-31, the form of Batch AI's links: no sr nor snapshot signed."""
    account, key = cloud.connection["storage_account"], cloud.connection["storage_key"]
    params = {"sv": "2016-05-31", "sr": sr, "se": expiry(), "sp": "r", **extra}
    fields = [params["sp"], "", params["se"], f"/blob/{account}/{resource}", ""]
    fields += [params.get("sip", ""), params.get("spr", ""), params["sv"], "", "", "", "", ""]
    return {**params, "sig": sign(key, "\n".join(fields))}


def test_an_old_version_sas_signs_no_resource_type_as_batch_ais_links(cloud, good):
    blob = old_sas(cloud, "data/d/f.txt", "b")
    assert get(cloud, blob_url(cloud, "data/d/f.txt", blob)).content == b"hello world"
    container = old_sas(cloud, "data", "c")
    assert get(cloud, blob_url(cloud, "data/d/f.txt", container)).content == b"hello world"
    other = get(cloud, blob_url(cloud, "spare/d/f.txt", container))
    assert other.status_code == 403 and other.headers["x-ms-error-code"] == "AuthenticationFailed"


@pytest.mark.parametrize(
    ("version", "works"), [("2018-03-28", False), ("2018-11-09", True), ("2019-02-02", True)]
)
def test_the_resource_type_is_signed_from_version_2018_11_09_on(cloud, good, version, works):
    """The SDK signs sr and snapshot whatever version it names; Azure reads them only from
    2018-11-09 on, so the same signature is refused for an older version."""
    account, key = cloud.connection["storage_account"], cloud.connection["storage_key"]
    maker = BlobSharedAccessSignature(account, key)
    maker.x_ms_version = version
    token = maker.generate_blob("data", "d/f.txt", permission=BlobPermissions.READ, expiry=expiry())
    answer = get(cloud, blob_url(cloud, "data/d/f.txt", {}) + token)
    assert (answer.status_code == 200) is works, answer.text
    if not works:
        assert "Signature did not match" in answer.text


@pytest.mark.parametrize("sr", ["f", "s", "bs", ""])
def test_a_sas_for_another_kind_of_resource_is_refused_naming_it(cloud, good, sr):
    answer = get(cloud, blob_url(cloud, "data/d/f.txt", old_sas(cloud, "data/d/f.txt", sr)))
    assert answer.status_code == 403
    assert answer.headers["x-ms-error-code"] == "AuthenticationFailed"
    assert f"sr='{sr}'" in answer.text


def test_a_sas_is_held_to_its_ip_range_against_the_clients_address(cloud, good):
    inside = old_sas(cloud, "data/d/f.txt", "b", sip="127.0.0.1")
    assert get(cloud, blob_url(cloud, "data/d/f.txt", inside)).content == b"hello world"
    outside = old_sas(cloud, "data/d/f.txt", "b", sip="10.0.0.1-10.0.0.9")
    answer = get(cloud, blob_url(cloud, "data/d/f.txt", outside))
    assert answer.status_code == 403
    assert answer.headers["x-ms-error-code"] == "AuthorizationSourceIPMismatch"


def test_a_sas_never_lists_creates_or_deletes_containers(cloud, good):
    account, key = cloud.connection["storage_account"], cloud.connection["storage_key"]
    maker = BlobSharedAccessSignature(account, key)
    everything = ContainerPermissions(read=True, write=True, delete=True, list=True)
    endpoint = cloud.connection["storage_connection_string"].split("BlobEndpoint=")[1]
    for name in ("data", "spare"):
        token = maker.generate_container(name, permission=everything, expiry=expiry())
        holder = make_blob_service(
            cloud.connection, f"BlobEndpoint={endpoint.split(';')[0]};SharedAccessSignature={token}"
        )
        for attempt in (
            lambda: holder.delete_container(name, fail_not_exist=True),
            lambda: holder.create_container(name, fail_on_exist=True),
            lambda: list(holder.list_containers()),
        ):
            with pytest.raises(AzureHttpError) as refused:
                attempt()
            assert refused.value.status_code == 403
            assert "<Code>AuthorizationResourceTypeMismatch</Code>" in str(refused.value)
            assert (
                "<Message>A service SAS cannot list, create or delete containers; use the "
                "account key (SharedKey)." in str(refused.value)
            )
        assert [b.name for b in holder.list_blobs(name)] == (["d/f.txt"] if name == "data" else [])
    assert sorted(c.name for c in good.list_containers()) == ["data", "spare"]


def test_a_blob_sas_signs_its_blob_and_a_container_sas_its_container(cloud, good):
    good.put_block("data", "d/g.txt", b"g", "YmxvY2sx")
    good.put_block_list("data", "d/g.txt", [BlobBlock(id="YmxvY2sx")])
    account, key = cloud.connection["storage_account"], cloud.connection["storage_key"]
    maker = BlobSharedAccessSignature(account, key)
    blob_token = maker.generate_blob(
        "data", "d/g.txt", permission=BlobPermissions.READ, expiry=expiry()
    )
    assert get(cloud, blob_url(cloud, "data/d/g.txt", {}) + blob_token).content == b"g"
    elsewhere = get(cloud, blob_url(cloud, "data/d/f.txt", {}) + blob_token)
    assert elsewhere.status_code == 403
    as_container = get(cloud, blob_url(cloud, "data", {"restype": "container"}) + "&" + blob_token)
    assert as_container.status_code == 403
    assert as_container.headers["x-ms-error-code"] == "AuthorizationResourceTypeMismatch"
    assert (
        "<Message>This request is not authorized to perform this operation using this resource "
        "type (a blob SAS, sr=b, cannot be used on a container)." in as_container.text
    )


def test_a_sas_signs_its_start_protocol_and_the_headers_it_overrides(cloud, good):
    """Each of them is in the string to sign: the SAS works as made, and the download is
    served with the headers it names (a browser then saves the file under that name)."""
    account, key = cloud.connection["storage_account"], cloud.connection["storage_key"]
    start = (datetime.utcnow() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    overrides = dict(
        cache_control="no-cache",
        content_disposition="attachment; filename=f.txt",
        content_encoding="identity",
        content_language="en",
        content_type="text/x-model",
    )
    token = BlobSharedAccessSignature(account, key).generate_blob(
        "data",
        "d/f.txt",
        permission=BlobPermissions.READ,
        expiry=expiry(),
        start=start,
        protocol="https",
        **overrides,
    )
    answer = get(cloud, blob_url(cloud, "data/d/f.txt", {}) + token)
    assert answer.status_code == 200, answer.text
    assert answer.content == b"hello world"
    assert answer.headers["Cache-Control"] == "no-cache"
    assert answer.headers["Content-Disposition"] == "attachment; filename=f.txt"
    assert answer.headers["Content-Language"] == "en"
    assert answer.headers["Content-Type"] == "text/x-model"


def test_a_sas_does_not_stretch_to_a_snapshot_it_did_not_sign(cloud, good):
    account, key = cloud.connection["storage_account"], cloud.connection["storage_key"]
    token = BlobSharedAccessSignature(account, key).generate_blob(
        "data", "d/f.txt", permission=BlobPermissions.READ, expiry=expiry()
    )
    url = blob_url(cloud, "data/d/f.txt", {}) + token
    answer = get(cloud, url + "&snapshot=2026-01-01T00%3A00%3A00.0000000Z")
    assert answer.status_code == 403
    assert "Signature did not match" in answer.text
