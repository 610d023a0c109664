"""Fetching a job's files to this machine, and reading the test error from its output.

A partial download never replaces a file (it is written beside and renamed), and the downloads
of an earlier job of the same (pinned) name are kept beside, never mixed in or overwritten.
"""

import re
from pathlib import Path

from quickstart.streaming import STREAMED_FILE

# ConvNet_MNIST.py's last line
FINAL_RESULTS = r"^Final Results: Minibatch\[[^\]]*\]: errs = ([0-9.]+)% \* (\d+)"


def hide_signature(url):
    """A download URL with its SAS signature (a secret) shown as sig=***."""
    return re.sub(r"([?&]sig=)[^&]*", r"\1***", url)


def set_aside(folder):
    """Rename a folder that holds earlier downloads to the first free <name>.earlier[-N]."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    candidates = (
        folder.with_name(f"{folder.name}.earlier{f'-{n}' if n > 1 else ''}") for n in range(1, 1000)
    )
    aside = next(c for c in candidates if not c.exists())
    folder.rename(aside)
    print(f"Kept the earlier downloads of {folder.name} in {aside}")


def download(http, url, path):
    """Download one file; it appears under its name only once complete."""
    partial = path.with_name(path.name + ".partial")
    with http.get(url, stream=True, timeout=60) as response:
        response.raise_for_status()
        with open(partial, "wb") as out:
            for block in response.iter_content(1 << 20):
                out.write(block)
    partial.replace(path)


def report_test_error(job_folder):
    """Print the trained network's error on the test set from the job's stderr.txt, downloaded
    into job_folder/stdouterr. Returns it in percent, or None."""
    log = Path(job_folder) / "stdouterr" / STREAMED_FILE
    return print_test_error(
        log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    )


def print_test_error(output):
    """Print the last "Final Results" line of the job's output as its test error; return the
    percent."""
    results = re.findall(FINAL_RESULTS, output, re.M)
    if not results:
        print(
            f"Final test error: not reported (no 'Final Results' line in the job's {STREAMED_FILE})"
        )
        return None
    percent, samples = results[-1]
    print(f"Final test error: {percent}% on {int(samples):,} test images")
    return float(percent)
