"""Blob containers: create, properties, metadata, delete and the account's container list.

A container is a record in the store and a folder under ``containers/`` holding its committed
blobs, so the folder can be mounted as blobfuse mounted a container.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

from ..files.handlers import FileHandlers
from ..files.responses import StorageError, empty, http_date
from .listing import page_size

read_metadata = FileHandlers._metadata


def metadata_xml(metadata: dict) -> str:
    """The <Metadata> element of a listing entry."""
    pairs = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in metadata.items())
    return f"<Metadata>{pairs}</Metadata>"


def container_etag(created: float) -> str:
    return f'"0x{int(created * 1e7):X}"'


class ContainerHandlers:
    """What each container operation does; one instance per running local cloud."""

    def __init__(self, cloud, service_url: str):
        self.store = cloud.store
        self.service_url = service_url

    def record(self, container: str):
        record = self.store.get_container(container)
        if record is None:
            raise StorageError(404, "ContainerNotFound", "The specified container does not exist.")
        return record

    def _headers(self, record) -> dict:
        headers = {
            "ETag": container_etag(record.created),
            "Last-Modified": http_date(record.created),
            "x-ms-lease-status": "unlocked",
            "x-ms-lease-state": "available",
            "x-ms-has-immutability-policy": "false",
            "x-ms-has-legal-hold": "false",
        }
        headers.update({f"x-ms-meta-{k}": v for k, v in record.metadata.items()})
        return headers

    def create(self, request: Request, container: str, blob=None) -> Response:
        access = request.headers.get("x-ms-blob-public-access")
        if access:
            raise StorageError(
                400,
                "InvalidHeaderValue",
                f"x-ms-blob-public-access '{access}': the local cloud allows no anonymous "
                "access; leave public access off and hand out a SAS instead.",
            )
        if not self.store.create_container(container, read_metadata(request)):
            raise StorageError(
                409, "ContainerAlreadyExists", "The specified container already exists."
            )
        record = self.record(container)
        return empty(
            201,
            {"ETag": container_etag(record.created), "Last-Modified": http_date(record.created)},
        )

    def properties(self, request: Request, container: str, blob=None) -> Response:
        return empty(200, self._headers(self.record(container)))

    def delete(self, request: Request, container: str, blob=None) -> Response:
        if not self.store.delete_container(container):
            raise StorageError(404, "ContainerNotFound", "The specified container does not exist.")
        return empty(202)

    def list(self, request: Request) -> Response:
        """List Containers: prefix, marker (the next name), maxresults, include=metadata."""
        args = request.args
        prefix, marker = args.get("prefix", ""), args.get("marker", "")
        size = page_size(args)
        with_metadata = "metadata" in (args.get("include") or "").split(",")
        records = [
            r
            for r in self.store.list_containers()
            if r.name.startswith(prefix) and r.name >= marker
        ]
        page, rest = records[:size], records[size:]
        items = []
        for record in page:
            meta = metadata_xml(record.metadata) if with_metadata else ""
            items.append(
                f"<Container><Name>{escape(record.name)}</Name><Properties>"
                f"<Last-Modified>{http_date(record.created)}</Last-Modified>"
                f"<Etag>{container_etag(record.created)}</Etag>"
                "<LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState>"
                "<HasImmutabilityPolicy>false</HasImmutabilityPolicy>"
                f"<HasLegalHold>false</HasLegalHold></Properties>{meta}</Container>"
            )
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="{escape(self.service_url)}">'
            f"<Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>"
            f"<MaxResults>{size}</MaxResults><Containers>{''.join(items)}</Containers>"
            f"<NextMarker>{escape(rest[0].name) if rest else ''}</NextMarker>"
            "</EnumerationResults>"
        )
        return Response(xml.encode("utf-8"), status=200, content_type="application/xml")
