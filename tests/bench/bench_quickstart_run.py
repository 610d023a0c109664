"""Benchmark: wall time of `python -m quickstart run` on a fresh clone's working directory.

Runs the README's command as a user does (no config file, the embedded local cloud, the real
sample) in a new temporary working directory, then tears down. Prints the command's own summary
line (the wall time of each step), and against it the baseline measured in the same run: the
job's execution time as the local cloud recorded it, that is ConvNet_MNIST.py training on this
machine with nothing of the tutorial around it. The ratio says what the tutorial adds.

    nice -n 10 .venv/bin/python tests/bench/bench_quickstart_run.py              # --epochs 1
    nice -n 10 .venv/bin/python tests/bench/bench_quickstart_run.py --epochs 0   # the full 40

The machine's load average is printed before and after: other work on shared cores slows the
training, and the figures are only comparable with the load noted beside them.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETTINGS_ENV = ("QUICKSTART_", "AZURE_")


def user_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_ENV)}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


def load():
    return "load average {:.2f} {:.2f} {:.2f} on {} cores".format(*os.getloadavg(), os.cpu_count())


def seconds(hms):
    h, m, s = (int(part) for part in hms.split(":"))
    return 3600 * h + 60 * m + s


def run_logged(command, workdir, log_path):
    """Run the command to its end, copying its output line by line to log_path (when given)."""
    lines = []
    with (
        subprocess.Popen(
            command,
            cwd=workdir,
            env=user_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process,
        open(log_path or os.devnull, "w") as log,
    ):
        for line in process.stdout:
            lines.append(line)
            log.write(line)
            log.flush()
    return subprocess.CompletedProcess(command, process.returncode, "".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=1, help="run --epochs N; 0 for the default (40)"
    )
    parser.add_argument(
        "--log", metavar="FILE", help="also write the command's output here as it comes"
    )
    args = parser.parse_args()
    command = [sys.executable, "-m", "quickstart", "run"] + (
        ["--epochs", str(args.epochs)] if args.epochs else []
    )
    print("before: " + load(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_quickstart_run.") as workdir:
        started = time.monotonic()
        result = run_logged(command, workdir, args.log)
        wall = time.monotonic() - started
        print("after:  " + load())
        teardown = subprocess.run(
            [sys.executable, "-m", "quickstart", "teardown"],
            cwd=workdir,
            env=user_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    output = result.stdout
    if result.returncode != 0 or teardown.returncode != 0:
        sys.exit(
            f"run exited {result.returncode}, teardown "
            f"{teardown.returncode}:\n{output[-3000:]}{teardown.stdout[-1000:]}"
        )
    summary = re.search(r"^Wall time: .*$", output, re.M).group(0)
    execution = seconds(re.search(r"execution took (\d+:\d\d:\d\d)", output).group(1))
    test_error = re.search(r"^Final test error: .*$", output, re.M).group(0)
    epochs = re.findall(r"^Finished Epoch\[\d+ of \d+\].*$", output, re.M)
    print("command: " + " ".join(["python -m quickstart run"] + command[4:]))
    print(epochs[-1] if epochs else "no epoch line")
    print(test_error)
    print(summary)
    print(f"wall time of the command (measured here): {wall:.1f} s")
    print(f"baseline, the job's execution as the local cloud recorded it: {execution} s")
    print(
        f"tutorial around the training: {wall - execution:.1f} s; ratio wall / execution = "
        f"{wall / max(execution, 1):.2f}"
    )


if __name__ == "__main__":
    main()
