"""What every Azure Files answer is made of: the error, dates and ETags, empty bodies.

Shared by the routing, the authentication and the handlers, so the wire format of an answer is
written once.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
import uuid
from collections.abc import Callable
from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

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


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


def iso7(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e7):07d}Z"


def etag(st: os.stat_result) -> str:
    return f'"0x{st.st_mtime_ns:X}{st.st_size:X}"'


def error_response(request: Request, err: StorageError, request_id: str) -> Response:
    """The storage service's XML error body (none for HEAD) and ``x-ms-error-code``."""
    message = f"{err.message}\nRequestId:{request_id}\nTime:{iso7(time.time())}"
    body = (
        b""
        if request.method == "HEAD"
        else (
            '<?xml version="1.0" encoding="utf-8"?><Error><Code>'
            + escape(err.code)
            + "</Code><Message>"
            + escape(message)
            + "</Message></Error>"
        ).encode("utf-8")
    )
    response = Response(
        body, status=err.status, headers=err.headers, content_type="application/xml"
    )
    response.headers["x-ms-error-code"] = err.code
    return response


def empty(status: int, headers: dict | None = None) -> Response:
    """An answer with no body and no Content-Type, as the service sends for most operations."""
    response = Response(b"", status=status, headers=headers or {})
    response.headers.remove("Content-Type")
    return response


def serve_storage_request(
    request: Request, dispatch: Callable[[Request], Response], service: str
) -> Response:
    """Run one storage request through ``dispatch`` and add the headers every storage answer
    carries; a StorageError or PathRejected becomes the service's XML error, anything else a
    logged 500 InternalError (never a stack trace on the wire). Files and Blob both answer so."""
    request_id = str(uuid.uuid4())
    try:
        response = dispatch(request)
    except StorageError as err:
        response = error_response(request, err, request_id)
    except PathRejected as err:
        response = error_response(request, StorageError(400, err.code, err.message), request_id)
    except Exception:
        log.exception("%s request failed: %s %s", service, request.method, request.path)
        response = error_response(
            request,
            StorageError(
                500,
                "InternalError",
                "The local cloud hit an internal error; see localcloud.log in its state directory.",
            ),
            request_id,
        )
    headers = response.headers
    headers["x-ms-request-id"] = request_id
    headers["x-ms-version"] = API_VERSION
    headers["Date"] = http_date(time.time())
    client_request_id = request.headers.get("x-ms-client-request-id")
    if client_request_id is not None:
        headers["x-ms-client-request-id"] = client_request_id
    return response
