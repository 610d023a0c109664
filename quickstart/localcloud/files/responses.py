"""What every Azure Files and Blob answer is made of: the error, dates and ETags, empty bodies.

Shared by the routing, the authentication and the handlers, so the wire format of an answer is
written once.
"""

from __future__ import annotations

import email.utils
import errno
import functools
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable
from xml.sax.saxutils import escape

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from ..request_ids import request_id as new_request_id
from .names import PathRejected

log = logging.getLogger("quickstart.localcloud")

API_VERSION = "2019-02-02"  # what azure-storage-file 2.1.0 sends; newer ones are refused


class StorageError(Exception):
    """Answer ``status`` with the storage service's XML error and ``x-ms-error-code``."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# Azure never told a client its disk was full; a server-side failure it did report, and
# retrying it is right once space is freed. Nothing of the request is stored.
DISK_FULL = StorageError(
    500,
    "InternalError",
    "The server encountered an internal error: the local cloud's disk is full. Free space "
    "where its state directory lives, then retry the request.",
)


def http_date(epoch: float) -> str:
    """``epoch`` as an HTTP date (RFC 1123, GMT), which shows whole seconds only."""
    return _http_date_of_second(math.floor(epoch))


@functools.lru_cache(maxsize=1024)
def _http_date_of_second(second: int) -> str:
    """Formatted once per second asked for: an answer carries two to four dates (its Date, a
    file's Last-Modified and creation time), mostly the same few seconds again and again, and
    formatting one costs more than the cache's look-up many times over."""
    return email.utils.formatdate(second, usegmt=True)


def iso7(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e7):07d}Z"


def etag(st: os.stat_result) -> str:
    return f'"0x{st.st_mtime_ns:X}{st.st_size:X}"'


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """``text`` escaped for an XML element; characters XML 1.0 cannot hold at all (control
    characters a request's name or header carried) are written as Python escapes (``\\x11``),
    so the error body stays XML a client can parse."""
    return escape(_NOT_XML.sub(lambda m: repr(m.group())[1:-1], text))


def error_response(request: Request, err: StorageError, request_id: str) -> Response:
    """The storage service's XML error body (none for HEAD) and ``x-ms-error-code``."""
    message = f"{err.message}\nRequestId:{request_id}\nTime:{iso7(time.time())}"
    body = (
        b""
        if request.method == "HEAD"
        else (
            '<?xml version="1.0" encoding="utf-8"?><Error><Code>'
            + xml_text(err.code)
            + "</Code><Message>"
            + xml_text(message)
            + "</Message></Error>"
        ).encode("utf-8")
    )
    response = Response(
        body, status=err.status, headers=err.headers, content_type="application/xml"
    )
    response.headers["x-ms-error-code"] = err.code
    return response


def written(st: os.stat_result, md5: str = "") -> Response:
    """The 201 answer to a write (Put Range, Put Blob, Put Block List) of what is now ``st``."""
    headers = {
        "ETag": etag(st),
        "Last-Modified": http_date(st.st_mtime),
        "x-ms-request-server-encrypted": "true",
    }
    if md5:
        headers["Content-MD5"] = md5
    return empty(201, headers)


def empty(status: int, headers: dict | None = None) -> Response:
    """An answer with no body and no Content-Type, as the service sends for most operations."""
    response = Response(b"", status=status, headers=headers or {})
    response.headers.remove("Content-Type")
    return response


INTERNAL_ERROR = StorageError(
    500,
    "InternalError",
    "The local cloud hit an internal error; see localcloud.log in its state directory.",
)


def disk_full(err: BaseException) -> bool:
    """True for the errors a full disk raises: ENOSPC/EDQUOT, or SQLite's "disk is full"."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, sqlite3.OperationalError) and "full" in str(err)


def os_error(err: OSError, service: str) -> StorageError:
    """What the disk refused, said as the storage service would; unknown errors are logged."""
    if err.errno == errno.ENAMETOOLONG:
        return StorageError(
            400,
            "InvalidResourceName",
            "The path is longer than this machine's disk holds (4,096 bytes of UTF-8 per path, "
            "and for blobs 255 per name): the local cloud keeps share files and blobs as real "
            "files. Use a shorter path.",
        )
    log.error("%s request hit a disk error: %s", service, err)
    return StorageError(
        500, "InternalError", f"The local cloud could not use its disk: {err.strerror}."
    )


def serve_storage_request(
    request: Request, dispatch: Callable[[Request], Response], service: str
) -> Response:
    """Run one storage request through ``dispatch`` and add the headers every storage answer
    carries; a StorageError or PathRejected becomes the service's XML error, a full disk or a
    refused name the error Azure would give, anything else a logged 500 InternalError (never a
    stack trace on the wire). Files and Blob both answer so."""
    request_id = new_request_id()
    try:
        response = dispatch(request)
    except StorageError as err:
        response = error_response(request, err, request_id)
    except PathRejected as err:
        response = error_response(request, StorageError(400, err.code, err.message), request_id)
    except HTTPException:  # the body ended early or ran past its limit: server.py answers
        raise
    except Exception as err:
        if disk_full(err):
            log.warning("%s request refused, the disk is full: %s", service, err)
            response = error_response(request, DISK_FULL, request_id)
        elif isinstance(err, OSError):
            response = error_response(request, os_error(err, service), request_id)
        else:
            log.exception("%s request failed: %s %s", service, request.method, request.path)
            response = error_response(request, INTERNAL_ERROR, request_id)
    headers = response.headers
    headers["x-ms-request-id"] = request_id
    headers["x-ms-version"] = API_VERSION
    headers["Date"] = http_date(time.time())
    client_request_id = request.headers.get("x-ms-client-request-id")
    if client_request_id is not None:
        headers["x-ms-client-request-id"] = client_request_id
    return response
