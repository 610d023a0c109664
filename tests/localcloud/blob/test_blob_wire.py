"""Azure Blob as a client sees it on the wire: the status, error code and message of every
malformed request the service refuses (and that the refusal changes nothing), the headers and
XML of the answers, block list types, committed blocks reused in any order, and a commit on a
file system without ``copy_file_range``. Raw HTTPS (signed with the account key) where the SDK
cannot send the request or hides the answer; the real BlockBlobService elsewhere."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from datetime import datetime, timedelta
from xml.etree import ElementTree

import pytest
import requests
from azure.common import AzureHttpError
from azure.storage.blob import BlobPermissions, ContainerPermissions
from azure.storage.blob.models import BlobBlock, Include

from tests.conftest import make_blob_service
from tests.localcloud.fuzzing import FuzzTarget

TARGET = "data/target.bin"  # a committed blob of two blocks, and one pending block
SECOND = base64.b64encode(b"second").decode()
PENDING = base64.b64encode(b"pendin").decode()
FIRST = base64.b64encode(b"first!").decode()


def wire(block_id: str) -> str:
    """The id on the wire of a block the SDK names ``block_id`` (it base64-encodes it again)."""
    return base64.b64encode(block_id.encode()).decode()


@pytest.fixture(scope="module")
def raw(cloud):
    return FuzzTarget(cloud)


@pytest.fixture
def blobs(cloud):
    """The account's service, with a fresh container "data" holding TARGET."""
    service = make_blob_service(cloud.connection)
    service.delete_container("data")
    service.create_container("data")
    service.put_block("data", "target.bin", b"AAAA", FIRST)
    service.put_block("data", "target.bin", b"BB", SECOND)
    service.put_block_list("data", "target.bin", [BlobBlock(FIRST), BlobBlock(SECOND)])
    service.put_block("data", "target.bin", b"pending", PENDING)
    return service


def stored(service) -> tuple:
    """What a user could see of the container: its blobs, TARGET's bytes and its blocks."""
    blocks = service.get_block_list("data", "target.bin", block_list_type="all")
    return (
        [b.name for b in service.list_blobs("data")],
        service.get_blob_to_bytes("data", "target.bin").content,
        [(b.id, b.size) for b in blocks.committed_blocks],
        [(b.id, b.size) for b in blocks.uncommitted_blocks],
    )


def error(answer: requests.Response) -> tuple[int, str, str]:
    """(status, error code, message) of a storage error answer, checked to agree."""
    body = ElementTree.fromstring(answer.content)
    assert body.tag == "Error" and body.findtext("Code") == answer.headers["x-ms-error-code"]
    return answer.status_code, body.findtext("Code"), body.findtext("Message")


def assert_no_stray_text(root: ElementTree.Element) -> None:
    """An XML answer has text only inside its innermost elements, as Azure's has."""
    for element in root.iter():
        assert not (element.tail or "").strip(), element.tag
        assert len(element) == 0 or not (element.text or "").strip(), element.tag


def md5_of(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def block_list(*entries: str) -> bytes:
    return ('<?xml version="1.0" encoding="utf-8"?>' + "".join(entries)).encode()


MD5_MISMATCH = (
    "The MD5 value specified in the request did not match the MD5 value calculated by the server."
)
OFFSET_ID = base64.b64encode(b"%032d" % 0).decode()  # an id the SDK's form: staged in place
BLOCK = {"comp": "block"}
LIST = {"comp": "blocklist"}
CONTAINER = {"restype": "container"}

# (method, path, query, headers, body) -> (status, code, the start of the message)
REFUSED = {
    "put block without blockid": (
        ("PUT", TARGET, BLOCK, {}, b"x"),
        (400, "MissingRequiredQueryParameter", "Put Block needs the blockid parameter."),
    ),
    "blockid not base64": (
        ("PUT", TARGET, {**BLOCK, "blockid": "!!"}, {}, b"x"),
        (400, "InvalidQueryParameterValue", "blockid '!!' must be base64 of 1 to 64 bytes."),
    ),
    "blockid of 65 bytes": (
        ("PUT", TARGET, {**BLOCK, "blockid": base64.b64encode(b"i" * 65).decode()}, {}, b"x"),
        (400, "InvalidQueryParameterValue", "blockid '"),
    ),
    "blockid of another length than the blob's": (
        ("PUT", TARGET, {**BLOCK, "blockid": base64.b64encode(b"longer id").decode()}, {}, b"x"),
        (
            400,
            "InvalidBlobOrBlock",
            "The specified blob or block content is invalid: every block id of a blob must have "
            "the same length.",
        ),
    ),
    "staged block with a wrong Content-MD5": (
        (
            "PUT",
            "data/new.bin",
            {**BLOCK, "blockid": OFFSET_ID},
            {"Content-MD5": md5_of(b"y")},
            b"x",
        ),
        (400, "Md5Mismatch", MD5_MISMATCH),
    ),
    "plain block with a wrong Content-MD5": (
        ("PUT", TARGET, {**BLOCK, "blockid": wire(FIRST)}, {"Content-MD5": md5_of(b"y")}, b"x"),
        (400, "Md5Mismatch", MD5_MISMATCH),
    ),
    "block list that is not XML": (
        ("PUT", TARGET, LIST, {}, b"not xml"),
        (400, "InvalidXmlDocument", "The block list is not well-formed XML: "),
    ),
    "block list under another root": (
        ("PUT", TARGET, LIST, {}, block_list(f"<List><Latest>{FIRST}</Latest></List>")),
        (400, "InvalidXmlDocument", "The block list's root element must be <BlockList>."),
    ),
    "block list entry of an unknown kind": (
        ("PUT", TARGET, LIST, {}, block_list(f"<BlockList><Newest>{FIRST}</Newest></BlockList>")),
        (400, "InvalidXmlNodeValue", "<Newest> in the block list: use Latest, Committed or"),
    ),
    "block list of 50,001 blocks": (
        (
            "PUT",
            TARGET,
            LIST,
            {},
            block_list("<BlockList>", f"<Latest>{FIRST}</Latest>" * 50_001, "</BlockList>"),
        ),
        (400, "BlockListTooLong", "A blob may have at most 50000 blocks."),
    ),
    "a pending block listed as committed": (
        (
            "PUT",
            TARGET,
            LIST,
            {},
            block_list(f"<BlockList><Committed>{wire(PENDING)}</Committed></BlockList>"),
        ),
        (400, "InvalidBlockList", "The specified block list is invalid."),
    ),
    "a committed block listed as uncommitted": (
        (
            "PUT",
            TARGET,
            LIST,
            {},
            block_list(f"<BlockList><Uncommitted>{wire(SECOND)}</Uncommitted></BlockList>"),
        ),
        (400, "InvalidBlockList", "The specified block list is invalid."),
    ),
    "list blobs including an unknown dataset": (
        ("GET", "data", {**CONTAINER, "comp": "list", "include": "metadata,bogus"}, {}, None),
        (400, "InvalidQueryParameterValue", "include=bogus is not one of copy, deleted, metadata"),
    ),
    "list blobs with maxresults 0": (
        ("GET", "data", {**CONTAINER, "comp": "list", "maxresults": "0"}, {}, None),
        (400, "OutOfRangeQueryParameterValue", "maxresults '0' must be a whole number from 1"),
    ),
    "delete a missing container": (
        ("DELETE", "missing", CONTAINER, {}, None),
        (404, "ContainerNotFound", "The specified container does not exist."),
    ),
    "a public container": (
        ("PUT", "public", CONTAINER, {"x-ms-blob-public-access": "blob"}, None),
        (
            400,
            "InvalidHeaderValue",
            "x-ms-blob-public-access 'blob': the local cloud allows no anonymous access; leave "
            "public access off and hand out a SAS instead.",
        ),
    ),
    "an account request other than List Containers": (
        ("PUT", "", {"comp": "list"}, {}, None),
        (400, "UnsupportedQueryParameter", "The local cloud's Azure Blob supports only GET ?comp="),
    ),
    "the service's properties": (
        ("GET", "", {"restype": "service", "comp": "properties"}, {}, None),
        (400, "UnsupportedQueryParameter", "The local cloud's Azure Blob supports only GET ?comp="),
    ),
    "List Containers of a newer API version": (
        ("GET", "", {"comp": "list"}, {"x-ms-version": "2099-01-01"}, None),
        (400, "InvalidHeaderValue", "The API version 2099-01-01 is not supported by the local"),
    ),
    "an Azure Files request": (
        ("PUT", "share", {"restype": "share"}, {}, None),
        (
            400,
            "InvalidUri",
            "This is the local cloud's Azure Blob endpoint and the request is an Azure Files "
            "operation; send it to the Files endpoint ",
            "(FileEndpoint= in connection.json's storage_connection_string).",
        ),
    ),
    "Put Blob without x-ms-blob-type": (
        ("PUT", "data/new.bin", {}, {}, b"x"),
        (
            400,
            "MissingRequiredHeader",
            "x-ms-blob-type 'None': the local cloud's Blob service stores block blobs only "
            "(x-ms-blob-type: BlockBlob, as BlockBlobService sends).",
        ),
    ),
    "Put Blob of a page blob": (
        ("PUT", "data/new.bin", {}, {"x-ms-blob-type": "PageBlob"}, b"x"),
        (
            400,
            "InvalidHeaderValue",
            "x-ms-blob-type 'PageBlob': the local cloud's Blob service stores block blobs only "
            "(x-ms-blob-type: BlockBlob, as BlockBlobService sends).",
        ),
    ),
    "Put Blob with a wrong Content-MD5": (
        (
            "PUT",
            "data/new.bin",
            {},
            {"x-ms-blob-type": "BlockBlob", "Content-MD5": md5_of(b"y")},
            b"x",
        ),
        (400, "Md5Mismatch", MD5_MISMATCH),
    ),
    "Put Blob without a Content-Length": (
        ("PUT", "data/new.bin", {}, {"x-ms-blob-type": "BlockBlob"}, "chunked"),
        (411, "MissingContentLengthHeader", "Put Blob needs a Content-Length header."),
    ),
    "Put Block without a Content-Length": (
        ("PUT", TARGET, {**BLOCK, "blockid": wire(FIRST)}, {}, "chunked"),
        (411, "MissingContentLengthHeader", "Put Block needs a Content-Length header."),
    ),
    "a blob under another blob's name": (
        ("PUT", f"{TARGET}/x", {}, {"x-ms-blob-type": "BlockBlob"}, b"x"),
        (409, "InvalidResourceName", "The local cloud keeps a container as a folder"),
    ),
    "a container that exists": (
        ("PUT", "data", CONTAINER, {}, None),
        (409, "ContainerAlreadyExists", "The specified container already exists."),
    ),
    "the properties of a missing container": (
        ("GET", "missing", CONTAINER, {}, None),
        (404, "ContainerNotFound", "The specified container does not exist."),
    ),
    "a container name Azure refuses": (
        ("PUT", "Bad_Name", CONTAINER, {}, None),
        (400, "InvalidResourceName", "", "container"),
    ),
    "a blob read of a newer API version": (
        ("GET", TARGET, {}, {"x-ms-version": "2099-01-01"}, None),
        (400, "InvalidHeaderValue", "The API version 2099-01-01 is not supported by the local"),
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_malformed_request_gets_azures_status_code_and_message_and_changes_nothing(
    raw, blobs, case
):
    (method, path, query, headers, body), (status, code, message, *also) = REFUSED[case]
    before = stored(blobs)
    if body == "chunked":  # a body of unknown length (Transfer-Encoding: chunked)
        body = iter([b"x"])
    version = headers.get("x-ms-version", "2018-03-28")
    answer = raw.blob(method, path, query, headers, body, version=version)
    got_status, got_code, got_message = error(answer)
    assert (got_status, got_code) == (status, code)
    assert got_message.startswith(message), got_message
    if "x-ms-version" in headers:
        assert "serves Azure Blob up to" in got_message
    for text in also:
        assert text in got_message, got_message
    assert stored(blobs) == before
    assert not blobs.exists("public") and not blobs.exists("data", "new.bin")


@pytest.mark.parametrize(
    "raw_id", [b"i" * 64, b"blk-1", b"\xff\x00"], ids=["64 bytes", "text", "binary"]
)
def test_any_block_id_of_up_to_64_bytes_is_accepted(raw, blobs, raw_id):
    """Other clients than the Track-1 SDK name blocks as they like: any bytes up to 64."""
    block_id = base64.b64encode(raw_id).decode()
    answer = raw.blob("PUT", "data/named.bin", {**BLOCK, "blockid": block_id}, {}, b"x")
    assert answer.status_code == 201, answer.text
    listed = block_list(f"<BlockList><Latest>{block_id}</Latest></BlockList>")
    assert raw.blob("PUT", "data/named.bin", LIST, {}, listed).status_code == 201
    assert blobs.get_blob_to_bytes("data", "named.bin").content == b"x"


@pytest.mark.parametrize("block_id", [OFFSET_ID, wire(FIRST)], ids=["staged", "plain"])
def test_put_block_echoes_a_content_md5_it_checked(raw, blobs, block_id):
    body = b"checked bytes"
    query = {**BLOCK, "blockid": block_id}
    answer = raw.blob("PUT", "data/md5.bin", query, {"Content-MD5": md5_of(body)}, body)
    assert answer.status_code == 201
    assert answer.headers["Content-MD5"] == md5_of(body)
    assert answer.headers["x-ms-request-server-encrypted"] == "true"
    listed = block_list(f"<BlockList><Latest>{block_id}</Latest></BlockList>")
    assert raw.blob("PUT", "data/md5.bin", LIST, {}, listed).status_code == 201
    assert blobs.get_blob_to_bytes("data", "md5.bin").content == body


def test_answers_carry_azures_status_headers_and_content_type(raw, blobs):
    metadata = raw.blob("PUT", TARGET, {"comp": "metadata"}, {"x-ms-meta-k": "v"})
    properties = raw.blob("PUT", TARGET, {"comp": "properties"}, {"x-ms-blob-content-type": "a/b"})
    for answer in (metadata, properties):
        assert answer.status_code == 200
        assert answer.headers["ETag"].startswith('"0x') and answer.headers["Last-Modified"]
    read = raw.blob("GET", TARGET, {"comp": "metadata"})
    assert read.headers["x-ms-meta-k"] == "v" and read.headers["Last-Modified"]
    head = raw.blob("HEAD", TARGET, {})
    assert head.headers["Content-Length"] == "6" and head.headers["Content-Type"] == "a/b"

    listed = raw.blob("GET", TARGET, LIST, {})
    assert listed.headers["Content-Type"] == "application/xml"
    assert listed.headers["ETag"] == head.headers["ETag"]
    assert listed.headers["Last-Modified"] == head.headers["Last-Modified"]
    assert listed.headers["x-ms-blob-content-length"] == "6"
    blobs.put_block("data", "only-pending.bin", b"p", FIRST)
    pending = raw.blob("GET", "data/only-pending.bin", {**LIST, "blocklisttype": "all"})
    assert pending.status_code == 200 and "ETag" not in pending.headers

    committed = raw.blob(
        "PUT",
        TARGET,
        LIST,
        {},
        block_list(f"<BlockList><Latest>{wire(PENDING)}</Latest></BlockList>"),
    )
    assert committed.status_code == 201
    md5 = committed.headers.get("Content-MD5")
    assert md5 is None or len(base64.b64decode(md5)) == 16
    for query in ({"comp": "list"}, {**CONTAINER, "comp": "list"}):
        answer = raw.blob("GET", "data" if "restype" in query else "", query)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "application/xml"
    fresh = raw.blob("PUT", "fresh", CONTAINER)
    assert fresh.status_code == 201 and fresh.headers["ETag"].startswith('"0x')
    assert fresh.headers["Last-Modified"] == blobs.get_container_properties(
        "fresh"
    ).properties.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT")
    blobs.delete_container("fresh")
    assert raw.blob("DELETE", TARGET, {}).status_code == 202
    assert not blobs.exists("data", "target.bin")


def test_get_block_list_shows_the_kind_asked_for_and_committed_blocks_reuse_in_any_order(blobs):
    # TARGET is FIRST (AAAA) then SECOND (BB), with PENDING uncommitted
    default = blobs.get_block_list("data", "target.bin")
    assert [b.id for b in default.committed_blocks] == [FIRST, SECOND]
    assert default.uncommitted_blocks == []
    pending = blobs.get_block_list("data", "target.bin", block_list_type="uncommitted")
    assert pending.committed_blocks == [] and [b.id for b in pending.uncommitted_blocks] == [
        PENDING
    ]
    every = blobs.get_block_list("data", "target.bin", block_list_type="all")
    assert [b.size for b in every.committed_blocks] == [4, 2]
    assert [b.size for b in every.uncommitted_blocks] == [7]

    reordered = [BlobBlock(SECOND, "Committed"), BlobBlock(FIRST, "Committed")]
    blobs.put_block_list("data", "target.bin", reordered)
    assert blobs.get_blob_to_bytes("data", "target.bin").content == b"BBAAAA"
    blobs.put_block_list("data", "target.bin", [BlobBlock(FIRST, "Committed")] * 2)
    assert blobs.get_blob_to_bytes("data", "target.bin").content == b"AAAAAAAA"
    # a blob with only uncommitted blocks has a block list too, and no committed ones
    blobs.put_block("data", "fresh.bin", b"new", FIRST)
    fresh = blobs.get_block_list("data", "fresh.bin", block_list_type="all")
    assert fresh.committed_blocks == [] and [b.size for b in fresh.uncommitted_blocks] == [3]


def test_listings_carry_every_property_the_sdk_reads(raw, blobs):
    for name in ("0-first.txt", "A-upper.txt", "dir/b.txt"):
        blobs.create_blob_from_text("data", name, "twelve bytes", metadata={"m": name[0]})
    names = [b.name for b in blobs.list_blobs("data")]
    assert names == ["0-first.txt", "A-upper.txt", "dir/b.txt", "target.bin"]
    listed = {
        b.name: b for b in blobs.list_blobs("data", include=Include(metadata=True, copy=True))
    }
    entry = listed["A-upper.txt"]
    direct = blobs.get_blob_properties("data", "A-upper.txt")
    assert entry.metadata == {"m": "A"}
    assert entry.properties.content_length == 12
    assert entry.properties.etag == direct.properties.etag
    assert entry.properties.last_modified == direct.properties.last_modified
    assert entry.properties.creation_time == direct.properties.creation_time
    assert entry.properties.blob_type == "BlockBlob" and entry.properties.blob_tier == "Hot"
    assert entry.properties.lease.status == "unlocked"
    assert entry.properties.lease.state == "available"
    assert entry.properties.server_encrypted is True
    # the XML itself: nothing outside its elements
    for include in ({"include": "metadata"}, {}):
        answer = raw.blob("GET", "data", {**CONTAINER, "comp": "list", **include})
        root = ElementTree.fromstring(answer.content)
        assert root.get("ContainerName") == "data" and root.findtext("Marker") == ""
        assert_no_stray_text(root)

    container = blobs.get_container_properties("data").properties
    assert container.last_modified and container.etag
    assert (container.lease.status, container.lease.state) == ("unlocked", "available")
    assert container.has_immutability_policy is False and container.has_legal_hold is False
    blobs.create_container("zzz")
    (first,) = blobs.list_containers(prefix="data")
    assert (first.properties.lease_status, first.properties.lease_state) == (
        "unlocked",
        "available",
    )
    assert first.properties.last_modified == container.last_modified
    assert first.properties.has_legal_hold == "false"
    page = blobs.list_containers(num_results=1)
    assert [c.name for c in page] == ["data"] and page.next_marker == "zzz"
    assert [c.name for c in blobs.list_containers(marker=page.next_marker)] == ["zzz"]
    blobs.delete_container("zzz")


def test_an_unsupported_operation_on_a_container_or_blob_names_it(raw, blobs):
    for method, path, query, code, what in (
        (
            "POST",
            "data",
            CONTAINER,
            "UnsupportedQueryParameter",
            "restype=container, comp=None on this container",
        ),
        ("POST", TARGET, {}, "UnsupportedHttpVerb", "restype=None, comp=None on this blob"),
        (
            "PUT",
            TARGET,
            {"comp": "snapshot"},
            "UnsupportedQueryParameter",
            "restype=None, comp=snapshot on this blob",
        ),
    ):
        status, got, message = error(raw.blob(method, path, query))
        assert (status, got) == (400, code)
        assert message.startswith(
            f"The local cloud's Azure Blob does not support {method} with {what}."
        )


def failing_copy(limit: int | None):
    """An os.copy_file_range that copies at most ``limit`` bytes once and then fails, as on a
    file system without it (``None``: fails at once)."""
    calls = []

    def copy(source, out, count, *args):
        calls.append(count)
        if limit is None or len(calls) > 1:
            raise OSError(95, "Operation not supported")
        return real_copy(source, out, min(count, limit), *args)

    real_copy = os.copy_file_range
    return copy, calls


@pytest.mark.parametrize("limit", [None, 1000], ids=["no copy_file_range", "a short copy"])
def test_a_commit_that_copies_blocks_is_exact_without_copy_file_range(blobs, monkeypatch, limit):
    first, second = os.urandom(1536 * 1024), os.urandom(3000)
    blobs.put_block("data", "copied.bin", first, FIRST)
    blobs.put_block("data", "copied.bin", second, SECOND)
    copy, calls = failing_copy(limit)
    monkeypatch.setattr(os, "copy_file_range", copy)
    blobs.put_block_list("data", "copied.bin", [BlobBlock(SECOND), BlobBlock(FIRST)])
    monkeypatch.undo()
    assert calls  # the commit did copy
    assert blobs.get_blob_to_bytes("data", "copied.bin").content == second + first


def test_a_put_block_cut_off_mid_body_keeps_no_block(cloud, raw, blobs):
    """A client that promises a staged block and hangs up: the block is never listed, the
    server answers 400 (in its access log: the client is gone), and it serves on."""
    size, query = 1024 * 1024, {**BLOCK, "blockid": OFFSET_ID}
    raw.cut_off("PUT", f"{raw.blob_base}/data/cut.bin", query, {}, size, b"\xee" * (size // 4))
    access = cloud.state_dir / "access.log"
    deadline = time.monotonic() + 10
    cut = []
    while time.monotonic() < deadline and not cut:
        cut = [line for line in access.read_text().splitlines() if "cut.bin?comp=block" in line]
        time.sleep(0.05)
    assert len(cut) == 1 and " 400 " in cut[0]
    assert raw.tracebacks() == 0
    with pytest.raises(AzureHttpError) as caught:
        blobs.get_block_list("data", "cut.bin", block_list_type="all")
    assert caught.value.error_code == "BlobNotFound"


def test_a_blob_a_job_replaced_through_a_mount_loses_the_old_properties(cloud, blobs):
    """Properties belong to one version of the file: a file a job wrote over a blob (through a
    blob mount) is a new blob with default properties, created when the file was written."""
    blobs.create_blob_from_text("data", "model.dnn", "v1", metadata={"epoch": "1"})
    uploaded = blobs.get_blob_properties("data", "model.dnn")
    assert uploaded.metadata == {"epoch": "1"}
    assert (uploaded.properties.lease.status, uploaded.properties.lease.state) == (
        "unlocked",
        "available",
    )
    assert uploaded.properties.server_encrypted is True
    path = cloud.state_dir / "containers" / "data" / "model.dnn"
    path.write_bytes(b"version two")
    os.utime(path, (1_600_000_000, 1_600_000_000))  # 2020-09-13, long before this test
    replaced = blobs.get_blob_properties("data", "model.dnn")
    assert replaced.metadata == {} and replaced.properties.content_length == 11
    assert replaced.properties.content_settings.content_type == "application/octet-stream"
    assert replaced.properties.creation_time.year == 2020
    assert replaced.properties.creation_time == replaced.properties.last_modified


def test_the_last_page_of_a_listing_has_a_next_marker_only_when_more_follow(blobs):
    for name in ("a", "b"):
        blobs.create_blob_from_text("data", name, name)
    for size in (5000, 2):  # data holds a, b and target.bin
        first = blobs.list_blobs("data", num_results=size)
        assert [b.name for b in first][:2] == ["a", "b"]
        assert first.next_marker == ("target.bin" if size == 2 else "")
    assert [b.name for b in blobs.list_blobs("data", num_results=3)] == ["a", "b", "target.bin"]
    answer = blobs.list_blobs("data", num_results=3)
    assert not answer.next_marker


def test_a_put_block_sent_to_the_files_endpoint_is_told_to_use_the_blob_endpoint(cloud):
    base = cloud.connection["storage_connection_string"]
    blob_endpoint = base.split("BlobEndpoint=")[1].split(";")[0]
    file_endpoint = base.split("FileEndpoint=")[1].split(";")[0]
    misdirected = make_blob_service(cloud.connection, base.replace(blob_endpoint, file_endpoint))
    for call in (
        lambda: misdirected.put_block("data", "x.bin", b"x", FIRST),
        lambda: misdirected.get_block_list("data", "x.bin"),
    ):
        with pytest.raises(AzureHttpError) as caught:
            call()
        assert caught.value.error_code == "InvalidUri"
        assert "the request is an Azure Blob operation" in str(caught.value)


def test_blob_names_are_held_to_azures_limits_at_their_boundaries(blobs):
    longest = "/".join(["x" * 200] * 5) + "y" * 20  # 1,024 characters in five segments
    deepest = "/".join(["d"] * 254)
    for name in (longest, deepest, "é" * 127):  # 254 bytes in UTF-8
        blobs.create_blob_from_text("data", name, "kept")
        assert blobs.get_blob_to_text("data", name).content == "kept"
    for name, why in (
        (longest + "z", "must be 1 to 1024 characters long (it is 1025)"),
        (deepest + "/d", "has 255 '/'-separated segments; Azure allows 254"),
        ("é" * 128, "is longer than 255 bytes"),
        ("a//b", "has an empty, '.' or '..' segment"),
    ):
        with pytest.raises(AzureHttpError) as caught:
            blobs.create_blob_from_text("data", name, "refused")
        assert caught.value.status_code == 400
        assert caught.value.error_code == "InvalidResourceName"
        assert why in str(caught.value)


def sas_query(token: str) -> dict:
    return {k: requests.utils.unquote(v) for k, v in (p.split("=", 1) for p in token.split("&"))}


def test_a_sas_reads_and_writes_every_property_its_permissions_allow(raw, blobs):
    """Each read of properties or metadata (GET and HEAD) needs only read permission and each
    write of them only write, as the SAS of a recipe's reader or writer has."""
    expiry = datetime.utcnow() + timedelta(hours=1)
    reader = sas_query(
        blobs.generate_container_shared_access_signature(
            "data", ContainerPermissions(read=True), expiry
        )
    )
    for method, path, query in (
        ("GET", "data", CONTAINER),
        ("HEAD", "data", CONTAINER),
        ("GET", "data", {**CONTAINER, "comp": "metadata"}),
        ("HEAD", "data", {**CONTAINER, "comp": "metadata"}),
        ("HEAD", TARGET, {}),
        ("GET", TARGET, {"comp": "metadata"}),
        ("HEAD", TARGET, {"comp": "metadata"}),
        ("GET", TARGET, {**LIST, "blocklisttype": "all"}),
    ):
        answer = raw.blob(method, path, {**query, **reader}, signed=False)
        assert answer.status_code == 200, (method, path, query, answer.text)
        assert answer.headers["ETag"]
    refused = raw.blob("PUT", TARGET, {"comp": "properties", **reader}, signed=False)
    assert error(refused)[:2] == (403, "AuthorizationPermissionMismatch")
    writer = sas_query(
        blobs.generate_blob_shared_access_signature(
            "data", "target.bin", permission=BlobPermissions(write=True), expiry=expiry
        )
    )
    for comp, header in (("properties", "x-ms-blob-content-type"), ("metadata", "x-ms-meta-k")):
        answer = raw.blob("PUT", TARGET, {"comp": comp, **writer}, {header: "v"}, signed=False)
        assert answer.status_code == 200, answer.text
    stored_now = blobs.get_blob_properties("data", "target.bin")
    assert stored_now.properties.content_settings.content_type == "v"
    assert stored_now.metadata == {"k": "v"}


def test_a_block_list_of_exactly_the_body_limit_commits(raw, blobs):
    """Put Block List takes a body of up to 8 MiB (the limit is inclusive; one byte more is
    refused before it is read, as test_limits.py checks for the other uploads)."""
    from quickstart.localcloud.limits import BLOCK_LIST_BODY_MAX

    head, tail = block_list(f"<BlockList><Latest>{wire(PENDING)}</Latest>"), b"</BlockList>"
    body = head + b" " * (BLOCK_LIST_BODY_MAX - len(head) - len(tail)) + tail
    assert len(body) == BLOCK_LIST_BODY_MAX
    assert raw.blob("PUT", TARGET, LIST, {}, body).status_code == 201
    assert blobs.get_blob_to_bytes("data", "target.bin").content == b"pending"
