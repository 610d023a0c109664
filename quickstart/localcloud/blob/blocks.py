"""Uncommitted blocks (Put Block) of one blob, kept until Put Block List commits them.

Each blob has a folder under ``blocks/`` (outside its container's folder, so a mount never shows
them). A block is kept one of two ways:

* **staged**: written into the folder's one ``staging`` file at the offset its id names. The
  Track-1 SDK names each block after its offset in the blob (a 32-digit number), so
  when Put Block List lists staged blocks back to back in the order of their offsets, the
  staging file already *is* the blob: the commit renames it into place instead of copying
  128 MiB. The id is only a hint: a block is staged only if its region overlaps no other
  block's, and the commit checks the layout before it trusts it.
* **plain**: any other block is a file of its own, named by the hex of its id; the commit copies
  it into a new file.

A staged block is recorded by an empty marker file named ``<hex id>@<offset>+<size>.staged``,
made only once its bytes are in the staging file, so a failed upload never counts (and one
directory listing tells every block's place).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import threading
from pathlib import Path
from urllib.parse import unquote_to_bytes

STAGING = "staging"
MARKER = ".staged"
_OFFSET_ID = re.compile(rb"\d{32}")

_reserving = threading.Lock()
_in_flight: dict[str, dict[str, tuple[int, int]]] = {}  # folder -> {hex id: region} being written


def offset_hint(raw_id: bytes) -> int | None:
    """The offset a block id names, else None. azure-storage-blob 2.1.0 names a block
    ``url_quote(base64("%032d" % offset))`` and base64-encodes that again for the wire, so the
    id the service decodes is the quoted base64 of the offset; a bare 32-digit id counts too."""
    candidates = [raw_id]
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.b64decode(unquote_to_bytes(raw_id), validate=True))
    for candidate in candidates:
        if _OFFSET_ID.fullmatch(candidate):
            return int(candidate)
    return None


def _marker(hex_id: str, offset: int, size: int) -> str:
    return f"{hex_id}@{offset}+{size}{MARKER}"


def staged(folder: Path) -> dict[str, tuple[int, int]]:
    """{hex id: (offset, size)} of the blocks staged in ``folder``."""
    found = {}
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if name.endswith(MARKER):
                hex_id, _, region = name[: -len(MARKER)].partition("@")
                offset, _, size = region.partition("+")
                found[hex_id] = (int(offset), int(size))
    return found


def id_lengths(folder: Path) -> set[int]:
    """The lengths (in hex digits) of the block ids kept in ``folder``."""
    with contextlib.suppress(FileNotFoundError):
        return {len(name.partition("@")[0]) for name in os.listdir(folder) if name != STAGING}
    return set()


def _drop_marker(folder: Path, hex_id: str) -> None:
    """Forget where an earlier upload of ``hex_id`` was staged (its bytes stay, unused)."""
    region = staged(folder).get(hex_id)
    if region is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / _marker(hex_id, *region))


def _overlaps(region: tuple[int, int], others) -> bool:
    start, size = region
    return any(start < o + s and o < start + size for o, s in others)


def put(folder: Path, hex_id: str, hint: int | None, length: int, receive, write_into) -> None:
    """Keep one block: staged at ``hint`` if its region is free, else as a plain file.

    ``receive()`` returns a complete temporary file of the body (for a plain block);
    ``write_into(fd, offset)`` streams the body into the staging file at ``offset``.
    """
    key = str(folder)
    region = (hint, length) if hint is not None and length else None
    if region is not None:
        with _reserving:
            mine = _in_flight.setdefault(key, {})
            others = {k: v for k, v in {**staged(folder), **mine}.items() if k != hex_id}
            if _overlaps(region, others.values()):
                region = None
            else:
                mine[hex_id] = region
    if region is None:
        temp = receive()
        with _reserving:
            _drop_marker(folder, hex_id)
        os.replace(temp, folder / hex_id)
        return
    try:
        fd = os.open(folder / STAGING, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            write_into(fd, region[0])
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / hex_id)  # an earlier plain upload of the same id
        with _reserving:
            _drop_marker(folder, hex_id)
            os.close(os.open(folder / _marker(hex_id, *region), os.O_WRONLY | os.O_CREAT, 0o644))
    finally:
        with _reserving:
            mine = _in_flight.get(key, {})
            mine.pop(hex_id, None)
            if not mine:
                _in_flight.pop(key, None)


def sources(folder: Path) -> dict[str, tuple[Path, int, int]]:
    """{hex id: (file, offset, size)} of every uncommitted block in ``folder``."""
    found = {
        hex_id: (folder / STAGING, offset, size)
        for hex_id, (offset, size) in staged(folder).items()
    }
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name != STAGING and not entry.name.endswith(MARKER):
                found[entry.name] = (Path(entry.path), 0, entry.stat().st_size)
    return found


def as_is(folder: Path, chosen: list[tuple[Path, int, int]]) -> Path | None:
    """The staging file, cut to the blob's size, if ``chosen`` (the list's blocks in order)
    are all staged back to back from offset 0: then it is the blob as listed. Else None."""
    staging, expected = folder / STAGING, 0
    for path, offset, size in chosen:
        if path != staging or offset != expected:
            return None
        expected += size
    if not chosen:
        return None
    os.truncate(staging, expected)
    return staging


def listing(folder: Path) -> list[tuple[str, int]]:
    """[(base64 id, size)] of the uncommitted blocks, for Get Block List."""
    return [
        (base64.b64encode(bytes.fromhex(hex_id)).decode(), size)
        for hex_id, (_, _, size) in sorted(sources(folder).items())
    ]
