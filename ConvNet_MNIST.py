# ConvNet_MNIST.py: the Azure Batch AI CNTK recipe's MNIST ConvNet, runnable with or without CNTK.
#
# python ConvNet_MNIST.py DATA_DIR MODEL_DIR [--max-epochs N] [--minibatch-size N]
#                         [--epoch-size N] [--seed N] [--device auto|cpu|cuda]
#
# DATA_DIR holds the two CNTK text files; a model file goes to MODEL_DIR after every epoch.
# Everything is printed on stderr, as the recipe does, one flushed line at a time. Where `cntk`
# imports (the job's container, cntk:2.1-gpu-python3.5, hence Python 3.5 syntax) this runs the
# recipe's CNTK code and saves ConvNet_MNIST_{epoch}.dnn; elsewhere the PyTorch port (uploaded
# beside it) trains the same network, schedule and lines, saving ConvNet_MNIST_{epoch}.pt.
"""The Batch AI quickstart's training script: CNTK where it imports, PyTorch elsewhere."""

from __future__ import division, print_function

import argparse
import io
import os
import sys

import numpy as np

TRAIN_FILE = 'Train-28x28_cntk_text.txt'
TEST_FILE = 'Test-28x28_cntk_text.txt'
IMAGE_SHAPE = (1, 28, 28)
INPUT_DIM = 28 * 28
NUM_CLASSES = 10
INPUT_SCALE = 0.00390625  # 1/256, exactly as the recipe (not 1/255)

# The recipe's schedules: each entry lasts one epoch; the last one persists.
LR_PER_SAMPLE = [0.001] * 10 + [0.0005] * 10 + [0.0001]
MOMENTUM_TIME_CONSTANT = [0] * 5 + [1024]
TEST_MINIBATCH_SIZE = 1024

PROG = 'ConvNet_MNIST.py'


class InputError(Exception):
    """Bad arguments or unusable data: reported as one line, exit status 2."""


def log(text=''):
    """Print one line and flush it, so a job's stderr can be streamed while it trains."""
    print(text, flush=True)


# --- arguments --------------------------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (no usage dump, no traceback)."""

    def error(self, message):
        raise InputError('{} (see --help)'.format(message))


def _whole_number(least):
    """An argparse type: a whole number from ``least`` up (below 2**63, as seeds must be)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError('{!r} is not a whole number'.format(text)) from None
        if not least <= value < 2 ** 63:
            raise argparse.ArgumentTypeError('{} must be at least {}{}'.format(
                value, least, ' and below 2**63' if value >= least else ''))
        return value
    return parse


def parse_args(argv):
    parser = _OneLineParser(
        prog=PROG,
        description='Train the CNTK recipe\'s MNIST ConvNet (CNTK where it imports, else '
                    'PyTorch) and report the test error.')
    parser.add_argument('data_dir', metavar='DATA_DIR',
                        help='folder with {} and {}'.format(TRAIN_FILE, TEST_FILE))
    parser.add_argument('model_dir', metavar='MODEL_DIR',
                        help='folder for the per-epoch model files (created if missing)')
    parser.add_argument('--max-epochs', type=_whole_number(1), default=40,
                        metavar='N', help='epochs to train (default %(default)s)')
    parser.add_argument('--minibatch-size', type=_whole_number(1), default=64,
                        metavar='N', help='samples per minibatch (default %(default)s)')
    parser.add_argument('--epoch-size', type=_whole_number(1), default=60000,
                        metavar='N', help='samples per epoch (default %(default)s)')
    parser.add_argument('--seed', type=_whole_number(0), default=None, metavar='N',
                        help='random seed for initialisation, dropout and data order '
                             '(PyTorch default 0; CNTK keeps its own)')
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
            args.model_dir, error.strerror or error)) from None


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
def train_with_pytorch(args):
    """Hand over to the PyTorch port: uploaded beside this script, in quickstart/ in the repo."""
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'quickstart'))
    try:
        import convnet_pytorch
    except ImportError as error:  # no PyTorch here, or the port was not uploaded with the script
        raise InputError('CNTK does not import, nor does the PyTorch port: {}; {}'.format(
            error, 'pip install torch' if error.name == 'torch' else
            'upload quickstart/convnet_pytorch/ beside this script')) from None
    try:
        results = convnet_pytorch.train(
            args, os.path.join(args.data_dir, TRAIN_FILE), os.path.join(args.data_dir, TEST_FILE),
            LR_PER_SAMPLE, MOMENTUM_TIME_CONSTANT, TEST_MINIBATCH_SIZE)
        if results:  # None on MPI ranks other than 0 (the port trains data-parallel under MPI)
            report_final(*results)
    except convnet_pytorch.InputError as error:
        raise InputError(str(error)) from None


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
        except ImportError:  # no CNTK here: the PyTorch port trains the same network
            train_with_pytorch(args)
            return 0
        try:
            train_with_cntk(cntk, args)
        except (RuntimeError, ValueError) as error:
            raise InputError('CNTK: {}'.format(
                (str(error).strip().splitlines() or [type(error).__name__])[0])) from None
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
