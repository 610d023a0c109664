"""Azure Files requests the SDK cannot send as-is: path escapes, bad ranges, interrupted bodies.

Requests here are signed with the SDK's own SharedKey signer and sent with http.client, which
(unlike requests/urllib3) sends the path exactly as given, without normalising ``..``.
"""

from __future__ import annotations

import email.utils
import http.client
import os
import socket
import ssl
from urllib.parse import urlencode

import pytest
from azure.storage.common._auth import _StorageSharedKeyAuthentication
from azure.storage.common._http import HTTPRequest

MiB = 1024 * 1024


class RawClient:
    """Signed raw HTTPS requests to the local cloud's Azure Files endpoint."""

    def __init__(self, cloud):
        self.conn = cloud.connection
        self.port = int(cloud.base_url.rsplit(":", 1)[1])
        self.context = ssl.create_default_context(cafile=self.conn["ca_cert"])
        self.prefix = "/" + self.conn["storage_account"]

    def request(self, method, path, query=None, headers=None, body=b"", sign=True):
        query = query or {}
        signed = HTTPRequest()
        signed.method = method
        signed.path = self.prefix + path
        signed.query = dict(query)
        signed.headers = {
            "x-ms-version": "2019-02-02",
            "x-ms-date": email.utils.formatdate(usegmt=True),
            **(headers or {}),
        }
        if body:
            signed.headers["Content-Length"] = str(len(body))
        if sign:
            _StorageSharedKeyAuthentication(
                self.conn["storage_account"], self.conn["storage_key"]
            ).sign_request(signed)
        target = signed.path + ("?" + urlencode(query) if query else "")
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context, timeout=30
        )
        try:
            connection.request(method, target, body=body or None, headers=signed.headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()


@pytest.fixture
def raw(local_cloud, file_service):
    file_service.create_share("escape")
    file_service.create_directory("escape", "inside")
    return RawClient(local_cloud)


def _everything_under(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, dirs, files in os.walk(root)
        for f in files + dirs
    )


ESCAPES = [
    "/escape/../outside.txt",
    "/escape/inside/../../outside.txt",
    "/escape/%2e%2e/outside.txt",
    "/escape/%2E%2E%2Foutside.txt",
    "/escape/inside/..%2F..%2Foutside.txt",
    "/escape/.%2e/outside.txt",
    "/escape//etc/outside.txt",
    "/escape/%2Fetc%2Foutside.txt",
    "/escape/..\\outside.txt",
    "/escape/inside/%2e%2e%5c%2e%2e%5coutside.txt",
    "/escape/inside/.",
    "/..%2F..%2Foutside.txt",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_paths_that_would_leave_the_share_are_400_and_write_nothing(local_cloud, raw, path):
    state = local_cloud.state_dir
    before = _everything_under(state.parent)
    for method, query, headers in [
        ("PUT", {}, {"x-ms-type": "file", "x-ms-content-length": "4"}),
        ("PUT", {"restype": "directory"}, {}),
    ]:
        status, reply_headers, _ = raw.request(method, path, query, headers)
        assert status == 400, (method, path, status)
        assert reply_headers["x-ms-error-code"] in ("InvalidResourceName", "InvalidUri")
    status, _, _ = raw.request("GET", path)
    assert status == 400
    after = _everything_under(state.parent)
    assert [p for p in after if p not in before] == [
        p for p in after if "localcloud.sqlite3" in p and p not in before
    ]
    assert not any("outside" in p for p in after)


def test_sdk_dot_dot_paths_are_refused(file_service, local_cloud):
    for directory, name in [("..", "outside.txt"), ("inside/../..", "outside.txt"), (None, "..")]:
        with pytest.raises(Exception):
            file_service.create_file_from_bytes("escape", directory, name, b"data")
    assert not any("outside" in p for p in _everything_under(local_cloud.state_dir.parent))


def test_symlink_planted_in_a_share_is_not_followed(local_cloud, raw, tmp_path):
    outside = tmp_path / "secret-dir"
    outside.mkdir()
    share_dir = local_cloud.context.share_dir("escape")
    os.symlink(outside, share_dir / "link")
    status, headers, _ = raw.request(
        "PUT", "/escape/link/planted.txt", {}, {"x-ms-type": "file", "x-ms-content-length": "4"}
    )
    assert status == 400
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["a:b.txt", "what?.txt", "pipe|name", "star*", 'quote".txt', "x" * 256]
)
def test_names_azure_forbids_are_400(raw, name):
    from urllib.parse import quote

    status, headers, _ = raw.request(
        "PUT", "/escape/" + quote(name), {}, {"x-ms-type": "file", "x-ms-content-length": "1"}
    )
    assert status == 400 and headers["x-ms-error-code"] == "InvalidResourceName"


@pytest.mark.parametrize("share", ["ab", "UPPER", "double--hyphen", "-leading", "under_score"])
def test_bad_share_names_are_400(raw, share):
    status, headers, _ = raw.request("PUT", "/" + share, {"restype": "share"})
    assert status == 400 and headers["x-ms-error-code"] == "InvalidResourceName"


def _create(raw, path, size):
    status, _, _ = raw.request(
        "PUT", path, {}, {"x-ms-type": "file", "x-ms-content-length": str(size)}
    )
    assert status == 201


def test_put_range_beyond_the_file_is_416(raw):
    _create(raw, "/escape/small.bin", 10)
    status, headers, _ = raw.request(
        "PUT",
        "/escape/small.bin",
        {"comp": "range"},
        {"x-ms-write": "update", "x-ms-range": "bytes=8-11"},
        body=b"abcd",
    )
    assert status == 416 and headers["x-ms-error-code"] == "InvalidRange"


def test_put_range_over_4_mib_is_413(raw):
    _create(raw, "/escape/big.bin", 5 * MiB)
    status, headers, _ = raw.request(
        "PUT",
        "/escape/big.bin",
        {"comp": "range"},
        {"x-ms-write": "update", "x-ms-range": f"bytes=0-{5 * MiB - 1}"},
        body=b"z" * (5 * MiB),
    )
    assert status == 413 and headers["x-ms-error-code"] == "RequestBodyTooLarge"


def test_put_range_length_must_match_the_body(raw):
    _create(raw, "/escape/f.bin", 100)
    status, headers, _ = raw.request(
        "PUT",
        "/escape/f.bin",
        {"comp": "range"},
        {"x-ms-write": "update", "x-ms-range": "bytes=0-9"},
        body=b"abc",
    )
    assert status == 400 and headers["x-ms-error-code"] == "InvalidHeaderValue"


def test_put_range_with_content_md5_is_verified_before_writing(raw, file_service):
    _create(raw, "/escape/md5.bin", 4)
    status, headers, _ = raw.request(
        "PUT",
        "/escape/md5.bin",
        {"comp": "range"},
        {
            "x-ms-write": "update",
            "x-ms-range": "bytes=0-3",
            "Content-MD5": "AAAAAAAAAAAAAAAAAAAAAA==",
        },
        body=b"abcd",
    )
    assert status == 400 and headers["x-ms-error-code"] == "Md5Mismatch"
    assert file_service.get_file_to_bytes("escape", None, "md5.bin").content == b"\0\0\0\0"


def test_clear_range_zeroes_bytes(raw, file_service):
    file_service.create_file_from_bytes("escape", None, "clear.bin", b"abcdefgh")
    status, _, _ = raw.request(
        "PUT",
        "/escape/clear.bin",
        {"comp": "range"},
        {"x-ms-write": "clear", "x-ms-range": "bytes=2-5"},
    )
    assert status == 201
    assert file_service.get_file_to_bytes("escape", None, "clear.bin").content == b"ab\0\0\0\0gh"


def test_empty_file_ranged_get_is_416_with_content_range(raw):
    _create(raw, "/escape/empty.bin", 0)
    status, headers, body = raw.request(
        "GET", "/escape/empty.bin", headers={"x-ms-range": "bytes=0-33554431"}
    )
    assert status == 416
    assert headers["Content-Range"] == "bytes */0"
    assert headers["x-ms-error-code"] == "InvalidRange"
    status, headers, body = raw.request("GET", "/escape/empty.bin")
    assert (status, body, headers["Content-Length"]) == (200, b"", "0")


def test_newer_api_version_is_refused_with_the_reason(raw):
    status, headers, body = raw.request(
        "GET", "/escape", {"restype": "share"}, {"x-ms-version": "2025-11-05"}
    )
    assert status == 400 and headers["x-ms-error-code"] == "InvalidHeaderValue"
    assert b"2019-02-02" in body


def test_stale_request_date_is_refused(raw):
    status, headers, _ = raw.request(
        "GET", "/escape", {"restype": "share"}, {"x-ms-date": "Sun, 01 Jan 2017 00:00:00 GMT"}
    )
    assert status == 403 and headers["x-ms-error-code"] == "AuthenticationFailed"


def test_interrupted_range_upload_leaves_server_healthy_and_bytes_unwritten(
    local_cloud, raw, file_service
):
    _create(raw, "/escape/cut.bin", 4 * MiB)
    signed = HTTPRequest()
    signed.method, signed.path = "PUT", raw.prefix + "/escape/cut.bin"
    signed.query = {"comp": "range"}
    signed.headers = {
        "x-ms-version": "2019-02-02",
        "x-ms-date": email.utils.formatdate(usegmt=True),
        "x-ms-write": "update",
        "x-ms-range": f"bytes=0-{4 * MiB - 1}",
        "Content-Length": str(4 * MiB),
    }
    _StorageSharedKeyAuthentication(
        raw.conn["storage_account"], raw.conn["storage_key"]
    ).sign_request(signed)
    sock = raw.context.wrap_socket(
        socket.create_connection(("127.0.0.1", raw.port)), server_hostname="127.0.0.1"
    )
    head = (
        f"PUT {signed.path}?comp=range HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in signed.headers.items())
        + "\r\n"
    )
    sock.sendall(head.encode() + b"\x01" * MiB)  # a quarter of the promised body, then gone
    sock.close()
    properties = file_service.get_file_properties("escape", None, "cut.bin")
    assert properties.properties.content_length == 4 * MiB
    assert file_service.exists("escape")  # the server still answers
