"""ConvNet_MNIST.py: the recipe's network, schedule, data order and output, in PyTorch.

The script must also stay valid Python 3.5 (the CNTK 2.1 container), keep the recipe's CNTK
code, read CNTK text strictly and quickly, and fail on bad input with one line, no traceback.
"""

import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from quickstart.sample import build_ctf_files

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "ConvNet_MNIST.py"
sys.path.insert(0, str(REPO))
import ConvNet_MNIST  # noqa: E402  (the script, imported as a module)
from quickstart.convnet_pytorch.cntk_compat import (  # noqa: E402
    CntkMomentumSGD,
    SampleStream,
    schedule_value,
)
from quickstart.convnet_pytorch.conv1_kernels import (  # noqa: E402
    Conv1PoolKernels,
    KernelsUnavailable,
)
from quickstart.convnet_pytorch.cpu_tuning import cpu_thread_count  # noqa: E402
from quickstart.convnet_pytorch.ctf_reader import InputError, read_ctf  # noqa: E402
from quickstart.convnet_pytorch.fast_cpu import FastCpuStep, conv1_block  # noqa: E402
from quickstart.convnet_pytorch.network import ConvNet, save_model  # noqa: E402

# The short run: 3 epochs of 10,000 samples at minibatch 64 (the last minibatch of each epoch
# holds 16), then the full 10,000-image test. Measured with seeds 0-7 on the 2-core dev
# machine (the script as of the compiled conv1 kernels; `tests/bench/bench_accuracy.py
# --max-epochs 3 --epoch-size 10000 --seeds 0,1,2,3,4,5,6,7`): test error 3.53, 3.16, 3.15,
# 3.73, 3.67, 3.00, 2.90, 3.01 % (mean 3.27 %, worst 3.73 %; the default seed 0: 3.53 %). The
# bound leaves 0.77 points over the worst seed, room for other CPUs' rounding. Without the
# kernels (the PyTorch operators, where no C compiler is found) the same seeds gave 2.70-3.65 %.
# For scale, the first of the three epochs ends at about 40 % training error (seed 0), so a
# run that stops learning fails here.
SHORT_RUN = ["--max-epochs", "3", "--epoch-size", "10000"]
SHORT_RUN_ERROR_BOUND = 4.5  # percent

FINISHED = re.compile(
    r"^Finished Epoch\[(\d+) of (\d+)\]: \[Training\] loss = (\d+\.\d{6}) \* (\d+), "
    r"metric = (\d+\.\d{2})% \* (\d+) (\d+\.\d{3})s \( *\d+\.\d samples/s\);$"
)
FINAL = re.compile(r"^Final Results: Minibatch\[1-(\d+)\]: errs = (\d+\.\d{2})% \* 10000$")


@pytest.fixture(scope="module")
def data_dir():
    train, _ = build_ctf_files()
    return str(Path(train).parent)


def run_script(*args, timeout=300):
    return subprocess.run(
        [sys.executable, str(SCRIPT)] + [str(a) for a in args],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- the file itself --------------------------------------------------------------------------


def test_whole_script_is_python_3_5_syntax():
    ast.parse(SCRIPT.read_text(encoding="utf-8"), feature_version=(3, 5))


def test_cntk_branch_is_the_recipe_against_the_cntk_2_1_api():
    source = SCRIPT.read_text(encoding="utf-8")
    for call in (
        "cntk.io.CTFDeserializer(",
        "cntk.io.INFINITELY_REPEAT",
        "cntk.layers.Convolution2D((5, 5), 32, pad=True)",
        "cntk.layers.MaxPooling((3, 3), (2, 2))",
        "cntk.layers.Dropout(0.5)",
        "cntk.losses.cross_entropy_with_softmax(",
        "cntk.metrics.classification_error(",
        "cntk.learning_rate_schedule(LR_PER_SAMPLE, cntk.learners.UnitType.sample",
        "cntk.learners.momentum_as_time_constant_schedule(MOMENTUM_TIME_CONSTANT",
        "cntk.learners.momentum_sgd(z.parameters, lr_schedule, mm_schedule)",
        "cntk.logging.ProgressPrinter(tag='Training', num_epochs=max_epochs)",
        "trainer.summarize_training_progress()",
        "'ConvNet_MNIST_{}.dnn'",
        "trainer.test_minibatch(data)",
        "cntk.logging.log_number_of_parameters(z)",
    ):
        assert call in source, call
    assert ConvNet_MNIST.LR_PER_SAMPLE == [0.001] * 10 + [0.0005] * 10 + [0.0001]
    assert ConvNet_MNIST.MOMENTUM_TIME_CONSTANT == [0] * 5 + [1024]
    assert ConvNet_MNIST.INPUT_SCALE == 1 / 256


# --- the network ------------------------------------------------------------------------------


def test_network_has_the_recipes_98778_parameters_in_10_tensors():
    model = ConvNet()
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [
        (32, 1, 5, 5),
        (32,),
        (48, 32, 3, 3),
        (48,),
        (64, 48, 3, 3),
        (64,),
        (96, 576),
        (96,),
        (10, 96),
        (10,),
    ]
    assert sum(p.numel() for p in model.parameters()) == 98778


def test_initialisation_is_glorot_uniform_weights_and_zero_biases():
    torch.manual_seed(3)
    model = ConvNet()
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            assert not parameter.detach().any(), name
            continue
        receptive = parameter[0, 0].numel() if parameter.dim() == 4 else 1
        bound = math.sqrt(6.0 / ((parameter.shape[0] + parameter.shape[1]) * receptive))
        values = parameter.detach()
        assert values.abs().max() <= bound, name
        assert values.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15), name


def test_layer_shapes_round_pooling_down_to_13_and_5():
    model = ConvNet().eval()
    x = torch.zeros(2, 1, 28, 28)
    h = F.max_pool2d(F.relu(model.conv1(x)), 3, 2)
    assert h.shape == (2, 32, 13, 13)
    h = F.max_pool2d(F.relu(model.conv2(h)), 3, 2)
    assert h.shape == (2, 48, 5, 5)
    assert model.conv3(h).shape == (2, 64, 3, 3)
    assert model(torch.zeros(2, 784)).shape == (2, 10)


def test_input_is_scaled_by_1_over_256_inside_the_model():
    torch.manual_seed(0)
    model = ConvNet().eval()
    pixels = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    scaled = pixels.float().reshape(4, 1, 28, 28) / 256
    expected = model.z(
        F.relu(
            model.f4(
                F.relu(
                    model.conv3(
                        F.max_pool2d(
                            F.relu(model.conv2(F.max_pool2d(F.relu(model.conv1(scaled)), 3, 2))),
                            3,
                            2,
                        )
                    )
                ).flatten(1)
            )
        )
    )
    assert torch.allclose(model(pixels), expected, atol=1e-6)


def perturbed_pair():
    """Two copies of one network, with non-zero biases so that a misplaced bias would show."""
    reference = ConvNet()
    with torch.no_grad():
        for parameter in reference.parameters():
            if parameter.dim() == 1:
                parameter.add_(0.05 * torch.randn_like(parameter))
    fast = ConvNet()
    fast.load_state_dict(reference.state_dict())
    return reference, fast


def mnist_like_batch(batch):
    pixels = torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8)
    pixels[:, :4] = 0  # blank rows, as in MNIST: ties among zeros inside pooling windows
    return pixels, torch.randint(0, 10, (batch,))


@pytest.mark.parametrize("batch", [37, 64])  # odd and even: conv1's gradient splits an even one
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_cpu_training_step_has_autograds_values_and_gradients(batch, mode):
    torch.manual_seed(1)
    pixels, labels = mnist_like_batch(batch)
    reference, fast = perturbed_pair()
    reference.train(mode == "train")
    fast.train(mode == "train")
    torch.manual_seed(7)  # in training, both must draw the same dropout mask from it
    slow_logits = reference(pixels)
    slow_loss = F.cross_entropy(slow_logits, labels)
    slow_loss.backward()
    torch.manual_seed(7)
    fast_logits, fast_loss = FastCpuStep(fast).train_step(pixels, labels)
    assert torch.allclose(slow_logits, fast_logits, atol=1e-5)
    assert fast_loss.item() == pytest.approx(slow_loss.item(), rel=1e-5)
    for (name, slow), quick in zip(reference.named_parameters(), fast.parameters(), strict=False):
        assert quick.grad.shape == slow.shape, name
        assert torch.allclose(slow.grad, quick.grad, rtol=1e-4, atol=1e-6), name


def test_cpu_training_step_replaces_gradients_and_fills_the_optimizers_buffer():
    torch.manual_seed(4)
    pixels, labels = mnist_like_batch(16)
    model = ConvNet().eval()
    optimizer = CntkMomentumSGD(model.parameters())
    FastCpuStep(model).train_step(pixels, labels)
    first = optimizer.gradients.clone()
    assert first.abs().sum() > 0
    FastCpuStep(model).train_step(pixels, labels)
    assert torch.equal(optimizer.gradients, first)  # the same batch again: replaced, not added


def test_fast_cpu_forward_has_forwards_values():
    torch.manual_seed(5)
    pixels, _ = mnist_like_batch(37)
    reference, fast = perturbed_pair()
    with torch.no_grad():
        assert torch.allclose(
            reference.eval()(pixels), FastCpuStep(fast.eval()).forward(pixels), atol=1e-5
        )


@pytest.fixture(scope="module")
def conv1_kernels():
    try:
        return Conv1PoolKernels.build()
    except KernelsUnavailable as reason:
        pytest.skip(f"compiled conv1 kernels unavailable here: {reason}")


@pytest.mark.parametrize("batch", [1, 37, 64])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_compiled_conv1_kernels_give_the_operators_values_and_gradients(conv1_kernels, batch, mode):
    torch.manual_seed(8)
    pixels, labels = mnist_like_batch(batch)  # blank rows: ties inside pooling windows
    operators, compiled = perturbed_pair()
    for model in (operators, compiled):
        model.train(mode == "train")
        CntkMomentumSGD(model.parameters())
    torch.manual_seed(9)
    expected_logits, expected_loss = FastCpuStep(operators).train_step(pixels, labels)
    torch.manual_seed(9)
    logits, loss = FastCpuStep(compiled, conv1_kernels).train_step(pixels, labels)
    assert torch.allclose(logits, expected_logits, atol=1e-5)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    for (name, expected), got in zip(
        operators.named_parameters(), compiled.parameters(), strict=False
    ):
        assert torch.allclose(got.grad, expected.grad, rtol=1e-4, atol=1e-7), name
    with torch.no_grad():
        assert torch.allclose(
            FastCpuStep(compiled.eval(), conv1_kernels).forward(pixels),
            FastCpuStep(operators.eval()).forward(pixels),
            atol=1e-5,
        )


def test_compiled_conv1_kernels_route_each_gradient_to_the_pools_maximum(conv1_kernels):
    """One image, one channel's gradient at one pooled output: exactly the kernel taps over
    the winning input window receive it."""
    torch.manual_seed(10)
    pixels = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    model = ConvNet()
    with torch.no_grad():
        model.conv1.bias.fill_(1.0)  # every pooled output positive: the ReLU passes all
    relu1, backward = conv1_kernels.forward(pixels, model.conv1.weight, model.conv1.bias)
    _, backward_ops = conv1_block(pixels, model.conv1.weight, model.conv1.bias)
    grad = torch.zeros(1, 13, 13, 32)
    grad[0, 6, 4, 5] = 1.0
    grad = grad.permute(0, 3, 1, 2)
    for got, expected in zip(backward(grad), backward_ops(grad), strict=False):
        assert torch.allclose(got, expected.reshape(got.shape), atol=1e-7)
    assert backward(grad)[1].nonzero().flatten().tolist() == [5]


def test_compiled_conv1_kernels_break_pooling_ties_as_pytorch_does(conv1_kernels):
    """Two equal conv1 outputs in one pooling window: the first in scan order wins, so the
    kernel gradient comes from its input window, not from its neighbour's."""
    model = ConvNet()
    with torch.no_grad():
        model.conv1.weight.zero_()
        model.conv1.weight[:, 0, 2, 2] = 1.0  # conv1's output is the pixel under the centre
        model.conv1.bias.fill_(1.0)
    pixels = torch.zeros(1, 28, 28, dtype=torch.uint8)
    pixels[0, 1, 1] = pixels[0, 1, 2] = 200  # tied, in pooled output (0, 0)'s window
    pixels[0, 1, 3] = 50  # but their right-hand neighbours differ
    grad = torch.zeros(1, 13, 13, 32)
    grad[0, 0, 0, :] = 1.0
    grad = grad.permute(0, 3, 1, 2)
    got = conv1_kernels.forward(pixels, model.conv1.weight, model.conv1.bias)[1](grad)[0]
    expected = conv1_block(pixels, model.conv1.weight, model.conv1.bias)[1](grad)[0].reshape(
        got.shape
    )
    assert torch.equal(got, expected)
    assert got[0, 0, 2, 3].item() == 200 / 256  # the right neighbour of pixel (1, 1)


def test_training_with_the_kernels_is_reproducible_from_the_seed(conv1_kernels):
    def train(seed):
        torch.manual_seed(seed)
        model = ConvNet()
        optimizer = CntkMomentumSGD(model.parameters())
        step = FastCpuStep(model, conv1_kernels).train_step
        for _step in range(4):
            pixels, labels = mnist_like_batch(64)
            step(pixels, labels)
            optimizer.step(0.001, 1024, 64)
        return optimizer.parameters.clone()

    assert torch.equal(train(11), train(11))
    assert not torch.equal(train(11), train(12))


def test_a_failing_compiler_makes_the_kernels_unavailable_with_its_reason(monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that exits with status 1
    with pytest.raises(KernelsUnavailable, match="^false failed: exit status 1$"):
        Conv1PoolKernels.build()


def test_a_compiler_without_avx2_gives_its_first_error_as_the_reason(
    conv1_kernels, tmp_path, monkeypatch
):
    """As on a CPU without AVX2: the compile fails, and the reason is the compiler's error line,
    not the first line of its output."""
    compiler = tmp_path / "cc-without-avx2"
    compiler.write_text(
        '#!/bin/sh\nexec {} "$@" -mno-avx2 -mno-fma\n'.format(os.environ.get("CC", "cc"))
    )
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    with pytest.raises(KernelsUnavailable) as raised:
        Conv1PoolKernels.build()
    reason = str(raised.value)
    assert reason.startswith(str(compiler) + " failed: ") and "error" in reason, reason


def test_without_a_c_compiler_the_script_trains_with_the_operators(tmp_path, data_dir):
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            data_dir,
            str(tmp_path / "models"),
            "--max-epochs",
            "1",
            "--epoch-size",
            "640",
        ],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, CC=str(tmp_path / "no-such-compiler")),
    )
    assert result.returncode == 0, result.stderr
    assert (
        "conv1 and its max-pool run as PyTorch operators: the compiled kernels are "
        "unavailable (no C compiler"
    ) in result.stderr
    assert (tmp_path / "models" / "ConvNet_MNIST_0.pt").is_file()


def test_dropout_is_active_in_training_and_off_in_eval():
    torch.manual_seed(2)
    model = ConvNet()
    step = FastCpuStep(model)
    pixels = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    labels = torch.zeros(8, dtype=torch.int64)
    assert not torch.equal(step.train_step(pixels, labels)[0], step.train_step(pixels, labels)[0])
    assert not torch.equal(step.forward(pixels), step.forward(pixels))
    model.eval()
    assert torch.equal(step.train_step(pixels, labels)[0], step.train_step(pixels, labels)[0])
    assert torch.equal(step.forward(pixels), step.forward(pixels))


# --- the schedule and the update --------------------------------------------------------------


def test_schedules_by_epoch():
    lr = [schedule_value(ConvNet_MNIST.LR_PER_SAMPLE, e) for e in range(40)]
    assert lr == [0.001] * 10 + [0.0005] * 10 + [0.0001] * 20
    tau = [schedule_value(ConvNet_MNIST.MOMENTUM_TIME_CONSTANT, e) for e in range(40)]
    assert tau == [0] * 5 + [1024] * 35


def _two_parameter_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


def _gradients(model, seed, n):
    torch.manual_seed(100 + seed)
    x, y = torch.randn(n, 3), torch.randint(0, 2, (n,))
    F.cross_entropy(model(x), y).backward()  # mean over the minibatch, as the script's loss


def test_update_is_cntks_unit_gain_momentum_on_summed_gradients():
    model = _two_parameter_model(0)
    optimizer = CntkMomentumSGD(model.parameters())
    weights = model.weight.detach().clone()
    velocity = torch.zeros_like(weights)
    for step, (n, tau) in enumerate([(64, 0), (64, 0), (64, 1024), (64, 1024), (32, 1024)]):
        optimizer.zero_grad()
        _gradients(model, step, n)
        summed = model.weight.grad * n
        mu = math.exp(-n / tau) if tau else 0.0
        velocity = mu * velocity + (1 - mu) * summed  # CNTK: G carries over from momentum 0
        weights = weights - 0.001 * velocity
        optimizer.step(0.001, tau, n)
        assert torch.allclose(model.weight.detach(), weights, atol=1e-7), step


def test_full_minibatches_match_torch_sgd_with_lr_times_b_and_dampening_mu():
    ours, theirs = _two_parameter_model(1), _two_parameter_model(1)
    b, mu = 64, math.exp(-64 / 1024)
    assert mu == pytest.approx(0.939413, abs=1e-6)
    optimizer = CntkMomentumSGD(ours.parameters())
    reference = torch.optim.SGD(theirs.parameters(), lr=0.0005 * b, momentum=mu, dampening=mu)
    for step in range(6):
        optimizer.zero_grad()
        reference.zero_grad()
        _gradients(ours, step, b)
        _gradients(theirs, step, b)
        if step == 0:  # torch seeds its buffer with the raw gradient: give it CNTK's G / B
            optimizer.step(0.0005, 1024, b)
            for parameter in theirs.parameters():
                reference.state[parameter]["momentum_buffer"] = (1 - mu) * parameter.grad.clone()
                parameter.data.add_(
                    reference.state[parameter]["momentum_buffer"], alpha=-0.0005 * b
                )
            continue
        optimizer.step(0.0005, 1024, b)
        reference.step()
        for mine, torchs in zip(ours.parameters(), theirs.parameters(), strict=False):
            assert torch.allclose(mine, torchs, atol=1e-6), step


def test_without_momentum_it_is_plain_sgd_with_lr_times_minibatch_size():
    model = _two_parameter_model(2)
    optimizer = CntkMomentumSGD(model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.zero_grad()
    _gradients(model, 0, 16)
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step(0.001, 0, 16)
    for start, grad, after in zip(before, grads, model.parameters(), strict=False):
        assert torch.allclose(after, start - 0.016 * grad, atol=1e-7)


def test_optimizer_buffers_keep_every_tensors_shape_values_and_update(tmp_path):
    torch.manual_seed(6)
    model = ConvNet()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = CntkMomentumSGD(model.parameters())
    assert optimizer.parameters.numel() == 98778
    for name, parameter in model.named_parameters():  # conv kernels are held channels-last
        assert torch.equal(parameter.detach(), before[name]), name
        assert parameter.grad.shape == parameter.shape, name
        parameter.grad.copy_(torch.full_like(parameter, 2.0))
    optimizer.step(0.001, 0, 10)
    for name, parameter in model.named_parameters():
        assert torch.allclose(parameter.detach(), before[name] - 0.02, atol=1e-7), name
    path = str(tmp_path / "model.pt")  # the model file: plain tensors, whatever the layout
    save_model(model, path)
    saved = torch.load(path)
    assert all(tensor.is_contiguous() for tensor in saved.values())
    fresh = ConvNet()
    fresh.load_state_dict(saved)
    for (name, trained), loaded in zip(model.named_parameters(), fresh.parameters(), strict=False):
        assert torch.equal(loaded, trained.detach()), name


# --- the data order ---------------------------------------------------------------------------


def _stream(seed, count=100):
    generator = torch.Generator()
    generator.manual_seed(seed)
    return SampleStream(count, generator)


def test_each_sweep_is_a_fresh_permutation_and_minibatches_span_sweeps():
    stream = _stream(0)
    taken = torch.cat([stream.take(n) for n in [64, 36, 64, 64, 64, 8]])  # 300 = 3 sweeps
    sweeps = taken.reshape(3, 100)
    for sweep in sweeps:
        assert sorted(sweep.tolist()) == list(range(100))
    assert not torch.equal(sweeps[0], sweeps[1]) and not torch.equal(sweeps[1], sweeps[2])


def test_order_is_reproducible_from_the_seed():
    assert torch.equal(_stream(5).take(250), _stream(5).take(250))
    assert not torch.equal(_stream(5).take(250), _stream(6).take(250))


# --- the CNTK text reader ---------------------------------------------------------------------

GOOD_LINE = "|labels 0 0 1 0 0 0 0 0 0 0 |features " + " ".join(
    str(v) for v in ([0] * 700 + [255, 17, 3] + [0] * 81)
)


def _read(tmp_path, lines, end="\n"):
    path = tmp_path / "sample.txt"
    path.write_text("\n".join(lines) + end)
    return read_ctf(str(path))


def test_reader_parses_values_and_one_hot_labels(tmp_path):
    features, labels = _read(tmp_path, [GOOD_LINE, GOOD_LINE.replace("0 0 1 0", "0 0 0 1")], end="")
    assert features.dtype == np.uint8 and features.shape == (2, 784)
    assert features[0, 700:703].tolist() == [255, 17, 3] and features[0].sum() == 275
    assert labels.tolist() == [2, 3]


def test_reader_accepts_windows_line_ends_and_tabs(tmp_path):
    features, labels = _read(tmp_path, [GOOD_LINE.replace(" 17 ", "\t17 ") + "\r"] * 2)
    assert labels.tolist() == [2, 2] and features[1, 701] == 17


@pytest.mark.parametrize(
    "line,what",
    [
        (GOOD_LINE + " 0", "785 feature values"),
        (GOOD_LINE.rsplit(" ", 1)[0], "783 feature values"),
        (GOOD_LINE.replace("|labels 0 0 1", "|labels 0 1"), "9 label values"),
        (GOOD_LINE.replace("|features", "|featurez"), 'field "|featurez" is not "|features"'),
        (GOOD_LINE.replace(" 17 ", " 1x7 "), "unexpected character 'x'"),
        (GOOD_LINE.replace(" 17 ", " 0.5 "), "unexpected character '.'"),
        (GOOD_LINE.replace(" 17 ", " -17 "), "unexpected character '-'"),
        (GOOD_LINE.replace(" 17 ", " 256 "), "a pixel value is above 255"),
        (GOOD_LINE.replace(" 17 ", " 0017 "), "a value has more than 3 digits"),
        (GOOD_LINE.replace("0 0 1 0", "0 1 1 0"), "labels are not one-hot"),
        (GOOD_LINE.replace("0 0 1 0", "0 0 2 0"), "labels are not one-hot"),
        (GOOD_LINE.replace("|labels ", ""), "1 fields instead of 2"),
        ("", "0 fields instead of 2"),
        ("7 " + GOOD_LINE, 'it does not start with "|labels"'),
    ],
)
def test_reader_names_the_line_and_the_problem(tmp_path, line, what):
    with pytest.raises(InputError) as caught:
        _read(tmp_path, [GOOD_LINE, line, GOOD_LINE])
    message = str(caught.value)
    assert "line 2: " + what in message and "\n" not in message


def test_reader_rejects_an_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        read_ctf(str(tmp_path / "empty.txt"))


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,what",
    [
        ([], "the following arguments are required: DATA_DIR, MODEL_DIR"),
        (["{data}", "{out}", "--max-epochs", "0"], "argument --max-epochs: 0 must be at least 1"),
        (["{data}", "{out}", "--minibatch-size", "x"], "'x' is not a whole number"),
        (["{data}", "{out}", "--epoch-size", "-5"], "-5 must be at least 1"),
        (["{data}", "{out}", "--learning-rate", "1"], "unrecognized arguments: --learning-rate"),
        (["{data}", "{out}", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["{data}", "{out}", "--seed", "-1"], "-1 must be at least 0"),
        (["{data}", "{out}", "--seed", str(2**63)], f"{2**63} must be at least 0 and below 2**63"),
        (["{tmp}/nowhere", "{out}"], "data folder {tmp}/nowhere does not exist"),
        (["{tmp}", "{out}"], "{tmp}/Train-28x28_cntk_text.txt is missing"),
        (["{data}", "{tmp}/file"], "model folder {tmp}/file is a file, not a folder"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_status_2(tmp_path, data_dir, args, what):
    (tmp_path / "file").write_text("x")
    values = dict(data=data_dir, out=tmp_path / "out", tmp=tmp_path)
    result = run_script(*[a.format(**values) for a in args], timeout=60)
    assert result.returncode == 2
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("ConvNet_MNIST.py: error: ")
    assert what.format(**values) in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_garbled_data_gets_one_line_and_exit_status_2(tmp_path, data_dir):
    (tmp_path / "Train-28x28_cntk_text.txt").write_text(GOOD_LINE + "\n" + GOOD_LINE[:500] + "\n")
    (tmp_path / "Test-28x28_cntk_text.txt").write_text(GOOD_LINE + "\n")
    result = run_script(tmp_path, tmp_path / "models", timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.splitlines()[-1]
    assert (
        last.startswith("ConvNet_MNIST.py: error: ") and "Train-28x28_cntk_text.txt: line 2" in last
    )
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "models").iterdir())


@pytest.mark.parametrize(
    "setting, threads",
    [
        (None, "every core"),
        ("1", 1),
        ("3", 3),
        ("4,2", 4),
        ("0", "every core"),
        ("many", "every core"),
    ],
)
def test_cpu_threads_are_every_core_unless_omp_num_threads_says_otherwise(setting, threads):
    environ = {} if setting is None else {"OMP_NUM_THREADS": setting}
    expected = len(os.sched_getaffinity(0)) if threads == "every core" else threads
    assert cpu_thread_count(environ) == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_asking_for_a_gpu_where_there_is_none_is_one_line(tmp_path, data_dir):
    result = run_script(data_dir, tmp_path / "out", "--device", "cuda", timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "ConvNet_MNIST.py: error: --device cuda: no CUDA GPU is available to PyTorch here"
    )
    assert "Traceback" not in result.stderr


def test_help_describes_the_arguments():
    result = run_script("--help", timeout=60)
    assert result.returncode == 0
    for option in (
        "DATA_DIR",
        "MODEL_DIR",
        "--max-epochs",
        "--minibatch-size",
        "--epoch-size",
        "--seed",
        "--device",
    ):
        assert option in result.stderr


def test_short_training_streams_the_recipes_lines_and_learns(tmp_path, data_dir):
    """3 epochs of 10,000 samples: the recipe's output, model files, and a test error bound."""
    models = tmp_path / "models"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), data_dir, str(models)] + SHORT_RUN,
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines, alive_at_first_epoch = [], None
    for line in process.stderr:  # stderr as the job streams it, line by line
        lines.append(line.rstrip("\n"))
        if line.startswith("Finished Epoch[1 of 3]"):
            alive_at_first_epoch = process.poll() is None
    assert process.wait(timeout=300) == 0, "\n".join(lines)
    assert process.stdout.read() == ""  # the recipe sends everything to stderr
    assert alive_at_first_epoch, "epoch lines must arrive while the job still runs"

    assert "Training 98778 parameters in 10 parameter tensors." in lines
    assert "Learning rate per 1 samples: 0.001" in lines
    assert "Momentum per 1 samples: 0.0" in lines
    epochs = [FINISHED.match(line) for line in lines if line.startswith("Finished Epoch")]
    assert [m and (m.group(1), m.group(2), m.group(4), m.group(6)) for m in epochs] == [
        (str(k), "3", "10000", "10000") for k in (1, 2, 3)
    ]
    losses = [float(m.group(3)) for m in epochs]
    assert losses[0] > losses[1] > losses[2]
    finals = [FINAL.match(line) for line in lines if line.startswith("Final Results")]
    assert len(finals) == 1 and finals[0], lines[-3:]
    assert finals[0].group(1) == "11"  # the recipe's own off-by-one, kept as it printed
    error = float(finals[0].group(2))
    assert error <= SHORT_RUN_ERROR_BOUND, f"test error {error}% over the bound"

    assert sorted(p.name for p in models.iterdir()) == [
        "ConvNet_MNIST_0.pt",
        "ConvNet_MNIST_1.pt",
        "ConvNet_MNIST_2.pt",
    ]
    model = ConvNet()
    model.load_state_dict(torch.load(str(models / "ConvNet_MNIST_2.pt")))  # the README's line
    model.eval()
    features, labels = read_ctf(str(Path(data_dir) / "Test-28x28_cntk_text.txt"))
    with torch.no_grad():
        predicted = model(torch.from_numpy(features)).argmax(1).numpy()
    assert f"{100.0 * (predicted != labels).mean():0.2f}" == finals[0].group(2)


def test_the_gpu_branchs_autograd_step_matches_the_fast_cpu_step():
    """The step train.py takes on a CUDA device, run here on the CPU (no GPU in the tests)."""
    from types import SimpleNamespace

    from quickstart.convnet_pytorch.train import training_step

    torch.manual_seed(12)
    pixels, labels = mnist_like_batch(16)
    reference, model = perturbed_pair()
    reference.eval(), model.eval()
    optimizer = CntkMomentumSGD(model.parameters())
    step, forward = training_step(model, optimizer, SimpleNamespace(type="cuda"))
    for _ in range(2):  # the second step must replace the gradients, not add to them
        logits, loss = step(pixels, labels)
    expected_logits, expected_loss = FastCpuStep(reference).train_step(pixels, labels)
    assert torch.allclose(logits, expected_logits, atol=1e-5)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    for (name, expected), got in zip(reference.named_parameters(), model.parameters(), strict=True):
        assert torch.allclose(got.grad, expected.grad, rtol=1e-4, atol=1e-6), name
    total = sum(float(p.grad.abs().sum()) for p in model.parameters())
    assert float(optimizer.gradients.abs().sum()) == pytest.approx(total)  # what step() reads
    assert forward is model


def test_without_the_port_beside_it_the_script_says_so_in_one_line(tmp_path, data_dir):
    """As on a node where only ConvNet_MNIST.py was uploaded (and CNTK does not import)."""
    alone = tmp_path / "ConvNet_MNIST.py"
    alone.write_bytes(SCRIPT.read_bytes())
    result = subprocess.run(
        [sys.executable, str(alone), data_dir, str(tmp_path / "models")],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "ConvNet_MNIST.py: error: CNTK does not import, nor does the PyTorch port: No module "
        "named 'convnet_pytorch'; upload quickstart/convnet_pytorch/ beside this script\n"
    )
