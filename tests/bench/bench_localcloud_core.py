"""Figures for the local cloud's core (issue 3): Azure Files throughput, ARM latency, start time.

    .venv/bin/python tests/bench/bench_localcloud_core.py [--size-mib 128] [--calls 500]

Prints, for a local cloud embedded in this process (as the quickstart and the tests run it)
and for one serving from its own process (as ``python -m quickstart localcloud`` does):

* upload of a SIZE MiB file with FileService.create_file_from_path (max_connections 2, the
  default, and 4), in MB/s, beside shutil.copyfile of the same file in the same run;
* download of it with get_file_to_path (max_connections 2 and 4), through the session the
  product gives the storage client (quickstart/http_sessions.py: whole bodies read in 1 MiB
  pieces) and through a plain requests.Session (10 KB pieces), and beside it what bounds that
  figure: the SDK client alone (into a sink that discards), this disk's write rate, and the
  server read through a SAS URL by a client that reads 4 MiB at a time;
* resource group GET round trips through ResourceManagementClient: p50 and p99;
* start to first 200 on the health URL: first start (certificate made) and later starts, both
  for LocalCloud.start() and for a fresh ``python -m quickstart localcloud`` process.

Goals: >= 200 MB/s up and down, p50 <= 5 ms, start <= 1.5 s.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import io
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from azure.storage.file import FilePermissions

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from quickstart.localcloud import LocalCloud, is_serving, read_connection  # noqa: E402
from tests.conftest import make_file_service, make_resource_client  # noqa: E402

MB = 1_000_000


def mb_per_s(size: int, seconds: float) -> float:
    return size / MB / seconds


def best_of(runs: int, fn) -> float:
    """The fastest of ``runs`` timings (the least disturbed by other load on the machine)."""
    return best_of_with_cpu(runs, fn)[0]


def best_of_with_cpu(runs: int, fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of the fastest of ``runs`` runs."""
    timings = []
    for _ in range(runs):
        cpu, start = time.process_time(), time.perf_counter()
        fn()
        timings.append((time.perf_counter() - start, time.process_time() - cpu))
    return min(timings)


def throughput(
    connection: dict, source: Path, work: Path, runs: int, label: str, copy_rate: float
) -> None:
    size = source.stat().st_size
    service = make_file_service(connection)
    service.create_share("benchshare", fail_on_exist=False)
    for connections in (2, 4):
        seconds = best_of(
            runs,
            lambda: service.create_file_from_path(
                "benchshare", None, "big.bin", str(source), max_connections=connections
            ),
        )
        rate = mb_per_s(size, seconds)
        print(
            f"  [{label}] upload   create_file_from_path max_connections={connections}: "
            f"{rate:7.1f} MB/s  ({rate / copy_rate:.2f}x copyfile; goal 200: {rate / 200:.2f}x)"
        )
    plain_service = make_file_service(connection, session=plain_session(connection))
    for session_label, client in (
        ("whole-body session", service),
        ("plain session", plain_service),
    ):
        for connections in (2, 4):
            target = work / "downloaded.bin"
            target.unlink(missing_ok=True)
            seconds, cpu = best_of_with_cpu(
                runs,
                lambda: client.get_file_to_path(
                    "benchshare", None, "big.bin", str(target), max_connections=connections
                ),
            )
            rate = mb_per_s(size, seconds)
            # In process mode the CPU is the SDK client's alone: near 100% of the wall time means
            # the client, not the server, sets the pace.
            print(
                f"  [{label}] download get_file_to_path, {session_label:18} max_connections={connections}: "
                f"{rate:7.1f} MB/s  ({rate / copy_rate:.2f}x copyfile; goal 200: {rate / 200:.2f}x; "
                f"this process busy {cpu / seconds:.0%} of the time)"
            )
            if target.read_bytes() != source.read_bytes():
                raise SystemExit("download differs from upload")
    download_ceilings(connection, service, source, work, runs, label)
    service.delete_share("benchshare")


def plain_session(connection: dict) -> requests.Session:
    """requests as the SDK gets it by default (bodies read 10 KB at a time), trusting the local CA;
    trust_env off, as REQUESTS_CA_BUNDLE in the environment would replace verify."""
    session = requests.Session()
    session.verify, session.trust_env = connection["ca_cert"], False
    return session


class DiscardingSink(io.RawIOBase):
    """A seekable writable file that keeps nothing: the SDK's download without the disk."""

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def write(self, data) -> int:
        return len(data)


def download_ceilings(
    connection: dict, service, source: Path, work: Path, runs: int, label: str
) -> None:
    """What bounds get_file_to_path, measured in the same run: the SDK client's own read path
    (into a sink that discards), this disk's write rate (the same bytes from memory), and the
    server (the same file read through a SAS URL in 4 MiB chunks, as a client that reads in
    large pieces does)."""
    size = source.stat().st_size
    for connections in (2, 4):
        seconds = best_of(
            runs,
            lambda: service.get_file_to_stream(
                "benchshare", None, "big.bin", DiscardingSink(), max_connections=connections
            ),
        )
        print(
            f"  [{label}]   ceiling: the SDK client alone (whole-body session, get_file_to_stream "
            f"into a discarding sink) max_connections={connections}: {mb_per_s(size, seconds):7.1f} MB/s"
        )
    data = source.read_bytes()

    def write_from_memory():
        with open(work / "written.bin", "wb") as out:
            for offset in range(0, size, 4 * 1024 * 1024):
                out.write(data[offset : offset + 4 * 1024 * 1024])

    print(
        f"  [{label}]   ceiling: this disk (the same bytes written from memory): "
        f"{mb_per_s(size, best_of(runs, write_from_memory)):7.1f} MB/s"
    )
    token = service.generate_file_shared_access_signature(
        "benchshare",
        None,
        "big.bin",
        permission=FilePermissions.READ,
        expiry=datetime.datetime.utcnow() + datetime.timedelta(hours=1),
    )
    url = service.make_file_url("benchshare", None, "big.bin", sas_token=token)
    session = plain_session(connection)

    def read_through_sas():
        with session.get(url, stream=True) as response:
            response.raise_for_status()
            received = sum(len(piece) for piece in response.iter_content(4 * 1024 * 1024))
        if received != size:
            raise SystemExit(f"SAS download returned {received} bytes, not {size}")

    print(
        f"  [{label}]   ceiling: the server (requests through a SAS URL, 4 MiB reads, one "
        f"connection): {mb_per_s(size, best_of(runs, read_through_sas)):7.1f} MB/s"
    )


def latency(connection: dict, calls: int, label: str) -> None:
    client = make_resource_client(connection)
    client.resource_groups.create_or_update("benchgroup", {"location": "eastus"})
    for _ in range(20):
        client.resource_groups.get("benchgroup")  # warm up: token cached, connection open
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        client.resource_groups.get("benchgroup")
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(
        f"  [{label}] resource group GET x{calls}: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
        f"(goal p50 5 ms: {p50 / 5:.2f}x of budget)"
    )


def health_ok(port: int, ca_cert: str) -> bool:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=1, context=ssl.create_default_context(cafile=ca_cert)
    )
    try:
        conn.request("GET", "/_localcloud/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_times_embedded(base: Path, later: int) -> None:
    state = base / "embedded-start"
    start = time.perf_counter()
    cloud = LocalCloud(state).start()
    first = time.perf_counter() - start
    cloud.stop()
    times = []
    for _ in range(later):
        start = time.perf_counter()
        cloud = LocalCloud(state).start()
        times.append(time.perf_counter() - start)
        cloud.stop()
    print(
        f"  [embedded] LocalCloud.start() to health 200: first (certificate made) {first * 1000:.0f} ms, "
        f"later median {statistics.median(times) * 1000:.0f} ms (goal 1500 ms)"
    )


def serve_process(state: Path) -> subprocess.Popen:
    """``python -m quickstart localcloud --state-dir STATE`` (no config file), as a user starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "quickstart", "localcloud", "--state-dir", str(state)],
        cwd=state.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_serving(state: Path, proc: subprocess.Popen, timeout: float = 30) -> dict:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the local cloud process exited with {proc.returncode}")
        try:
            connection = read_connection(state)
        except Exception:
            connection = None
        if connection:
            port = int(connection["resource_manager_url"].rstrip("/").rsplit(":", 1)[1])
            if health_ok(port, connection["ca_cert"]):
                return connection
        time.sleep(0.005)
    raise SystemExit("the local cloud process did not become healthy")


def server_cpu(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_times_process(base: Path, later: int) -> None:
    state = base / "process-start"
    times = []
    for _ in range(later + 1):
        start = time.perf_counter()
        proc = serve_process(state)
        wait_serving(state, proc)
        times.append(time.perf_counter() - start)
        stop_process(proc)
    print(
        f"  [process]  python -m quickstart localcloud to health 200: first (certificate made) "
        f"{times[0] * 1000:.0f} ms, later median {statistics.median(times[1:]) * 1000:.0f} ms "
        f"(goal 1500 ms; includes interpreter start and imports)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3, help="throughput runs; the best is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-localcloud-") as tmp:
        base = Path(tmp)
        source = base / "source.bin"
        source.write_bytes(os.urandom(args.size_mib * 1024 * 1024))
        copy_seconds = best_of(args.runs, lambda: shutil.copyfile(source, base / "copy.bin"))
        copy_rate = mb_per_s(source.stat().st_size, copy_seconds)
        print(
            f"Local cloud core figures ({args.size_mib} MiB file, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.2f})"
        )
        print(f"  baseline shutil.copyfile: {copy_rate:7.1f} MB/s")

        start_times_embedded(base, later=5)
        start_times_process(base, later=3)

        with LocalCloud(base / "embedded") as cloud:
            latency(cloud.connection, args.calls, "embedded")
            throughput(cloud.connection, source, base, args.runs, "embedded", copy_rate)

        proc = serve_process(base / "process")
        try:
            connection = wait_serving(base / "process", proc)
            latency(connection, args.calls, "process")
            throughput(connection, source, base, args.runs, "process", copy_rate)
        finally:
            stop_process(proc)
        if is_serving(connection):
            raise SystemExit("the local cloud process did not stop")


if __name__ == "__main__":
    main()
