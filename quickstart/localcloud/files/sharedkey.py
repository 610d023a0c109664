"""Azure Storage SharedKey verification, computed exactly as azure-storage-common 2.1.0 signs.

String to sign (``_StorageSharedKeyAuthentication.sign_request``)::

    VERB\n Content-Encoding\n Content-Language\n Content-Length (empty when 0)\n Content-MD5\n
    Content-Type\n Date\n If-Modified-Since\n If-Match\n If-None-Match\n If-Unmodified-Since\n
    Range\n  <x-ms-* headers, lower-cased, sorted, "name:value\n">
    /<account><request path as sent, percent-encoded>  ["\n<query name>:<value>" sorted]

With a path-style endpoint (``FileEndpoint=https://127.0.0.1:P/<account>``) the request path
already starts with the account, so the account appears twice: ``/acct/acct/share/file``.
The SDK leaves the Range slot empty (it sends ``x-ms-range``); the real service signs a ``Range``
header there, so both are accepted.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from urllib.parse import parse_qsl

_STANDARD_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
)


def sign(key_b64: str, string_to_sign: str) -> str:
    digest = hmac.digest(_key_bytes(key_b64), string_to_sign.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(digest).decode("ascii")


@functools.lru_cache(maxsize=8)
def _key_bytes(key_b64: str) -> bytes:
    """The account key decoded once, not for every request it signs."""
    return base64.b64decode(key_b64)


def string_to_sign(
    method: str, headers, raw_path: str, raw_query: str, account: str, range_value: str = ""
) -> str:
    """The SharedKey string to sign for a received request.

    ``headers``: case-insensitive mapping of the received headers; ``raw_path``: the path exactly
    as sent (still percent-encoded); ``raw_query``: the query string as sent.
    """
    lines = [method.upper()]
    for name in _STANDARD_HEADERS:
        value = headers.get(name, "") or ""
        if name == "content-length" and value == "0":
            value = ""
        lines.append(value)
    lines.append(range_value)
    canonical = "\n".join(lines) + "\n"
    x_ms = sorted(
        (name.lower(), value) for name, value in headers.items() if name.lower().startswith("x-ms-")
    )
    canonical += "".join(f"{name}:{value}\n" for name, value in x_ms)
    canonical += "/" + account + raw_path
    grouped: dict[str, list[str]] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        grouped.setdefault(name.lower(), []).append(value)
    for name in sorted(grouped):
        canonical += f"\n{name}:{','.join(sorted(grouped[name]))}"
    return canonical


def verify(
    authorization: str,
    method: str,
    headers,
    raw_path: str,
    raw_query: str,
    account: str,
    key_b64: str,
) -> tuple[bool, str]:
    """(valid, the string the server signed) for an ``Authorization: SharedKey acct:sig`` header."""
    scheme, _, credential = authorization.partition(" ")
    claimed_account, _, signature = credential.strip().partition(":")
    range_value = headers.get("range", "") or ""
    first = string_to_sign(method, headers, raw_path, raw_query, account, range_value)
    if scheme not in ("SharedKey",) or claimed_account != account or not signature:
        return False, first
    if hmac.compare_digest(sign(key_b64, first).encode(), signature.encode()):
        return True, first
    if range_value:  # some clients sign a ranged request without its Range header
        signed = string_to_sign(method, headers, raw_path, raw_query, account, "")
        if hmac.compare_digest(sign(key_b64, signed).encode(), signature.encode()):
            return True, signed
    return False, first
