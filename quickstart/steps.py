"""The Azure Batch AI quickstart "Run a CNTK training job using the Azure Python SDK" (2018).

Read top to bottom, this module is the article: one small function per documented step, in the
article's order, each taking what it needs and returning what the next step needs, and `run`
calling them in order. What the article does not have (reuse checks, streaming, downloads,
timing) lives in modules named for what it does. The code does not know whether it talks to
Azure or to the local cloud: the only difference is the `Cloud` object, the storage connection
and the CA certificate to trust.
"""

import time
from collections import namedtuple
from datetime import datetime
from pathlib import Path

import azure.mgmt.batchai as batchai
import azure.mgmt.batchai.models as models
from azure.common.credentials import ServicePrincipalCredentials
from azure.mgmt.resource import ResourceManagementClient
from azure.storage.file import FileService
from msrestazure import azure_cloud
from msrestazure.azure_exceptions import CloudError

from quickstart.downloads import download, hide_signature, report_test_error, set_aside
from quickstart.errors import StepFailed
from quickstart.http_sessions import reconnecting_session
from quickstart.jobs import (
    choose_job_name,
    is_finished,
    job_exit_status,
    list_files,
    plain,
    print_errors,
    print_job_result,
    replace_finished_job,
    unfinished_job_to_follow,
)
from quickstart.portal_link import announce_portal
from quickstart.retries import arm_retries, signing_in
from quickstart.streaming import OutputTail
from quickstart.timing import timed
from quickstart.uploads import upload_if_changed

RELATIVE_MOUNT_POINT = "azurefileshare"
SAMPLE_SCRIPT = "ConvNet_MNIST.py"  # uploaded next to the data; the job runs it from there
NAMED_CLOUDS = {
    "AzureCloud": "AZURE_PUBLIC_CLOUD",
    "AzureChinaCloud": "AZURE_CHINA_CLOUD",
    "AzureUSGovernment": "AZURE_US_GOV_CLOUD",
    "AzureGermanCloud": "AZURE_GERMAN_CLOUD",
}

Clients = namedtuple("Clients", "batchai resources http")


def run(settings, sleep=time.sleep):
    """The article, step by step. A job an earlier run left unfinished is followed to its end
    instead of submitting another. Returns 0 when the job succeeds, else its exit code."""
    clients = create_clients(settings)  # 1
    job_name = unfinished_job_to_follow(clients.batchai, settings)
    if job_name is None:
        create_resource_group(clients.resources, settings)  # 2
        share = create_file_share(settings, clients.http)  # 3
        create_sample_directory(share, settings)
        upload_sample_files(share, settings, prepare_sample_files(settings))
        create_workspace(clients.batchai, settings)  # 4
        create_cluster(clients.batchai, settings, share)  # 5
        cluster = wait_for_idle_node(clients.batchai, settings, sleep)
        announce_portal(settings)  # "watch it at ..." (local cloud's portal)
        create_experiment(clients.batchai, settings)  # 6
        job_name = create_job(clients.batchai, settings, cluster, choose_job_name(settings))  # 7
    job = monitor_job(clients, settings, job_name, sleep)  # 8
    listing = list_output_files(clients.batchai, settings, job_name)  # 9
    report_test_error(download_output_files(clients.http, settings, job_name, listing))  # 10
    return job_exit_status(job)


# 1. Credentials and the clients -------------------------------------------------------------------


@timed("sign-in")
def create_clients(settings):
    """Sign in with the service principal; create the Batch AI and resource management clients."""
    cloud = cloud_environment(settings)
    verify = settings.ca_cert or True
    credentials = signing_in(
        lambda: ServicePrincipalCredentials(
            client_id=settings.client_id,
            secret=settings.client_secret,
            tenant=settings.tenant_id,
            cloud_environment=cloud,
            verify=verify,
        )
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
    for client in (batchai_client, resource_client):
        arm_retries(client)
    http.trust_env = not settings.ca_cert  # else REQUESTS_CA_BUNDLE would override `verify`
    print(f"Signed in as {settings.client_id} to {cloud.name}")
    return Clients(batchai_client, resource_client, http)


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


@timed("resource group")
def create_resource_group(resource_client, settings):
    """Create (or reuse) the resource group that holds the workspace and everything in it."""
    resource_client.resource_groups.create_or_update(
        settings.resource_group, {"location": settings.location}
    )
    print(f"Resource group {settings.resource_group} ready in {settings.location}")


# 3. The file share, its directory, the sample files and the upload --------------------------------


@timed("share")
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


@timed("share")
def create_sample_directory(service, settings):
    """Create (or reuse) the share's directory for the sample files."""
    service.create_directory(settings.share, settings.directory, fail_on_exist=False)
    print(f"Directory {settings.share}/{settings.directory} ready")


@timed("sample")
def prepare_sample_files(settings):
    """The MNIST training and test files in CNTK text format, the training script and the
    PyTorch port it hands over to, as {name in the sample directory: local path}."""
    from quickstart.sample import job_files

    files = job_files(settings.data_dir)
    script = Path(files[SAMPLE_SCRIPT])
    if not script.is_file():
        raise StepFailed(f"{script} is missing; it is the job's training script")
    folders = sorted({name.rpartition("/")[0] + "/" for name in files if "/" in name})
    top = [name for name in files if "/" not in name]
    print(f"Sample files ready: {', '.join(top + folders)}")
    return files


@timed("upload")
def upload_sample_files(service, settings, files):
    """Upload the sample files into the share's directory, with a progress bar for large ones;
    files the share holds already are skipped (quickstart/uploads.py)."""
    for folder in sorted({name.rpartition("/")[0] for name in files if "/" in name}):
        service.create_directory(
            settings.share, f"{settings.directory}/{folder}", fail_on_exist=False
        )
    for name, path in files.items():
        folder, _, file_name = name.rpartition("/")
        directory = f"{settings.directory}/{folder}" if folder else settings.directory
        upload_if_changed(service, settings.share, directory, file_name, Path(path), name)


# 4. The workspace ---------------------------------------------------------------------------------


@timed("workspace")
def create_workspace(batchai_client, settings):
    """Create (or reuse) the Batch AI workspace, the top-level resource for clusters and
    experiments."""
    batchai_client.workspaces.create(
        settings.resource_group, settings.workspace, settings.location
    ).result()
    print(f"Workspace {settings.workspace} ready")


# 5. The GPU cluster -------------------------------------------------------------------------------


@timed("cluster")
def create_cluster(batchai_client, settings, service):
    """Create the cluster (or reuse the one that exists) with the file share mounted on its
    nodes."""
    where = (settings.resource_group, settings.workspace, settings.cluster)
    try:
        cluster = batchai_client.clusters.get(*where)
        print(f"Cluster {settings.cluster} exists; reusing it")
        return cluster
    except CloudError as error:
        if error.status_code != 404:
            raise
    batchai_client.clusters.create(*where, cluster_parameters(settings, service)).result()
    print(f"Cluster {settings.cluster} created: {settings.node_count} x {settings.vm_size}")
    return batchai_client.clusters.get(*where)


def cluster_parameters(settings, service):
    """The cluster exactly as the article builds it: VM size, node count, share mount, admin."""
    share = models.AzureFileShareReference(
        account_name=settings.storage_account,
        credentials=models.AzureStorageCredentialsInfo(account_key=settings.storage_key),
        azure_file_url=f"https://{service.primary_endpoint}/{settings.share}",
        relative_mount_path=RELATIVE_MOUNT_POINT,
    )
    return models.ClusterCreateParameters(
        vm_size=settings.vm_size,
        scale_settings=models.ScaleSettings(
            manual=models.ManualScaleSettings(target_node_count=settings.node_count)
        ),
        node_setup=models.NodeSetup(mount_volumes=models.MountVolumes(azure_file_shares=[share])),
        user_account_settings=models.UserAccountSettings(
            admin_user_name=settings.admin_user_name,
            admin_user_password=settings.admin_user_password or None,
            admin_user_ssh_public_key=settings.admin_ssh_public_key or None,
        ),
    )


@timed("cluster")
def wait_for_idle_node(batchai_client, settings, sleep=time.sleep):
    """Poll the cluster, printing its status line, until a node is idle; stop on allocation
    errors."""
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
        f"Cluster state: {plain(cluster.allocation_state)} "
        f"Target: {manual.target_node_count if manual else 'n/a'}; "
        f"Allocated: {cluster.current_node_count}; Idle: {counts.idle_node_count}; "
        f"Unusable: {counts.unusable_node_count}; Running: {counts.running_node_count}; "
        f"Preparing: {counts.preparing_node_count}; Leaving: {counts.leaving_node_count}"
    )


# 6. The experiment --------------------------------------------------------------------------------


@timed("experiment and job")
def create_experiment(batchai_client, settings):
    """Create (or reuse) the experiment, the container for related jobs."""
    batchai_client.experiments.create(
        settings.resource_group, settings.workspace, settings.experiment
    ).result()
    print(f"Experiment {settings.experiment} ready")


# 7. The training job ------------------------------------------------------------------------------


@timed("experiment and job")
def create_job(batchai_client, settings, cluster, job_name):
    """Submit the CNTK job to the cluster. A pinned name whose earlier job has finished replaces
    that job (said on screen; its files stay on the share); a timestamped name already taken
    (two runs in one second) gets a _2, _3, ... suffix."""
    if settings.job:
        replace_finished_job(batchai_client, settings, job_name)
    where = (settings.resource_group, settings.workspace, settings.experiment)
    for name in [job_name] + [f"{job_name}_{n}" for n in range(2, 10)]:
        try:
            batchai_client.jobs.create(*where, name, job_parameters(settings, cluster)).result()
            print(f"Job {name} submitted")
            return name
        except CloudError as error:
            if settings.job or error.status_code != 409:
                raise
    raise StepFailed(
        f"job names {job_name} to {job_name}_9 are all taken; pin a job name in the settings"
    )


def job_parameters(settings, cluster):
    """The job exactly as the article builds it, plus the extra arguments the settings ask for."""
    args = ["$AZ_BATCHAI_INPUT_SAMPLE $AZ_BATCHAI_OUTPUT_MODEL", settings.extra_args]
    args += [f"--max-epochs {settings.epochs}"] if settings.epochs else []
    mount = f"$AZ_BATCHAI_MOUNT_ROOT/{RELATIVE_MOUNT_POINT}"
    return models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster.id),
        node_count=settings.node_count,  # the article's 1; more train data-parallel under MPI
        std_out_err_path_prefix=mount,
        input_directories=[
            models.InputDirectory(id="SAMPLE", path=f"{mount}/{settings.directory}")
        ],
        output_directories=[
            models.OutputDirectory(id="MODEL", path_prefix=mount, path_suffix="Models")
        ],
        container_settings=models.ContainerSettings(
            image_source_registry=models.ImageSourceRegistry(image=settings.container_image)
        ),
        cntk_settings=models.CNTKsettings(
            python_script_file_path=f"$AZ_BATCHAI_INPUT_SAMPLE/{SAMPLE_SCRIPT}",
            command_line_args=" ".join(arg for arg in args if arg),
        ),
    )


# 8. Monitoring the job ----------------------------------------------------------------------------


@timed("training")
def monitor_job(clients, settings, job_name, sleep=time.sleep):
    """Follow the job to its end: state changes with times, and its stderr.txt streamed live."""
    tail = OutputTail(clients, settings, job_name)
    where = (settings.resource_group, settings.workspace, settings.experiment, job_name)
    state = None
    while True:
        job = clients.batchai.jobs.get(*where)
        if is_finished(job):
            tail.pump(until_end=True)  # the rest of the output comes before the final state
        if plain(job.execution_state) != state:
            state = plain(job.execution_state)
            tail.end_line()
            print(f"{datetime.now():%H:%M:%S} Job state: {state}", flush=True)
        if is_finished(job):
            tail.end_line()
            print_job_result(job)
            return job
        if state != "queued":
            tail.pump()
        sleep(settings.poll_interval)


# 9. The job's output files ------------------------------------------------------------------------


@timed("output files")
def list_output_files(batchai_client, settings, job_name):
    """Print the job's stdout/stderr files and model files with their download URLs; return them
    by output directory. The URLs' SAS signatures are secrets, so they print as sig=***."""
    listing = {}
    for directory_id in ("stdouterr", "MODEL"):
        files = list_files(batchai_client, settings, job_name, directory_id)
        listing[directory_id] = [f for f in files if f.download_url]
        for f in listing[directory_id]:
            print(f"file: {f.name}, download url: {hide_signature(f.download_url)}")
    return listing


# 10. Downloading the trained models ---------------------------------------------------------------


@timed("download")
def download_output_files(http, settings, job_name, listing):
    """Download the model files into <download_dir>/<job name>/ and the job's stdout/stderr into
    its stdouterr/ folder (quickstart/downloads.py keeps earlier downloads aside)."""
    target = Path(settings.download_dir) / job_name
    set_aside(target)
    for directory_id, files in listing.items():
        folder = target if directory_id == "MODEL" else target / directory_id
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            download(http, f.download_url, folder / f.name)
    count = len(listing.get("MODEL", []))
    print(f"Downloaded {count} model files to {target} (the job's logs to {target / 'stdouterr'})")
    return target
