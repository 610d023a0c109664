"""What a stored blob is: a file of its container's folder, with properties kept in the store.

A committed blob is the file ``containers/<container>/<name>``; its content settings, metadata
and committed block list live in the store. Those belong to one file version (inode, size,
mtime): a file a job wrote or replaced through a blob mount is a blob with default properties,
as a file blobfuse uploaded was. Blob names are checked by names.py, and no path through a
symbolic link a job made is ever followed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from werkzeug.wrappers import Request

from ..files.responses import StorageError, etag, http_date
from .containers import ContainerHandlers
from .names import blob_parts, crosses_link

_CONTENT_SETTINGS = {  # request header -> response header
    "x-ms-blob-content-type": "Content-Type",
    "x-ms-blob-content-encoding": "Content-Encoding",
    "x-ms-blob-content-language": "Content-Language",
    "x-ms-blob-cache-control": "Cache-Control",
    "x-ms-blob-content-disposition": "Content-Disposition",
    "x-ms-blob-content-md5": "Content-MD5",
}
BLOB_NOT_FOUND = (404, "BlobNotFound", "The specified blob does not exist.")


def _stamp(st: os.stat_result) -> list:
    return [st.st_ino, st.st_size, st.st_mtime_ns]


class StoredBlobs:
    """Finding a blob, its properties and its response headers; the base of the handlers."""

    def __init__(self, cloud, containers: ContainerHandlers):
        self.store = cloud.store
        self.containers = containers

    # ================================================================== helpers

    def _root(self, container: str) -> Path:
        self.containers.record(container)
        return self.store.containers_root / container

    def _target(self, container: str, name: str) -> tuple[Path, Path]:
        """(container folder, the blob's file path); PathRejected for names a folder cannot
        hold, 404 ContainerNotFound without the container."""
        parts = blob_parts(name)
        root = self._root(container)
        return root, root.joinpath(*parts)

    @staticmethod
    def _inside(root: Path, target: Path) -> bool:
        return not crosses_link(root, list(target.relative_to(root).parts[:-1]))

    def _existing(self, container: str, name: str) -> tuple[Path, os.stat_result]:
        root, target = self._target(container, name)
        try:
            st = target.lstat()
        except (FileNotFoundError, NotADirectoryError):
            raise StorageError(*BLOB_NOT_FOUND) from None
        if not stat.S_ISREG(st.st_mode) or not self._inside(root, target):
            raise StorageError(*BLOB_NOT_FOUND)
        return target, st

    def _props(self, container: str, name: str, st: os.stat_result) -> dict:
        props = self.store.get_blob_props(container, name)
        return props if props.get("stamp") == _stamp(st) else {}

    def _save_props(self, container: str, name: str, target: Path, props: dict) -> None:
        self.store.set_blob_props(container, name, {**props, "stamp": _stamp(target.stat())})

    @staticmethod
    def _settings(request: Request) -> dict:
        return {h: request.headers[h] for h in _CONTENT_SETTINGS if request.headers.get(h)}

    def _headers(self, container: str, name: str, st: os.stat_result) -> dict:
        props = self._props(container, name, st)
        settings = props.get("settings", {})
        headers = {
            "ETag": etag(st),
            "Last-Modified": http_date(st.st_mtime),
            "x-ms-creation-time": http_date(props.get("created", st.st_mtime)),
            "x-ms-blob-type": "BlockBlob",
            "x-ms-lease-status": "unlocked",
            "x-ms-lease-state": "available",
            "x-ms-server-encrypted": "true",
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        for request_header, response_header in _CONTENT_SETTINGS.items():
            if settings.get(request_header):
                headers[response_header] = settings[request_header]
        for key, value in props.get("metadata", {}).items():
            headers[f"x-ms-meta-{key}"] = value
        return headers

    def _blocks_dir(self, container: str, name: str) -> Path:
        """The folder of the blob's uncommitted blocks (blocks.py), outside its container's."""
        key = hashlib.sha256(name.encode("utf-8")).hexdigest()
        return self.store.blocks_root / container / key
