"""Storage authentication for every verb the SDK uses on Azure Files, through the real
FileService over HTTPS: the account key opens each operation, and a wrong key (or a signature
for another account, or none) is refused with Azure's answer and changes nothing. A check
skipped for one verb would let downloads or listings work locally and fail on Azure."""

from __future__ import annotations

from email.utils import formatdate

import pytest
import requests
from azure.common import AzureHttpError
from azure.storage.file import ContentSettings

from quickstart.localcloud.connection import requests_session
from tests.conftest import make_file_service

WRONG_KEY = "V1JPTkctS0VZLXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="

# Each operation the tutorial, the node agent or a user's script runs on Azure Files, as the
# SDK's FileService makes it (the HTTP verb in the name), on a share "data" holding dir/f.txt.
OPERATIONS = {
    "GET list shares": lambda s: list(s.list_shares()),
    "PUT share": lambda s: s.create_share("newshare", fail_on_exist=True),
    "GET share properties": lambda s: s.get_share_properties("data"),
    "HEAD share exists": lambda s: s.exists("data"),
    "DELETE share": lambda s: s.delete_share("data", fail_not_exist=True),
    "PUT directory": lambda s: s.create_directory("data", "newdir", fail_on_exist=True),
    "GET directory properties": lambda s: s.get_directory_properties("data", "dir"),
    "HEAD directory exists": lambda s: s.exists("data", "dir"),
    "GET list directory": lambda s: list(s.list_directories_and_files("data", "dir")),
    "DELETE directory": lambda s: s.delete_directory("data", "emptydir", fail_not_exist=True),
    "PUT file and range": lambda s: s.create_file_from_bytes("data", "dir", "new.txt", b"new"),
    "PUT range": lambda s: s.update_range("data", "dir", "f.txt", b"XY", 0, 1),
    "GET file": lambda s: s.get_file_to_bytes("data", "dir", "f.txt"),
    "GET file range": lambda s: s.get_file_to_bytes("data", "dir", "f.txt", 0, 3),
    "HEAD file properties": lambda s: s.get_file_properties("data", "dir", "f.txt"),
    "HEAD file exists": lambda s: s.exists("data", "dir", "f.txt"),
    "PUT file properties": lambda s: s.set_file_properties(
        "data", "dir", "f.txt", ContentSettings(content_type="text/x-changed")
    ),
    "PUT file metadata": lambda s: s.set_file_metadata("data", "dir", "f.txt", {"k": "v"}),
    "DELETE file": lambda s: s.delete_file("data", "dir", "f.txt"),
}


@pytest.fixture
def good(cloud):
    """The account's own FileService, with a fresh share data/dir/f.txt and data/emptydir."""
    service = make_file_service(cloud.connection)
    for share in ("data", "newshare"):
        service.delete_share(share)
    service.create_share("data")
    service.create_directory("data", "dir")
    service.create_directory("data", "emptydir")
    service.create_file_from_bytes("data", "dir", "f.txt", b"hello world")
    return service


def service_with_key(cloud, key):
    connection = cloud.connection
    return make_file_service(
        connection,
        connection["storage_connection_string"].replace(connection["storage_key"], key),
    )


def snapshot(service):
    """What a user could see of the share: names, content, content type and metadata."""
    shares = sorted(share.name for share in service.list_shares())
    if "data" not in shares:
        return shares, None
    listing = sorted(f.name for f in service.list_directories_and_files("data", "dir"))
    top = sorted(f.name for f in service.list_directories_and_files("data"))
    if "f.txt" not in listing:
        return shares, top, listing
    file = service.get_file_properties("data", "dir", "f.txt")
    return (
        shares,
        top,
        listing,
        service.get_file_to_bytes("data", "dir", "f.txt").content,
        file.properties.content_settings.content_type,
        file.metadata,
    )


@pytest.mark.parametrize("operation", OPERATIONS, ids=list(OPERATIONS))
def test_the_account_key_opens_every_operation(good, operation):
    OPERATIONS[operation](good)


@pytest.mark.parametrize("operation", OPERATIONS, ids=list(OPERATIONS))
def test_a_wrong_key_is_refused_for_every_operation_and_changes_nothing(cloud, good, operation):
    before = snapshot(good)
    with pytest.raises(AzureHttpError) as caught:
        OPERATIONS[operation](service_with_key(cloud, WRONG_KEY))
    assert caught.value.status_code == 403
    if not operation.startswith("HEAD"):  # a HEAD answer has no body, only the status
        assert caught.value.error_code == "AuthenticationFailed"
        assert cloud.connection["storage_key"] not in str(caught.value)
    assert snapshot(good) == before


def raw_request(cloud, method, path, params, authorization):
    """A request signed as the SDK signs, except for the Authorization header given."""
    connection = cloud.connection
    session = requests_session(connection)
    account = connection["storage_account"]
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2018-03-28"}
    if authorization is not None:
        headers["Authorization"] = authorization.format(account=account)
    return session.request(
        method, f"{cloud.base_url}/{account}/{path}", params=params, headers=headers
    )


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "authorization, status, code",
    [
        (None, 401, "NoAuthenticationInformation"),
        ("SharedKey {account}:", 403, "AuthenticationFailed"),
        ("SharedKey {account}:c2lnbmF0dXJl", 403, "AuthenticationFailed"),
        ("SharedKey otheraccount:c2lnbmF0dXJl", 403, "AuthenticationFailed"),
        ("Bearer {account}:c2lnbmF0dXJl", 403, "AuthenticationFailed"),
    ],
)
def test_unsigned_or_badly_signed_requests_are_refused_for_every_verb(
    cloud, good, method, authorization, status, code
):
    before = snapshot(good)
    response = raw_request(cloud, method, "data/dir/f.txt", {}, authorization)
    assert response.status_code == status
    assert response.headers["x-ms-error-code"] == code
    assert snapshot(good) == before


def test_a_request_signed_for_another_account_with_the_right_key_is_refused(cloud, good):
    """The signature covers the account name: the right key for the wrong account fails."""
    connection = cloud.connection
    other = connection["storage_connection_string"].replace(
        f"AccountName={connection['storage_account']}", "AccountName=otheraccount"
    )
    with pytest.raises(AzureHttpError) as caught:
        make_file_service(connection, other).get_file_to_bytes("data", "dir", "f.txt")
    assert caught.value.status_code == 403


def test_anonymous_access_is_never_allowed_even_to_read(cloud, good):
    url = f"{cloud.base_url}/{cloud.connection['storage_account']}/data/dir/f.txt"
    response = requests.get(url, verify=cloud.connection["ca_cert"])
    assert response.status_code == 401
    assert b"hello world" not in response.content


def signed_get(cloud, path, headers, key=None):
    """A GET signed with the account key over exactly the headers given."""
    from requests.structures import CaseInsensitiveDict

    from quickstart.localcloud.files import sharedkey

    connection = cloud.connection
    account = connection["storage_account"]
    raw_path = f"/{account}/{path}"
    headers = CaseInsensitiveDict(headers)
    signature = sharedkey.sign(
        key or connection["storage_key"],
        sharedkey.string_to_sign("GET", headers, raw_path, "", account),
    )
    headers["Authorization"] = f"SharedKey {account}:{signature}"
    return requests_session(connection).get(f"{cloud.base_url}{raw_path}", headers=dict(headers))


def test_a_request_dated_only_by_the_date_header_is_accepted(cloud, good):
    response = signed_get(
        cloud, "data/dir/f.txt", {"Date": formatdate(usegmt=True), "x-ms-version": "2018-03-28"}
    )
    assert response.status_code == 200 and response.content == b"hello world"


@pytest.mark.parametrize(
    "headers, message",
    [
        (
            {"x-ms-version": "2018-03-28"},
            "Server failed to authenticate the request: the x-ms-date header is missing or not "
            "an RFC 1123 date.",
        ),
        (
            {"x-ms-version": "2018-03-28", "x-ms-date": "yesterday"},
            "Server failed to authenticate the request: the x-ms-date header is missing or not "
            "an RFC 1123 date.",
        ),
        (
            {"x-ms-version": "2018-03-28", "x-ms-date": "Mon, 01 Jun 2026 12:00:00 GMT"},
            "Server failed to authenticate the request: the request date 'Mon, 01 Jun 2026 "
            "12:00:00 GMT' is more than 15 minutes from the server's clock.",
        ),
    ],
    ids=["no date", "not a date", "stale date"],
)
def test_a_signed_request_without_a_usable_date_is_refused_saying_why(
    cloud, good, headers, message
):
    response = signed_get(cloud, "data/dir/f.txt", headers)
    assert response.status_code == 403
    assert response.headers["x-ms-error-code"] == "AuthenticationFailed"
    assert f"<Message>{message}" in response.text


def test_a_wrong_signature_is_explained_with_the_string_the_server_signed(cloud, good):
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2018-03-28"}
    response = signed_get(cloud, "data/dir/f.txt", headers, key=WRONG_KEY)
    account = cloud.connection["storage_account"]
    assert response.status_code == 403
    assert (
        "<Message>Server failed to authenticate the request. Make sure the value of "
        "Authorization header is formed correctly including the signature (SharedKey "
        f"{account}:&lt;signature&gt; with this account's key). Server used following string "
        f"to sign: 'GET\\n" in response.text
    )
    assert f"/{account}/{account}/data/dir/f.txt'." in response.text


def test_an_unsigned_request_is_told_how_to_sign(cloud, good):
    response = raw_request(cloud, "GET", "data/dir/f.txt", {}, None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "SharedKey"
    assert (
        "<Message>Server failed to authenticate the request. Sign it with the storage key "
        "(SharedKey) or add a SAS; the local cloud allows no anonymous access." in response.text
    )


def test_a_sas_cannot_create_or_delete_a_share(cloud, good):
    token = good.generate_share_shared_access_signature(
        "data", permission="rwdlc", expiry="2099-01-01"
    )
    url = f"{cloud.base_url}/{cloud.connection['storage_account']}/data?restype=share&{token}"
    for method in ("PUT", "DELETE"):
        response = requests_session(cloud.connection).request(
            method, url, headers={"x-ms-version": "2018-03-28"}
        )
        assert response.status_code == 403
        assert response.headers["x-ms-error-code"] == "AuthorizationResourceTypeMismatch"
        assert (
            "<Message>A service SAS cannot list, create or delete shares; use the account key "
            "(SharedKey)." in response.text
        )


def test_a_sas_limited_to_an_ip_range_is_held_to_the_clients_address(cloud, good):
    def read_with(ip):
        token = good.generate_file_shared_access_signature(
            "data", "dir", "f.txt", permission="r", expiry="2099-01-01", ip=ip
        )
        return requests_session(cloud.connection).get(
            good.make_file_url("data", "dir", "f.txt", sas_token=token)
        )

    assert read_with("127.0.0.1").content == b"hello world"
    refused = read_with("10.0.0.1-10.0.0.9")
    assert refused.status_code == 403
    assert refused.headers["x-ms-error-code"] == "AuthorizationSourceIPMismatch"
    assert "using this source IP 127.0.0.1." in refused.text


def test_a_newer_api_version_is_refused_naming_what_the_local_cloud_serves(cloud, good):
    token = good.generate_file_shared_access_signature(
        "data", "dir", "f.txt", permission="r", expiry="2099-01-01"
    )
    response = requests_session(cloud.connection).get(
        good.make_file_url("data", "dir", "f.txt", sas_token=token),
        headers={"x-ms-version": "2025-11-05"},
    )
    assert response.status_code == 400
    assert response.headers["x-ms-error-code"] == "InvalidHeaderValue"
    assert (
        "<Message>The API version 2025-11-05 is not supported by the local cloud, which serves "
        "Azure Files up to 2019-02-02 (the Track-1 storage SDKs 2.1.0)." in response.text
    )
