"""Azure Files routing: which operation a request is, its checks in order, and the common headers.

Path-style ``/<account>/<share>[/<dir>...][/<file>]`` with ``restype``/``comp`` choosing the
operation, as azure-storage-file 2.1.0 sends it (reference: batchai.md §5). Every request is
authenticated (auth.py) before a handler (handlers.py) reads or writes anything.
"""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from ..blob.crossed import refuse_if_meant_for_blob
from ..connection import BLOB_PATH_PREFIX
from .auth import authenticate, check_version
from .handlers import FileHandlers
from .names import check_share_name, split_path
from .responses import StorageError, serve_storage_request
from .sas import OVERRIDE_HEADERS


def install(cloud) -> None:
    """Serve Azure Files for the cloud's storage account (see server.py's extension API)."""
    cloud.storage_handler = FileRoutes(cloud).handle


class FileRoutes:
    """The Azure Files REST subset's front door; one instance per running local cloud."""

    def __init__(self, cloud):
        self.account = cloud.credentials.storage_account
        self.blob_endpoint = f"{cloud.base_url}/{BLOB_PATH_PREFIX}/{self.account}"
        self.key = cloud.credentials.storage_key
        self.handlers = FileHandlers(cloud)

    def handle(self, request: Request) -> Response:
        return serve_storage_request(request, self._dispatch, "Azure Files")

    def _dispatch(self, request: Request) -> Response:
        refuse_if_meant_for_blob(request, self.blob_endpoint)
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
            elif restype == "share" and comp == "stats" and method == "GET":
                op = ("read", self.handlers.share_stats)
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
        # a service SAS works on files and listings; creating or deleting a share and its usage
        # statistics need the key (Azure: the account owner only)
        share_admin = path == "" and restype == "share" and (method != "GET" or comp == "stats")
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
                response.headers[OVERRIDE_HEADERS[key]] = value
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
