"""The tutorial's steps where a slip would show to a user but the other step tests look away:
every SDK call names the configured resources (run, status, teardown), downloads stream in
pieces through a .partial file, the job's log is read as UTF-8 with replacement, teardown's
summary lines, status's hints, and the step timer's figures at the minute boundary."""

import time
from datetime import UTC, datetime

import pytest
from azure.common import AzureMissingResourceHttpError
from azure.mgmt.batchai import models
from urllib3.exceptions import MaxRetryError, NewConnectionError

from quickstart import __main__ as cli
from quickstart import downloads, jobs, steps, streaming, uploads
from quickstart.retries import ATTEMPTS
from quickstart.status import download as download_job
from quickstart.status import status
from quickstart.teardown import teardown
from quickstart.timing import StepClock, format_seconds
from tests.fakes_azure import (
    azure_settings,
    cloud_error,
    cluster,
    http_response,
    job,
    output_file,
    patched_sdk,
)

NAMES = dict(
    resource_group="rg-7",
    workspace="ws-7",
    cluster="cl-7",
    experiment="ex-7",
    job="job-7",
    share="share-7",
    directory="dir-7",
)
LOG_URL = "https://acct.file.core.windows.net/share-7/x/stdouterr/stderr.txt?sv=x&sig=y"
MODEL_URL = "https://acct.file.core.windows.net/share-7/x/Models/ConvNet_MNIST_0.dnn?sv=x&sig=y"
LOG = b"Finished Epoch[1 of 1]\nFinal Results: Minibatch[1-11]: errs = 1.25% * 10000\n"


@pytest.fixture
def azure():
    with patched_sdk() as fake:
        yield fake


def settings(tmp_path, **changes):
    return azure_settings(download_dir=str(tmp_path / "outputs"), **dict(NAMES, **changes))


def script_a_finished_job(azure, state="succeeded", exit_code=0):
    """A cluster with an idle node and a job that runs once, then finishes with its log."""
    azure.batchai.clusters.get.side_effect = None
    azure.batchai.clusters.get.return_value = cluster("steady", idle=1, current=1)
    states = iter(["running", state])

    def get_job(resource_group, workspace, experiment, name):
        current = next(states, state)
        return job(name, current, exit_code=exit_code if current == state else None)

    def list_files(resource_group, workspace, experiment, name, options):
        if options.outputdirectoryid == "stdouterr":
            return iter([output_file("stderr.txt", LOG_URL)])
        return iter([output_file("ConvNet_MNIST_0.dnn", MODEL_URL)])

    def http_get(url, headers=None, stream=False, timeout=None):
        if url == MODEL_URL:
            return http_response(200, b"model")
        start = int(headers["Range"][6:-1]) if headers else 0
        if start >= len(LOG):
            return http_response(416)
        return http_response(206 if headers else 200, LOG[start:])

    azure.batchai.jobs.get.side_effect = get_job
    azure.batchai.jobs.list_output_files.side_effect = list_files
    azure.batchai.jobs.list_by_experiment.return_value = iter([])
    azure.http.get.side_effect = http_get


EXPECTED_PREFIX = {
    "resource_groups": ("rg-7",),
    "workspaces": ("rg-7", "ws-7"),
    "clusters": ("rg-7", "ws-7", "cl-7"),
    "experiments": ("rg-7", "ws-7", "ex-7"),
    "jobs": ("rg-7", "ws-7", "ex-7"),
}


def assert_every_call_names_the_configured_resources(azure):
    calls = [c for c in azure.calls.mock_calls if c[0].count(".") == 1]
    assert calls
    for name, args, _ in calls:
        group, operation = name.split(".")
        if group in EXPECTED_PREFIX:
            prefix = EXPECTED_PREFIX[group]
            assert args[: len(prefix)] == prefix, (name, args)
            if group == "jobs" and operation != "list_by_experiment":
                assert args[3] == "job-7", (name, args)
        elif group == "files" and operation != "delete_share":
            assert args[0] == "share-7", (name, args)
        assert None not in args, (name, args)


def test_run_names_the_configured_resources_in_every_call(azure, tmp_path, monkeypatch, capsys):
    script_a_finished_job(azure)
    azure.batchai.jobs.get.side_effect = [cloud_error(404, "JobNotFound")] * 2 + [
        job("job-7", "running"),
        job("job-7", "succeeded", exit_code=0),
    ]
    sample = tmp_path / "ConvNet_MNIST.py"
    sample.write_text("print()\n")
    asked = []
    monkeypatch.setattr(
        steps, "prepare_sample_files", lambda s: asked.append(s) or {sample.name: sample}
    )
    azure.files.get_file_properties.side_effect = AzureMissingResourceHttpError("gone", 404)
    azure.batchai.clusters.get.side_effect = [cloud_error(404, "ClusterNotFound")] + [
        cluster("resizing"),
        cluster("steady", idle=1, current=1),
        cluster("steady", idle=1, current=1),
    ]
    configured = settings(tmp_path, node_count=2, vm_size="STANDARD_NC12")
    sleeps = []

    assert steps.run(configured, sleep=sleeps.append) == 0

    assert asked == [configured]
    assert_every_call_names_the_configured_resources(azure)
    assert azure.file_service_class.call_args.kwargs["request_session"] is azure.http
    assert sleeps and set(sleeps) == {configured.poll_interval}
    lines = capsys.readouterr().out.splitlines()
    for announced in (
        "Resource group rg-7 ready in eastus",
        "File share share-7 ready",
        "Directory share-7/dir-7 ready",
        "Workspace ws-7 ready",
        "Cluster cl-7 created: 2 x STANDARD_NC12",
        "Experiment ex-7 ready",
        "Job job-7 submitted",
    ):
        assert announced in lines


def test_status_and_teardown_name_the_configured_resources_in_every_call(azure, tmp_path, capsys):
    script_a_finished_job(azure)
    status(settings(tmp_path))
    status(settings(tmp_path), follow=True, sleep=lambda s: None)
    azure.batchai.jobs.list_by_experiment.return_value = iter([job("job-7", "succeeded")])
    teardown(settings(tmp_path), delete_share=True)
    assert_every_call_names_the_configured_resources(azure)
    assert azure.file_service_class.call_args.kwargs["request_session"] is azure.http


def test_waiting_for_a_node_asks_for_the_configured_cluster(azure):
    azure.batchai.clusters.get.side_effect = [cluster("resizing"), cluster("steady", idle=1)]
    steps.wait_for_idle_node(azure.batchai, azure_settings(**NAMES), sleep=lambda s: None)
    assert {c.args for c in azure.batchai.clusters.get.call_args_list} == {("rg-7", "ws-7", "cl-7")}


class RecordingBar:
    """tqdm as the upload uses it: the options each bar is made with, and its updates."""

    made = []

    def __init__(self, **options):
        self.options, self.n = options, 0
        RecordingBar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, step):
        self.n += step


def test_uploads_show_a_byte_progress_bar_only_for_files_over_a_mib(azure, tmp_path, monkeypatch):
    big, small, edge = tmp_path / "big.txt", tmp_path / "small.py", tmp_path / "edge.txt"
    big.write_bytes(b"x" * ((1 << 20) + 1))
    small.write_bytes(b"y" * 10)
    edge.write_bytes(b"z" * (1 << 20))
    RecordingBar.made = []
    monkeypatch.setattr(uploads, "tqdm", RecordingBar)
    azure.files.get_file_properties.side_effect = AzureMissingResourceHttpError("gone", 404)

    def create_file_from_path(share, directory, name, path, progress_callback):
        size = (tmp_path / name).stat().st_size
        progress_callback(size // 2, size)
        progress_callback(size, size)

    azure.files.create_file_from_path.side_effect = create_file_from_path
    steps.upload_sample_files(
        azure.files, azure_settings(), {path.name: path for path in (big, small, edge)}
    )
    stored_types = [c.args[3].content_type for c in azure.files.set_file_properties.call_args_list]
    assert stored_types == ["text/plain", "text/x-python", "text/plain"]
    common = {"unit": "B", "unit_scale": True, "leave": False}
    assert [bar.options for bar in RecordingBar.made] == [
        dict(common, total=(1 << 20) + 1, desc="big.txt", disable=None),
        dict(common, total=10, desc="small.py", disable=True),
        dict(common, total=1 << 20, desc="edge.txt", disable=True),
    ]
    assert [bar.n for bar in RecordingBar.made] == [(1 << 20) + 1, 10, 1 << 20]


# Downloads ------------------------------------------------------------------------------------


class StreamedResponse:
    """A streamed download: records how it is read and what the folder holds meanwhile."""

    def __init__(self, folder, blocks):
        self.folder, self.blocks, self.sizes, self.seen = folder, blocks, [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def raise_for_status(self):
        pass

    def iter_content(self, size):
        self.sizes.append(size)
        for block in self.blocks:
            self.seen.append(sorted(p.name for p in self.folder.iterdir()))
            yield block


def test_a_download_streams_in_mib_pieces_through_a_partial_file(tmp_path):
    response = StreamedResponse(tmp_path, [b"ab", b"cd"])
    requests_made = []

    class Http:
        def get(self, url, **kwargs):
            requests_made.append((url, kwargs))
            return response

    steps.download(Http(), "https://x/model?sig=s", tmp_path / "model.dnn")
    assert requests_made == [("https://x/model?sig=s", {"stream": True, "timeout": 60})]
    assert response.sizes == [1 << 20]
    assert response.seen == [["model.dnn.partial"], ["model.dnn.partial"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.dnn"]
    assert (tmp_path / "model.dnn").read_bytes() == b"abcd"


def test_the_download_summary_names_the_model_folder_and_the_logs_folder(azure, tmp_path, capsys):
    azure.http.get.return_value = http_response(200, b"x")
    listing = {
        "stdouterr": [output_file("stderr.txt", LOG_URL)],
        "MODEL": [output_file("a.dnn", MODEL_URL), output_file("b.dnn", MODEL_URL + "&b")],
    }
    target = steps.download_output_files(azure.http, settings(tmp_path), "job-7", listing)
    assert capsys.readouterr().out == (
        f"Downloaded 2 model files to {target} (the job's logs to {target / 'stdouterr'})\n"
    )


# The job's log --------------------------------------------------------------------------------


def test_the_test_error_is_read_from_a_log_with_broken_bytes(tmp_path, capsys):
    logs = tmp_path / "stdouterr"
    logs.mkdir()
    (logs / "stderr.txt").write_bytes(
        b"caf\xe9 \xff\nFinal Results: Minibatch[1-11]: errs = 0.93% * 10000\n"
    )
    assert steps.report_test_error(tmp_path) == 0.93
    assert capsys.readouterr().out == "Final test error: 0.93% on 10,000 test images\n"


def test_a_job_folder_without_its_log_reports_no_test_error(tmp_path, capsys):
    assert steps.report_test_error(tmp_path / "never-downloaded") is None
    assert capsys.readouterr().out == (
        "Final test error: not reported (no 'Final Results' line in the job's stderr.txt)\n"
    )


def test_the_last_final_results_line_counts(capsys):
    output = (
        "Final Results: Minibatch[1-11]: errs = 9.99% * 10000\n"
        "Final Results: Minibatch[1-3]: errs = 1.50% * 2048\n"
    )
    assert downloads.print_test_error(output) == 1.5
    assert capsys.readouterr().out == "Final test error: 1.50% on 2,048 test images\n"


def test_a_snapshot_of_the_log_replaces_bytes_that_are_not_utf8(azure):
    azure.batchai.jobs.list_output_files.return_value = iter([output_file("stderr.txt", LOG_URL)])
    azure.http.get.side_effect = [http_response(206, b"ok \xff\xfe end\n"), http_response(416)]
    tail = streaming.OutputTail(
        steps.Clients(azure.batchai, azure.resources, azure.http),
        azure_settings(),
        "j",
        "stderr.txt",
    )
    assert tail.read_all() == "ok \ufffd\ufffd end\n"


# Teardown and status --------------------------------------------------------------------------


def test_teardown_counts_removed_jobs_when_everything_else_was_gone(azure, capsys):
    azure.batchai.jobs.list_by_experiment.return_value = iter([job("cntk_1", "succeeded")])
    gone = cloud_error(404)
    for delete in (
        azure.batchai.experiments.delete,
        azure.batchai.clusters.delete,
        azure.batchai.workspaces.delete,
        azure.resources.resource_groups.delete,
    ):
        delete.side_effect = gone
    azure.files.delete_share.return_value = False
    teardown(azure_settings(), delete_share=True)
    assert capsys.readouterr().out.splitlines()[1:] == [
        "Removed job cntk_1",
        "Already gone: experiment myexperiment, cluster mycluster, workspace myworkspace, "
        "resource group myresourcegroup, file share batchaiquickstart",
    ]


def test_teardown_says_the_share_was_removed_only_when_it_was(azure, capsys):
    azure.batchai.jobs.list_by_experiment.return_value = iter([])
    azure.resources.resource_groups.delete.side_effect = cloud_error(404)
    azure.files.delete_share.return_value = True
    teardown(azure_settings(), delete_share=True)
    out = capsys.readouterr().out.splitlines()
    assert "Removed file share batchaiquickstart (the sample and every job's files on it)" in out
    assert out[-1] == "Already gone: resource group myresourcegroup"
    azure.files.delete_share.return_value = False  # the share was gone, the rest removed
    azure.resources.resource_groups.delete.side_effect = None
    teardown(azure_settings(), delete_share=True)
    out = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("Removed file share") for line in out)
    assert out[-1] == "Already gone: file share batchaiquickstart"


def test_status_of_a_running_job_says_how_to_follow_it(azure, capsys):
    azure.batchai.clusters.get.return_value = cluster("steady", running=1, current=1)
    azure.batchai.jobs.list_by_experiment.return_value = iter([job("cntk_9", "running")])
    azure.batchai.jobs.list_output_files.return_value = iter([])
    assert status(azure_settings()) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "Output so far: none yet",
        "The job is still running: `python -m quickstart status --follow` streams it to its "
        "end and downloads its files, `python -m quickstart run` does the same",
    ]


def test_status_follow_reads_the_followed_jobs_log(azure, tmp_path, monkeypatch, capsys):
    script_a_finished_job(azure, state="failed", exit_code=4)
    monkeypatch.setattr(steps.time, "sleep", lambda s: pytest.fail("slept with time.sleep"))
    azure.batchai.jobs.get.side_effect = [
        job("job-7", models.ExecutionState.running),
        job("job-7", "running"),
        job("job-7", "failed", exit_code=4),
    ]
    assert status(settings(tmp_path), follow=True, sleep=lambda s: None) == 4
    out = capsys.readouterr().out
    assert out.count("Final test error: 1.25% on 10,000 test images") == 1
    listed = {c.args[3] for c in azure.batchai.jobs.list_output_files.call_args_list}
    assert listed == {"job-7"}


def test_a_pinned_job_still_running_is_refused_with_both_ways_out(azure):
    azure.batchai.jobs.get.return_value = job("job-7", "running")
    with pytest.raises(steps.StepFailed) as caught:
        steps.replace_finished_job(azure.batchai, azure_settings(**NAMES), "job-7")
    assert str(caught.value) == (
        "job job-7 from an earlier run is running; follow it with `python -m quickstart status "
        "--follow` or remove it with `python -m quickstart teardown`"
    )
    azure.batchai.jobs.get.assert_called_once_with("rg-7", "ws-7", "ex-7", "job-7")
    azure.batchai.jobs.delete.assert_not_called()


def test_replacing_a_finished_pinned_job_deletes_that_job(azure):
    azure.batchai.jobs.get.return_value = job("job-7", "failed", exit_code=1)
    steps.replace_finished_job(azure.batchai, azure_settings(**NAMES), "job-7")
    azure.batchai.jobs.delete.assert_called_once_with("rg-7", "ws-7", "ex-7", "job-7")


def test_a_missing_training_script_is_named(tmp_path, monkeypatch):
    import quickstart.sample as sample

    monkeypatch.setattr(sample, "build_ctf_files", lambda folder: ("a", "b"))
    monkeypatch.setattr(sample, "convnet_script_path", lambda: str(tmp_path / "gone.py"))
    with pytest.raises(steps.StepFailed) as caught:
        steps.prepare_sample_files(azure_settings())
    assert (
        str(caught.value) == f"{tmp_path / 'gone.py'} is missing; it is the job's training script"
    )


def test_the_sample_files_are_announced_by_name(tmp_path, monkeypatch, capsys):
    import quickstart.sample as sample

    script = tmp_path / "ConvNet_MNIST.py"
    script.write_text("")
    monkeypatch.setattr(sample, "build_ctf_files", lambda folder: ("/d/Train.txt", "/d/Test.txt"))
    monkeypatch.setattr(sample, "convnet_script_path", lambda: str(script))
    steps.prepare_sample_files(azure_settings())
    assert capsys.readouterr().out == (
        "Sample files ready: Train.txt, Test.txt, ConvNet_MNIST.py, convnet_pytorch/\n"
    )


# Names and times ------------------------------------------------------------------------------


def test_timestamped_job_names_use_utc_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        before = datetime.now(UTC)
        name = steps.choose_job_name(azure_settings(job=""))
        after = datetime.now(UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert name in {moment.strftime("cntk_%m_%d_%Y_%H%M%S") for moment in (before, after)}, name


@pytest.mark.parametrize(
    "seconds, shown",
    [(0, "0.0 s"), (59.94, "59.9 s"), (60, "1m00.0s"), (60.5, "1m00.5s"), (61, "1m01.0s")]
    + [(125.25, "2m05.2s"), (3600, "60m00.0s")],
)
def test_step_times_switch_to_minutes_at_60_seconds(seconds, shown):
    assert format_seconds(seconds) == shown


def test_the_summary_adds_up_repeated_steps_and_counts_failed_ones():
    ticks = iter([0, 1, 3, 10, 14, 20, 26, 30])
    clock = StepClock(clock=lambda: next(ticks))
    with clock.step("upload"):
        pass
    with pytest.raises(RuntimeError), clock.step("cluster"):
        raise RuntimeError("allocation failed")
    with clock.step("upload"):
        pass
    assert clock.summary() == "Wall time: 30.0 s in all (upload 8.0 s, cluster 4.0 s)"


# Signing in, submitting, following ------------------------------------------------------------


def test_the_local_cloud_is_named_and_keeps_its_token_audience(azure, capsys):
    local = azure_settings(
        cloud="local",
        client_id="local-client",
        resource_manager_url="https://127.0.0.1:4443/",
        active_directory_url="https://127.0.0.1:4443/adfs",
        active_directory_resource_id="https://127.0.0.1:4443/audience",
        storage_connection_string="AccountName=a;AccountKey=a2V5;FileEndpoint=https://127.0.0.1/a",
    )
    steps.create_clients(local)
    cloud = azure.credentials_class.call_args.kwargs["cloud_environment"]
    assert cloud.name == "LocalCloud"
    assert cloud.endpoints.active_directory_resource_id == "https://127.0.0.1:4443/audience"
    assert capsys.readouterr().out == "Signed in as local-client to LocalCloud\n"


REFUSED = NewConnectionError(None, "Connection refused")


def test_storage_retries_a_refused_connection_for_about_six_seconds():
    """5 connection attempts more, 0.4-3.2 s apart; a request whose answer was being read, or
    that failed any other way, is never sent twice, so an upload's range is not written twice.
    (Throttling and passing server errors are retried, as quickstart/retries.py says why.)"""
    retry = steps.reconnecting_session().get_adapter("https://127.0.0.1/").max_retries
    assert (retry.total, retry.connect, retry.read, retry.status, retry.other) == (
        ATTEMPTS,
        5,
        0,
        ATTEMPTS,
        0,
    )
    waits = []
    for _ in range(5):
        retry = retry.increment(error=REFUSED, method="GET")
        waits.append(retry.get_backoff_time())
    assert waits == pytest.approx([0, 0.4, 0.8, 1.6, 3.2])
    with pytest.raises(MaxRetryError):
        retry.increment(error=REFUSED, method="GET")


def test_when_every_suffix_is_taken_the_error_says_which_and_what_to_do(azure):
    azure.batchai.jobs.create.side_effect = cloud_error(409, "Conflict")
    with pytest.raises(steps.StepFailed) as caught:
        steps.create_job(azure.batchai, azure_settings(), cluster(), "cntk_x")
    assert str(caught.value) == (
        "job names cntk_x to cntk_x_9 are all taken; pin a job name in the settings"
    )
    assert [c.args[3] for c in azure.batchai.jobs.create.call_args_list] == ["cntk_x"] + [
        f"cntk_x_{n}" for n in range(2, 10)
    ]


def test_the_latest_job_is_found_among_jobs_with_and_without_a_creation_time(azure):
    azure.batchai.jobs.list_by_experiment.return_value = iter(
        [
            job("b", "succeeded", created=None),
            job("a", "running", created=datetime(2018, 5, 1, 9, 0, tzinfo=UTC)),
            job("c", "failed", created=None),
        ]
    )
    assert jobs.latest_job(azure.batchai, azure_settings(**dict(NAMES, job=""))).name == "a"
    azure.batchai.jobs.list_by_experiment.assert_called_once_with("rg-7", "ws-7", "ex-7")


def test_a_pinned_job_is_looked_up_by_its_name(azure):
    azure.batchai.jobs.get.return_value = job("job-7", "running")
    assert jobs.latest_job(azure.batchai, azure_settings(**NAMES)).name == "job-7"
    azure.batchai.jobs.get.assert_called_once_with("rg-7", "ws-7", "ex-7", "job-7")


@pytest.mark.parametrize(
    "state", [models.ExecutionState.failed, models.ExecutionState.succeeded, "failed"]
)
def test_the_result_line_shows_the_plain_state_word(state, capsys):
    steps.print_job_result(job("j", state, exit_code=2))
    word = getattr(state, "value", state)
    assert capsys.readouterr().out == f"Job j {word} with exit code 2\n"


def test_the_result_of_a_job_without_execution_info_has_no_exit_code(capsys):
    steps.print_job_result(job("j", "queued"))
    assert capsys.readouterr().out == "Job j queued with exit code None\n"


def test_status_follow_of_a_finished_job_reports_it_without_watching(azure, tmp_path, capsys):
    script_a_finished_job(azure)
    azure.batchai.jobs.list_by_experiment.return_value = iter([job("job-7", "failed", exit_code=3)])
    settings_without_pin = settings(tmp_path, job="")
    assert status(settings_without_pin, follow=True, sleep=lambda s: None) == 3
    azure.batchai.jobs.get.assert_not_called()
    assert capsys.readouterr().out.count("Job job-7 failed with exit code 3") == 1


def test_run_waits_with_the_given_sleep_for_the_node_and_the_job(azure, tmp_path, monkeypatch):
    script_a_finished_job(azure)
    azure.batchai.clusters.get.side_effect = [cloud_error(404, "ClusterNotFound")] + [
        cluster("resizing"),
        cluster("resizing"),
        cluster("steady", idle=1, current=1),
    ]
    azure.batchai.jobs.get.side_effect = [
        cloud_error(404, "JobNotFound"),
        cloud_error(404, "JobNotFound"),
        job("job-7", "running"),
        job("job-7", "running"),
        job("job-7", "succeeded", exit_code=0),
    ]
    monkeypatch.setattr(steps, "prepare_sample_files", lambda s: {})
    monkeypatch.setattr(steps.time, "sleep", lambda s: pytest.fail("slept with time.sleep"))
    sleeps = []
    assert steps.run(settings(tmp_path, poll_interval=5), sleep=sleeps.append) == 0
    assert sleeps == [5, 5, 5]  # once for the node, twice while the job runs


def test_ctrl_c_names_every_way_back(azure, tmp_path):
    """Ctrl-C while the job trains leaves the job running: run() lets the interrupt through
    and the command's handler (quickstart/__main__.py, exit 130, tests/test_cli.py) prints the
    line, which names every way back."""
    script_a_finished_job(azure)
    azure.batchai.jobs.get.side_effect = [job("job-7", "running"), KeyboardInterrupt]
    with pytest.raises(KeyboardInterrupt):
        steps.run(settings(tmp_path), sleep=lambda s: None)
    azure.batchai.jobs.delete.assert_not_called()
    assert cli.INTERRUPTED_LINES["run"] == (
        "Stopped. What was created so far stays, and a submitted job keeps running in the "
        "cloud: `python -m quickstart run` (or `status --follow`) reattaches to it and downloads "
        "its files, `python -m quickstart status` shows it, `python -m quickstart teardown` "
        "removes everything."
    )


def test_a_cluster_that_cannot_allocate_says_how_to_start_over(azure, capsys):
    error = models.BatchAIError()
    error.code, error.message, error.details = "AllocationFailed", "No quota", None
    azure.batchai.clusters.get.return_value = cluster("steady", errors=[error])
    with pytest.raises(steps.StepFailed) as caught:
        steps.wait_for_idle_node(azure.batchai, azure_settings(**NAMES), sleep=lambda s: None)
    assert str(caught.value) == (
        "cluster cl-7 could not allocate its nodes; remove it with `python -m quickstart "
        "teardown` and try again"
    )
    assert capsys.readouterr().out.splitlines()[-1] == "Cluster error: AllocationFailed: No quota"


def test_a_snapshot_joins_a_log_served_in_several_short_answers(azure):
    """A server may answer a Range request with fewer bytes than asked; the pieces are joined."""
    content = b"line one\nline two\n"
    azure.batchai.jobs.list_output_files.return_value = iter([output_file("stderr.txt", LOG_URL)])

    def short_answers(url, headers=None, **kwargs):
        start = int(headers["Range"][6:-1])
        if start >= len(content):
            return http_response(416)
        return http_response(206, content[start : start + 5])

    azure.http.get.side_effect = short_answers
    tail = streaming.OutputTail(
        steps.Clients(azure.batchai, azure.resources, azure.http),
        azure_settings(),
        "j",
        "stderr.txt",
    )
    assert tail.read_all() == "line one\nline two\n"


def test_a_file_of_unknown_type_is_stored_as_octet_stream(azure, tmp_path):
    model = tmp_path / "ConvNet_MNIST_0.dnn-unknown"
    model.write_bytes(b"\0\1")
    azure.files.get_file_properties.side_effect = AzureMissingResourceHttpError("gone", 404)
    steps.upload_sample_files(azure.files, azure_settings(), {model.name: model})
    settings_stored = azure.files.set_file_properties.call_args.args[3]
    assert settings_stored.content_type == "application/octet-stream"


def test_download_without_any_job_says_there_is_none_yet(azure, tmp_path):
    azure.batchai.jobs.list_by_experiment.return_value = iter([])
    with pytest.raises(steps.StepFailed) as failed:
        download_job(settings(tmp_path, job=""))
    assert str(failed.value) == (
        "there is no job yet in experiment ex-7; `python -m quickstart status` shows what exists"
    )
    assert not (tmp_path / "outputs").exists()


def test_a_file_in_a_sample_subfolder_is_named_with_its_folder(azure, tmp_path, capsys):
    module = tmp_path / "cntk_compat.py"
    module.write_text("# the port's module\n")
    azure.files.get_file_properties.side_effect = AzureMissingResourceHttpError("Not found", 404)

    steps.upload_sample_files(
        azure.files, settings(tmp_path), {"convnet_pytorch/cntk_compat.py": module}
    )

    azure.files.create_file_from_path.assert_called_once()
    assert azure.files.create_file_from_path.call_args.args[1:3] == (
        "dir-7/convnet_pytorch",
        "cntk_compat.py",
    )
    assert "Uploaded convnet_pytorch/cntk_compat.py (20 bytes)" in capsys.readouterr().out
