"""The local cloud's HTTPS server: one werkzeug WSGI app on one 127.0.0.1 port.

Paths served::

    GET  /_localcloud/health                      200 {"status": "ok", ...} once serving (no auth)
    POST /adfs/oauth2/token                       AAD client-credentials grant (identity/)
    *    /subscriptions/...                       ARM, case-insensitive, bearer token checked (arm/)
    *    /<storage_account>/<share>/...           Azure Files, SharedKey or SAS checked (files/)
    *    /blob/<storage_account>/<container>/...  Azure Blob, SharedKey or SAS checked (blob/)
    *    /portal/...                              the web portal, login link + session (portal/)

Extension API (how a REST surface such as ``quickstart/localcloud/batchai/`` plugs in)
====================================================================================

A surface is a module or package under ``quickstart.localcloud`` listed in ``SURFACE_MODULES``
(a missing optional module is skipped). It defines ``install(cloud)``, called once per start
with the running ``CloudContext`` before the server accepts requests. Through ``cloud`` it gets:

``cloud.arm.add(method, template, handler, api_versions=("2018-05-01",))``
    Route an ARM request. ``template`` names parameters in braces and is matched
    case-insensitively, e.g. ``/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/
    providers/Microsoft.BatchAI/workspaces/{workspaceName}``. The handler is called as
    ``handler(request, **params)`` with a werkzeug ``Request`` and returns a werkzeug
    ``Response``. Before it runs the router has already checked the bearer token (401 with ARM
    error JSON), that ``{subscriptionId}`` is this cloud's (404 SubscriptionNotFound) and that
    ``api-version`` is one of ``api_versions`` (400). It echoes ``x-ms-client-request-id`` and adds
    ``x-ms-request-id``.
``quickstart.localcloud.arm``: ``ArmError(status, code, message, headers=None)`` (raise it from a
    handler to answer ARM error JSON), ``arm_json(status, body=None, headers=None)``,
    ``arm_error(...)``, ``json_body(request)`` (400 InvalidRequestContent on bad JSON),
    ``utc_now_iso()``.
``cloud.store``
    The ``store.Store``: generic resource records keyed by lower-cased ARM id
    (``put_resource(arm_id, type, name, body, extra=None)``, ``get_resource``, ``list_resources(
    type=, parent_id=, resource_group=)``, ``delete_resource``, ``delete_resource_tree``),
    long-running operations (``create_operation(kind, resource_id)``, ``finish_operation(id,
    status, body)``, ``get_operation``), settings, ``transaction()`` for atomic
    read-modify-write, and ``write_file_atomically(path, chunks)``.
``cloud.share_dir(share)`` -> Path or None; ``cloud.share_path(share, "dir/file")`` -> Path inside
    the share (ValueError for any path that would leave it).
``cloud.file_sas_url(share, "dir/file", permission="rl", expiry_minutes=60)``
    A read SAS download URL for a file, in the form Batch AI returned (``sv&sr=f&sig&se&sp``).
``cloud.base_url`` (``https://127.0.0.1:PORT``), ``cloud.credentials`` (subscription_id, tenant,
    storage_account, storage_key, ...), ``cloud.state_dir``, ``cloud.connection``.
``cloud.options``
    The option bag given to ``LocalCloud(state_dir, port, **options)``; unknown keys are kept, so
    a surface may read its own (``cluster_allocation_delay`` defaults to 1.0 seconds here).
``cloud.request_observers``
    A list of ``fn(request, response, seconds)`` called after every request except the
    portal's own (the portal's API call log); ``cloud.portal_handler`` answers ``/portal``.
Hooks: ``cloud.on_start(fn)`` (fn() runs after install, before serving: recover jobs; an
    exception aborts the start, after which the stop hooks run),
    ``cloud.on_stop(fn)`` (fn() once per start, on stop or on a failed start; jobs must be left
    running; the store closes after the stop hooks return),
    ``cloud.on_resource_group_delete(fn)`` (fn(subscription_id, resource_group_name) runs before
    the group's records go: stop its jobs, then the store drops every record under the group).
Logging: ``logging.getLogger("quickstart.localcloud")`` goes to ``state_dir/localcloud.log``,
    not to the terminal of whoever embeds the cloud; every request goes to ``state_dir/access.log``
    (access_log.py). Both rotate at ``log_max_bytes``; every line passes ``redact`` (SAS
    signatures, client secrets, passwords, tokens, account keys), which other code may reuse.
Limits: before a surface sees a request, limits.py's checks run on its headers and declared body
    length, and a body of unknown length is cut off at the surface's limit; a surface needs no
    checks of its own for sizes.

Everything else (TLS, threads, limits, logging without secrets) is this module's job.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import importlib
import ipaddress
import json
import logging
import logging.handlers
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from email.errors import MissingHeaderBodySeparatorDefect
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import LimitedStream

from . import connection as connection_file
from . import limits
from .access_log import AccessLog
from .arm import ArmRouter, ResourceGroups, arm_error
from .certs import ensure_certificates
from .fault_routes import FaultGate
from .faults import ENVIRONMENT_VARIABLE as FAULTS_VARIABLE
from .faults import FaultRuleError, Faults, load_rules_file
from .files.names import resolve_in_share
from .files.responses import StorageError, error_response, http_date, xml_text
from .files.sas import make_file_sas
from .identity.credentials import ensure_credentials
from .identity.token_endpoint import TokenEndpoint, aad_error
from .request_ids import request_id
from .store import Store

log = logging.getLogger("quickstart.localcloud")

connection_dropped_errors = (ConnectionError, socket.timeout, ssl.SSLError)
_COALESCE_BYTES = 64 * 1024  # a body piece up to this size goes out in one send with the headers

SURFACE_MODULES = (
    "quickstart.localcloud.files",
    "quickstart.localcloud.blob",
    "quickstart.localcloud.batchai",
    "quickstart.localcloud.portal",
)
OPTIONAL_SURFACES = {"quickstart.localcloud.batchai", "quickstart.localcloud.portal"}
HOST = "127.0.0.1"

DEFAULT_OPTIONS = {
    "cluster_allocation_delay": 1.0,  # seconds a Batch AI cluster stays "resizing"
    "token_lifetime": 3600,  # seconds an AAD token is valid (adal wants > 300)
    "access_log": False,  # a readable line per API call on stderr (access.log gets them all)
    "verbose": False,  # ... every request's full line on stderr instead
    "log_max_bytes": 10 * 1024 * 1024,  # localcloud.log and access.log rotate at this size
    "sas_version": "2018-03-28",  # sv= of the download URLs the cloud makes
}


class LocalCloudError(Exception):
    """The local cloud cannot start or serve as asked (the message says why and what to do)."""


def check_host(host: str) -> str:
    """The address to bind: one IP address of this machine (not a wildcard, which no
    certificate or client URL can name)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise LocalCloudError(
            f"--host {host!r} is not an IP address; give the address of this machine that the "
            "other hosts reach it at"
        ) from None
    if address.is_unspecified:
        raise LocalCloudError(
            f"--host {host} would listen on every address; give the one address of this "
            "machine that the other hosts reach it at"
        )
    return str(address)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


_SECRET_NAMES = (
    "sig",
    "client_secret",
    "client_assertion",
    "password",
    "access_token",
    "refresh_token",
    "accountkey",
    "sharedaccesssignature",
)
_SECRET_PARAMETERS = re.compile(rf"(?i)\b({'|'.join(_SECRET_NAMES)})=[^&;\s\"']*")
_SECRET_NEEDLES = tuple(f"{name}=" for name in _SECRET_NAMES)


def _names_a_secret(text: str) -> bool:
    """Whether ``text`` holds a secret parameter's name (a plain loop: a case-insensitive regex
    or a generator costs several times more, on every line logged)."""
    lowered = text.lower()
    for needle in _SECRET_NEEDLES:
        if needle in lowered:
            return True
    return False


def redact(text: str) -> str:
    """Hide secrets that travel in query strings or forms (SAS signatures, client secrets,
    passwords, tokens, account keys) in anything that may be logged. Every log of the local
    cloud goes through this one function."""
    if "=" not in text:  # most lines hold none: skip the regex (it costs more than a request)
        return text
    if "%" in text:  # a parameter's name may come percent-encoded (client%5Fsecret=...)
        decoded = unquote(text)
        if decoded != text and _names_a_secret(decoded):
            text = decoded
    if not _names_a_secret(text):
        return text
    return _SECRET_PARAMETERS.sub(lambda m: f"{m.group(1)}=REDACTED", text)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


LOG_FILE = "localcloud.log"


class CloudContext:
    """What REST surfaces see of the running local cloud (see the module docstring)."""

    def __init__(
        self, state_dir: Path, store: Store, credentials, tls, options: dict, base_url: str
    ):
        self.state_dir = state_dir
        self.store = store
        self.credentials = credentials
        self.tls = tls
        self.options = options
        self.base_url = base_url
        self.resource_id = base_url + "/"
        self.aad_url = base_url + "/adfs"
        self.token_issuer = f"https://sts.localcloud/{credentials.tenant}/"
        self.arm = ArmRouter(self)
        self.start_hooks: list[Callable[[], None]] = []
        self.stop_hooks: list[Callable[[], None]] = []
        self.resource_group_delete_hooks: list[Callable[[str, str], None]] = []
        self.storage_handler: Callable[[Request], Response] | None = None
        self.blob_handler: Callable[[Request], Response] | None = None  # /blob/<account> (blob/)
        self.portal_handler: Callable[[Request], Response] | None = None  # /portal (portal/)
        # fn(request, response, seconds) after each API request (the portal's call log)
        self.request_observers: list[Callable[[Request, Response, float], None]] = []
        self.faults = Faults()  # fault rules (faults.py); LocalCloud sets the configured ones
        self.connection = connection_file.build_connection(
            base_url=base_url,
            tenant=credentials.tenant,
            client_id=credentials.client_id,
            client_secret=credentials.client_secret,
            subscription_id=credentials.subscription_id,
            storage_account=credentials.storage_account,
            storage_key=credentials.storage_key,
            ca_cert=tls.ca_cert,
        )

    # hooks
    def on_start(self, fn: Callable[[], None]) -> None:
        self.start_hooks.append(fn)

    def on_stop(self, fn: Callable[[], None]) -> None:
        self.stop_hooks.append(fn)

    def on_resource_group_delete(self, fn: Callable[[str, str], None]) -> None:
        self.resource_group_delete_hooks.append(fn)

    # shares
    def share_dir(self, share: str) -> Path | None:
        return self.store.share_dir(share)

    def share_path(self, share: str, path: str) -> Path:
        """The on-disk path of ``path`` inside ``share``; ValueError if it would leave the share."""
        root = self.store.share_dir(share)
        if root is None:
            raise ValueError(f"there is no share named {share!r}")
        return resolve_in_share(root, path)

    def file_sas_url(
        self,
        share: str,
        path: str,
        permission: str = "rl",
        expiry_minutes: float = 60,
        start: float | None = None,
    ) -> str:
        """A SAS download URL for file ``path`` in ``share``, valid for ``expiry_minutes``."""
        token = make_file_sas(
            self.credentials.storage_account,
            self.credentials.storage_key,
            share,
            path,
            permission=permission,
            expiry=time.time() + expiry_minutes * 60,
            start=start,
            version=self.options["sas_version"],
        )
        quoted = quote(f"{share}/{path.strip('/')}", safe="/()$=',~")
        return f"{self.base_url}/{self.credentials.storage_account}/{quoted}?{token}"


def _fault_rules(options: dict) -> Faults:
    """The fault rules of the ``faults`` option's file, else of $LOCALCLOUD_FAULTS's, else none."""
    path = options.get("faults") or os.environ.get(FAULTS_VARIABLE)
    try:
        return Faults(load_rules_file(path) if path else [])
    except FaultRuleError as err:
        raise LocalCloudError(str(err)) from None


class LocalCloudApp:
    """The WSGI application: dispatches by the first path segment."""

    def __init__(self, cloud: CloudContext):
        self.cloud = cloud
        self.tokens = TokenEndpoint(cloud)
        self.account = cloud.credentials.storage_account.lower()
        self.fault_gate = FaultGate(cloud, cloud.faults)

    def __call__(self, environ, start_response):
        request = Request(environ)
        started = time.perf_counter()
        surface = self.surface_of(request)
        refusal = limits.check_request(environ, surface)
        if refusal is not None:  # the body is never read into memory: drained in 1 MiB
            # pieces (so the client, still sending, can read the answer) or, past 64 MiB, cut off
            log.info("refused %s %s: %s", request.method, redact(request.path), refusal.code)
            response = self.refuse(request, surface, refusal)
            self.observe(request, response, started)
            return response(environ, start_response)
        if not environ.get("CONTENT_LENGTH"):  # a chunked body: cut off at the limit as read
            environ["wsgi.input"] = limits.CappedStream(
                environ["wsgi.input"], limits.body_limit(surface, environ)
            )
        try:
            response = self.dispatch(request, surface)
        except ClientDisconnected:
            environ["localcloud.close"] = True
            log.info("client hung up mid-body: %s %s", request.method, redact(request.path))
            response = self.refuse(
                request,
                surface,
                limits.Refusal(400, "IncompleteBody", "The request body ended early."),
            )
        except RequestEntityTooLarge:
            environ["localcloud.close"] = True
            limit = limits.body_limit(surface, environ)
            response = self.refuse(
                request,
                surface,
                limits.Refusal(
                    413,
                    "RequestBodyTooLarge" if surface != "token" else "invalid_request",
                    f"The request body is longer than the {limit} bytes accepted here.",
                ),
            )
        except HTTPException as err:  # werkzeug's own refusals (a malformed form, ...)
            response = self.refuse(
                request,
                surface,
                limits.Refusal(err.code or 400, "InvalidInput", err.description or err.name),
            )
        except Exception:
            log.exception("request failed: %s %s", request.method, redact(request.full_path))
            response = arm_error(
                500, "InternalServerError", "The local cloud hit an internal error."
            )
        self.observe(request, response, started)
        return response(environ, start_response)

    def observe(self, request: Request, response: Response, started: float) -> None:
        """Tell the request observers (the portal's call log) about every API call, refused or
        answered; the portal's own pages are not API calls."""
        if not request.path.startswith("/portal"):
            for observe in self.cloud.request_observers:
                observe(request, response, time.perf_counter() - started)

    def surface_of(self, request: Request) -> str:
        """Which service a request is for: token, arm, files, blob, portal or other (limits
        differ)."""
        segments = request.path.split("/")
        first = segments[1].lower() if len(segments) > 1 else ""
        if first in ("subscriptions", "providers"):
            return "arm"
        if first == self.account and self.cloud.storage_handler is not None:
            return "files"
        if (
            first == connection_file.BLOB_PATH_PREFIX
            and len(segments) > 2
            and segments[2].lower() == self.account
            and self.cloud.blob_handler is not None
        ):
            return "blob"
        if first == "portal" and self.cloud.portal_handler is not None:
            return "portal"
        if (
            len(segments) == 4
            and segments[2] == "oauth2"
            and segments[3] == "token"
            and self.tokens.tenant_matches(segments[1])
        ):
            return "token"
        return "other"

    def refuse(self, request: Request, surface: str, refusal: limits.Refusal) -> Response:
        """The service's own error answer for a request refused before its handler ran."""
        if surface == "token":
            return aad_error(
                refusal.status,
                "invalid_request",
                "AADSTS90023",
                refusal.message,
                request,
            )
        if surface in limits.STORAGE_SURFACES:
            err = StorageError(refusal.status, refusal.code, refusal.message)
            return error_response(request, err, request_id())
        return arm_error(refusal.status, refusal.code, refusal.message)

    def dispatch(self, request: Request, surface: str) -> Response:
        faulted = self.fault_gate.check(request)
        if faulted is not None:
            return faulted
        if surface == "arm":
            return self.cloud.arm.dispatch(request)
        if surface == "files":
            return self.cloud.storage_handler(request)
        if surface == "blob":
            return self.cloud.blob_handler(request)
        if surface == "token":
            return self.tokens.token(request)
        if surface == "portal":
            return self.cloud.portal_handler(request)
        if request.path == connection_file.HEALTH_PATH:
            return self.health(request)
        return arm_error(
            404,
            "NotFound",
            f"The local cloud serves no '{request.path}'. Known: "
            f"/_localcloud/health, /adfs/oauth2/token, /subscriptions/..., /providers/..., "
            f"/{self.cloud.credentials.storage_account}/<share>/..., "
            f"/{connection_file.BLOB_PATH_PREFIX}/{self.cloud.credentials.storage_account}/"
            "<container>/...",
        )

    def health(self, request: Request) -> Response:
        body = {
            "status": "ok",
            "service": "local cloud",
            "base_url": self.cloud.base_url,
            "storage_account": self.cloud.credentials.storage_account,
            "subscription_id": self.cloud.credentials.subscription_id,
            "pid": os.getpid(),
        }
        return Response(json.dumps(body), status=200, content_type="application/json")


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's request handler with three changes the local cloud needs.

    * The TLS handshake runs in the connection's own thread (not in the accept loop), so a
      slow or plain-HTTP client cannot stall other clients.
    * HTTP/1.1 keep-alive: werkzeug's development handler closes every connection, which costs
      a TLS handshake per request (about 2 ms each); the SDKs reuse connections, so this
      handler reads exactly the request body it was sent and keeps the connection open.
    * Every answer is recorded by the access log (access_log.py), with secrets redacted.
    """

    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self):
        self.request.settimeout(30)
        self.request.do_handshake()
        self.request.settimeout(self.server.idle_timeout)
        super().setup()

    def make_environ(self):
        environ = super().make_environ()
        # WSGI upper-cases header names; Azure keeps the case of x-ms-meta-<name>, so keep it here.
        environ["localcloud.raw_headers"] = self.headers.items()
        return environ

    def run_wsgi(self) -> None:
        started = time.monotonic()
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.environ = self.make_environ()
        body = None
        if "wsgi.input_terminated" in environ:  # chunked request body: length unknown
            self.close_connection = True
        else:
            try:
                length = max(0, int(environ.get("CONTENT_LENGTH") or 0))
            except ValueError:
                length, self.close_connection = 0, True
            body = LimitedStream(self.rfile, length)
            environ["wsgi.input"] = body
            environ["wsgi.input_terminated"] = True
        state = {"status": None, "headers": None, "sent": False, "chunked": False, "bytes": 0}
        is_head = environ["REQUEST_METHOD"] == "HEAD"

        def start_response(status, headers, exc_info=None):
            if exc_info and state["sent"]:
                raise exc_info[1].with_traceback(exc_info[2])
            state["status"], state["headers"] = status, headers
            return write

        def send_headers():
            code_str, _, reason = state["status"].partition(" ")
            code = int(code_str)
            self.send_response_only(code, reason)
            self.send_header("Server", self.version_string())
            names = set()
            for key, value in state["headers"]:
                self.send_header(key, value)
                names.add(key.lower())
            if "date" not in names:  # the storage services set their own: one Date, as Azure
                self.send_header("Date", self.date_time_string())
            if (
                "content-length" not in names
                and not is_head
                and code >= 200
                and code not in (204, 304)
            ):
                self.send_header("Transfer-Encoding", "chunked")
                state["chunked"] = True
            if self.close_connection:
                self.send_header("Connection", "close")
            # Held back to go out with the first piece of the body: one TLS record and one
            # send instead of two for most answers (each send is a sizeable part of what a
            # small answer costs the server).
            self._headers_buffer.append(b"\r\n")
            state["head"] = b"".join(self._headers_buffer)
            self._headers_buffer = []
            state["sent"] = True

        def send(data) -> None:
            head = state.pop("head", None)
            if head is not None and len(data) <= _COALESCE_BYTES:
                self.wfile.write(head + data)
                return
            if head is not None:
                self.wfile.write(head)
            if data:
                self.wfile.write(data)

        def write(data: bytes) -> None:
            if not state["sent"]:
                send_headers()
            if data and not is_head:
                state["bytes"] += len(data)
                if state["chunked"]:
                    data = b"%x\r\n" % len(data) + data + b"\r\n"
                send(data)

        self.server.request_started()
        app_iter = None
        try:
            app_iter = self.server.app(environ, start_response)
            for data in app_iter:
                write(data)
            if not state["sent"]:
                send_headers()
            send(b"0\r\n\r\n" if state["chunked"] else b"")
        except connection_dropped_errors:
            self.close_connection = True
        except Exception:
            log.exception("local cloud failed to send a response")
            self.close_connection = True
        finally:
            if hasattr(app_iter, "close"):
                with contextlib.suppress(Exception):
                    app_iter.close()
            self.server.request_finished()
            self._record(environ, state, time.monotonic() - started)
        if environ.get("localcloud.close"):
            # a refused or broken body is not read on; what the client is still sending is
            # dropped first, or closing on it resets the connection and loses the answer
            self.close_connection = True
            self._linger(seconds=2.0, most=64 << 20)
        elif body is not None and not self.close_connection and not _drain(body):
            self.close_connection = True

    def parse_request(self) -> bool:
        """The request line and headers; a header line that is not ``name: value`` (a space in
        the name, say) is refused. http.client would end the headers there and take the rest,
        Content-Length included, for the body, so the body would be read as the next request."""
        if not super().parse_request():
            return False
        if any(isinstance(d, MissingHeaderBodySeparatorDefect) for d in self.headers.defects):
            self.send_error(400, "A request header line is not 'name: value'.")
            return False
        return True

    def send_error(self, code, message=None, explain=None):
        """Requests refused by the HTTP parser itself (a bad request line, more than 100 headers,
        a line over 64 KiB) get the service's error body too: XML for Azure Files and Blob, else
        JSON."""
        self.close_connection = True
        text = message or http.client.responses.get(code, "Bad request")
        path = (getattr(self, "path", "") or "").lower()
        account = self.server.app.account
        storage = (f"/{account}/", f"/{connection_file.BLOB_PATH_PREFIX}/{account}")
        if path.startswith(storage):  # Azure Storage answers 400 for both
            code_name = "InvalidHeaderValue" if code == 431 else "InvalidUri"
            code = 400
            body = (
                '<?xml version="1.0" encoding="utf-8"?><Error><Code>'
                f"{code_name}</Code><Message>{xml_text(text)}</Message></Error>"
            ).encode()
            content_type = "application/xml"
            extra = {"x-ms-error-code": code_name}
        else:
            error = {"code": "RequestHeaderFieldsTooLarge" if code == 431 else "BadRequest"}
            body = json.dumps({"error": {**error, "message": text}}).encode()
            content_type = "application/json; charset=utf-8"
            extra = {}
        self.send_response(code, http.client.responses.get(code, ""))
        self.send_header("Content-Type", content_type)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)
        self._linger()

    def _linger(self, seconds: float = 1.0, most: int = 1 << 20) -> None:
        """Read and drop what the client is still sending before the connection closes: closing
        with unread data makes the kernel reset the connection, and the client would lose the
        error answer it was just sent."""
        with contextlib.suppress(OSError, ValueError):
            self.connection.settimeout(seconds)
            dropped = 0
            while dropped < most and (chunk := self.rfile.read1(1 << 16)):
                dropped += len(chunk)

    def _record(self, environ, state, seconds: float) -> None:
        access = self.server.access
        if access is None or state["status"] is None:
            return
        try:
            access.record(
                environ["REQUEST_METHOD"],
                environ.get("RAW_URI") or environ.get("PATH_INFO", ""),
                int(state["status"].split(" ", 1)[0]),
                state["bytes"],
                seconds,
                self.client_address[0] if self.client_address else "-",
                self.headers,
            )
        except Exception:  # the log must never fail a request
            log.exception("the access log failed")

    def date_time_string(self, timestamp=None):
        """The Date header of answers the storage services do not date themselves, formatted
        once per second (http.server formats it anew for every answer)."""
        return http_date(time.time() if timestamp is None else timestamp)

    def log_request(self, code="-", size="-"):
        """Answers are recorded by the access log (_record), with their timing."""

    def log_error(self, format, *args):
        log.debug("local cloud connection: " + format, *args)

    def log_message(self, format, *args):
        log.debug("local cloud: " + format, *args)


def _drain(body: LimitedStream, limit: int = 64 << 20) -> bool:
    """Read what the app left of a request body so the connection can carry the next request.
    False (close instead) when more than ``limit`` bytes are left."""
    if body.limit - body.tell() > limit:
        return False
    try:
        while body.read(1 << 20):
            pass
    except OSError:
        return False
    return True


class _Server(ThreadedWSGIServer):
    """werkzeug's threaded server, TLS wrapped per connection (so a slow or plain-HTTP client
    cannot stall the accept loop) and tracking open connections so stop() can close them."""

    idle_timeout = 120  # seconds an idle keep-alive connection stays open

    def __init__(self, sock: socket.socket, app, ssl_context: ssl.SSLContext):
        self.access: AccessLog | None = None  # set once serving (the startup probe is not logged)
        self._open = set()
        self._open_lock = threading.Lock()
        self._busy = 0
        super().__init__(
            sock.getsockname()[0],
            sock.getsockname()[1],
            app,
            handler=_RequestHandler,
            fd=sock.fileno(),
        )
        self.ssl_context = ssl_context

    def get_request(self):
        conn, addr = self.socket.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = self.ssl_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._open_lock:
            self._open.add(tls)
        return tls, addr

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        log.debug(
            "local cloud connection from %s ended with an error", client_address, exc_info=True
        )

    def close_open_connections(self) -> None:
        with self._open_lock:
            connections = list(self._open)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def request_started(self) -> None:
        with self._open_lock:
            self._busy += 1

    def request_finished(self) -> None:
        with self._open_lock:
            self._busy -= 1

    def busy(self) -> int:
        """Requests being answered right now (idle keep-alive connections do not count)."""
        with self._open_lock:
            return self._busy


class LocalCloud:
    """An embedded local cloud: ``LocalCloud(state_dir, port=0, **options).start()``.

    ``port=0`` reuses the port this state directory served on last time when it is free (so
    connection.json stays the same across restarts), else takes any free port. ``stop()`` stops
    serving; job processes started by surfaces are not killed (jobs outlive servers).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike = connection_file.DEFAULT_STATE_DIR,
        port: int = 0,
        **options,
    ):
        self.state_dir = Path(state_dir).resolve()
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise LocalCloudError(f"port must be 0 (any free port) or 1-65535, not {port!r}")
        self.port = port
        # 127.0.0.1 unless another address is asked for (--host: explicit opt-in only).
        self.host = check_host(options.pop("host", None) or HOST)
        for key in ("cluster_allocation_delay", "token_lifetime"):
            value = options.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
            ):
                raise LocalCloudError(
                    f"local cloud option {key} must be a number of seconds >= 0, not {value!r}"
                )
        self.options = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
        self.context: CloudContext | None = None
        self._running: CloudContext | None = None  # the context whose stop hooks are due
        self._log_handler: logging.Handler | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock_file = None

    # -- public API

    @property
    def connection(self) -> dict:
        if self.context is None:
            raise LocalCloudError("the local cloud is not started")
        return self.context.connection

    @property
    def base_url(self) -> str:
        return self.connection["resource_manager_url"].rstrip("/")

    def start(self, timeout: float = 10.0) -> LocalCloud:
        if self._server is not None:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # shares, job logs and secrets: the owner's alone
            os.chmod(self.state_dir, 0o700)
        self._lock_state_dir()
        try:
            self._start(timeout)
        except BaseException:
            self.stop()  # stop hooks too: a surface may have started threads before the failure
            raise
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); stop hooks run once per start."""
        running, self._running = self._running, None
        if running is not None:
            for hook in running.stop_hooks:
                try:
                    hook()
                except Exception:
                    log.exception("a local cloud stop hook failed")
        self._teardown()

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals

    def _lock_state_dir(self) -> None:
        lock = open(self.state_dir / "localcloud.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            serving = None
            with contextlib.suppress(Exception):
                serving = connection_file.read_connection(self.state_dir)
            where = f" at {serving['resource_manager_url']}" if serving else ""
            raise LocalCloudError(
                f"a local cloud is already serving state directory {self.state_dir}{where}; "
                "use that one, stop it first, or choose another state directory"
            ) from None
        self._lock_file = lock

    def _bind(self) -> socket.socket:
        candidates = [self.port]
        if self.port == 0:
            previous = None
            with contextlib.suppress(Exception):
                previous = connection_file.read_connection(self.state_dir)
            if previous:
                old_port = urlsplit(previous["resource_manager_url"]).port
                if old_port:
                    candidates = [old_port, 0]
        for port in candidates:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, port))
                sock.listen(128)
                return sock
            except OSError as err:
                sock.close()
                if port == self.port and self.port != 0:
                    reason = (
                        "is in use"
                        if err.errno == errno.EADDRINUSE
                        else f"cannot be used ({err.strerror})"
                    )
                    raise LocalCloudError(
                        f"port {port} on {self.host} {reason}; choose another with --port, or 0 "
                        "for any free port"
                    ) from None
        raise LocalCloudError(f"no free port on {self.host}")

    def _attach_log(self) -> None:
        """Send the local cloud's own log (errors with tracebacks, SharedKey strings-to-sign on
        mismatch) to state_dir/localcloud.log instead of the terminal of whoever embeds it."""
        handler = logging.handlers.RotatingFileHandler(
            self.state_dir / LOG_FILE,
            maxBytes=int(self.options["log_max_bytes"]),
            backupCount=3,
            encoding="utf-8",
        )
        handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        log.addHandler(handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        log.propagate = False
        self._log_handler = handler

    def _start(self, timeout: float) -> None:
        self._attach_log()
        sock = self._bind()
        try:
            port = sock.getsockname()[1]
            tls = ensure_certificates(self.state_dir, None if self.host == HOST else self.host)
            store = Store(self.state_dir)
            context = CloudContext(
                self.state_dir,
                store,
                ensure_credentials(store),
                tls,
                self.options,
                f"https://{_url_host(self.host)}:{port}",
            )
            context.faults = _fault_rules(self.options)
            self.context = self._running = context
            groups = ResourceGroups(context)
            groups.install(context.arm)
            for module_name in SURFACE_MODULES:
                try:
                    module = importlib.import_module(module_name)
                except ModuleNotFoundError as err:
                    if module_name in OPTIONAL_SURFACES and err.name == module_name:
                        continue
                    raise
                module.install(context)
            context.on_start(groups.finish_deletes)  # after the surfaces have recovered
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
            ssl_context.load_cert_chain(str(tls.server_cert), str(tls.server_key))
            self._server = _Server(sock, LocalCloudApp(context), ssl_context)
        finally:
            sock.close()  # the server holds its own duplicate of the descriptor
        for hook in context.start_hooks:
            hook()
        connection_file.write_connection(self.state_dir, context.connection)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"local-cloud-{port}",
            daemon=True,
        )
        self._thread.start()
        self._wait_healthy(port, tls.ca_cert, timeout)
        console = (
            "verbose"
            if self.options["verbose"]
            else ("summary" if self.options["access_log"] else None)
        )
        self._server.access = AccessLog(
            self.state_dir,
            redact,
            console=console,
            stream=self.options.get("log_stream"),
            max_bytes=int(self.options["log_max_bytes"]),
        )

    def _wait_healthy(self, port: int, ca_cert: Path, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(ca_cert))
        deadline = time.monotonic() + timeout
        while True:
            conn = http.client.HTTPSConnection(self.host, port, timeout=2, context=context)
            try:
                conn.request("GET", connection_file.HEALTH_PATH)
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException) as err:
                last = err
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise LocalCloudError(
                    f"the local cloud did not answer its health check on port {port}: {last}"
                )
            time.sleep(0.01)

    def _teardown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:  # shutdown() waits for serve_forever, so only if it runs
                server.shutdown()
            deadline = time.monotonic() + 2.0
            while server.busy() and time.monotonic() < deadline:
                time.sleep(0.01)
            server.close_open_connections()
            server.server_close()
            if server.access is not None:
                server.access.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.context is not None:
            self.context.store.close()
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
            if not any(isinstance(h, logging.FileHandler) for h in log.handlers):
                log.propagate = True
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def serve_forever(
    state_dir: str | os.PathLike = connection_file.DEFAULT_STATE_DIR,
    port: int = 0,
    *,
    out=None,
    **options,
) -> int:
    """Serve a local cloud in the foreground until Ctrl-C or SIGTERM; returns the exit status.

    For ``python -m quickstart localcloud [--port N] [--state-dir DIR]``. Errors that the user
    can fix (port in use, state directory busy) are printed as one line, exit status 2.
    """
    from .portal.login import login_url

    out = out or sys.stdout
    options.setdefault("access_log", True)
    try:
        cloud = LocalCloud(state_dir, port, **options)
        cloud.start()
    except LocalCloudError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    previous = (
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    console = logging.StreamHandler(sys.stderr)  # problems also show in the foreground
    console.setLevel(logging.WARNING)
    console.setFormatter(_RedactingFormatter("local cloud: %(levelname)s %(message)s"))
    log.addHandler(console)
    try:
        print(f"Local cloud serving at {cloud.base_url}", file=out)
        print(f"  state directory: {cloud.state_dir}", file=out)
        print(f"  connection:      {cloud.state_dir / connection_file.CONNECTION_FILE}", file=out)
        print(f"  trust:           {cloud.connection['ca_cert']}", file=out)
        portal = login_url(cloud.state_dir, cloud.base_url)
        if portal:
            print(f"  portal:          {portal}", file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("Local cloud stopping.", file=out, flush=True)
    finally:
        cloud.stop()
        log.removeHandler(console)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt
