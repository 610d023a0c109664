"""ARM's answers: the error every ARM surface raises, its JSON bodies, and the request body.

Kept apart from the router so a surface can shape its answers without importing the routing.
"""

from __future__ import annotations

import json
import time

from werkzeug.wrappers import Request, Response

from ..limits import MAX_TAG_NAME, MAX_TAG_VALUE, MAX_TAGS


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


def still_running(base_url: str, request: Request) -> Response:
    """An async operation not yet done: 202 pointing back at itself, as ARM answers its polls
    (msrestazure's poller keeps following ``Location`` until a 200)."""
    location = base_url + request.full_path.rstrip("?")
    return arm_json(202, None, {"Location": location, "Retry-After": "0"})


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
    except RecursionError:
        raise ArmError(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: it is nested too "
            "deeply.",
        ) from None
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


def check_tags(tags) -> dict:
    """ARM's rules for a resource's ``tags``: an object of at most 50 string values, names up to
    512 characters and values up to 256 (characters, as ARM counts them)."""
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise ArmError(400, "InvalidRequestContent", "'tags' must be an object of string values.")
    if len(tags) > MAX_TAGS:
        raise ArmError(
            400,
            "InvalidTagCount",
            f"The resource has {len(tags)} tags; at most {MAX_TAGS} are allowed.",
        )
    for name, value in tags.items():
        if not name or len(name) > MAX_TAG_NAME:
            raise ArmError(
                400,
                "InvalidTagNameLength",
                f"The tag name '{name[:40]}' must be 1 to {MAX_TAG_NAME} characters long.",
            )
        if len(value) > MAX_TAG_VALUE:
            raise ArmError(
                400,
                "InvalidTagValueLength",
                f"The value of tag '{name[:40]}' is {len(value)} characters; at most "
                f"{MAX_TAG_VALUE} are allowed.",
            )
    return tags
