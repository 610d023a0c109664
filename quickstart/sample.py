"""The quickstart's sample: MNIST in CNTK text format, and the script that trains on it.

The seed's ``BatchAIQuickStart.zip`` held ``Train-28x28_cntk_text.txt``,
``Test-28x28_cntk_text.txt`` and ``ConvNet_MNIST.py``. That zip is gone with Batch AI, so the
repository ships the four MNIST idx files (``data/mnist/``, gzipped, with the SHA-256 of their
raw content in ``SHA256SUMS.raw``) and this module turns them into the two text files exactly
as CNTK's ``install_mnist.py`` / ``mnist_utils.savetxt`` wrote them: one line per image in the
original order, ``|labels`` then the ten one-hot values, ``|features`` then the 784 pixels as
integers 0-255, single spaces.

The text files are built artefacts (git ignores them). ``build_ctf_files`` verifies the idx
files every time (cheap, and it is what catches a corrupt checkout) but rewrites a text file
only when it is missing or stale: its size or SHA-256 differs from what the idx content
determines, so a truncated or hand-edited file is rebuilt and a good one is left alone.
"""

import argparse
import gzip
import hashlib
import os
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data"
#: The job's training script; the tutorial uploads it next to the two text files.
CONVNET_SCRIPT = REPO_ROOT / "ConvNet_MNIST.py"
#: The PyTorch port the script hands over to; uploaded beside it as convnet_pytorch/.
PYTORCH_PORT = REPO_ROOT / "quickstart" / "convnet_pytorch"

TRAIN_TEXT_FILE = "Train-28x28_cntk_text.txt"
TEST_TEXT_FILE = "Test-28x28_cntk_text.txt"
MNIST_SUBDIR = "mnist"
MANIFEST_FILE = "SHA256SUMS.raw"

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
IMAGE_ROWS = IMAGE_COLS = 28
NUM_CLASSES = 10

# (text file, images idx, labels idx, number of images)
_SPLITS = (
    (TRAIN_TEXT_FILE, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    (TEST_TEXT_FILE, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
)

# SHA-256 of each text file as CNTK's installer writes it from the shipped idx content, keyed by
# the raw SHA-256 of (images, labels). Pinning it makes "fresh" mean byte-identical to CNTK's
# output; tests check the writer against an independent port of mnist_utils.savetxt.
_KNOWN_TEXT_SHA256 = {
    (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ): "1fe3f142b2c57adcc0af07cfa8c3a8e9cd715454cbcf1bf1253f7e91e59b5c99",
    (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ): "8c73d178916570468976394c028443fd6b06ddaa85175c4560a7f9daf00e329e",
}


class SampleDataError(Exception):
    """A sample data file is missing or corrupt; the message is one line naming it."""


def convnet_script_path():
    """Path of ConvNet_MNIST.py at the repository root (what the tutorial uploads)."""
    return CONVNET_SCRIPT


def job_files(data_dir=DEFAULT_DATA_DIR):
    """Every file the job's node needs, as {name in the sample directory: local path}: the two
    text files (built if missing or stale), ConvNet_MNIST.py, and the PyTorch port it hands
    over to where CNTK does not import (its modules and its C kernels, nothing else)."""
    train, test = (Path(path) for path in build_ctf_files(data_dir))
    script = Path(convnet_script_path())  # uploaded under the name the job runs
    files = {train.name: train, test.name: test, CONVNET_SCRIPT.name: script}
    for path in sorted(PYTORCH_PORT.iterdir()):
        if path.suffix in (".py", ".c"):
            files[f"{PYTORCH_PORT.name}/{path.name}"] = path
    return files


def build_ctf_files(data_dir=DEFAULT_DATA_DIR):
    """Verify ``data_dir/mnist`` and write the two CNTK text files into ``data_dir``.

    Returns ``(train_txt_path, test_txt_path)`` as strings. A text file is written only when
    it is missing or stale; writes go through a temporary file and a rename, so a crash never
    leaves a half-written file under the real name. Raises :class:`SampleDataError` when an
    idx file or the manifest is missing or corrupt.
    """
    data_dir = Path(data_dir)
    mnist_dir = data_dir / MNIST_SUBDIR
    manifest = read_manifest(mnist_dir / MANIFEST_FILE)
    # Verify all four files before writing anything, so bad data never leaves one new file.
    splits = [
        (
            data_dir / text_name,
            load_idx(mnist_dir, images_name, manifest, IMAGE_MAGIC, count),
            load_idx(mnist_dir, labels_name, manifest, LABEL_MAGIC, count),
            (manifest[images_name], manifest[labels_name]),
        )
        for text_name, images_name, labels_name, count in _SPLITS
    ]
    for text_path, images, labels, key in splits:
        if not _is_fresh(text_path, images, labels, _KNOWN_TEXT_SHA256.get(key)):
            write_ctf(text_path, images, labels)
    return tuple(str(text_path) for text_path, _, _, _ in splits)


def read_manifest(path):
    """``{raw idx file name: sha256 hex}`` from a ``sha256sum``-style manifest."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise SampleDataError(f"{path}: missing; restore data/mnist from the repository") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SampleDataError(f"{path}: unreadable ({_reason(error)})") from None
    manifest = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64 or not _is_hex(parts[0]):
            raise SampleDataError(f"{path}: line {number} is not '<sha256> <file name>'")
        manifest[parts[1].lstrip("*")] = parts[0].lower()
    needed = [name for _, images, labels, _ in _SPLITS for name in (images, labels)]
    absent = [name for name in needed if name not in manifest]
    if absent:
        raise SampleDataError(f"{path}: no checksum for {', '.join(absent)}")
    return manifest


def load_idx(mnist_dir, raw_name, manifest, magic, count):
    """Decompress ``<raw_name>.gz``, check it against the manifest and its header, return data.

    Images come back as ``uint8 [count, 28, 28]``, labels as ``uint8 [count]``.
    """
    path = Path(mnist_dir) / (raw_name + ".gz")
    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise SampleDataError(f"{path}: missing; restore data/mnist from the repository") from None
    except (OSError, EOFError, zlib.error) as error:
        raise SampleDataError(f"{path}: not a readable gzip file ({_reason(error)})") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != manifest[raw_name]:
        raise SampleDataError(
            f"{path}: corrupt: SHA-256 of its content is {digest}, "
            f"{MANIFEST_FILE} says {manifest[raw_name]}"
        )
    dims = 3 if magic == IMAGE_MAGIC else 1
    header = np.frombuffer(raw[: 4 + 4 * dims], dtype=">u4") if len(raw) >= 4 + 4 * dims else ()
    shape = (count, IMAGE_ROWS, IMAGE_COLS) if dims == 3 else (count,)
    if len(header) != 1 + dims or header[0] != magic or tuple(header[1:]) != shape:
        raise SampleDataError(
            f"{path}: not an MNIST idx file of shape {shape} (header {[int(v) for v in header]})"
        )
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise SampleDataError(
            f"{path}: holds {body.size} bytes of data, expected {int(np.prod(shape))}"
        )
    if dims == 1 and body.max() >= NUM_CLASSES:
        raise SampleDataError(f"{path}: label {int(body.max())} is not a digit")
    return body.reshape(shape)


# --- the writer -----------------------------------------------------------------------------
#
# A line is a 38-byte prefix ("|labels " + one-hot + " |features ") followed by 784 pixel
# tokens "<value> " of 2-4 bytes, the last space replaced by "\n". Each token is laid out in a
# fixed 4-byte slot, and a boolean mask of the slots' used bytes squeezes them together: a few
# vectorised passes instead of 47 million str() calls.

_PREFIX_LEN = 38
_PIXEL_TOKENS = np.zeros((256, 4), dtype=np.uint8)
_PIXEL_TOKEN_MASK = np.zeros((256, 4), dtype=bool)
for _value in range(256):
    _token = b"%d " % _value
    _PIXEL_TOKENS[_value, : len(_token)] = np.frombuffer(_token, dtype=np.uint8)
    _PIXEL_TOKEN_MASK[_value, : len(_token)] = True
_PIXEL_TOKEN_LENGTHS = _PIXEL_TOKEN_MASK.sum(axis=1)
# The same tables as one 4-byte word per value: a 1-D gather of words is far faster than a
# 2-D gather of byte rows.
_PIXEL_TOKEN_WORDS = _PIXEL_TOKENS.view(np.uint32).ravel()
_PIXEL_TOKEN_MASK_WORDS = _PIXEL_TOKEN_MASK.view(np.uint32).ravel()
_LABEL_PREFIXES = np.array(
    [
        np.frombuffer(
            (
                "|labels "
                + " ".join("1" if k == digit else "0" for k in range(NUM_CLASSES))
                + " |features "
            ).encode("ascii"),
            dtype=np.uint8,
        )
        for digit in range(NUM_CLASSES)
    ]
)
assert _LABEL_PREFIXES.shape == (NUM_CLASSES, _PREFIX_LEN)
_CHUNK_LINES = 4000  # keeps the per-chunk scratch arrays (about 13 MB each) in cache range


def encode_ctf_lines(images, labels):
    """The CNTK text lines for ``images`` (uint8 [n, 28, 28]) and ``labels``, as bytes."""
    pixels = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    n, width = pixels.shape
    slots = np.empty((n, _PREFIX_LEN + 4 * width), dtype=np.uint8)
    slots[:, :_PREFIX_LEN] = _LABEL_PREFIXES[labels]
    slots[:, _PREFIX_LEN:] = _PIXEL_TOKEN_WORDS[pixels].view(np.uint8).reshape(n, 4 * width)
    used = np.empty(slots.shape, dtype=bool)
    used[:, :_PREFIX_LEN] = True
    used[:, _PREFIX_LEN:] = _PIXEL_TOKEN_MASK_WORDS[pixels].view(bool).reshape(n, 4 * width)
    body = slots[used]
    line_ends = np.cumsum(used.sum(axis=1)) - 1
    body[line_ends] = ord("\n")
    return body.tobytes()


def expected_ctf_size(images, labels):
    """Byte size of the text file for these images (a cheap first staleness check)."""
    histogram = np.bincount(np.asarray(images, dtype=np.uint8).ravel(), minlength=256)
    return int(len(labels) * _PREFIX_LEN + histogram @ _PIXEL_TOKEN_LENGTHS)


def write_ctf(path, images, labels):
    """Write the text file atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix="." + path.name + ".", dir=str(path.parent))
    try:
        with os.fdopen(handle, "wb") as out:
            for start in range(0, len(labels), _CHUNK_LINES):
                stop = start + _CHUNK_LINES
                out.write(encode_ctf_lines(images[start:stop], labels[start:stop]))
        os.chmod(temporary, 0o644)
        os.replace(temporary, str(path))
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _is_fresh(path, images, labels, known_sha256):
    """True when ``path`` already holds exactly the text these images and labels make."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if size != expected_ctf_size(images, labels):
        return False
    if known_sha256 is None:
        known_sha256 = hashlib.sha256(_encode_all(images, labels)).hexdigest()
    return _file_sha256(path) == known_sha256


def _encode_all(images, labels):
    return b"".join(
        encode_ctf_lines(images[start : start + _CHUNK_LINES], labels[start : start + _CHUNK_LINES])
        for start in range(0, len(labels), _CHUNK_LINES)
    )


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(str(path), "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_hex(text):
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def _reason(error):
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def main(argv=None):
    """``python -m quickstart.sample [DATA_DIR]``: build the text files, print their paths."""
    parser = argparse.ArgumentParser(
        prog="python -m quickstart.sample",
        description="Verify data/mnist and write the CNTK text files the sample job reads.",
    )
    parser.add_argument(
        "data_dir",
        nargs="?",
        default=str(DEFAULT_DATA_DIR),
        help="folder holding mnist/ (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        for path in build_ctf_files(args.data_dir):
            print(path)
    except SampleDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
