"""A share's space as Azure Files keeps it: the quota is enforced, and cleared ranges are freed;
and the disk's: a write the disk cannot hold is refused before it starts (Files and Blob).

Usage counts each file's length (its ``x-ms-content-length``), as the service counts a share's
usage against its quota; a Create File or a resize that would pass the quota is refused with
``ShareSizeLimitReached`` before anything is written. ``x-ms-write: clear`` punches a hole in
the file (``fallocate(PUNCH_HOLE)``), so the disk space is really given back, as the service
frees cleared ranges; where the file system cannot punch holes, zeros are written instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from .responses import DISK_FULL, StorageError

GIB = 1024**3
# Room a write must leave free beyond its own bytes: the ranges and blocks of other uploads in
# flight (the SDKs send up to 4 MiB each, a few at a time) and the store's own records.
DISK_RESERVE = 16 * 1024 * 1024
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_BLOCK = 1 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    _fallocate.restype = ctypes.c_int


def share_usage(root: Path) -> int:
    """Bytes the share's files take against its quota (their lengths, sparse or not)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def check_quota(root: Path, quota_gib: int, growth: int) -> None:
    """Refuse a change that grows the share by ``growth`` bytes past its quota."""
    if growth <= 0:
        return
    used = share_usage(root)
    if used + growth > quota_gib * GIB:
        raise StorageError(
            403,
            "ShareSizeLimitReached",
            f"The specified share is full: {used} bytes used of its {quota_gib} GiB quota, and "
            f"this request would add {growth}. Raise the quota (x-ms-share-quota) or free "
            "space.",
        )


def check_disk(store, growth: int) -> None:
    """Refuse a write of ``growth`` bytes before any of it is written when the disk holding the
    state directory cannot take it with DISK_RESERVE to spare: the request fails whole with the
    service's error, instead of midway with half of it on disk."""
    if growth + DISK_RESERVE > store.free_bytes():
        raise DISK_FULL


def free_range(fd: int, start: int, length: int) -> None:
    """Make bytes [start, start + length) of the open file read as zeros and free their space."""
    if length <= 0:
        return
    if _fallocate is not None:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if _fallocate(fd, mode, start, length) == 0:
            return
    zeros = bytes(min(_BLOCK, length))
    for offset in range(start, start + length, _BLOCK):
        os.pwrite(fd, zeros[: min(_BLOCK, start + length - offset)], offset)
