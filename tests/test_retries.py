"""quickstart/retries.py: sign-in tried again only for AAD's "try again later" answers; the ARM
clients retry every method; the storage session retries 429/503 honouring Retry-After."""

from __future__ import annotations

from unittest import mock

import adal
import pytest
import requests
from azure.mgmt.resource import ResourceManagementClient
from msrest.exceptions import AuthenticationError
from msrestazure.azure_active_directory import BasicTokenAuthentication

from quickstart.http_sessions import reconnecting_session
from quickstart.retries import ATTEMPTS, arm_retries, signing_in


def _aad_error(error: str) -> AuthenticationError:
    try:
        raise adal.AdalError("token request failed", {"error": error})
    except adal.AdalError as inner:
        return AuthenticationError("", inner)


def _throttled(retry_after: str) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = 429
    response.headers["Retry-After"] = retry_after
    return requests.HTTPError(response=response)


def test_sign_in_is_tried_again_while_aad_says_try_again():
    sleeps = []
    make = mock.Mock(
        side_effect=[_throttled("2"), _aad_error("temporarily_unavailable"), "credentials"]
    )
    assert signing_in(make, sleep=sleeps.append) == "credentials"
    assert make.call_count == 3
    assert sleeps[0] == 2.0  # Retry-After, then the back-off


def test_a_wrong_secret_fails_at_once():
    make = mock.Mock(side_effect=_aad_error("invalid_client"))
    with pytest.raises(AuthenticationError):
        signing_in(make, sleep=lambda s: None)
    assert make.call_count == 1


def test_sign_in_gives_up_after_its_attempts():
    make = mock.Mock(side_effect=_throttled("0"))
    with pytest.raises(requests.HTTPError):
        signing_in(make, attempts=3, sleep=lambda s: None)
    assert make.call_count == 4


def test_arm_clients_retry_every_method():
    client = ResourceManagementClient(BasicTokenAuthentication({"access_token": "x"}), "sub")
    arm_retries(client)
    policy = client.config.retry_policy()
    assert policy.total == ATTEMPTS
    assert policy.is_retry("POST", 503) and policy.is_retry("PATCH", 500)


def test_the_storage_session_retries_throttling_and_passing_errors():
    retry = reconnecting_session().get_adapter("https://").max_retries
    assert retry.is_retry("PUT", 503) and retry.is_retry("POST", 429)
    assert not retry.is_retry("PUT", 404)
    assert retry.respect_retry_after_header and not retry.raise_on_status


@pytest.mark.parametrize(
    ("retry_after", "slept"),
    [
        ("120", 60.0),
        ("60", 60.0),
        ("0", 0.0),
        ("-3", 0.0),
        ("1.5", 1.5),
        ("soon", 0.2),
        (None, 0.2),
    ],
)
def test_sign_in_waits_what_retry_after_says_within_a_minute(retry_after, slept):
    """Retry-After is obeyed up to 60 s (a longer one is cut short), never negative, and the
    back-off stands in when it is missing or not a number of seconds."""
    throttled = _throttled("0")
    del throttled.response.headers["Retry-After"]
    if retry_after is not None:
        throttled.response.headers["Retry-After"] = retry_after
    sleeps = []
    assert signing_in(mock.Mock(side_effect=[throttled, "ok"]), sleep=sleeps.append) == "ok"
    assert sleeps == [slept]
