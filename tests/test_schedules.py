"""The recipe's learning-rate and momentum schedules in the PyTorch loop, checked at the epochs
where each one changes (momentum at epoch 6, the learning rate at 11 and 21): the values the
optimizer is really stepped with and the lines the job prints. The short training test runs
3 epochs, so a schedule read one epoch early or late would pass it unnoticed."""

import importlib
import math
import re
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import ConvNet_MNIST  # noqa: E402  (the script, imported as a module)
import quickstart.convnet_pytorch  # noqa: E402

# the module, not the function of the same name the package exports
port_training = importlib.import_module("quickstart.convnet_pytorch.train")
from quickstart.convnet_pytorch.cntk_compat import CntkMomentumSGD, schedule_value  # noqa: E402

EPOCHS = 22
SAMPLES_PER_EPOCH = 32
MOMENTUM_ON = math.exp(-1 / 1024)  # per sample, for the time constant 1024


def ctf_line(label, pixel):
    labels = " ".join("1" if i == label else "0" for i in range(10))
    return f"|labels {labels} |features {' '.join([str(pixel)] * 784)}\n"


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """22 epochs of one 32-sample minibatch each: the optimizer's steps and the printed lines."""
    folder = tmp_path_factory.mktemp("schedules")
    data, models = folder / "data", folder / "models"
    data.mkdir()
    lines = "".join(ctf_line(n % 10, (n * 37) % 256) for n in range(40))
    (data / ConvNet_MNIST.TRAIN_FILE).write_text(lines)
    (data / ConvNet_MNIST.TEST_FILE).write_text(lines)
    steps = []

    class RecordingSGD(CntkMomentumSGD):
        def step(self, lr_per_sample, momentum_time_constant, samples):
            steps.append((lr_per_sample, momentum_time_constant, samples))
            super().step(lr_per_sample, momentum_time_constant, samples)

    args = ConvNet_MNIST.parse_args(
        [str(data), str(models), "--max-epochs", str(EPOCHS), "--device", "cpu"]
        + ["--epoch-size", str(SAMPLES_PER_EPOCH), "--minibatch-size", str(SAMPLES_PER_EPOCH)]
    )
    ConvNet_MNIST.check_paths(args)
    threads = torch.get_num_threads()
    printed = []
    with pytest.MonkeyPatch.context() as patch:
        # the script imports the port as a top-level package (uploaded beside it): this one
        patch.setitem(sys.modules, "convnet_pytorch", quickstart.convnet_pytorch)
        patch.setattr(port_training, "CntkMomentumSGD", RecordingSGD)
        patch.setattr(port_training, "load_conv1_kernels", lambda: (None, "operators"))
        patch.setattr(port_training, "keep_freed_memory", lambda: None)
        patch.setattr(port_training, "log", lambda text="": printed.append(text))
        patch.setattr(ConvNet_MNIST, "log", lambda text="": printed.append(text))
        patch.setenv("OMP_NUM_THREADS", "1")
        try:
            ConvNet_MNIST.train_with_pytorch(args)
        finally:
            torch.set_num_threads(threads)
    return steps, printed


def expected_schedule(epoch):
    """The recipe's (learning rate per sample, momentum time constant) for 1-based `epoch`."""
    lr = 0.001 if epoch <= 10 else 0.0005 if epoch <= 20 else 0.0001
    return lr, 0 if epoch <= 5 else 1024


def test_each_epoch_steps_with_the_recipes_rate_and_momentum(training):
    steps, _ = training
    assert steps == [expected_schedule(epoch) + (SAMPLES_PER_EPOCH,) for epoch in range(1, 23)]


@pytest.mark.parametrize(
    "epoch, before",
    [(5, (0.001, 0)), (6, (0.001, 1024)), (10, (0.001, 1024)), (11, (0.0005, 1024))]
    + [(20, (0.0005, 1024)), (21, (0.0001, 1024)), (22, (0.0001, 1024))],
)
def test_the_values_on_each_side_of_a_change(training, epoch, before):
    steps, _ = training
    assert steps[epoch - 1][:2] == before


def schedule_lines_before(printed, epoch):
    """The schedule lines printed between the end of epoch-1 and the end of `epoch`."""
    ends = [i for i, line in enumerate(printed) if line.startswith("Finished Epoch[")]
    start = ends[epoch - 2] + 1 if epoch > 1 else 0
    return [
        line
        for line in printed[start : ends[epoch - 1]]
        if re.match(r"(Learning rate|Momentum) per 1 samples: ", line)
    ]


def test_schedule_lines_appear_at_the_start_and_where_a_value_changes(training):
    _, printed = training
    changes = {
        1: ["Learning rate per 1 samples: 0.001", "Momentum per 1 samples: 0.0"],
        6: [f"Momentum per 1 samples: {MOMENTUM_ON}"],
        11: ["Learning rate per 1 samples: 0.0005"],
        21: ["Learning rate per 1 samples: 0.0001"],
    }
    for epoch in range(1, EPOCHS + 1):
        assert schedule_lines_before(printed, epoch) == changes.get(epoch, []), epoch


def test_every_epoch_is_reported_and_the_test_error_closes_the_run(training):
    _, printed = training
    finished = [line for line in printed if line.startswith("Finished Epoch[")]
    assert [re.match(r"Finished Epoch\[(\d+) of 22\]", line).group(1) for line in finished] == [
        str(n) for n in range(1, 23)
    ]
    assert re.fullmatch(r"Final Results: Minibatch\[1-2\]: errs = \d+\.\d\d% \* 40", printed[-2])


@pytest.mark.parametrize(
    "epoch, lr, time_constant",
    [(0, 0.001, 0), (4, 0.001, 0), (5, 0.001, 1024), (9, 0.001, 1024), (10, 0.0005, 1024)]
    + [(19, 0.0005, 1024), (20, 0.0001, 1024), (39, 0.0001, 1024), (1000, 0.0001, 1024)],
)
def test_schedule_value_is_the_epochs_entry_and_the_last_one_persists(epoch, lr, time_constant):
    assert schedule_value(ConvNet_MNIST.LR_PER_SAMPLE, epoch) == lr
    assert schedule_value(ConvNet_MNIST.MOMENTUM_TIME_CONSTANT, epoch) == (time_constant)


def test_the_step_where_momentum_switches_on_carries_the_earlier_gradient_over():
    """Epoch 5 steps without momentum (G = n g); at epoch 6 G = mu G + (1 - mu) n g, with
    mu = exp(-n / 1024), and W moves by lr G each time."""
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = CntkMomentumSGD([weight])
    first, second = torch.tensor([0.5, 0.25]), torch.tensor([-1.0, 2.0])
    optimizer.gradients.copy_(first)
    optimizer.step(0.001, 0, 16)
    carried = 16 * first
    assert torch.allclose(weight.detach(), torch.tensor([1.0, -2.0]) - 0.001 * carried)
    before = weight.detach().clone()
    optimizer.gradients.copy_(second)
    optimizer.step(0.0005, 1024, 16)
    mu = math.exp(-16 / 1024)
    momentum = mu * carried + (1 - mu) * 16 * second
    assert torch.allclose(optimizer.momentum, momentum)
    assert torch.allclose(weight.detach(), before - 0.0005 * momentum)
