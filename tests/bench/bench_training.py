"""Benchmark: training speed of ConvNet_MNIST.py's PyTorch path against a plain eager loop.

Both train the recipe's network on the real MNIST training set at minibatch 64 with the
recipe's update (per-sample lr x 64, momentum exp(-64/1024) with equal dampening), from data
already in memory:

- baseline: the straightforward eager loop anyone would write first: ``model(x)`` on NCHW
  float tensors, ``torch.optim.SGD``, PyTorch's default threads and allocator;
- ours: exactly what the script runs per step (``FastCpuStep.train_step`` with the compiled conv1
  kernels where they build, the flat-buffer CNTK momentum SGD, the sample stream, all cores
  with OpenMP threads that sleep when idle, freed memory kept in the heap).

Each runs in its own process (so neither inherits the other's allocator or thread settings).
Both processes stay up and take turns in short blocks of steps, the order alternating, so that
load from elsewhere on a shared machine, which comes and goes over seconds, hits both alike.
Prints the median time per step of each, the time per 60,000-sample epoch (937.5 steps), the
ratio of the medians and the median of the rounds' ratios; the issue's goal is a ratio of at
least 1.8 (about 8 s per epoch on the reference machine).

    nice .venv/bin/python tests/bench/bench_training.py [--rounds 15] [--steps 40]
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MINIBATCH = 64
STEPS_PER_EPOCH = 60000 / MINIBATCH
GOAL_RATIO = 1.8
WARMUP_STEPS = 20


def load_training_set():
    from quickstart.convnet_pytorch.ctf_reader import read_ctf
    from quickstart.sample import build_ctf_files

    train_path, _ = build_ctf_files()
    return read_ctf(train_path)


def make_baseline_step():
    import torch  # first: torch loads OpenMP with its defaults before the port's import tunes it
    import torch.nn.functional as F

    from quickstart.convnet_pytorch.network import ConvNet

    pixels, labels = load_training_set()
    torch.manual_seed(0)
    x = torch.from_numpy(pixels).float().reshape(-1, 1, 28, 28)
    y = torch.from_numpy(labels)
    model = ConvNet()
    mu = math.exp(-MINIBATCH / 1024)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001 * MINIBATCH, momentum=mu, dampening=mu)
    order = torch.randperm(len(y))

    def step(i):
        batch = order[(i * MINIBATCH) % 59968 :][:MINIBATCH]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()

    return step


def make_our_step():
    import torch

    import quickstart.convnet_pytorch  # first: it lets idle OpenMP threads sleep, as the script
    from quickstart.convnet_pytorch.cntk_compat import CntkMomentumSGD, SampleStream
    from quickstart.convnet_pytorch.conv1_kernels import load_conv1_kernels
    from quickstart.convnet_pytorch.cpu_tuning import cpu_thread_count, keep_freed_memory
    from quickstart.convnet_pytorch.fast_cpu import FastCpuStep
    from quickstart.convnet_pytorch.network import ConvNet

    assert quickstart.convnet_pytorch.train  # the package the script hands over to
    keep_freed_memory()
    torch.set_num_threads(cpu_thread_count(os.environ))
    pixels, labels = load_training_set()
    torch.manual_seed(0)
    x = torch.from_numpy(pixels)
    y = torch.from_numpy(labels)
    model = ConvNet()
    kernels, which_conv1 = load_conv1_kernels()
    print("ours: " + which_conv1, file=sys.stderr)
    optimizer = CntkMomentumSGD(model.parameters())
    train_step = FastCpuStep(model, kernels).train_step
    generator = torch.Generator()
    generator.manual_seed(0)
    stream = SampleStream(len(y), generator)

    def step(i):
        batch = stream.take(MINIBATCH)
        target = y[batch]
        logits, loss = train_step(x[batch], target)
        optimizer.step(0.001, 1024, MINIBATCH)
        with torch.no_grad():  # the script's per-step loss/error bookkeeping
            loss.detach() * MINIBATCH
            (logits.argmax(1) != target).sum()

    return step


def serve(make_step):
    """Worker loop: warm up, then run the number of steps read from each stdin line and answer
    with the seconds they took (stdout), until stdin closes."""
    step = make_step()
    for i in range(WARMUP_STEPS):
        step(i)
    done = WARMUP_STEPS
    print("ready", flush=True)
    for line in sys.stdin:
        steps = int(line)
        start = time.perf_counter()
        for i in range(done, done + steps):
            step(i)
        print(time.perf_counter() - start, flush=True)
        done += steps


class Worker:
    """One kind of training loop in its own process (neither inherits the other's allocator or
    thread settings), kept alive between blocks so that blocks of both kinds can alternate."""

    def __init__(self, kind):
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind],
            cwd=str(REPO),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {kind} worker did not start")

    def seconds_per_step(self, steps):
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline()) / steps

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="pairs of blocks, one of each loop, the order alternating",
    )
    parser.add_argument("--steps", type=int, default=40, help="timed steps per block")
    parser.add_argument("--worker", choices=("baseline", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(REPO))
        serve(make_baseline_step if args.worker == "baseline" else make_our_step)
        return 0

    print(
        f"training speed, minibatch {MINIBATCH}, {len(os.sched_getaffinity(0))} CPU cores, "
        f"{args.rounds} rounds of {args.steps} steps of each loop"
    )
    workers = {"baseline": Worker("baseline"), "ours": Worker("ours")}
    times = {"baseline": [], "ours": []}
    try:
        for round_number in range(args.rounds):
            order = ("baseline", "ours") if round_number % 2 == 0 else ("ours", "baseline")
            for kind in order:
                times[kind].append(workers[kind].seconds_per_step(args.steps))
    finally:
        for worker in workers.values():
            worker.close()
    ratios = [b / o for b, o in zip(times["baseline"], times["ours"], strict=False)]
    baseline = statistics.median(times["baseline"])
    ours = statistics.median(times["ours"])
    print("per-round ratios: " + ", ".join(f"{r:.2f}" for r in ratios))
    print(
        f"baseline (plain eager loop): {baseline * 1e3:.2f} ms/step = "
        f"{baseline * STEPS_PER_EPOCH:.2f} s/epoch (median of blocks)"
    )
    print(
        f"ours (ConvNet_MNIST.py):     {ours * 1e3:.2f} ms/step = {ours * STEPS_PER_EPOCH:.2f} "
        "s/epoch"
    )
    print(
        f"speed-up: {baseline / ours:.2f}x on the medians, {statistics.median(ratios):.2f}x the "
        "median of the rounds' ratios; "
        f"goal >= {GOAL_RATIO}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
