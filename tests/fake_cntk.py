"""A stand-in for the `cntk` module (CNTK 2.1's API, as far as the recipe uses it) that records
every call the recipe makes and behaves enough like CNTK for `train_with_cntk` to run to its end.

CNTK cannot be installed here, yet `train_with_cntk` is the code a real Batch AI node runs. This
module lets a test run it: readers really read the CNTK text files they are given (a randomizing
reader sweeps the samples in a fresh seeded order forever, a non-randomizing one stops after
`max_sweeps`), layers record the options in effect (`default_options` included) and the node
they were applied to, and the trainer records each minibatch. `make_cntk()` returns a fresh
module object and its `Recorder`; nothing is global.

The test error the fake trainer reports for a minibatch is the share of its samples whose label
is odd, so the recipe's weighted average over the test loop can be checked exactly.
"""

import contextlib
import random
import types


class Recorder:
    """Every recorded call in order, as (name, args, kwargs)."""

    def __init__(self):
        self.calls = []

    def add(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))

    def named(self, name):
        return [(args, kwargs) for called, args, kwargs in self.calls if called == name]

    def names(self):
        return [name for name, _, _ in self.calls]


class Node:
    """A node of the network graph: what made it and from which inputs."""

    def __init__(self, recorder, op, inputs=(), **details):
        self.recorder, self.op, self.inputs, self.details = recorder, op, tuple(inputs), details
        self.parameters = ("parameters of", self)

    def save(self, path):
        self.recorder.add("save", self, path)
        with open(path, "w") as model:
            model.write(f"model {self.op}\n")

    def __repr__(self):
        return f"Node({self.op})"


class StreamInformation:
    def __init__(self, name):
        self.name = name


class MinibatchData:
    def __init__(self, labels):
        self.labels = labels
        self.num_samples = len(labels)


class MinibatchSource:
    """Reads a CTF file's label columns; `next_minibatch` hands out samples as CNTK's reader
    does: in a fresh seeded order per sweep when randomizing, until max_sweeps is used up."""

    def __init__(self, recorder, deserializer, randomize, max_sweeps):
        self.recorder, self.deserializer = recorder, deserializer
        self.randomize, self.max_sweeps = randomize, max_sweeps
        self.labels = _read_labels(deserializer.path, deserializer.streams)
        self.streams = types.SimpleNamespace(
            **{name: StreamInformation(name) for name in deserializer.streams}
        )
        self.order, self.position, self.sweeps = [], 0, 0
        self.random = random.Random(1)

    def next_minibatch(self, minibatch_size_in_samples, input_map=None):
        self.recorder.add("next_minibatch", self, minibatch_size_in_samples, input_map=input_map)
        taken = []
        while len(taken) < minibatch_size_in_samples:
            if self.position == len(self.order):
                if self.max_sweeps != INFINITELY_REPEAT and self.sweeps >= self.max_sweeps:
                    break
                self.order = list(range(len(self.labels)))
                if self.randomize:
                    self.random.shuffle(self.order)
                self.position, self.sweeps = 0, self.sweeps + 1
            taken.append(self.labels[self.order[self.position]])
            self.position += 1
        if not taken:
            return {}
        return {variable: MinibatchData(taken) for variable in (input_map or {})}


def _read_labels(path, streams):
    """The label index of each line of a CNTK text file, checking each line's field sizes."""
    labels = []
    with open(path) as text:
        for number, line in enumerate(text, 1):
            fields = {}
            for part in line.split("|")[1:]:
                name, *values = part.split()
                fields[name] = values
            for definition in streams.values():
                size = len(fields.get(definition.field, []))
                if size != definition.shape:
                    raise ValueError(f"{path} line {number}: {definition.field} has {size} values")
            labels.append(fields[streams["labels"].field].index("1"))
    return labels


class Trainer:
    def __init__(self, recorder, model, criterion, learners, progress_writers):
        self.recorder = recorder
        self.model, self.criterion = model, criterion
        self.learners, self.progress_writers = learners, progress_writers

    def train_minibatch(self, arguments):
        data = next(iter(arguments.values()))
        self.recorder.add("train_minibatch", data.num_samples)
        return True

    def summarize_training_progress(self):
        self.recorder.add("summarize_training_progress")

    def test_minibatch(self, arguments):
        data = next(iter(arguments.values()))
        self.recorder.add("test_minibatch", data.num_samples)
        return sum(label % 2 for label in data.labels) / data.num_samples


def make_cntk(with_seed_setter=True):
    """A fresh stand-in `cntk` module and the Recorder of everything done with it."""
    recorder = Recorder()
    cntk = types.ModuleType("cntk")
    defaults = [{}]

    def recorded(name, result=None):
        def call(*args, **kwargs):
            recorder.add(name, *args, **kwargs)
            return result(*args, **kwargs) if result else (name, args, tuple(kwargs.items()))

        return call

    def layer(kind):
        def construct(*args, **kwargs):
            options = dict(defaults[-1])
            options.update(kwargs)
            recorder.add(kind, *args, **kwargs)

            def apply(node):
                return Node(recorder, kind, [node], args=args, options=options)

            return apply

        return construct

    @contextlib.contextmanager
    def default_options(**options):
        recorder.add("default_options", **options)
        defaults.append(dict(defaults[-1], **options))
        try:
            yield
        finally:
            defaults.pop()

    relu = Node(recorder, "relu")
    ops = types.SimpleNamespace(
        input=recorded("input", lambda shape, dtype: Node(recorder, "input", shape=shape)),
        constant=recorded("constant", lambda value: Node(recorder, "constant", value=value)),
        element_times=recorded("element_times", lambda a, b: Node(recorder, "times", [a, b])),
        relu=relu,
    )
    cntk.ops = ops
    cntk.layers = types.SimpleNamespace(
        default_options=default_options,
        **{kind: layer(kind) for kind in ("Convolution2D", "MaxPooling", "Dense", "Dropout")},
    )
    cntk.losses = types.SimpleNamespace(
        cross_entropy_with_softmax=recorded(
            "cross_entropy_with_softmax", lambda z, y: Node(recorder, "ce", [z, y])
        )
    )
    cntk.metrics = types.SimpleNamespace(
        classification_error=recorded(
            "classification_error", lambda z, y: Node(recorder, "pe", [z, y])
        )
    )

    def stream_def(field, shape, is_sparse=False):
        recorder.add("StreamDef", field=field, shape=shape)
        return types.SimpleNamespace(field=field, shape=shape)

    def deserializer(path, streams):
        recorder.add("CTFDeserializer", path, streams)
        return types.SimpleNamespace(path=path, streams=streams)

    cntk.io = types.SimpleNamespace(
        INFINITELY_REPEAT=INFINITELY_REPEAT,
        StreamDef=stream_def,
        StreamDefs=lambda **streams: dict(streams),
        CTFDeserializer=deserializer,
        MinibatchSource=lambda deserializer, randomize=True, max_sweeps=INFINITELY_REPEAT: (
            _recorded_source(recorder, deserializer, randomize, max_sweeps)
        ),
    )
    unit_type = types.SimpleNamespace(sample="sample", minibatch="minibatch")
    cntk.learning_rate_schedule = recorded("learning_rate_schedule")
    cntk.learners = types.SimpleNamespace(
        UnitType=unit_type,
        momentum_as_time_constant_schedule=recorded("momentum_as_time_constant_schedule"),
        momentum_sgd=recorded("momentum_sgd"),
    )
    cntk.logging = types.SimpleNamespace(
        ProgressPrinter=recorded("ProgressPrinter"),
        log_number_of_parameters=recorded("log_number_of_parameters"),
    )
    cntk.Trainer = recorded("Trainer", lambda *args: Trainer(recorder, *args))
    cntk.cntk_py = types.SimpleNamespace()
    if with_seed_setter:
        cntk.cntk_py.set_fixed_random_seed = recorded("set_fixed_random_seed")
    return cntk, recorder


def _recorded_source(recorder, deserializer, randomize, max_sweeps):
    recorder.add("MinibatchSource", deserializer, randomize=randomize, max_sweeps=max_sweeps)
    return MinibatchSource(recorder, deserializer, randomize, max_sweeps)


INFINITELY_REPEAT = 2**64 - 1  # cntk.io.INFINITELY_REPEAT
