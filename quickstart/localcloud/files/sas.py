"""File and share shared access signatures (service SAS), made and verified.

String to sign for api versions 2015-04-05 and later (azure-storage-file's
``_FileSharedAccessHelper.add_resource_signature``)::

    sp\n st\n se\n /file/<account>/<share>[/<path>]\n si\n sip\n spr\n sv\n
    rscc\n rscd\n rsce\n rscl\n rsct

(one line, wrapped here after ``sv\n``)

HMAC-SHA256 with the decoded account key, base64. ``sr=f`` signs one file, ``sr=s`` a share.
"""

from __future__ import annotations

import calendar
import ipaddress
import time
from dataclasses import dataclass
from urllib.parse import quote

from .sharedkey import sign

# Which permission letter each operation needs.
PERMISSION_FOR = {"read": "r", "create": "c", "write": "w", "delete": "d", "list": "l"}
# The response headers a SAS may override, by query parameter (in string-to-sign order).
OVERRIDE_HEADERS = {
    "rscc": "Cache-Control",
    "rscd": "Content-Disposition",
    "rsce": "Content-Encoding",
    "rscl": "Content-Language",
    "rsct": "Content-Type",
}
_OVERRIDES = tuple(OVERRIDE_HEADERS)


class SasError(Exception):
    """A SAS that must be refused: ``code`` is the storage error code (all answered with 403)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _string_to_sign(params: dict, account: str, resource_path: str) -> str:
    get = lambda key: params.get(key) or ""  # noqa: E731
    return "\n".join(
        [
            get("sp"),
            get("st"),
            get("se"),
            f"/file/{account}/{resource_path.strip('/')}",
            get("si"),
            get("sip"),
            get("spr"),
            get("sv"),
            *(get(key) for key in _OVERRIDES),
        ]
    )


def make_file_sas(
    account: str,
    key_b64: str,
    share: str,
    path: str,
    *,
    permission: str = "r",
    expiry: float,
    start: float | None = None,
    version: str = "2018-03-28",
) -> str:
    """A file SAS query string in the order Batch AI's download URLs used (sv, sr, sig, se, sp)."""
    params = {"sv": version, "sr": "f", "se": _iso(expiry), "sp": permission}
    if start is not None:
        params["st"] = _iso(start)
    signature = sign(key_b64, _string_to_sign(params, account, f"{share}/{path.strip('/')}"))
    ordered = [("sv", params["sv"]), ("sr", "f"), ("sig", signature)]
    if start is not None:
        ordered.append(("st", params["st"]))
    ordered += [("se", params["se"]), ("sp", permission)]
    return "&".join(f"{name}={quote(value, safe='')}" for name, value in ordered)


def _parse_time(value: str, field: str) -> float:
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%MZ", "%Y-%m-%d"):
        try:
            return calendar.timegm(time.strptime(value, fmt))
        except ValueError:
            pass
    if value.endswith("Z") and "." in value:
        try:
            whole, fraction = value[:-1].split(".", 1)
            return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(
                "0." + fraction
            )
        except ValueError:
            pass
    raise SasError(
        "AuthenticationFailed", f"The SAS {field} time '{value}' is not an ISO 8601 UTC time."
    )


@dataclass(frozen=True)
class SasGrant:
    """What a verified SAS allows, and the response-header overrides it asks for."""

    permissions: str
    resource: str
    overrides: dict


def verify_sas(
    params: dict,
    *,
    account: str,
    key_b64: str,
    share: str,
    path: str | None,
    operation: str,
    client_ip: str,
    now: float | None = None,
) -> SasGrant:
    """Check a service SAS for ``operation`` (read/create/write/delete/list) on ``share``/``path``.

    ``params`` are the decoded query parameters. Raises SasError with the storage error code.
    """
    now = time.time() if now is None else now
    resource = signed_resource(params, ("f", "file"), ("s", "share"), bool(path), "directory")
    resource_path = share if resource == "s" else f"{share}/{path}"
    return check_signed(
        params, _string_to_sign(params, account, resource_path), key_b64, operation, client_ip, now
    )


def signed_resource(
    params: dict, item: tuple[str, str], scope: tuple[str, str], on_item: bool, also: str = ""
) -> str:
    """The SAS's signed resource (``sr``): ``item`` (one file or blob) or ``scope`` (its share or
    container), each given as (sr value, word); an item SAS works only on its item (``on_item``),
    never on the scope (or ``also``, a directory)."""
    resource = params.get("sr")
    if resource not in (item[0], scope[0]):
        raise SasError(
            "AuthenticationFailed",
            f"The SAS signed resource sr='{resource}' is not '{item[0]}' ({item[1]}) or "
            f"'{scope[0]}' ({scope[1]}).",
        )
    if resource == item[0] and not on_item:
        where = f"{scope[1]} or {also}" if also else scope[1]
        raise SasError(
            "AuthorizationResourceTypeMismatch",
            "This request is not authorized to perform this operation using this resource type "
            f"(a {item[1]} SAS, sr={item[0]}, cannot be used on a {where}).",
        )
    return resource


def check_signed(
    params: dict, signed: str, key_b64: str, operation: str, client_ip: str, now: float
) -> SasGrant:
    """What every service SAS must hold once its string to sign is known (Files and Blob alike):
    the signature, the time window, the protocol, the source IP and the permission."""
    if params.get("si"):
        raise SasError(
            "AuthenticationFailed",
            "Stored access policies (si=) are not supported by the "
            "local cloud; sign the permissions and expiry into the SAS itself.",
        )
    for required in ("sv", "sp", "se", "sig"):
        if not params.get(required):
            raise SasError(
                "AuthenticationFailed", f"The SAS is missing its '{required}' parameter."
            )
    if sign(key_b64, signed) != params["sig"]:
        raise SasError(
            "AuthenticationFailed",
            "Signature did not match. String to sign used was " + signed.replace("\n", "\\n"),
        )
    expiry = _parse_time(params["se"], "expiry")
    start = _parse_time(params["st"], "start") if params.get("st") else None
    if now > expiry or (start is not None and now < start - 300):
        raise SasError(
            "AuthenticationFailed",
            f"Signature not valid in the specified time frame: Start [{params.get('st', '')}] - "
            f"Expiry [{params['se']}] - Current [{_iso(now)}]",
        )
    if params.get("spr") and "https" not in params["spr"].split(","):
        raise SasError(
            "AuthorizationProtocolMismatch",
            "This request is not authorized to perform this operation using this protocol.",
        )
    if params.get("sip") and not _ip_allowed(params["sip"], client_ip):
        raise SasError(
            "AuthorizationSourceIPMismatch",
            "This request is not authorized to perform this operation using this source IP "
            f"{client_ip}.",
        )
    if PERMISSION_FOR[operation] not in params["sp"]:
        raise SasError(
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        )
    overrides = {key: params[key] for key in _OVERRIDES if params.get(key)}
    return SasGrant(params["sp"], params.get("sr", ""), overrides)


def _ip_allowed(spec: str, client_ip: str) -> bool:
    try:
        ip = ipaddress.ip_address(client_ip)
        low, _, high = spec.partition("-")
        return ipaddress.ip_address(low) <= ip <= ipaddress.ip_address(high or low)
    except ValueError:
        return False
