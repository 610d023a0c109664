"""Azure Files operations on the share's folder: shares, directories, files and their ranges.

Shares are directories under ``shares/``, directories are directories, files are files; content
settings and metadata live in the store. Requests reach these handlers already routed and
authenticated (routes.py, auth.py), and every path is checked by names.py before it touches the
disk.

Writes: Create File builds the file at its full size under a temporary name and renames it into
place (readers never see a half-made file); Put Range receives the whole body (at most 4 MiB)
and copies it in only once complete and checked, through a journal (Store.commit_range), so a
range is all or nothing, even across a crash.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import stat
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from werkzeug.http import parse_range_header
from werkzeug.wrappers import Request, Response

from ..limits import MAX_METADATA_BYTES, metadata_size
from .names import is_long_disk_name, resolve_in_share
from .responses import StorageError, empty, etag, http_date, iso7, written
from .space import check_disk, check_quota, free_range, share_usage

MAX_RANGE = 4 * 1024 * 1024  # Put Range body limit
MAX_FILE_SIZE = 4 * 1024**4  # 4 TiB, the service's file size limit
BLOCK = 1 << 20
DEFAULT_QUOTA = 5120  # GiB
_CONTENT_SETTINGS = {  # request header on create/set properties -> response header
    "x-ms-content-type": "Content-Type",
    "x-ms-content-encoding": "Content-Encoding",
    "x-ms-content-language": "Content-Language",
    "x-ms-cache-control": "Cache-Control",
    "x-ms-content-disposition": "Content-Disposition",
    "x-ms-content-md5": "Content-MD5",
}


class FileHandlers:
    """What each Azure Files operation does to the share; one instance per running local cloud."""

    def __init__(self, cloud):
        self.cloud = cloud
        self.store = cloud.store
        self.account = cloud.credentials.storage_account

    # ================================================================== helpers

    def _share_root(self, share: str) -> Path:
        root = self.store.share_dir(share)
        if root is None or not root.is_dir():
            raise StorageError(404, "ShareNotFound", "The specified share does not exist.")
        return root

    def _locate(self, share: str, parts: list[str], parent_must_exist: bool = True) -> Path:
        root = self._share_root(share)
        target = resolve_in_share(root, parts)
        if parent_must_exist and parts and not target.parent.is_dir():
            raise StorageError(404, "ParentNotFound", "The specified parent path does not exist.")
        return target

    @staticmethod
    def _stat(target: Path, want_dir: bool | None = None) -> os.stat_result:
        """stat() a share entry; 404 ResourceNotFound if it is missing or not of the wanted kind
        (a directory asked for as a file does not exist as a file, as on Azure)."""
        try:
            st = target.lstat()
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is not None:
            is_dir = stat.S_ISDIR(st.st_mode)
            if (is_dir or stat.S_ISREG(st.st_mode)) and (want_dir is None or is_dir == want_dir):
                return st
        raise StorageError(404, "ResourceNotFound", "The specified resource does not exist.")

    @staticmethod
    def _smb_headers(st: os.stat_result, is_dir: bool, parent: Path | None = None) -> dict:
        headers = {
            "ETag": etag(st),
            "Last-Modified": http_date(st.st_mtime),
            "x-ms-file-attributes": "Directory" if is_dir else "Archive",
            "x-ms-file-creation-time": iso7(st.st_mtime),
            "x-ms-file-last-write-time": iso7(st.st_mtime),
            "x-ms-file-change-time": iso7(st.st_ctime),
            "x-ms-file-permission-key": "4066528134148476695*1",
            "x-ms-file-id": str(st.st_ino),
            "x-ms-server-encrypted": "true",
        }
        if parent is not None:
            with contextlib.suppress(OSError):
                headers["x-ms-file-parent-id"] = str(parent.stat().st_ino)
        return headers

    def _check_quota(self, share: str, growth: int) -> None:
        record = self.store.get_share(share)
        if record is not None:
            check_quota(self._share_root(share), record.quota, growth)

    def _props_key(self, share: str, target: Path) -> str:
        """The key of a file's stored properties: its path as stored on disk (case as created)."""
        return target.relative_to(self._share_root(share)).as_posix()

    def _disk_folder(self, share: str, folder: Path) -> str:
        """A directory's path as stored on disk, "" for the share's root."""
        relative = self._props_key(share, folder)
        return "" if relative == "." else relative

    def _remember_name(self, share: str, target: Path, name: str) -> None:
        """Before a new entry is made under a hashed disk name (files/names.py), record the
        name it was asked for: the record first, so a crash never leaves a nameless entry. An
        existing entry keeps the name it was created with (names are case-preserving)."""
        if is_long_disk_name(target.name) and not os.path.lexists(target):
            folder = self._disk_folder(share, target.parent)
            self.store.remember_file_name(share, folder, target.name, name)

    def _forget_name(self, share: str, target: Path) -> None:
        """After an entry under a hashed disk name is gone, its name record goes too."""
        if is_long_disk_name(target.name):
            folder = self._disk_folder(share, target.parent)
            self.store.forget_file_name(share, folder, target.name)

    def _load_props(self, share: str, target: Path, st: os.stat_result) -> dict:
        """Content settings and metadata of the file now at ``target``. They belong to one file
        (inode): if a job replaced the file directly on the share, the old ones no longer apply."""
        props = self.store.get_file_props(share, self._props_key(share, target))
        return props if props.get("inode") in (None, st.st_ino) else {}

    def _save_props(self, share: str, target: Path, props: dict) -> None:
        props = {k: v for k, v in props.items() if k != "inode"}
        if props:
            props["inode"] = target.stat().st_ino
        self.store.set_file_props(share, self._props_key(share, target), props)

    @staticmethod
    def _metadata(request: Request) -> dict:
        raw = request.environ.get("localcloud.raw_headers") or request.headers.items()
        metadata = {
            name[len("x-ms-meta-") :]: value
            for name, value in raw
            if name.lower().startswith("x-ms-meta-")
        }
        size = metadata_size(metadata)
        if size > MAX_METADATA_BYTES:
            raise StorageError(
                400,
                "MetadataTooLarge",
                f"The size of the specified metadata ({size} bytes) exceeds the maximum size "
                f"permitted ({MAX_METADATA_BYTES} bytes).",
            )
        return metadata

    @staticmethod
    def _content_length_header(request: Request, name: str = "x-ms-content-length") -> int:
        raw = request.headers.get(name)
        if raw is None:
            raise StorageError(
                400,
                "MissingRequiredHeader",
                f"An HTTP header that's mandatory for this request is not specified: {name}.",
            )
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if not 0 <= value <= MAX_FILE_SIZE:
            raise StorageError(
                400,
                "InvalidHeaderValue",
                f"The value for header {name} ('{raw}') must be a size between 0 and 4 TiB.",
            )
        return value

    # ================================================================== account and shares

    def list_shares(self, request: Request) -> Response:
        prefix = request.args.get("prefix", "")
        entries = "".join(
            f"<Share><Name>{escape(s.name)}</Name><Properties><Last-Modified>{http_date(s.created)}"
            f'</Last-Modified><Etag>"0x{int(s.created * 1e6):X}"</Etag><Quota>{s.quota}</Quota>'
            f"</Properties></Share>"
            for s in self.store.list_shares()
            if s.name.startswith(prefix)
        )
        endpoint = f"{self.cloud.base_url}/{self.account}/"
        xml = (
            f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint='
            f"{quoteattr(endpoint)}><Prefix>{escape(prefix)}</Prefix><Shares>{entries}</Shares>"
            f"<NextMarker /></EnumerationResults>"
        )
        return Response(xml.encode(), status=200, content_type="application/xml")

    def create_share(self, request: Request, share: str, parts) -> Response:
        quota_header = request.headers.get("x-ms-share-quota")
        quota = DEFAULT_QUOTA
        if quota_header is not None:
            try:
                quota = int(quota_header)
            except ValueError:
                quota = 0
            if not 1 <= quota <= DEFAULT_QUOTA:
                raise StorageError(
                    400,
                    "InvalidHeaderValue",
                    f"x-ms-share-quota must be 1 to {DEFAULT_QUOTA} (GiB), not '{quota_header}'.",
                )
        if not self.store.create_share(share, quota, self._metadata(request)):
            raise StorageError(409, "ShareAlreadyExists", "The specified share already exists.")
        return empty(201, _share_headers(self.store.get_share(share)))

    def _existing_share(self, share: str):
        record = self.store.get_share(share)
        if record is None:
            raise StorageError(404, "ShareNotFound", "The specified share does not exist.")
        return record

    def share_properties(self, request: Request, share: str, parts) -> Response:
        record = self._existing_share(share)
        headers = {**_share_headers(record), "x-ms-share-quota": str(record.quota)}
        headers.update({f"x-ms-meta-{k}": v for k, v in record.metadata.items()})
        return empty(200, headers)

    def share_stats(self, request: Request, share: str, parts) -> Response:
        """Get Share Stats: the bytes the share's files hold now (Azure's figure is approximate
        and may lag; ours is exact)."""
        record = self._existing_share(share)
        body = (
            '<?xml version="1.0" encoding="utf-8"?><ShareStats><ShareUsageBytes>'
            f"{share_usage(self._share_root(share))}</ShareUsageBytes></ShareStats>"
        )
        headers = {**_share_headers(record), "Content-Type": "application/xml"}
        return Response(body, status=200, headers=headers)

    def delete_share(self, request: Request, share: str, parts) -> Response:
        if not self.store.delete_share(share):
            raise StorageError(404, "ShareNotFound", "The specified share does not exist.")
        return empty(202)

    # ================================================================== directories

    def create_directory(self, request: Request, share: str, parts) -> Response:
        target = self._locate(share, parts)
        if parts:
            self._remember_name(share, target, parts[-1])
        try:
            target.mkdir()
        except FileExistsError:
            raise StorageError(
                409, "ResourceAlreadyExists", "The specified resource already exists."
            ) from None
        except NotADirectoryError:
            raise StorageError(
                404, "ParentNotFound", "The specified parent path does not exist."
            ) from None
        return empty(201, self._smb_headers(target.stat(), True, target.parent))

    def directory_properties(self, request: Request, share: str, parts) -> Response:
        target = self._locate(share, parts, parent_must_exist=False)
        if parts and not target.parent.is_dir():
            raise StorageError(404, "ParentNotFound", "The specified parent path does not exist.")
        st = self._stat(target, want_dir=True)
        return empty(200, self._smb_headers(st, True, target.parent if parts else None))

    def delete_directory(self, request: Request, share: str, parts) -> Response:
        target = self._locate(share, parts)
        self._stat(target, want_dir=True)
        try:
            target.rmdir()
        except OSError:
            raise StorageError(
                409, "DirectoryNotEmpty", "The specified directory is not empty."
            ) from None
        self._forget_name(share, target)
        return empty(202)

    def list_directory(self, request: Request, share: str, parts) -> Response:
        target = self._locate(share, parts, parent_must_exist=False)
        if parts:
            if not target.parent.is_dir():
                raise StorageError(
                    404, "ParentNotFound", "The specified parent path does not exist."
                )
            self._stat(target, want_dir=True)
        prefix = request.args.get("prefix", "")
        marker = request.args.get("marker", "")
        try:
            max_results = int(request.args.get("maxresults", 5000))
        except ValueError:
            max_results = 0
        if not 1 <= max_results <= 5000:
            raise StorageError(
                400, "OutOfRangeQueryParameterValue", "maxresults must be 1 to 5000."
            )
        entries = []
        long_names = None  # disk name -> real name, read once if the folder has any
        with os.scandir(target) as listing:
            for entry in listing:
                name = entry.name
                if is_long_disk_name(name):
                    if long_names is None:
                        long_names = self.store.file_names(share, self._disk_folder(share, target))
                    name = long_names.get(name, name)
                if name.startswith(prefix) and name >= marker:
                    if entry.is_file(follow_symlinks=False):
                        entries.append((name, entry.stat(follow_symlinks=False).st_size))
                    elif entry.is_dir(follow_symlinks=False):
                        entries.append((name, None))
        entries.sort()
        page, rest = entries[:max_results], entries[max_results:]
        xml_entries = "".join(
            f"<Directory><Name>{escape(name)}</Name><Properties /></Directory>"
            if size is None
            else f"<File><Name>{escape(name)}</Name><Properties>"
            f"<Content-Length>{size}</Content-Length></Properties></File>"
            for name, size in page
        )
        endpoint = f"{self.cloud.base_url}/{self.account}/"
        xml = (
            f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint='
            f"{quoteattr(endpoint)} ShareName={quoteattr(share)} "
            f"DirectoryPath={quoteattr('/'.join(parts))}>"
            + (f"<Prefix>{escape(prefix)}</Prefix>" if prefix else "")
            + (f"<Marker>{escape(marker)}</Marker>" if marker else "")
            + (f"<MaxResults>{max_results}</MaxResults>" if "maxresults" in request.args else "")
            + f"<Entries>{xml_entries}</Entries>"
            + (f"<NextMarker>{escape(rest[0][0])}</NextMarker>" if rest else "<NextMarker />")
            + "</EnumerationResults>"
        )
        return Response(xml.encode("utf-8"), status=200, content_type="application/xml")

    # ================================================================== files

    def _file_props_from_request(self, request: Request) -> dict:
        props = {
            header: request.headers[header]
            for header in _CONTENT_SETTINGS
            if request.headers.get(header)
        }
        metadata = self._metadata(request)
        if metadata:
            props["metadata"] = metadata
        return props

    def create_file(self, request: Request, share: str, parts) -> Response:
        if request.headers.get("x-ms-type", "").lower() != "file":
            raise StorageError(
                400,
                "MissingRequiredHeader"
                if "x-ms-type" not in request.headers
                else "InvalidHeaderValue",
                "Create File needs the header x-ms-type: file.",
            )
        size = self._content_length_header(request)
        if not parts:
            raise StorageError(400, "InvalidResourceName", "A file needs a name inside the share.")
        target = self._locate(share, parts)
        if target.is_dir():
            raise StorageError(
                409, "ResourceTypeMismatch", "The specified resource name is an existing directory."
            )
        props = self._file_props_from_request(request)  # refused (metadata) before any write
        old_size = target.stat().st_size if target.is_file() else 0
        self._check_quota(share, size - old_size)
        check_disk(self.store, size)  # refused whole: a file that cannot be filled never appears
        self._remember_name(share, target, parts[-1])
        self.store.write_file_atomically(target, b"", size=size)
        self._save_props(share, target, props)
        return empty(201, self._smb_headers(target.stat(), False, target.parent))

    def _existing_file(self, share: str, parts) -> tuple[Path, os.stat_result]:
        if not parts:
            raise StorageError(400, "InvalidResourceName", "A file needs a name inside the share.")
        target = self._locate(share, parts, parent_must_exist=False)
        if not target.parent.is_dir():
            raise StorageError(404, "ParentNotFound", "The specified parent path does not exist.")
        return target, self._stat(target, want_dir=False)

    def put_range(self, request: Request, share: str, parts) -> Response:
        target, st = self._existing_file(share, parts)
        write = request.headers.get("x-ms-write", "").lower()
        if write not in ("update", "clear"):
            raise StorageError(400, "InvalidHeaderValue", "x-ms-write must be 'update' or 'clear'.")
        range_header = request.headers.get("x-ms-range") or request.headers.get("Range")
        parsed = parse_range_header(range_header) if range_header else None
        if (
            parsed is None
            or len(parsed.ranges) != 1
            or parsed.ranges[0][1] is None
            or parsed.ranges[0][0] < 0
        ):
            raise StorageError(
                400,
                "InvalidHeaderValue" if range_header else "MissingRequiredHeader",
                "Put Range needs x-ms-range: bytes=<start>-<end>.",
            )
        start, stop = parsed.ranges[0]
        length = stop - start
        if stop > st.st_size:
            raise StorageError(
                416,
                "InvalidRange",
                "The range specified is invalid for the current size "
                f"of the resource ({st.st_size} bytes).",
                {"Content-Range": f"bytes */{st.st_size}"},
            )
        body_length = request.content_length or 0
        if write == "clear":
            if body_length:
                raise StorageError(
                    400, "InvalidHeaderValue", "Content-Length must be 0 with x-ms-write: clear."
                )
            with open(target, "r+b") as out:
                free_range(out.fileno(), start, length)
            return empty(
                201,
                {"ETag": etag(target.stat()), "Last-Modified": http_date(target.stat().st_mtime)},
            )
        if length > MAX_RANGE:
            raise StorageError(
                413,
                "RequestBodyTooLarge",
                f"The request body is too large: a range may be at most {MAX_RANGE} bytes.",
            )
        if body_length != length:
            raise StorageError(
                400,
                "InvalidHeaderValue",
                f"Content-Length ({body_length}) must equal the range length ({length}).",
            )
        expected_md5 = request.headers.get("Content-MD5")
        # All or nothing: the whole body is received and checked before the file sees any of
        # it, and it reaches the file through a journal that a restart replays.
        staged = self.store.stage_range(
            target, start, request.stream, length, with_md5=bool(expected_md5)
        )
        if staged.length != length:
            raise StorageError(
                400, "IncompleteBody", "The request body ended before Content-Length bytes."
            )
        if expected_md5 and base64.b64encode(staged.md5).decode() != expected_md5:
            raise StorageError(
                400,
                "Md5Mismatch",
                "The MD5 value specified in the request did not match the MD5 "
                "value calculated by the server.",
            )
        self.store.commit_range(staged)
        return written(target.stat(), expected_md5 or "")

    def _file_headers(self, share: str, parts, target: Path, st: os.stat_result) -> dict:
        props = self._load_props(share, target, st)
        headers = self._smb_headers(st, False, target.parent)
        headers["x-ms-type"] = "File"
        headers["Accept-Ranges"] = "bytes"
        headers["Content-Type"] = props.get("x-ms-content-type", "application/octet-stream")
        for request_header, response_header in _CONTENT_SETTINGS.items():
            if request_header != "x-ms-content-type" and props.get(request_header):
                headers[response_header] = props[request_header]
        for name, value in props.get("metadata", {}).items():
            headers[f"x-ms-meta-{name}"] = value
        return headers

    def file_properties(self, request: Request, share: str, parts) -> Response:
        target, st = self._existing_file(share, parts)
        response = Response(b"", status=200, headers=self._file_headers(share, parts, target, st))
        response.headers["Content-Length"] = str(st.st_size)
        return response

    def get_file(self, request: Request, share: str, parts) -> Response:
        target, _ = self._existing_file(share, parts)
        handle = open(target, "rb")
        try:
            st = os.fstat(handle.fileno())  # size and etag of what is actually read
            headers = self._file_headers(share, parts, target, st)
        except BaseException:
            handle.close()
            raise
        return send_file(request, handle, st.st_size, headers, "x-ms-content-md5")

    def delete_file(self, request: Request, share: str, parts) -> Response:
        target, _ = self._existing_file(share, parts)
        if not self.store.trash.discard(target):  # out of view now, freed in the background
            raise StorageError(404, "ResourceNotFound", "The specified resource does not exist.")
        self.store.delete_file_props(share, self._props_key(share, target))
        self._forget_name(share, target)
        return empty(202)

    def set_file_properties(self, request: Request, share: str, parts) -> Response:
        target, st = self._existing_file(share, parts)
        if "x-ms-content-length" in request.headers:
            new_size = self._content_length_header(request)
            self._check_quota(share, new_size - st.st_size)
            with open(target, "r+b") as out:
                out.truncate(new_size)
        props = self._load_props(share, target, st)
        settings = {h: request.headers[h] for h in _CONTENT_SETTINGS if request.headers.get(h)}
        self._save_props(
            share,
            target,
            {**({"metadata": props["metadata"]} if "metadata" in props else {}), **settings},
        )
        st = target.stat()
        return empty(200, self._smb_headers(st, False, target.parent))

    def set_file_metadata(self, request: Request, share: str, parts) -> Response:
        target, st = self._existing_file(share, parts)
        props = {k: v for k, v in self._load_props(share, target, st).items() if k != "metadata"}
        metadata = self._metadata(request)
        if metadata:
            props["metadata"] = metadata
        self._save_props(share, target, props)
        return empty(200, {"ETag": etag(target.stat())})


def stream_into(stream, fd: int, offset: int, length: int, digest=None) -> int:
    """Copy ``length`` bytes of the request body to ``fd`` at ``offset`` through one buffer,
    feeding ``digest`` (a hashlib object) on the way if given; returns the bytes written."""
    buffer = bytearray(min(BLOCK, length) or 1)
    view = memoryview(buffer)
    written = 0
    while written < length:
        n = stream.readinto(view[: min(len(buffer), length - written)])
        if not n:
            break
        chunk = view[:n]
        if digest is not None:
            digest.update(chunk)
        while chunk:
            done = os.pwrite(fd, chunk, offset + written)
            written += done
            chunk = chunk[done:]
    return written


def _share_headers(record) -> dict:
    """A share's ETag and Last-Modified: it changes only when created."""
    return {
        "ETag": f'"0x{int(record.created * 1e6):X}"',
        "Last-Modified": http_date(record.created),
    }


def send_file(request: Request, handle, size: int, headers: dict, range_md5_header: str):
    """The answer to a GET of an open file (closed once sent): whole, or the ``Range`` /
    ``x-ms-range`` asked for (206, 416 past the end), with x-ms-range-get-content-md5 honoured.
    A range carries the whole file's Content-MD5 as ``range_md5_header`` instead, as Azure does
    (``x-ms-content-md5`` for Files, ``x-ms-blob-content-md5`` for Blob)."""
    try:
        range_header = request.headers.get("x-ms-range") or request.headers.get("Range")
        status, start, stop = 200, 0, size
        if range_header:
            parsed = parse_range_header(range_header)
            span = parsed.range_for_length(size) if parsed is not None else None
            if span is None:
                if parsed is None:
                    raise StorageError(
                        400,
                        "InvalidHeaderValue",
                        f"The range header '{range_header}' is not bytes=<start>-[<end>].",
                    )
                raise StorageError(
                    416,
                    "InvalidRange",
                    "The range specified is invalid for the current size of the resource.",
                    {"Content-Range": f"bytes */{size}"},
                )
            status, (start, stop) = 206, span
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
            whole_md5 = headers.pop("Content-MD5", None)
            if whole_md5:
                headers[range_md5_header] = whole_md5
            if request.headers.get("x-ms-range-get-content-md5", "").lower() == "true":
                if stop - start > MAX_RANGE:
                    raise StorageError(
                        400,
                        "OutOfRangeInput",
                        "x-ms-range-get-content-md5 needs a range of at most 4 MiB.",
                    )
                handle.seek(start)
                headers["Content-MD5"] = base64.b64encode(
                    hashlib.md5(handle.read(stop - start)).digest()
                ).decode()
        headers["Content-Length"] = str(stop - start)
    except BaseException:
        handle.close()
        raise
    return Response(
        _read_span(handle, start, stop), status=status, headers=headers, direct_passthrough=True
    )


def _read_span(handle, start: int, stop: int):
    """Yield bytes [start, stop) of an open file, closing it at the end.

    One buffer is reused for the whole response (each piece is sent before the next is read),
    so a large download costs no fresh memory per block.
    """
    try:
        handle.seek(start)
        remaining = stop - start
        buffer = bytearray(min(4 * BLOCK, remaining) or 1)
        view = memoryview(buffer)
        while remaining > 0:
            n = handle.readinto(view[: min(len(buffer), remaining)])
            if not n:
                break
            remaining -= n
            yield view[:n]
    finally:
        handle.close()
