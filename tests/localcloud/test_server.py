"""The server itself: start/stop, health, connection.json, TLS, the state-directory lock."""

from __future__ import annotations

import json
import socket
import ssl
import stat
import sys

import pytest
import requests

from quickstart.localcloud import (
    CONNECTION_FILE,
    LocalCloud,
    LocalCloudError,
    is_serving,
    read_connection,
)
from quickstart.localcloud.connection import CONNECTION_KEYS, requests_session

EXPECTED_KEYS = {
    "resource_manager_url",
    "active_directory_url",
    "active_directory_resource_id",
    "tenant",
    "client_id",
    "client_secret",
    "subscription_id",
    "storage_account",
    "storage_key",
    "storage_connection_string",
    "ca_cert",
}


def test_connection_json_has_exactly_the_documented_keys(local_cloud):
    on_disk = json.loads((local_cloud.state_dir / CONNECTION_FILE).read_text())
    assert set(on_disk) == EXPECTED_KEYS == set(CONNECTION_KEYS)
    assert on_disk == local_cloud.connection == read_connection(local_cloud.state_dir)
    assert on_disk["active_directory_url"].endswith("/adfs")
    assert on_disk["resource_manager_url"].startswith("https://127.0.0.1:")
    assert (
        f"FileEndpoint={local_cloud.base_url}/{on_disk['storage_account']}"
        in on_disk["storage_connection_string"]
    )
    assert (
        f"BlobEndpoint={local_cloud.base_url}/blob/{on_disk['storage_account']}"
        in on_disk["storage_connection_string"]
    )
    assert on_disk["storage_account"] != "devstoreaccount1"
    # it holds secrets: readable by its owner only
    mode = (local_cloud.state_dir / CONNECTION_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_health_answers_200_over_verified_tls(local_cloud):
    session = requests_session(local_cloud.connection)
    response = session.get(local_cloud.base_url + "/_localcloud/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert is_serving(local_cloud.connection)


def test_certificate_is_refused_without_the_local_ca(local_cloud):
    session = requests.Session()
    session.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        session.get(local_cloud.base_url + "/_localcloud/health", verify=True)


def test_server_listens_on_loopback_only(local_cloud):
    port = int(local_cloud.base_url.rsplit(":", 1)[1])
    listening = [s for s in _listening_addresses() if s[1] == port]
    assert listening and all(addr == "127.0.0.1" for addr, _ in listening)


def _listening_addresses():
    found = []
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            ip = socket.inet_ntoa(bytes.fromhex(hex_ip)[::-1])
            found.append((ip, int(hex_port, 16)))
    return found


def test_stop_closes_the_port_and_is_serving_turns_false(tmp_path):
    cloud = LocalCloud(tmp_path / "state").start()
    connection = cloud.connection
    session = requests_session(connection)
    assert session.get(cloud.base_url + "/_localcloud/health").status_code == 200  # keep-alive open
    cloud.stop()
    assert not is_serving(connection)
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(cloud.base_url + "/_localcloud/health", timeout=5)


def test_second_server_on_the_same_state_directory_is_refused(local_cloud):
    with pytest.raises(LocalCloudError, match="already serving"):
        LocalCloud(local_cloud.state_dir).start()


def test_restart_keeps_port_credentials_and_certificate(tmp_path):
    with LocalCloud(tmp_path / "state") as first:
        before = dict(first.connection)
        ca_before = (tmp_path / "state" / "tls" / "ca.pem").read_bytes()
    with LocalCloud(tmp_path / "state") as second:
        assert second.connection == before
        assert (tmp_path / "state" / "tls" / "ca.pem").read_bytes() == ca_before


def test_busy_explicit_port_is_a_clear_error(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        with pytest.raises(LocalCloudError, match=r"port \d+ on 127.0.0.1 is in use"):
            LocalCloud(tmp_path / "state", port=blocker.getsockname()[1]).start()
    finally:
        blocker.close()


def test_plain_http_client_does_not_stall_the_server(local_cloud):
    port = int(local_cloud.base_url.rsplit(":", 1)[1])
    idle = socket.create_connection(("127.0.0.1", port))  # connects, never handshakes
    try:
        assert is_serving(local_cloud.connection)
    finally:
        idle.close()


def test_unknown_path_is_a_json_404(local_cloud):
    response = requests_session(local_cloud.connection).get(local_cloud.base_url + "/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


def test_serve_forever_runs_in_the_foreground_until_interrupted(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    state = tmp_path / "fg"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quickstart",
            "localcloud",
            "--port",
            "0",
            "--state-dir",
            str(state),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        deadline = time.monotonic() + 20
        connection = None
        while time.monotonic() < deadline:
            try:
                connection = read_connection(state)
            except Exception:
                connection = None
            if connection and is_serving(connection):
                break
            time.sleep(0.05)
        assert connection and is_serving(connection)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "Local cloud serving at https://127.0.0.1:" in out
    assert str(state / CONNECTION_FILE) in out
    assert "  portal:          https://127.0.0.1:" in out and "/portal/login?token=" in out
    assert "Traceback" not in err
    assert (
        connection["client_secret"] not in out + err and connection["storage_key"] not in out + err
    )
    assert not is_serving(connection)


def test_cli_localcloud_exits_2_with_one_line_when_the_port_is_taken(tmp_path):
    import os
    import subprocess
    import sys

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "quickstart",
                "localcloud",
                "--state-dir",
                str(tmp_path / "s"),
                "--port",
                str(blocker.getsockname()[1]),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
    finally:
        blocker.close()
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "is in use" in done.stderr


def test_serve_forever_reports_a_busy_state_directory_in_one_line(local_cloud, capsys):
    from quickstart.localcloud import serve_forever

    assert serve_forever(local_cloud.state_dir, 0) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a local cloud is already serving") and err.count("\n") == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"port": -1}, {"port": 70000}, {"cluster_allocation_delay": "soon"}, {"token_lifetime": -5}],
)
def test_bad_options_are_clear_errors(tmp_path, kwargs):
    with pytest.raises(LocalCloudError, match="port|seconds"):
        LocalCloud(tmp_path / "state", **kwargs)


def test_is_serving_is_false_for_another_cloud_on_the_same_port(tmp_path):
    with LocalCloud(tmp_path / "one") as first:
        stale = dict(first.connection)
    port = int(stale["resource_manager_url"].rstrip("/").rsplit(":", 1)[1])
    with LocalCloud(tmp_path / "two", port=port) as second:
        assert is_serving(second.connection)
        stale["ca_cert"] = second.connection["ca_cert"]  # even trusting the new certificate
        assert not is_serving(stale)


def test_keep_alive_connection_survives_unread_bodies_and_head(local_cloud):
    import http.client

    port = int(local_cloud.base_url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=local_cloud.connection["ca_cert"])
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    account = local_cloud.connection["storage_account"]
    try:
        # refused before the body is read: the server must skip the body, not parse it as a request
        conn.request(
            "PUT", f"/{account}/share/file?comp=range", body=b"GET / HTTP/1.1\r\n\r\n" * 50000
        )
        first = conn.getresponse()
        first.read()
        assert first.status == 401
        sock = conn.sock
        assert sock is not None  # still open: not "Connection: close"
        conn.request("HEAD", "/_localcloud/health")
        second = conn.getresponse()
        assert second.status == 200 and second.read() == b""
        conn.request("GET", "/_localcloud/health")
        third = conn.getresponse()
        assert third.status == 200 and third.read().startswith(b"{")
        assert conn.sock is sock  # all three on one TLS connection
    finally:
        conn.close()


def test_a_failing_start_hook_fails_start_cleanly(tmp_path, monkeypatch):
    import quickstart.localcloud.server as server

    def broken_install(cloud):
        def hook():
            raise RuntimeError("recovery failed")

        cloud.on_start(hook)

    fake = type(sys)("fake_surface")
    fake.install = broken_install
    monkeypatch.setitem(sys.modules, "fake_surface", fake)
    monkeypatch.setattr(server, "SURFACE_MODULES", server.SURFACE_MODULES + ("fake_surface",))
    with pytest.raises(RuntimeError, match="recovery failed"):
        LocalCloud(tmp_path / "state").start()
    monkeypatch.setattr(server, "SURFACE_MODULES", server.SURFACE_MODULES[:-1])
    with LocalCloud(tmp_path / "state") as cloud:  # the state directory was released
        assert is_serving(cloud.connection)


def test_state_files_holding_secrets_are_owner_only(local_cloud):
    for name in ("localcloud.sqlite3", "connection.json", "tls/server-key.pem"):
        assert stat.S_IMODE((local_cloud.state_dir / name).stat().st_mode) == 0o600, name


def test_a_header_line_that_is_not_name_value_is_refused_and_its_body_never_parsed(local_cloud):
    """Python's parser would end the headers at such a line and drop Content-Length with the
    rest, so the body would be taken for the next request (found by the Blob fuzz)."""
    port = int(local_cloud.base_url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=local_cloud.connection["ca_cert"])
    account = local_cloud.connection["storage_account"]
    smuggled = b"GET /_localcloud/health HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (
        f"PUT /blob/{account}/data/a.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"x-ms-meta-bad name: v\r\nContent-Length: {len(smuggled)}\r\n\r\n"
    ).encode() + smuggled
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request)
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"x-ms-error-code: InvalidUri" in head and b"Connection: close" in head
    assert body.startswith(b"<?xml") and b"not 'name: value'" in body
    assert answer.count(b"HTTP/1.1 ") == 1  # the body was never answered as a request


def test_every_answer_carries_one_date_header(local_cloud):
    """The storage services set Date themselves; the server adds one only where none is set
    (a doubled header reads as "Date: X, X" to the SDKs' logs and retry timing)."""
    import http.client

    port = int(local_cloud.base_url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=local_cloud.connection["ca_cert"])
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    account = local_cloud.connection["storage_account"]
    try:
        for path in ("/_localcloud/health", f"/{account}/share?restype=share", "/nowhere"):
            conn.request("GET", path)
            answer = conn.getresponse()
            answer.read()
            dates = answer.headers.get_all("Date")
            assert dates is not None and len(dates) == 1, (path, dates)
            assert dates[0].endswith(" GMT")
    finally:
        conn.close()
