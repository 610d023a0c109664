"""`status` and `download`: what exists, and a job's files fetched after the fact.

`status` shows the cluster's status line, the latest job's state and its output files: for a
finished job its result and test error, for an unfinished one its output so far. With
`--follow` it watches an unfinished job to its end and then downloads its files, as `run` does.
`download [JOB]` fetches a finished job's files into <download_dir>/<job>/, for when the
watching was cut short (the printed URLs hide their signatures, so they cannot be used by hand).
"""

import time

from msrestazure.azure_exceptions import CloudError

from quickstart.downloads import print_test_error, report_test_error
from quickstart.errors import StepFailed
from quickstart.jobs import is_finished, job_exit_status, latest_job, plain, print_job_result
from quickstart.steps import (
    cluster_status_line,
    create_clients,
    download_output_files,
    list_output_files,
    monitor_job,
)
from quickstart.streaming import OutputTail, print_output_so_far


def status(settings, follow=False, sleep=time.sleep):
    """Show what exists; with follow, watch an unfinished job to its end, download its files and
    return its exit status."""
    clients = create_clients(settings)
    print_cluster_status(clients.batchai, settings)
    job = latest_job(clients.batchai, settings)
    if job is None:
        print(f"Job: none in experiment {settings.experiment}")
        return 0
    print(f"Job {job.name}: Job state: {plain(job.execution_state)}")
    if follow and not is_finished(job):
        job = monitor_job(clients, settings, job.name, sleep)
        fetch_outputs(clients, settings, job.name)
        return job_exit_status(job)
    if is_finished(job):
        print_job_result(job)
        print_test_error(OutputTail(clients, settings, job.name).read_all())
    else:
        print_output_so_far(clients, settings, job.name)
        print(
            f"The job is still {plain(job.execution_state)}: "
            "`python -m quickstart status --follow` streams it to its end and downloads its "
            "files, `python -m quickstart run` does the same"
        )
    list_output_files(clients.batchai, settings, job.name)
    return job_exit_status(job) if follow else 0


def download(settings, job_name=None):
    """Fetch a finished job's files (the latest job when none is named) as `run` does."""
    clients = create_clients(settings)
    job = latest_job(clients.batchai, settings.replace(job=job_name or settings.job))
    if job is None:
        missing = f"job {job_name} does not exist" if job_name else "there is no job yet"
        raise StepFailed(
            f"{missing} in experiment {settings.experiment}; "
            "`python -m quickstart status` shows what exists"
        )
    if not is_finished(job):
        raise StepFailed(
            f"job {job.name} is still {plain(job.execution_state)}; "
            "`python -m quickstart status --follow` waits for it and downloads its files"
        )
    print_job_result(job)
    fetch_outputs(clients, settings, job.name)
    return 0


def fetch_outputs(clients, settings, job_name):
    """Steps 9 and 10 for a job `run` did not download: list its files, download them, and
    print its test error."""
    listing = list_output_files(clients.batchai, settings, job_name)
    report_test_error(download_output_files(clients.http, settings, job_name, listing))


def print_cluster_status(batchai_client, settings):
    try:
        cluster = batchai_client.clusters.get(
            settings.resource_group, settings.workspace, settings.cluster
        )
    except CloudError as error:
        if error.status_code != 404:
            raise
        print(f"Cluster {settings.cluster}: not found")
        return
    print(cluster_status_line(cluster))
