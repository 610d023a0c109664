"""SharedKey and SAS verification against the SDK's own signers (no server needed)."""

from __future__ import annotations

import base64
import calendar
import time
from urllib.parse import parse_qsl, urlencode

import pytest
from azure.storage.common._auth import _StorageSharedKeyAuthentication
from azure.storage.common._http import HTTPRequest
from azure.storage.file import FilePermissions
from azure.storage.file.sharedaccesssignature import FileSharedAccessSignature
from requests.structures import CaseInsensitiveDict

from quickstart.localcloud.files import sharedkey
from quickstart.localcloud.files.sas import SasError, make_file_sas, verify_sas

ACCOUNT = "localcloudstore"
KEY = base64.b64encode(b"k" * 64).decode()


def _sdk_signed(method, path, query, headers):
    request = HTTPRequest()
    request.method, request.path, request.query, request.headers = (
        method,
        path,
        dict(query),
        dict(headers),
    )
    _StorageSharedKeyAuthentication(ACCOUNT, KEY).sign_request(request)
    return request


def test_sharedkey_matches_the_sdk_signer_with_the_account_twice():
    headers = {
        "x-ms-version": "2019-02-02",
        "x-ms-date": "Sun, 29 Nov 2026 02:33:49 GMT",
        "x-ms-client-request-id": "1",
        "x-ms-range": "bytes=0-3",
        "x-ms-write": "update",
        "Content-Length": "4",
    }
    path = f"/{ACCOUNT}/batchaiquickstart/mnist%20sample/Train-28x28_cntk_text.txt"
    signed = _sdk_signed("PUT", path, {"comp": "range"}, headers)
    received = CaseInsensitiveDict(signed.headers)
    ok, string = sharedkey.verify(
        received["Authorization"], "PUT", received, path, urlencode({"comp": "range"}), ACCOUNT, KEY
    )
    assert ok
    assert (
        f"/{ACCOUNT}/{ACCOUNT}/batchaiquickstart/mnist%20sample/Train-28x28_cntk_text.txt\ncomp:range"
        in string
    )
    tampered = CaseInsensitiveDict({**signed.headers, "x-ms-range": "bytes=4-7"})
    assert not sharedkey.verify(
        received["Authorization"], "PUT", tampered, path, "comp=range", ACCOUNT, KEY
    )[0]
    other_key = base64.b64encode(b"x" * 64).decode()
    assert not sharedkey.verify(
        received["Authorization"], "PUT", received, path, "comp=range", ACCOUNT, other_key
    )[0]


def _sdk_sas(**kwargs):
    token = FileSharedAccessSignature(ACCOUNT, KEY).generate_file("share", "dir", "f.txt", **kwargs)
    return dict(parse_qsl(token))


def _verify(params, operation="read", ip="127.0.0.1", path="dir/f.txt"):
    return verify_sas(
        params,
        account=ACCOUNT,
        key_b64=KEY,
        share="share",
        path=path,
        operation=operation,
        client_ip=ip,
    )


def test_sdk_made_sas_verifies_and_grants_what_it_says():
    grant = _verify(
        _sdk_sas(
            permission=FilePermissions.READ, expiry="2099-01-01T00:00:00Z", cache_control="no-cache"
        )
    )
    assert grant.permissions == "r" and grant.overrides == {"rscc": "no-cache"}


@pytest.mark.parametrize(
    "kwargs,operation,ip,code",
    [
        (
            {"permission": "r", "expiry": "2000-01-01T00:00:00Z"},
            "read",
            "127.0.0.1",
            "AuthenticationFailed",
        ),
        (
            {"permission": "r", "expiry": "2099-01-01", "start": "2098-01-01"},
            "read",
            "127.0.0.1",
            "AuthenticationFailed",
        ),
        (
            {"permission": "r", "expiry": "2099-01-01"},
            "write",
            "127.0.0.1",
            "AuthorizationPermissionMismatch",
        ),
        (
            {"permission": "r", "expiry": "2099-01-01", "ip": "10.0.0.1-10.0.0.9"},
            "read",
            "127.0.0.1",
            "AuthorizationSourceIPMismatch",
        ),
        (
            {"permission": "r", "expiry": "2099-01-01", "protocol": "http"},
            "read",
            "127.0.0.1",
            "AuthorizationProtocolMismatch",
        ),
    ],
)
def test_sas_refusals(kwargs, operation, ip, code):
    with pytest.raises(SasError) as caught:
        _verify(_sdk_sas(**kwargs), operation=operation, ip=ip)
    assert caught.value.code == code


def test_sas_for_one_file_does_not_open_another():
    with pytest.raises(SasError) as caught:
        _verify(_sdk_sas(permission="r", expiry="2099-01-01"), path="dir/g.txt")
    assert caught.value.code == "AuthenticationFailed"


def test_our_sas_is_the_batchai_shape_and_verifies():
    expiry = calendar.timegm(time.gmtime()) + 3600
    token = make_file_sas(ACCOUNT, KEY, "share", "dir/f.txt", permission="rl", expiry=expiry)
    assert [name for name, _ in parse_qsl(token)] == ["sv", "sr", "sig", "se", "sp"]
    assert _verify(dict(parse_qsl(token))).permissions == "rl"
