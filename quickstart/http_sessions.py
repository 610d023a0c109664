"""requests sessions that read whole response bodies in large pieces, for the storage SDK.

azure-storage-file hands each request to a requests session and takes the answer's
``Response.content``, which requests fills 10 KB at a time. A 4 MiB range of a download is then
about 400 trips through urllib3 and http.client, and on two cores that Python loop, not the
network or the server, bounds ``get_file_to_path`` (``tests/bench/bench_localcloud_core.py``
prints both rates; the figures are in tests/bench/README.md).

``WholeBodyAdapter`` reads a body that the caller did not ask to stream through requests' own
``iter_content`` in 1 MiB pieces: the same bytes, decoding and exceptions as requests gives, in
fewer steps. Streamed responses (``stream=True``) are left to the caller as before.
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from quickstart.retries import ATTEMPTS, RETRIED_STATUSES

BODY_PIECE = 1 << 20


class WholeBodyAdapter(HTTPAdapter):
    """An HTTPAdapter that reads a non-streamed response body in ``BODY_PIECE`` pieces."""

    def send(self, request, stream=False, **kwargs):
        response = super().send(request, stream=stream, **kwargs)
        if not stream:
            # What Response.content does, with a larger piece; requests then finds it read.
            response._content = b"".join(response.iter_content(BODY_PIECE))
        return response


def whole_body_session(**adapter_options) -> requests.Session:
    """A requests Session whose requests go through a ``WholeBodyAdapter``
    (``adapter_options`` as for ``HTTPAdapter``, e.g. ``max_retries``)."""
    session = requests.Session()
    adapter = WholeBodyAdapter(**adapter_options)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def reconnecting_session() -> requests.Session:
    """The tutorial's session for storage, streaming and downloads: it retries a refused
    connection for about 6 s (0, 0.4, 0.8, 1.6 and 3.2 s apart), as the ARM clients' own policy
    does, long enough for a local cloud to change hands (localcloud.Standby) without failing the
    command; it retries throttling and passing server errors the same way, waiting what
    Retry-After says (quickstart/retries.py says why); and it reads whole answers in large
    pieces."""
    retry = Retry(
        total=ATTEMPTS,
        connect=5,
        read=0,
        status=ATTEMPTS,
        other=0,
        backoff_factor=0.2,
        status_forcelist=RETRIED_STATUSES,
        allowed_methods=None,  # a faulted request had no effect: any method may be resent
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer goes to the SDK, which reports it
    )
    return whole_body_session(max_retries=retry)
