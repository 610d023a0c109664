"""AAD client-credentials tokens and the bearer check in front of every ARM request."""

from __future__ import annotations

import time

import jwt
import pytest
from msrest.authentication import BasicTokenAuthentication
from msrest.exceptions import AuthenticationError
from msrestazure.azure_exceptions import CloudError

from quickstart.localcloud.connection import requests_session
from quickstart.localcloud.identity.bearer_tokens import issue_token
from tests.conftest import make_credentials, make_resource_client


def _token_form(connection, **overrides):
    form = {
        "grant_type": "client_credentials",
        "client_id": connection["client_id"],
        "client_secret": connection["client_secret"],
        "resource": connection["active_directory_resource_id"],
    }
    form.update(overrides)
    return form


def test_token_response_has_every_field_adal_needs(local_cloud):
    conn = local_cloud.connection
    response = requests_session(conn).post(
        conn["active_directory_url"] + "/oauth2/token", data=_token_form(conn)
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert int(body["expires_in"]) > 300  # adal treats < 5 minutes as expired
    assert int(body["expires_on"]) > time.time()
    assert body["resource"] == conn["active_directory_resource_id"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["appid"] == conn["client_id"] and claims["tid"] == conn["tenant"]


def test_service_principal_credentials_sign_arm_requests(local_cloud):
    client = make_resource_client(local_cloud.connection)
    assert list(client.resource_groups.list()) == []


def test_wrong_secret_raises_the_sdk_authentication_error(local_cloud):
    with pytest.raises(AuthenticationError) as caught:
        make_credentials(local_cloud.connection, secret="not-the-secret")
    assert "invalid_client" in str(caught.value)
    assert "not-the-secret" not in str(caught.value)


@pytest.mark.parametrize(
    "field,value,status,error",
    [
        ("client_id", "00000000-0000-0000-0000-000000000000", 400, "unauthorized_client"),
        ("grant_type", "password", 400, "unsupported_grant_type"),
        ("resource", "https://management.azure.com/", 400, "invalid_resource"),
        ("client_secret", "", 401, "invalid_client"),
    ],
)
def test_token_endpoint_errors_are_aad_json(local_cloud, field, value, status, error):
    conn = local_cloud.connection
    response = requests_session(conn).post(
        conn["active_directory_url"] + "/oauth2/token", data=_token_form(conn, **{field: value})
    )
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["error_description"].startswith("AADSTS")


def _arm_with_token(local_cloud, token):
    return make_resource_client(
        local_cloud.connection, credentials=BasicTokenAuthentication({"access_token": token})
    )


def _assert_401(local_cloud, token, code):
    with pytest.raises(CloudError) as caught:
        list(_arm_with_token(local_cloud, token).resource_groups.list())
    assert caught.value.status_code == 401
    assert caught.value.error.error == code


def test_expired_token_is_refused(local_cloud):
    ctx = local_cloud.context
    token, _ = issue_token(
        ctx.credentials.token_signing_key,
        audience=ctx.resource_id,
        issuer=ctx.token_issuer,
        client_id=ctx.credentials.client_id,
        tenant=ctx.credentials.tenant,
        lifetime=-60,
    )
    _assert_401(local_cloud, token, "ExpiredAuthenticationToken")


def test_token_with_wrong_signature_is_refused(local_cloud):
    ctx = local_cloud.context
    token, _ = issue_token(
        b"some other key" * 3,
        audience=ctx.resource_id,
        issuer=ctx.token_issuer,
        client_id=ctx.credentials.client_id,
        tenant=ctx.credentials.tenant,
        lifetime=3600,
    )
    _assert_401(local_cloud, token, "InvalidAuthenticationToken")


def test_tampered_token_is_refused(local_cloud):
    conn = local_cloud.connection
    token = (
        requests_session(conn)
        .post(conn["active_directory_url"] + "/oauth2/token", data=_token_form(conn))
        .json()["access_token"]
    )
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] += 10**6
    forged_payload = jwt.encode(claims, "x" * 32, algorithm="HS256").split(".")[1]
    _assert_401(local_cloud, f"{header}.{forged_payload}.{signature}", "InvalidAuthenticationToken")


def test_token_for_another_audience_is_refused(local_cloud):
    ctx = local_cloud.context
    token, _ = issue_token(
        ctx.credentials.token_signing_key,
        audience="https://management.azure.com/",
        issuer=ctx.token_issuer,
        client_id=ctx.credentials.client_id,
        tenant=ctx.credentials.tenant,
        lifetime=3600,
    )
    _assert_401(local_cloud, token, "InvalidAuthenticationTokenAudience")


def test_malformed_token_is_refused(local_cloud):
    _assert_401(local_cloud, "not-a-jwt", "InvalidAuthenticationToken")


@pytest.mark.parametrize(
    "header,code",
    [
        (None, "AuthenticationFailed"),
        ("Basic dXNlcjpwYXNz", "AuthenticationFailedInvalidHeader"),
        ("Bearer", "AuthenticationFailedInvalidHeader"),
    ],
)
def test_missing_or_malformed_authorization_header(local_cloud, header, code):
    conn = local_cloud.connection
    headers = {"Authorization": header} if header else {}
    response = requests_session(conn).get(
        f"{local_cloud.base_url}/subscriptions/{conn['subscription_id']}/resourcegroups",
        params={"api-version": "2021-04-01"},
        headers=headers,
    )
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert "WWW-Authenticate" in response.headers


def test_a_remembered_token_is_still_checked_for_expiry_and_never_vouches_for_another(
    monkeypatch,
):
    """A token's signature is checked once (PyJWT costs more than the rest of a request), but
    expiry, audience and issuer are checked on every call, and a token signed with another key,
    or altered, is verified on its own."""
    from quickstart.localcloud.identity import bearer_tokens

    key, audience, issuer = b"k" * 32, "https://management/", "https://sts/t/"
    token, claims = issue_token(
        key, audience=audience, issuer=issuer, client_id="c", tenant="t", lifetime=60
    )
    assert bearer_tokens.verify_token(token, key, audience=audience, issuer=issuer) == claims
    decodes, decode = [], jwt.decode
    monkeypatch.setattr(
        bearer_tokens.jwt, "decode", lambda *a, **k: decodes.append(1) or decode(*a, **k)
    )
    assert bearer_tokens.verify_token(token, key, audience=audience, issuer=issuer) == claims
    assert decodes == []  # remembered
    later = claims["exp"] + 1
    with pytest.raises(bearer_tokens.TokenError) as caught:
        bearer_tokens.verify_token(token, key, audience=audience, issuer=issuer, now=later)
    assert caught.value.code == "ExpiredAuthenticationToken"
    with pytest.raises(bearer_tokens.TokenError) as caught:
        bearer_tokens.verify_token(token, key, audience="https://other/", issuer=issuer)
    assert caught.value.code == "InvalidAuthenticationTokenAudience"
    with pytest.raises(bearer_tokens.TokenError):
        bearer_tokens.verify_token(token, b"x" * 32, audience=audience, issuer=issuer)
    with pytest.raises(bearer_tokens.TokenError):
        bearer_tokens.verify_token(token[:-2] + "AA", key, audience=audience, issuer=issuer)
