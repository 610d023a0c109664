"""The access log's writer thread: requests never wait on the log, and a clean stop loses no line."""

from __future__ import annotations

import threading

from quickstart.localcloud import LocalCloud, access_log
from quickstart.localcloud.access_log import ACCESS_LOG_FILE, AccessLog
from quickstart.localcloud.connection import requests_session


class _StuckTerminal:
    """A console stream whose writes block until released (a terminal nobody reads)."""

    def __init__(self):
        self.release = threading.Event()
        self.text = []

    def write(self, text: str) -> None:
        self.release.wait()
        self.text.append(text)

    def flush(self) -> None:
        pass


def _record(log: AccessLog, count: int, start: int = 0) -> None:
    for number in range(start, start + count):
        log.record("GET", f"/x/{number}?sig=secret", 200, 1, 0.001, "127.0.0.1")


def test_requests_do_not_wait_on_a_stuck_terminal_and_a_stop_writes_every_line(tmp_path):
    terminal = _StuckTerminal()
    log = AccessLog(tmp_path, lambda text: text.replace("secret", "REDACTED"), "verbose", terminal)
    recorder = threading.Thread(target=_record, args=(log, 500))
    recorder.start()
    recorder.join(timeout=30)
    assert not recorder.is_alive()  # answered while the writer is stuck on the terminal
    terminal.release.set()
    log.close()
    lines = (tmp_path / ACCESS_LOG_FILE).read_text().splitlines()
    assert [line.split()[3] for line in lines] == [f"/x/{n}?sig=REDACTED" for n in range(500)]
    assert "".join(terminal.text).count("\n") == 500


def test_lines_past_the_bound_are_counted_not_held(tmp_path, monkeypatch):
    monkeypatch.setattr(access_log, "MAX_PENDING", 10)
    terminal = _StuckTerminal()
    log = AccessLog(tmp_path, str, "verbose", terminal)
    _record(log, 1)
    while log._pending:  # the writer has taken the first line and is stuck printing it
        threading.Event().wait(0.01)
    _record(log, 25, start=1)
    terminal.release.set()
    log.close()
    lines = (tmp_path / ACCESS_LOG_FILE).read_text().splitlines()
    assert len(lines) == 1 + 10 + 1
    assert lines[-1].endswith(
        "access log: 15 lines dropped (the disk or the terminal did not keep up)"
    )


def test_every_answered_request_is_in_the_file_after_a_stop(tmp_path):
    with LocalCloud(tmp_path / "state") as cloud:
        session = requests_session(cloud.connection)
        for number in range(200):
            session.get(f"{cloud.base_url}/_localcloud/health?n={number}")
    lines = (tmp_path / "state" / ACCESS_LOG_FILE).read_text().splitlines()
    assert [line.split()[3] for line in lines] == [
        f"/_localcloud/health?n={number}" for number in range(200)
    ]
