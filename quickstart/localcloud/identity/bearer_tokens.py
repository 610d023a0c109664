"""Bearer tokens: HMAC-signed JWTs that the AAD endpoint issues and every ARM request presents.

Signed with the state directory's secret key (credentials.token_signing_key), so a token cannot
be forged or altered, and carrying ``exp`` so it really expires. The claims mirror an AAD
app-only token (``aud``, ``iss``, ``appid``, ``tid``, ``oid``) closely enough for tools that peek.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict

import jwt

ALGORITHM = "HS256"
# Tokens whose signature already checked out: parsing and verifying a JWT costs PyJWT more
# than all the rest of an ARM request (tests/bench/README.md), and a client presents the same
# token on every call until it expires. Only the signature check is remembered; expiry,
# audience and issuer are checked on every call.
VERIFIED_TOKENS_KEPT = 1024
_verified: OrderedDict[tuple[str, bytes], dict] = OrderedDict()
_verified_lock = threading.Lock()


class TokenError(Exception):
    """A bearer token that must be refused; ``code`` is the ARM error code to answer with."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def issue_token(
    key: bytes,
    *,
    audience: str,
    issuer: str,
    client_id: str,
    tenant: str,
    lifetime: float,
    now: float | None = None,
) -> tuple[str, dict]:
    """Return (token, claims) for a client-credentials grant."""
    now = int(time.time() if now is None else now)
    claims = {
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime),
        "appid": client_id,
        "oid": client_id,
        "sub": client_id,
        "tid": tenant,
        "jti": str(uuid.uuid4()),
        "ver": "1.0",
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM), claims


def verify_token(
    token: str, key: bytes, *, audience: str, issuer: str, now: float | None = None
) -> dict:
    """Return the claims of a valid token, or raise TokenError saying what is wrong."""
    claims = dict(_signed_claims(token, key))
    now = time.time() if now is None else now
    expiry = claims["exp"]
    if not isinstance(expiry, (int, float)) or expiry <= now:
        raise TokenError(
            "ExpiredAuthenticationToken",
            f"The access token expiry UTC time '{_utc(expiry)}' is earlier than "
            f"current UTC time '{_utc(now)}'.",
        )
    if claims.get("nbf", 0) > now + 300:
        raise TokenError("InvalidAuthenticationToken", "The access token is not yet valid.")
    if claims["aud"].rstrip("/") != audience.rstrip("/"):
        raise TokenError(
            "InvalidAuthenticationTokenAudience",
            f"The access token has been obtained for wrong audience or resource "
            f"'{claims['aud']}'. It should exactly match with one of the allowed "
            f"audiences '{audience}'.",
        )
    if claims["iss"] != issuer:
        raise TokenError(
            "InvalidAuthenticationTokenTenant",
            f"The access token is from the wrong issuer '{claims['iss']}'.",
        )
    return claims


def _signed_claims(token: str, key: bytes) -> dict:
    """The claims of a token signed with ``key`` (remembered once checked), or TokenError."""
    remembered = (token, key)
    with _verified_lock:
        claims = _verified.get(remembered)
        if claims is not None:
            _verified.move_to_end(remembered)
            return claims
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenError(
            "InvalidAuthenticationToken",
            "The access token is invalid: it is not a well-formed JWT.",
        ) from None
    if header.get("alg") != ALGORITHM:
        raise TokenError(
            "InvalidAuthenticationToken",
            "The access token is invalid: it is not signed by this local cloud.",
        )
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={
                "verify_exp": False,
                "verify_aud": False,
                "verify_iss": False,
                "require": ["exp", "aud", "iss"],
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenError(
            "InvalidAuthenticationToken",
            "The access token is invalid: its signature does not match "
            "(was it issued by another local cloud or altered?).",
        ) from None
    except jwt.InvalidTokenError as err:
        raise TokenError(
            "InvalidAuthenticationToken", f"The access token is invalid: {err}."
        ) from None
    with _verified_lock:
        _verified[remembered] = claims
        if len(_verified) > VERIFIED_TOKENS_KEPT:
            _verified.popitem(last=False)
    return claims


def _utc(epoch) -> str:
    try:
        return time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(float(epoch)))
    except (TypeError, ValueError):
        return str(epoch)
