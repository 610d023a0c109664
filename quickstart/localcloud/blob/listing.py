"""List Blobs: the container's folder walked into names, then prefix, delimiter and paging.

Names come back in Azure's order (by name). With a delimiter, the names sharing the text up to
the next delimiter after the prefix fold into one ``BlobPrefix``, which counts as one result. A
page ends after ``maxresults`` results; ``NextMarker`` is the first name of the next page, so a
listing resumed with it neither skips nor repeats anything.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..files.responses import StorageError
from .names import crosses_link

MAX_RESULTS = 5000
INCLUDE_VALUES = {"metadata", "snapshots", "uncommittedblobs", "copy", "deleted"}


def page_size(args) -> int:
    raw = args.get("maxresults")
    if raw is None:
        return MAX_RESULTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_RESULTS:
        raise StorageError(
            400,
            "OutOfRangeQueryParameterValue",
            f"maxresults '{raw}' must be a whole number from 1 to {MAX_RESULTS}.",
        )
    return value


def includes(args) -> set[str]:
    wanted = {v for v in (args.get("include") or "").split(",") if v}
    unknown = wanted - INCLUDE_VALUES
    if unknown:
        raise StorageError(
            400,
            "InvalidQueryParameterValue",
            f"include={','.join(sorted(unknown))} is not one of "
            f"{', '.join(sorted(INCLUDE_VALUES))}.",
        )
    return wanted


def blob_files(root: Path, prefix: str) -> list[tuple[str, os.stat_result]]:
    """(name, stat) of every blob (regular file) below ``root`` whose name starts with
    ``prefix``, sorted by name. Only the folder the prefix names is walked; symbolic links
    (which a job on a mount could make) are not blobs and are never followed."""
    start_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
    folders = start_rel.split("/") if start_rel else []
    if any(part in ("", ".", "..") for part in folders) or crosses_link(root, folders):
        return []  # no blob has such a name (names.py), and the walk stays in the container
    start = root.joinpath(*folders)
    found = []
    stack = [(start, start_rel)]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if name.startswith(prefix) or prefix.startswith(name + "/"):
                    stack.append((Path(entry.path), name))
            elif stat.S_ISREG(st.st_mode) and name.startswith(prefix):
                found.append((name, st))
    found.sort(key=lambda item: item[0])
    return found


def page_of(
    blobs: list[tuple[str, os.stat_result]], prefix: str, delimiter: str, marker: str, size: int
) -> tuple[list, str]:
    """([("blob", name, stat) | ("prefix", name, None)], next marker or "") for one page."""
    results: list = []
    for name, st in blobs:
        if delimiter:
            cut = name.find(delimiter, len(prefix))
            if cut >= 0:
                folded = name[: cut + len(delimiter)]
                if not results or results[-1][1] != folded:
                    results.append(("prefix", folded, None))
                continue
        results.append(("blob", name, st))
    start = 0
    if marker:
        start = next((i for i, item in enumerate(results) if item[1] >= marker), len(results))
    page = results[start : start + size]
    rest = results[start + size : start + size + 1]
    return page, rest[0][1] if rest else ""
