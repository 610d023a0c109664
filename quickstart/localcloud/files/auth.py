"""Who may do what on Azure Files: SharedKey (the account key) or a service SAS.

Checked for every request before anything is read or written; a SAS also narrows the
operation to its permissions, and a share may be created or deleted with the key only.
"""

from __future__ import annotations

import email.utils
import logging
import time

from werkzeug.wrappers import Request

from . import sharedkey
from .responses import API_VERSION, StorageError
from .sas import SasError, verify_sas

log = logging.getLogger("quickstart.localcloud")

MAX_CLOCK_SKEW = 15 * 60


def authenticate(
    request: Request,
    account: str,
    key: str,
    share: str,
    path: str,
    operation: str,
    sas_allowed: bool = True,
):
    """Check the request's SAS or SharedKey signature; returns the SAS grant, or None for
    SharedKey. Raises StorageError (401/403) with the service's code when it does not hold."""
    if "sig" in request.args:
        if not sas_allowed:
            raise StorageError(
                403,
                "AuthorizationResourceTypeMismatch",
                "A service SAS cannot list, create or delete shares; use the "
                "account key (SharedKey).",
            )
        try:
            return verify_sas(
                request.args.to_dict(),
                account=account,
                key_b64=key,
                share=share,
                path=path or None,
                operation=operation,
                client_ip=request.remote_addr or "",
            )
        except SasError as err:
            raise StorageError(403, err.code, err.message) from None
    check_shared_key(request, account, key)
    return None


def check_shared_key(request: Request, account: str, key: str) -> None:
    """Check the request's SharedKey signature and date, as every storage service does (Files
    and Blob sign alike). Raises StorageError (401/403) with the service's code."""
    authorization = request.headers.get("Authorization")
    if not authorization:
        raise StorageError(
            401,
            "NoAuthenticationInformation",
            "Server failed to authenticate the request. Sign it with the storage "
            "key (SharedKey) or add a SAS; the local cloud allows no anonymous access.",
            {"WWW-Authenticate": "SharedKey"},
        )
    raw_uri = (
        request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.full_path
    )
    raw_path, _, raw_query = raw_uri.partition("?")
    # a plain dict: the string to sign looks up a dozen headers, each a slower look-up in
    # werkzeug's view of the WSGI environ
    headers = {name.lower(): value for name, value in request.headers.items()}
    valid, signed = sharedkey.verify(
        authorization,
        request.method,
        headers,
        raw_path,
        raw_query,
        account,
        key,
    )
    if not valid:
        log.info(
            "SharedKey mismatch: %s %s (%d-byte string to sign)",
            request.method,
            request.path[:200],
            len(signed),
        )
        raise StorageError(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of "
            "Authorization header is formed correctly including the signature "
            f"(SharedKey {account}:<signature> with this account's key). "
            "Server used following string to sign: '" + signed.replace("\n", "\\n") + "'.",
        )
    date = request.headers.get("x-ms-date") or request.headers.get("Date")
    sent = email.utils.parsedate_tz(date) if date else None
    if sent is None:
        raise StorageError(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request: the x-ms-date header is "
            "missing or not an RFC 1123 date.",
        )
    if abs(email.utils.mktime_tz(sent) - time.time()) > MAX_CLOCK_SKEW:
        raise StorageError(
            403,
            "AuthenticationFailed",
            f"Server failed to authenticate the request: the request date '{date}' is "
            "more than 15 minutes from the server's clock.",
        )


def check_version(request: Request, service: str = "Azure Files") -> None:
    """Refuse API versions newer than the one the local cloud serves."""
    version = request.headers.get("x-ms-version")
    if version and version > API_VERSION:
        raise StorageError(
            400,
            "InvalidHeaderValue",
            f"The API version {version} is not supported by the local cloud, which "
            f"serves {service} up to {API_VERSION} (the Track-1 storage SDKs 2.1.0).",
        )
