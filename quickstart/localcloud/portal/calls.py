"""The API call log: the last few thousand requests the local cloud answered, in memory.

What a user needs when their own SDK script misbehaves (as LocalStack's "Stack Insights"): who
called, which operation, how it was answered and how long it took. A ring buffer, so recording
costs one append and memory stays bounded; nothing here outlives the process. Paths go through
the server's redaction (SAS signatures) before they are kept; headers and bodies are never kept.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections import deque
from typing import NamedTuple

from ..server import redact

CAPACITY = 5000

_PRODUCT = re.compile(r"(azure-[\w.-]+/[\w.+-]+|Azure-Storage/[\w.+-]+|python-requests/[\w.]+)")
_SUBSCRIPTION = re.compile(r"(?i)^/subscriptions/[^/]+")


class ApiCall(NamedTuple):
    """One answered call (a tuple: made on every request, so it must cost next to nothing)."""

    time: float
    caller: str
    user_agent: str
    method: str
    path: str
    status: int
    seconds: float
    request_id: str

    @property
    def operation(self) -> str:
        """Method and path, the subscription shortened (it is the same on every ARM call)."""
        return f"{self.method} {_SUBSCRIPTION.sub('/subscriptions/…', self.path)}"

    @property
    def milliseconds(self) -> str:
        return f"{self.seconds * 1000:.1f}"

    @property
    def clock(self) -> str:
        return (
            time.strftime("%H:%M:%S", time.localtime(self.time))
            + f".{int(self.time % 1 * 1000):03d}"
        )


def caller_of(user_agent: str, address: str) -> str:
    """The SDK that called (its product token), else the agent's first word, and the client's
    port (one Python process keeps its connections, so the port tells scripts apart)."""
    name = _product(user_agent)
    return f"{name} :{address}" if address else name


@functools.lru_cache(maxsize=256)
def _product(user_agent: str) -> str:
    """The caller's name in ``user_agent``; remembered, as each client sends the same agent on
    every call and the search costs as much as the rest of recording a call."""
    found = _PRODUCT.findall(user_agent)
    return found[-1] if found else (user_agent.split(" ", 1)[0] or "unknown client")


_redacted_agent = functools.lru_cache(maxsize=256)(redact)


class ApiCallLog:
    def __init__(self, capacity: int = CAPACITY):
        self._calls: deque[ApiCall] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def observe(self, request, response, seconds: float) -> None:
        """A request observer (see server.py): keep one redacted line for the request."""
        environ = request.environ
        agent = environ.get("HTTP_USER_AGENT", "")
        # the target as the client sent it (served requests carry it); else werkzeug's
        target = environ.get("RAW_URI") or request.full_path.rstrip("?")
        call = ApiCall(
            time.time(),
            caller_of(agent, str(environ.get("REMOTE_PORT", ""))),
            _redacted_agent(agent),
            request.method,
            redact(target),
            response.status_code,
            seconds,
            response.headers.get("x-ms-request-id", ""),
        )
        with self._lock:
            self._calls.append(call)

    def add(self, call: ApiCall) -> None:
        with self._lock:
            self._calls.append(call)

    def select(self, text: str = "", status: str = "", limit: int = 500) -> tuple[list, int]:
        """(newest first, at most ``limit``) calls whose caller or operation contains ``text``
        (case-insensitive) and whose status starts with ``status`` ("4", "404", ...); and how
        many matched in all."""
        with self._lock:
            calls = list(self._calls)
        text = text.lower()
        matched = [
            c
            for c in reversed(calls)
            if (not text or text in c.operation.lower() or text in c.caller.lower())
            and (not status or str(c.status).startswith(status))
        ]
        return matched[:limit], len(matched)
