"""Named points inside multi-step operations where a fault-matrix test kills the server.

Crash consistency is only believable if a crash is tried exactly between the steps that matter
(after a job's process starts but before its handle is saved; after a delete stopped the
processes but before the record went). A server started with ``LOCALCLOUD_CRASH_AT=<name>`` (or
``<name>:<n>`` for the n-th time that point is reached) sends itself SIGKILL there: no cleanup,
no flush, as a power cut of the process. Unset, every point is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

ENVIRONMENT_VARIABLE = "LOCALCLOUD_CRASH_AT"

_armed_name, _, _armed_count = os.environ.get(ENVIRONMENT_VARIABLE, "").partition(":")
_hits = 0
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """SIGKILL this process if the environment armed ``name`` (see the module docstring)."""
    global _hits
    if name != _armed_name:
        return
    with _lock:
        _hits += 1
        if _hits >= int(_armed_count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
