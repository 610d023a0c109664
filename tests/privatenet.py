"""Run a command inside a private network namespace that has only loopback.

Ray takes the machine's interface address whatever it is told and listens on every
interface; inside ``unshare --net`` (root, as CI runs) with ``lo`` up, the only address is
127.0.0.1, so a Ray cluster, the local cloud and the SDK clients started there stay on it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

INSIDE = "QUICKSTART_PRIVATE_NETWORK"  # set in the namespace's environment


def inside() -> bool:
    return os.environ.get(INSIDE) == "1"


@functools.lru_cache(maxsize=1)
def why_not() -> str | None:
    """Why a private network namespace cannot be made here, or None if it can."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare (util-linux) and ip (iproute2)"
    probe = subprocess.run(
        ["unshare", "--net", "sh", "-c", "ip link set lo up"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"unshare --net failed (needs root): {probe.stderr.strip()[:200]}"
    return None


def run(argv: list, env: dict, timeout: float, cwd=None) -> subprocess.CompletedProcess:
    """``argv`` in a fresh network namespace with ``lo`` up; output captured (text)."""
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv],
        env={**env, INSIDE: "1"},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
