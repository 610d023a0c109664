"""Azure Files routing: which operation a request is, its checks in order, and the common headers.

Path-style ``/<account>/<share>[/<dir>...][/<file>]`` with ``restype``/``comp`` choosing the
operation, as azure-storage-file 2.1.0 sends it (reference: batchai.md §5). Every request is
authenticated (auth.py) before a handler (handlers.py) reads or writes anything.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
import uuid

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from .auth import authenticate, check_version
from .handlers import FileHandlers
from .names import PathRejected, check_share_name, split_path
from .responses import API_VERSION, DISK_FULL, StorageError, error_response, http_date

log = logging.getLogger("quickstart.localcloud")

_SAS_OVERRIDES = {
    "rscc": "Cache-Control",
    "rscd": "Content-Disposition",
    "rsce": "Content-Encoding",
    "rscl": "Content-Language",
    "rsct": "Content-Type",
}


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


def install(cloud) -> None:
    """Serve Azure Files for the cloud's storage account (see server.py's extension API)."""
    cloud.storage_handler = FileRoutes(cloud).handle


class FileRoutes:
    """The Azure Files REST subset's front door; one instance per running local cloud."""

    def __init__(self, cloud):
        self.account = cloud.credentials.storage_account
        self.key = cloud.credentials.storage_key
        self.handlers = FileHandlers(cloud)

    def handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            response = self._dispatch(request)
        except StorageError as err:
            response = error_response(request, err, request_id)
        except PathRejected as err:
            response = error_response(request, StorageError(400, err.code, err.message), request_id)
        except HTTPException:  # the body ended early or ran past its limit: server.py answers
            raise
        except Exception as err:
            if disk_full(err):
                log.warning("Azure Files request refused, the disk is full: %s", err)
                response = error_response(request, DISK_FULL, request_id)
            elif isinstance(err, OSError):
                response = error_response(request, _os_error(err), request_id)
            else:
                log.exception("Azure Files request failed: %s %s", request.method, request.path)
                response = error_response(request, INTERNAL_ERROR, request_id)
        headers = response.headers
        headers["x-ms-request-id"] = request_id
        headers["x-ms-version"] = API_VERSION
        headers["Date"] = http_date(time.time())
        client_request_id = request.headers.get("x-ms-client-request-id")
        if client_request_id is not None:
            headers["x-ms-client-request-id"] = client_request_id
        return response

    def _dispatch(self, request: Request) -> Response:
        segments = request.path.split("/")[2:]  # after "/<account>"
        if segments and segments[-1] == "":
            segments = segments[:-1]  # one trailing slash: "/acct/share/dir/"
        if not segments:
            return self._account_level(request)
        share = segments[0]
        path = "/".join(segments[1:])
        args = request.args
        restype, comp = args.get("restype"), args.get("comp")
        method = request.method
        if path == "":
            if restype == "share" and comp is None:
                op = {
                    "PUT": ("write", self.handlers.create_share),
                    "GET": ("read", self.handlers.share_properties),
                    "HEAD": ("read", self.handlers.share_properties),
                    "DELETE": ("delete", self.handlers.delete_share),
                }.get(method)
            elif restype == "directory" and comp == "list" and method == "GET":
                op = ("list", self.handlers.list_directory)
            elif restype == "directory" and comp is None and method in ("GET", "HEAD"):
                op = ("read", self.handlers.directory_properties)
            else:
                op = None
        elif restype == "directory":
            op = {
                (None, "PUT"): ("create", self.handlers.create_directory),
                (None, "GET"): ("read", self.handlers.directory_properties),
                (None, "HEAD"): ("read", self.handlers.directory_properties),
                (None, "DELETE"): ("delete", self.handlers.delete_directory),
                ("list", "GET"): ("list", self.handlers.list_directory),
            }.get((comp, method))
        elif restype is None:
            op = {
                (None, "PUT"): ("create", self.handlers.create_file),
                (None, "GET"): ("read", self.handlers.get_file),
                (None, "HEAD"): ("read", self.handlers.file_properties),
                (None, "DELETE"): ("delete", self.handlers.delete_file),
                ("range", "PUT"): ("write", self.handlers.put_range),
                ("properties", "PUT"): ("write", self.handlers.set_file_properties),
                ("metadata", "PUT"): ("write", self.handlers.set_file_metadata),
            }.get((comp, method))
        else:
            op = None
        if op is None:
            raise StorageError(
                400,
                "UnsupportedQueryParameter",
                f"The local cloud's Azure Files does not support {method} with "
                f"restype={restype}, comp={comp} on this resource.",
            )
        operation, handler = op
        # a service SAS works on files and listings; creating or deleting shares needs the key
        share_admin = path == "" and restype == "share" and method in ("PUT", "DELETE")
        # a file SAS (sr=f) signs one file: never a directory, its listing or its creation
        sas_path = "" if restype == "directory" else path
        grant = authenticate(
            request, self.account, self.key, share, sas_path, operation, sas_allowed=not share_admin
        )
        check_version(request)
        check_share_name(share)
        parts = split_path(path)
        response = handler(request, share, parts)
        if grant is not None and grant.overrides and method in ("GET", "HEAD"):
            for key, value in grant.overrides.items():
                response.headers[_SAS_OVERRIDES[key]] = value
        return response

    def _account_level(self, request: Request) -> Response:
        if request.method == "GET" and request.args.get("comp") == "list":
            authenticate(request, self.account, self.key, "", "", "list", sas_allowed=False)
            return self.handlers.list_shares(request)
        raise StorageError(
            400,
            "UnsupportedQueryParameter",
            "The local cloud's Azure Files supports only GET ?comp=list on the account.",
        )


def _os_error(err: OSError) -> StorageError:
    """What the disk refused, said as Azure Files would; unknown errors are logged in full."""
    if err.errno == errno.ENAMETOOLONG:
        return StorageError(
            400,
            "InvalidResourceName",
            "A name in the path is longer than this machine's disk holds (255 bytes in UTF-8 per "
            "name); Azure allows 255 characters, but the local cloud keeps share files as real "
            "files. Use a shorter name.",
        )
    log.error("Azure Files request hit a disk error: %s", err)
    return StorageError(
        500, "InternalError", f"The local cloud could not use its disk: {err.strerror}."
    )
