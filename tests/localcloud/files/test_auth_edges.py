"""The local cloud's three credential checks at their edges: SAS (every field signed, each time
format Azure accepts, the start skew and the expiry instant, IP ranges, protocols, each
permission), SharedKey (the Range slot, repeated query names, the scheme and account) and bearer
tokens (expiry, not-before, audience, issuer). Each refusal is checked with the storage or ARM
error code and the message a user reads, since that is what tells them what to fix."""

from __future__ import annotations

import calendar
import time
from urllib.parse import parse_qsl, quote

import jwt
import pytest
from azure.storage.file.sharedaccesssignature import FileSharedAccessSignature
from requests.structures import CaseInsensitiveDict

from quickstart.localcloud.files import sharedkey
from quickstart.localcloud.files.sas import SasError, make_file_sas, verify_sas
from quickstart.localcloud.identity.bearer_tokens import TokenError, issue_token, verify_token
from tests.localcloud.files.test_signatures import ACCOUNT, KEY, _sdk_signed

NOW = calendar.timegm((2026, 6, 1, 12, 0, 0))


def iso(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def sdk_sas(path=("dir", "f.txt"), **kwargs):
    """A file SAS as azure-storage-file makes it (the string to sign is the SDK's, not ours)."""
    kwargs.setdefault("permission", "r")
    kwargs.setdefault("expiry", iso(NOW + 3600))
    token = FileSharedAccessSignature(ACCOUNT, KEY).generate_file("share", *path, **kwargs)
    return dict(parse_qsl(token))


def share_sas(**kwargs):
    kwargs.setdefault("permission", "rl")
    kwargs.setdefault("expiry", iso(NOW + 3600))
    return dict(
        parse_qsl(FileSharedAccessSignature(ACCOUNT, KEY).generate_share("share", **kwargs))
    )


def check(params, operation="read", path="dir/f.txt", ip="127.0.0.1", now=NOW):
    return verify_sas(
        params,
        account=ACCOUNT,
        key_b64=KEY,
        share="share",
        path=path,
        operation=operation,
        client_ip=ip,
        now=now,
    )


def refusal(params, **kwargs):
    with pytest.raises(SasError) as caught:
        check(params, **kwargs)
    return caught.value.code, caught.value.message


# --- SAS: every signed field counts ---------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"start": iso(NOW - 60)},
        {"ip": "127.0.0.1"},
        {"protocol": "https"},
        {"cache_control": "no-cache"},
        {"content_disposition": "attachment"},
        {"content_encoding": "gzip"},
        {"content_language": "en"},
        {"content_type": "text/plain"},
    ],
    ids=lambda extra: next(iter(extra)),
)
def test_each_optional_field_the_sdk_signs_verifies_and_altering_it_breaks_the_signature(extra):
    params = sdk_sas(**extra)
    check(params)
    (name,) = set(params) - set(sdk_sas())
    altered = dict(params, **{name: params[name] + "0"})
    code, message = refusal(altered)
    if code == "AuthenticationFailed" and message.startswith("Signature did not match"):
        return
    pytest.fail(f"altering {name} gave {code}: {message}")


def test_a_signature_mismatch_says_which_string_was_signed():
    params = dict(sdk_sas(), sig=sdk_sas(permission="rw")["sig"])
    code, message = refusal(params)
    assert code == "AuthenticationFailed"
    assert message == (
        f"Signature did not match. String to sign used was r\\n\\n{params['se']}"
        f"\\n/file/{ACCOUNT}/share/dir/f.txt\\n\\n\\n\\n{params['sv']}\\n\\n\\n\\n\\n"
    )


def test_a_share_sas_opens_the_share_and_every_file_in_it():
    params = share_sas()
    assert check(params, path=None, operation="list").resource == "s"
    assert check(params, path="dir/f.txt").resource == "s"
    assert check(params, path="other/g.txt").permissions == "rl"


def test_a_file_sas_opens_only_its_file_and_never_a_directory_or_share():
    assert check(sdk_sas()).resource == "f"
    assert refusal(sdk_sas(), path=None) == (
        "AuthorizationResourceTypeMismatch",
        "This request is not authorized to perform this operation using this resource type "
        "(a file SAS, sr=f, cannot be used on a share or directory).",
    )
    assert refusal(sdk_sas(), path="dir/g.txt")[0] == "AuthenticationFailed"


@pytest.mark.parametrize("resource", ["b", "c", "", "F"])
def test_other_signed_resources_are_refused(resource):
    params = dict(sdk_sas(), sr=resource)
    assert refusal(params) == (
        "AuthenticationFailed",
        f"The SAS signed resource sr='{resource}' is not 'f' (file) or 's' (share).",
    )


@pytest.mark.parametrize("missing", ["sv", "sp", "se", "sig"])
def test_a_sas_missing_a_required_field_says_which(missing):
    params = sdk_sas()
    del params[missing]
    assert refusal(params) == (
        "AuthenticationFailed",
        f"The SAS is missing its '{missing}' parameter.",
    )


def test_stored_access_policies_are_refused_with_the_reason():
    assert refusal(dict(sdk_sas(), si="policy1")) == (
        "AuthenticationFailed",
        "Stored access policies (si=) are not supported by the local cloud; sign the "
        "permissions and expiry into the SAS itself.",
    )


# --- SAS: time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expiry, seconds",
    [
        ("2026-06-01T13:00:00Z", 3600),
        ("2026-06-01T13:00Z", 3600),
        ("2026-06-02", 12 * 3600),
        ("2026-06-01T12:00:30.5Z", 30.5),
        ("2026-06-01T12:00:30.25Z", 30.25),
    ],
)
def test_every_iso_form_azure_accepts_is_read_to_the_second_and_its_fraction(expiry, seconds):
    """Valid up to and including the expiry instant, refused just after it."""
    params = sdk_sas(expiry=expiry)
    check(params, now=NOW + seconds)
    code, message = refusal(params, now=NOW + seconds + 0.01)
    assert code == "AuthenticationFailed"
    assert message.startswith("Signature not valid in the specified time frame: Start [] - ")
    assert message.endswith(f"Expiry [{expiry}] - Current [{iso(NOW + seconds + 0.01)}]")


@pytest.mark.parametrize(
    "bad",
    ["tomorrow", "2026-06-01T13:00:00", "2026-06-01T13:00:00.5", "2026-06-01 13:00:00Z", "x.5Z"],
)
def test_a_time_that_is_not_iso_utc_is_refused_naming_the_field(bad):
    params = dict(sdk_sas(), se=bad)
    params["sig"] = _resign(params)
    assert refusal(params) == (
        "AuthenticationFailed",
        f"The SAS expiry time '{bad}' is not an ISO 8601 UTC time.",
    )
    params = dict(sdk_sas(), st=bad)
    params["sig"] = _resign(params)
    assert refusal(params) == (
        "AuthenticationFailed",
        f"The SAS start time '{bad}' is not an ISO 8601 UTC time.",
    )


def _resign(params):
    """The signature of altered params (so a test reaches the checks after the signature)."""
    from quickstart.localcloud.files.sas import _string_to_sign

    return sharedkey.sign(KEY, _string_to_sign(params, ACCOUNT, "share/dir/f.txt"))


def test_a_start_up_to_five_minutes_ahead_is_tolerated_as_clock_skew():
    params = sdk_sas(start=iso(NOW + 300))
    check(params)
    early = sdk_sas(start=iso(NOW + 301))
    code, message = refusal(early)
    assert code == "AuthenticationFailed"
    assert message == (
        f"Signature not valid in the specified time frame: Start [{iso(NOW + 301)}] - "
        f"Expiry [{early['se']}] - Current [{iso(NOW)}]"
    )


def test_without_now_the_clock_decides():
    check(sdk_sas(expiry=iso(time.time() + 600)), now=None)
    with pytest.raises(SasError):
        check(sdk_sas(expiry=iso(time.time() - 600)), now=None)


# --- SAS: where from, how, and what for ---------------------------------------------------------


@pytest.mark.parametrize(
    "spec, inside, outside",
    [
        ("10.0.0.5", ["10.0.0.5"], ["10.0.0.4", "10.0.0.6"]),
        ("10.0.0.1-10.0.0.9", ["10.0.0.1", "10.0.0.5", "10.0.0.9"], ["10.0.0.0", "10.0.0.10"]),
        ("127.0.0.1", ["127.0.0.1"], ["not-an-ip", ""]),
    ],
)
def test_an_ip_range_admits_its_ends_and_nothing_beyond(spec, inside, outside):
    params = sdk_sas(ip=spec)
    for ip in inside:
        check(params, ip=ip)
    for ip in outside:
        assert refusal(params, ip=ip) == (
            "AuthorizationSourceIPMismatch",
            f"This request is not authorized to perform this operation using this source IP {ip}.",
        )


def test_a_malformed_ip_range_admits_nobody():
    params = dict(sdk_sas(), sip="10.0.0.1-x")
    params["sig"] = _resign(params)
    assert refusal(params, ip="10.0.0.1")[0] == "AuthorizationSourceIPMismatch"


@pytest.mark.parametrize(
    "protocol, allowed", [("https", True), ("https,http", True), ("http", False)]
)
def test_a_sas_for_http_only_is_refused_over_https(protocol, allowed):
    params = sdk_sas(protocol=protocol)
    if allowed:
        check(params)
    else:
        assert refusal(params) == (
            "AuthorizationProtocolMismatch",
            "This request is not authorized to perform this operation using this protocol.",
        )


@pytest.mark.parametrize(
    "operation, letter", [("read", "r"), ("create", "c"), ("write", "w"), ("delete", "d")]
)
def test_each_operation_needs_its_own_permission_letter(operation, letter):
    check(sdk_sas(permission=letter), operation=operation)
    others = "".join(p for p in "rcwd" if p != letter)
    assert refusal(sdk_sas(permission=others), operation=operation) == (
        "AuthorizationPermissionMismatch",
        "This request is not authorized to perform this operation using this permission.",
    )


def test_listing_needs_the_list_permission_of_a_share_sas():
    check(share_sas(permission="l"), path=None, operation="list")
    assert refusal(share_sas(permission="r"), path=None, operation="list")[0] == (
        "AuthorizationPermissionMismatch"
    )


def test_a_grant_carries_its_permissions_resource_and_only_the_overrides_asked_for():
    grant = check(sdk_sas(permission="rw", content_type="text/plain", content_language="en"))
    assert (grant.permissions, grant.resource) == ("rw", "f")
    assert grant.overrides == {"rsct": "text/plain", "rscl": "en"}


# --- our own SAS: the shape Batch AI's download links had ---------------------------------------


def test_our_file_sas_signs_start_and_expiry_and_escapes_every_value():
    token = make_file_sas(
        ACCOUNT, KEY, "share", "/dir/f.txt/", permission="r", expiry=NOW + 60, start=NOW - 60
    )
    pairs = parse_qsl(token)
    assert [name for name, _ in pairs] == ["sv", "sr", "sig", "st", "se", "sp"]
    params = dict(pairs)
    assert (params["sv"], params["sr"], params["st"], params["se"], params["sp"]) == (
        "2018-03-28",
        "f",
        iso(NOW - 60),
        iso(NOW + 60),
        "r",
    )
    assert ":" not in token  # every value is escaped, the signature's + / = too
    assert "&sig=" + quote(params["sig"], safe="") + "&" in token
    assert check(params).permissions == "r"
    assert refusal(params, now=NOW + 61)[0] == "AuthenticationFailed"
    assert refusal(params, now=NOW - 361)[0] == "AuthenticationFailed"


def test_our_file_sas_reads_by_default_and_names_the_version_it_signs():
    token = make_file_sas(ACCOUNT, KEY, "share", "dir/f.txt", expiry=NOW + 60, version="2017-11-09")
    params = dict(parse_qsl(token))
    assert (params["sp"], params["sv"]) == ("r", "2017-11-09")
    assert "st" not in params
    assert check(params).permissions == "r"


@pytest.mark.parametrize("name", ["Xception/model.dnn", "dir/XX", "x/y.txt"])
def test_our_file_sas_opens_a_file_whatever_its_name_begins_or_ends_with(name):
    """Batch AI's links name any output file, e.g. a model folder called Xception."""
    params = dict(parse_qsl(make_file_sas(ACCOUNT, KEY, "share", f"/{name}", expiry=NOW + 60)))
    assert check(params, path=name).permissions == "r"
    assert refusal(params, path=name + "2")[0] == "AuthenticationFailed"
    sdk_made = sdk_sas(path=tuple(name.rpartition("/")[::2]))  # the SDK's own signature
    assert check(sdk_made, path=name).permissions == "r"


# --- SharedKey ----------------------------------------------------------------------------------


def sdk_signed(method, path, query, headers):
    """The headers azure-storage-common sends, its SharedKey Authorization included."""
    return CaseInsensitiveDict(_sdk_signed(method, path, query, headers).headers)


BASE_HEADERS = {"x-ms-version": "2018-03-28", "x-ms-date": "Mon, 01 Jun 2026 12:00:00 GMT"}
PATH = f"/{ACCOUNT}/share/dir/f.txt"


def test_sharedkey_accepts_an_empty_content_length_as_the_sdk_signs_a_zero():
    headers = sdk_signed("PUT", PATH, {}, dict(BASE_HEADERS, **{"Content-Length": "0"}))
    assert sharedkey.verify(headers["Authorization"], "PUT", headers, PATH, "", ACCOUNT, KEY)[0]
    string = sharedkey.string_to_sign("PUT", headers, PATH, "", ACCOUNT)
    assert string.split("\n")[3] == ""  # the Content-Length slot


def test_sharedkey_signs_a_real_range_header_as_the_service_does_and_the_sdks_empty_one():
    """The SDK leaves the Range slot empty; a client signing `Range` there is accepted too."""
    headers = sdk_signed("GET", PATH, {}, dict(BASE_HEADERS, Range="bytes=0-9"))
    assert sharedkey.verify(headers["Authorization"], "GET", headers, PATH, "", ACCOUNT, KEY)[0]
    ranged = CaseInsensitiveDict(dict(BASE_HEADERS, Range="bytes=0-9"))
    string = sharedkey.string_to_sign("GET", ranged, PATH, "", ACCOUNT, "bytes=0-9")
    assert string.split("\n")[11] == "bytes=0-9"
    signature = sharedkey.sign(KEY, string)
    ranged["Authorization"] = f"SharedKey {ACCOUNT}:{signature}"
    ok, signed = sharedkey.verify(ranged["Authorization"], "GET", ranged, PATH, "", ACCOUNT, KEY)
    assert ok and signed == string


def test_repeated_query_names_are_signed_once_with_sorted_values():
    string = sharedkey.string_to_sign(
        "GET", CaseInsensitiveDict(BASE_HEADERS), PATH, "b=2&A=3&b=1&c=", ACCOUNT
    )
    assert string.endswith(f"/{ACCOUNT}{PATH}\na:3\nb:1,2\nc:")


def test_x_ms_headers_are_signed_lower_cased_and_sorted():
    headers = CaseInsensitiveDict({"X-MS-Version": "v", "x-ms-Date": "d", "x-ms-a": "1"})
    string = sharedkey.string_to_sign("get", headers, "/p", "", "acct")
    assert string == "GET\n" + "\n" * 11 + "x-ms-a:1\nx-ms-date:d\nx-ms-version:v\n/acct/p"


@pytest.mark.parametrize(
    "authorization",
    [
        "SharedKeyLite {account}:{sig}",
        "Bearer {account}:{sig}",
        "SharedKey other:{sig}",
        "SharedKey {account}:",
        "SharedKey {account}",
        "",
    ],
)
def test_sharedkey_refuses_another_scheme_another_account_or_no_signature(authorization):
    """The refusal still reports the string the server would sign, query and Range included,
    as Azure does, so the user can compare it with their own."""
    headers = sdk_signed("GET", PATH, {"comp": "list"}, dict(BASE_HEADERS, Range="bytes=0-9"))
    signature = headers["Authorization"].rpartition(":")[2]
    value = authorization.format(account=ACCOUNT, sig=signature)
    ok, string = sharedkey.verify(value, "GET", headers, PATH, "comp=list", ACCOUNT, KEY)
    assert not ok
    assert string == sharedkey.string_to_sign(
        "GET", headers, PATH, "comp=list", ACCOUNT, "bytes=0-9"
    )
    assert "bytes=0-9" in string and string.endswith("\ncomp:list")


# --- bearer tokens ------------------------------------------------------------------------------

TOKEN_KEY = b"s" * 32
AUDIENCE = "https://127.0.0.1:5000/"
ISSUER = "https://127.0.0.1:5000/tenant/"


def token(lifetime=3600, now=NOW, audience=AUDIENCE, issuer=ISSUER, **changes):
    value, claims = issue_token(
        TOKEN_KEY,
        audience=audience,
        issuer=issuer,
        client_id="app",
        tenant="tenant",
        lifetime=lifetime,
        now=now,
    )
    if changes:
        claims.update(changes)
        value = jwt.encode(claims, TOKEN_KEY, algorithm="HS256")
    return value, claims


def verify(value, now=NOW, audience=AUDIENCE, issuer=ISSUER):
    return verify_token(value, TOKEN_KEY, audience=audience, issuer=issuer, now=now)


def token_refusal(value, **kwargs):
    with pytest.raises(TokenError) as caught:
        verify(value, **kwargs)
    return caught.value.code, caught.value.message


def test_a_token_carries_the_app_only_claims_aad_issues():
    value, claims = token(lifetime=600.9)
    assert claims["exp"] - claims["iat"] == 600 and claims["nbf"] == claims["iat"] == NOW
    assert (claims["aud"], claims["iss"], claims["tid"], claims["ver"]) == (
        AUDIENCE,
        ISSUER,
        "tenant",
        "1.0",
    )
    assert claims["appid"] == claims["oid"] == claims["sub"] == "app"
    assert verify(value) == claims
    assert token()[1]["jti"] != token()[1]["jti"]


def test_a_token_is_valid_until_its_expiry_second_and_not_at_it():
    value, _ = token(lifetime=60)
    verify(value, now=NOW + 59.99)
    assert token_refusal(value, now=NOW + 60) == (
        "ExpiredAuthenticationToken",
        "The access token expiry UTC time '06/01/2026 12:01:00' is earlier than current UTC "
        "time '06/01/2026 12:01:00'.",
    )


def test_a_token_with_a_non_numeric_expiry_is_expired():
    value, _ = token(exp="soon")
    assert token_refusal(value) == (
        "ExpiredAuthenticationToken",
        "The access token expiry UTC time 'soon' is earlier than current UTC time "
        "'06/01/2026 12:00:00'.",
    )


def test_a_token_from_the_future_is_tolerated_for_five_minutes_of_clock_skew():
    value, _ = token(nbf=NOW + 300)
    verify(value)
    early, _ = token(nbf=NOW + 301)
    assert token_refusal(early) == (
        "InvalidAuthenticationToken",
        "The access token is not yet valid.",
    )


def test_the_audience_matches_with_or_without_its_trailing_slash():
    value, _ = token(audience=AUDIENCE.rstrip("/"))
    verify(value)
    verify(token()[0], audience=AUDIENCE.rstrip("/"))
    other, _ = token(audience="https://management.azure.com/")
    assert token_refusal(other) == (
        "InvalidAuthenticationTokenAudience",
        "The access token has been obtained for wrong audience or resource "
        "'https://management.azure.com/'. It should exactly match with one of the allowed "
        f"audiences '{AUDIENCE}'.",
    )


def test_a_token_from_another_issuer_is_refused():
    value, _ = token(issuer="https://sts.windows.net/other/")
    assert token_refusal(value) == (
        "InvalidAuthenticationTokenTenant",
        "The access token is from the wrong issuer 'https://sts.windows.net/other/'.",
    )


def test_a_token_signed_otherwise_or_missing_a_claim_is_refused_with_the_reason():
    value, claims = token()
    assert token_refusal(jwt.encode(claims, b"o" * 32, algorithm="HS256")) == (
        "InvalidAuthenticationToken",
        "The access token is invalid: its signature does not match (was it issued by another "
        "local cloud or altered?).",
    )
    assert token_refusal(jwt.encode(claims, b"s" * 48, algorithm="HS384")) == (
        "InvalidAuthenticationToken",
        "The access token is invalid: it is not signed by this local cloud.",
    )
    assert token_refusal("not.a.jwt") == (
        "InvalidAuthenticationToken",
        "The access token is invalid: it is not a well-formed JWT.",
    )
    del claims["iss"]
    code, message = token_refusal(jwt.encode(claims, TOKEN_KEY, algorithm="HS256"))
    assert code == "InvalidAuthenticationToken"
    assert message == 'The access token is invalid: Token is missing the "iss" claim.'


def test_without_now_the_clock_decides_for_tokens():
    fresh, _ = issue_token(
        TOKEN_KEY, audience=AUDIENCE, issuer=ISSUER, client_id="a", tenant="t", lifetime=60
    )
    assert verify_token(fresh, TOKEN_KEY, audience=AUDIENCE, issuer=ISSUER)["appid"] == "a"
    assert abs(jwt.decode(fresh, options={"verify_signature": False})["iat"] - time.time()) < 5


def test_a_token_without_not_before_is_valid_and_errors_read_as_their_message():
    value, claims = token()
    del claims["nbf"]
    assert verify(jwt.encode(claims, TOKEN_KEY, algorithm="HS256"))["appid"] == "app"
    with pytest.raises(TokenError) as caught:
        verify("not.a.jwt")
    assert str(caught.value) == caught.value.message
    with pytest.raises(SasError) as caught:
        check(dict(sdk_sas(), si="p"))
    assert str(caught.value) == caught.value.message


def test_our_sas_escapes_a_slash_in_its_signature():
    expiry = next(
        NOW + n
        for n in range(1000)
        if "/" in dict(parse_qsl(make_file_sas(ACCOUNT, KEY, "s", "f", expiry=NOW + n)))["sig"]
    )
    token = make_file_sas(ACCOUNT, KEY, "s", "f", expiry=expiry)
    signature = dict(parse_qsl(token))["sig"]
    assert "/" in signature and f"sig={quote(signature, safe='')}&" in token
