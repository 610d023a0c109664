"""Writing block blobs: Put Blob, Put Block, Put Block List and Get Block List.

Writes are all-or-nothing. Put Blob streams its body into a temporary file and renames it into
place. Put Block keeps each block under ``blocks/`` (blocks.py: outside the container's folder,
so a mount never shows them); Put Block List renames the staged blocks into place when they
already lie in order, else builds the new blob from them in a temporary file and renames that,
and only then forgets the blocks. A crash before the rename leaves the old blob whole; the
temporary file is removed at the next start (store.py). A write the disk cannot hold is refused
before it starts (files/space.py), as Files refuses one. The blob a write replaces is freed in the
background (trash.py): freeing a large file just written would otherwise hold up the commit.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

from ..files.handlers import stream_into
from ..files.responses import StorageError, empty, etag, http_date, written
from ..files.space import check_disk
from ..limits import BLOCK_LIST_BODY_MAX, PUT_BLOB_MAX, PUT_BLOCK_MAX
from . import blocks
from .blocks import id_lengths, offset_hint
from .containers import read_metadata
from .stored import StoredBlobs

MAX_BLOCKS = 50_000  # committed blocks per blob
MAX_BLOCK_ID = 64  # bytes, decoded


class BlobUploads(StoredBlobs):
    """The write operations of block blobs."""

    @staticmethod
    def _body_length(request: Request, limit: int, what: str) -> int:
        """The body's declared length (server.py refused one past ``limit`` before it was read;
        a chunked body, cut off there, is refused here for want of a Content-Length)."""
        length = request.content_length
        if length is None:
            # read the body first (server.py caps it at the limit): a client still sending it
            # when the answer came and the connection closed would get a reset, not the answer
            while request.stream.read(1 << 20):
                pass
            raise StorageError(
                411, "MissingContentLengthHeader", f"{what} needs a Content-Length header."
            )
        if length > limit:
            raise StorageError(
                413,
                "RequestBodyTooLarge",
                f"The request body is too large: {what} takes at most {limit} bytes "
                f"(this one has {length}).",
            )
        return length

    def _receive(self, request: Request, length: int, want_md5: bool) -> tuple[Path, str]:
        """Stream the body into a new temporary file; (its path, base64 MD5 of the body, or ""
        when neither ``want_md5`` nor a Content-MD5 to check asked for it)."""
        temp = self.store.temp_path()
        expected = request.headers.get("Content-MD5")
        digest = hashlib.md5() if want_md5 or expected else None
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                written = stream_into(request.stream, fd, 0, length, digest)
            finally:
                os.close(fd)
            if written != length:
                raise StorageError(
                    400, "IncompleteBody", "The request body ended before Content-Length bytes."
                )
            md5 = base64.b64encode(digest.digest()).decode() if digest else ""
            if expected and expected != md5:
                raise StorageError(
                    400,
                    "Md5Mismatch",
                    "The MD5 value specified in the request did not match the MD5 value "
                    "calculated by the server.",
                )
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return temp, md5

    def _place(self, root: Path, target: Path, temp: Path) -> None:
        """Rename a complete temporary file to the blob's path, making its folders; 409 if
        the name is taken by a folder of other blobs, or a blob holds a folder it needs."""
        try:
            if not self._inside(root, target):
                raise NotADirectoryError
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not target.is_symlink():
                raise IsADirectoryError
            self.store.trash.replace(temp, target)  # the old blob is freed in the background
        except (NotADirectoryError, FileExistsError, IsADirectoryError):
            with contextlib.suppress(OSError):
                temp.unlink()
            raise StorageError(
                409,
                "InvalidResourceName",
                "The local cloud keeps a container as a folder (so it can be mounted), so one "
                "blob's name cannot also be the folder of other blobs ('a' beside 'a/b'). "
                "Rename the blob or delete the other one.",
            ) from None

    # ================================================================== operations

    def put_blob(self, request: Request, container: str, name: str) -> Response:
        blob_type = request.headers.get("x-ms-blob-type")
        if blob_type != "BlockBlob":
            raise StorageError(
                400,
                "MissingRequiredHeader" if blob_type is None else "InvalidHeaderValue",
                f"x-ms-blob-type '{blob_type}': the local cloud's Blob service stores block "
                "blobs only (x-ms-blob-type: BlockBlob, as BlockBlobService sends).",
            )
        root, target = self._target(container, name)
        length = self._body_length(request, PUT_BLOB_MAX, "Put Blob")
        check_disk(self.store, length)
        temp, md5 = self._receive(request, length, want_md5=True)
        settings = self._settings(request)
        settings.setdefault("x-ms-blob-content-md5", md5)
        return self._commit(request, container, name, (root, target, temp), settings, None, md5)

    def _commit(
        self, request, container, name, paths, settings: dict, blocks: list | None, md5: str
    ) -> Response:
        """Put the complete temporary file in place as the blob, then its properties; its
        uncommitted blocks are discarded, as Azure does once a blob is written."""
        root, target, temp = paths
        self._place(root, target, temp)
        st = target.stat()
        props = {"settings": settings, "metadata": read_metadata(request), "created": st.st_mtime}
        if blocks is not None:
            props["blocks"] = blocks
        self._save_props(container, name, target, props)
        self.store.trash.discard(self._blocks_dir(container, name))
        return written(st, md5)

    @staticmethod
    def _block_id(block_id: str) -> bytes:
        """The bytes of a base64 block id (64 bytes at most), or 400."""
        try:
            raw = base64.b64decode(block_id, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if not raw or len(raw) > MAX_BLOCK_ID:
            raise StorageError(
                400,
                "InvalidQueryParameterValue",
                f"blockid '{block_id}' must be base64 of 1 to {MAX_BLOCK_ID} bytes.",
            )
        return raw

    def put_block(self, request: Request, container: str, name: str) -> Response:
        block_id = request.args.get("blockid")
        if not block_id:
            raise StorageError(
                400, "MissingRequiredQueryParameter", "Put Block needs the blockid parameter."
            )
        raw_id = self._block_id(block_id)
        self._target(container, name)
        length = self._body_length(request, PUT_BLOCK_MAX, "Put Block")
        check_disk(self.store, length)
        folder = self._blocks_dir(container, name)
        folder.mkdir(parents=True, exist_ok=True)
        if id_lengths(folder) - {len(raw_id.hex())}:
            raise StorageError(
                400,
                "InvalidBlobOrBlock",
                "The specified blob or block content is invalid: every block id of a blob "
                "must have the same length.",
            )
        expected = request.headers.get("Content-MD5")
        received = {}

        def receive() -> Path:
            temp, received["md5"] = self._receive(request, length, want_md5=False)
            return temp

        def write_into(fd: int, offset: int) -> None:
            digest = hashlib.md5() if expected else None
            if stream_into(request.stream, fd, offset, length, digest) != length:
                raise StorageError(
                    400, "IncompleteBody", "The request body ended before Content-Length bytes."
                )
            received["md5"] = base64.b64encode(digest.digest()).decode() if digest else ""
            if expected and expected != received["md5"]:
                raise StorageError(
                    400,
                    "Md5Mismatch",
                    "The MD5 value specified in the request did not match the MD5 value "
                    "calculated by the server.",
                )

        blocks.put(folder, raw_id.hex(), offset_hint(raw_id), length, receive, write_into)
        headers = {"x-ms-request-server-encrypted": "true"}
        if expected:
            headers["Content-MD5"] = received["md5"]
        return empty(201, headers)

    def _block_list(self, request: Request) -> list[tuple[str, str]]:
        """[(kind, block id)] of a Put Block List body, in order."""
        self._body_length(request, BLOCK_LIST_BODY_MAX, "Put Block List")
        try:
            element = ElementTree.fromstring(request.get_data())
        except ElementTree.ParseError as err:
            raise StorageError(
                400, "InvalidXmlDocument", f"The block list is not well-formed XML: {err}."
            ) from None
        if element.tag != "BlockList":
            raise StorageError(
                400, "InvalidXmlDocument", "The block list's root element must be <BlockList>."
            )
        blocks = []
        for child in element:
            if child.tag not in ("Latest", "Committed", "Uncommitted"):
                raise StorageError(
                    400,
                    "InvalidXmlNodeValue",
                    f"<{child.tag}> in the block list: use Latest, Committed or Uncommitted.",
                )
            blocks.append((child.tag, (child.text or "").strip()))
        if len(blocks) > MAX_BLOCKS:
            raise StorageError(
                400, "BlockListTooLong", f"A blob may have at most {MAX_BLOCKS} blocks."
            )
        return blocks

    def put_block_list(self, request: Request, container: str, name: str) -> Response:
        root, target = self._target(container, name)
        wanted = self._block_list(request)
        folder = self._blocks_dir(container, name)
        old = self._committed(container, name, target)
        uncommitted = blocks.sources(folder)
        chosen = []  # (file, offset, size, id)
        for kind, block_id in wanted:
            hex_id = self._block_id(block_id).hex()
            if kind != "Committed" and hex_id in uncommitted:
                chosen.append((*uncommitted[hex_id], block_id))
            elif kind != "Uncommitted" and block_id in old:
                chosen.append((target, *old[block_id], block_id))
            else:
                raise StorageError(400, "InvalidBlockList", "The specified block list is invalid.")
        committed, offset = [], 0
        for _, _, size, block_id in chosen:
            committed.append([block_id, offset, size])
            offset += size
        temp = blocks.as_is(folder, [source[:3] for source in chosen])
        if temp is None:  # copied into a new file: the disk must hold the whole blob again
            check_disk(self.store, offset)
            temp = self._assemble(chosen)
        return self._commit(
            request, container, name, (root, target, temp), self._settings(request), committed, ""
        )

    def _assemble(self, chosen: list) -> Path:
        """A new temporary file holding the chosen blocks in order (copied in the kernel)."""
        temp = self.store.temp_path()
        try:
            with open(temp, "wb") as out:
                for source, start, size, _ in chosen:
                    with open(source, "rb") as block:
                        _copy_range(block, out, start, size)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return temp

    def _committed(self, container: str, name: str, target: Path) -> dict:
        """{block id: (offset, size)} of the blob now committed at ``target``."""
        try:
            st = target.stat()
        except (FileNotFoundError, NotADirectoryError):
            return {}
        blocks = self._props(container, name, st).get("blocks", [])
        return {block_id: (offset, size) for block_id, offset, size in blocks}

    def get_block_list(self, request: Request, container: str, name: str) -> Response:
        """Committed and/or uncommitted blocks; a blob with only uncommitted blocks has a list
        too, as on Azure."""
        kind = request.args.get("blocklisttype", "committed").lower()
        uncommitted = blocks.listing(self._blocks_dir(container, name))
        try:
            _, st = self._existing(container, name)
        except StorageError:
            if not uncommitted:
                raise
            st = None
        committed = self._props(container, name, st).get("blocks", []) if st else []
        shown = {
            "Committed": committed if kind != "uncommitted" else [],
            "Uncommitted": [[i, 0, size] for i, size in uncommitted] if kind != "committed" else [],
        }
        xml = '<?xml version="1.0" encoding="utf-8"?><BlockList>' + "".join(
            f"<{state}Blocks>"
            + "".join(
                f"<Block><Name>{escape(i)}</Name><Size>{n}</Size></Block>" for i, _, n in items
            )
            + f"</{state}Blocks>"
            for state, items in shown.items()
        )
        response = Response((xml + "</BlockList>").encode(), content_type="application/xml")
        if st is not None:
            response.headers["ETag"] = etag(st)
            response.headers["Last-Modified"] = http_date(st.st_mtime)
            response.headers["x-ms-blob-content-length"] = str(st.st_size)
        return response


def _copy_range(source, out, start: int, size: int) -> None:
    """Append ``size`` bytes of ``source`` from ``start`` to ``out`` (in the kernel if it can)."""
    source.seek(start)
    out.flush()
    remaining = size
    try:
        while remaining > 0:
            done = os.copy_file_range(source.fileno(), out.fileno(), remaining)
            if done == 0:
                break
            remaining -= done
    except OSError:
        pass
    if remaining:
        source.seek(start + size - remaining)
        out.seek(0, os.SEEK_END)
        while remaining > 0:
            chunk = source.read(min(remaining, 1 << 20))
            if not chunk:
                raise StorageError(500, "InternalError", "A block file ended early.")
            out.write(chunk)
            remaining -= len(chunk)
    out.seek(0, os.SEEK_END)
