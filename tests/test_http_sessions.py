"""The sessions that read whole answers in large pieces (quickstart/http_sessions.py).

They must answer exactly as a plain requests session does (bytes, decoding, errors, streaming),
and they must be the sessions the storage client gets, or downloads fall back to the SDK's 10 KB
reads (1.3-2 times slower).
"""

from __future__ import annotations

import gzip
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests

from quickstart import http_sessions
from quickstart.http_sessions import BODY_PIECE, WholeBodyAdapter, whole_body_session
from quickstart.localcloud.connection import requests_session
from tests.conftest import make_file_service

BODY = os.urandom(3 * BODY_PIECE + 12345)


class Answers(BaseHTTPRequestHandler):
    """/body: BODY; /gzip: BODY gzipped; /cut: promises more than it sends; /stream: the first
    half, then the rest once the test sets ``release``."""

    release = threading.Event()

    def do_GET(self):
        path = urlsplit(self.path).path
        body = gzip.compress(BODY) if path == "/gzip" else BODY
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (10 if path == "/cut" else 0)))
        if path == "/gzip":
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        if path == "/stream":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.release.wait(10)
            self.wfile.write(body[len(body) // 2 :])
        else:
            self.wfile.write(body)
        if path == "/cut":
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Answers.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()
    Answers.release.clear()


@pytest.mark.parametrize("path", ["/body", "/gzip"])
def test_a_whole_answer_has_the_bytes_a_plain_session_reads(server, path):
    with whole_body_session() as ours, requests.Session() as plain:
        assert ours.get(server + path).content == plain.get(server + path).content == BODY


def test_an_answer_cut_short_raises_what_requests_raises(server):
    with whole_body_session() as ours, requests.Session() as plain:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            plain.get(server + "/cut")
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            ours.get(server + "/cut")


def test_a_streamed_answer_is_handed_over_before_its_end_arrives(server):
    with whole_body_session() as ours:
        with ours.get(server + "/stream", stream=True, timeout=10) as response:
            first = response.raw.read(len(BODY) // 2)
            Answers.release.set()
            assert first + response.raw.read() == BODY


def test_the_tutorial_and_the_local_cloud_clients_read_whole_answers():
    """The sessions that the storage client gets: the tutorial's and the local cloud helper's."""
    tutorials = http_sessions.reconnecting_session()
    for session in (tutorials, requests_session({"ca_cert": "/trusted/ca.pem"})):
        assert isinstance(session.get_adapter("https://127.0.0.1/"), WholeBodyAdapter)
    assert tutorials.get_adapter("https://127.0.0.1/").max_retries.connect == 5


def test_a_download_through_the_storage_client_is_byte_exact(local_cloud, tmp_path):
    """Several 4 MiB ranges in parallel, each read whole, land in order."""
    service = make_file_service(local_cloud.connection)
    service.create_share("wholeshare")
    content = os.urandom(9 * (1 << 20) + 7)
    service.create_file_from_bytes("wholeshare", None, "big.bin", content, max_connections=2)
    target = tmp_path / "big.bin"
    service.get_file_to_path("wholeshare", None, "big.bin", str(target), max_connections=2)
    assert target.read_bytes() == content
