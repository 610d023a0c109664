"""Share and file names checked as Azure Files checks them, and paths kept inside their share.

Every path from a request goes through ``split_path`` (name rules, no ``.``/``..``/empty
components, so encoded variants such as ``%2e%2e`` or ``..%2f`` are refused once decoded) and
``resolve_in_share`` (the resolved location, symlinks followed, must lie under the share's
directory). Nothing is written before both pass.

Azure counts a name's length in characters (255 at most), but Linux file systems hold 255 bytes
of UTF-8 per name, so 128 "é" or 64 emoji fit Azure and not the disk. Such a name is kept on
disk under ``long_disk_name``: a fixed prefix with ``:`` (a character Azure refuses, so no name
a client sends can be one) and the SHA-256 of the name's simple case fold, so every spelling
that Azure treats as the same name finds the same entry without a lookup. The real name is
recorded in the store before the entry is made (handlers.py), and listings show it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

_SHARE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_BAD_CHARS = set('"\\/:|<>*?') | {chr(c) for c in range(0x20)} | {"\x7f"}
MAX_COMPONENT = 255  # characters, as Azure counts a name
MAX_PATH = 2048
NAME_MAX_BYTES = 255  # what a Linux file system holds per name, in UTF-8 bytes
LONG_NAME_PREFIX = ":long-name:"


class PathRejected(ValueError):
    """A share or file name Azure would refuse, or a path that would leave its share."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def check_share_name(name: str, kind: str = "share") -> str:
    """A share's name, or PathRejected; Blob containers follow the same rule (``kind``
    "container")."""
    if not _SHARE_NAME.match(name):
        raise PathRejected(
            "InvalidResourceName",
            f"The {kind} name '{name}' is invalid: use 3-63 lowercase letters, digits "
            "and single hyphens, starting and ending with a letter or digit.",
        )
    return name


def split_path(path: str) -> list[str]:
    """The components of a directory/file path inside a share ('' is the share root)."""
    if len(path) > MAX_PATH:
        raise PathRejected("InvalidResourceName", f"The path is longer than {MAX_PATH} characters.")
    if path in ("", "/"):
        return []
    if path.startswith("/") or path.endswith("/") or "//" in path:
        raise PathRejected(
            "InvalidResourceName",
            f"The path '{path}' has an empty component; paths are relative to the share.",
        )
    parts = path.split("/")
    for part in parts:
        if part in (".", ".."):
            raise PathRejected(
                "InvalidResourceName",
                f"The path '{path}' would leave the share ('{part}' components are not allowed).",
            )
        if len(part) > MAX_COMPONENT:
            raise PathRejected(
                "InvalidResourceName",
                f"The name '{part[:40]}...' is {len(part)} characters long; Azure Files allows "
                f"at most {MAX_COMPONENT}.",
            )
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            raise PathRejected(
                "InvalidResourceName",
                f"The name {part[:40]!r} holds an unpaired surrogate, which is not Unicode text.",
            ) from None
        bad = sorted(set(part) & _BAD_CHARS)
        if bad:
            shown = ", ".join(repr(c) for c in bad)
            raise PathRejected(
                "InvalidResourceName",
                f"The name '{part!r}' contains characters Azure Files does not allow ({shown}).",
            )
    return parts


def resolve_in_share(root: Path, path: str | list[str]) -> Path:
    """The on-disk location of ``path`` inside the share directory ``root``.

    Azure Files names are case-preserving but case-insensitive (simple case mapping), so each
    component that does not exist as spelled is matched case-insensitively against its
    directory. Raises PathRejected if the path breaks a name rule, passes through a symbolic
    link, or would resolve outside ``root``.
    """
    parts = split_path(path) if isinstance(path, str) else path
    current = root
    for part in parts:
        candidate = current / part
        if len(part.encode("utf-8")) > NAME_MAX_BYTES or not os.path.lexists(candidate):
            candidate = current / _existing_entry(current, part)
        if candidate.is_symlink():
            raise PathRejected(
                "InvalidResourceName",
                "The path passes through a symbolic link, which could leave the share.",
            )
        current = candidate
    if not parts:
        return root
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(current.parent)]) != real_root:
        raise PathRejected("InvalidResourceName", "The path would leave the share.")
    return current


def simple_fold(name: str) -> str:
    """``name`` as Azure Files compares names: each character upper-cased on its own (simple
    case mapping, as the NTFS up-case table does), never expanded. Full case folding would make
    "straße" equal "STRASSE" and "ﬁle" equal "FILE", names Azure keeps apart."""
    return "".join(upper if len(upper := c.upper()) == 1 else c for c in name)


def long_disk_name(name: str) -> str:
    """The disk name of an entry whose name Azure accepts but the disk cannot hold as it is
    (see the module's docstring); equal for names equal under simple case mapping."""
    digest = hashlib.sha256(simple_fold(name).encode("utf-8")).hexdigest()
    return f"{LONG_NAME_PREFIX}{digest}"


def is_long_disk_name(disk_name: str) -> bool:
    return disk_name.startswith(LONG_NAME_PREFIX)


def disk_name(name: str) -> str:
    """Where a new entry called ``name`` goes on disk: the name itself when the disk holds it."""
    return name if len(name.encode("utf-8")) <= NAME_MAX_BYTES else long_disk_name(name)


def _existing_entry(folder: Path, name: str) -> str:
    """The disk name of the entry of ``folder`` that Azure would take ``name`` for (equal
    ignoring simple case), else the disk name a new entry of that name gets.

    A name kept under its hashed disk name is found by that name whatever its case or length
    (the hash is of the case fold); one kept as itself by comparing case folds."""
    if os.path.lexists(folder / (hashed := long_disk_name(name))):
        return hashed
    wanted = simple_fold(name)
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if simple_fold(entry.name) == wanted:
                    return entry.name
    except (FileNotFoundError, NotADirectoryError):
        pass
    return disk_name(name)
