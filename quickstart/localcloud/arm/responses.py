"""ARM's answers: the error every ARM surface raises, its JSON bodies, and the request body.

Kept apart from the router so a surface can shape its answers without importing the routing.
"""

from __future__ import annotations

import json
import time

from werkzeug.wrappers import Request, Response


class ArmError(Exception):
    """Raise from an ARM handler to answer ``status`` with ARM's error JSON."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def arm_json(status: int, body=None, headers: dict | None = None) -> Response:
    """A JSON response as ARM sends it (an empty body when ``body`` is None)."""
    data = b"" if body is None else json.dumps(body).encode("utf-8")
    response = Response(data, status=status, headers=headers or {})
    if body is not None:
        response.headers["Content-Type"] = "application/json; charset=utf-8"
    else:
        response.headers.remove("Content-Type")
    return response


def arm_error(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    """ARM's error body: ``{"error": {"code": ..., "message": ...}}``."""
    return arm_json(status, {"error": {"code": code, "message": message}}, headers)


def json_body(request: Request, required: bool = True) -> dict:
    """The request's JSON object body, or ArmError 400 saying what is wrong with it."""
    data = request.get_data(cache=True)
    if not data.strip():
        if required:
            raise ArmError(
                400,
                "InvalidRequestContent",
                "The request content was empty; send a JSON object body.",
            )
        return {}
    try:
        body = json.loads(data)
    except ValueError as err:
        raise ArmError(
            400,
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: {err}.",
        ) from None
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
    return body


def utc_now_iso() -> str:
    """Current UTC time the way ARM and Batch AI write it (ISO 8601, 7-digit fraction, Z)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e7):07d}Z"
