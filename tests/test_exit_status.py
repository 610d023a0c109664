"""The process exit status for every job state and exit code: CI trusts it, so a failed job
must never come out as 0, and a code the shell cannot carry (0, negative, over 255) becomes 1."""

from datetime import UTC, datetime

import pytest
from azure.mgmt.batchai import models

from quickstart import jobs
from tests.fakes_azure import azure_settings, job

EXIT_CODES = [None, 0, 1, 2, 3, 127, 255, 256, -1, -9]


@pytest.mark.parametrize("code", EXIT_CODES)
def test_a_succeeded_job_exits_0_whatever_its_exit_code(code):
    assert jobs.job_exit_status(job("j", "succeeded", exit_code=code)) == 0


@pytest.mark.parametrize(
    "code, expected",
    [(None, 1), (0, 1), (1, 1), (2, 2), (3, 3), (127, 127), (255, 255), (256, 1), (-1, 1), (-9, 1)],
)
def test_a_failed_job_exits_with_its_code_when_the_shell_can_carry_it_else_1(code, expected):
    assert jobs.job_exit_status(job("j", "failed", exit_code=code)) == expected


@pytest.mark.parametrize("state", ["failed", "running", "terminating", "queued"])
def test_a_job_that_did_not_succeed_is_never_0(state):
    for code in EXIT_CODES:
        assert jobs.job_exit_status(job("j", state, exit_code=code)) != 0, (state, code)


def test_a_failed_job_without_execution_info_exits_1():
    failed = job("j", "failed")
    failed.execution_info = None
    assert jobs.job_exit_status(failed) == 1


def test_a_failed_exit_code_that_is_not_a_number_exits_1():
    assert jobs.job_exit_status(job("j", "failed", exit_code="3")) == 1


def test_states_as_sdk_enums_count_like_the_plain_words():
    assert jobs.job_exit_status(job("j", models.ExecutionState.succeeded, exit_code=5)) == 0
    assert jobs.job_exit_status(job("j", models.ExecutionState.failed, exit_code=0)) == 1
    assert jobs.job_exit_status(job("j", models.ExecutionState.failed, exit_code=4)) == 4


@pytest.mark.parametrize(
    "state, code, expected",
    [
        ("succeeded", 0, "Job j succeeded with exit code 0"),
        ("failed", 0, "Job j failed with exit code 0"),
        ("failed", 137, "Job j failed with exit code 137"),
        ("failed", None, "Job j failed with exit code None"),
    ],
)
def test_the_result_line_names_the_state_and_the_real_exit_code(state, code, expected, capsys):
    jobs.print_job_result(job("j", state, exit_code=code))
    assert capsys.readouterr().out == expected + "\n"


def test_the_result_line_has_the_run_time_only_when_both_times_are_known(capsys):
    finished = job("j", "succeeded", exit_code=0)
    finished.execution_info.start_time = datetime(2018, 5, 1, 9, 0, 0, tzinfo=UTC)
    jobs.print_job_result(finished)
    finished.execution_info.end_time = datetime(2018, 5, 1, 10, 1, 2, 600000, tzinfo=UTC)
    jobs.print_job_result(finished)
    assert capsys.readouterr().out.splitlines() == [
        "Job j succeeded with exit code 0",
        "Job j succeeded with exit code 0; execution took 1:01:03",
    ]


def test_job_errors_are_printed_with_their_details(capsys):
    detail = models.NameValuePair(name="exitCode", value="3")
    error = models.BatchAIError()
    error.code, error.message, error.details = "JobFailed", "exit code 3", [detail]
    jobs.print_job_result(job("j", "failed", exit_code=3, errors=[error]))
    assert capsys.readouterr().out.splitlines() == [
        "Job j failed with exit code 3",
        "Job error: JobFailed: exit code 3",
        "  exitCode: 3",
    ]


@pytest.mark.parametrize("state", ["queued", "running", "terminating"])
def test_unfinished_jobs_are_followed_and_finished_ones_are_not(state):
    class Jobs:
        def __init__(self, jobs):
            self.jobs = jobs

        def list_by_experiment(self, *args):
            return iter(self.jobs)

    class Client:
        pass

    client = Client()
    client.jobs = Jobs([job("a", state)])
    settings = azure_settings()
    assert jobs.find_unfinished_job(client, settings).name == "a"
    for finished in ("succeeded", "failed"):
        client.jobs = Jobs([job("b", finished, exit_code=0)])
        assert jobs.find_unfinished_job(client, settings) is None
