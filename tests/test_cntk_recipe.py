"""The CNTK branch of ConvNet_MNIST.py, executed: `train_with_cntk` runs against a recording
stand-in `cntk` (tests/fake_cntk.py) on a tiny data set, and the calls a real node would make
are checked with their arguments: readers, network, schedules, learner, trainer, the minibatch
sizes of each epoch, the model file per epoch and the final test loop."""

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fake_cntk import INFINITELY_REPEAT, make_cntk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import ConvNet_MNIST  # noqa: E402  (the script, imported as a module)

TRAIN_SAMPLES = 300
TEST_SAMPLES = 10000  # the recipe tests exactly 10,000 images


def ctf_line(label):
    labels = " ".join("1" if i == label else "0" for i in range(10))
    return f"|labels {labels} |features {'0 ' * 783}255\n"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny training set, and a test set whose first 1,500 labels are odd: the fake trainer's
    error is 1 for the first test minibatch, 476/1024 for the second and 0 after, so only the
    recipe's weighting by minibatch size gives 15%."""
    folder = tmp_path_factory.mktemp("ctf")
    (folder / ConvNet_MNIST.TRAIN_FILE).write_text(
        "".join(ctf_line(n % 10) for n in range(TRAIN_SAMPLES))
    )
    (folder / ConvNet_MNIST.TEST_FILE).write_text(
        "".join(ctf_line(7 if n < 1500 else 2 * (n % 5)) for n in range(TEST_SAMPLES))
    )
    return folder


def run_recipe(data_dir, model_dir, *options, **make):
    args = ConvNet_MNIST.parse_args([str(data_dir), str(model_dir)] + list(options))
    cntk, recorder = make_cntk(**make)
    error = ConvNet_MNIST.train_with_cntk(cntk, args)
    return cntk, recorder, error


SHORT = ["--max-epochs", "3", "--epoch-size", "250", "--minibatch-size", "64"]


@pytest.fixture
def short_run(data_dir, tmp_path_factory):
    """Run per test (not once per module), so a mutation tool sees every test reach the recipe."""
    model_dir = tmp_path_factory.mktemp("models")
    cntk, recorder, error = run_recipe(data_dir, model_dir, *SHORT, "--seed", "7")
    return cntk, recorder, error, model_dir


def test_the_readers_read_the_train_and_test_files_with_the_recipes_streams(short_run, data_dir):
    _, recorder, _, _ = short_run
    assert (
        recorder.named("StreamDef")
        == [
            ((), {"field": "features", "shape": 784}),
            ((), {"field": "labels", "shape": 10}),
        ]
        * 2
    )
    sources = recorder.named("MinibatchSource")
    assert [(args[0].path, kwargs) for args, kwargs in sources] == [
        (
            str(data_dir / ConvNet_MNIST.TRAIN_FILE),
            {"randomize": True, "max_sweeps": INFINITELY_REPEAT},
        ),
        (str(data_dir / ConvNet_MNIST.TEST_FILE), {"randomize": False, "max_sweeps": 1}),
    ]


def test_the_network_is_the_recipes_layer_by_layer(short_run):
    cntk, recorder, _, _ = short_run
    (model,) = [args[0] for args, _ in recorder.named("log_number_of_parameters")]
    layers = []
    node = model
    while node.op not in ("times", "input"):
        layers.append((node.op, node.details["args"], node.details["options"]))
        (node,) = node.inputs
    relu = cntk.ops.relu
    assert layers[::-1] == [
        ("Convolution2D", ((5, 5), 32), {"activation": relu, "pad": True}),
        ("MaxPooling", ((3, 3), (2, 2)), {"activation": relu, "pad": False}),
        ("Convolution2D", ((3, 3), 48), {"activation": relu, "pad": False}),
        ("MaxPooling", ((3, 3), (2, 2)), {"activation": relu, "pad": False}),
        ("Convolution2D", ((3, 3), 64), {"activation": relu, "pad": False}),
        ("Dense", (96,), {"activation": relu, "pad": False}),
        ("Dropout", (0.5,), {"activation": relu, "pad": False}),
        ("Dense", (10,), {"activation": None, "pad": False}),
    ]
    scale, image = node.inputs  # the input scaled by 1/256 before the first layer
    assert (scale.op, scale.details) == ("constant", {"value": 0.00390625})
    assert (image.op, image.details) == ("input", {"shape": (1, 28, 28)})
    # The recipe's inputs are float32, as the CTF reader's streams deliver them.
    assert [args for args, _ in recorder.named("input")] == [
        ((1, 28, 28), np.float32),
        (10, np.float32),
    ]


def test_loss_and_metric_compare_the_network_with_the_labels(short_run):
    _, recorder, _, _ = short_run
    (model,) = [args[0] for args, _ in recorder.named("log_number_of_parameters")]
    labels = [n for n in recorder.calls if n[0] == "input"][1]
    ((ce_args, _),) = recorder.named("cross_entropy_with_softmax")
    ((pe_args, _),) = recorder.named("classification_error")
    assert ce_args[0] is model and pe_args[0] is model
    assert ce_args[1].details == {"shape": 10} == pe_args[1].details
    assert labels[1][0] == 10


def test_schedules_are_per_sample_with_the_epoch_size_and_feed_the_learner(short_run):
    cntk, recorder, _, _ = short_run
    (lr_call,) = recorder.named("learning_rate_schedule")
    assert lr_call == ((ConvNet_MNIST.LR_PER_SAMPLE, cntk.learners.UnitType.sample, 250), {})
    (mm_call,) = recorder.named("momentum_as_time_constant_schedule")
    assert mm_call == ((ConvNet_MNIST.MOMENTUM_TIME_CONSTANT, 250), {})
    ((parameters, lr, mm), kwargs) = recorder.named("momentum_sgd")[0]
    (model,) = [args[0] for args, _ in recorder.named("log_number_of_parameters")]
    assert parameters == model.parameters and kwargs == {}
    assert lr == ("learning_rate_schedule", lr_call[0], ())
    assert mm == ("momentum_as_time_constant_schedule", mm_call[0], ())


def test_the_trainer_gets_the_model_loss_metric_learner_and_progress_printer(short_run):
    _, recorder, _, _ = short_run
    assert recorder.named("ProgressPrinter") == [((), {"tag": "Training", "num_epochs": 3})]
    ((model, criterion, learner, printer), _) = recorder.named("Trainer")[0]
    (logged,) = [args[0] for args, _ in recorder.named("log_number_of_parameters")]
    assert model is logged
    assert [node.op for node in criterion] == ["ce", "pe"]
    assert learner[0] == "momentum_sgd" and printer[0] == "ProgressPrinter"


def test_each_epoch_takes_epoch_size_samples_in_minibatches_then_saves_a_model(short_run):
    _, recorder, _, model_dir = short_run
    training = [
        (name, args[-1] if name == "save" else args)
        for name, args, _ in recorder.calls
        if name in ("train_minibatch", "summarize_training_progress", "save")
    ]
    epoch = [("train_minibatch", (64,))] * 3 + [("train_minibatch", (58,))]
    expected = []
    for number in range(3):
        expected += epoch + [("summarize_training_progress", ())]
        expected.append(("save", str(model_dir / f"ConvNet_MNIST_{number}.dnn")))
    assert training == expected
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "ConvNet_MNIST_0.dnn",
        "ConvNet_MNIST_1.dnn",
        "ConvNet_MNIST_2.dnn",
    ]


def test_training_reads_the_train_stream_and_testing_the_test_stream(short_run):
    _, recorder, _, _ = short_run
    reads = recorder.named("next_minibatch")
    train_reads = [(args, kw) for args, kw in reads if args[0].randomize]
    test_reads = [(args, kw) for args, kw in reads if not args[0].randomize]
    assert [args[1] for args, _ in train_reads] == ([64, 64, 64, 58]) * 3
    assert [args[1] for args, _ in test_reads] == [1024] * 9 + [784]
    for args, kwargs in train_reads + test_reads:
        source, input_map = args[0], kwargs["input_map"]
        assert {
            stream.name: variable.details["shape"] for variable, stream in input_map.items()
        } == {
            "features": (1, 28, 28),
            "labels": 10,
        }
        assert all(stream is getattr(source.streams, stream.name) for stream in input_map.values())


def test_the_final_test_loop_weights_each_minibatch_by_its_size(short_run):
    _, recorder, error, _ = short_run
    assert [args[0] for args, _ in recorder.named("test_minibatch")] == [1024] * 9 + [784]
    assert error == pytest.approx(0.15)


def test_the_final_results_line_is_printed_as_the_recipe_prints_it(data_dir, tmp_path, capsys):
    run_recipe(data_dir, tmp_path, "--max-epochs", "1", "--epoch-size", "100")
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == ["Final Results: Minibatch[1-11]: errs = 15.00% * 10000", ""]


def test_the_seed_is_fixed_only_when_given_and_only_where_cntk_can(data_dir, tmp_path):
    _, recorder, _ = run_recipe(data_dir, tmp_path, "--max-epochs", "1", "--epoch-size", "64")
    assert recorder.named("set_fixed_random_seed") == []
    _, recorder, _ = run_recipe(
        data_dir, tmp_path, "--max-epochs", "1", "--epoch-size", "64", "--seed", "0"
    )
    assert recorder.named("set_fixed_random_seed") == [((0,), {})]
    _, recorder, _ = run_recipe(
        data_dir,
        tmp_path,
        "--max-epochs",
        "1",
        "--epoch-size",
        "64",
        "--seed",
        "5",
        with_seed_setter=False,
    )
    assert "set_fixed_random_seed" not in recorder.names()


def test_the_default_sizes_are_the_recipes(data_dir, tmp_path):
    """40 epochs of 60,000 samples at 64 per minibatch, unless the arguments say otherwise."""
    args = ConvNet_MNIST.parse_args([str(data_dir), str(tmp_path)])
    assert (args.max_epochs, args.epoch_size, args.minibatch_size) == (40, 60000, 64)


def keep_standard_streams(monkeypatch):
    """main() points stdout at stderr, as the recipe does; undo that after the test."""
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)


def test_main_runs_the_cntk_branch_when_cntk_imports(data_dir, tmp_path, monkeypatch, capsys):
    cntk, recorder = make_cntk()
    monkeypatch.setitem(sys.modules, "cntk", cntk)
    keep_standard_streams(monkeypatch)
    status = ConvNet_MNIST.main(
        [str(data_dir), str(tmp_path / "models"), "--max-epochs", "1", "--epoch-size", "64"]
    )
    assert status == 0
    assert (tmp_path / "models" / "ConvNet_MNIST_0.dnn").is_file()
    assert "summarize_training_progress" in recorder.names()


def test_a_cntk_error_is_one_line_with_exit_status_2(data_dir, tmp_path, monkeypatch, capsys):
    cntk, _ = make_cntk()

    def refuse(*args, **kwargs):
        raise RuntimeError("CUDA failure 2: out of memory\n\n[CALL STACK]\n  > frame")

    cntk.Trainer = refuse
    monkeypatch.setitem(sys.modules, "cntk", cntk)
    keep_standard_streams(monkeypatch)
    status = ConvNet_MNIST.main([str(data_dir), str(tmp_path / "m"), "--max-epochs", "1"])
    assert status == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "ConvNet_MNIST.py: error: CNTK: CUDA failure 2: out of memory"
    )
