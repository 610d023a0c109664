"""The access log: every API call in full to a rotated file, and a readable line on the console.

``state_dir/access.log`` gets one line per request (time, client, method, target, status,
bytes sent, milliseconds), rotated at ``max_bytes`` with ``backups`` old files kept, so a busy or
hostile client cannot fill the disk. The foreground server also prints one readable line per API
call; an upload's 4 MiB ranges (the SDK sends one Put Range per 4 MiB, 158 for a large file) are
summarised as one line per file once the ranges cover the size its Create File announced.
``verbose`` echoes every line instead. Every line goes through ``redact`` first.

Request threads only queue what they answered: one writer thread formats, writes and prints the
lines in batches, so no request waits on the log's lock, the disk or a slow terminal (under many
clients that wait was a sizeable part of each request's latency). The queue is bounded; lines
past the bound are counted and the count is logged, never held without limit. ``close`` writes
every line queued before it; a crash loses at most the last ``BATCH_SECONDS`` of lines.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_LOG_FILE = "access.log"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
CONSOLE_WIDTH = 160
BATCH_SECONDS = 0.02  # how long the writer lets lines gather before one write
MAX_PENDING = 100_000  # lines queued at most (about 15 MB) while the disk or terminal stalls

log = logging.getLogger("quickstart.localcloud")


@dataclass
class _Upload:
    """Put Range calls to one file since its Create File."""

    size: int
    started: float = field(default_factory=time.monotonic)
    ranges: int = 0
    written: int = 0
    failed: int = 0


class AccessLog:
    """Where each answered request is recorded; one per running server, with its writer thread."""

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
        self._uploads: dict[str, _Upload] = {}  # the writer thread's alone
        self._stamp_second, self._stamp_text = 0, ""
        self._file = RotatingLines(state_dir / ACCESS_LOG_FILE, max_bytes, backups)
        self._pending: deque[tuple] = deque()  # append and popleft are atomic: no lock needed
        self._dropped = 0  # lines past MAX_PENDING, under _dropped_lock (only when full)
        self._dropped_lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._writer = threading.Thread(
            target=self._write_batches, name="local-cloud-access-log", daemon=True
        )
        self._writer.start()

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
        """One answered request: ``target`` is the path and query as the client sent them.
        Queued for the writer thread; ``headers`` (read only for the console's summary) must
        not change afterwards."""
        if len(self._pending) >= MAX_PENDING:
            with self._dropped_lock:
                self._dropped += 1
            return
        self._pending.append((time.time(), method, target, status, sent, seconds, client, headers))
        if not self._wake.is_set():
            self._wake.set()

    def close(self) -> None:
        """Write every line queued so far, say what became of uploads still incomplete, then
        close the file."""
        self._closing = True
        self._wake.set()
        self._writer.join(timeout=10)
        if self.console == "summary":
            pending, self._uploads = self._uploads, {}
            self._print([self._upload_line(p, u, complete=False) for p, u in pending.items()])
        self._file.close()

    # -- the writer thread

    def _write_batches(self) -> None:
        while not self._closing:
            self._wake.wait()
            if not self._closing:
                time.sleep(BATCH_SECONDS)  # let a burst gather: one write for many lines
            self._wake.clear()  # before taking lines: one queued after this wakes us again
            self._write_safely()
        self._write_safely()  # what came while the last batch was written

    def _write_safely(self) -> None:
        try:
            self._write_pending()
        except Exception:  # the log must never stop; lines it could not write are lost
            log.exception("the access log failed")

    def _write_pending(self) -> None:
        lines, shown = [], []
        while True:
            try:
                when, method, target, status, sent, seconds, client, headers = (
                    self._pending.popleft()
                )
            except IndexError:
                break
            target = self.redact(target)
            millis = round(seconds * 1000)
            stamp = self._stamp(when)
            line = f"{stamp} {client} {method} {target} {status} {sent}B {millis}ms"
            lines.append(line)
            if self.console == "verbose":
                shown.append(line)
            elif self.console == "summary":
                summary = self._summarise(method, target, status, millis, headers or {}, stamp)
                if summary:
                    shown.append(summary)
        if self._dropped:
            with self._dropped_lock:
                dropped, self._dropped = self._dropped, 0
            lines.append(
                f"{self._stamp(time.time())} access log: {dropped} lines dropped (the disk or "
                "the terminal did not keep up)"
            )
        self._file.write(lines)
        self._print(shown)

    def _stamp(self, when: float) -> str:
        """The UTC second of ``when``, formatted once per second (not once per request)."""
        second = int(when)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        return self._stamp_text

    # -- the console's readable lines

    def _summarise(
        self, method: str, target: str, status: int, millis: int, headers, stamp: str
    ) -> str | None:
        path, _, query = target.partition("?")
        clock = stamp[11:19]
        if method == "PUT" and "comp=range" in query.split("&"):
            return self._range(path, status, headers)
        if method == "PUT" and headers.get("x-ms-type", "").lower() == "file" and status == 201:
            size = _int(headers.get("x-ms-content-length"))
            if size:
                self._uploads[path] = _Upload(size)
            line = f"{clock} {method} {path} (new file, {_size(size)}) -> {status} ({millis} ms)"
            return line[:CONSOLE_WIDTH]
        shown = (
            target if len(target) <= CONSOLE_WIDTH - 40 else "..." + target[-(CONSOLE_WIDTH - 43) :]
        )
        return f"{clock} {method} {shown} -> {status} ({millis} ms)"

    def _range(self, path: str, status: int, headers) -> str | None:
        length = _range_length(headers.get("x-ms-range") or headers.get("range") or "")
        upload = self._uploads.get(path)
        if upload is None:  # ranges without a Create File this run: each is its own line
            return f"{time.strftime('%H:%M:%S')} PUT {path} (range, {_size(length)}) -> {status}"
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

    def _print(self, lines: list[str]) -> None:
        if not lines:
            return
        stream = self.stream or sys.stderr
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed terminal must not fail requests
            pass


class RotatingLines:
    """An append-only text file of lines, rotated at ``max_bytes`` (``name.1`` ... ``name.N``).

    A few microseconds a line: logging's RotatingFileHandler stats the file and formats a record
    for every line, which costs more than a whole small request. Each batch is written through
    at once (one write for the batch), so ``tail -f`` sees it.
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

    def write(self, lines: list[str]) -> None:
        """Append ``lines``, rotating first wherever the next line would pass ``max_bytes``."""
        with self._lock:
            if self._stream is None or not lines:
                return
            chunk: list[str] = []
            for line in lines:
                data = line + "\n"
                size = len(data) if data.isascii() else len(data.encode("utf-8"))
                if self._size + size > self.max_bytes and self._size:
                    self._stream.write("".join(chunk))
                    chunk = []
                    self._rotate()
                chunk.append(data)
                self._size += size
            self._stream.write("".join(chunk))

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
