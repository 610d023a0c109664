"""Block blobs once written: Get (with ranges), properties, metadata, delete, and List Blobs.

The handlers the Blob router calls; writing is uploads.py's, what a stored blob is stored.py's.
"""

from __future__ import annotations

import os
from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

from ..files.handlers import send_file
from ..files.responses import StorageError, empty, etag, http_date
from .containers import metadata_xml, read_metadata
from .listing import blob_files, includes, page_of, page_size
from .stored import BLOB_NOT_FOUND
from .uploads import BlobUploads

_LIST_PROPERTY = {  # response header -> List Blobs property element
    "Content-Type": "Content-Type",
    "Content-Encoding": "Content-Encoding",
    "Content-Language": "Content-Language",
    "Content-MD5": "Content-MD5",
    "Cache-Control": "Cache-Control",
    "Content-Disposition": "Content-Disposition",
}


class BlobHandlers(BlobUploads):
    """What each blob operation does; one instance per running local cloud."""

    def get_blob(self, request: Request, container: str, name: str) -> Response:
        target, _ = self._existing(container, name)
        handle = open(target, "rb")
        try:
            st = os.fstat(handle.fileno())  # size and etag of what is actually read
            headers = self._headers(container, name, st)
        except BaseException:
            handle.close()
            raise
        return send_file(request, handle, st.st_size, headers, "x-ms-blob-content-md5")

    def blob_properties(self, request: Request, container: str, name: str) -> Response:
        _, st = self._existing(container, name)
        headers = self._headers(container, name, st)
        # the tier is a property of Get Blob Properties only; Get Blob does not send it
        headers.update({"x-ms-access-tier": "Hot", "x-ms-access-tier-inferred": "true"})
        response = Response(b"", status=200, headers=headers)
        response.headers["Content-Length"] = str(st.st_size)
        return response

    def set_blob_properties(self, request: Request, container: str, name: str) -> Response:
        target, st = self._existing(container, name)
        props = self._props(container, name, st)
        props["settings"] = self._settings(request)  # the service replaces them all
        self._save_props(container, name, target, props)
        return empty(200, {"ETag": etag(st), "Last-Modified": http_date(st.st_mtime)})

    def blob_metadata(self, request: Request, container: str, name: str) -> Response:
        _, st = self._existing(container, name)
        headers = {
            k: v
            for k, v in self._headers(container, name, st).items()
            if k.startswith("x-ms-meta-") or k in ("ETag", "Last-Modified")
        }
        return empty(200, headers)

    def set_blob_metadata(self, request: Request, container: str, name: str) -> Response:
        target, st = self._existing(container, name)
        props = self._props(container, name, st)
        props["metadata"] = read_metadata(request)
        self._save_props(container, name, target, props)
        return empty(200, {"ETag": etag(st), "Last-Modified": http_date(st.st_mtime)})

    def delete_blob(self, request: Request, container: str, name: str) -> Response:
        target, _ = self._existing(container, name)
        root = self.store.containers_root / container
        if not self.store.trash.discard(target):  # freed in the background
            raise StorageError(*BLOB_NOT_FOUND)
        self.store.delete_blob_props(container, name)
        self.store.trash.discard(self._blocks_dir(container, name))
        folder = target.parent
        while folder != root:  # a virtual directory ends with its last blob, as in Azure
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent
        return empty(202)

    def list_blobs(self, request: Request, container: str, name=None) -> Response:
        args = request.args
        root = self._root(container)
        prefix, delimiter = args.get("prefix", ""), args.get("delimiter", "")
        marker, size = args.get("marker", ""), page_size(args)
        with_metadata = "metadata" in includes(args)
        page, next_marker = page_of(blob_files(root, prefix), prefix, delimiter, marker, size)
        items = []
        for kind, item_name, st in page:
            if kind == "prefix":
                items.append(f"<BlobPrefix><Name>{escape(item_name)}</Name></BlobPrefix>")
                continue
            items.append(self._list_entry(container, item_name, st, with_metadata))
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="{escape(self.containers.service_url)}" '
            f'ContainerName="{escape(container)}">'
            f"<Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>"
            f"<MaxResults>{size}</MaxResults><Delimiter>{escape(delimiter)}</Delimiter>"
            f"<Blobs>{''.join(items)}</Blobs><NextMarker>{escape(next_marker)}</NextMarker>"
            "</EnumerationResults>"
        )
        return Response(xml.encode("utf-8"), status=200, content_type="application/xml")

    def _list_entry(self, container: str, name: str, st, with_metadata: bool) -> str:
        headers = self._headers(container, name, st)
        props = [
            f"<Creation-Time>{headers['x-ms-creation-time']}</Creation-Time>",
            f"<Last-Modified>{headers['Last-Modified']}</Last-Modified>",
            f"<Etag>{headers['ETag']}</Etag>",
            f"<Content-Length>{st.st_size}</Content-Length>",
        ]
        props += [
            f"<{element}>{escape(headers[header])}</{element}>"
            for header, element in _LIST_PROPERTY.items()
            if header in headers
        ]
        props.append(
            "<BlobType>BlockBlob</BlobType><AccessTier>Hot</AccessTier>"
            "<AccessTierInferred>true</AccessTierInferred><LeaseStatus>unlocked</LeaseStatus>"
            "<LeaseState>available</LeaseState><ServerEncrypted>true</ServerEncrypted>"
        )
        metadata = ""
        if with_metadata:
            prefix = "x-ms-meta-"
            metadata = metadata_xml(
                {k[len(prefix) :]: v for k, v in headers.items() if k.startswith(prefix)}
            )
        return (
            f"<Blob><Name>{escape(name)}</Name><Properties>{''.join(props)}</Properties>"
            f"{metadata}</Blob>"
        )
