"""ConvNet_MNIST.py's training run in PyTorch: the recipe's data, network, schedule and lines.

Read top to bottom: pick the device, read the two CNTK text files, build the network from the
seed, then train epoch by epoch with CNTK's schedule and momentum SGD, saving a model file
after each epoch, and test. On a CPU each step is FastCpuStep's (same values, about twice the
speed); on a GPU it is plain autograd. Started by MPI with several ranks, it trains
data-parallel (distributed.py) and rank 0 alone saves, tests and reports.
"""

import math
import os
import time

import torch
import torch.nn.functional as F

from . import distributed
from .cntk_compat import CntkMomentumSGD, SampleStream, schedule_value
from .conv1_kernels import load_conv1_kernels
from .cpu_tuning import cpu_thread_count, keep_freed_memory
from .ctf_reader import InputError, read_ctf
from .fast_cpu import FastCpuStep
from .network import ConvNet, save_model

DEFAULT_SEED = 0
VERSION = torch.__version__


def log(text=""):
    """Print one line and flush it, so a job's stderr can be streamed while it trains."""
    print(text, flush=True)


def quiet(text=""):
    """The log of ranks other than 0: only their own progress lines are worth reading."""


def train(args, train_path, test_path, lr_per_sample, momentum_time_constant, test_minibatch):
    """Train and test as the recipe does; returns (test minibatches, test error, test samples)
    for the recipe's closing lines, or None on the ranks other than 0 of a data-parallel run."""
    parallel = distributed.from_environment()
    try:
        return _train(
            args,
            parallel,
            train_path,
            test_path,
            lr_per_sample,
            momentum_time_constant,
            test_minibatch,
        )
    finally:
        parallel.close()


def _train(
    args, parallel, train_path, test_path, lr_per_sample, momentum_time_constant, test_minibatch
):
    say = log if parallel.rank == 0 else quiet
    device = select_device(args.device, parallel.ranks_on_this_host(), say)
    say(f"CNTK is not importable here: training the same network with PyTorch {VERSION}.")
    if parallel.size > 1:
        say(f"Training data-parallel on {parallel.size} MPI ranks (torch.distributed, gloo).")
    train_x, train_y = read_tensors(train_path, device)
    test_x, test_y = read_tensors(test_path, device)

    seed = DEFAULT_SEED if args.seed is None else args.seed
    torch.manual_seed(seed)  # the weights, then every dropout mask
    model = ConvNet().to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = CntkMomentumSGD(model.parameters())
    step, forward = training_step(model, optimizer, device, say)
    order = torch.Generator()
    order.manual_seed(seed)
    samples = SampleStream(len(train_y), order, device)
    parameters = list(model.parameters())
    total = sum(p.numel() for p in parameters)
    say(f"Training {total} parameters in {len(parameters)} parameter tensors.")
    say()

    shown_lr = shown_momentum = None
    for epoch in range(args.max_epochs):
        lr = schedule_value(lr_per_sample, epoch)
        time_constant = schedule_value(momentum_time_constant, epoch)
        momentum_per_sample = math.exp(-1.0 / time_constant) if time_constant else 0.0
        if lr != shown_lr:
            say(f"Learning rate per 1 samples: {lr}")
            shown_lr = lr
        if momentum_per_sample != shown_momentum:
            say(f"Momentum per 1 samples: {momentum_per_sample}")
            shown_momentum = momentum_per_sample

        started = time.time()
        model.train()
        loss_sum = torch.zeros((), device=device)
        error_sum = torch.zeros((), dtype=torch.int64, device=device)
        count = local_count = 0
        while count < args.epoch_size:
            n = min(args.minibatch_size, args.epoch_size - count)
            indices = parallel.shard(samples.take(n))
            if len(indices):
                labels = train_y[indices]
                logits, loss = step(train_x[indices], labels)
                with torch.no_grad():
                    loss_sum += loss.detach() * len(indices)
                    error_sum += (logits.argmax(1) != labels).sum()
            else:  # a last minibatch smaller than the number of ranks
                optimizer.zero_grad()
            parallel.sum_gradients(optimizer.gradients, len(indices), n)
            optimizer.step(lr, time_constant, n)
            count += n
            local_count += len(indices)
        totals = parallel.sum_totals(float(loss_sum), int(error_sum), local_count)
        if parallel.rank != 0:  # its own slice's line; rank 0 prints the whole minibatches'
            print(f"Rank {parallel.rank}: ", end="")
            log_epoch(epoch, args.max_epochs, float(loss_sum), int(error_sum), local_count, started)
            continue
        log_epoch(epoch, args.max_epochs, totals[0], int(totals[1]), int(totals[2]), started)
        save_model(model, os.path.join(args.model_dir, f"ConvNet_MNIST_{epoch}.pt"))
    if parallel.rank != 0:
        return None

    model.eval()
    errors = minibatches = 0
    with torch.no_grad():
        for start in range(0, len(test_y), test_minibatch):
            logits = forward(test_x[start : start + test_minibatch])
            errors += int((logits.argmax(1) != test_y[start : start + test_minibatch]).sum())
            minibatches += 1
    return minibatches, errors / len(test_y), len(test_y)


def select_device(requested, ranks_on_this_host=1, say=log):
    """The device to train on, set up as it trains best, and the line that says which. Ranks
    sharing this machine share its cores (unless OMP_NUM_THREADS says otherwise)."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA GPU is available to PyTorch here")
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False  # fp32 maths, as CNTK's cuDNN ran it
        torch.backends.cuda.matmul.allow_tf32 = False
        gpu = f"GPU[{torch.cuda.current_device()}] {torch.cuda.get_device_name()}"
        say(f"Selected {gpu} as the process wide default device.")
        return torch.device("cuda")
    keep_freed_memory()
    threads = cpu_thread_count(os.environ)
    if not os.environ.get("OMP_NUM_THREADS"):
        threads = max(1, threads // ranks_on_this_host)
    torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    cpu = f"CPU ({threads} thread{'' if threads == 1 else 's'})"
    say(f"Selected {cpu} as the process wide default device.")
    return torch.device("cpu")


def read_tensors(path, device):
    """A CNTK text file as (uint8 pixels [n, 784], int64 labels [n]) on the device."""
    features, labels = read_ctf(path)
    return torch.from_numpy(features).to(device), torch.from_numpy(labels).to(device)


def training_step(model, optimizer, device, say=log):
    """(step, forward): step(pixels, labels) -> (logits, loss) leaves the gradients in .grad;
    forward(pixels) -> logits for testing. The fast CPU step on a CPU, autograd on a GPU."""
    if device.type == "cpu":
        kernels, which_conv1 = load_conv1_kernels()
        say(which_conv1)
        fast = FastCpuStep(model, kernels)
        return fast.train_step, fast.forward

    def autograd_step(pixels, labels):
        optimizer.zero_grad()
        logits = model(pixels)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        return logits, loss

    return autograd_step, model


def log_epoch(epoch, epochs, loss_sum, error_sum, count, started):
    """CNTK's ProgressPrinter line for an epoch."""
    elapsed = time.time() - started
    log(
        f"Finished Epoch[{epoch + 1} of {epochs}]: [Training] loss = {loss_sum / count:0.6f} * "
        f"{count}, metric = {100.0 * error_sum / count:0.2f}% * {count} {elapsed:0.3f}s "
        f"({count / max(elapsed, 1e-9):5.1f} samples/s);"
    )
