"""Figures for the local cloud's Blob service (issue 17): 128 MiB up and down through the SDK,
beside the local cloud's Azure Files and beside Azurite's Blob service, in the same run.

    .venv/bin/python tests/bench/bench_blob.py [--size-mib 128] [--runs 3] [--azurite DIR]
        [--max-connections 2] [--server embedded|process] [--baseline DIR]

For a local cloud embedded in this process (as the tests run it; or, with ``--server process``,
serving from its own process as ``python -m quickstart localcloud`` runs it for a user and as
Azurite runs), prints in MB/s (best of RUNS, the three taking turns within each run):

* Azure Files: FileService.create_file_from_path and get_file_to_path (max_connections 2, the
  SDK's default);
* Azure Blob: BlockBlobService.create_blob_from_path (Put Block / Put Block List in 4 MiB
  blocks) and get_blob_to_path, the same way, through the same session the product gives the
  storage clients (quickstart/http_sessions.py);
* Azurite's Blob service (``azurite-blob``, disk persistence, serving HTTPS with the local
  cloud's own certificate so both pay for TLS), driven by the same client code; Azurite comes
  from the npm registry (``npm install azurite`` into a temporary folder, or the folder given
  with --azurite). Without node/npm, or if the install fails, those lines say why.

With ``--server process`` it also prints the median CPU seconds the local cloud's process spent
per transfer, a figure the machine's load barely moves, and what one range GET (one piece of a
download) costs the client and the server through each SDK. Each Blob figure is printed with its
ratio to Files' and to Azurite's in the same run; with ``--baseline DIR`` (another checkout of
this repository, served from its own process), also to that checkout's Blob and its server's CPU
per range GET, for before/after figures of a change.

With ``--max-connections 1`` the two SDKs send the same requests one after another; at 2 they
differ on the client side: FileService's workers each read their own range from the file, while
BlockBlobService reads every block in the calling thread and hands it to a worker (a bounded
pipeline), so its upload waits on its own reads. Run both to tell server from client. Embedded,
the SDK's threads and the local cloud's share one interpreter lock, so that pipeline weighs more
there than against a local cloud of its own process.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from quickstart.localcloud import LocalCloud  # noqa: E402
from tests.bench.bench_localcloud_core import server_cpu, stop_process  # noqa: E402
from tests.conftest import make_blob_service, make_file_service  # noqa: E402

MB = 1_000_000
# Azurite's documented development account (public, the same in every Azurite install)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def rate(size: int, seconds: float) -> float:
    return size / MB / seconds


def files_target(connection: dict, source: Path, work: Path, connections: int):
    """(upload, download) of ``source`` through the local cloud's Azure Files."""
    service = make_file_service(connection)
    service.create_share("bench", fail_on_exist=False)
    target = work / "files-down.bin"
    return (
        lambda: service.create_file_from_path(
            "bench", None, "big.bin", str(source), max_connections=connections
        ),
        lambda: service.get_file_to_path(
            "bench", None, "big.bin", str(target), max_connections=connections
        ),
        target,
    )


def blob_target(
    connection: dict,
    connection_string: str,
    source: Path,
    work: Path,
    label: str,
    connections,
    download_piece: int | None = None,
):
    """(upload, download) of ``source`` through a Blob service, with BlockBlobService; its
    download in pieces of ``download_piece`` bytes instead of the SDK's own 4 MiB."""
    service = make_blob_service(connection, connection_string)
    if download_piece:
        service.MAX_CHUNK_GET_SIZE = download_piece
    service.create_container("bench", fail_on_exist=False)
    target = work / f"{label}-down.bin"
    return (
        lambda: service.create_blob_from_path(
            "bench", "big.bin", str(source), max_connections=connections
        ),
        lambda: service.get_blob_to_path(
            "bench", "big.bin", str(target), max_connections=connections
        ),
        target,
    )


def interleaved_best(targets: dict, runs: int, size: int, source: Path, servers: dict) -> tuple:
    """({label: (upload MB/s, download MB/s)}, each the best of ``runs``; {label: (upload,
    download) CPU seconds of its server process, the median}, for the labels ``servers`` names
    a process of). Every run times each target in turn, so a burst of load on this shared
    machine hits all of them alike, in an order that turns each run; a server's CPU time
    barely depends on that load."""
    best = {label: [float("inf"), float("inf")] for label in targets}
    cpu = {label: ([], []) for label in servers}
    labels = list(targets)
    for run in range(runs):
        turn = labels[run % len(labels) :] + labels[: run % len(labels)]
        for phase in (0, 1):
            # who goes first turns, so no one always follows the writes of the same other one
            for label in turn:
                steps = targets[label]
                used = server_cpu(servers[label]) if label in servers else 0.0
                start = time.perf_counter()
                steps[phase]()
                best[label][phase] = min(best[label][phase], time.perf_counter() - start)
                if label in servers:
                    cpu[label][phase].append(server_cpu(servers[label]) - used)
    for _, _, target in targets.values():
        check_same(source, target)
    rates = {label: (rate(size, up), rate(size, down)) for label, (up, down) in best.items()}
    return rates, {label: tuple(map(statistics.median, pair)) for label, pair in cpu.items()}


def request_cost(connection: dict, pid: int, calls: int = 1000) -> dict:
    """{label: (client, server) CPU milliseconds per one-byte range GET}, Files and Blob, the
    way each SDK asks for one piece of a download: what each extra piece costs either side, so a
    download in smaller pieces (the Blob SDK's 4 MiB against the Files SDK's 8 MiB) can be told
    from a slower service."""
    files = make_file_service(connection)
    files.create_share("cost", fail_on_exist=False)
    files.create_file_from_bytes("cost", None, "one.bin", b"x" * 1024)
    blobs = make_blob_service(connection)
    blobs.create_container("cost", fail_on_exist=False)
    blobs.create_blob_from_bytes("cost", "one.bin", b"x" * 1024)
    tag = blobs.get_blob_properties("cost", "one.bin").properties.etag
    calls_of = {
        "files": lambda: files._get_file("cost", None, "one.bin", start_range=0, end_range=0),
        "blob": lambda: blobs._get_blob(
            "cost", "one.bin", start_range=0, end_range=0, if_match=tag
        ),
    }
    cost = {}
    for label, call in calls_of.items():
        client, server = time.process_time(), server_cpu(pid)
        for _ in range(calls):
            call()
        cost[label] = (
            (time.process_time() - client) * 1000 / calls,
            (server_cpu(pid) - server) * 1000 / calls,
        )
    return cost


def check_same(source: Path, target: Path) -> None:
    if target.read_bytes() != source.read_bytes():
        raise SystemExit(f"{target.name} differs from what was uploaded")


def install_azurite(folder: Path) -> tuple[Path | None, str]:
    """(path of azurite-blob, "") once installed from the npm registry, else (None, why)."""
    program = folder / "node_modules" / ".bin" / "azurite-blob"
    if program.exists():
        return program, ""
    if not shutil.which("npm") or not shutil.which("node"):
        return None, "node and npm are not installed"
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "azurite"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not program.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"npm install azurite failed: {tail[0]}"
    return program, ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_azurite(program: Path, workspace: Path, tls: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [
            str(program),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(workspace),
            "--cert",
            str(tls / "server.pem"),
            "--key",
            str(tls / "server-key.pem"),
            "--silent",
            "--skipApiVersionCheck",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"Azurite exited: {process.stderr.read().decode()[-300:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("Azurite did not start listening within 30 s")


@contextlib.contextmanager
def local_cloud(where: str, state: Path, code: Path = REPO):
    """(connection, process id or None) of a local cloud serving from ``state``: in this
    process, or from its own running the checkout ``code`` (stopped with Ctrl-C's signal, as its
    user stops it)."""
    if where == "embedded":
        with LocalCloud(state, port=0) as cloud:
            yield cloud.connection, None
        return
    process = subprocess.Popen(
        [sys.executable, "-m", "quickstart", "localcloud", "--port", "0", "--state-dir", state],
        cwd=code,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in process.stdout:
            if line.strip().startswith("connection:"):
                break
        else:
            raise SystemExit("the local cloud did not start (python -m quickstart localcloud)")
        yield json.loads((state / "connection.json").read_text()), process.pid
    finally:
        stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-connections", type=int, default=2, help="the SDKs' default: 2")
    parser.add_argument("--azurite", type=Path, help="a folder with azurite installed by npm")
    parser.add_argument(
        "--server",
        choices=("embedded", "process"),
        default="embedded",
        help="the local cloud in this process (as the tests run it) or in its own",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (say `git archive REV | tar -x -C DIR`): its Blob, served from "
        "its own process, is timed beside ours (for before/after figures)",
    )
    args = parser.parse_args()
    print(
        f"bench_blob: {args.size_mib} MiB, best of {args.runs}, "
        f"max_connections={args.max_connections}, local cloud {args.server}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"load {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="bench-blob-") as temp:
        work = Path(temp)
        source = work / "big.bin"
        with open(source, "wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(1024 * 1024))
        with contextlib.ExitStack() as serving:
            connection, pid = serving.enter_context(local_cloud(args.server, work / "localcloud"))
            servers = {"files": pid, "blob": pid} if pid else {}
            targets = {
                "files": files_target(connection, source, work, args.max_connections),
                "blob": blob_target(
                    connection,
                    connection["storage_connection_string"],
                    source,
                    work,
                    "blob",
                    args.max_connections,
                ),
            }
            # the Blob SDK downloads in 4 MiB pieces, the Files SDK in 8 MiB ones: the same Blob
            # download in Files' pieces tells the server's part from the client's
            targets["blob-8mib"] = blob_target(
                connection,
                connection["storage_connection_string"],
                source,
                work,
                "blob-8mib",
                args.max_connections,
                download_piece=8 * 1024 * 1024,
            )
            if args.baseline:
                before, servers["baseline"] = serving.enter_context(
                    local_cloud("process", work / "baseline", args.baseline.resolve())
                )
                targets["baseline"] = blob_target(
                    before,
                    before["storage_connection_string"],
                    source,
                    work,
                    "baseline",
                    args.max_connections,
                )
            program, why = install_azurite(args.azurite or work / "azurite")
            process = None
            if program is not None:
                process, port = start_azurite(
                    program, work / "azurite-data", Path(connection["ca_cert"]).parent
                )
                targets["azurite"] = blob_target(
                    connection,
                    f"DefaultEndpointsProtocol=https;AccountName={AZURITE_ACCOUNT};"
                    f"AccountKey={AZURITE_KEY};"
                    f"BlobEndpoint=https://127.0.0.1:{port}/{AZURITE_ACCOUNT}",
                    source,
                    work,
                    "azurite",
                    args.max_connections,
                )
            cost = request_cost(connection, pid) if pid else {}
            if args.baseline:  # the same requests against the baseline's server, for the ratio
                cost_before = request_cost(before, servers["baseline"])
            try:
                figures, cpu = interleaved_best(
                    targets, args.runs, source.stat().st_size, source, servers
                )
            finally:
                if process is not None:
                    stop_process(process)
    files, ours, azurite = figures["files"], figures["blob"], figures.get("azurite")
    print(f"  Files   upload   create_file_from_path: {files[0]:7.1f} MB/s")
    print(f"  Files   download get_file_to_path:      {files[1]:7.1f} MB/s")
    for phase, label in enumerate(
        ("upload   create_blob_from_path:", "download get_blob_to_path:     ")
    ):
        other = azurite[phase] if azurite else None
        versus = f"{ours[phase] / other:.2f}x Azurite's {other:.1f} MB/s" if other else why
        print(
            f"  Blob    {label} {ours[phase]:7.1f} MB/s  "
            f"({ours[phase] / files[phase]:.2f}x Files; {versus})"
        )
    pieces = figures["blob-8mib"][1]
    print(
        f"  Blob    download in Files' 8 MiB pieces: {pieces:7.1f} MB/s  "
        f"({pieces / files[1]:.2f}x Files)"
    )
    for label, (up, down) in cpu.items():
        print(f"  server CPU per transfer ({label}): upload {up:.2f} s, download {down:.2f} s")
    for label, (client, server) in cost.items():
        versus = ""
        if args.baseline:
            server_before = cost_before[label][1]
            versus = f" ({server / server_before:.2f}x the baseline's {server_before:.2f} ms)"
        print(
            f"  CPU per one-piece range GET ({label}): client {client:.2f} ms, "
            f"server {server:.2f} ms{versus}"
        )
    if "baseline" in figures:
        before = figures["baseline"]
        print(
            f"  Blob    against the baseline checkout: upload {ours[0] / before[0]:.2f}x "
            f"({before[0]:.1f} MB/s), download {ours[1] / before[1]:.2f}x ({before[1]:.1f} MB/s)"
        )


if __name__ == "__main__":
    main()
