"""Freeing the disk space of replaced and deleted files off the request path.

Unlinking a large file that was written moments ago makes the kernel drop its page cache and
free its extents, which takes long enough to show in an upload that replaces a blob of the same
name (the usual "upload the dataset again"). A ``Trash`` takes the old file out of view at once
(a rename into ``trash/``, or a link there before ``os.replace`` drops the name) and frees it on
one background thread. Nothing is ever half-visible: the name points at the old file or the new
one; a crash leaves at most an entry in ``trash/``, which the store removes at the next start.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import threading
import uuid
from pathlib import Path

_STOP = None


class Trash:
    """The ``trash/`` folder of one state directory and its background freeing."""

    def __init__(self, root: Path):
        self.root = root
        self._queue: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def _entry(self, label: str) -> Path:
        return self.root / f"{label}-{uuid.uuid4().hex}"

    def replace(self, source: Path, target: Path) -> None:
        """``os.replace(source, target)``, the file it replaces freed in the background."""
        held = self._entry("replaced")
        try:
            os.link(target, held, follow_symlinks=False)
        except OSError:  # no old file (or a folder: os.replace says what is wrong)
            held = None
        try:
            os.replace(source, target)
        finally:
            if held is not None:
                self._free_later(held)

    def discard(self, path: Path) -> bool:
        """Take ``path`` (a file or a folder) out of view now and free it in the background;
        False if it was not there."""
        held = self._entry("discarded")
        try:
            os.replace(path, held)
        except FileNotFoundError:
            return False
        self._free_later(held)
        return True

    def _free_later(self, held: Path) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._free, name="trash", daemon=True)
                self._worker.start()
            self._queue.put(held)

    def _free(self) -> None:
        while (held := self._queue.get()) is not _STOP:
            if held.is_dir() and not held.is_symlink():
                shutil.rmtree(held, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    held.unlink()

    def close(self) -> None:
        """Wait until everything handed over so far is freed."""
        with self._lock:
            worker, self._worker = self._worker, None
            if worker is not None:
                self._queue.put(_STOP)
        if worker is not None:
            worker.join()
