"""Bounded input (issue 13, point 1): every limit is checked before the body is read, answered
with the service's status and error body, and nothing is stored; logs stay short and bounded."""

from __future__ import annotations

import json
import socket
import ssl
import time
from urllib.parse import urlsplit

import pytest
from azure.common import AzureHttpError

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.connection import requests_session

from ..conftest import make_blob_service, make_file_service
from .fuzzing import FuzzTarget


def _raw(cloud, head: bytes, body: bytes = b"", read_timeout: float = 10) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers) and ``body`` over TLS; (status, response)."""
    url = urlsplit(cloud.base_url)
    context = ssl.create_default_context(cafile=cloud.connection["ca_cert"])
    with socket.create_connection((url.hostname, url.port), timeout=read_timeout) as plain:
        with context.wrap_socket(plain, server_hostname=url.hostname) as tls:
            tls.sendall(head + body)
            data = b""
            try:
                while chunk := tls.recv(65536):
                    data += chunk
                    if b"\r\n\r\n" in data:
                        header, _, rest = data.partition(b"\r\n\r\n")
                        length = [
                            int(line.split(b":")[1])
                            for line in header.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ]
                        if length and len(rest) >= length[0]:
                            break
            except (ConnectionResetError, ssl.SSLError):
                pass
    return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


@pytest.fixture
def target(local_cloud):
    return FuzzTarget(local_cloud).prepare()


def test_a_huge_token_form_is_refused_before_its_body_is_read(local_cloud):
    tenant = local_cloud.connection["tenant"]
    head = (
        f"POST /{tenant}/oauth2/token HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {300 * 1024 * 1024}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    status, body = _raw(local_cloud, head, b"grant_type=client_credentials&")
    assert time.monotonic() - started < 5  # answered without waiting for 300 MB
    assert status == 413
    error = json.loads(body)
    assert error["error"] == "invalid_request" and "AADSTS90023" in error["error_description"]


def test_a_client_hanging_up_mid_body_gets_no_500_and_leaves_no_traceback(local_cloud, target):
    tenant = local_cloud.connection["tenant"]
    head = (
        f"POST /{tenant}/oauth2/token HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 2000\r\n\r\n"
    ).encode()
    url = urlsplit(local_cloud.base_url)
    context = ssl.create_default_context(cafile=local_cloud.connection["ca_cert"])
    for _ in range(3):
        with socket.create_connection((url.hostname, url.port), timeout=5) as plain:
            with context.wrap_socket(plain, server_hostname=url.hostname) as tls:
                tls.sendall(head + b"grant_type=client")
                tls.shutdown(socket.SHUT_WR)
                with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
                    while tls.recv(65536):
                        pass
                    raise ConnectionResetError  # the server closed without an answer: fine too
    time.sleep(0.2)
    assert target.tracebacks() == 0
    assert "client hung up mid-body" in (local_cloud.state_dir / "localcloud.log").read_text()
    assert requests_session(local_cloud.connection).get(
        local_cloud.base_url + "/_localcloud/health"
    )


def test_arm_bodies_past_4_mib_are_refused_and_nothing_is_stored(local_cloud, target):
    path = f"/subscriptions/{target.sub}/resourcegroups/toobig"
    body = json.dumps({"location": "eastus", "tags": {"t": "x" * (5 * 1024 * 1024)}})
    answer = target.arm("PUT", path, raw=body, version="2021-04-01")
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "RequestBodyTooLarge"
    assert target.arm("GET", path, version="2021-04-01").status_code == 404


@pytest.mark.parametrize(
    ("tags", "code"),
    [
        ({f"t{i}": "v" for i in range(51)}, "InvalidTagCount"),
        ({"n" * 513: "v"}, "InvalidTagNameLength"),
        ({"name": "é" * 257}, "InvalidTagValueLength"),
    ],
)
def test_tags_past_arms_limits_are_refused(target, tags, code):
    path = f"/subscriptions/{target.sub}/resourcegroups/tagged"
    answer = target.arm("PUT", path, {"location": "eastus", "tags": tags}, "2021-04-01")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code
    fits = {"name": "é" * 256, **{f"t{i}": "v" for i in range(49)}}  # limits count characters
    assert target.arm("PUT", path, {"location": "eastus", "tags": fits}, "2021-04-01").ok


def test_a_put_range_past_4_mib_is_refused_before_its_body(local_cloud, target):
    headers = {"x-ms-type": "file", "x-ms-content-length": str(8 * 1024 * 1024)}
    assert target.files("PUT", "fuzzshare/big.bin", {}, headers).status_code == 201
    answer = target.files(
        "PUT",
        "fuzzshare/big.bin",
        {"comp": "range"},
        {"x-ms-write": "update", "x-ms-range": f"bytes=0-{4 * 1024 * 1024}"},
        body=b"x" * (4 * 1024 * 1024 + 1),
    )
    assert answer.status_code == 413
    assert answer.headers["x-ms-error-code"] == "RequestBodyTooLarge"
    assert b"<Code>RequestBodyTooLarge</Code>" in answer.content
    service = make_file_service(local_cloud.connection)
    assert service.get_file_to_bytes("fuzzshare", None, "big.bin").content[:16] == bytes(16)


@pytest.mark.parametrize(
    "query, limit",
    [("", 256 * 1024 * 1024), ("?comp=block&blockid=YWE%3D", 100 * 1024 * 1024)],
    ids=["put-blob", "put-block"],
)
def test_blob_uploads_past_azures_limits_are_refused_before_their_body(local_cloud, query, limit):
    blobs = make_blob_service(local_cloud.connection)
    blobs.create_container("limits")
    account = local_cloud.connection["storage_account"]
    head = (
        f"PUT /blob/{account}/limits/big.bin{query} HTTP/1.1\r\nHost: x\r\n"
        f"x-ms-blob-type: BlockBlob\r\nContent-Length: {limit + 1}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    status, body = _raw(local_cloud, head, b"x" * 1024)
    assert time.monotonic() - started < 5  # answered without waiting for the body
    assert status == 413 and b"<Code>RequestBodyTooLarge</Code>" in body
    assert f"at most {limit}".encode() in body
    assert not blobs.exists("limits", "big.bin")
    staged = [p for p in (local_cloud.state_dir / "blocks").rglob("*") if p.is_file()]
    assert staged == []  # no block was staged either


def test_metadata_past_8_kib_is_refused_and_the_file_is_not_created(local_cloud):
    service = make_file_service(local_cloud.connection)
    service.create_share("meta")
    with pytest.raises(AzureHttpError) as caught:
        service.create_file_from_bytes("meta", None, "m.txt", b"x", metadata={"big": "m" * 8200})
    assert caught.value.status_code == 400 and "MetadataTooLarge" in str(caught.value)
    assert not service.exists("meta", None, "m.txt")
    many = {f"k{i}": "v" * 90 for i in range(60)}  # 60 entries, under 8 KiB: still readable
    service.create_file_from_bytes("meta", None, "ok.txt", b"x", metadata=many)
    assert service.get_file_properties("meta", None, "ok.txt").metadata == many


def test_too_many_or_too_large_headers_get_the_services_error(local_cloud, target):
    many = "".join(f"x-fuzz-{i}: v\r\n" for i in range(120))
    status, body = _raw(
        local_cloud, f"GET /subscriptions HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode()
    )
    assert status == 431 and json.loads(body)["error"]["code"] == "RequestHeaderFieldsTooLarge"
    status, body = _raw(
        local_cloud, f"GET /{target.account}/fuzzshare HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode()
    )
    assert status == 400 and b"<Code>InvalidHeaderValue</Code>" in body
    big = {f"x-big-{i}": "v" * 4000 for i in range(10)}
    answer = target.arm("GET", f"/subscriptions/{target.sub}", headers=big, version="2021-04-01")
    assert answer.status_code == 431 and answer.json()["error"]["code"]


@pytest.mark.parametrize(
    ("name", "status"),
    [("é" * 128, 201), ("\U0001f600" * 255, 201), ("a" * 256, 400), ("\U0001f600" * 256, 400)],
)
def test_file_names_are_limited_in_characters_with_a_clear_error(target, name, status):
    answer = target.files(
        "PUT", f"fuzzshare/{name}", {}, {"x-ms-type": "file", "x-ms-content-length": "1"}
    )
    assert answer.status_code == status
    if status == 400:
        assert answer.headers["x-ms-error-code"] == "InvalidResourceName"


def test_a_failed_sharedkey_check_logs_one_short_line(local_cloud, target):
    log = local_cloud.state_dir / "localcloud.log"
    before = log.read_text().splitlines() if log.exists() else []
    noise = {f"x-ms-meta-n{i}": "n" * 2000 for i in range(10)}
    answer = target.files("GET", "fuzzshare/dir/file.txt", {}, noise, signed=False)
    assert answer.status_code in (401, 403)
    request = answer.request
    request.headers["Authorization"] = f"SharedKey {target.account}:AAAA"
    assert target.session.send(request).status_code == 403
    added = log.read_text().splitlines()[len(before) :]
    assert len([line for line in added if "SharedKey" in line]) == 1
    assert all(len(line) < 400 for line in added)


def test_logs_rotate_and_secrets_in_query_strings_are_redacted(tmp_path):
    with LocalCloud(tmp_path / "state", log_max_bytes=20_000) as cloud:
        session = requests_session(cloud.connection)
        for _ in range(400):
            session.get(f"{cloud.base_url}/adfs/oauth2/token?client_secret=hunter2&sig=abc%2B")
        session.get(f"{cloud.base_url}/adfs/oauth2/token?client%5Fsecret=hunter3&x=%25")
    logs = sorted(p.name for p in (tmp_path / "state").iterdir() if ".log" in p.name)
    assert "access.log.1" in logs
    text = "".join((tmp_path / "state" / name).read_text() for name in logs)
    assert "client_secret=REDACTED" in text and "hunter2" not in text and "abc%2B" not in text
    assert "hunter3" not in text  # a percent-encoded name is a secret's name too
    assert all((tmp_path / "state" / name).stat().st_size <= 20_000 for name in logs)


def test_the_state_directory_is_private_to_its_owner(local_cloud):
    assert local_cloud.state_dir.stat().st_mode & 0o077 == 0


def test_deeply_nested_json_is_a_400(target):
    path = f"/subscriptions/{target.sub}/resourcegroups/{target.rg}"
    answer = target.arm("PATCH", path, raw="[" * 100_000 + "]" * 100_000, version="2021-04-01")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "InvalidRequestContent"


def test_a_chunked_body_past_the_limit_is_cut_off_with_the_services_error(target):
    def pieces(count):
        yield from (b" " * (1024 * 1024) for _ in range(count))
        yield b'{"location": "eastus"}'

    url = f"{target.base}/subscriptions/{target.sub}/resourcegroups/chunked"
    headers = {"Authorization": f"Bearer {target.token}", "Content-Type": "application/json"}
    version = {"api-version": "2021-04-01"}
    answer = target.send("PUT", url, version, headers, pieces(6))
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "RequestBodyTooLarge"
    assert target.arm("GET", url[len(target.base) :], version="2021-04-01").status_code == 404
    assert target.send("PUT", url, version, headers, pieces(1)).status_code == 201


@pytest.mark.parametrize("hang_up", ["shutdown", "close"])
def test_a_put_range_cut_off_mid_body_answers_no_500_and_writes_nothing(
    local_cloud, target, hang_up
):
    """A client that promises 4 MiB, sends a quarter and hangs up (a TCP FIN without TLS's
    close_notify, or a plain close): the range is all or nothing (nothing here), the answer
    recorded is a 4xx, no traceback, and the server serves on."""
    size, path = 4 * 1024 * 1024, "fuzzshare/cut.bin"
    create = {"x-ms-type": "file", "x-ms-content-length": str(size)}
    assert target.files("PUT", path, {}, create).status_code == 201
    before = bytes(range(256)) * (size // 256)
    full = {"x-ms-write": "update", "x-ms-range": f"bytes=0-{size - 1}"}
    assert target.files("PUT", path, {"comp": "range"}, full, before).status_code == 201
    # the same request as a client would sign it, sent by hand so it can stop mid-body
    url = f"{target.base}/{target.account}/{path}"
    target.cut_off("PUT", url, {"comp": "range"}, full, size, b"\xee" * (size // 4), hang_up)
    access = local_cloud.state_dir / "access.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cut = [line for line in access.read_text().splitlines() if "cut.bin?comp=range" in line]
        if len(cut) == 2:
            break
        time.sleep(0.05)
    assert len(cut) == 2 and " 201 " in cut[0]  # the full range, then the cut-off one:
    assert " 400 " in cut[1]  # answered IncompleteBody (the client was gone to read it)
    got = target.files("GET", path, {}, {"x-ms-range": f"bytes=0-{size - 1}"})
    assert got.status_code == 206 and got.content == before  # not one byte of the cut body
    assert target.tracebacks() == 0
    assert "client hung up mid-body" in (local_cloud.state_dir / "localcloud.log").read_text()
