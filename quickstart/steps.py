"""The Azure Batch AI quickstart "Run a CNTK training job using the Azure Python SDK" (2018).

Read top to bottom, this module is the article: one small function per documented step, in the
article's order, each taking what it needs and returning what the next step needs. `run` calls
them in order; `teardown` cleans up, as the article's last section does; `status` shows what
exists. The code does not know whether it talks to Azure or to the local cloud: the only
difference is the `Cloud` object, the storage connection and the CA certificate to trust.
"""

import base64
import codecs
import hashlib
import mimetypes
import re
import time
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.mgmt.batchai as batchai
import azure.mgmt.batchai.models as models
from azure.common import AzureMissingResourceHttpError
from azure.common.credentials import ServicePrincipalCredentials
from azure.mgmt.resource import ResourceManagementClient
from azure.storage.file import ContentSettings, FileService
from msrestazure import azure_cloud
from msrestazure.azure_exceptions import CloudError
from tqdm import tqdm
from urllib3.util.retry import Retry

from quickstart.http_sessions import whole_body_session
from quickstart.timing import StepClock

RELATIVE_MOUNT_POINT = "azurefileshare"
SAMPLE_SCRIPT = "ConvNet_MNIST.py"  # uploaded next to the data; the job runs it from there
STREAMED_FILE = "stderr.txt"  # ConvNet_MNIST.py sends all its output to stderr
NAMED_CLOUDS = {
    "AzureCloud": "AZURE_PUBLIC_CLOUD",
    "AzureChinaCloud": "AZURE_CHINA_CLOUD",
    "AzureUSGovernment": "AZURE_US_GOV_CLOUD",
    "AzureGermanCloud": "AZURE_GERMAN_CLOUD",
}
FINISHED = ("succeeded", "failed")
FINAL_RESULTS = r"^Final Results: Minibatch\[[^\]]*\]: errs = ([0-9.]+)% \* (\d+)"  # ConvNet_MNIST.py's last line
OUTPUT_SO_FAR_LINES = 20  # what `status` shows of a running job's output

Clients = namedtuple("Clients", "batchai resources http")


class StepFailed(Exception):
    """A step could not complete; the message says what happened and what to do."""


# 1. Credentials and the clients -------------------------------------------------------------------


def create_clients(settings):
    """Sign in with the service principal and create the Batch AI and resource management clients."""
    cloud = cloud_environment(settings)
    verify = settings.ca_cert or True
    credentials = ServicePrincipalCredentials(
        client_id=settings.client_id,
        secret=settings.client_secret,
        tenant=settings.tenant_id,
        cloud_environment=cloud,
        verify=verify,
    )
    base_url = cloud.endpoints.resource_manager
    batchai_client = batchai.BatchAIManagementClient(
        credentials, settings.subscription_id, base_url=base_url
    )
    resource_client = ResourceManagementClient(
        credentials, settings.subscription_id, base_url=base_url
    )
    http = reconnecting_session()  # for storage, streaming and downloads
    for connection in (batchai_client.config.connection, resource_client.config.connection, http):
        connection.verify = verify
    if settings.ca_cert:  # else REQUESTS_CA_BUNDLE would override the session's verify
        http.trust_env = False
    print(f"Signed in as {settings.client_id} to {cloud.name}")
    return Clients(batchai_client, resource_client, http)


def reconnecting_session():
    """A requests session that retries a refused connection for about 6 s (0, 0.4, 0.8, 1.6 and
    3.2 s apart), as the ARM clients' own policy does: long enough for a local cloud to change
    hands (localcloud.Standby) without failing the command. It reads whole answers in large
    pieces, for 1.3-2 times the storage SDK's download rate (quickstart/http_sessions.py)."""
    retry = Retry(total=5, connect=5, read=0, status=0, other=0, backoff_factor=0.2)
    return whole_body_session(max_retries=retry)


def cloud_environment(settings):
    """The msrestazure Cloud: a named Azure cloud, or the local cloud's endpoints."""
    if not settings.is_local:
        return getattr(azure_cloud, NAMED_CLOUDS[settings.cloud])
    return azure_cloud.Cloud(
        "LocalCloud",
        endpoints=azure_cloud.CloudEndpoints(
            resource_manager=settings.resource_manager_url,
            active_directory=settings.active_directory_url,
            active_directory_resource_id=settings.active_directory_resource_id,
        ),
    )


# 2. The resource group ----------------------------------------------------------------------------


def create_resource_group(resource_client, settings):
    """Create (or reuse) the resource group that holds the workspace and everything in it."""
    resource_client.resource_groups.create_or_update(
        settings.resource_group, {"location": settings.location}
    )
    print(f"Resource group {settings.resource_group} ready in {settings.location}")


# 3. The file share, its directory, the sample files and the upload --------------------------------


def create_file_share(settings, http):
    """Connect to the storage account and create (or reuse) the Azure file share."""
    service = connect_file_service(settings, http)
    service.create_share(settings.share, fail_on_exist=False)
    print(f"File share {settings.share} ready")
    return service


def connect_file_service(settings, http):
    """A FileService for the storage account; the local cloud's comes from its connection string."""
    if settings.storage_connection_string:
        return FileService(
            connection_string=settings.storage_connection_string, request_session=http
        )
    return FileService(
        settings.storage_account,
        settings.storage_key,
        request_session=http,
        endpoint_suffix=cloud_environment(settings).suffixes.storage_endpoint,
    )


def create_sample_directory(service, settings):
    """Create (or reuse) the share's directory for the sample files."""
    service.create_directory(settings.share, settings.directory, fail_on_exist=False)
    print(f"Directory {settings.share}/{settings.directory} ready")


def prepare_sample_files(settings):
    """Build the MNIST training and test files in CNTK text format, next to the training script."""
    from quickstart.sample import build_ctf_files, convnet_script_path

    train, test = build_ctf_files(settings.data_dir)
    script = Path(convnet_script_path())
    if not script.is_file():
        raise StepFailed(f"{script} is missing; it is the job's training script")
    print(f"Sample files ready: {Path(train).name}, {Path(test).name}, {script.name}")
    return [Path(train), Path(test), script]


def upload_sample_files(service, settings, paths):
    """Upload the training data and script, with a progress bar for the large files.

    A file the share already holds with the same size and MD5 is left alone, so a second run
    uploads only what changed. The MD5 goes into the file's content settings only after its
    upload completed, so a broken-off upload is never mistaken for a good copy."""
    for path in paths:
        size, md5 = path.stat().st_size, file_md5(path)
        if share_copy_matches(service, settings, path.name, size, md5):
            print(f"Unchanged on the share, not uploaded: {path.name} ({size:,} bytes, same MD5)")
            continue
        with tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=path.name,
            leave=False,
            disable=None if size > 1 << 20 else True,
        ) as bar:

            def progress(current, total, bar=bar):
                bar.update(current - bar.n)

            service.create_file_from_path(
                settings.share, settings.directory, path.name, str(path), progress_callback=progress
            )
        service.set_file_properties(
            settings.share,
            settings.directory,
            path.name,
            ContentSettings(
                content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                content_md5=md5,
            ),
        )
        print(f"Uploaded {path.name} ({size:,} bytes)")


def file_md5(path):
    """The base64 MD5 of a file, as Azure Files keeps it in a file's Content-MD5."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def share_copy_matches(service, settings, name, size, md5):
    """Whether the share holds this file already: same size and the MD5 stored after its upload."""
    try:
        existing = service.get_file_properties(settings.share, settings.directory, name).properties
    except AzureMissingResourceHttpError:
        return False
    return existing.content_length == size and existing.content_settings.content_md5 == md5


# 4. The workspace ---------------------------------------------------------------------------------


def create_workspace(batchai_client, settings):
    """Create (or reuse) the Batch AI workspace, the top-level resource for clusters and experiments."""
    batchai_client.workspaces.create(
        settings.resource_group, settings.workspace, settings.location
    ).result()
    print(f"Workspace {settings.workspace} ready")


# 5. The GPU cluster -------------------------------------------------------------------------------


def create_cluster(batchai_client, settings, service):
    """Create the cluster (or reuse the one that exists) with the file share mounted on its nodes."""
    try:
        cluster = batchai_client.clusters.get(
            settings.resource_group, settings.workspace, settings.cluster
        )
        print(f"Cluster {settings.cluster} exists; reusing it")
        return cluster
    except CloudError as error:
        if error.status_code != 404:
            raise
    parameters = cluster_parameters(settings, service)
    batchai_client.clusters.create(
        settings.resource_group, settings.workspace, settings.cluster, parameters
    ).result()
    print(f"Cluster {settings.cluster} created: {settings.node_count} x {settings.vm_size}")
    return batchai_client.clusters.get(
        settings.resource_group, settings.workspace, settings.cluster
    )


def cluster_parameters(settings, service):
    """The cluster exactly as the article builds it: VM size, node count, share mount, admin user."""
    return models.ClusterCreateParameters(
        vm_size=settings.vm_size,
        scale_settings=models.ScaleSettings(
            manual=models.ManualScaleSettings(target_node_count=settings.node_count)
        ),
        node_setup=models.NodeSetup(
            mount_volumes=models.MountVolumes(
                azure_file_shares=[
                    models.AzureFileShareReference(
                        account_name=settings.storage_account,
                        credentials=models.AzureStorageCredentialsInfo(
                            account_key=settings.storage_key
                        ),
                        azure_file_url=f"https://{service.primary_endpoint}/{settings.share}",
                        relative_mount_path=RELATIVE_MOUNT_POINT,
                    )
                ]
            )
        ),
        user_account_settings=models.UserAccountSettings(
            admin_user_name=settings.admin_user_name,
            admin_user_password=settings.admin_user_password or None,
            admin_user_ssh_public_key=settings.admin_ssh_public_key or None,
        ),
    )


def wait_for_idle_node(batchai_client, settings, sleep=time.sleep):
    """Poll the cluster, printing its status line, until a node is idle; stop on allocation errors."""
    while True:
        cluster = batchai_client.clusters.get(
            settings.resource_group, settings.workspace, settings.cluster
        )
        print(cluster_status_line(cluster))
        if cluster.errors:
            print_errors("Cluster error", cluster.errors)
            raise StepFailed(
                f"cluster {settings.cluster} could not allocate its nodes; remove it with "
                "`python -m quickstart teardown` and try again"
            )
        if cluster.node_state_counts and cluster.node_state_counts.idle_node_count:
            return cluster
        sleep(settings.poll_interval)


def cluster_status_line(cluster):
    """The article's status line for a cluster."""
    manual = cluster.scale_settings.manual if cluster.scale_settings else None
    counts = cluster.node_state_counts or models.NodeStateCounts()
    return (
        "Cluster state: {} Target: {}; Allocated: {}; Idle: {}; Unusable: {}; Running: {}; "
        "Preparing: {}; Leaving: {}".format(
            plain(cluster.allocation_state),
            manual.target_node_count if manual else "n/a",
            cluster.current_node_count,
            counts.idle_node_count,
            counts.unusable_node_count,
            counts.running_node_count,
            counts.preparing_node_count,
            counts.leaving_node_count,
        )
    )


# 6. The experiment --------------------------------------------------------------------------------


def create_experiment(batchai_client, settings):
    """Create (or reuse) the experiment, the container for related jobs."""
    batchai_client.experiments.create(
        settings.resource_group, settings.workspace, settings.experiment
    ).result()
    print(f"Experiment {settings.experiment} ready")


# 7. The training job ------------------------------------------------------------------------------


def choose_job_name(settings, now=None):
    """The pinned job name, or a timestamped one as the Batch AI notebooks made."""
    return settings.job or (now or datetime.now(UTC)).strftime("cntk_%m_%d_%Y_%H%M%S")


def create_job(batchai_client, settings, cluster, job_name):
    """Submit the CNTK job to the cluster. A pinned name whose earlier job has finished replaces
    that job (said on screen; its files stay on the share); a timestamped name already taken (two
    runs in one second) gets a _2, _3, ... suffix."""
    if settings.job:
        replace_finished_job(batchai_client, settings, job_name)
    parameters = job_parameters(settings, cluster)
    for name in [job_name] + [f"{job_name}_{n}" for n in range(2, 10)]:
        try:
            batchai_client.jobs.create(
                settings.resource_group, settings.workspace, settings.experiment, name, parameters
            ).result()
            print(f"Job {name} submitted")
            return name
        except CloudError as error:
            if settings.job or error.status_code != 409:
                raise
    raise StepFailed(
        f"job names {job_name} to {job_name}_9 are all taken; pin a job name in the settings"
    )


def replace_finished_job(batchai_client, settings, job_name):
    """Make room for a pinned job name. Only a finished job gets here: `run` follows an unfinished
    one instead of submitting (see find_unfinished_job), so no training is ever cut short."""
    try:
        earlier = batchai_client.jobs.get(
            settings.resource_group, settings.workspace, settings.experiment, job_name
        )
        if plain(earlier.execution_state) not in FINISHED:
            raise StepFailed(
                f"job {job_name} from an earlier run is {plain(earlier.execution_state)}; follow it with `python -m quickstart status "
                "--follow` or remove it with `python -m quickstart teardown`"
            )
        batchai_client.jobs.delete(
            settings.resource_group, settings.workspace, settings.experiment, job_name
        ).result()
    except CloudError as error:
        if error.status_code != 404:
            raise
        return
    print(
        f"Replaced job {job_name} from an earlier run ({plain(earlier.execution_state)}; its files stay on the share): the job name is pinned "
        "in the settings"
    )


def job_parameters(settings, cluster):
    """The job exactly as the article builds it, plus the extra arguments the settings ask for."""
    args = "$AZ_BATCHAI_INPUT_SAMPLE $AZ_BATCHAI_OUTPUT_MODEL"
    if settings.extra_args:
        args += " " + settings.extra_args
    if settings.epochs:
        args += f" --max-epochs {settings.epochs}"
    return models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster.id),
        node_count=1,
        std_out_err_path_prefix=f"$AZ_BATCHAI_MOUNT_ROOT/{RELATIVE_MOUNT_POINT}",
        input_directories=[
            models.InputDirectory(
                id="SAMPLE",
                path=f"$AZ_BATCHAI_MOUNT_ROOT/{RELATIVE_MOUNT_POINT}/{settings.directory}",
            )
        ],
        output_directories=[
            models.OutputDirectory(
                id="MODEL",
                path_prefix=f"$AZ_BATCHAI_MOUNT_ROOT/{RELATIVE_MOUNT_POINT}",
                path_suffix="Models",
            )
        ],
        container_settings=models.ContainerSettings(
            image_source_registry=models.ImageSourceRegistry(image=settings.container_image)
        ),
        cntk_settings=models.CNTKsettings(
            python_script_file_path=f"$AZ_BATCHAI_INPUT_SAMPLE/{SAMPLE_SCRIPT}",
            command_line_args=args,
        ),
    )


# 8. Monitoring the job ----------------------------------------------------------------------------


def monitor_job(clients, settings, job_name, sleep=time.sleep):
    """Follow the job to its end: state changes with times, and its stderr.txt streamed live."""
    tail = OutputTail(clients, settings, job_name, STREAMED_FILE)
    state = None
    while True:
        job = clients.batchai.jobs.get(
            settings.resource_group, settings.workspace, settings.experiment, job_name
        )
        finished = plain(job.execution_state) in FINISHED
        if finished:
            tail.pump(until_end=True)  # the rest of the output comes before the final state
        if plain(job.execution_state) != state:
            state = plain(job.execution_state)
            tail.end_line()
            print(f"{datetime.now():%H:%M:%S} Job state: {state}", flush=True)
        if finished:
            tail.end_line()
            print_job_result(job)
            return job
        if state != "queued":
            tail.pump()
        sleep(settings.poll_interval)


class OutputTail:
    """Streams one file of the job's stdouterr directory, as `az batchai job file stream` did:
    list the directory once for the file's download URL, then read new bytes with `Range: bytes=N-`."""

    def __init__(self, clients, settings, job_name, file_name):
        self.clients, self.settings, self.job_name, self.file_name = (
            clients,
            settings,
            job_name,
            file_name,
        )
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


# 9. The job's output files ------------------------------------------------------------------------


def list_output_files(batchai_client, settings, job_name):
    """Print the job's stdout/stderr files and model files with their download URLs; return them
    by output directory. The URLs' SAS signatures are secrets, so they print as sig=***."""
    listing = {}
    for directory_id in ("stdouterr", "MODEL"):
        listing[directory_id] = [
            f
            for f in list_files(batchai_client, settings, job_name, directory_id)
            if f.download_url
        ]
        for f in listing[directory_id]:
            print(f"file: {f.name}, download url: {hide_signature(f.download_url)}")
    return listing


def list_files(batchai_client, settings, job_name, directory_id):
    return list(
        batchai_client.jobs.list_output_files(
            settings.resource_group,
            settings.workspace,
            settings.experiment,
            job_name,
            models.JobsListOutputFilesOptions(outputdirectoryid=directory_id),
        )
    )


def hide_signature(url):
    return re.sub(r"([?&]sig=)[^&]*", r"\1***", url)


# 10. Downloading the trained models ---------------------------------------------------------------


def download_output_files(http, settings, job_name, listing):
    """Download the model files into <download_dir>/<job name>/ and the job's stdout/stderr into
    its stdouterr/ folder; a partial download never replaces a file, and the downloads of an
    earlier job of the same (pinned) name are kept beside, never mixed in or overwritten."""
    target = Path(settings.download_dir) / job_name
    set_aside(target)
    for directory_id, files in listing.items():
        folder = target if directory_id == "MODEL" else target / directory_id
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            download(http, f.download_url, folder / f.name)
    print(
        "Downloaded {} model files to {} (the job's logs to {})".format(
            len(listing.get("MODEL", [])), target, target / "stdouterr"
        )
    )
    return target


def set_aside(folder):
    """Rename a folder that holds earlier downloads to the first free <name>.earlier[-N]."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    candidates = (
        folder.with_name("{}.earlier{}".format(folder.name, f"-{n}" if n > 1 else ""))
        for n in range(1, 1000)
    )
    aside = next(c for c in candidates if not c.exists())
    folder.rename(aside)
    print(f"Kept the earlier downloads of {folder.name} in {aside}")


def download(http, url, path):
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
    """Print the last "Final Results" line of the job's output as its test error; return the percent."""
    results = re.findall(FINAL_RESULTS, output, re.M)
    if not results:
        print(
            f"Final test error: not reported (no 'Final Results' line in the job's {STREAMED_FILE})"
        )
        return None
    percent, samples = results[-1]
    print(f"Final test error: {percent}% on {int(samples):,} test images")
    return float(percent)


# The whole tutorial -------------------------------------------------------------------------------


def run(settings, sleep=time.sleep, clock=None):
    """Every step in the article's order, then the test error and the wall time of each step.
    A job an earlier run left unfinished is followed to its end rather than a second one started.
    Returns 0 when the job succeeds, else its exit code (130 when Ctrl-C stops the watching)."""
    clock = clock or StepClock()
    with clock.step("sign-in"):
        clients = create_clients(settings)
        earlier = find_unfinished_job(clients.batchai, settings)
    if earlier is None:
        job_name = set_up_and_submit(clients, settings, clock, sleep)
    else:
        job_name = earlier.name
        print(
            f"Job {job_name} from an earlier run is still {plain(earlier.execution_state)}: following it instead of submitting another; "
            "its output so far comes first"
        )
    try:
        with clock.step("training"):
            job = monitor_job(clients, settings, job_name, sleep)
    except KeyboardInterrupt:
        print(
            f"\nStopped watching. The job {job_name} keeps running in the cloud: `python -m quickstart run` (or "
            "`status --follow`) reattaches to it, `python -m quickstart status` shows it, "
            "`python -m quickstart teardown` removes everything."
        )
        return 130
    with clock.step("output files"):
        listing = list_output_files(clients.batchai, settings, job_name)
    with clock.step("download"):
        job_folder = download_output_files(clients.http, settings, job_name, listing)
    report_test_error(job_folder)
    print(clock.summary())
    return job_exit_status(job)


def set_up_and_submit(clients, settings, clock, sleep=time.sleep):
    """Steps 2 to 7: everything from the resource group to the submitted job; returns its name."""
    with clock.step("resource group"):
        create_resource_group(clients.resources, settings)
    with clock.step("share"):
        service = create_file_share(settings, clients.http)
        create_sample_directory(service, settings)
    with clock.step("sample"):
        sample_files = prepare_sample_files(settings)
    with clock.step("upload"):
        upload_sample_files(service, settings, sample_files)
    with clock.step("workspace"):
        create_workspace(clients.batchai, settings)
    with clock.step("cluster"):
        create_cluster(clients.batchai, settings, service)
        cluster = wait_for_idle_node(clients.batchai, settings, sleep)
    with clock.step("experiment and job"):
        create_experiment(clients.batchai, settings)
        return create_job(clients.batchai, settings, cluster, choose_job_name(settings))


def find_unfinished_job(batchai_client, settings):
    """The latest job (or the pinned one) when it has not finished yet, else None."""
    job = latest_job(batchai_client, settings)
    return job if job is not None and plain(job.execution_state) not in FINISHED else None


def job_exit_status(job):
    """The process exit status for a finished job: 0, or its exit code (1 when that is not 1-255)."""
    if plain(job.execution_state) == "succeeded":
        return 0
    code = job.execution_info.exit_code if job.execution_info else None
    return code if isinstance(code, int) and 0 < code < 256 else 1


def teardown(settings, delete_share=None):
    """Delete the jobs, the experiment, the cluster, the workspace and the resource group, and the
    file share (by default on the local cloud, where `run` made it; on Azure only when asked),
    saying what was removed, tolerating what is already gone, and saying when nothing was there."""
    clients = create_clients(settings)
    rg, ws = settings.resource_group, settings.workspace
    ops = clients.batchai
    outcomes = [
        remove("job " + name, ops.jobs.delete, rg, ws, settings.experiment, name)
        for name in job_names(ops, settings)
    ]
    outcomes += [
        remove(
            "experiment " + settings.experiment, ops.experiments.delete, rg, ws, settings.experiment
        ),
        remove("cluster " + settings.cluster, ops.clusters.delete, rg, ws, settings.cluster),
        remove("workspace " + ws, ops.workspaces.delete, rg, ws),
        remove("resource group " + rg, clients.resources.resource_groups.delete, rg),
    ]
    if share_goes_too(settings, delete_share):
        service = connect_file_service(settings, clients.http)
        outcomes.append(
            (
                "file share " + settings.share,
                service.delete_share(settings.share, fail_not_exist=False),
            )
        )
        if outcomes[-1][1]:
            print(f"Removed file share {settings.share} (the sample and every job's files on it)")
    else:
        print(f"Kept file share {settings.share} (`teardown --delete-share` removes it)")
    gone = [what for what, removed in outcomes if not removed]
    if len(gone) == len(outcomes):
        print("Nothing to remove: {} did not exist".format(", ".join(gone)))
    elif gone:
        print("Already gone: " + ", ".join(gone))
    return 0


def share_goes_too(settings, delete_share):
    """The command line's choice, else the setting's, else: yes on the local cloud, no on Azure."""
    for choice in (delete_share, settings.delete_share):
        if choice is not None:
            return choice
    return settings.is_local


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


def remove(what, delete, *args):
    """Delete one resource and wait for it; a 404 means it is already gone. Returns (what, removed)."""
    try:
        delete(*args).result()
    except CloudError as error:
        if error.status_code != 404:
            raise
        return what, False
    print("Removed " + what)
    return what, True


def status(settings, follow=False, sleep=time.sleep):
    """Show what exists: the cluster's status line, the latest job's state and its output files;
    for a finished job, its test error; for an unfinished one, its output so far. With follow, watch an unfinished job to its end
    first (as `run` does) and return its exit status."""
    clients = create_clients(settings)
    rg, ws = settings.resource_group, settings.workspace
    try:
        print(cluster_status_line(clients.batchai.clusters.get(rg, ws, settings.cluster)))
    except CloudError as error:
        if error.status_code != 404:
            raise
        print(f"Cluster {settings.cluster}: not found")
    job = latest_job(clients.batchai, settings)
    if job is None:
        print(f"Job: none in experiment {settings.experiment}")
        return 0
    print(f"Job {job.name}: Job state: {plain(job.execution_state)}")
    if follow and plain(job.execution_state) not in FINISHED:
        job = monitor_job(clients, settings, job.name, sleep)
        print_test_error(OutputTail(clients, settings, job.name, STREAMED_FILE).read_all())
    elif plain(job.execution_state) in FINISHED:
        print_job_result(job)
        print_test_error(OutputTail(clients, settings, job.name, STREAMED_FILE).read_all())
    else:
        print_output_so_far(clients, settings, job.name)
        print(
            f"The job is still {plain(job.execution_state)}: `python -m quickstart status --follow` streams it to its end, "
            "`python -m quickstart run` does that and downloads its models"
        )
    list_output_files(clients.batchai, settings, job.name)
    return job_exit_status(job) if follow else 0


def print_output_so_far(clients, settings, job_name, last_lines=OUTPUT_SO_FAR_LINES):
    """The last lines an unfinished job has written to its stderr.txt, indented under a heading."""
    lines = OutputTail(clients, settings, job_name, STREAMED_FILE).read_all().splitlines()
    if not lines:
        print("Output so far: none yet")
        return
    shown = lines[-last_lines:]
    print(
        "Output so far ({}{}):".format(
            f"last {len(shown)} of {len(lines)} lines of " if len(shown) < len(lines) else "",
            STREAMED_FILE,
        )
    )
    for line in shown:
        print("  " + line)


def latest_job(batchai_client, settings):
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


def print_errors(title, errors):
    for error in errors:
        print(f"{title}: {error.code}: {error.message}")
        for detail in error.details or []:
            print(f"  {detail.name}: {detail.value}")


def plain(value):
    """An SDK enum or string as the plain word the service sent."""
    return getattr(value, "value", value)
