"""Stress: many mpirun launches over one job's "nodes", as the local cloud lays them out (issue 14).

    .venv/bin/python tests/bench/stress_mpirun.py [--launches 300] [--nodes 2] [--shared]

Each launch is what an MPI job's task runs (launch_plans.layout for customMpiSettings over
``--nodes`` nodes on this host: the hostfile, the nodes' remote shell, the Open MPI variables),
alternating two command lines: every rank exits 0, and rank 1 exits 3 while the others sleep
(mpirun must then stop them and exit 3). Any other exit status is a launch that went wrong;
the script counts them by status and keeps the output of the first of each in the work folder.

``--shared`` drops the per-daemon session folders (the layout before the fix: mpirun and every
node's orted share one Open MPI session directory under /tmp), so a run with and one without it
compare the two in the same conditions. Exit status 1 when any launch went wrong.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from quickstart.localcloud.batchai import launch_plans  # noqa: E402

COMMANDS = (
    ("all ranks exit 0", "true", 0),
    ("rank 1 exits 3", "sh -c '[ $OMPI_COMM_WORLD_RANK = 1 ] && exit 3; exec sleep 600'", 3),
)


def job_layout(folder: Path, nodes: int, line: str, mpirun: str) -> tuple[str, dict]:
    """Writes the job's files under ``folder``; returns the task's command and environment."""
    job_nodes = [
        launch_plans.JobNode(f"node{i}", launch_plans.node_address(i), str(folder / f"node{i}"))
        for i in range(1, nodes + 1)
    ]
    shared = folder / "job" / "shared"
    layout = launch_plans.layout(
        "customMpiSettings",
        {"commandLine": line, "processCount": nodes},
        job_nodes,
        python_line=None,
        shared_temp=str(shared),
        mpirun=mpirun,
    )
    for path in [shared, *(n.job_temp for n in job_nodes)]:
        os.makedirs(path, exist_ok=True)
    for path, text in layout.files.items():
        Path(path).write_text(text)
    for path in layout.executables:
        os.chmod(path, 0o755)
    task = layout.tasks[0]
    return task.command, {**os.environ, **layout.env, **task.env}


def without_session_dirs(env: dict) -> dict:
    """The environment as it was before the fix: Open MPI's default session folders."""
    agent = Path(env["OMPI_MCA_plm_rsh_agent"])
    agent.write_text(
        "\n".join(
            line.replace(" OMPI_MCA_orte_tmpdir_base=", " UNUSED_TMPDIR_BASE=")
            for line in agent.read_text().splitlines()
        )
        + "\n"
    )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=300)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--shared", action="store_true", help="the layout before the fix")
    args = parser.parse_args()
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise SystemExit("needs mpirun: apt-get install openmpi-bin")
    print(
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f};",
        f"{args.launches} launches over {args.nodes} nodes,",
        "shared session folder (before the fix)" if args.shared else "one session folder each",
    )
    work = Path(tempfile.mkdtemp(prefix="stress-mpirun-"))
    counts = collections.Counter()
    started = time.monotonic()
    for launch in range(args.launches):
        label, line, expected = COMMANDS[launch % len(COMMANDS)]
        folder = work / f"launch{launch}"
        command, env = job_layout(folder, args.nodes, line, mpirun)
        if args.shared:
            env = without_session_dirs(env)
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=str(folder / "node1"),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        status = result.returncode if result.returncode >= 0 else 128 - result.returncode
        outcome = "as expected" if status == expected else f"exit {status}"
        counts[(label, outcome)] += 1
        if status != expected:
            kept = work / f"exit-{status}.txt"
            if not kept.exists():
                kept.write_text(result.stdout + result.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    seconds = time.monotonic() - started
    for (label, outcome), count in sorted(counts.items()):
        print(f"  {label}: {outcome}: {count}")
    wrong = sum(c for (_, outcome), c in counts.items() if outcome != "as expected")
    print(
        f"  {wrong} of {args.launches} launches went wrong; "
        f"{seconds / args.launches:.2f} s per launch; outputs kept in {work}"
    )
    if not wrong:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
