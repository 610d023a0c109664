"""Benchmark: the recipe's full training run and its final test error.

Runs ``ConvNet_MNIST.py`` exactly as the quickstart's job does (40 epochs of 60,000 samples,
minibatch 64, unless told otherwise) on the real MNIST text files, streams its stderr, and
prints the final test error beside the goal (0.60 %) and the CNTK recipe's own logged result
(0.54 % on a Batch AI K80 node), plus the mean time per epoch. It takes about 40 times the
per-epoch figure of bench_training.py (around 10-15 min on 2 idle cores), so it is not part of
the test run.

    nice .venv/bin/python tests/bench/bench_accuracy.py [--max-epochs 40] [--seed 0]
"""
import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOAL_PERCENT = 0.60
CNTK_RECIPE_PERCENT = 0.54
EPOCH_LINE = re.compile(r"^Finished Epoch\[\d+ of \d+\]: .* (\d+\.\d+)s \(")
FINAL_LINE = re.compile(r"^Final Results: Minibatch\[1-\d+\]: errs = (\d+\.\d+)% \* 10000$")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", help="keep the model files here (default: a temp dir)")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from quickstart.sample import build_ctf_files
    train, _ = build_ctf_files()
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir or scratch
        command = [sys.executable, str(REPO / "ConvNet_MNIST.py"), str(Path(train).parent),
                   model_dir, "--max-epochs", str(args.max_epochs), "--seed", str(args.seed)]
        started = time.time()
        process = subprocess.Popen(command, cwd=str(REPO), stderr=subprocess.PIPE, text=True)
        epoch_seconds, error = [], None
        for line in process.stderr:
            sys.stdout.write(line)
            sys.stdout.flush()
            match = EPOCH_LINE.match(line) or FINAL_LINE.match(line)
            if match and line.startswith("Finished"):
                epoch_seconds.append(float(match.group(1)))
            elif match:
                error = float(match.group(1))
        status = process.wait()
    if status != 0 or error is None:
        print("training failed (exit status {})".format(status))
        return 1
    print("")
    print("test error after {} epochs (seed {}): {:.2f}%; goal <= {:.2f}%: {}; CNTK recipe "
          "logged {:.2f}%".format(args.max_epochs, args.seed, error, GOAL_PERCENT,
                                  "met" if error <= GOAL_PERCENT else "NOT met",
                                  CNTK_RECIPE_PERCENT))
    print("mean {:.2f} s per epoch, {:.1f} min in all".format(
        sum(epoch_seconds) / len(epoch_seconds), (time.time() - started) / 60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
