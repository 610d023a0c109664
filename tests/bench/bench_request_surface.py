"""Figures for the local cloud's request surface (issue 13, points 1 and the load figure).

    .venv/bin/python tests/bench/bench_request_surface.py [--seconds 60] [--clients 32]
        [--baseline COMMIT]

Runs each figure twice in the same run: against this tree's server and against the server of
BASELINE (default: the commit this work started from, extracted with ``git archive``), both as
``python -m quickstart localcloud`` processes, and prints the ratios:

* RSS growth of the server while one client streams a 300 MB token form (goal: < 20 MiB);
* CLIENTS clients, each on its own keep-alive connection, for SECONDS seconds, cycling through
  a mix of calls (resource-group GET, token POST, Azure Files SAS GET and a 64 KiB Put Range,
  Batch AI cluster and experiment GETs): operations per second, p50 and p99 latency, the
  server's CPU time per call, and the server's RSS before and after. The clients run on the same
  cores as the server, in one Python process, so operations per second measure the clients
  about as much as the server; the server's CPU per call is its own cost.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench_localcloud_core import (  # noqa: E402
    server_cpu,
    stop_process,
    wait_serving,
)
from tests.localcloud.fuzzing import FuzzTarget  # noqa: E402

MIB = 1024 * 1024
DEFAULT_BASELINE = "c4825d5"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def serve(code: Path, state: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "quickstart", "localcloud", "--state-dir", str(state)],
        cwd=code,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(code)},
    )
    return proc, wait_serving(state, proc)


def huge_token_form(connection: dict, size: int) -> str:
    """Stream a ``size``-byte form to the token endpoint; what the server answered."""
    url = urlsplit(connection["resource_manager_url"])
    context = ssl.create_default_context(cafile=connection["ca_cert"])
    head = (
        f"POST /{connection['tenant']}/oauth2/token HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    piece = b"client_secret=" + b"a" * (MIB - 14)
    answer = b""
    with socket.create_connection((url.hostname, url.port), timeout=60) as plain:
        with context.wrap_socket(plain, server_hostname=url.hostname) as tls:
            try:
                tls.sendall(head)
                sent = 0
                while sent < size:
                    tls.sendall(piece[: min(len(piece), size - sent)])
                    sent += len(piece)
            except OSError:
                pass  # the server answered and closed before taking it all: as intended
            try:
                answer = tls.recv(200)
            except OSError:
                pass
    first = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    return first or "(connection closed, no answer)"


def rss_under_huge_form(code: Path, state: Path, size: int) -> float:
    proc, connection = serve(code, state)
    try:
        before = rss_mib(proc.pid)
        answer = huge_token_form(connection, size)
        time.sleep(1.0)
        after = rss_mib(proc.pid)
    finally:
        stop_process(proc)
    print(f"    answer: {answer}; RSS {before:.0f} -> {after:.0f} MiB")
    return after - before


def mixed_load(code: Path, state: Path, clients: int, seconds: float) -> dict:
    proc, connection = serve(code, state)
    try:
        cloud = SimpleNamespace(
            connection=connection,
            base_url=connection["resource_manager_url"].rstrip("/"),
            state_dir=state,
        )
        setup = FuzzTarget(cloud).prepare(blob=False)  # the mix is the same for both trees
        sas_file = setup.files(
            "PUT", "fuzzshare/read.bin", {}, {"x-ms-type": "file", "x-ms-content-length": "16384"}
        )
        assert sas_file.status_code == 201
        before = rss_mib(proc.pid)
        cpu_before = server_cpu(proc.pid)
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def client(number: int) -> None:
            target = FuzzTarget(cloud)
            name = f"fuzzshare/c{number}.bin"
            create = {"x-ms-type": "file", "x-ms-content-length": str(MIB)}
            target.files("PUT", name, {}, create)
            chunk = os.urandom(64 * 1024)
            rg = f"/subscriptions/{target.sub}/resourcegroups/{target.rg}"
            calls = [
                lambda: target.arm("GET", rg, version="2021-04-01"),
                lambda: target.session.post(
                    f"{target.base}/{connection['tenant']}/oauth2/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": connection["client_id"],
                        "client_secret": connection["client_secret"],
                        "resource": connection["active_directory_resource_id"],
                    },
                ),
                lambda: target.files("GET", "fuzzshare/read.bin", {}),
                lambda: target.files(
                    "PUT",
                    name,
                    {"comp": "range"},
                    {"x-ms-write": "update", "x-ms-range": f"bytes=0-{len(chunk) - 1}"},
                    chunk,
                ),
                lambda: target.arm("GET", target.zero_cluster),
                lambda: target.arm("GET", f"{target.ws}/experiments/exp"),
            ]
            mine, failed, i = [], 0, number
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                response = calls[i % len(calls)]()
                mine.append(time.perf_counter() - started)
                failed += response.status_code >= 300
                i += 1
            with lock:
                latencies.extend(mine)
                errors[0] += failed

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.monotonic() - started
        after = rss_mib(proc.pid)
        cpu_used = server_cpu(proc.pid) - cpu_before
    finally:
        stop_process(proc)
    latencies.sort()
    return {
        "ops": len(latencies) / took,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "rss": (before, after),
        "errors": errors[0],
        "count": len(latencies),
        "cpu": cpu_used * 1000 / max(1, len(latencies)),
    }


def extract(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True
    ).stdout
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--form-mib", type=int, default=300)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        base = Path(temp)
        trees = {"this tree": REPO, f"baseline {args.baseline}": extract(args.baseline, base / "b")}
        if args.form_mib:  # --form-mib 0: only the mixed clients
            print(f"RSS growth under a {args.form_mib} MB token form (goal < 20 MiB):")
            growth = {}
            for label, code in trees.items():
                print(f"  {label}:")
                growth[label] = rss_under_huge_form(
                    code, base / f"form-{len(growth)}", args.form_mib * MIB
                )
            for label, value in growth.items():
                print(f"  {label}: +{value:.1f} MiB")
        print(
            f"{args.clients} mixed clients for {args.seconds:.0f} s (clients on the same cores), "
            f"{args.rounds} rounds, the order alternating:"
        )
        results: dict[str, list] = {label: [] for label in trees}
        for round_no in range(args.rounds):
            order = list(trees.items())
            for label, code in order if round_no % 2 == 0 else order[::-1]:
                state = base / f"load-{round_no}-{len(results[label])}-{label[:4]}"
                r = mixed_load(code, state, args.clients, args.seconds)
                results[label].append(r)
                print(
                    f"  round {round_no + 1}, {label}: {r['ops']:.0f} ops/s ({r['count']} calls, "
                    f"{r['errors']} not 2xx), p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms, "
                    f"server CPU {r['cpu']:.2f} ms per call, "
                    f"RSS {r['rss'][0]:.0f} -> {r['rss'][1]:.0f} MiB "
                    f"(+{r['rss'][1] - r['rss'][0]:.0f})"
                )
        mean = {
            label: {key: statistics.mean(r[key] for r in runs) for key in ("ops", "p50", "p99")}
            for label, runs in results.items()
        }
        for label, runs in results.items():
            mean[label]["cpu"] = statistics.mean(r["cpu"] for r in runs)
        new, old = mean["this tree"], mean[f"baseline {args.baseline}"]
        print(
            f"  means: this tree {new['ops']:.0f} ops/s, p50 {new['p50']:.0f} ms, p99 "
            f"{new['p99']:.0f} ms; baseline {old['ops']:.0f} ops/s, p50 {old['p50']:.0f} ms, "
            f"p99 {old['p99']:.0f} ms"
        )
        print(
            f"  ratios this tree / baseline: throughput {new['ops'] / old['ops']:.2f}x, "
            f"p50 {new['p50'] / old['p50']:.2f}x, p99 {new['p99'] / old['p99']:.2f}x, "
            f"server CPU per call {new['cpu'] / old['cpu']:.2f}x ({new['cpu']:.2f} against "
            f"{old['cpu']:.2f} ms)"
        )


if __name__ == "__main__":
    main()
