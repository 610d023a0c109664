"""A job's output while it runs, as `az batchai job file stream` showed it: list the
stdouterr directory once for the file's download URL, then read new bytes with
`Range: bytes=N-`, printing whole characters as they arrive."""

import codecs

from quickstart.jobs import list_files

STREAMED_FILE = "stderr.txt"  # ConvNet_MNIST.py sends all its output to stderr
OUTPUT_SO_FAR_LINES = 20  # what `status` shows of a running job's output


class OutputTail:
    """Streams one file of the job's stdouterr directory."""

    def __init__(self, clients, settings, job_name, file_name=STREAMED_FILE):
        self.clients, self.settings, self.job_name = clients, settings, job_name
        self.file_name = file_name
        self.url = None
        self.offset = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.mid_line = False

    def pump(self, until_end=False):
        """Print what the file gained since the last call; with until_end, read to its end."""
        while True:
            if self.url is None:
                self.url = self.find_url()
                if self.url is None:
                    return
            chunk = self.read_new()
            self.write(self.decoder.decode(chunk, final=until_end and not chunk))
            if not chunk or not until_end:
                return

    def write(self, text):
        if text:
            print(text, end="", flush=True)
            self.mid_line = not text.endswith("\n")

    def end_line(self):
        """Finish a partly printed output line, so our own lines start on their own."""
        if self.mid_line:
            print(flush=True)
            self.mid_line = False

    def read_all(self):
        """The whole file as it is now, as text (for a snapshot rather than a stream)."""
        self.url = self.url or self.find_url()
        chunks = []
        while self.url is not None:
            chunk = self.read_new()
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")

    def find_url(self):
        files = list_files(self.clients.batchai, self.settings, self.job_name, "stdouterr")
        return next(
            (f.download_url for f in files if f.name == self.file_name and f.download_url), None
        )

    def read_new(self):
        response = self.clients.http.get(
            self.url, headers={"Range": f"bytes={self.offset}-"}, timeout=60
        )
        if response.status_code == 416:
            return b""
        if response.status_code == 403:  # the download link expired: list again for a fresh one
            self.url = None
            return b""
        response.raise_for_status()
        content = response.content
        if response.status_code == 200:  # the server ignored the range and sent the whole file
            content = content[self.offset :]
        self.offset += len(content)
        return content


def print_output_so_far(clients, settings, job_name, last_lines=OUTPUT_SO_FAR_LINES):
    """The last lines an unfinished job has written to its stderr.txt, indented under a heading."""
    lines = OutputTail(clients, settings, job_name).read_all().splitlines()
    if not lines:
        print("Output so far: none yet")
        return
    shown = lines[-last_lines:]
    part = f"last {len(shown)} of {len(lines)} lines of " if len(shown) < len(lines) else ""
    print(f"Output so far ({part}{STREAMED_FILE}):")
    for line in shown:
        print("  " + line)
