"""A request sent to the wrong storage endpoint gets an error that says so.

Azure tells the services apart by host name, so a Blob request never reaches Files there. Here a
client given the wrong endpoint (a FileEndpoint to BlockBlobService, say) would otherwise get the
other service's error about a header or parameter it never meant to send. Each router asks this
module first: a request carrying a marker only the other service's SDK sends is refused with
400 InvalidUri naming the endpoint to use.
"""

from __future__ import annotations

from werkzeug.wrappers import Request

from ..files.responses import StorageError

_BLOB_RESTYPES = {"container", "service"}
_BLOB_COMPS = {"block", "blocklist", "appendblock", "page", "pagelist", "lease", "snapshot"}
_FILE_RESTYPES = {"share", "directory"}
_FILE_COMPS = {"range", "rangelist", "listhandles", "forceclosehandles"}


def looks_like_blob(request: Request) -> bool:
    args = request.args
    return (
        args.get("restype") in _BLOB_RESTYPES
        or args.get("comp") in _BLOB_COMPS
        or "x-ms-blob-type" in request.headers
    )


def looks_like_file(request: Request) -> bool:
    args = request.args
    return (
        args.get("restype") in _FILE_RESTYPES
        or args.get("comp") in _FILE_COMPS
        or "x-ms-type" in request.headers
    )


def refuse_if_meant_for_blob(request: Request, blob_endpoint: str) -> None:
    """Called by the Files router: a Blob request on the Files endpoint."""
    if looks_like_blob(request):
        _refuse(("Azure Files", "Azure Blob"), ("Blob", blob_endpoint, "BlobEndpoint"))


def refuse_if_meant_for_files(request: Request, file_endpoint: str) -> None:
    """Called by the Blob router: a Files request on the Blob endpoint."""
    if looks_like_file(request):
        _refuse(("Azure Blob", "Azure Files"), ("Files", file_endpoint, "FileEndpoint"))


def _refuse(services: tuple[str, str], endpoint: tuple[str, str, str]) -> None:
    here, meant = services
    kind, url, setting = endpoint
    raise StorageError(
        400,
        "InvalidUri",
        f"This is the local cloud's {here} endpoint and the request is an {meant} operation; "
        f"send it to the {kind} endpoint {url} ({setting}= in connection.json's "
        "storage_connection_string).",
    )
