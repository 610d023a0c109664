"""Who may see the portal: a one-time login token, exchanged for a session cookie.

As Jupyter does it, the link the owner is shown carries a token; opening it sets a session
cookie (HttpOnly, Secure, SameSite=Strict) and drops the token from the address bar. Each token
works once: after use a new one is written to ``state_dir/portal-login-token`` (readable by the
owner only, as connection.json is), which is where the CLI reads the link it prints.
Every state-changing request must carry the session's CSRF token as well.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_FILE = "portal-login-token"
COOKIE = "localcloud_portal"
SESSION_LIFETIME = 12 * 3600  # seconds; a restart of the local cloud ends every session


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    expires: float = field(default_factory=lambda: time.time() + SESSION_LIFETIME)


class Sessions:
    """The login token and the live sessions of one running portal (in memory)."""

    def __init__(self, state_dir: Path):
        self._file = Path(state_dir) / TOKEN_FILE
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._token = ""
        self._mint()

    def _mint(self) -> None:
        self._token = secrets.token_urlsafe(32)
        fd = os.open(self._file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a file left from before keeps its mode on open: tighten it first
        with os.fdopen(fd, "w") as out:
            out.write(self._token)

    def exchange(self, token: str) -> str | None:
        """A new session id for the current login token (which is then used up), else None."""
        with self._lock:
            if not token or not hmac.compare_digest(token.encode(), self._token.encode()):
                return None
            self._mint()
            session_id = secrets.token_urlsafe(32)
            self._sessions[session_id] = Session()
            return session_id

    def find(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires < time.time():
                del self._sessions[session_id]
                return None
            return session

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(sent.encode(), session.csrf.encode())


def login_url(state_dir, base_url: str) -> str | None:
    """The portal's current one-time login link for the local cloud serving from ``state_dir``
    at ``base_url``; None when there is no token (a local cloud without the portal)."""
    try:
        token = (Path(state_dir) / TOKEN_FILE).read_text().strip()
    except OSError:
        return None
    return f"{base_url.rstrip('/')}/portal/login?token={token}" if token else None
