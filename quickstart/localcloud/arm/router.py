"""Azure Resource Manager's router: every ARM surface plugs into it.

The router matches paths case-insensitively (ARM does; azure-mgmt-resource sends
``/resourcegroups/`` where azure-mgmt-batchai sends ``/resourceGroups/``) while keeping the
case of the names it captures. werkzeug's routing is case-sensitive, hence this small regex
router. Before any handler runs, the router checks the bearer token, the subscription and the
api-version, and turns an ``ArmError`` raised anywhere in a handler into ARM's error JSON.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from ..identity.bearer_tokens import TokenError, verify_token
from ..request_ids import request_id as new_request_id
from .responses import ArmError, arm_error

log = logging.getLogger("quickstart.localcloud")

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


@dataclass
class _Route:
    method: str
    template: str
    regex: re.Pattern
    handler: Callable
    api_versions: tuple[str, ...] | None


class ArmRouter:
    """Case-insensitive ARM routing with the bearer check in front of every handler.

    Templates name path parameters in braces, e.g.
    ``/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}``; a handler is called as
    ``handler(request, **params)`` and returns a werkzeug Response (or raises ArmError).
    A parameter named ``subscriptionId`` must equal the local cloud's subscription (else 404
    SubscriptionNotFound).
    """

    def __init__(self, cloud):
        self.cloud = cloud
        self._routes: list[_Route] = []

    def add(
        self,
        method: str,
        template: str,
        handler: Callable,
        api_versions: Iterable[str] | None = None,
    ) -> None:
        """Route ``method`` (GET, PUT, ...) on ``template`` to ``handler``.

        ``api_versions``: the versions this route accepts (None: any well-formed version).
        """
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template.rstrip("/")))
        self._routes.append(
            _Route(
                method.upper(),
                template,
                re.compile("^" + pattern + "/?$", re.IGNORECASE),
                handler,
                tuple(api_versions) if api_versions else None,
            )
        )

    def dispatch(self, request: Request) -> Response:
        request_id = new_request_id()
        try:
            self._authenticate(request)
            response = self._route(request)
        except ArmError as err:
            response = arm_error(err.status, err.code, err.message, err.headers)
        except HTTPException:  # the body ended early or ran past its limit: server.py answers
            raise
        except Exception:  # a bug: answer as ARM would, keep the traceback in the log only
            log.exception("ARM handler failed for %s %s", request.method, request.path)
            response = arm_error(
                500,
                "InternalServerError",
                "The local cloud hit an internal error; see localcloud.log in its state directory.",
            )
        response.headers.setdefault("x-ms-request-id", request_id)
        response.headers.setdefault("x-ms-correlation-request-id", request_id)
        if "x-ms-client-request-id" in request.headers:
            response.headers.setdefault(
                "x-ms-client-request-id", request.headers["x-ms-client-request-id"]
            )
        return response

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization")
        challenge = {
            "WWW-Authenticate": f'Bearer authorization_uri="{self.cloud.aad_url}", '
            f'error="invalid_token"'
        }
        if not header:
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                challenge,
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ArmError(
                401,
                "AuthenticationFailedInvalidHeader",
                "Authentication failed. The 'Authorization' header is provided in an "
                "invalid format; expected 'Bearer <token>'.",
                challenge,
            )
        try:
            request.environ["localcloud.claims"] = verify_token(
                token.strip(),
                self.cloud.credentials.token_signing_key,
                audience=self.cloud.resource_id,
                issuer=self.cloud.token_issuer,
            )
        except TokenError as err:
            raise ArmError(401, err.code, err.message, challenge) from None

    def _route(self, request: Request) -> Response:
        path = request.path
        matches = [(route, m) for route in self._routes if (m := route.regex.match(path))]
        method = request.method
        if method == "HEAD" and not any(route.method == "HEAD" for route, _ in matches):
            method = (
                "GET"  # HEAD without its own route is answered as GET (werkzeug drops the body)
            )
        for route, match in matches:
            if route.method == method:
                params = match.groupdict()
                self._check_subscription(params)
                self._check_api_version(request, route)
                return route.handler(request, **params)
        if matches:
            allowed = ", ".join(sorted({route.method for route, _ in matches}))
            raise ArmError(
                405,
                "MethodNotAllowed",
                f"The HTTP method '{request.method}' is not supported for '{path}'. "
                f"Supported: {allowed}.",
            )
        self._check_known_subscription(path)
        raise ArmError(
            404,
            "InvalidResourceType" if "/providers/" in path.lower() else "NotFound",
            f"The local cloud does not serve '{path}' (method {request.method}).",
        )

    def _check_subscription(self, params: dict) -> None:
        sub = params.get("subscriptionId")
        if sub is not None and sub.lower() != self.cloud.credentials.subscription_id.lower():
            raise ArmError(
                404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found."
            )

    def _check_known_subscription(self, path: str) -> None:
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0].lower() == "subscriptions":
            self._check_subscription({"subscriptionId": parts[1]})

    @staticmethod
    def _check_api_version(request: Request, route: _Route) -> None:
        version = request.args.get("api-version")
        if not version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if route.api_versions is not None:
            if version not in route.api_versions:
                raise ArmError(
                    400,
                    "InvalidApiVersionParameter",
                    f"The api-version '{version}' is invalid. The supported versions are "
                    f"'{','.join(route.api_versions)}'.",
                )
        elif not _API_VERSION.match(version):
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid: expected YYYY-MM-DD[-preview].",
            )
