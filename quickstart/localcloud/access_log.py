"""The access log: every API call in full to a rotated file, and a readable line on the console.

``state_dir/access.log`` gets one line per request (time, client, method, target, status,
bytes sent, milliseconds), rotated at ``max_bytes`` with ``backups`` old files kept, so a busy or
hostile client cannot fill the disk. The foreground server also prints one readable line per API
call; an upload's 4 MiB ranges (the SDK sends one Put Range per 4 MiB, 158 for a large file) are
summarised as one line per file once the ranges cover the size its Create File announced.
``verbose`` echoes every line instead. Every line goes through ``redact`` first.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_LOG_FILE = "access.log"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
CONSOLE_WIDTH = 160


@dataclass
class _Upload:
    """Put Range calls to one file since its Create File."""

    size: int
    started: float = field(default_factory=time.monotonic)
    ranges: int = 0
    written: int = 0
    failed: int = 0


class AccessLog:
    """Where each answered request is recorded; one per running server."""

    def __init__(
        self,
        state_dir: Path,
        redact: Callable[[str], str],
        console: str | None = None,
        stream=None,
        max_bytes: int = MAX_BYTES,
        backups: int = BACKUPS,
    ):
        self.redact = redact
        self.console = console  # None, "summary" or "verbose"
        self.stream = stream
        self._uploads: dict[str, _Upload] = {}
        self._stamp_second, self._stamp_text = 0, ""
        self._lock = threading.Lock()
        self._file = RotatingLines(state_dir / ACCESS_LOG_FILE, max_bytes, backups)

    def record(
        self,
        method: str,
        target: str,
        status: int,
        sent: int,
        seconds: float,
        client: str,
        headers=None,
    ) -> None:
        """One answered request: ``target`` is the path and query as the client sent them."""
        target = self.redact(target)
        stamp = self._stamp()
        millis = round(seconds * 1000)
        line = f"{stamp} {client} {method} {target} {status} {sent}B {millis}ms"
        self._file.write(line)
        if self.console == "verbose":
            self._print(line)
        elif self.console == "summary":
            summary = self._summarise(method, target, status, millis, headers or {})
            if summary:
                self._print(summary)

    def _stamp(self) -> str:
        """The current UTC second, formatted once per second (not once per request)."""
        now = int(time.time())
        if now != self._stamp_second:
            self._stamp_second = now
            self._stamp_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return self._stamp_text

    def close(self) -> None:
        """Say what became of uploads still incomplete, then close the file."""
        with self._lock:
            pending, self._uploads = self._uploads, {}
        if self.console == "summary":
            for path, upload in pending.items():
                self._print(self._upload_line(path, upload, complete=False))
        self._file.close()

    # -- the console's readable lines

    def _summarise(self, method: str, target: str, status: int, millis: int, headers) -> str:
        path, _, query = target.partition("?")
        clock = self._stamp()[11:19]
        if method == "PUT" and "comp=range" in query.split("&"):
            return self._range(path, status, headers)
        if method == "PUT" and headers.get("x-ms-type", "").lower() == "file" and status == 201:
            size = _int(headers.get("x-ms-content-length"))
            if size:
                with self._lock:
                    self._uploads[path] = _Upload(size)
            line = f"{clock} {method} {path} (new file, {_size(size)}) -> {status} ({millis} ms)"
            return line[:CONSOLE_WIDTH]
        shown = (
            target if len(target) <= CONSOLE_WIDTH - 40 else "..." + target[-(CONSOLE_WIDTH - 43) :]
        )
        return f"{clock} {method} {shown} -> {status} ({millis} ms)"

    def _range(self, path: str, status: int, headers) -> str | None:
        length = _range_length(headers.get("x-ms-range") or headers.get("range") or "")
        with self._lock:
            upload = self._uploads.get(path)
            if upload is None:  # ranges without a Create File this run: each is its own line
                return (
                    f"{time.strftime('%H:%M:%S')} PUT {path} (range, {_size(length)}) -> {status}"
                )
            upload.ranges += 1
            if status >= 400:
                upload.failed += 1
            else:
                upload.written += length
            if upload.written < upload.size:
                return None
            del self._uploads[path]
        return self._upload_line(path, upload, complete=True)

    @staticmethod
    def _upload_line(path: str, upload: _Upload, complete: bool) -> str:
        took = time.monotonic() - upload.started
        failed = f", {upload.failed} refused" if upload.failed else ""
        state = "uploaded" if complete else "upload incomplete"
        return (
            f"{time.strftime('%H:%M:%S')} PUT {path}: {state}, {upload.ranges} ranges, "
            f"{_size(upload.written)} of {_size(upload.size)} in {took:.1f} s{failed}"
        )

    def _print(self, line: str) -> None:
        stream = self.stream or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed terminal must not fail requests
            pass


class RotatingLines:
    """An append-only text file of lines, rotated at ``max_bytes`` (``name.1`` ... ``name.N``).

    A few microseconds a line: logging's RotatingFileHandler stats the file and formats a record
    for every line, which costs more than a whole small request. Each line is written through
    at once (line buffering), so ``tail -f`` sees it.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        self._stream = open(self.path, "a", encoding="utf-8", buffering=1)
        self._size = self._stream.tell()

    def write(self, line: str) -> None:
        data = line + "\n"
        with self._lock:
            if self._stream is None:
                return
            if self._size + len(data) > self.max_bytes and self._size:
                self._rotate()
            self._stream.write(data)
            self._size += len(data.encode("utf-8")) if not data.isascii() else len(data)

    def _rotate(self) -> None:
        self._stream.close()
        for number in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None


def _int(text) -> int:
    try:
        return max(0, int(text))
    except (TypeError, ValueError):
        return 0


def _range_length(header: str) -> int:
    """The byte count of ``bytes=<start>-<end>`` (0 if it is not that)."""
    start, _, end = header.removeprefix("bytes=").partition("-")
    if start.isdigit() and end.isdigit() and int(end) >= int(start):
        return int(end) - int(start) + 1
    return 0


def _size(count: int) -> str:
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MiB"
    if count >= 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count} bytes"
