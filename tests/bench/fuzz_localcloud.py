"""The long fuzz of every route of the local cloud (issue 13, point 2).

    .venv/bin/python tests/bench/fuzz_localcloud.py [--requests 10000] [--seed 0]

Sends at least REQUESTS requests drawn by tests/localcloud/fuzzing.py (Batch AI bodies from the
2018-05-01 models, ARM, AAD, Azure Files and Azure Blob routes) to a fresh local cloud, and
prints the requests tried, how many were answered 5xx, how many broke the rules otherwise (a 4xx
without the service's error body, a dropped connection), the status counts (in all, and by
surface: a request that failed its check is not counted there), and the tracebacks in its log.
Exit status 1 if any 5xx, rule break or traceback was seen. The short fuzz in the default tests
is tests/localcloud/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from quickstart.localcloud import LocalCloud  # noqa: E402
from tests.localcloud.fuzzing import FuzzTarget, ModelBodies, send_drawn  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    broken: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as temp:
        with LocalCloud(Path(temp) / "state", cluster_allocation_delay=0.05) as cloud:
            target = FuzzTarget(cloud).prepare()
            bodies = ModelBodies([target.zero_cluster], [target.share_url])

            @seed(args.seed)
            @settings(
                max_examples=args.requests,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(data=st.data())
            def fuzz(data):
                try:
                    send_drawn(target, data, bodies)
                except AssertionError as err:
                    broken.append(str(err).splitlines()[0][:300])
                except OSError as err:  # requests' connection errors are OSErrors
                    broken.append(f"connection: {err}"[:300])

            while target.tried < args.requests:
                fuzz()
            tracebacks = target.tracebacks()
            statuses = dict(sorted(target.statuses.items()))
            by_surface = {k: dict(sorted(v.items())) for k, v in sorted(target.by_surface.items())}
            tried = target.tried
    server_errors = sum(count for status, count in statuses.items() if status >= 500)
    print(f"requests tried: {tried} in {time.monotonic() - started:.0f} s")
    print(f"5xx answers:    {server_errors}")
    print(f"other breaks:   {len(broken) - server_errors}")
    print(f"tracebacks:     {tracebacks}")
    print(f"statuses:       {statuses}")
    print(f"by surface:     {by_surface}")
    for line in broken[:20]:
        print(f"  {line}")
    return 1 if broken or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
