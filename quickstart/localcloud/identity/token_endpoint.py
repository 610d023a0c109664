"""Azure Active Directory's token endpoint: the OAuth2 client-credentials grant adal sends.

adal POSTs ``grant_type=client_credentials&client_id=..&resource=..&client_secret=..`` to
``{authority}/oauth2/token``; with an authority ending in ``/adfs`` it skips instance discovery,
which is why connection.json's ``active_directory_url`` ends in ``/adfs``. Errors are AAD's JSON
(``error``, ``error_description`` with an AADSTS code) so msrestazure raises its
AuthenticationError with a readable message.
"""

from __future__ import annotations

import hmac
import json
import time

from werkzeug.wrappers import Request, Response

from ..request_ids import request_id
from .bearer_tokens import issue_token


def _aad_json(status: int, body: dict, request: Request) -> Response:
    response = Response(
        json.dumps(body), status=status, content_type="application/json; charset=utf-8"
    )
    response.headers["Cache-Control"] = "no-store, no-cache"
    response.headers["Pragma"] = "no-cache"
    response.headers["x-ms-request-id"] = request_id()
    client_request_id = request.headers.get("client-request-id")
    if client_request_id and request.headers.get("return-client-request-id", "").lower() == "true":
        response.headers["client-request-id"] = client_request_id
    return response


def aad_error(status: int, error: str, code: str, description: str, request: Request) -> Response:
    now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    trace = request_id()
    correlation = request.headers.get("client-request-id") or request_id()
    return _aad_json(
        status,
        {
            "error": error,
            "error_description": f"{code}: {description}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {correlation}\r\nTimestamp: {now}",
            "error_codes": [int(code[6:])],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": correlation,
        },
        request,
    )


class TokenEndpoint:
    """Issues signed bearer tokens to the local cloud's one service principal."""

    def __init__(self, cloud):
        self.cloud = cloud

    def tenant_matches(self, tenant: str) -> bool:
        return tenant.lower() in ("adfs", self.cloud.credentials.tenant.lower())

    def token(self, request: Request) -> Response:
        creds = self.cloud.credentials
        if request.method != "POST":
            return aad_error(
                405,
                "invalid_request",
                "AADSTS900561",
                "The endpoint only accepts POST requests.",
                request,
            )
        form = request.form
        grant = form.get("grant_type")
        if grant != "client_credentials":
            return aad_error(
                400,
                "unsupported_grant_type",
                "AADSTS70003",
                f"The app requested an unsupported grant type '{grant}'; the local "
                "cloud supports client_credentials.",
                request,
            )
        client_id = form.get("client_id", "")
        if not client_id:
            return aad_error(
                400,
                "invalid_request",
                "AADSTS900144",
                "The request body must contain the following parameter: 'client_id'.",
                request,
            )
        if client_id.lower() != creds.client_id.lower():
            return aad_error(
                400,
                "unauthorized_client",
                "AADSTS700016",
                f"Application with identifier '{client_id}' was not found in the "
                f"directory '{creds.tenant}'. Use the client_id from connection.json.",
                request,
            )
        secret = form.get("client_secret", "")
        if not secret:
            return aad_error(
                401,
                "invalid_client",
                "AADSTS7000218",
                "The request body must contain the following parameter: "
                "'client_assertion' or 'client_secret'.",
                request,
            )
        if not hmac.compare_digest(secret.encode(), creds.client_secret.encode()):
            return aad_error(
                401,
                "invalid_client",
                "AADSTS7000215",
                "Invalid client secret provided. Ensure the secret being sent in the "
                f"request is the client secret value of app '{creds.client_id}' "
                "(client_secret in connection.json).",
                request,
            )
        resource = form.get("resource") or form.get("scope", "").removesuffix("/.default")
        if resource.rstrip("/") != self.cloud.resource_id.rstrip("/"):
            return aad_error(
                400,
                "invalid_resource",
                "AADSTS500011",
                f"The resource principal named '{resource}' was not found in the tenant "
                f"'{creds.tenant}'. Use active_directory_resource_id from "
                "connection.json.",
                request,
            )
        lifetime = float(self.cloud.options["token_lifetime"])
        token, claims = issue_token(
            creds.token_signing_key,
            audience=self.cloud.resource_id,
            issuer=self.cloud.token_issuer,
            client_id=creds.client_id,
            tenant=creds.tenant,
            lifetime=lifetime,
        )
        return _aad_json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": str(claims["exp"] - claims["iat"]),
                "ext_expires_in": str(claims["exp"] - claims["iat"]),
                "expires_on": str(claims["exp"]),
                "not_before": str(claims["nbf"]),
                "resource": self.cloud.resource_id,
                "access_token": token,
            },
            request,
        )
