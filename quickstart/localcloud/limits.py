"""The local cloud's request limits, the service's own, checked before a request body is read.

A request past a limit is answered with the service's status and error body and nothing is
stored; the body it was sending is never read into memory (the connection is closed instead of
drained). The numbers are Azure's where Azure documents them:

* the AAD token form: a few KiB (a client-credentials grant is under 1 KiB);
* ARM request bodies: 4 MiB; tags: 50 per resource, names up to 512 characters, values up to 256;
* an Azure Files Put Range: 4 MiB (``RequestBodyTooLarge``); metadata: 8 KiB in all;
* Azure Blob (x-ms-version 2019-02-02): Put Blob 256 MiB, Put Block 100 MiB, a Put Block List
  body 8 MiB (50,000 ids of up to 64 bytes, base64 in XML), anything else a few KiB;
* headers: at most 100 (Python's own parser refuses more) and 32 KiB in all;
* names in characters, as Azure counts them (files/names.py, batchai/schema.py).
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from urllib.parse import parse_qs

from werkzeug.exceptions import RequestEntityTooLarge

KIB = 1024
MIB = 1024 * KIB

TOKEN_FORM_MAX = 8 * KIB
ARM_BODY_MAX = 4 * MIB
FILES_BODY_MAX = 4 * MIB
PUT_BLOB_MAX = 256 * MIB
PUT_BLOCK_MAX = 100 * MIB
BLOCK_LIST_BODY_MAX = 8 * MIB
OTHER_BODY_MAX = 64 * KIB  # health and unknown paths read no body; a 404 says more
MAX_HEADER_BYTES = 32 * KIB
MAX_METADATA_BYTES = 8 * KIB
MAX_TAGS = 50
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256

BODY_LIMITS = {
    "token": TOKEN_FORM_MAX,
    "arm": ARM_BODY_MAX,
    "files": FILES_BODY_MAX,
    "other": OTHER_BODY_MAX,
    "portal": OTHER_BODY_MAX,
}
# Blob's limit depends on the operation: (comp, is a blob) -> limit; a PUT of a blob without
# comp is Put Blob; container operations and the rest send no body worth more than a few KiB.
BLOB_BODY_LIMITS = {"block": PUT_BLOCK_MAX, "blocklist": BLOCK_LIST_BODY_MAX}
STORAGE_SURFACES = ("files", "blob")  # answered in the storage service's XML error


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused before its body is read: the status and the service's code."""

    status: int
    code: str
    message: str


def check_request(environ: dict, surface: str) -> Refusal | None:
    """The first limit ``environ``'s request breaks on ``surface``, or None if it keeps them."""
    raw = environ.get("localcloud.raw_headers") or []
    header_bytes = sum(map(len, itertools.chain.from_iterable(raw))) + 4 * len(raw)
    if header_bytes > MAX_HEADER_BYTES:
        return Refusal(
            431 if surface not in STORAGE_SURFACES else 400,
            "RequestHeaderFieldsTooLarge"
            if surface not in STORAGE_SURFACES
            else "InvalidHeaderValue",
            f"The request's headers are {header_bytes} bytes; at most {MAX_HEADER_BYTES} are "
            "accepted.",
        )
    limit = body_limit(surface, environ)
    length = environ.get("CONTENT_LENGTH") or ""
    try:
        size = int(length) if length else 0
    except ValueError:
        return Refusal(400, "InvalidHeaderValue", f"Content-Length '{length}' is not a number.")
    if size > limit:
        return Refusal(
            413,
            "RequestBodyTooLarge" if surface != "token" else "invalid_request",
            f"The request body is {size} bytes; at most {limit} are accepted here.",
        )
    return None


def body_limit(surface: str, environ: dict | None = None) -> int:
    """The most body bytes ``surface`` reads (chunked bodies are cut off there); for Blob, the
    limit of the operation ``environ``'s request is."""
    if surface == "blob":
        return _blob_body_limit(environ or {})
    return BODY_LIMITS[surface]


def _blob_body_limit(environ: dict) -> int:
    query = parse_qs(environ.get("QUERY_STRING") or "")
    comp = (query.get("comp") or [None])[0]
    if comp in BLOB_BODY_LIMITS:
        return BLOB_BODY_LIMITS[comp]
    is_put_blob = (
        environ.get("REQUEST_METHOD") == "PUT"
        and comp is None
        and "restype" not in query
        and (environ.get("PATH_INFO") or "").strip("/").count("/") >= 3  # blob/<acct>/<c>/<b>
    )
    return PUT_BLOB_MAX if is_put_blob else OTHER_BODY_MAX


def metadata_size(metadata: dict) -> int:
    """The bytes Azure counts for ``x-ms-meta-*`` (names and values); the caller refuses more
    than MAX_METADATA_BYTES."""
    return sum(len(name.encode()) + len(value.encode()) for name, value in metadata.items())


class CappedStream(io.RawIOBase):
    """A request body of unknown length (chunked) that raises RequestEntityTooLarge as soon as
    more than ``limit`` bytes have been read, so no handler ever holds more than the limit."""

    def __init__(self, stream, limit: int):
        self.stream = stream
        self.limit = limit
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(min(len(buffer), self.limit + 1 - self.seen))
        self.seen += len(data)
        if self.seen > self.limit:
            raise RequestEntityTooLarge()
        buffer[: len(data)] = data
        return len(data)
