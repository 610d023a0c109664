# ConvNet_MNIST.py: the Azure Batch AI CNTK recipe's MNIST ConvNet, runnable with or without CNTK.
#
# Usage: python ConvNet_MNIST.py DATA_DIR MODEL_DIR [--max-epochs N] [--minibatch-size N]
#                                [--epoch-size N] [--seed N] [--device auto|cpu|cuda]
#
# DATA_DIR holds Train-28x28_cntk_text.txt and Test-28x28_cntk_text.txt (CNTK text format);
# a model file is written to MODEL_DIR after every epoch. Everything is printed on stderr, as
# the recipe does (it sets sys.stdout = sys.stderr), one flushed line at a time.
#
# Where `cntk` imports (the job's container, microsoft/cntk:2.1-gpu-python3.5) this runs the
# recipe's CNTK code and saves ConvNet_MNIST_{epoch}.dnn. Everywhere else it trains the same
# network with PyTorch: same layers, initialisation, loss, schedule, data order semantics and
# output lines, saving ConvNet_MNIST_{epoch}.pt state dicts. This file must stay self-contained
# (the node only has what was uploaded) and in Python 3.5 syntax.
"""The Batch AI quickstart's training script: CNTK where it imports, PyTorch elsewhere."""

from __future__ import division, print_function

import argparse
import io
import math
import os
import sys
import time

import numpy as np

TRAIN_FILE = 'Train-28x28_cntk_text.txt'
TEST_FILE = 'Test-28x28_cntk_text.txt'
IMAGE_SHAPE = (1, 28, 28)
INPUT_DIM = 28 * 28
NUM_CLASSES = 10
INPUT_SCALE = 0.00390625  # 1/256, exactly as the recipe (not 1/255)

# The recipe's schedules. Each entry lasts one epoch; the last one persists.
LR_PER_SAMPLE = [0.001] * 10 + [0.0005] * 10 + [0.0001]
MOMENTUM_TIME_CONSTANT = [0] * 5 + [1024]
TEST_MINIBATCH_SIZE = 1024

DEFAULT_MAX_EPOCHS = 40
DEFAULT_MINIBATCH_SIZE = 64
DEFAULT_EPOCH_SIZE = 60000
DEFAULT_SEED = 0

PROG = 'ConvNet_MNIST.py'


class InputError(Exception):
    """Bad arguments or unusable data: reported as one line, exit status 2."""


def log(text=''):
    """Print one line and flush it, so a job's stderr can be streamed while it trains."""
    print(text, flush=True)


def schedule_value(schedule, epoch):
    """The value of an epoch-indexed CNTK schedule list for 0-based ``epoch``."""
    return schedule[min(epoch, len(schedule) - 1)]


# --- arguments --------------------------------------------------------------------------------

class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (no usage dump, no traceback)."""

    def error(self, message):
        raise InputError('{} (see --help)'.format(message))


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('{!r} is not a whole number'.format(text))
    if value < 1:
        raise argparse.ArgumentTypeError('{} must be at least 1'.format(value))
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('{!r} is not a whole number'.format(text))
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError('{} is not in 0..2**63-1'.format(value))
    return value


def parse_args(argv):
    parser = _OneLineParser(
        prog=PROG,
        description='Train the CNTK recipe\'s MNIST ConvNet (CNTK where it imports, else '
                    'PyTorch) and report the test error.')
    parser.add_argument('data_dir', metavar='DATA_DIR',
                        help='folder with {} and {}'.format(TRAIN_FILE, TEST_FILE))
    parser.add_argument('model_dir', metavar='MODEL_DIR',
                        help='folder for the per-epoch model files (created if missing)')
    parser.add_argument('--max-epochs', type=_positive_int, default=DEFAULT_MAX_EPOCHS,
                        metavar='N', help='epochs to train (default %(default)s)')
    parser.add_argument('--minibatch-size', type=_positive_int, default=DEFAULT_MINIBATCH_SIZE,
                        metavar='N', help='samples per minibatch (default %(default)s)')
    parser.add_argument('--epoch-size', type=_positive_int, default=DEFAULT_EPOCH_SIZE,
                        metavar='N', help='samples per epoch (default %(default)s)')
    parser.add_argument('--seed', type=_seed, default=None, metavar='N',
                        help='random seed for initialisation, dropout and data order '
                             '(PyTorch default {}; CNTK keeps its own)'.format(DEFAULT_SEED))
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
                        help='PyTorch only: a CUDA GPU when there is one (auto), or force one')
    return parser.parse_args(argv)


def check_paths(args):
    """Fail fast, before any training, on a missing data file or an unusable model folder."""
    if not os.path.isdir(args.data_dir):
        raise InputError('data folder {} does not exist'.format(args.data_dir))
    for name in (TRAIN_FILE, TEST_FILE):
        path = os.path.join(args.data_dir, name)
        if not os.path.isfile(path):
            raise InputError('{} is missing: DATA_DIR must hold {} and {}'.format(
                path, TRAIN_FILE, TEST_FILE))
    if os.path.exists(args.model_dir) and not os.path.isdir(args.model_dir):
        raise InputError('model folder {} is a file, not a folder'.format(args.model_dir))
    try:
        os.makedirs(args.model_dir, exist_ok=True)
    except OSError as error:
        raise InputError('cannot create model folder {}: {}'.format(
            args.model_dir, error.strerror or error))


# --- CNTK text format reader ------------------------------------------------------------------
#
# The files hold one sample per line: "|labels <10 ints> |features <784 ints>\n". Parsing 60,000
# lines with str.split takes many seconds, so the reader works on the whole file as one byte
# array: digit runs are found with a single diff, their values assembled from at most three
# digits, and the line structure (field names, value counts, one-hot labels, 0-255 pixels) is
# checked with vectorised comparisons, so garbled input is reported, never misread.

_DIGIT_ZERO = ord('0')
_BLANKS = (ord(' '), ord('\t'), ord('\r'))
_CHUNK_LINES = 4096  # about 7.5 MB of text: the scratch arrays stay small and get reused


def read_ctf(path, num_features=INPUT_DIM, num_labels=NUM_CLASSES):
    """Read a CNTK text file into ``(features uint8 [n, num_features], labels int64 [n])``."""
    try:
        with open(path, 'rb') as stream:
            size = os.fstat(stream.fileno()).st_size
            buffer = bytearray(size + 1)  # room for a missing final newline
            stream.readinto(memoryview(buffer)[:size])
    except OSError as error:
        raise InputError('cannot read {}: {}'.format(path, error.strerror or error))
    if size == 0:
        raise InputError('{}: empty file, expected CNTK text format lines'.format(path))
    data = np.frombuffer(buffer, dtype=np.uint8)
    if data[size - 1] != 10:
        data[size] = 10
        size += 1
    text = data[:size]
    newlines = np.flatnonzero(text == 10)
    lines = len(newlines)
    features = np.empty((lines, num_features), dtype=np.uint8)
    labels = np.empty(lines, dtype=np.int64)
    line_starts = np.concatenate(([0], newlines[:-1] + 1))
    for first in range(0, lines, _CHUNK_LINES):
        last = min(first + _CHUNK_LINES, lines)
        _parse_lines(path, text, line_starts[first:last], newlines[first:last], first,
                     num_features, num_labels, features[first:last], labels[first:last])
    return features, labels


def _parse_lines(path, text, line_starts, newlines, first_line, num_features,
                 num_labels, features_out, labels_out):
    """Parse the lines [line_starts[i], newlines[i]] of ``text`` into the two output arrays."""
    begin, end = int(line_starts[0]), int(newlines[-1]) + 1
    chunk = text[begin:end]
    line_starts = line_starts - begin
    newlines = newlines - begin
    lines = len(newlines)

    def fail(position, what):
        line = first_line + int(np.searchsorted(newlines, position)) + 1
        raise InputError('{}: line {}: {}; expected "|labels <{} values> |features <{} '
                         'values>"'.format(path, line, what, num_labels, num_features))

    # Each line is "|labels ... |features ...": two bars, the first at the line's start.
    bars = np.flatnonzero(chunk == 124)
    if len(bars) != 2 * lines:
        counts = np.diff(np.searchsorted(bars, np.concatenate(([-1], newlines))))
        bad = int(np.flatnonzero(counts != 2)[0])
        fail(newlines[bad], '{} fields instead of 2'.format(int(counts[bad])))
    label_bars, feature_bars = bars[0::2], bars[1::2]
    misplaced = (label_bars != line_starts) | (feature_bars > newlines)
    if misplaced.any():
        bad = int(np.flatnonzero(misplaced)[0])
        fail(newlines[bad], 'it does not start with "|labels"')
    for bar_positions, name in ((label_bars, b'labels'), (feature_bars, b'features')):
        expected = np.frombuffer(name + b' ', dtype=np.uint8)
        window = chunk[np.minimum(bar_positions[:, None] + np.arange(1, len(name) + 2),
                                  len(chunk) - 1)]
        wrong = (window != expected).any(axis=1)
        if wrong.any():
            bad = int(np.flatnonzero(wrong)[0])
            fail(bar_positions[bad], 'field "|{}" is not "|{}"'.format(
                bytes(window[bad, :-1]).decode('ascii', 'replace'), name.decode()))

    # Nothing but digits and blanks besides the two field names.
    is_digit = (chunk - _DIGIT_ZERO) < 10  # wraps below '0', so this is '0' <= byte <= '9'
    plain = np.count_nonzero(is_digit) + 3 * lines  # digits, two bars and a newline a line
    plain += sum(np.count_nonzero(chunk == blank) for blank in _BLANKS)
    if len(chunk) - plain != lines * (len('labels') + len('features')):
        ordinary = np.zeros(256, dtype=bool)
        ordinary[[10, 124] + list(_BLANKS) + list(range(_DIGIT_ZERO, _DIGIT_ZERO + 10))] = True
        stray = np.flatnonzero(~ordinary[chunk])
        names = np.concatenate([label_bars[:, None] + np.arange(1, 7),
                                feature_bars[:, None] + np.arange(1, 9)], axis=1).ravel()
        stray = np.setdiff1d(stray, names)
        fail(stray[0], 'unexpected character {!r}'.format(chr(chunk[stray[0]])))

    # Values: a run of digits starts where a digit follows a non-digit (every line starts
    # with '|'). Most MNIST values are one digit, so the first digit of every run is gathered
    # and only the runs whose next byte is a digit get the second (and third) look.
    starts = np.flatnonzero(is_digit[1:] > is_digit[:-1]) + 1
    values = (chunk[starts] - _DIGIT_ZERO).astype(np.uint16)
    after = text[begin + 1:]  # after[i] is the byte after chunk[i]; a newline ends the text
    second = after[starts] - _DIGIT_ZERO
    longer = np.flatnonzero(second < 10)
    if longer.size:
        longer_starts = starts[longer]
        tails = values[longer] * 10 + second[longer]
        third = text[begin + 2:][longer_starts] - _DIGIT_ZERO
        three = third < 10
        tails[three] = tails[three] * 10 + third[three]
        fourth = text[begin + 3:][longer_starts[three]] - _DIGIT_ZERO
        if (fourth < 10).any():
            fail(longer_starts[three][int(np.argmax(fourth < 10))],
                 'a value has more than 3 digits')
        values[longer] = tails

    # Exactly num_labels values after |labels and num_features after |features on each line.
    at_features = np.searchsorted(starts, feature_bars)
    at_newline = np.searchsorted(starts, newlines)
    at_labels = np.concatenate(([0], at_newline[:-1]))
    for counts, wanted, what in ((at_features - at_labels, num_labels, 'label values'),
                                 (at_newline - at_features, num_features, 'feature values')):
        wrong = counts != wanted
        if wrong.any():
            bad = int(np.flatnonzero(wrong)[0])
            fail(newlines[bad], '{} {}'.format(int(counts[bad]), what))

    table = values.reshape(lines, num_labels + num_features)
    one_hot = table[:, :num_labels]
    not_one_hot = (one_hot > 1).any(axis=1) | (one_hot.sum(axis=1) != 1)
    if not_one_hot.any():
        fail(newlines[int(np.flatnonzero(not_one_hot)[0])], 'labels are not one-hot')
    pixels = table[:, num_labels:]
    too_bright = pixels > 255
    if too_bright.any():
        fail(newlines[int(np.flatnonzero(too_bright.any(axis=1))[0])],
             'a pixel value is above 255')
    features_out[...] = pixels
    labels_out[...] = np.argmax(one_hot, axis=1)


# --- CNTK (the recipe, against the CNTK 2.1 API) ----------------------------------------------

def train_with_cntk(cntk, args):
    """The Batch AI recipe's convnet_mnist(), with its sizes taken from the arguments."""
    data_path, model_path = args.data_dir, args.model_dir
    if args.seed is not None and hasattr(cntk.cntk_py, 'set_fixed_random_seed'):
        cntk.cntk_py.set_fixed_random_seed(args.seed)

    def create_reader(path, is_training):
        return cntk.io.MinibatchSource(cntk.io.CTFDeserializer(path, cntk.io.StreamDefs(
            features=cntk.io.StreamDef(field='features', shape=INPUT_DIM),
            labels=cntk.io.StreamDef(field='labels', shape=NUM_CLASSES))),
            randomize=is_training,
            max_sweeps=cntk.io.INFINITELY_REPEAT if is_training else 1)

    input_var = cntk.ops.input(IMAGE_SHAPE, np.float32)
    label_var = cntk.ops.input(NUM_CLASSES, np.float32)
    scaled_input = cntk.ops.element_times(cntk.ops.constant(INPUT_SCALE), input_var)
    with cntk.layers.default_options(activation=cntk.ops.relu, pad=False):
        conv1 = cntk.layers.Convolution2D((5, 5), 32, pad=True)(scaled_input)
        pool1 = cntk.layers.MaxPooling((3, 3), (2, 2))(conv1)
        conv2 = cntk.layers.Convolution2D((3, 3), 48)(pool1)
        pool2 = cntk.layers.MaxPooling((3, 3), (2, 2))(conv2)
        conv3 = cntk.layers.Convolution2D((3, 3), 64)(pool2)
        f4 = cntk.layers.Dense(96)(conv3)
        drop4 = cntk.layers.Dropout(0.5)(f4)
        z = cntk.layers.Dense(NUM_CLASSES, activation=None)(drop4)
    ce = cntk.losses.cross_entropy_with_softmax(z, label_var)
    pe = cntk.metrics.classification_error(z, label_var)

    reader_train = create_reader(os.path.join(data_path, TRAIN_FILE), True)
    epoch_size, minibatch_size, max_epochs = args.epoch_size, args.minibatch_size, args.max_epochs
    lr_schedule = cntk.learning_rate_schedule(LR_PER_SAMPLE, cntk.learners.UnitType.sample,
                                              epoch_size)
    mm_schedule = cntk.learners.momentum_as_time_constant_schedule(MOMENTUM_TIME_CONSTANT,
                                                                   epoch_size)
    learner = cntk.learners.momentum_sgd(z.parameters, lr_schedule, mm_schedule)
    progress_printer = cntk.logging.ProgressPrinter(tag='Training', num_epochs=max_epochs)
    trainer = cntk.Trainer(z, (ce, pe), learner, progress_printer)
    input_map = {input_var: reader_train.streams.features,
                 label_var: reader_train.streams.labels}

    cntk.logging.log_number_of_parameters(z)
    log()
    for epoch in range(max_epochs):
        sample_count = 0
        while sample_count < epoch_size:
            data = reader_train.next_minibatch(min(minibatch_size, epoch_size - sample_count),
                                               input_map=input_map)
            trainer.train_minibatch(data)
            sample_count += data[label_var].num_samples
        trainer.summarize_training_progress()
        sys.stdout.flush()
        z.save(os.path.join(model_path, 'ConvNet_MNIST_{}.dnn'.format(epoch)))

    reader_test = create_reader(os.path.join(data_path, TEST_FILE), False)
    input_map = {input_var: reader_test.streams.features,
                 label_var: reader_test.streams.labels}
    test_size, test_minibatch = 10000, TEST_MINIBATCH_SIZE
    metric_numer = metric_denom = sample_count = minibatch_index = 0
    while sample_count < test_size:
        current_minibatch = min(test_minibatch, test_size - sample_count)
        data = reader_test.next_minibatch(current_minibatch, input_map=input_map)
        metric_numer += trainer.test_minibatch(data) * current_minibatch
        metric_denom += current_minibatch
        sample_count += data[label_var].num_samples
        minibatch_index += 1
    report_final(minibatch_index, metric_numer / metric_denom, metric_denom)
    return metric_numer / metric_denom


def report_final(minibatch_count, error, samples):
    """The recipe's closing lines (its "Minibatch[1-N+1]" off-by-one kept as it printed)."""
    log()
    log('Final Results: Minibatch[1-{}]: errs = {:0.2f}% * {}'.format(
        minibatch_count + 1, error * 100.0, samples))
    log()


# --- PyTorch (the same network where CNTK cannot be installed) --------------------------------

def _keep_freed_memory():
    """Keep freed buffers in the heap instead of returning them to the OS.

    Every training step allocates the same few megabyte-sized activations; glibc otherwise
    hands them back and the next step page-faults them in again, which costs more than the
    convolutions. Linux/glibc only; elsewhere this is a no-op.
    """
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass


def let_idle_threads_sleep():
    """Let idle OpenMP worker threads spin only briefly before they sleep (unless set).

    Must run before torch loads its OpenMP runtime. A thread that spins long holds a core while
    it waits for its partner at the end of every parallel operation; when other processes share
    the cores (the local cloud's node is this machine) the partner then cannot run: with
    libgomp's default spin (300,000) a step took 9 times longer under load. Sleeping at once
    (OMP_WAIT_POLICY=PASSIVE) costs a wake-up per operation and made an idle machine 1.5 times
    slower. A short spin is the best of both in the same-run measurements on 2 cores:
    3,505 samples/s idle (PASSIVE 2,279) and 1,358 under a 2-process load (PASSIVE 1,070).
    Beside a single busy process the longer spin did better (59 against 94-103 ms per step),
    but there one thread beats both (23 ms): see cpu_thread_count.
    """
    if 'OMP_WAIT_POLICY' not in os.environ:
        os.environ.setdefault('GOMP_SPINCOUNT', '30000')


def define_convnet(torch):
    """The recipe's network as a torch.nn.Module class (its state dict is the model file).

    conv5x5x32(pad) -> maxpool3/2 -> conv3x3x48 -> maxpool3/2 -> conv3x3x64 -> dense96 ->
    dropout0.5 -> dense10, ReLU after each conv and dense96; glorot-uniform weights and zero
    biases as CNTK initialises them; inputs are raw 0-255 pixels scaled by 1/256 inside.
    """
    nn = torch.nn
    functional = torch.nn.functional
    aten = torch.ops.aten
    pool_3_2 = ([3, 3], [2, 2], [0, 0], [1, 1], False)  # kernel, stride, padding, dilation, ceil
    conv_3_1 = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)  # stride, padding, dilation, ..., groups

    class ConvNet(nn.Module):
        def __init__(self):
            super(ConvNet, self).__init__()
            self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
            self.conv2 = nn.Conv2d(32, 48, 3)
            self.conv3 = nn.Conv2d(48, 64, 3)
            self.f4 = nn.Linear(576, 96)
            self.z = nn.Linear(96, NUM_CLASSES)
            for module in (self.conv1, self.conv2, self.conv3, self.f4, self.z):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            self.conv1_kernels = None  # a Conv1PoolKernels for the CPU step, when built

        def forward(self, pixels):
            """Logits for raw pixels 0-255, shaped [n, 784], [n, 28, 28] or [n, 1, 28, 28]."""
            x = pixels.reshape(-1, *IMAGE_SHAPE).float() * INPUT_SCALE
            x = functional.max_pool2d(functional.relu(self.conv1(x)), 3, 2)
            x = functional.max_pool2d(functional.relu(self.conv2(x)), 3, 2)
            x = functional.relu(self.conv3(x)).flatten(1)
            x = functional.dropout(functional.relu(self.f4(x)), 0.5, self.training)
            return self.z(x)

        def forward_cpu_fast(self, pixels):
            """forward()'s values, computed as train_step_cpu does (no gradients)."""
            with torch.no_grad():
                return self._cpu_forward(pixels)[0]

        def train_step_cpu(self, pixels, labels):
            """One minibatch on a CPU: returns (logits, mean cross-entropy loss) and leaves the
            loss's gradient in every parameter's .grad (replacing what was there).

            The same maths as autograd on forward(), arranged to run more than twice as fast
            as that on a CPU: _cpu_forward's layout, and a backward pass written out here.
            Past conv1's block, the backward makes the very calls autograd would make for
            _cpu_forward, so those gradients are bit for bit autograd's (and conv1's too with
            the PyTorch operators), without building the graph, saving tensors for it or
            accumulating into .grad (8% of a step). The dropout mask comes from the global
            generator exactly as functional.dropout draws it.
            """
            with torch.no_grad():
                logits, saved = self._cpu_forward(pixels)
                log_probs = aten._log_softmax(logits, 1, False)
                loss, total_weight = aten.nll_loss_forward(log_probs, labels, None, 1, -100)
                self._cpu_backward(saved, labels, log_probs, loss, total_weight)
            return logits, loss

        def _cpu_forward(self, pixels):
            """Logits, and the activations the backward pass needs.

            conv1 with its pooling, bias and ReLU is the compiled Conv1PoolKernels when the
            model has them (conv1_kernels), else _conv1_block's PyTorch operators. After it,
            channels-last activations, where oneDNN's convolutions and pooling are fastest.
            """
            if self.conv1_kernels is not None and pixels.dtype == torch.uint8:
                relu1, conv1_backward = self.conv1_kernels.forward(
                    pixels, self.conv1.weight, self.conv1.bias)
            else:
                relu1, conv1_backward = self._conv1_block(pixels)
            conv2 = functional.conv2d(relu1, self.conv2.weight, self.conv2.bias)
            pool2, pool2_at = aten.max_pool2d_with_indices(conv2, *pool_3_2)
            relu2 = pool2.relu_()
            relu3 = functional.conv2d(relu2, self.conv3.weight, self.conv3.bias).relu_()
            flat3 = relu3.contiguous().flatten(1)
            relu4 = torch.addmm(self.f4.bias, flat3, self.f4.weight.t()).relu_()
            keep4, drop4 = None, relu4
            if self.training:  # functional.dropout's own arithmetic, the mask kept for backward
                keep4 = torch.empty_like(relu4).bernoulli_(0.5).div_(0.5)
                drop4 = relu4 * keep4
            logits = torch.addmm(self.z.bias, drop4, self.z.weight.t())
            return logits, (conv1_backward, relu1, conv2, pool2_at, relu2, relu3, flat3,
                            relu4, keep4, drop4)

        def _cpu_backward(self, saved, labels, log_probs, loss, total_weight):
            """The gradients of the mean cross-entropy, from the top down, into each .grad.

            Each line is the formula autograd's generated backward uses for that forward call
            (a linear layer's weight gradient is grad.t() @ input, as for a transposed weight).
            """
            (conv1_backward, relu1, conv2, pool2_at, relu2, relu3, flat3,
             relu4, keep4, drop4) = saved
            n = relu1.shape[0]
            grad = aten.nll_loss_backward(torch.ones_like(loss), log_probs, labels, None, 1,
                                          -100, total_weight)
            grad = aten._log_softmax_backward_data(grad, log_probs, 1, torch.float32)
            _set_gradient(self.z.weight, grad.t().mm(drop4))
            _set_gradient(self.z.bias, grad.sum([0], keepdim=True))
            grad = grad.mm(self.z.weight)
            if keep4 is not None:
                grad = grad * keep4
            grad = aten.threshold_backward(grad, relu4, 0)
            _set_gradient(self.f4.weight, grad.t().mm(flat3))
            _set_gradient(self.f4.bias, grad.sum([0], keepdim=True))
            grad = grad.mm(self.f4.weight)
            grad = aten.threshold_backward(grad.view(n, 64, 3, 3), relu3, 0)
            grad, weight, bias = aten.convolution_backward(
                grad, relu2, self.conv3.weight, [64], *conv_3_1, [True, True, True])
            _set_gradient(self.conv3.weight, weight)
            _set_gradient(self.conv3.bias, bias)
            grad = aten.threshold_backward(grad, relu2, 0)
            grad = aten.max_pool2d_with_indices_backward(grad, conv2, *pool_3_2, pool2_at)
            grad, weight, bias = aten.convolution_backward(
                grad, relu1, self.conv2.weight, [48], *conv_3_1, [True, True, True])
            _set_gradient(self.conv2.weight, weight)
            _set_gradient(self.conv2.bias, bias)
            weight, bias = conv1_backward(grad)
            _set_gradient(self.conv1.weight, weight)
            _set_gradient(self.conv1.bias, bias)

        def _conv1_block(self, pixels):
            """ReLU(max-pool(conv1(pixels)) + bias) with PyTorch operators, channels-last, and
            a function from the gradient there to conv1's kernel and bias gradients.

            - conv1 (one input channel) as a matrix product over im2col columns. The columns
              are built tap-major ([25, n*27*27]: one contiguous row per kernel tap, a copy
              with long contiguous runs, several times faster than position-major patches)
              and handed to the product transposed, which costs it nothing. The product is
              [n*27*27, 32]: already the channels-last layout the later layers prefer.
            - Only the 27x27 conv1 outputs that the first 3x3/2 max-pool reads: it never
              looks at row or column 27.
            - conv1's bias and the ReLU after the max-pool instead of before: max commutes
              with adding a per-channel constant and with a monotone function (in floating
              point too, rounding being monotone), so the values are unchanged and the
              gradient reaches the same element (but where adding the bias rounds two
              different values to one, a tie the pool would have broken by position) while
              the bias, ReLU and their backward touch a quarter of the data.
            """
            n = pixels.shape[0]
            x = pixels.reshape(n, 28, 28).float().mul_(INPUT_SCALE)
            x = functional.pad(x, (2, 1, 2, 1))  # 31x31: the 5x5 windows of outputs 0..26
            taps = x.unfold(1, 5, 1).unfold(2, 5, 1).permute(3, 4, 0, 1, 2).reshape(25, n * 729)
            conv1 = torch.mm(taps.t(), self.conv1.weight.view(32, 25).t())
            conv1 = conv1.view(n, 27, 27, 32).permute(0, 3, 1, 2)
            pool1, pool1_at = aten.max_pool2d_with_indices(conv1, *pool_3_2)
            relu1 = pool1.add_(self.conv1.bias.view(1, 32, 1, 1)).relu_()
            return relu1, lambda grad: _conv1_block_backward(grad, relu1, taps, conv1, pool1_at)

    def _conv1_block_backward(grad, relu1, taps, conv1, pool1_at):
        """conv1's kernel and bias gradients through _conv1_block, as autograd takes them."""
        grad = aten.threshold_backward(grad, relu1, 0)
        bias = grad.sum([0, 2, 3], keepdim=True)
        grad = aten.max_pool2d_with_indices_backward(grad, conv1, *pool_3_2, pool1_at)
        grad = grad.permute(0, 2, 3, 1).reshape(-1, 32)
        return _taps_times_grad(taps, grad).t(), bias

    def _taps_times_grad(taps, grad):
        """conv1's kernel gradient ``taps @ grad`` ([25, P] @ [P, 32]).

        A product with a long inner dimension (P = n*27*27) and a tiny result, which a single
        mm runs at half this machine's rate; split into two halves along P, a batched product
        runs them on two cores at once, and the halves are then added.
        """
        positions = taps.shape[1]
        if positions % 2:
            return torch.mm(taps, grad)
        half = positions // 2
        halves = torch.bmm(taps.view(25, 2, half).transpose(0, 1), grad.reshape(2, half, 32))
        return halves.sum(0)

    def _set_gradient(parameter, gradient):
        gradient = gradient.view(parameter.shape)
        if parameter.grad is None:
            parameter.grad = gradient.clone()
        else:
            parameter.grad.copy_(gradient)

    return ConvNet


# --- conv1 and its pooling as compiled C (the CPU step's hottest, most memory-bound part) -----

CONV1_POOL_C_SOURCE = r'''
/* conv1 (5x5, 1 -> 32 channels, pad 2) at the 27x27 positions the first max-pool reads, the
   3x3/2 max-pool (first maximum wins ties, NaN wins, as PyTorch's), conv1's bias and the ReLU,
   one image at a time so that its 93 KB of conv1 outputs never leave the core's cache; and the
   backward pass of the same into conv1's kernel and bias gradients. Activations are
   channels-last: [image][13*13 positions][32 channels]. AVX2 + FMA; OpenMP over images. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#define CH 32
#define TAPS 25

int conv1_kernels_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int conv1_kernels_threads(void) { return omp_get_max_threads(); }

/* The image scaled and zero-padded to 31x31 (2 before, 1 after: the 27x27 output windows). */
static void pad_and_scale(const uint8_t *pixels, float scale, float *padded) {
    memset(padded, 0, 31 * 31 * sizeof(float));
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++)
            padded[(y + 2) * 31 + x + 2] = (float)pixels[y * 28 + x] * scale;
}

/* conv1 without bias into conv[729][CH], two positions at a time so that every kernel row
   loaded feeds 8 fused multiply-adds; the taps are summed in order from zero. */
static void conv1_image(const float *padded, const float *kernels /* [TAPS][CH] */,
                        float *conv) {
    for (int p = 0; p < 729; p += 2) {
        int q = p + 1 < 729 ? p + 1 : p;
        const float *x0 = padded + (p / 27) * 31 + p % 27, *x1 = padded + (q / 27) * 31 + q % 27;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int t = 0; t < TAPS; t++) {
            const float *k = kernels + t * CH;
            int at = (t / 5) * 31 + t % 5;
            __m256 k0 = _mm256_loadu_ps(k), k1 = _mm256_loadu_ps(k + 8);
            __m256 k2 = _mm256_loadu_ps(k + 16), k3 = _mm256_loadu_ps(k + 24);
            __m256 u = _mm256_broadcast_ss(x0 + at), v = _mm256_broadcast_ss(x1 + at);
            a0 = _mm256_fmadd_ps(u, k0, a0); a1 = _mm256_fmadd_ps(u, k1, a1);
            a2 = _mm256_fmadd_ps(u, k2, a2); a3 = _mm256_fmadd_ps(u, k3, a3);
            b0 = _mm256_fmadd_ps(v, k0, b0); b1 = _mm256_fmadd_ps(v, k1, b1);
            b2 = _mm256_fmadd_ps(v, k2, b2); b3 = _mm256_fmadd_ps(v, k3, b3);
        }
        float *o = conv + p * CH;
        _mm256_storeu_ps(o, a0); _mm256_storeu_ps(o + 8, a1);
        _mm256_storeu_ps(o + 16, a2); _mm256_storeu_ps(o + 24, a3);
        o = conv + q * CH;  /* the same position again (and values) after the last odd one */
        _mm256_storeu_ps(o, b0); _mm256_storeu_ps(o + 8, b1);
        _mm256_storeu_ps(o + 16, b2); _mm256_storeu_ps(o + 24, b3);
    }
}

void conv1_pool_forward(const uint8_t *pixels /* [n][784] */, const float *kernels,
                        const float *bias, float scale, int n,
                        float *relu /* [n][169][CH] */, uint8_t *argmax /* [n][169][CH] */) {
    #pragma omp parallel for schedule(static)
    for (int image = 0; image < n; image++) {
        float padded[31 * 31], conv[729 * CH];
        int32_t window[CH];
        const __m256 lowest = _mm256_set1_ps(-__builtin_inff()), zero = _mm256_setzero_ps();
        pad_and_scale(pixels + (size_t)image * 784, scale, padded);
        conv1_image(padded, kernels, conv);
        float *out = relu + (size_t)image * 169 * CH;
        uint8_t *arg = argmax + (size_t)image * 169 * CH;
        for (int i = 0; i < 13; i++) {
            for (int j = 0; j < 13; j++) {
                for (int c = 0; c < CH; c += 8) {
                    __m256 best = lowest;
                    __m256 which = _mm256_setzero_ps();
                    for (int w = 0; w < 9; w++) {
                        __m256 v = _mm256_loadu_ps(
                            conv + ((2 * i + w / 3) * 27 + 2 * j + w % 3) * CH + c);
                        __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ),
                                                   _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                        best = _mm256_blendv_ps(best, v, take);
                        which = _mm256_blendv_ps(
                            which, _mm256_castsi256_ps(_mm256_set1_epi32(w)), take);
                    }
                    __m256 biased = _mm256_add_ps(best, _mm256_loadu_ps(bias + c));
                    _mm256_storeu_ps(out + (i * 13 + j) * CH + c, _mm256_max_ps(biased, zero));
                    _mm256_storeu_si256((__m256i *)(window + c), _mm256_castps_si256(which));
                }
                for (int c = 0; c < CH; c++) arg[(i * 13 + j) * CH + c] = (uint8_t)window[c];
            }
        }
    }
}

/* Three taps' kernel gradients at once: 12 accumulators over the 729 positions. */
static void kernel_gradient_taps(const float *padded, const float *grad27, int first,
                                 int count, float *kernel_grad) {
    __m256 acc[3][4];
    int at[3];
    for (int u = 0; u < 3; u++) {
        int t = first + (u < count ? u : 0);
        at[u] = (t / 5) * 31 + t % 5;
        for (int c = 0; c < 4; c++) acc[u][c] = _mm256_setzero_ps();
    }
    for (int y = 0; y < 27; y++) {
        for (int x = 0; x < 27; x++) {
            const float *g = grad27 + (y * 27 + x) * CH;
            __m256 g0 = _mm256_loadu_ps(g), g1 = _mm256_loadu_ps(g + 8);
            __m256 g2 = _mm256_loadu_ps(g + 16), g3 = _mm256_loadu_ps(g + 24);
            const float *window = padded + y * 31 + x;
            for (int u = 0; u < 3; u++) {
                __m256 v = _mm256_broadcast_ss(window + at[u]);
                acc[u][0] = _mm256_fmadd_ps(v, g0, acc[u][0]);
                acc[u][1] = _mm256_fmadd_ps(v, g1, acc[u][1]);
                acc[u][2] = _mm256_fmadd_ps(v, g2, acc[u][2]);
                acc[u][3] = _mm256_fmadd_ps(v, g3, acc[u][3]);
            }
        }
    }
    for (int u = 0; u < count; u++)
        for (int c = 0; c < 4; c++) {
            float *d = kernel_grad + (first + u) * CH + c * 8;
            _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), acc[u][c]));
        }
}

/* grad: the loss's gradient at the ReLU's output. Each thread adds into its own row of
   kernel_grad [threads][TAPS][CH] and bias_grad [threads][CH] (zeroed by the caller), in a
   fixed order, so the result depends only on the thread count. */
void conv1_pool_backward(const uint8_t *pixels, const float *grad, const float *relu,
                         const uint8_t *argmax, float scale, int n,
                         float *kernel_grad, float *bias_grad) {
    #pragma omp parallel
    {
        float *my_kernel_grad = kernel_grad + omp_get_thread_num() * TAPS * CH;
        float *my_bias_grad = bias_grad + omp_get_thread_num() * CH;
        float padded[31 * 31], grad27[729 * CH], masked[CH];
        int offset[9];
        const __m256 zero = _mm256_setzero_ps();
        __m256 bias_sum[4] = {zero, zero, zero, zero};
        for (int w = 0; w < 9; w++) offset[w] = ((w / 3) * 27 + w % 3) * CH;
        #pragma omp for schedule(static)
        for (int image = 0; image < n; image++) {
            const float *g = grad + (size_t)image * 169 * CH, *r = relu + (size_t)image * 169 * CH;
            const uint8_t *arg = argmax + (size_t)image * 169 * CH;
            pad_and_scale(pixels + (size_t)image * 784, scale, padded);
            memset(grad27, 0, sizeof grad27);
            for (int i = 0; i < 13; i++) {
                for (int j = 0; j < 13; j++) {
                    int p = (i * 13 + j) * CH;
                    for (int c = 0; c < 4; c++) {
                        __m256 on = _mm256_cmp_ps(_mm256_loadu_ps(r + p + c * 8), zero, _CMP_GT_OQ);
                        __m256 v = _mm256_and_ps(on, _mm256_loadu_ps(g + p + c * 8));
                        bias_sum[c] = _mm256_add_ps(bias_sum[c], v);
                        _mm256_storeu_ps(masked + c * 8, v);
                    }
                    float *window = grad27 + ((2 * i) * 27 + 2 * j) * CH;
                    for (int c = 0; c < CH; c++) window[offset[arg[p + c]] + c] += masked[c];
                }
            }
            for (int t = 0; t < TAPS; t += 3)
                kernel_gradient_taps(padded, grad27, t, TAPS - t < 3 ? TAPS - t : 3,
                                     my_kernel_grad);
        }
        for (int c = 0; c < 4; c++) _mm256_storeu_ps(my_bias_grad + c * 8, bias_sum[c]);
    }
}
'''

CONV1_POOL_C_FLAGS = ['-O3', '-march=native', '-fopenmp', '-fPIC', '-shared', '-std=gnu99']


class KernelsUnavailable(Exception):
    """The compiled conv1 kernels cannot run here (the message says why)."""


class Conv1PoolKernels(object):
    """conv1, the first max-pool, conv1's bias and the ReLU as compiled C, forward and backward.

    The PyTorch operators for this part write and read back several megabytes a step (the
    tap-major im2col columns, conv1's 27x27 outputs, 64-bit pooling indices, the gradient
    scattered back onto 27x27) and were a quarter of the step; done one image at a time in
    the core's cache it takes under half of that, and the whole step 13% less time. The
    forward values are the same as the operators' (the taps are summed in the same order);
    conv1's kernel and bias gradients are summed in another order, so their last bits differ.

    Built at start-up with the C compiler (``CC``, else ``cc``; well under a second) into a
    private temporary folder that is removed once loaded. It needs Linux on x86-64 with AVX2
    and FMA, and PyTorch on GNU OpenMP: the kernels join PyTorch's own OpenMP threads (the
    same libgomp), so they never compete with them. Anything missing raises
    KernelsUnavailable, and the model then uses the PyTorch operators.
    """

    def __init__(self, torch, library):
        import ctypes
        self._torch = torch
        self._library = library
        pointer, count, scale = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        library.conv1_pool_forward.argtypes = [pointer, pointer, pointer, scale, count,
                                               pointer, pointer]
        library.conv1_pool_backward.argtypes = [pointer, pointer, pointer, pointer, scale,
                                                count, pointer, pointer]

    @classmethod
    def build(cls, torch):
        import ctypes
        import platform
        import shutil
        import tempfile
        if not sys.platform.startswith('linux') or platform.machine() not in ('x86_64', 'AMD64'):
            raise KernelsUnavailable('they need Linux on x86-64')
        if not torch.backends.openmp.is_available():
            raise KernelsUnavailable('this PyTorch does not use OpenMP')
        openmp_before = _loaded_openmp_runtimes()
        folder = None
        try:
            folder = tempfile.mkdtemp(prefix='ConvNet_MNIST-')
            library = ctypes.CDLL(_compile_conv1_kernels(folder))
        except OSError as error:
            raise KernelsUnavailable('cannot build or load them in {} ({})'.format(
                folder or tempfile.gettempdir(), error.strerror or error))
        finally:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        if not library.conv1_kernels_supported():
            raise KernelsUnavailable('this CPU lacks AVX2 or FMA')
        if _loaded_openmp_runtimes() - openmp_before:
            raise KernelsUnavailable('they would bring a second OpenMP runtime beside '
                                     "PyTorch's")
        return cls(torch, library)

    def forward(self, pixels, weight, bias):
        """ReLU(max-pool(conv1(pixels / 256)) + bias) as [n, 32, 13, 13] channels-last, and
        a function from the gradient there to conv1's kernel and bias gradients."""
        torch = self._torch
        n = pixels.shape[0]
        pixels = pixels.reshape(n, INPUT_DIM).contiguous()
        kernels = weight.detach().reshape(32, 25).t().contiguous()
        bias = bias.detach().contiguous()
        relu = torch.empty(n, 13, 13, 32)
        argmax = torch.empty(n, 13, 13, 32, dtype=torch.uint8)
        self._library.conv1_pool_forward(pixels.data_ptr(), kernels.data_ptr(),
                                         bias.data_ptr(), INPUT_SCALE, n, relu.data_ptr(),
                                         argmax.data_ptr())
        return relu.permute(0, 3, 1, 2), lambda grad: self._backward(grad, pixels, relu, argmax)

    def _backward(self, grad, pixels, relu, argmax):
        torch = self._torch
        n = pixels.shape[0]
        grad = grad.permute(0, 2, 3, 1).contiguous()  # a view when already channels-last
        threads = self._library.conv1_kernels_threads()
        kernel_grad = torch.zeros(threads, 25, 32)
        bias_grad = torch.zeros(threads, 32)
        self._library.conv1_pool_backward(pixels.data_ptr(), grad.data_ptr(), relu.data_ptr(),
                                          argmax.data_ptr(), INPUT_SCALE, n,
                                          kernel_grad.data_ptr(), bias_grad.data_ptr())
        return kernel_grad.sum(0).t().reshape(32, 1, 5, 5), bias_grad.sum(0)


def use_conv1_kernels(torch, model):
    """Give ``model`` the compiled conv1 kernels where they build; the line that says which
    conv1 the CPU step runs, and why not the kernels."""
    try:
        model.conv1_kernels = Conv1PoolKernels.build(torch)
        return 'conv1 and its max-pool run as compiled C kernels (AVX2).'
    except KernelsUnavailable as reason:
        return ('conv1 and its max-pool run as PyTorch operators: the compiled kernels are '
                'unavailable ({}).'.format(reason))


def _compile_conv1_kernels(folder):
    """Compile CONV1_POOL_C_SOURCE in ``folder`` with ``$CC`` (else ``cc``); the library's path."""
    import subprocess
    compiler = os.environ.get('CC', 'cc')
    source = os.path.join(folder, 'conv1_pool.c')
    library = os.path.join(folder, 'conv1_pool.so')
    with open(source, 'w') as stream:
        stream.write(CONV1_POOL_C_SOURCE)
    try:
        build = subprocess.Popen([compiler] + CONV1_POOL_C_FLAGS + ['-o', library, source],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 universal_newlines=True)
    except OSError as error:
        raise KernelsUnavailable('no C compiler {!r} ({})'.format(
            compiler, error.strerror or error))
    try:
        _, errors = build.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        build.kill()
        build.communicate()
        raise KernelsUnavailable('{} took over 120 s'.format(compiler))
    if build.returncode != 0:
        lines = errors.strip().splitlines() or ['exit status {}'.format(build.returncode)]
        first_error = next((line for line in lines if 'error' in line), lines[0])
        raise KernelsUnavailable('{} failed: {}'.format(compiler, first_error.strip()[:200]))
    return library


def _loaded_openmp_runtimes():
    """The files of the OpenMP runtimes mapped into this process (Linux)."""
    try:
        with open('/proc/self/maps') as maps:
            paths = set(line.split()[-1] for line in maps if '/' in line)
    except OSError:
        return set()
    return set(os.path.realpath(path) for path in paths
               if os.path.basename(path).startswith(('libgomp', 'libomp', 'libiomp')))


# --- PyTorch training: the update, the data order, the loop ---------------------------------

class CntkMomentumSGD(object):
    """CNTK's momentum_sgd (unit gain) on one flat buffer holding every parameter.

    Per minibatch of n samples: G = mu * G + (1 - mu) * sum_i g_i, then W -= lr * G, with lr
    per sample and mu = exp(-n / time_constant) (0 while the time constant is 0). With a loss
    averaged over the minibatch this is torch.optim.SGD(lr=lr*n, momentum=mu, dampening=mu)
    (training.md 1.5), but exact also for the short last minibatch of an epoch, whose mu and
    lr follow its real size, and when momentum switches on, where CNTK carries G over.
    Parameters and their gradients are views into two flat tensors, so a step is three
    vector operations instead of three per parameter tensor. Convolution kernels with more
    than one input channel are held channels-last there ([out, kh, kw, in] in memory, the same
    shape and values): the layout oneDNN's channels-last convolutions read, so that neither
    the kernels nor their gradients are copied into it twice a step (2% of a step).
    """

    def __init__(self, torch, parameters):
        parameters = list(parameters)
        self.parameters = torch.cat([_in_memory_order(p.detach()).reshape(-1)
                                     for p in parameters])
        self.gradients = torch.zeros_like(self.parameters)
        self.momentum = torch.zeros_like(self.parameters)
        offset = 0
        for parameter in parameters:
            size = parameter.numel()
            parameter.data = _shaped_like(self.parameters[offset:offset + size], parameter)
            parameter.grad = _shaped_like(self.gradients[offset:offset + size], parameter)
            offset += size

    def zero_grad(self):
        self.gradients.zero_()

    def step(self, lr_per_sample, momentum_time_constant, samples):
        mu = math.exp(-samples / momentum_time_constant) if momentum_time_constant else 0.0
        self.momentum.mul_(mu).add_(self.gradients, alpha=(1.0 - mu) * samples)
        self.parameters.add_(self.momentum, alpha=-lr_per_sample)


def _is_multichannel_kernel(tensor):
    return tensor.dim() == 4 and tensor.shape[1] > 1


def _in_memory_order(tensor):
    """The tensor's values in the order CntkMomentumSGD stores them (channels-last kernels)."""
    return tensor.permute(0, 2, 3, 1) if _is_multichannel_kernel(tensor) else tensor


def _shaped_like(flat, tensor):
    """A view of ``flat`` (values in _in_memory_order) with the shape of ``tensor``."""
    if _is_multichannel_kernel(tensor):
        out_channels, in_channels, height, width = tensor.shape
        return flat.view(out_channels, height, width, in_channels).permute(0, 3, 1, 2)
    return flat.view_as(tensor)


class SampleStream(object):
    """Training sample indices as CNTK's randomizing reader delivers them with infinite sweeps.

    Each sweep visits every sample once in a fresh random order from a seeded generator; an
    epoch takes the next epoch_size samples (a fresh order every epoch at the default
    epoch_size = 60000) and a minibatch may span two sweeps.
    """

    def __init__(self, torch, count, generator, device='cpu'):
        self._torch, self._count, self._generator = torch, count, generator
        self._device = device
        self._order, self._next = self._new_sweep(), 0

    def _new_sweep(self):
        order = self._torch.randperm(self._count, generator=self._generator)
        return order.to(self._device)  # one copy per sweep, not one per minibatch

    def take(self, n):
        pieces = []
        while n > 0:
            if self._next == self._count:
                self._order, self._next = self._new_sweep(), 0
            piece = self._order[self._next:self._next + n]
            self._next += len(piece)
            n -= len(piece)
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else self._torch.cat(pieces)


def select_device(torch, requested):
    if requested == 'cuda' or (requested == 'auto' and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError('--device cuda: no CUDA GPU is available to PyTorch here')
        return torch.device('cuda')
    return torch.device('cpu')


def cpu_thread_count(environ):
    """Threads to train with on a CPU: OMP_NUM_THREADS when it is a positive number, else
    every core this process may run on.

    OMP_NUM_THREADS is the usual way to leave cores to other work, and here it matters: the
    threads meet at the end of every operation, so while another program keeps one of two
    cores busy, two threads ran 46-54 ms per step and one thread 21 ms (13-15 ms for two threads
    on an idle machine, 18.5 ms for one).
    """
    requested = environ.get('OMP_NUM_THREADS', '').split(',')[0].strip()
    if requested.isdigit() and int(requested) > 0:
        return int(requested)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
    return cores or os.cpu_count() or 1


def train_with_pytorch(torch, args):
    """The recipe's training run, the same network and schedule, in PyTorch."""
    functional = torch.nn.functional
    device = select_device(torch, args.device)
    if device.type == 'cpu':
        _keep_freed_memory()
        torch.set_num_threads(cpu_thread_count(os.environ))
        threads = torch.get_num_threads()
        log('Selected CPU ({} thread{}) as the process wide default device.'.format(
            threads, '' if threads == 1 else 's'))
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False  # fp32 maths, as CNTK's cuDNN ran it
        torch.backends.cuda.matmul.allow_tf32 = False
        log('Selected GPU[{}] {} as the process wide default device.'.format(
            torch.cuda.current_device(), torch.cuda.get_device_name()))
    log('CNTK is not importable here: training the same network with PyTorch {}.'.format(
        torch.__version__))

    train_x, train_y = read_ctf(os.path.join(args.data_dir, TRAIN_FILE))
    test_x, test_y = read_ctf(os.path.join(args.data_dir, TEST_FILE))
    train_x, train_y = torch.from_numpy(train_x).to(device), torch.from_numpy(train_y).to(device)
    test_x, test_y = torch.from_numpy(test_x).to(device), torch.from_numpy(test_y).to(device)

    seed = DEFAULT_SEED if args.seed is None else args.seed
    torch.manual_seed(seed)
    model = define_convnet(torch)().to(device)
    if device.type == 'cuda':
        model = model.to(memory_format=torch.channels_last)
    else:
        log(use_conv1_kernels(torch, model))
    forward = model.forward_cpu_fast if device.type == 'cpu' else model.forward
    optimizer = CntkMomentumSGD(torch, model.parameters())
    order = torch.Generator()
    order.manual_seed(seed)
    stream = SampleStream(torch, len(train_y), order, device)

    log('Training {} parameters in {} parameter tensors.'.format(
        sum(p.numel() for p in model.parameters()), len(list(model.parameters()))))
    log()
    epoch_size, minibatch_size = args.epoch_size, args.minibatch_size
    shown_lr = shown_momentum = None
    for epoch in range(args.max_epochs):
        lr = schedule_value(LR_PER_SAMPLE, epoch)
        time_constant = schedule_value(MOMENTUM_TIME_CONSTANT, epoch)
        momentum_per_sample = math.exp(-1.0 / time_constant) if time_constant else 0.0
        if lr != shown_lr:
            log('Learning rate per 1 samples: {}'.format(lr))
            shown_lr = lr
        if momentum_per_sample != shown_momentum:
            log('Momentum per 1 samples: {}'.format(momentum_per_sample))
            shown_momentum = momentum_per_sample

        started = time.time()
        model.train()
        loss_sum = torch.zeros((), device=device)
        error_sum = torch.zeros((), dtype=torch.int64, device=device)
        sample_count = 0
        while sample_count < epoch_size:
            n = min(minibatch_size, epoch_size - sample_count)
            indices = stream.take(n)
            labels = train_y[indices]
            if device.type == 'cpu':
                logits, loss = model.train_step_cpu(train_x[indices], labels)
            else:
                optimizer.zero_grad()
                logits = model(train_x[indices])
                loss = functional.cross_entropy(logits, labels)
                loss.backward()
            optimizer.step(lr, time_constant, n)
            with torch.no_grad():
                loss_sum += loss.detach() * n
                error_sum += (logits.argmax(1) != labels).sum()
            sample_count += n
        loss_value, error_value = float(loss_sum), int(error_sum)  # waits for a GPU to finish
        elapsed = time.time() - started
        log('Finished Epoch[{} of {}]: [Training] loss = {:0.6f} * {}, metric = {:0.2f}% * {} '
            '{:0.3f}s ({:5.1f} samples/s);'.format(
                epoch + 1, args.max_epochs, loss_value / sample_count, sample_count,
                100.0 * error_value / sample_count, sample_count, elapsed,
                sample_count / max(elapsed, 1e-9)))
        save_state_dict(torch, model, os.path.join(args.model_dir,
                                                   'ConvNet_MNIST_{}.pt'.format(epoch)))

    model.eval()
    errors = minibatches = 0
    with torch.no_grad():
        for start in range(0, len(test_y), TEST_MINIBATCH_SIZE):
            logits = forward(test_x[start:start + TEST_MINIBATCH_SIZE])
            errors += int((logits.argmax(1) != test_y[start:start + TEST_MINIBATCH_SIZE]).sum())
            minibatches += 1
    report_final(minibatches, errors / len(test_y), len(test_y))
    return errors / len(test_y)


def save_state_dict(torch, model, path):
    """Save a plain CPU state dict atomically, so a listed model file is always complete."""
    state = dict((name, tensor.detach().to('cpu', copy=True).contiguous())
                 for name, tensor in model.state_dict().items())
    temporary = path + '.partial'
    torch.save(state, temporary)
    os.replace(temporary, path)


# --- entry point ------------------------------------------------------------------------------

def _line_buffered_stderr():
    """stderr that flushes every line even when it is a file (Python < 3.9 block-buffers it)."""
    try:
        sys.stderr.flush()
        return io.open(sys.stderr.fileno(), 'w', buffering=1, closefd=False,
                       encoding=sys.stderr.encoding or 'utf-8', errors='backslashreplace')
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return sys.stderr


def main(argv=None):
    sys.stderr = _line_buffered_stderr()
    sys.stdout = sys.stderr  # as the recipe: every line goes to the job's stderr.txt
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        check_paths(args)
        try:
            import cntk
        except ImportError:
            cntk = None
        if cntk is not None:
            try:
                train_with_cntk(cntk, args)
            except (RuntimeError, ValueError) as error:
                raise InputError('CNTK: {}'.format(
                    (str(error).strip().splitlines() or [type(error).__name__])[0]))
            return 0
        let_idle_threads_sleep()
        try:
            import torch
        except ImportError:
            raise InputError('neither CNTK nor PyTorch is importable; install one '
                             '(pip install torch)')
        train_with_pytorch(torch, args)
        return 0
    except InputError as error:
        log('{}: error: {}'.format(PROG, error))
        return 2
    except OSError as error:
        log('{}: error: {}{}'.format(PROG, error.strerror or error,
                                     ': ' + error.filename if error.filename else ''))
        return 1
    except KeyboardInterrupt:
        log('{}: interrupted'.format(PROG))
        return 130


if __name__ == '__main__':
    sys.exit(main())
