"""Container and blob names: Azure's rules, plus the few names a container kept as a folder
cannot hold.

Container names follow the share rule (3-63 lowercase letters, digits, single hyphens), so the
check is Files' own. A blob name may be 1-1024 characters in at most 254 '/'-separated segments.
The local cloud stores blob "a/b" as the file a/b of the container's folder (that is what makes a
blob mount a plain folder), so it also refuses what a folder cannot be: an empty, '.' or '..'
segment, a trailing '/', a segment over 255 bytes, and a NUL. Each refusal says so.
"""

from __future__ import annotations

from pathlib import Path

from ..files.names import PathRejected, check_share_name

MAX_BLOB_NAME = 1024
MAX_SEGMENTS = 254
MAX_SEGMENT_BYTES = 255  # the host file system's limit, not Azure's


def check_container_name(name: str) -> str:
    """The container's name, or PathRejected (400 InvalidResourceName)."""
    return check_share_name(name, "container")


def blob_parts(name: str) -> list[str]:
    """The folder path segments of blob ``name``, or PathRejected saying what is wrong."""
    if not 1 <= len(name) <= MAX_BLOB_NAME:
        raise PathRejected(
            "InvalidResourceName",
            f"The blob name must be 1 to {MAX_BLOB_NAME} characters long (it is {len(name)}).",
        )
    parts = name.split("/")
    if len(parts) > MAX_SEGMENTS:
        raise PathRejected(
            "InvalidResourceName",
            f"The blob name has {len(parts)} '/'-separated segments; Azure allows {MAX_SEGMENTS}.",
        )
    for part in parts:
        if part in ("", ".", "..") or "\x00" in part:
            raise PathRejected(
                "InvalidResourceName",
                f"The blob name '{name}' has an empty, '.' or '..' segment or a NUL character: "
                "the local cloud keeps a container as a folder (so it can be mounted), and a "
                "folder cannot hold that name. Rename the blob.",
            )
        if len(part.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise PathRejected(
                "InvalidResourceName",
                f"A segment of the blob name '{name[:60]}...' is longer than "
                f"{MAX_SEGMENT_BYTES} bytes, which the local cloud's folders cannot hold.",
            )
    return parts


def crosses_link(root: Path, folders: list[str]) -> bool:
    """True if a folder on the way from ``root`` down ``folders`` is a symbolic link (a job on
    a mount may have made one, pointing anywhere): the Blob service never follows one, and a
    write checks this before it makes any folder."""
    current = root
    for part in folders:
        current = current / part
        if current.is_symlink():
            return True
        if not current.exists():
            return False  # the rest would be made fresh, below a real folder
    return False
