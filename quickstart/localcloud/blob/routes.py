"""Azure Blob routing: which operation a request is, and its checks in order.

Path-style ``/blob/<account>[/<container>[/<blob name>]]`` (the Blob endpoint in
connection.json), with ``restype``/``comp`` choosing the operation as azure-storage-blob 2.1.0
sends it. A request is checked in Azure's order: is it a Blob operation at all (a Files request
is told to use the Files endpoint), then its signature, its version, its names; only then does a
handler read or write anything.
"""

from __future__ import annotations

from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from ..connection import BLOB_PATH_PREFIX
from ..files.auth import check_version
from ..files.responses import StorageError, serve_storage_request
from ..files.sas import OVERRIDE_HEADERS
from .auth import authenticate
from .blobs import BlobHandlers
from .containers import ContainerHandlers
from .crossed import refuse_if_meant_for_files
from .names import check_container_name

SERVICE = "Azure Blob"


class BlobRoutes:
    """The Azure Blob REST subset's front door; one instance per running local cloud."""

    def __init__(self, cloud):
        self.account = cloud.credentials.storage_account
        self.key = cloud.credentials.storage_key
        self.file_endpoint = f"{cloud.base_url}/{self.account}"
        service_url = f"{cloud.base_url}/{BLOB_PATH_PREFIX}/{self.account}/"
        self.containers = ContainerHandlers(cloud, service_url)
        self.blobs = BlobHandlers(cloud, self.containers)

    def handle(self, request: Request) -> Response:
        return serve_storage_request(request, self._dispatch, SERVICE)

    def _operation(self, request: Request, has_blob: bool):
        """(SAS operation, handler) for a container- or blob-level request, or None."""
        restype, comp, method = (
            request.args.get("restype"),
            request.args.get("comp"),
            request.method,
        )
        if not has_blob:
            if restype != "container":
                return None
            return {
                (None, "PUT"): ("write", self.containers.create),
                (None, "GET"): ("read", self.containers.properties),
                (None, "HEAD"): ("read", self.containers.properties),
                (None, "DELETE"): ("delete", self.containers.delete),
                ("metadata", "GET"): ("read", self.containers.properties),
                ("metadata", "HEAD"): ("read", self.containers.properties),
                ("list", "GET"): ("list", self.blobs.list_blobs),
            }.get((comp, method))
        if restype is not None:
            return None
        return {
            (None, "PUT"): ("write", self.blobs.put_blob),
            (None, "GET"): ("read", self.blobs.get_blob),
            (None, "HEAD"): ("read", self.blobs.blob_properties),
            (None, "DELETE"): ("delete", self.blobs.delete_blob),
            ("block", "PUT"): ("write", self.blobs.put_block),
            ("blocklist", "PUT"): ("write", self.blobs.put_block_list),
            ("blocklist", "GET"): ("read", self.blobs.get_block_list),
            ("properties", "PUT"): ("write", self.blobs.set_blob_properties),
            ("metadata", "GET"): ("read", self.blobs.blob_metadata),
            ("metadata", "HEAD"): ("read", self.blobs.blob_metadata),
            ("metadata", "PUT"): ("write", self.blobs.set_blob_metadata),
        }.get((comp, method))

    def _dispatch(self, request: Request) -> Response:
        refuse_if_meant_for_files(request, self.file_endpoint)
        # after "/blob/<account>/"; the blob name keeps its own '/' (and may hold encoded ones)
        raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
        raw_path = raw.partition("?")[0] or request.path
        rest = raw_path.split("/", 3)[3] if raw_path.count("/") >= 3 else ""
        container, _, blob = rest.partition("/")
        container, blob = unquote(container), unquote(blob)
        if not container:
            return self._account_level(request)
        found = self._operation(request, bool(blob))
        if found is None:
            raise StorageError(
                400,
                "UnsupportedQueryParameter" if request.args else "UnsupportedHttpVerb",
                f"The local cloud's Azure Blob does not support {request.method} with "
                f"restype={request.args.get('restype')}, comp={request.args.get('comp')} on "
                f"this {'blob' if blob else 'container'}.",
            )
        operation, handler = found
        # a service SAS works on blobs and blob listings; containers need the key
        admin = not blob and request.method in ("PUT", "DELETE")
        grant = authenticate(
            request, self.account, self.key, container, blob or None, operation, not admin
        )
        check_version(request, SERVICE)
        check_container_name(container)
        response = handler(request, container, blob)
        if grant is not None and grant.overrides and request.method in ("GET", "HEAD"):
            for key, value in grant.overrides.items():
                response.headers[OVERRIDE_HEADERS[key]] = value
        return response

    def _account_level(self, request: Request) -> Response:
        if request.method == "GET" and request.args.get("comp") == "list":
            authenticate(request, self.account, self.key, "", None, "list", sas_allowed=False)
            check_version(request, SERVICE)
            return self.containers.list(request)
        raise StorageError(
            400,
            "UnsupportedQueryParameter",
            "The local cloud's Azure Blob supports only GET ?comp=list on the account.",
        )
