"""Resource-group GET latency while the scheduler works (issue 13, point 3).

    .venv/bin/python tests/bench/bench_scheduler_latency.py [--baseline-calls 300] [--resizes 5]

One local cloud embedded in this process; one client thread GETs the resource group in a loop
through ResourceManagementClient while the main thread drives the scheduler through:

* idle: nothing else happens (the baseline, measured in the same run);
* resize: a cluster grows from 0 to 1,000 nodes (the bound) until they are all idle, then
  shrinks back to 0;
* stubborn stops: six nodes whose setup tasks ignore SIGTERM are taken away by a resize to 0,
  until all six process groups are gone (each needs the full grace period, then SIGKILL).

Prints p50/p99/max of each phase and p99 / baseline p99. Goal: p99 < 100 ms in every phase.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import azure.mgmt.batchai.models as models

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from quickstart.localcloud import LocalCloud  # noqa: E402
from quickstart.localcloud.batchai import nodeagent  # noqa: E402
from quickstart.localcloud.batchai.schema import CLUSTER_TYPE, MAX_NODE_COUNT  # noqa: E402
from tests.conftest import (  # noqa: E402
    make_batchai_client,
    make_credentials,
    make_file_service,
    make_resource_client,
)

RG, WS = "benchgroup", "benchworkspace"


class Sampler:
    """GETs the resource group back to back in its own thread, keeping every latency."""

    def __init__(self, resources):
        self.resources = resources
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            self.resources.resource_groups.get(RG)
            self.samples.append(time.perf_counter() - started)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def report(name: str, samples: list[float], baseline_p99: float | None) -> float:
    p99 = percentile(samples, 99)
    ratio = f"  p99 x{p99 / baseline_p99:.1f} of idle" if baseline_p99 else ""
    print(
        f"{name:<34} {len(samples):>6} GETs  p50 {statistics.median(samples) * 1000:6.1f} ms  "
        f"p99 {p99 * 1000:6.1f} ms  max {max(samples) * 1000:7.1f} ms{ratio}"
    )
    return p99


def wait_for(predicate, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)
    return value


def manual(count: int) -> models.ScaleSettings:
    return models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=count))


def cluster_params(connection: dict, files, nodes: int, setup: str | None = None):
    share = models.AzureFileShareReference(
        account_name=connection["storage_account"],
        credentials=models.AzureStorageCredentialsInfo(account_key=connection["storage_key"]),
        azure_file_url=f"https://{files.primary_endpoint}/benchshare",
        relative_mount_path="afs",
    )
    return models.ClusterCreateParameters(
        vm_size="STANDARD_NC6",
        scale_settings=manual(nodes),
        node_setup=models.NodeSetup(
            mount_volumes=models.MountVolumes(azure_file_shares=[share]),
            setup_task=models.SetupTask(
                command_line=setup, std_out_err_path_prefix="$AZ_BATCHAI_MOUNT_ROOT/afs"
            )
            if setup
            else None,
        ),
        user_account_settings=models.UserAccountSettings(
            admin_user_name="bench", admin_user_password="Adm1n-Passw0rd!"
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-calls", type=int, default=300)
    parser.add_argument("--resizes", type=int, default=5)
    args = parser.parse_args()
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    with (
        tempfile.TemporaryDirectory() as state,
        LocalCloud(Path(state) / "lc", cluster_allocation_delay=0.2) as cloud,
    ):
        connection = cloud.connection
        credentials = make_credentials(connection)
        resources = make_resource_client(connection, credentials)
        client = make_batchai_client(connection, credentials)
        files = make_file_service(connection)
        resources.resource_groups.create_or_update(RG, {"location": "eastus"})
        files.create_share("benchshare")
        client.workspaces.create(RG, WS, "eastus").result()
        client.clusters.create(RG, WS, "big", cluster_params(connection, files, 0)).result()

        idle = Sampler(resources)
        with idle:
            wait_for(lambda: len(idle.samples) >= args.baseline_calls)
        baseline = report("idle (baseline)", idle.samples, None)

        grow, shrink = [], []
        for _ in range(args.resizes):
            with Sampler(resources) as resize:
                client.clusters.update(RG, WS, "big", scale_settings=manual(MAX_NODE_COUNT))
                wait_for(
                    lambda: (
                        client.clusters.get(RG, WS, "big").node_state_counts.idle_node_count
                        == MAX_NODE_COUNT
                    )
                )
                grown = len(resize.samples)
                client.clusters.update(RG, WS, "big", scale_settings=manual(0))
                wait_for(lambda: client.clusters.get(RG, WS, "big").current_node_count == 0)
            grow += resize.samples[:grown]
            shrink += resize.samples[grown:]
        report(f"resize 0 -> {MAX_NODE_COUNT} nodes (x{args.resizes})", grow, baseline)
        report(f"resize {MAX_NODE_COUNT} -> 0 nodes (x{args.resizes})", shrink, baseline)
        report("resize, both ways", grow + shrink, baseline)

        stubborn = "trap '' TERM; sleep 600 & wait; sleep 600"
        client.clusters.create(
            RG, WS, "stubborn", cluster_params(connection, files, 6, stubborn)
        ).result()

        def setup_handles():
            record = next(
                r
                for r in cloud.context.store.list_resources(type=CLUSTER_TYPE)
                if r.name == "stubborn"
            )
            found = [n["setup"] for n in record.extra["compute"]["nodes"] if n.get("setup")]
            return found if len(found) == 6 else None

        handles = [nodeagent.JobHandle.from_json(h) for h in wait_for(setup_handles)]
        with Sampler(resources) as stops:
            started = time.monotonic()
            client.clusters.update(RG, WS, "stubborn", scale_settings=manual(0))
            wait_for(lambda: not any(nodeagent.group_alive(h) for h in handles))
            took = time.monotonic() - started
        report("six stubborn setup-task stops", stops.samples, baseline)
        print(f"  (the six stops took {took:.1f} s in all, in parallel, outside the lock)")
        client.workspaces.delete(RG, WS).result()


if __name__ == "__main__":
    main()
