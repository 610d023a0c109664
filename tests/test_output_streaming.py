"""Streaming the job's stderr.txt: every byte printed once, in order, whether the storage server
honours `Range` (206), ignores it (200 with the whole file, as some proxies do), has nothing new
(416) or says the download link expired (403)."""

import re

import pytest

from quickstart import steps, streaming
from tests.fakes_azure import azure_settings, http_response, job, output_file

URL = "https://acct.file.core.windows.net/share/job/stdouterr/stderr.txt?sv=x&sig=y"
FRESH_URL = URL.replace("sig=y", "sig=z")


class GrowingFile:
    """A stderr.txt that grows by one chunk per poll, served with or without Range support."""

    def __init__(self, chunks, honour_range=True):
        self.chunks, self.honour_range = list(chunks), honour_range
        self.content = b""
        self.requests = []
        self.urls = [URL]

    def grow(self):
        if self.chunks:
            self.content += self.chunks.pop(0)

    def get(self, url, headers=None, timeout=None, **kwargs):
        self.requests.append((url, dict(headers or {})))
        self.timeouts = getattr(self, "timeouts", []) + [timeout]
        assert len(self.requests) < 100, "the reader keeps asking: the same bytes again and again?"
        start = int(re.fullmatch(r"bytes=(\d+)-", headers["Range"]).group(1))
        if not self.honour_range:
            return http_response(200, self.content)
        if start >= len(self.content):
            return http_response(416)
        return http_response(206, self.content[start:])


class Listing:
    def __init__(self, urls):
        self.urls = list(urls)
        self.calls = 0

    def list_output_files(self, resource_group, workspace, experiment, job_name, options):
        assert job_name in ("myjob", "j"), job_name
        assert options.outputdirectoryid == "stdouterr"
        self.calls += 1
        url = self.urls[min(self.calls, len(self.urls)) - 1]
        return iter([output_file("execution.log", url + "&other"), output_file("stderr.txt", url)])


class Jobs:
    def __init__(self, states, growing, listing):
        self.states, self.growing, self.listing = list(states), growing, listing
        self.list_output_files = listing.list_output_files

    def get(self, resource_group, workspace, experiment, name):
        self.growing.grow()
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return job(name, state, exit_code=0 if state in ("succeeded", "failed") else None)


class Http:
    def __init__(self, get):
        self.get = get


class BatchAI:
    pass


def clients(states, growing, urls=(URL,)):
    batchai = BatchAI()
    batchai.jobs = Jobs(states, growing, Listing(urls))
    return steps.Clients(batchai, None, Http(growing.get))


def follow(states, growing, **kwargs):
    return steps.monitor_job(
        clients(states, growing, **kwargs), azure_settings(), "myjob", sleep=lambda s: None
    )


CHUNKS = [b"", b"line one\n", b"line two\n", b"", b"line th", b"ree\n", b"last line\n"]
STATES = ["queued", "running", "running", "running", "running", "running", "succeeded"]


@pytest.mark.parametrize("honour_range", [True, False], ids=["206", "200-ignoring-range"])
def test_each_line_is_printed_once_in_order(honour_range, capsys):
    growing = GrowingFile(CHUNKS, honour_range=honour_range)
    follow(STATES, growing)
    out = capsys.readouterr().out
    streamed = "".join(line + "\n" for line in out.splitlines() if "Job" not in line)
    assert streamed == "line one\nline two\nline three\nlast line\n"


def test_a_server_ignoring_range_is_still_asked_from_the_offset_reached(capsys):
    growing = GrowingFile(CHUNKS, honour_range=False)
    follow(STATES, growing)
    offsets = [int(h["Range"][6:-1]) for _, h in growing.requests]
    assert offsets[0] == 0
    assert offsets[-1] == len(b"".join(CHUNKS))
    assert offsets == sorted(offsets)


@pytest.mark.parametrize("honour_range", [True, False], ids=["206", "200-ignoring-range"])
def test_a_snapshot_reads_the_whole_file_once(honour_range):
    growing = GrowingFile([b"alpha\nbeta\n"], honour_range=honour_range)
    growing.grow()
    tail = streaming.OutputTail(clients(["running"], growing), azure_settings(), "j", "stderr.txt")
    assert tail.read_all() == "alpha\nbeta\n"
    assert tail.read_all() == ""  # nothing new since


def test_a_snapshot_of_a_job_without_the_file_is_empty():
    growing = GrowingFile([])
    tail = streaming.OutputTail(
        clients(["running"], growing), azure_settings(), "j", "not-there.txt"
    )
    assert tail.read_all() == ""
    assert growing.requests == []


def test_a_queued_job_is_not_read_and_the_output_starts_once_it_runs(capsys):
    growing = GrowingFile([b"", b"started\n", b""])
    follow(["queued", "running", "succeeded"], growing)
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("Job state: queued")
    assert out[1].endswith("Job state: running")
    assert out[2] == "started"
    assert out[3].endswith("Job state: succeeded")
    assert growing.requests[0][1]["Range"] == "bytes=0-"


def test_an_expired_link_is_listed_again_and_reading_goes_on_from_the_same_offset(capsys):
    growing = GrowingFile([b"", b"one\n", b"two\n", b""])
    answers = iter([None, http_response(403)])

    def get(url, headers=None, **kwargs):
        answer = next(answers, None)
        return growing.get(url, headers=headers) if answer is None else answer

    batch = clients(["running", "running", "running", "succeeded"], growing, urls=(URL, FRESH_URL))
    batch.http.get = get
    steps.monitor_job(batch, azure_settings(), "myjob", sleep=lambda s: None)
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "Job" not in line] == ["one", "two"]
    assert batch.batchai.jobs.listing.calls == 2
    assert growing.requests[-1][0] == FRESH_URL


def test_a_server_error_while_streaming_is_raised_not_swallowed():
    growing = GrowingFile([b"x\n"])
    batch = clients(["running", "succeeded"], growing)
    batch.http.get = lambda url, headers=None, **kwargs: http_response(500)
    with pytest.raises(Exception, match="500"):
        steps.monitor_job(batch, azure_settings(), "myjob", sleep=lambda s: None)


def test_the_output_so_far_shows_the_last_lines_under_a_heading(capsys):
    lines = [f"line {n}" for n in range(1, 26)]
    growing = GrowingFile(["\n".join(lines).encode() + b"\n"])
    growing.grow()
    streaming.print_output_so_far(clients(["running"], growing), azure_settings(), "j")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Output so far (last 20 of 25 lines of stderr.txt):"
    assert out[1:] == ["  " + line for line in lines[5:]]


def test_short_output_so_far_is_shown_whole_and_none_says_so(capsys):
    growing = GrowingFile([b"one\ntwo\n"])
    growing.grow()
    streaming.print_output_so_far(clients(["running"], growing), azure_settings(), "j")
    streaming.print_output_so_far(clients(["running"], GrowingFile([])), azure_settings(), "j")
    assert capsys.readouterr().out.splitlines() == [
        "Output so far (stderr.txt):",
        "  one",
        "  two",
        "Output so far: none yet",
    ]


def test_every_read_has_a_timeout_so_a_stalled_server_cannot_hang_the_watch():
    growing = GrowingFile([b"", b"x\n", b""])
    follow(["running", "running", "succeeded"], growing)
    assert growing.timeouts and set(growing.timeouts) == {60}


def test_a_character_split_across_polls_with_an_empty_poll_between_comes_out_whole(capsys):
    growing = GrowingFile([b"", b"caf\xc3", b"", b"\xa9 ok\n", b""])
    follow(["running"] * 4 + ["succeeded"], growing)
    assert "café ok\n" in capsys.readouterr().out


def test_bytes_that_are_not_utf8_are_shown_as_replacement_characters(capsys):
    growing = GrowingFile([b"", b"bad \xff\xfe bytes\n", b"cut \xe2\x82"])
    follow(["running", "running", "succeeded"], growing)
    out = capsys.readouterr().out
    assert "bad \ufffd\ufffd bytes\n" in out
    assert "cut \ufffd\n" in out  # a sequence cut off by the job's end is shown, not dropped


def test_nothing_is_listed_or_read_while_the_job_is_queued(capsys):
    growing = GrowingFile([b"", b"", b"", b"go\n"])
    batch = clients(["queued", "queued", "running", "succeeded"], growing)
    sleeps = []
    steps.monitor_job(batch, azure_settings(poll_interval=3), "myjob", sleep=sleeps.append)
    assert batch.batchai.jobs.listing.calls == 1  # once running
    assert len(growing.requests) == 3  # at the first running poll, then to the end
    assert sleeps == [3, 3, 3]
    assert "go\n" in capsys.readouterr().out


class FlushRecorder:
    """stdout that notes whether each piece written was flushed before the next one."""

    def __init__(self):
        self.pieces, self.pending = [], []

    def write(self, text):
        self.pending.append(text)

    def flush(self):
        if self.pending:
            self.pieces.append("".join(self.pending))
            self.pending = []


def test_streamed_output_and_state_lines_are_flushed_before_each_wait(monkeypatch):
    """Piped into a CI log, lines left in a buffer would arrive only at the end."""
    recorder = FlushRecorder()
    monkeypatch.setattr("sys.stdout", recorder)
    growing = GrowingFile([b"", b"epoch 1 ", b"done\n", b"tail"])
    unflushed_at_waits = []
    steps.monitor_job(
        clients(["running", "running", "running", "succeeded"], growing),
        azure_settings(),
        "myjob",
        sleep=lambda seconds: unflushed_at_waits.append(list(recorder.pending)),
    )
    assert unflushed_at_waits == [[], [], []]
    flushed = "".join(recorder.pieces)
    assert "Job state: running" in flushed and "epoch 1 done\n" in flushed
    assert "tail\n" in flushed  # the unfinished last line is ended and flushed
