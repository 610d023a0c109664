"""Issue 15's figures: the local cloud on Ray against the local backend, in the same run.

    .venv/bin/python tests/bench/bench_ray.py [--submits 6] [--rounds 2] [--epoch-size 6000]

Re-runs itself inside a private network namespace with only loopback (tests/privatenet.py;
root), where it starts a two-node Ray cluster (one CPU each, ray.cluster_utils) and times:

* Ray's start-up: the head and the second node until both are alive;
* submit-to-running: a one-node job (``echo started``) created through the SDK until its
  process's first line is in stdout.txt, ``--submits`` times per backend, the backends taking
  turns; also until the API first says ``running``;
* the tutorial's training throughput: ``python -m quickstart run --epochs 1`` against
  ``python -m quickstart localcloud`` with and without ``--compute ray``, ``--rounds`` times
  each in alternating order; samples/s from the job's ``Finished Epoch`` line.

Prints medians and the ratios Ray / local.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests import privatenet  # noqa: E402

BUNDLES = "STANDARD_NC6=CPU:1"


def submit_to_running(cloud, tmp: Path, count: int, name: str) -> tuple[list, list]:
    """(seconds to first output, seconds to API 'running') of ``count`` one-node jobs."""

    from tests.localcloud.batchai.test_batchai import (
        EXP,
        RG,
        WS,
        job_params,
        output_file,
        sdk_env,
        wait_for,
        wait_for_job,
    )

    env = sdk_env(cloud, tmp, nodes=1)
    first, api = [], []
    for index in range(count):
        params = job_params(env.cluster.id, "echo started")
        job = f"{name}{index}"
        started = time.monotonic()
        env.client.jobs.create(RG, WS, EXP, job, params).result()
        wait_for(
            lambda j=job: env.client.jobs.get(RG, WS, EXP, j).execution_state != "queued",
            60,
            0.005,
        )
        api.append(time.monotonic() - started)
        stdout = output_file(env, job, "stdouterr", "stdout.txt")
        wait_for(lambda s=stdout: s.exists() and "started" in s.read_text(), 120, 0.005)
        first.append(time.monotonic() - started)
        wait_for_job(env.client, job, timeout=120)
    return first, api


def train_once(compute: list, tmp: Path, epoch_size: int) -> float:
    """samples/s of the tutorial's job, one epoch of ``epoch_size`` samples."""
    from tests.localcloud.ray.test_on_ray import quickstart, serving
    from tests.test_end_to_end import user_env

    state = tmp / "state"
    env = {
        **user_env(),
        "QUICKSTART_RAY_BUNDLES": BUNDLES,
        "QUICKSTART_EXTRA_ARGS": f"--epoch-size {epoch_size} --minibatch-size 64",
    }
    with serving(tmp, env, state, *compute):
        run = quickstart(tmp, env, "run", "--epochs", "1", "--state-dir", str(state), timeout=900)
        found = re.search(r"Finished Epoch\[1 of 1\].*\(\s*([\d.]+) samples/s\)", run.stdout)
        if run.returncode != 0 or not found:
            raise SystemExit(f"the tutorial failed ({compute or 'local'}):\n{run.stdout[-3000:]}")
        quickstart(tmp, env, "teardown", "--state-dir", str(state))
        return float(found[1])


def measure(args) -> None:
    from ray.cluster_utils import Cluster

    from quickstart.localcloud import LocalCloud
    from tests.localcloud.ray.test_on_ray import forget_everything_on_ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    node = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}
    temp = tempfile.mkdtemp(prefix="rayq-", dir="/tmp")
    started = time.monotonic()
    cluster = Cluster(
        initialize_head=True, head_node_args={**node, "include_dashboard": False, "temp_dir": temp}
    )
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    ray_start = time.monotonic() - started
    handle = type("Cluster", (), {"address": cluster.address})
    backends = {
        "local": ({"cluster_allocation_delay": 0.1}, []),
        "ray": (
            {
                "cluster_allocation_delay": 0.1,
                "compute": "ray",
                "ray_address": cluster.address,
                "ray_bundles": BUNDLES,
            },
            ["--compute", "ray", "--ray-address", cluster.address],
        ),
    }
    first = {name: [] for name in backends}
    api = {name: [] for name in backends}
    speed = {name: [] for name in backends}
    try:
        order = ["local", "ray"]
        for _ in range(2):
            for name in order:
                with tempfile.TemporaryDirectory() as tmp:
                    cloud = LocalCloud(Path(tmp) / "lc", port=0, **backends[name][0]).start()
                    try:
                        f, a = submit_to_running(cloud, Path(tmp), args.submits // 2, name)
                    finally:
                        cloud.stop()
                        forget_everything_on_ray(handle)
                    first[name] += f
                    api[name] += a
            order.reverse()
        for _ in range(args.rounds):
            for name in order:
                with tempfile.TemporaryDirectory() as tmp:
                    speed[name].append(train_once(backends[name][1], Path(tmp), args.epoch_size))
                    forget_everything_on_ray(handle)
            order.reverse()
    finally:
        cluster.shutdown()
    print(f"Ray start-up (2 nodes, in-process cluster utils): {ray_start:.1f} s")
    for label, data in (("submit-to-first-output", first), ("submit-to-API-running", api)):
        local, ray = statistics.median(data["local"]), statistics.median(data["ray"])
        print(
            f"{label}: local {local * 1000:.0f} ms, ray {ray * 1000:.0f} ms (medians of "
            f"{len(data['local'])}), ray/local {ray / local:.2f}x"
        )
    local, ray = statistics.median(speed["local"]), statistics.median(speed["ray"])
    print(
        f"tutorial training: local {local:.0f} samples/s {speed['local']}, ray {ray:.0f} "
        f"samples/s {speed['ray']}, ray/local {ray / local:.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=6, help="jobs per backend (even)")
    parser.add_argument("--rounds", type=int, default=2, help="tutorial runs per backend")
    parser.add_argument("--epoch-size", type=int, default=6000)
    args = parser.parse_args()
    if privatenet.inside():
        measure(args)
        return 0
    reason = privatenet.why_not()
    if reason:
        print(f"cannot measure: {reason}", file=sys.stderr)
        return 2
    result = privatenet.run([sys.executable, *sys.argv], dict(os.environ), timeout=3600, cwd=REPO)
    print(result.stdout)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
