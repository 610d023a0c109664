"""quickstart.sample: the MNIST idx files become CNTK's text files, verified, once.

The text must be what CNTK's own installer (``mnist_utils.savetxt``) wrote, byte for byte, so
the expected lines here come from a straight port of that function, not from our writer.
"""

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quickstart import sample
from quickstart.sample import SampleDataError, build_ctf_files

REPO = Path(__file__).resolve().parents[1]
TRAIN_LINES, TEST_LINES = 60000, 10000


def savetxt_lines(images, labels):
    """CNTK's Examples/Image/DataSets/MNIST/mnist_utils.savetxt, line by line."""
    one_hot = list(map(" ".join, np.eye(10, dtype=np.uint).astype(str)))
    return [
        "|labels {} |features {}\n".format(one_hot[label], " ".join(row.astype(str)))
        for row, label in zip(images.reshape(len(images), -1), labels, strict=False)
    ]


def raw_idx(name):
    return gzip.decompress((REPO / "data" / "mnist" / (name + ".gz")).read_bytes())


@pytest.fixture(scope="module")
def built():
    return build_ctf_files()


@pytest.fixture
def data_copy(tmp_path):
    """A private data folder holding a copy of data/mnist (so tests may damage it)."""
    shutil.copytree(str(REPO / "data" / "mnist"), str(tmp_path / "mnist"))
    return tmp_path


def test_build_returns_the_two_text_files_in_data(built):
    train, test = built
    assert Path(train) == REPO / "data" / "Train-28x28_cntk_text.txt"
    assert Path(test) == REPO / "data" / "Test-28x28_cntk_text.txt"


@pytest.mark.parametrize(
    "index,images,labels,count",
    [
        (0, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", TRAIN_LINES),
        (1, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", TEST_LINES),
    ],
)
def test_text_is_cntk_installers_output_line_for_line(built, index, images, labels, count):
    pixels = np.frombuffer(raw_idx(images), np.uint8, offset=16).reshape(count, 28, 28)
    digits = np.frombuffer(raw_idx(labels), np.uint8, offset=8)
    with open(built[index], "rb") as stream:
        lines = stream.read().decode("ascii").splitlines(keepends=True)
    assert len(lines) == count
    picked = list(range(0, count, 97)) + [count - 1]  # spread over the whole file, in order
    assert [lines[i] for i in picked] == savetxt_lines(pixels[picked], digits[picked])


def test_first_training_line_is_a_five(built):
    with open(built[0]) as stream:
        first = stream.readline()
    assert first.startswith("|labels 0 0 0 0 0 1 0 0 0 0 |features 0 0 0 ")
    assert len(first.split()) == 2 + 10 + 784


def test_the_script_reads_back_exactly_the_idx_content(built):
    from quickstart.convnet_pytorch.ctf_reader import read_ctf

    features, labels = read_ctf(built[1])
    pixels = np.frombuffer(raw_idx("t10k-images-idx3-ubyte"), np.uint8, offset=16)
    assert np.array_equal(features.ravel(), pixels)
    assert np.array_equal(
        labels, np.frombuffer(raw_idx("t10k-labels-idx1-ubyte"), np.uint8, offset=8)
    )


def test_fresh_files_are_left_alone(built):
    before = [os.stat(path) for path in built]
    assert build_ctf_files() == built
    after = [os.stat(path) for path in built]
    assert [(s.st_ino, s.st_mtime_ns) for s in before] == [(s.st_ino, s.st_mtime_ns) for s in after]


def test_git_ignores_the_built_files(built):
    for path in built:
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=str(REPO))
        assert result.returncode == 0, path


def test_missing_files_are_written_and_stale_ones_rebuilt(data_copy):
    train, test = build_ctf_files(data_copy)
    expected = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in (train, test)}
    assert (
        expected[train]
        == sample._KNOWN_TEXT_SHA256[
            (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            )
        ]
    )

    with open(train, "r+b") as stream:  # same size, one value changed: stale by content
        stream.seek(50)
        stream.write(b"9")
    with open(test, "ab") as stream:  # appended garbage: stale by size
        stream.write(b"|labels 1\n")
    untouched_inode = os.stat(train).st_ino
    assert build_ctf_files(data_copy) == (train, test)
    assert {
        path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in (train, test)
    } == expected
    assert os.stat(train).st_ino != untouched_inode  # replaced by rename, not patched in place
    assert not [p for p in os.listdir(str(data_copy)) if p.startswith(".")]  # no temp files left


def test_unknown_but_valid_data_gets_a_staleness_check_too(data_copy, monkeypatch):
    monkeypatch.setattr(sample, "_KNOWN_TEXT_SHA256", {})
    train, _ = build_ctf_files(data_copy)
    stamp = os.stat(train).st_mtime_ns
    build_ctf_files(data_copy)
    assert os.stat(train).st_mtime_ns == stamp
    with open(train, "r+b") as stream:
        stream.seek(50)
        stream.write(b"9")
    build_ctf_files(data_copy)
    assert Path(train).read_bytes()[50:51] != b"9"


def _one_line_error(data_dir, *fragments):
    with pytest.raises(SampleDataError) as caught:
        build_ctf_files(data_dir)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert not list(Path(data_dir).glob("*_cntk_text.txt"))  # nothing half-written
    return message


def test_missing_idx_file_is_named(data_copy):
    (data_copy / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    _one_line_error(data_copy, "t10k-labels-idx1-ubyte.gz", "missing")


def test_file_that_is_not_gzip_is_named(data_copy):
    (data_copy / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"<html>not found</html>")
    _one_line_error(data_copy, "train-labels-idx1-ubyte.gz", "not a readable gzip file")


def test_truncated_gzip_is_named(data_copy):
    path = data_copy / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100000])
    _one_line_error(data_copy, "train-images-idx3-ubyte.gz", "not a readable gzip file")


def test_content_that_does_not_match_the_manifest_is_named(data_copy):
    raw = bytearray(raw_idx("t10k-images-idx3-ubyte"))
    raw[5000] ^= 0xFF  # one pixel of one test image
    (data_copy / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    _one_line_error(data_copy, "t10k-images-idx3-ubyte.gz", "corrupt", "SHA-256", "SHA256SUMS.raw")


def test_bad_header_is_named_even_when_the_manifest_agrees(data_copy):
    raw = bytearray(raw_idx("t10k-labels-idx1-ubyte"))
    raw[3] = 0x03  # the image magic number on a labels file
    (data_copy / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    manifest = data_copy / "mnist" / "SHA256SUMS.raw"
    manifest.write_text(
        manifest.read_text().replace(
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            hashlib.sha256(bytes(raw)).hexdigest(),
        )
    )
    _one_line_error(data_copy, "t10k-labels-idx1-ubyte.gz", "not an MNIST idx file")


def test_missing_or_incomplete_manifest_is_named(data_copy):
    manifest = data_copy / "mnist" / "SHA256SUMS.raw"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(line for line in lines if "t10k-images" not in line) + "\n")
    _one_line_error(data_copy, "SHA256SUMS.raw", "no checksum for t10k-images-idx3-ubyte")
    manifest.unlink()
    _one_line_error(data_copy, "SHA256SUMS.raw", "missing")


def test_command_line_prints_paths_or_one_error_line(data_copy, tmp_path_factory):
    ok = subprocess.run(
        [sys.executable, "-m", "quickstart.sample", str(data_copy)],
        cwd=str(REPO),
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == [
        str(data_copy / "Train-28x28_cntk_text.txt"),
        str(data_copy / "Test-28x28_cntk_text.txt"),
    ]
    empty = tmp_path_factory.mktemp("empty")
    bad = subprocess.run(
        [sys.executable, "-m", "quickstart.sample", str(empty)],
        cwd=str(REPO),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "SHA256SUMS.raw: missing" in bad.stderr


def test_script_path_points_at_the_repo_root_script():
    assert sample.convnet_script_path() == sample.CONVNET_SCRIPT == REPO / "ConvNet_MNIST.py"
    assert sample.CONVNET_SCRIPT.is_file()
