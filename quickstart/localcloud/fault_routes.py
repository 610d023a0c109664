"""The HTTP side of fault rules (faults.py): each request is checked against them before any
surface sees it, and ``/_localcloud/faults`` lets a test change them while the cloud runs.

A faulted request is answered in its service's own error shape, so clients take the path they
would take on Azure: ARM and Batch AI JSON errors, the storage service's XML error with
``x-ms-error-code``, AAD's OAuth error JSON; each with ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
import time

from werkzeug.wrappers import Request, Response

from .arm import arm_error, arm_json
from .faults import ADMIN_PATH, FaultRuleError, Faults, parse_rule, parse_rules, service_of
from .files.responses import StorageError, error_response
from .identity.bearer_tokens import TokenError, verify_token
from .request_ids import request_id

log = logging.getLogger("quickstart.localcloud")

ARM_CODES = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}
STORAGE_CODES = {429: "ServerBusy", 500: "InternalError", 503: "ServerBusy"}
STORAGE_MESSAGES = {
    429: "The server is busy; retry the request after the time Retry-After gives.",
    500: "The server encountered an internal error. Please retry the request.",
    503: "The server is currently unable to receive requests. Please retry your request.",
}
AAD_ERRORS = {429: "temporarily_unavailable", 500: "server_error", 503: "temporarily_unavailable"}


class FaultGate:
    """Applies a cloud's fault rules to requests and serves the admin route."""

    def __init__(self, cloud, faults: Faults):
        self.cloud = cloud
        self.faults = faults
        self.account = cloud.credentials.storage_account

    def check(self, request: Request) -> Response | None:
        """The admin route's answer, a fault's answer, or None to serve the request."""
        if request.path == ADMIN_PATH:
            return self.admin(request)
        service = service_of(request.path, self.account)
        if service is None:
            return None
        latency, rule = self.faults.for_request(service, request.method, request.path)
        if latency:
            time.sleep(latency)
        if rule is None:
            return None
        log.info(
            "fault rule answers %s (%s) %s %s", rule.status, service, request.method, request.path
        )
        return self._answer(request, service, rule.status, rule.retry_after)

    def _answer(self, request: Request, service: str, status: int, retry_after: int) -> Response:
        headers = {"Retry-After": str(retry_after)}
        message = f"A fault rule of the local cloud answered {status}; retry after {retry_after} s."
        if service in ("files", "blob"):
            error = StorageError(status, STORAGE_CODES[status], STORAGE_MESSAGES[status], headers)
            response = error_response(request, error, request_id())
            response.headers["x-ms-request-id"] = request_id()
            return response
        if service == "identity":
            body = {"error": AAD_ERRORS[status], "error_description": message}
            return Response(
                json.dumps(body), status=status, headers=headers, content_type="application/json"
            )
        return arm_error(status, ARM_CODES[status], message, headers)

    def admin(self, request: Request) -> Response:
        problem = self._authentication_problem(request)
        if problem:
            return arm_error(401, "AuthenticationFailed", problem)
        try:
            if request.method == "GET":
                pass
            elif request.method == "PUT":
                self.faults.replace(parse_rules(self._json(request)))
            elif request.method == "POST":
                self.faults.add(parse_rule(self._json(request)))
            elif request.method == "DELETE":
                self.faults.replace([])
            else:
                return arm_error(
                    405, "MethodNotAllowed", f"{ADMIN_PATH} takes GET, PUT, POST or DELETE."
                )
        except FaultRuleError as err:
            return arm_error(400, "InvalidFaultRule", str(err))
        return arm_json(200, {"rules": self.faults.describe()})

    @staticmethod
    def _json(request: Request):
        try:
            return json.loads(request.get_data() or b"null")
        except ValueError as err:
            raise FaultRuleError(f"the body is not JSON: {err}") from None

    def _authentication_problem(self, request: Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "The fault rules need 'Authorization: Bearer <token>' (the local cloud's)."
        try:
            verify_token(
                token.strip(),
                self.cloud.credentials.token_signing_key,
                audience=self.cloud.resource_id,
                issuer=self.cloud.token_issuer,
            )
        except TokenError as err:
            return err.message
        return None
