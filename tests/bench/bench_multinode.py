"""Benchmark: jobs over several nodes (issue 14), each figure beside a baseline of the same run.

    .venv/bin/python tests/bench/bench_multinode.py [--repeats 5] [--skip-launch]
        [--skip-training] [--epochs 1 40] [--nodes 2 1] [--one-node-threads N]

1. Submit -> every rank running, for 2 and 4 nodes, with the PyTorch launch (one process per
   node, started by the node agent) and the MPI launch (mpirun over the hostfile): each rank's
   first statement writes the time; the figure is the latest of them minus the moment before
   ``jobs.create``. Baseline: the same job on one node (medians of ``--repeats`` runs).
2. The quickstart (``python -m quickstart run --epochs E`` for each of ``--epochs``) on two
   nodes (MPI, data-parallel, one thread per rank) beside one node (one process, both cores),
   same day, same machine: the mean time per epoch from the job's own ``Finished Epoch``
   lines, the final test error, the whole run's wall time, and the load average before and
   after each run (the machine is shared). ``--one-node-threads`` sets OMP_NUM_THREADS for
   the one-node run; ``--nodes`` picks the runs (the ratio needs both).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import azure.mgmt.batchai.models as models  # noqa: E402

from quickstart.localcloud import LocalCloud  # noqa: E402
from tests.localcloud.batchai.test_batchai import EXP, RG, WS, job_params, sdk_env  # noqa: E402

STAMP = (
    "import os, time\n"
    "out = os.environ['AZ_BATCHAI_OUTPUT_MODEL']\n"
    "rank = os.environ.get('OMPI_COMM_WORLD_RANK') or os.environ['AZ_BATCHAI_TASK_INDEX']\n"
    "open(os.path.join(out, 'started-' + rank), 'w').write(repr(time.time()))\n"
)


def all_ranks_running(env, name: str, nodes: int, toolkit: str, script: str) -> float:
    """Seconds from just before jobs.create until the last rank wrote its start time."""
    if toolkit == "pytorch":
        settings = {"py_torch_settings": models.PyTorchSettings(python_script_file_path=script)}
    else:
        line = f"{sys.executable} {script}"
        mpi = models.CustomMpiSettings(command_line=line, process_count=nodes)
        settings = {"custom_mpi_settings": mpi}
    params = job_params(env.cluster.id, node_count=nodes, **settings)
    submitted = time.time()
    env.client.jobs.create(RG, WS, EXP, name, params)
    job = None
    while job is None or job.execution_state not in ("succeeded", "failed"):
        time.sleep(0.02)
        job = env.client.jobs.get(RG, WS, EXP, name)
    if job.execution_state != "succeeded":
        raise SystemExit(f"job {name} failed: {job.execution_info.errors}")
    folder = env.share_dir / job.job_output_directory_path_segment / "outputs" / "Models"
    stamps = [float((folder / f"started-{r}").read_text()) for r in range(nodes)]
    return max(stamps) - submitted


def launch_figures(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        with LocalCloud(tmp_path / "cloud", port=0, cluster_allocation_delay=0.1) as cloud:
            env = sdk_env(cloud, tmp_path, nodes=4)
            stamp = tmp_path / "stamp.py"
            stamp.write_text(STAMP)
            env.files.create_file_from_path(
                "batchaiquickstart", "mnistcntksample", "stamp.py", str(stamp)
            )
            script = "$AZ_BATCHAI_INPUT_SAMPLE/stamp.py"
            print("submit -> every rank running (median of", repeats, "runs)")
            for toolkit in ("pytorch", "mpi"):
                medians = {}
                for nodes in (1, 2, 4):
                    runs = [
                        all_ranks_running(env, f"{toolkit}{nodes}_{i}", nodes, toolkit, script)
                        for i in range(repeats)
                    ]
                    medians[nodes] = statistics.median(runs)
                    print(
                        f"  {toolkit:8s} {nodes} node(s): {medians[nodes]:.3f} s "
                        f"(min {min(runs):.3f}, max {max(runs):.3f}; "
                        f"{medians[nodes] / medians[1]:.2f}x the 1-node job)"
                    )


def quickstart_run(nodes: int, epochs: int, threads: int | None = None) -> dict:
    """One `python -m quickstart run --nodes N --epochs E` in a fresh folder."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO), "QUICKSTART_POLL_INTERVAL": "0.5"}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        command = ["run", "--nodes", str(nodes), "--epochs", str(epochs)]
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "quickstart", *command],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=6 * 3600,
        )
        wall = time.monotonic() - started
        load_after = os.getloadavg()[0]
        subprocess.run(
            [sys.executable, "-m", "quickstart", "teardown", "--delete-share"],
            cwd=tmp,
            env=env,
            capture_output=True,
            timeout=300,
        )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f"run --nodes {nodes} --epochs {epochs} failed:\n{output[-3000:]}")
    seconds = [
        float(s)
        for s in re.findall(rf"^Finished Epoch\[\d+ of {epochs}\]: .* (\d+\.\d+)s \(", output, re.M)
    ]
    if len(seconds) != epochs:
        raise SystemExit(f"run --nodes {nodes}: {len(seconds)} epoch lines, not {epochs}")
    error = re.search(r"^Final test error: (\d+\.\d\d)%", output, re.M)
    threads = re.search(r"Selected CPU \((\d+) threads?\)", output)
    return {
        "epoch": statistics.mean(seconds),
        "error": float(error[1]),
        "wall": wall,
        "threads": threads[1] if threads else "?",
        "load": f"{load_before:.1f}-{load_after:.1f}",
    }


def training_figures(epochs: int, node_counts: list, one_node_threads: int | None) -> None:
    """Two nodes first (the shorter run at these loads), each line printed as soon as known."""
    print(f"the quickstart, {epochs} epoch(s) of 60,000 samples", flush=True)
    runs = {}
    for nodes in node_counts:
        threads = one_node_threads if nodes == 1 else None
        figures = runs[nodes] = quickstart_run(nodes, epochs, threads)
        print(
            f"  {nodes} node(s): {figures['epoch']:.1f} s per epoch, "
            f"final test error {figures['error']:.2f}%, whole run {figures['wall']:.1f} s, "
            f"{figures['threads']} thread(s) per rank, load average {figures['load']}",
            flush=True,
        )
    if not {1, 2} <= set(runs):
        return
    print(
        f"  2 nodes / 1 node: {runs[2]['epoch'] / runs[1]['epoch']:.2f}x the time per epoch, "
        f"{runs[2]['wall'] / runs[1]['wall']:.2f}x the whole run",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-launch", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 1], choices=[1, 2])
    parser.add_argument("--one-node-threads", type=int)
    args = parser.parse_args()
    if shutil.which("mpirun") is None:
        raise SystemExit("needs mpirun: apt-get install openmpi-bin")
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"{os.cpu_count()} cores")
    if not args.skip_launch:
        launch_figures(args.repeats)
    if not args.skip_training:
        for epochs in args.epochs:
            training_figures(epochs, args.nodes, args.one_node_threads)


if __name__ == "__main__":
    main()
