"""The AAD token endpoint, answer by answer: each refusal is AAD's JSON with its AADSTS code
(which adal and msrestazure show the user), a granted token is one the ARM check accepts for as
long as it says, and the headers adal reads (no caching, its request id echoed when asked).
Driven directly with werkzeug requests against one state directory's real credentials; the
HTTPS path through adal is in test_aad_and_bearer.py."""

import calendar
import re
import time
import uuid
from types import SimpleNamespace

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from quickstart.localcloud.identity.bearer_tokens import verify_token
from quickstart.localcloud.identity.credentials import ensure_credentials
from quickstart.localcloud.identity.token_endpoint import TokenEndpoint
from quickstart.localcloud.store import Store

RESOURCE = "https://127.0.0.1:8443/"


@pytest.fixture
def endpoint(tmp_path):
    credentials = ensure_credentials(Store(tmp_path))
    cloud = SimpleNamespace(
        credentials=credentials,
        resource_id=RESOURCE,
        token_issuer=f"https://sts.localcloud/{credentials.tenant}/",
        options={"token_lifetime": 1800},
    )
    return TokenEndpoint(cloud)


def good_form(endpoint, **changes):
    creds = endpoint.cloud.credentials
    form = {
        "grant_type": "client_credentials",
        "client_id": creds.client_id,
        "client_secret": creds.client_secret,
        "resource": RESOURCE,
    }
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def ask(endpoint, form=None, method="POST", headers=None):
    builder = EnvironBuilder(method=method, data=form, headers=headers or {})
    return endpoint.token(Request(builder.get_environ()))


def granted_claims(endpoint, answer):
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return verify_token(
        answer.json["access_token"],
        endpoint.cloud.credentials.token_signing_key,
        audience=RESOURCE,
        issuer=endpoint.cloud.token_issuer,
    )


def test_a_grant_is_a_token_the_arm_check_accepts_for_the_lifetime_it_says(endpoint):
    before = int(time.time())
    answer = ask(endpoint, good_form(endpoint))
    claims = granted_claims(endpoint, answer)
    body = answer.json
    assert body["token_type"] == "Bearer" and body["resource"] == RESOURCE
    assert body["expires_in"] == body["ext_expires_in"] == "1800"
    assert before <= int(body["not_before"]) <= int(time.time())
    assert body["expires_on"] == str(int(body["not_before"]) + 1800) == str(claims["exp"])
    assert claims["appid"] == endpoint.cloud.credentials.client_id
    assert claims["tid"] == endpoint.cloud.credentials.tenant
    assert answer.headers["Cache-Control"] == "no-store, no-cache"
    assert answer.headers["Pragma"] == "no-cache"
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    uuid.UUID(answer.headers["x-ms-request-id"])


@pytest.mark.parametrize(
    "changes",
    [
        {"resource": RESOURCE.rstrip("/")},  # with or without the trailing slash
        {"resource": None, "scope": RESOURCE + ".default"},  # the v2 form
        {"resource": None, "scope": RESOURCE.rstrip("/") + "/.default"},
    ],
    ids=["no-slash", "scope", "scope-no-slash"],
)
def test_the_resource_may_be_named_as_aad_allows(endpoint, changes):
    granted_claims(endpoint, ask(endpoint, good_form(endpoint, **changes)))


def test_the_client_id_is_matched_whatever_its_case(endpoint):
    upper = endpoint.cloud.credentials.client_id.upper()
    granted_claims(endpoint, ask(endpoint, good_form(endpoint, client_id=upper)))


SECRET_IN_CONNECTION = "(client_secret in connection.json)."
REFUSALS = [
    (
        {"grant_type": "password"},
        400,
        "unsupported_grant_type",
        "AADSTS70003: The app requested an unsupported grant type 'password'; the local cloud "
        "supports client_credentials.",
    ),
    ({"grant_type": None}, 400, "unsupported_grant_type", "AADSTS70003: The app requested ..."),
    (
        {"client_id": None},
        400,
        "invalid_request",
        "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
    ),
    (
        {"client_id": "not-ours"},
        400,
        "unauthorized_client",
        "AADSTS700016: Application with identifier 'not-ours' was not found in the directory '{tenant}'. "
        "Use the client_id from connection.json.",
    ),
    (
        {"client_secret": None},
        401,
        "invalid_client",
        "AADSTS7000218: The request body must contain the following parameter: "
        "'client_assertion' or 'client_secret'.",
    ),
    (
        {"client_secret": "wrong"},
        401,
        "invalid_client",
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
        "request is the client secret value of app '{client_id}' " + SECRET_IN_CONNECTION,
    ),
    (
        {"resource": "https://management.azure.com/"},
        400,
        "invalid_resource",
        "AADSTS500011: The resource principal named 'https://management.azure.com/' was not "
        "found in the tenant '{tenant}'. Use active_directory_resource_id from connection.json.",
    ),
    (
        {"resource": None},
        400,
        "invalid_resource",
        "AADSTS500011: The resource principal named '' ...",
    ),
]


@pytest.mark.parametrize(("changes", "status", "error", "says"), REFUSALS)
def test_each_refusal_is_aads_json_with_its_code_and_what_to_do(
    endpoint, changes, status, error, says
):
    creds = endpoint.cloud.credentials
    answer = ask(endpoint, good_form(endpoint, **changes))
    body = answer.json
    assert answer.status_code == status
    assert body["error"] == error
    says = says.format(tenant=creds.tenant, client_id=creds.client_id)
    assert body["error_codes"] == [int(says.split(":")[0].removeprefix("AADSTS"))]
    first_line = body["error_description"].split("\r\n")[0]
    if says.endswith(" ..."):  # only its start given
        assert first_line.startswith(says.removesuffix(" ..."))
    else:
        assert first_line == says
    assert "access_token" not in body
    assert creds.client_secret not in answer.get_data(as_text=True)


def test_a_refusal_carries_its_trace_correlation_and_time(endpoint):
    request_id = str(uuid.uuid4())
    answer = ask(
        endpoint,
        good_form(endpoint, client_secret="wrong"),
        headers={"client-request-id": request_id, "return-client-request-id": "True"},
    )
    body = answer.json
    assert answer.headers["client-request-id"] == request_id
    assert body["correlation_id"] == request_id
    uuid.UUID(body["trace_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
    assert body["error_description"].endswith(
        f"\r\nTrace ID: {body['trace_id']}\r\nCorrelation ID: {request_id}\r\n"
        f"Timestamp: {body['timestamp']}"
    )
    assert answer.headers["Cache-Control"] == "no-store, no-cache"

    unasked = ask(endpoint, good_form(endpoint, client_secret="wrong"))
    uuid.UUID(unasked.json["correlation_id"])  # AAD makes one up
    assert "client-request-id" not in unasked.headers


@pytest.mark.parametrize("returned", [None, "false", "yes"])
def test_the_request_id_is_echoed_only_when_asked(endpoint, returned):
    headers = {"client-request-id": "abc-123"}
    if returned is not None:
        headers["return-client-request-id"] = returned
    answer = ask(endpoint, good_form(endpoint), headers=headers)
    assert answer.status_code == 200
    assert "client-request-id" not in answer.headers


def test_only_post_is_answered(endpoint):
    answer = ask(endpoint, method="GET")
    assert answer.status_code == 405
    assert answer.json["error"] == "invalid_request"
    assert answer.json["error_codes"] == [900561]
    assert answer.json["error_description"].startswith(
        "AADSTS900561: The endpoint only accepts POST requests.\r\n"
    )


def test_the_tenant_is_this_directorys_or_adfs_in_any_case(endpoint):
    tenant = endpoint.cloud.credentials.tenant
    assert endpoint.tenant_matches(tenant.upper())
    assert endpoint.tenant_matches("ADFS")
    assert not endpoint.tenant_matches(str(uuid.uuid4()))


def test_a_refusals_timestamp_is_utc_whatever_the_servers_time_zone(endpoint, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+5:30, no daylight saving
    time.tzset()
    try:
        answer = ask(endpoint, good_form(endpoint, client_secret="wrong"))
    finally:
        monkeypatch.undo()
        time.tzset()
    stamp = time.strptime(answer.json["timestamp"], "%Y-%m-%d %H:%M:%SZ")
    assert abs(calendar.timegm(stamp) - time.time()) < 120
