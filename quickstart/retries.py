"""Riding out throttling and passing server errors (429, 500, 503), as Azure asked clients to:
retry with back-off, and wait what ``Retry-After`` says.

The SDKs of 2018 each had a gap that a run of the tutorial falls into when the service (or the
local cloud's fault rules, see quickstart/localcloud/faults.py) answers a few percent of calls
that way:

* the ARM clients (msrest) retry 3 times, and not POST or PATCH at all under urllib3 2 (msrest
  sets the attribute urllib3 1 read); ``arm_retries`` allows every method, more times;
* the storage SDK never retries 429 and waits 15 s and more between its own tries; the storage
  session (http_sessions.py) retries these answers first, briefly, honouring Retry-After;
* signing in (adal) never retries; ``signing_in`` does, for AAD's "try again" answers only, so a
  wrong secret still fails at once.
"""

from __future__ import annotations

import time

import requests
from msrest.exceptions import AuthenticationError

ATTEMPTS = 8  # with 1 call in 5 failing, all 9 tries of one call fail once in 2 million
RETRIED_STATUSES = (429, 500, 502, 503, 504)
AAD_TRY_AGAIN = ("temporarily_unavailable", "server_error")


def arm_retries(client) -> None:
    """Give an msrest client (BatchAIManagementClient, ResourceManagementClient) the retries
    above: ATTEMPTS tries for every method; Retry-After is honoured by urllib3."""
    client.config.retry_policy.retries = ATTEMPTS
    client.config.retry_policy.policy.allowed_methods = None  # every method may be resent


def signing_in(make_credentials, attempts: int = ATTEMPTS, sleep=time.sleep):
    """``make_credentials()``, tried again while AAD answers "try again later": 429 (which adal
    raises as requests' HTTPError, honouring Retry-After here) or an error it says will pass."""
    for attempt in range(attempts + 1):
        backoff = min(5.0, 0.2 * 2**attempt)
        try:
            return make_credentials()
        except requests.HTTPError as err:
            if attempt == attempts or err.response is None or err.response.status_code != 429:
                raise
            sleep(_retry_after(err.response, backoff))
        except AuthenticationError as err:
            answer = getattr(err.inner_exception, "error_response", None) or {}
            if attempt == attempts or answer.get("error") not in AAD_TRY_AGAIN:
                raise
            sleep(backoff)
    raise AssertionError("unreachable")


def _retry_after(response, default: float) -> float:
    try:
        return min(60.0, max(0.0, float(response.headers.get("Retry-After", default))))
    except ValueError:
        return default
