"""Benchmark: reading and writing the MNIST CNTK text files.

- read: read_ctf on the 60,000-line training file (goal <= 1.5 s) beside a
  plain line-by-line ``str.split`` reader, both into the same uint8 / int64 arrays;
- write: quickstart.sample writing both text files (goal <= 3 s), once from already-verified
  arrays and once end to end from the gzipped idx files (decompress, SHA-256, header checks,
  write) into an empty folder, beside a straight port of CNTK's ``mnist_utils.savetxt``.

Every figure is measured in the same run and process, with the allocator setting the script
uses; best of --repeats for ours (the plain versions take long enough to run once).

    nice .venv/bin/python tests/bench/bench_ctf_io.py [--repeats 3]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from quickstart import sample  # noqa: E402
from quickstart.convnet_pytorch.cpu_tuning import keep_freed_memory  # noqa: E402
from quickstart.convnet_pytorch.ctf_reader import read_ctf  # noqa: E402

READ_GOAL_S = 1.5
WRITE_GOAL_S = 3.0


def plain_read(path):
    """The obvious reader: split every line, int() every value."""
    features, labels = [], []
    with open(path) as stream:
        for line in stream:
            _, label_field, feature_field = line.split("|")
            labels.append(label_field.split()[1:].index("1"))
            features.append([int(value) for value in feature_field.split()[1:]])
    return np.array(features, dtype=np.uint8), np.array(labels, dtype=np.int64)


def plain_write(path, images, labels):
    """CNTK's mnist_utils.savetxt, as the original installer wrote the files."""
    one_hot = list(map(" ".join, np.eye(10, dtype=np.uint).astype(str)))
    with open(path, "w") as stream:
        for row, label in zip(images.reshape(len(images), -1), labels, strict=False):
            stream.write(
                "|labels {} |features {}\n".format(one_hot[label], " ".join(row.astype(str)))
            )


def best_of(repeats, function):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def load_splits():
    mnist = REPO / "data" / "mnist"
    manifest = sample.read_manifest(mnist / sample.MANIFEST_FILE)
    return [
        (
            text,
            sample.load_idx(mnist, images, manifest, sample.IMAGE_MAGIC, count),
            sample.load_idx(mnist, labels, manifest, sample.LABEL_MAGIC, count),
        )
        for text, images, labels, count in sample._SPLITS
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # The script keeps freed memory in the heap before it reads (see _keep_freed_memory);
    # measure its reader the way it runs. The plain reader and writer get the same setting.
    keep_freed_memory()
    train_path, _ = sample.build_ctf_files()
    size_mb = os.path.getsize(train_path) / 1e6

    ours_read, (features, labels) = best_of(args.repeats, lambda: read_ctf(train_path))
    plain_read_s, (plain_features, plain_labels) = best_of(1, lambda: plain_read(train_path))
    assert np.array_equal(features, plain_features) and np.array_equal(labels, plain_labels)
    print(f"read {Path(train_path).name} ({size_mb:.0f} MB, 60,000 lines):")
    print(
        "  read_ctf  {:6.2f} s   goal <= {} s: {}".format(
            ours_read, READ_GOAL_S, "met" if ours_read <= READ_GOAL_S else "NOT met"
        )
    )
    print(
        f"  plain str.split reader  {plain_read_s:6.2f} s   ({plain_read_s / ours_read:.1f}x slower)"
    )

    splits = load_splits()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)

        def write_both():
            for name, images, digits in splits:
                sample.write_ctf(scratch / name, images, digits)

        ours_write, _ = best_of(args.repeats, write_both)

        def build_from_scratch():
            target = scratch / "fresh"
            shutil.rmtree(str(target), ignore_errors=True)
            shutil.copytree(str(REPO / "data" / "mnist"), str(target / "mnist"))
            start = time.perf_counter()
            sample.build_ctf_files(target)
            return time.perf_counter() - start

        end_to_end = min(build_from_scratch() for _ in range(args.repeats))

        def plain_both():
            for name, images, digits in splits:
                plain_write(scratch / ("plain-" + name), images, digits)

        plain_write_s, _ = best_of(1, plain_both)
        for name, _, _ in splits:
            assert (scratch / name).read_bytes() == (scratch / ("plain-" + name)).read_bytes()
    print("write Train- and Test-28x28_cntk_text.txt (byte-identical to savetxt's):")
    print(
        "  quickstart.sample, from arrays        {:6.2f} s   goal <= {} s: {}".format(
            ours_write, WRITE_GOAL_S, "met" if ours_write <= WRITE_GOAL_S else "NOT met"
        )
    )
    print(f"  quickstart.sample, from idx.gz files  {end_to_end:6.2f} s   (verify + write)")
    print(
        f"  plain mnist_utils.savetxt port        {plain_write_s:6.2f} s   ({plain_write_s / ours_write:.1f}x slower)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
