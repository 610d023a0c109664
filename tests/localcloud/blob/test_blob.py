"""Azure Blob on the local cloud, driven by the real azure-storage-blob 2.1.0 BlockBlobService
over HTTPS, as the Batch AI recipes use it."""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta

import pytest
import requests
from azure.common import AzureConflictHttpError, AzureHttpError, AzureMissingResourceHttpError
from azure.storage.blob import BlobPermissions, ContainerPermissions, ContentSettings
from azure.storage.blob.models import BlobBlock

from tests.conftest import make_blob_service, make_file_service

MiB = 1024 * 1024


@pytest.fixture
def blobs(local_cloud):
    return make_blob_service(local_cloud.connection)


def chunked(service, block_size: int = 256 * 1024):
    """Make the SDK upload anything over one block through Put Block / Put Block List, and read
    in ranges, with small blocks so the tests stay fast."""
    service.MAX_SINGLE_PUT_SIZE = block_size
    service.MAX_BLOCK_SIZE = block_size
    service.MAX_SINGLE_GET_SIZE = block_size
    service.MAX_CHUNK_GET_SIZE = block_size
    return service


def test_containers_create_both_ways_exist_list_and_delete(blobs):
    assert blobs.create_container("datasets", metadata={"owner": "recipe"}) is True
    assert blobs.create_container("datasets", fail_on_exist=False) is False
    with pytest.raises(AzureConflictHttpError, match="ContainerAlreadyExists"):
        blobs.create_container("datasets", fail_on_exist=True)
    blobs.create_container("models")
    blobs.create_container("logs")
    assert blobs.exists("datasets") and not blobs.exists("missing")
    listed = list(blobs.list_containers(include_metadata=True))
    assert [c.name for c in listed] == ["datasets", "logs", "models"]
    assert listed[0].metadata == {"owner": "recipe"}
    assert [c.name for c in blobs.list_containers(prefix="m")] == ["models"]
    page = blobs.list_containers(num_results=2)
    assert [c.name for c in page] == ["datasets", "logs"] and page.next_marker == "models"
    assert blobs.get_container_properties("datasets").metadata == {"owner": "recipe"}
    assert blobs.delete_container("models") is True
    assert blobs.delete_container("models") is False
    with pytest.raises(AzureMissingResourceHttpError, match="ContainerNotFound"):
        blobs.delete_container("models", fail_not_exist=True)


def test_block_blobs_single_shot_and_in_parallel_blocks_from_path_text_and_bytes(blobs, tmp_path):
    chunked(blobs)
    blobs.create_container("data")
    small = os.urandom(1000)
    large = os.urandom(3 * MiB + 12345)  # 13 blocks of 256 KiB, sent 4 at a time
    source = tmp_path / "large.bin"
    source.write_bytes(large)
    blobs.create_blob_from_bytes("data", "small.bin", small)
    blobs.create_blob_from_path("data", "mnist/large.bin", str(source), max_connections=4)
    blobs.create_blob_from_text("data", "mnist/readme.txt", "Train and Test, CNTK text format")
    blobs.create_blob_from_bytes("data", "large-bytes.bin", large, max_connections=4)

    assert blobs.get_blob_to_bytes("data", "small.bin").content == small
    assert blobs.get_blob_to_bytes("data", "mnist/large.bin", max_connections=3).content == large
    assert blobs.get_blob_to_bytes("data", "large-bytes.bin").content == large
    assert blobs.get_blob_to_text("data", "mnist/readme.txt").content.startswith("Train")
    target = tmp_path / "back.bin"
    blobs.get_blob_to_path("data", "mnist/large.bin", str(target), max_connections=4)
    assert target.read_bytes() == large
    ranged = blobs.get_blob_to_bytes("data", "mnist/large.bin", start_range=MiB, end_range=MiB + 9)
    assert ranged.content == large[MiB : MiB + 10]
    committed = blobs.get_block_list("data", "mnist/large.bin").committed_blocks
    assert len(committed) == 13 and sum(b.size for b in committed) == len(large)
    # a single-shot Put Blob keeps the MD5 Azure computes; a block list has none unless given
    assert blobs.get_blob_properties("data", "small.bin").properties.content_settings.content_md5


def test_properties_metadata_and_delete(blobs):
    blobs.create_container("data")
    blobs.create_blob_from_text(
        "data",
        "model.dnn",
        "weights",
        content_settings=ContentSettings(content_type="application/x-cntk", cache_control="x"),
        metadata={"epoch": "3"},
    )
    blob = blobs.get_blob_properties("data", "model.dnn")
    assert blob.properties.content_settings.content_type == "application/x-cntk"
    assert blob.properties.blob_type == "BlockBlob" and blob.properties.content_length == 7
    assert blob.metadata == {"epoch": "3"}
    # the access tier is Get Blob Properties' alone, as on Azure: Get Blob does not carry it
    assert blob.properties.blob_tier == "Hot" and blob.properties.blob_tier_inferred
    read = blobs.get_blob_to_bytes("data", "model.dnn")
    assert read.content == b"weights" and read.properties.blob_tier is None
    blobs.set_blob_metadata("data", "model.dnn", {"epoch": "4", "accuracy": "0.99"})
    assert blobs.get_blob_metadata("data", "model.dnn") == {"epoch": "4", "accuracy": "0.99"}
    blobs.set_blob_properties(
        "data", "model.dnn", content_settings=ContentSettings(content_type="text/plain")
    )
    settings = blobs.get_blob_properties("data", "model.dnn").properties.content_settings
    assert settings.content_type == "text/plain" and settings.cache_control is None
    listed = list(blobs.list_blobs("data", include="metadata"))
    assert listed[0].metadata == {"epoch": "4", "accuracy": "0.99"}
    assert listed[0].properties.content_settings.content_type == "text/plain"
    blobs.delete_blob("data", "model.dnn")
    assert not blobs.exists("data", "model.dnn")
    with pytest.raises(AzureMissingResourceHttpError, match="BlobNotFound"):
        blobs.delete_blob("data", "model.dnn")
    with pytest.raises(AzureMissingResourceHttpError, match="ContainerNotFound"):
        blobs.get_blob_to_bytes("nocontainer", "model.dnn")


def test_list_blobs_with_prefix_delimiter_and_paging(blobs):
    blobs.create_container("data")
    names = ["a.txt", "mnist/test.txt", "mnist/train.txt", "mnist/raw/t10k.gz", "z/deep/x"]
    for name in names:
        blobs.create_blob_from_text("data", name, name)
    assert [b.name for b in blobs.list_blobs("data")] == sorted(names)
    assert [b.name for b in blobs.list_blobs("data", prefix="mnist/")] == [
        "mnist/raw/t10k.gz",
        "mnist/test.txt",
        "mnist/train.txt",
    ]
    # (the SDK puts a page's BlobPrefix entries before its blobs)
    top = list(blobs.list_blobs("data", delimiter="/"))
    assert [b.name for b in top] == ["mnist/", "z/", "a.txt"]
    inner = [b.name for b in blobs.list_blobs("data", prefix="mnist/", delimiter="/")]
    assert inner == ["mnist/raw/", "mnist/test.txt", "mnist/train.txt"]
    assert [b.name for b in blobs.list_blobs("data", prefix="mnist/t")] == [
        "mnist/test.txt",
        "mnist/train.txt",
    ]
    page = blobs.list_blobs("data", num_results=2)
    assert [b.name for b in page] == sorted(names)[:2]
    rest = blobs.list_blobs("data", marker=page.next_marker)
    assert [b.name for b in rest] == sorted(names)[2:]
    # the SDK's generator follows NextMarker page by page
    everything = blobs.list_blobs("data", delimiter="/", num_results=None)
    assert len(list(everything)) == 3


def test_a_block_list_commits_all_or_nothing(blobs, local_cloud):
    blobs.create_container("data")
    blobs.create_blob_from_text("data", "model.dnn", "version 1")
    blobs.put_block("data", "model.dnn", b"version ", "YmxvY2sx")
    blobs.put_block("data", "model.dnn", b"2", "YmxvY2sy")

    # an unknown block id: nothing changes, the old blob is whole
    with pytest.raises(AzureHttpError, match="InvalidBlockList"):
        blobs.put_block_list("data", "model.dnn", [BlobBlock("YmxvY2sx"), BlobBlock("YmxvY2sz")])
    assert blobs.get_blob_to_text("data", "model.dnn").content == "version 1"
    # uncommitted blocks are neither listed nor in the container's folder (a mount never sees
    # them)
    assert [b.name for b in blobs.list_blobs("data")] == ["model.dnn"]
    assert os.listdir(local_cloud.state_dir / "containers" / "data") == ["model.dnn"]
    blobs.put_block_list("data", "model.dnn", [BlobBlock("YmxvY2sx"), BlobBlock("YmxvY2sy")])
    assert blobs.get_blob_to_text("data", "model.dnn").content == "version 2"
    # a committed block can be reused by the next list
    blobs.put_block("data", "model.dnn", b"3", "YmxvY2sz")
    blobs.put_block_list(
        "data",
        "model.dnn",
        [BlobBlock("YmxvY2sx", "Committed"), BlobBlock("YmxvY2sz", "Uncommitted")],
    )
    assert blobs.get_blob_to_text("data", "model.dnn").content == "version 3"
    blobs.put_block("data", "model.dnn", b"x", "bG9uZ2VyIGlk")
    with pytest.raises(AzureHttpError, match="InvalidBlobOrBlock"):  # ids of another length
        blobs.put_block("data", "model.dnn", b"y", "YQ==")


def test_shared_key_and_container_and_blob_sas_are_verified(blobs, local_cloud):
    connection = local_cloud.connection
    blobs.create_container("data")
    blobs.create_blob_from_text("data", "train.txt", "train")
    blobs.create_blob_from_text("data", "test.txt", "test")
    wrong = make_blob_service(
        connection,
        connection["storage_connection_string"].replace(
            connection["storage_key"], "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc="
        ),
    )
    with pytest.raises(AzureHttpError, match="AuthenticationFailed"):
        wrong.get_blob_to_text("data", "train.txt")
    endpoint = f"https://{blobs.primary_endpoint}"
    expiry = datetime.utcnow() + timedelta(hours=1)

    def with_sas(token: str):
        return make_blob_service(
            connection, f"BlobEndpoint={endpoint};SharedAccessSignature={token}"
        )

    container_sas = blobs.generate_container_shared_access_signature(
        "data", ContainerPermissions(read=True, list=True), expiry
    )
    reader = with_sas(container_sas)
    assert [b.name for b in reader.list_blobs("data")] == ["test.txt", "train.txt"]
    assert reader.get_blob_to_text("data", "test.txt").content == "test"
    with pytest.raises(AzureHttpError, match="AuthorizationPermissionMismatch"):
        reader.create_blob_from_text("data", "new.txt", "no write permission")
    with pytest.raises(AzureHttpError, match="AuthorizationResourceTypeMismatch"):
        reader.create_container("other")

    blob_sas = blobs.generate_blob_shared_access_signature(
        "data", "train.txt", permission=BlobPermissions(read=True, write=True), expiry=expiry
    )
    one = with_sas(blob_sas)
    assert one.get_blob_to_text("data", "train.txt").content == "train"
    one.create_blob_from_text("data", "train.txt", "retrained")
    assert blobs.get_blob_to_text("data", "train.txt").content == "retrained"
    with pytest.raises(AzureHttpError, match="AuthenticationFailed"):
        one.get_blob_to_text("data", "test.txt")  # signed for another blob
    with pytest.raises(AzureHttpError, match="AuthorizationResourceTypeMismatch"):
        list(one.list_blobs("data"))
    expired = blobs.generate_blob_shared_access_signature(
        "data",
        "train.txt",
        permission=BlobPermissions(read=True),
        expiry=datetime.utcnow() - timedelta(minutes=1),
    )
    with pytest.raises(AzureHttpError, match="Signature not valid in the specified time frame"):
        with_sas(expired).get_blob_to_text("data", "train.txt")
    url = blobs.make_blob_url("data", "train.txt", sas_token=blob_sas)
    assert requests.get(url, verify=connection["ca_cert"]).text == "retrained"
    assert requests.get(url.split("?")[0], verify=connection["ca_cert"]).status_code == 401


def test_names_are_checked_and_errors_are_the_blob_services_xml(blobs, local_cloud):
    with pytest.raises(AzureHttpError, match="InvalidResourceName"):
        blobs.create_container("Bad_Name")
    blobs.create_container("data")
    with pytest.raises(AzureHttpError, match="InvalidResourceName"):
        blobs.create_blob_from_text("data", "x" * 1025, "too long")
    with pytest.raises(AzureHttpError, match="InvalidResourceName"):
        blobs.create_blob_from_text("data", "folder/", "a name a folder cannot hold")
    blobs.create_blob_from_text("data", "a", "a blob")
    with pytest.raises(AzureHttpError, match="cannot also be the folder of other blobs"):
        blobs.create_blob_from_text("data", "a/b", "under a blob")
    answer = requests.get(
        blobs.make_blob_url("data", "missing"), verify=local_cloud.connection["ca_cert"]
    )
    assert answer.status_code == 401 and answer.headers["x-ms-error-code"] == (
        "NoAuthenticationInformation"
    )
    assert answer.text.startswith('<?xml version="1.0" encoding="utf-8"?><Error><Code>')
    with pytest.raises(AzureHttpError, match="BlobNotFound"):
        blobs.get_blob_to_bytes("data", "missing")


def test_a_request_for_one_storage_service_never_gets_the_others_error(local_cloud):
    connection = local_cloud.connection
    base = connection["storage_connection_string"]
    blob_endpoint = base.split("BlobEndpoint=")[1].split(";")[0]
    file_endpoint = base.split("FileEndpoint=")[1].split(";")[0]
    blobs_on_files = make_blob_service(
        connection, base.replace(f"BlobEndpoint={blob_endpoint}", f"BlobEndpoint={file_endpoint}")
    )
    with pytest.raises(AzureHttpError, match="Azure Files endpoint.*Blob endpoint") as caught:
        blobs_on_files.create_container("data")
    assert "UnsupportedQueryParameter" not in str(caught.value)
    with pytest.raises(AzureHttpError, match="Azure Files endpoint") as caught:
        blobs_on_files.create_blob_from_text("data", "x.txt", "x")
    assert "x-ms-type" not in str(caught.value)
    files_on_blob = make_file_service(
        connection, base.replace(f"FileEndpoint={file_endpoint}", f"FileEndpoint={blob_endpoint}")
    )
    with pytest.raises(AzureHttpError, match="Azure Blob endpoint.*Files endpoint"):
        files_on_blob.create_share("share")
    with pytest.raises(AzureHttpError, match="Azure Blob endpoint"):
        files_on_blob.create_file_from_text("share", None, "x.txt", "x")
    # and the right endpoints work side by side, each with its own names
    make_blob_service(connection).create_container("same")
    make_file_service(connection).create_share("same")
    assert make_blob_service(connection).exists("same")


def test_files_written_into_a_containers_folder_are_blobs(blobs, local_cloud, tmp_path):
    """What a job writes through a blob mount: plain files become blobs (default properties),
    empty folders and symbolic links do not."""
    blobs.create_container("data")
    folder = local_cloud.state_dir / "containers" / "data"
    (folder / "outputs" / "empty").mkdir(parents=True)
    (folder / "outputs" / "model.dnn").write_bytes(b"weights")
    (folder / "escape").symlink_to("/etc")
    (folder / "inside").symlink_to(folder / "outputs")
    assert [b.name for b in blobs.list_blobs("data")] == ["outputs/model.dnn"]
    props = blobs.get_blob_properties("data", "outputs/model.dnn").properties
    assert props.content_length == 7
    assert props.content_settings.content_type == "application/octet-stream"
    for through_a_link in ("escape/hostname", "inside/model.dnn", "inside"):
        with pytest.raises(AzureMissingResourceHttpError):
            blobs.get_blob_to_bytes("data", through_a_link)
    blobs.create_container("other")
    blobs.create_blob_from_text("other", "secret.txt", "another container's")
    for prefix in ("escape/", "../", "./", "a//"):
        assert list(blobs.list_blobs("data", prefix=prefix)) == []
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "out").symlink_to(outside)
    with pytest.raises(AzureConflictHttpError):
        blobs.create_blob_from_text("data", "out/new/x.txt", "never written through a link")
    assert list(outside.iterdir()) == []


def test_blocks_named_by_offset_commit_in_any_order_and_overlapping_ones_stay_apart(blobs):
    """The SDK names blocks by their offset (the local cloud lays them out there, so a list in
    that order commits without a copy); any other order, or ids whose offsets overlap, must
    still give exactly the listed bytes."""
    blobs.create_container("data")

    def offset_id(offset: int) -> str:
        return base64.b64encode(f"{offset:032d}".encode()).decode()

    first, second = b"A" * 1000, b"B" * 500
    blobs.put_block("data", "x.bin", first, offset_id(0))
    blobs.put_block("data", "x.bin", second, offset_id(1000))
    blobs.put_block_list("data", "x.bin", [BlobBlock(offset_id(1000)), BlobBlock(offset_id(0))])
    assert blobs.get_blob_to_bytes("data", "x.bin").content == second + first

    blobs.put_block("data", "y.bin", first, offset_id(0))
    blobs.put_block("data", "y.bin", second, offset_id(1000))
    blobs.put_block_list("data", "y.bin", [BlobBlock(offset_id(0)), BlobBlock(offset_id(1000))])
    assert blobs.get_blob_to_bytes("data", "y.bin").content == first + second
    listed = blobs.get_block_list("data", "y.bin", block_list_type="all")
    assert [b.size for b in listed.committed_blocks] == [1000, 500]
    assert listed.uncommitted_blocks == []

    blobs.put_block("data", "z.bin", first, offset_id(0))
    blobs.put_block("data", "z.bin", second, offset_id(500))  # overlaps the first
    blobs.put_block("data", "z.bin", b"C" * 10, offset_id(0))  # the first, uploaded again
    pending = blobs.get_block_list("data", "z.bin", block_list_type="uncommitted")
    assert sorted(b.size for b in pending.uncommitted_blocks) == [10, 500]
    blobs.put_block_list("data", "z.bin", [BlobBlock(offset_id(0)), BlobBlock(offset_id(500))])
    assert blobs.get_blob_to_bytes("data", "z.bin").content == b"C" * 10 + second


def test_containers_blobs_and_pending_blocks_survive_a_restart(tmp_path):
    from quickstart.localcloud import LocalCloud

    state = tmp_path / "state"
    with LocalCloud(state, port=0) as cloud:
        blobs = make_blob_service(cloud.connection)
        blobs.create_container("data", metadata={"kept": "yes"})
        blobs.create_blob_from_text("data", "a/b.txt", "kept", metadata={"m": "1"})
        blobs.put_block("data", "c.bin", b"pending", "YmxvY2sx")
    with LocalCloud(state, port=0) as cloud:
        blobs = make_blob_service(cloud.connection)
        assert blobs.get_container_metadata("data") == {"kept": "yes"}
        blob = blobs.get_blob_to_text("data", "a/b.txt")
        assert blob.content == "kept" and blob.metadata == {"m": "1"}
        blobs.put_block_list("data", "c.bin", [BlobBlock("YmxvY2sx")])
        assert blobs.get_blob_to_bytes("data", "c.bin").content == b"pending"


def test_an_error_about_a_name_with_control_characters_is_still_xml(blobs, local_cloud):
    from xml.etree import ElementTree

    from tests.localcloud.fuzzing import FuzzTarget

    blobs.create_container("data")
    target = FuzzTarget(local_cloud)
    sas = blobs.generate_blob_shared_access_signature(
        "data", "other", permission=BlobPermissions.READ, expiry=datetime.utcnow() + timedelta(1)
    )
    query = dict(pair.split("=", 1) for pair in sas.split("&"))
    answer = target.blob(
        "GET", "data/a\x11b", {k: requests.utils.unquote(v) for k, v in query.items()}, signed=False
    )
    assert answer.status_code == 403
    error = ElementTree.fromstring(answer.content)  # \x11 cannot be in XML 1.0: written escaped
    assert error.findtext("Code") == answer.headers["x-ms-error-code"]
