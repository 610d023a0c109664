"""Benchmark: the Batch AI local cloud's figures (issue 4), each against a baseline of the same run.

    .venv/bin/python tests/bench/bench_batchai.py [--latency-jobs 15] [--load-seconds 5]

1. The whole tutorial (credentials, resource group, share + upload, workspace, cluster until a
   node is idle, experiment, job, monitor with streamed stdout, list outputs, teardown) against
   an embedded local cloud with its default settings and a trivial job: wall time minus the
   job's own run time (goal <= 5 s). Baseline: running the same script directly.
2. Job end -> ``succeeded`` visible through ``jobs.get`` (goal p50 <= 0.5 s): each job writes
   the time just before it exits; the client polls every 10 ms. Baseline: one jobs.get round trip.
3. ``jobs.get`` from 8 threads while a job runs (goals >= 100 calls/s, p99 <= 50 ms), against a
   local cloud in its own process (as ``python -m quickstart localcloud`` serves it): the most
   calls/s 8 threads get back to back, and the latency when the 8 threads together offer
   100 calls/s. Each with the SDK as shipped (msrest opens a new TLS connection per call unless
   the client is used as a context manager) and with ``with client:`` (kept-alive connections).
   Baseline: the health endpoint from the same 8 threads (the server's bare capacity).

Figures 2 and 3 run against the separate server process, so the client's Python (the SDK's
deserialisation is the costliest part of a call) does not share a GIL with the server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import azure.mgmt.batchai.models as models  # noqa: E402

from quickstart.localcloud import LocalCloud  # noqa: E402
from quickstart.localcloud.connection import requests_session  # noqa: E402
from tests.conftest import (  # noqa: E402
    make_batchai_client,
    make_credentials,
    make_file_service,
    make_resource_client,
)
from tests.localcloud.batchai.test_batchai import job_params  # noqa: E402

RG, WS, CLUSTER, EXP, SHARE, MOUNT = (
    "myresourcegroup",
    "myworkspace",
    "mycluster",
    "myexperiment",
    "batchaiquickstart",
    "azurefileshare",
)
TRIVIAL = "import sys\nprint('trained on', sys.argv[1])\nopen(sys.argv[2] + '/model.dnn', 'w').write('m')\n"


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def cluster_params(connection, files, nodes=1):
    return models.ClusterCreateParameters(
        vm_size="STANDARD_NC6",
        scale_settings=models.ScaleSettings(
            manual=models.ManualScaleSettings(target_node_count=nodes)
        ),
        node_setup=models.NodeSetup(
            mount_volumes=models.MountVolumes(
                azure_file_shares=[
                    models.AzureFileShareReference(
                        account_name=connection["storage_account"],
                        credentials=models.AzureStorageCredentialsInfo(
                            account_key=connection["storage_key"]
                        ),
                        azure_file_url=f"https://{files.primary_endpoint}/{SHARE}",
                        relative_mount_path=MOUNT,
                    )
                ]
            )
        ),
        user_account_settings=models.UserAccountSettings(
            admin_user_name="u", admin_user_password="Pa55-word"
        ),
    )


def tutorial(workdir: Path) -> dict:
    """The quickstart's steps with the SDK, as a user script runs them; times each."""
    script = workdir / "ConvNet_MNIST.py"
    script.write_text(TRIVIAL)
    marks = {}
    start = time.perf_counter()
    cloud = LocalCloud(workdir / "state").start()  # default settings: 1 s allocation
    marks["local cloud start"] = time.perf_counter()
    try:
        connection = cloud.connection
        credentials = make_credentials(connection)
        resources = make_resource_client(connection, credentials)
        client = make_batchai_client(connection, credentials)
        files = make_file_service(connection)
        marks["credentials and clients"] = time.perf_counter()
        resources.resource_groups.create_or_update(RG, {"location": "eastus"})
        files.create_share(SHARE, fail_on_exist=False)
        files.create_directory(SHARE, "mnistcntksample", fail_on_exist=False)
        files.create_file_from_path(SHARE, "mnistcntksample", "ConvNet_MNIST.py", str(script))
        marks["resource group, share, upload"] = time.perf_counter()
        client.workspaces.create(RG, WS, "eastus")
        cluster = client.clusters.create(
            RG, WS, CLUSTER, cluster_params(connection, files)
        ).result()
        while client.clusters.get(RG, WS, CLUSTER).node_state_counts.idle_node_count < 1:
            time.sleep(0.1)
        marks["workspace, cluster until idle"] = time.perf_counter()
        client.experiments.create(RG, WS, EXP)
        client.jobs.create(RG, WS, EXP, "myjob", job_params(cluster.id)).result()
        http = requests_session(connection)
        streamed, url = 0, None
        while True:
            job = client.jobs.get(RG, WS, EXP, "myjob")
            if url is None and job.execution_state != "queued":
                url = next(
                    (
                        f.download_url
                        for f in client.jobs.list_output_files(
                            RG,
                            WS,
                            EXP,
                            "myjob",
                            models.JobsListOutputFilesOptions(outputdirectoryid="stdouterr"),
                        )
                        if f.name == "stdout.txt"
                    ),
                    None,
                )
            if url:
                part = http.get(url, headers={"Range": f"bytes={streamed}-"})
                if part.status_code == 206:
                    streamed += len(part.content)
            if job.execution_state in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        assert job.execution_state == "succeeded", job.execution_info.errors
        job_seconds = (job.execution_info.end_time - job.execution_info.start_time).total_seconds()
        marks["experiment, job, monitor"] = time.perf_counter()
        for ident in ("stdouterr", "MODEL"):
            listed = list(
                client.jobs.list_output_files(
                    RG, WS, EXP, "myjob", models.JobsListOutputFilesOptions(outputdirectoryid=ident)
                )
            )
            assert listed, ident
        marks["list outputs"] = time.perf_counter()
        client.jobs.delete(RG, WS, EXP, "myjob")
        client.clusters.delete(RG, WS, CLUSTER)
        resources.resource_groups.delete(RG)
        marks["teardown"] = time.perf_counter()
    finally:
        cloud.stop()
    return {
        "wall": time.perf_counter() - start,
        "job": job_seconds,
        "marks": marks,
        "start": start,
        "streamed": streamed,
    }


def direct_run_seconds(workdir: Path) -> float:
    """Baseline for 1: the same script run directly on this host."""
    out = workdir / "direct"
    out.mkdir(exist_ok=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(workdir / "ConvNet_MNIST.py"), str(workdir), str(out)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def setup(cloud: LocalCloud, workdir: Path):
    connection = cloud.connection
    credentials = make_credentials(connection)
    client = make_batchai_client(connection, credentials)
    files = make_file_service(connection)
    make_resource_client(connection, credentials).resource_groups.create_or_update(
        RG, {"location": "eastus"}
    )
    files.create_share(SHARE)
    client.workspaces.create(RG, WS, "eastus")
    cluster = client.clusters.create(RG, WS, CLUSTER, cluster_params(connection, files)).result()
    client.experiments.create(RG, WS, EXP)
    while client.clusters.get(RG, WS, CLUSTER).node_state_counts.idle_node_count < 1:
        time.sleep(0.05)
    return client, credentials, cluster


def end_to_visible(client, cluster, jobs: int, workdir: Path) -> tuple[list, list]:
    """Seconds from a job's last act to jobs.get saying succeeded; and jobs.get round trips."""
    latencies, round_trips = [], []
    for i in range(jobs):
        marker = workdir / f"end-{i}"
        command = f'sleep 0.3; python3 -c "import time; print(repr(time.time()))" > {marker}'
        client.jobs.create(RG, WS, EXP, f"lat{i}", job_params(cluster.id, command)).result()
        while True:
            sent = time.perf_counter()
            job = client.jobs.get(RG, WS, EXP, f"lat{i}")
            seen = time.time()
            round_trips.append(time.perf_counter() - sent)
            if job.execution_state == "succeeded":
                latencies.append(seen - float(marker.read_text()))
                break
            assert job.execution_state in ("queued", "running"), job.execution_info
            time.sleep(0.01)
    return latencies, round_trips


def load(
    call_factory, threads: int, seconds: float, rate: float | None = None
) -> tuple[float, list]:
    """(calls per second, latencies) of ``threads`` threads calling for ``seconds``: back to
    back, or together offering ``rate`` calls/s (each thread on its own fixed schedule)."""
    latencies, lock, workers_started = [], threading.Lock(), []
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(threads + 1)

    def worker():
        call = call_factory()
        call()  # warm the connection
        mine = []
        barrier.wait()
        interval = threads / rate if rate else 0
        due = time.perf_counter() + (interval * len(workers_started)) / threads if rate else 0
        with lock:
            workers_started.append(1)
        while time.perf_counter() < stop:
            if rate:
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                due += interval
            sent = time.perf_counter()
            call()
            mine.append(time.perf_counter() - sent)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    return len(latencies) / (time.perf_counter() - began), latencies


class ServerProcess:
    """A local cloud in its own process (its own GIL), as a user serves one for scripts."""

    def __init__(self, state: Path):
        self.state = state
        code = (
            "import sys; from quickstart.localcloud import serve_forever; "
            f"sys.exit(serve_forever({str(state)!r}, 0, cluster_allocation_delay=0.1, access_log=False))"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=str(Path(__file__).resolve().parents[2]),
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if "serving" not in line:
            self.process.kill()
            raise RuntimeError(f"the local cloud did not start: {line!r}")
        from quickstart.localcloud import read_connection

        self.connection = read_connection(state)

    def stop(self):
        self.process.send_signal(2)
        self.process.wait(timeout=30)


class _Remote:
    def __init__(self, connection):
        self.connection = connection


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-jobs", type=int, default=15)
    parser.add_argument("--load-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        result = tutorial(workdir)
        direct = direct_run_seconds(workdir)
        overhead = result["wall"] - result["job"]
        print(
            "1. Whole tutorial against the local cloud (trivial job, default 1 s cluster allocation)"
        )
        previous = result["start"]
        for step, mark in result["marks"].items():
            print(f"   {step:32s} {mark - previous:6.2f} s")
            previous = mark
        print(
            f"   wall {result['wall']:.2f} s, job's own run time {result['job']:.2f} s "
            f"(direct run of the same script: {direct:.2f} s)"
        )
        print(
            f"   => wall - job = {overhead:.2f} s   goal <= 5 s: {'MET' if overhead <= 5 else 'NOT MET'} "
            f"(x{overhead / 5:.2f} of goal; x{result['wall'] / direct:.1f} a direct run)"
        )

        server = ServerProcess(workdir / "state2")
        try:
            cloud = _Remote(server.connection)
            client, credentials, cluster = setup(cloud, workdir)
            latencies, trips = end_to_visible(client, cluster, args.latency_jobs, workdir)
            p50 = statistics.median(latencies)
            print(
                f"\n2. Job end -> 'succeeded' visible through jobs.get ({len(latencies)} jobs, 10 ms polling)"
            )
            print(
                f"   p50 {p50 * 1000:.0f} ms, p90 {pct(latencies, 90) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
                f"; baseline jobs.get round trip p50 {statistics.median(trips) * 1000:.1f} ms"
            )
            print(
                f"   => p50 goal <= 500 ms: {'MET' if p50 <= 0.5 else 'NOT MET'} (x{p50 / 0.5:.2f} of goal; "
                f"x{p50 / statistics.median(trips):.1f} a round trip)"
            )

            client.jobs.create(RG, WS, EXP, "busy", job_params(cluster.id, "sleep 120")).result()
            while client.jobs.get(RG, WS, EXP, "busy").execution_state != "running":
                time.sleep(0.02)
            connection = cloud.connection

            def jobs_get(keep_alive=False):
                def make():
                    own = make_batchai_client(connection, credentials)
                    if keep_alive:
                        own.__enter__()  # what `with client:` does: keep the connection
                    return lambda: own.jobs.get(RG, WS, EXP, "busy")

                return make

            def health():
                session = requests_session(connection)
                url = connection["resource_manager_url"].rstrip("/") + "/_localcloud/health"
                return lambda: session.get(url).raise_for_status()

            base_rate, base_lat = load(health, 8, args.load_seconds / 2)
            print(
                f"\n3. jobs.get from 8 threads while a job runs ({args.load_seconds:g} s each; server in its own process)"
            )
            print(
                f"   baseline health endpoint back to back: {base_rate:.0f} calls/s, p99 {pct(base_lat, 99) * 1000:.1f} ms"
            )
            for label, keep in (
                ("SDK as shipped (new connection per call)", False),
                ("with client: (kept-alive)", True),
            ):
                rate, lats = load(jobs_get(keep), 8, args.load_seconds)
                paced_rate, paced = load(jobs_get(keep), 8, args.load_seconds, rate=100)
                p99, paced_p99 = pct(lats, 99), pct(paced, 99)
                print(f"   {label}:")
                print(
                    f"     back to back: {rate:.0f} calls/s (x{rate / 100:.2f} of goal 100, x{rate / base_rate:.2f} of "
                    f"baseline), p50 {statistics.median(lats) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
                )
                print(
                    f"     offered 100 calls/s: {paced_rate:.0f} calls/s done, p50 {statistics.median(paced) * 1000:.1f} ms, "
                    f"p99 {paced_p99 * 1000:.1f} ms => >= 100 calls/s with p99 <= 50 ms: "
                    f"{'MET' if paced_rate >= 95 and paced_p99 <= 0.05 else 'NOT MET'} (p99 x{paced_p99 / 0.05:.2f} of goal)"
                )
            assert client.jobs.get(RG, WS, EXP, "busy").execution_state == "running"
            client.jobs.terminate(RG, WS, EXP, "busy").result()
        finally:
            server.stop()
    print(f"\n(cores: {os.cpu_count()}; goals from issue 4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
