"""The portal's web app: routing, login, CSRF, security headers, and one handler per page.

Pages are rendered on the server from Jinja2 templates with autoescaping on, so every value a
user controls (names, tags, command lines, log text) is escaped; a strict Content-Security-Policy
(scripts and styles only from /portal/static) is the second wall. Actions (terminate, delete,
resize) go through the same Batch AI ARM routes the SDK calls, in-process, so they behave exactly
as the API does and show in the API call log.
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
from pathlib import Path
from urllib.parse import urlencode

import jinja2
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, RequestRedirect, Rule
from werkzeug.test import EnvironBuilder
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from ..batchai.schema import API_VERSION, CLUSTER_TYPE, EXPERIMENT_TYPE, JOB_TYPE, STDOUTERR
from ..identity.bearer_tokens import issue_token
from . import reading
from .calls import ApiCall, ApiCallLog
from .curves import chart, parse_curve
from .login import COOKIE, SESSION_LIFETIME, Sessions, csrf_ok
from .timeline import NodeTimeline

HERE = Path(__file__).parent
STATIC = HERE / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
COMPARE_LIMIT = 8  # jobs of one experiment drawn on the compare chart
CURVE_BYTES = 4 << 20  # of each log read for the learning curve


def install(cloud) -> None:
    """Serve the portal at /portal of this local cloud (see server.py's extension API)."""
    portal = Portal(cloud)
    cloud.portal_handler = portal
    cloud.request_observers.append(portal.calls.observe)
    cloud.on_start(portal.timeline.start)
    cloud.on_stop(portal.timeline.stop)
    cloud.portal = portal


class Portal:
    def __init__(self, cloud):
        self.cloud = cloud
        self.store = cloud.store
        self.sessions = Sessions(cloud.state_dir)
        self.calls = ApiCallLog()
        self.scrub = reading.Scrubber(cloud.credentials, cloud.store)
        self.timeline = NodeTimeline(cloud.store)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["size"] = human_size
        self.templates.globals["url"] = portal_url
        self.routes = Map(
            [
                Rule("/portal/", endpoint="overview"),
                Rule("/portal/login", endpoint="login"),
                Rule("/portal/logout", endpoint="logout", methods=["POST"]),
                Rule("/portal/cluster", endpoint="cluster"),
                Rule("/portal/job", endpoint="job"),
                Rule("/portal/job/log", endpoint="job_log"),
                Rule("/portal/job/curve", endpoint="job_curve"),
                Rule("/portal/job/file", endpoint="job_file"),
                Rule("/portal/experiment", endpoint="experiment"),
                Rule("/portal/calls", endpoint="api_calls"),
                Rule("/portal/confirm", endpoint="confirm"),
                Rule("/portal/action", endpoint="action", methods=["POST"]),
                Rule("/portal/static/<name>", endpoint="static"),
            ],
            strict_slashes=True,
        )

    # ------------------------------------------------------------------ dispatch

    def __call__(self, request: Request) -> Response:
        try:
            endpoint, args = self.routes.bind_to_environ(request.environ).match()
            session = self.sessions.find(request.cookies.get(COOKIE))
            if endpoint in ("login", "static"):
                response = getattr(self, endpoint)(request, session, **args)
            elif session is None:
                response = self.message(
                    "Sign in with the login link",
                    "This page needs the login link the local cloud printed (…/portal/login?token=…"
                    "). Each link works once; the newest is in the file portal-login-token of the "
                    "local cloud's state directory, and `python -m quickstart run` prints one.",
                    401,
                )
            elif request.method == "POST" and not self._same_site_post(request, session):
                response = self.message(
                    "Request refused",
                    "This action did not come from a portal page (its form token is missing or "
                    "stale). Reload the page and try again.",
                    403,
                )
            else:
                response = getattr(self, endpoint)(request, session, **args)
        except RequestRedirect as err:  # /portal -> /portal/
            response = err.get_response(request.environ)
        except HTTPException as err:
            response = self.message(err.name, err.description or "", err.code or 500)
        return secure(response)

    def _same_site_post(self, request: Request, session) -> bool:
        origin = request.headers.get("Origin")
        if origin is not None and origin != self.cloud.base_url:
            return False
        return csrf_ok(session, request.form.get("csrf"))

    def page(self, template: str, session, status: int = 200, **values) -> Response:
        html = self.templates.get_template(template).render(
            csrf=session.csrf if session else "", **values
        )
        return Response(html, status=status, content_type="text/html; charset=utf-8")

    def message(self, title: str, text: str, status: int, session=None) -> Response:
        return self.page("message.html", session, status, title=title, text=text)

    def record(self, kind: str, arm_id: str):
        record = self.store.get_resource(arm_id or "")
        if record is None or record.type.lower() != kind.lower():
            raise NotFound(f"There is no such {kind.rsplit('/', 1)[-1][:-1]} (it may be deleted).")
        return record

    # ------------------------------------------------------------------ login

    def login(self, request: Request, session) -> Response:
        if session is not None:
            return redirect("/portal/", 303)
        session_id = self.sessions.exchange(request.args.get("token", ""))
        if session_id is None:
            return self.message(
                "This login link is not valid",
                "Each login link works once. The newest is in the file portal-login-token of "
                "the local cloud's state directory; `python -m quickstart run` prints one.",
                403,
            )
        response = redirect("/portal/", 303)
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=SESSION_LIFETIME,
            path="/portal",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        return response

    def logout(self, request: Request, session) -> Response:
        self.sessions.end(request.cookies.get(COOKIE))
        response = self.message("Signed out", "You are signed out of the portal.", 200)
        response.delete_cookie(
            COOKIE, path="/portal", secure=True, httponly=True, samesite="Strict"
        )
        return response

    def static(self, request: Request, session, name: str) -> Response:
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise NotFound("No such portal file.")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = Response(path.read_bytes(), content_type=kind)
        response.headers["Cache-Control"] = "no-cache"
        return response

    # ------------------------------------------------------------------ pages

    def overview(self, request: Request, session) -> Response:
        page = request.args.get("page", "1")
        data = reading.overview(self.store, int(page) if page.isdigit() else 1)
        return self.page("overview.html", session, **data)

    def cluster(self, request: Request, session) -> Response:
        record = self.record(CLUSTER_TYPE, request.args.get("id", ""))
        detail = reading.cluster_detail(self.store, record, self.timeline.changes(record.id))
        return self.page("cluster.html", session, cluster=detail)

    def job(self, request: Request, session) -> Response:
        record = self.record(JOB_TYPE, request.args.get("id", ""))
        props = record.body["properties"]
        info = props.get("executionInfo") or {}
        folder = reading.stdouterr_dir(self.store, record)
        logs = {}
        for name in reading.LOG_FILES:
            text, offset = reading.read_from(os.path.join(folder, name), -1) if folder else ("", 0)
            logs[name] = {"text": self.scrub(text, record), "offset": offset}
        curve = self.curve(record)
        experiment = record.id.rsplit("/jobs/", 1)[0]
        return self.page(
            "job.html",
            session,
            job=reading.job_summary(record),
            timeline=reading.job_timeline(props),
            parameters=self.shown(parameters(props), record),
            queued_because=reading.queue_reason(self.store, record),
            exit_code=info.get("exitCode"),
            errors=[self.shown(e, record) for e in info.get("errors", [])],
            logs=logs,
            curve=curve,
            loss_chart=chart([curve], "loss"),
            error_chart=chart([curve], "error"),
            files=reading.output_files(self.store, record),
            experiment_id=experiment,
            cluster_id=(props.get("cluster") or {}).get("id", "").lower(),
            live=props["executionState"] in ("queued", "running", "terminating"),
        )

    def shown(self, value, record) -> str:
        """``value`` as indented JSON with every secret the cloud knows masked."""
        return self.scrub(json.dumps(value, indent=2, ensure_ascii=False), record)

    def curve(self, record):
        folder = reading.stdouterr_dir(self.store, record)
        text = ""
        for name in reading.LOG_FILES:
            if folder:
                text += reading.read_from(os.path.join(folder, name), 0, CURVE_BYTES)[0] + "\n"
        return parse_curve(record.name, text)

    def job_curve(self, request: Request, session) -> Response:
        curve = self.curve(self.record(JOB_TYPE, request.args.get("id", "")))
        return self.page(
            "curve.html",
            session,
            curve=curve,
            loss_chart=chart([curve], "loss"),
            error_chart=chart([curve], "error"),
        )

    def job_log(self, request: Request, session) -> Response:
        """New log text since the offsets the page has, and the job's state (polled)."""
        record = self.record(JOB_TYPE, request.args.get("id", ""))
        folder = reading.stdouterr_dir(self.store, record)
        body = {"state": record.body["properties"]["executionState"]}
        for name in reading.LOG_FILES:
            sent = request.args.get(name, "0")
            offset = int(sent) if sent.isdigit() else 0
            text, offset = (
                reading.read_from(os.path.join(folder, name), offset) if folder else ("", offset)
            )
            body[name] = {"text": self.scrub(text, record), "offset": offset}
        response = Response(json.dumps(body), content_type="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    def job_file(self, request: Request, session) -> Response:
        """Download an output file. The job's own logs (stdouterr) are text the portal also
        shows, so they get the same masking of secrets; other outputs (models) are the job's
        artefacts and come as they are."""
        record = self.record(JOB_TYPE, request.args.get("id", ""))
        ident = request.args.get("dir", "")
        path = reading.output_file_path(self.store, record, ident, request.args.get("path", ""))
        if path is None:
            raise NotFound("The job has no such output file.")
        if ident == STDOUTERR:
            with open(path, encoding="utf-8", errors="replace") as f:
                body = self.scrub(f.read(), record).encode()
            response = Response(body, content_type="application/octet-stream")
        else:
            response = Response(
                wrap_file(request.environ, open(path, "rb")),
                content_type="application/octet-stream",
                direct_passthrough=True,
            )
            response.content_length = os.path.getsize(path)
        response.headers.set("Content-Disposition", "attachment", filename=os.path.basename(path))
        return response

    def experiment(self, request: Request, session) -> Response:
        record = self.record(EXPERIMENT_TYPE, request.args.get("id", ""))
        jobs = self.store.list_resources(type=JOB_TYPE, parent_id=record.id)[-COMPARE_LIMIT:]
        curves = [self.curve(j) for j in jobs]
        return self.page(
            "experiment.html",
            session,
            experiment=record.name,
            jobs=[reading.job_summary(j) for j in jobs],
            curves=curves,
            loss_chart=chart(curves, "loss"),
            error_chart=chart(curves, "error"),
        )

    def api_calls(self, request: Request, session) -> Response:
        text = request.args.get("q", "").strip()
        status = request.args.get("status", "").strip()
        calls, matched = self.calls.select(text, status)
        return self.page(
            "calls.html", session, calls=calls, matched=matched, q=text, status_filter=status
        )

    # ------------------------------------------------------------------ actions

    def confirm(self, request: Request, session) -> Response:
        action = request.args.get("action", "")
        target = request.args.get("id", "")
        if action in ("terminate", "delete"):
            record = self.record(JOB_TYPE, target)
        elif action == "resize":
            record = self.record(CLUSTER_TYPE, target)
            if "manual" not in record.body["properties"]["scaleSettings"]:
                return self.message(
                    "Resize not possible",
                    f"Cluster '{record.name}' scales itself (autoScale); it has no node count "
                    "to set by hand.",
                    400,
                    session,
                )
        else:
            raise NotFound("No such action.")
        return self.page("confirm.html", session, action=action, record=record)

    def action(self, request: Request, session) -> Response:
        action = request.form.get("action", "")
        target = request.form.get("id", "")
        if action == "resize":
            record = self.record(CLUSTER_TYPE, target)
            count = request.form.get("nodes", "")
            if not count.isdigit() or int(count) > 100:
                return self.message(
                    "Resize refused",
                    "Give the new node count as a whole number, 0-100.",
                    400,
                    session,
                )
            scale = {"manual": {"targetNodeCount": int(count)}}
            response = self.arm(
                "PATCH", record.body["id"], body={"properties": {"scaleSettings": scale}}
            )
            back = portal_url("cluster", id=record.id)
        elif action in ("terminate", "delete"):
            record = self.record(JOB_TYPE, target)
            if action == "terminate":
                response = self.arm("POST", record.body["id"] + "/terminate")
                back = portal_url("job", id=record.id)
            else:
                response = self.arm("DELETE", record.body["id"])
                back = "/portal/"
        else:
            raise NotFound("No such action.")
        if response.status_code >= 400:
            error = json.loads(response.get_data()).get("error", {})
            return self.message(
                f"{action.capitalize()} failed", error.get("message", response.status), 400, session
            )
        return redirect(back, 303)

    def arm(self, method: str, path: str, body: dict | None = None) -> Response:
        """Call this local cloud's ARM API in-process with a token of its own, as the SDK would."""
        credentials = self.cloud.credentials
        token, _ = issue_token(
            credentials.token_signing_key,
            audience=self.cloud.resource_id,
            issuer=self.cloud.token_issuer,
            client_id="localcloud-portal",
            tenant=credentials.tenant,
            lifetime=300,
        )
        started = time.perf_counter()
        builder = EnvironBuilder(
            path=path,
            method=method,
            base_url=self.cloud.base_url,
            query_string={"api-version": API_VERSION},
            headers={"Authorization": f"Bearer {token}", "User-Agent": "localcloud-portal"},
            json=body,
        )
        request = Request(builder.get_environ())
        response = self.cloud.arm.dispatch(request)
        self.calls.add(
            ApiCall(
                time=time.time(),
                caller="portal (you)",
                user_agent="localcloud-portal",
                method=method,
                path=f"{path}?api-version={API_VERSION}",
                status=response.status_code,
                seconds=time.perf_counter() - started,
                request_id=response.headers.get("x-ms-request-id", ""),
            )
        )
        return response


def parameters(props: dict) -> dict:
    """The job's parameters as submitted (the stored body: secrets are already names only),
    without the state the service added."""
    added = (
        "executionState",
        "executionStateTransitionTime",
        "executionInfo",
        "provisioningState",
        "provisioningStateTransitionTime",
        "creationTime",
        "jobOutputDirectoryPathSegment",
    )
    shown = {k: v for k, v in props.items() if k not in added}
    if "secrets" in shown:
        shown["secrets"] = [
            {"name": s.get("name"), "value": reading.Scrubber.MASK} for s in shown["secrets"]
        ]
    return shown


def secure(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")  # no-referrer makes Origin "null"
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cache-Control", "no-store")
    return response


def portal_url(page: str, **args) -> str:
    return f"/portal/{page}?{urlencode(args)}" if args else f"/portal/{page}"


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
