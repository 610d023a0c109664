"""The article's last section, "Clean up resources": delete what `run` created.

Deletes the jobs, the experiment, the cluster, the workspace and the resource group, and the
file share (by default on the local cloud, where `run` made it; on Azure only when asked),
saying what was removed, tolerating what is already gone, and saying when nothing was there.
"""

from msrestazure.azure_exceptions import CloudError

from quickstart.jobs import job_names
from quickstart.steps import connect_file_service, create_clients


def teardown(settings, delete_share=None):
    clients = create_clients(settings)
    rg, ws, experiment = settings.resource_group, settings.workspace, settings.experiment
    ops = clients.batchai
    outcomes = [
        remove(f"job {name}", ops.jobs.delete, rg, ws, experiment, name)
        for name in job_names(ops, settings)
    ]
    outcomes += [
        remove(f"experiment {experiment}", ops.experiments.delete, rg, ws, experiment),
        remove(f"cluster {settings.cluster}", ops.clusters.delete, rg, ws, settings.cluster),
        remove(f"workspace {ws}", ops.workspaces.delete, rg, ws),
        remove(f"resource group {rg}", clients.resources.resource_groups.delete, rg),
    ]
    if share_goes_too(settings, delete_share):
        service = connect_file_service(settings, clients.http)
        removed = service.delete_share(settings.share, fail_not_exist=False)
        outcomes.append((f"file share {settings.share}", removed))
        if removed:
            print(f"Removed file share {settings.share} (the sample and every job's files on it)")
    else:
        print(f"Kept file share {settings.share} (`teardown --delete-share` removes it)")
    gone = [what for what, removed in outcomes if not removed]
    if len(gone) == len(outcomes):
        print(f"Nothing to remove: {', '.join(gone)} did not exist")
    elif gone:
        print("Already gone: " + ", ".join(gone))
    return 0


def share_goes_too(settings, delete_share):
    """The command line's choice, else the setting's, else: yes on the local cloud, no on Azure."""
    for choice in (delete_share, settings.delete_share):
        if choice is not None:
            return choice
    return settings.is_local


def remove(what, delete, *args):
    """Delete one resource and wait for it; a 404 means it is already gone. Returns (what,
    removed)."""
    try:
        delete(*args).result()
    except CloudError as error:
        if error.status_code != 404:
            raise
        return what, False
    print("Removed " + what)
    return what, True
