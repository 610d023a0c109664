"""The CNTK text format reader: what CNTK's CTFDeserializer gave the recipe, as numpy arrays.

The files hold one sample per line: "|labels <10 ints> |features <784 ints>\n". Parsing 60,000
lines with str.split takes many seconds, so the reader works on the whole file as one byte
array: digit runs are found with a single diff, their values assembled from at most three
digits, and the line structure (field names, value counts, one-hot labels, 0-255 pixels) is
checked with vectorised comparisons, so garbled input is reported, never misread.
"""

import os

import numpy as np

INPUT_DIM = 28 * 28
NUM_CLASSES = 10


class InputError(Exception):
    """Unusable data or settings: ConvNet_MNIST.py reports it as one line, exit status 2."""


_DIGIT_ZERO = ord("0")
_BLANKS = (ord(" "), ord("\t"), ord("\r"))
_CHUNK_LINES = 4096  # about 7.5 MB of text: the scratch arrays stay small and get reused


def read_ctf(path, num_features=INPUT_DIM, num_labels=NUM_CLASSES):
    """Read a CNTK text file into ``(features uint8 [n, num_features], labels int64 [n])``."""
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            buffer = bytearray(size + 1)  # room for a missing final newline
            stream.readinto(memoryview(buffer)[:size])
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    if size == 0:
        raise InputError(f"{path}: empty file, expected CNTK text format lines")
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
        lines_here = slice(first, last)
        _parse_lines(
            path,
            text,
            line_starts[lines_here],
            newlines[lines_here],
            first,
            num_features,
            num_labels,
            features[lines_here],
            labels[lines_here],
        )
    return features, labels


def _parse_lines(
    path,
    text,
    line_starts,
    newlines,
    first_line,
    num_features,
    num_labels,
    features_out,
    labels_out,
):
    """Parse the lines [line_starts[i], newlines[i]] of ``text`` into the two output arrays."""
    begin, end = int(line_starts[0]), int(newlines[-1]) + 1
    chunk = text[begin:end]
    line_starts = line_starts - begin
    newlines = newlines - begin
    lines = len(newlines)

    def fail(position, what):
        line = first_line + int(np.searchsorted(newlines, position)) + 1
        expected = f'"|labels <{num_labels} values> |features <{num_features} values>"'
        raise InputError(f"{path}: line {line}: {what}; expected {expected}")

    # Each line is "|labels ... |features ...": two bars, the first at the line's start.
    bars = np.flatnonzero(chunk == 124)
    if len(bars) != 2 * lines:
        counts = np.diff(np.searchsorted(bars, np.concatenate(([-1], newlines))))
        bad = int(np.flatnonzero(counts != 2)[0])
        fail(newlines[bad], f"{int(counts[bad])} fields instead of 2")
    label_bars, feature_bars = bars[0::2], bars[1::2]
    misplaced = (label_bars != line_starts) | (feature_bars > newlines)
    if misplaced.any():
        bad = int(np.flatnonzero(misplaced)[0])
        fail(newlines[bad], 'it does not start with "|labels"')
    for bar_positions, name in ((label_bars, b"labels"), (feature_bars, b"features")):
        expected = np.frombuffer(name + b" ", dtype=np.uint8)
        window = chunk[
            np.minimum(bar_positions[:, None] + np.arange(1, len(name) + 2), len(chunk) - 1)
        ]
        wrong = (window != expected).any(axis=1)
        if wrong.any():
            bad = int(np.flatnonzero(wrong)[0])
            found = bytes(window[bad, :-1]).decode("ascii", "replace")
            fail(bar_positions[bad], f'field "|{found}" is not "|{name.decode()}"')

    # Nothing but digits and blanks besides the two field names.
    is_digit = (chunk - _DIGIT_ZERO) < 10  # wraps below '0', so this is '0' <= byte <= '9'
    plain = np.count_nonzero(is_digit) + 3 * lines  # digits, two bars and a newline a line
    plain += sum(np.count_nonzero(chunk == blank) for blank in _BLANKS)
    if len(chunk) - plain != lines * (len("labels") + len("features")):
        ordinary = np.zeros(256, dtype=bool)
        ordinary[[10, 124] + list(_BLANKS) + list(range(_DIGIT_ZERO, _DIGIT_ZERO + 10))] = True
        stray = np.flatnonzero(~ordinary[chunk])
        names = np.concatenate(
            [label_bars[:, None] + np.arange(1, 7), feature_bars[:, None] + np.arange(1, 9)], axis=1
        ).ravel()
        stray = np.setdiff1d(stray, names)
        fail(stray[0], f"unexpected character {chr(chunk[stray[0]])!r}")

    # Values: a run of digits starts where a digit follows a non-digit (every line starts
    # with '|'). Most MNIST values are one digit, so the first digit of every run is gathered
    # and only the runs whose next byte is a digit get the second (and third) look.
    starts = np.flatnonzero(is_digit[1:] > is_digit[:-1]) + 1
    values = (chunk[starts] - _DIGIT_ZERO).astype(np.uint16)
    after = text[begin + 1 :]  # after[i] is the byte after chunk[i]; a newline ends the text
    second = after[starts] - _DIGIT_ZERO
    longer = np.flatnonzero(second < 10)
    if longer.size:
        longer_starts = starts[longer]
        tails = values[longer] * 10 + second[longer]
        third = text[begin + 2 :][longer_starts] - _DIGIT_ZERO
        three = third < 10
        tails[three] = tails[three] * 10 + third[three]
        fourth = text[begin + 3 :][longer_starts[three]] - _DIGIT_ZERO
        if (fourth < 10).any():
            fail(
                longer_starts[three][int(np.argmax(fourth < 10))], "a value has more than 3 digits"
            )
        values[longer] = tails

    # Exactly num_labels values after |labels and num_features after |features on each line.
    at_features = np.searchsorted(starts, feature_bars)
    at_newline = np.searchsorted(starts, newlines)
    at_labels = np.concatenate(([0], at_newline[:-1]))
    for counts, wanted, what in (
        (at_features - at_labels, num_labels, "label values"),
        (at_newline - at_features, num_features, "feature values"),
    ):
        wrong = counts != wanted
        if wrong.any():
            bad = int(np.flatnonzero(wrong)[0])
            fail(newlines[bad], f"{int(counts[bad])} {what}")

    table = values.reshape(lines, num_labels + num_features)
    one_hot = table[:, :num_labels]
    not_one_hot = (one_hot > 1).any(axis=1) | (one_hot.sum(axis=1) != 1)
    if not_one_hot.any():
        fail(newlines[int(np.flatnonzero(not_one_hot)[0])], "labels are not one-hot")
    pixels = table[:, num_labels:]
    too_bright = pixels > 255
    if too_bright.any():
        fail(newlines[int(np.flatnonzero(too_bright.any(axis=1))[0])], "a pixel value is above 255")
    features_out[...] = pixels
    labels_out[...] = np.argmax(one_hot, axis=1)
