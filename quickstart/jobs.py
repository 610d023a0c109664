"""What the tutorial needs to know about jobs beyond the article: which job to follow, its
state as a plain word, its name, how it ended and what that means for the exit status."""

from datetime import UTC, datetime, timedelta

import azure.mgmt.batchai.models as models
from msrestazure.azure_exceptions import CloudError

from quickstart.errors import StepFailed

FINISHED = ("succeeded", "failed")


def plain(value):
    """An SDK enum or string as the plain word the service sent."""
    return getattr(value, "value", value)


def is_finished(job):
    return plain(job.execution_state) in FINISHED


def latest_job(batchai_client, settings):
    """The pinned job, else the experiment's newest; None when there is none."""
    try:
        if settings.job:
            return batchai_client.jobs.get(
                settings.resource_group, settings.workspace, settings.experiment, settings.job
            )
        jobs = list(
            batchai_client.jobs.list_by_experiment(
                settings.resource_group, settings.workspace, settings.experiment
            )
        )
    except CloudError as error:
        if error.status_code != 404:
            raise
        return None
    return max(
        jobs,
        key=lambda job: (job.creation_time or datetime.min.replace(tzinfo=UTC), job.name),
        default=None,
    )


def find_unfinished_job(batchai_client, settings):
    """The latest job (or the pinned one) when it has not finished yet, else None."""
    job = latest_job(batchai_client, settings)
    return job if job is not None and not is_finished(job) else None


def unfinished_job_to_follow(batchai_client, settings):
    """The name of a job an earlier run left unfinished, said on screen, else None: `run`
    follows it to its end rather than starting a second one."""
    earlier = find_unfinished_job(batchai_client, settings)
    if earlier is None:
        return None
    print(
        f"Job {earlier.name} from an earlier run is still {plain(earlier.execution_state)}: "
        "following it instead of submitting another; its output so far comes first"
    )
    return earlier.name


def choose_job_name(settings, now=None):
    """The pinned job name, or a timestamped one as the Batch AI notebooks made."""
    return settings.job or (now or datetime.now(UTC)).strftime("cntk_%m_%d_%Y_%H%M%S")


def job_names(batchai_client, settings):
    """Every job of the experiment: timestamped names differ per run, and a pinned name may have
    come after them."""
    try:
        return [
            job.name
            for job in batchai_client.jobs.list_by_experiment(
                settings.resource_group, settings.workspace, settings.experiment
            )
        ]
    except CloudError as error:
        if error.status_code != 404:
            raise
        return []


def job_exit_status(job):
    """The process exit status for a finished job: 0, or its exit code (1 when that is not
    1-255)."""
    if plain(job.execution_state) == "succeeded":
        return 0
    code = job.execution_info.exit_code if job.execution_info else None
    return code if isinstance(code, int) and 0 < code < 256 else 1


def print_job_result(job):
    """The job's exit code, run time and errors, as `az batchai job wait` reported them."""
    info = job.execution_info
    exit_code = info.exit_code if info else None
    took = ""
    if info and info.start_time and info.end_time:
        seconds = round((info.end_time - info.start_time).total_seconds())
        took = f"; execution took {timedelta(seconds=seconds)}"
    print(f"Job {job.name} {plain(job.execution_state)} with exit code {exit_code}{took}")
    if info and info.errors:
        print_errors("Job error", info.errors)


def print_errors(title, errors):
    for error in errors:
        print(f"{title}: {error.code}: {error.message}")
        for detail in error.details or []:
            print(f"  {detail.name}: {detail.value}")


def list_files(batchai_client, settings, job_name, directory_id):
    """A job's files in one output directory ("stdouterr", or an output directory's id)."""
    return list(
        batchai_client.jobs.list_output_files(
            settings.resource_group,
            settings.workspace,
            settings.experiment,
            job_name,
            models.JobsListOutputFilesOptions(outputdirectoryid=directory_id),
        )
    )


def replace_finished_job(batchai_client, settings, job_name):
    """Make room for a pinned job name. Only a finished job gets here: `run` follows an unfinished
    one instead of submitting (see find_unfinished_job), so no training is ever cut short."""
    where = (settings.resource_group, settings.workspace, settings.experiment, job_name)
    try:
        earlier = batchai_client.jobs.get(*where)
        state = plain(earlier.execution_state)
        if state not in FINISHED:
            raise StepFailed(
                f"job {job_name} from an earlier run is {state}; follow it with "
                "`python -m quickstart status --follow` or remove it with "
                "`python -m quickstart teardown`"
            )
        batchai_client.jobs.delete(*where).result()
    except CloudError as error:
        if error.status_code != 404:
            raise
        return
    print(
        f"Replaced job {job_name} from an earlier run ({state}; its files stay on the share): "
        "the job name is pinned in the settings"
    )
