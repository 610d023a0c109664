"""Microsoft.BatchAI 2018-05-01: workspaces, experiments, clusters and jobs over ARM.

The REST surface only: it checks requests (schema.py), keeps records in the store, and
hands compute to scheduler.py (nodes, queue) and nodeagent.py (running a job). What the wire
must look like is in shared/reference/batchai.md §1-2, §8 and §10; the points that decide
whether the 2018 SDK works at all:

* creates answer 200 (workspace, experiment: synchronous, with the body) or 202 with an empty
  body (cluster, job) plus absolute ``Azure-AsyncOperation`` and ``Location`` URLs and
  ``Retry-After: 0`` (msrestazure sleeps Retry-After, or 30 s without it, before each poll);
* deletes and terminate take effect on the first request (the quickstart never waits on them)
  and answer 202 with the same headers; their operation is already finished;
* enum values are lowercase; secrets are never drawn (``credentials: {}``, no
  ``adminUserPassword``, ``secrets[].value`` absent);
* ``listOutputFiles`` is a POST whose parameters are all in the query string; paged lists carry
  a ``nextLink`` holding every query parameter (the SDK requests it verbatim).

What the local cloud does not emulate (file servers, usages, NFS mounts, Key Vault
references) is answered with a Batch AI error naming it, never a silent success.
"""

from __future__ import annotations

import os
import time
import uuid
from email.utils import formatdate
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from ..arm import LOCATIONS, ArmError, arm_json, check_tags, json_body, still_running
from ..crashpoints import crash_point
from . import nodeagent
from .scheduler import ACTIVE, Scheduler, node_counts
from .schema import (
    API_VERSION,
    CLUSTER_TYPE,
    EXPERIMENT_TYPE,
    JOB_TYPE,
    STDOUTERR,
    WORKSPACE_TYPE,
    bad,
    check_cluster,
    check_job,
    check_name,
    check_scale_settings,
    experiment_body,
    iso,
    job_error,
    max_nodes,
    workspace_body,
)

VERSIONS = (API_VERSION,)
SUB = "/subscriptions/{subscriptionId}"
RG = SUB + "/resourceGroups/{resourceGroupName}"
WS = RG + "/providers/Microsoft.BatchAI/workspaces/{workspaceName}"
CL = WS + "/clusters/{clusterName}"
EXP = WS + "/experiments/{experimentName}"
JOB = EXP + "/jobs/{jobName}"
OPS = SUB + "/providers/Microsoft.BatchAI/locations/{location}"
OPERATION_WAIT = 1.0  # seconds a status poll may wait for an operation still in progress

# GET /providers/Microsoft.BatchAI/operations: the operations this local cloud serves, named as
# the resource provider names them (resource type, then read, write, delete or an action).
SERVED_OPERATIONS = (
    ("workspaces", "Workspace", ("read", "write", "delete")),
    ("workspaces/clusters", "Cluster", ("read", "write", "delete")),
    ("workspaces/clusters/remoteLoginInformation", "Cluster", ("action",)),
    ("workspaces/experiments", "Experiment", ("read", "write", "delete")),
    ("workspaces/experiments/jobs", "Job", ("read", "write", "delete")),
    ("workspaces/experiments/jobs/terminate", "Job", ("action",)),
    ("workspaces/experiments/jobs/listoutputfiles", "Job", ("action",)),
    ("workspaces/experiments/jobs/remoteLoginInformation", "Job", ("action",)),
    ("locations/operationresults", "Operation result", ("read",)),
    ("locations/operationstatuses", "Operation status", ("read",)),
)
OPERATION_VERBS = {
    "read": "List or get",
    "write": "Create or update",
    "delete": "Delete",
    "action": "Perform",
}


def install(cloud) -> None:
    """Plug Batch AI into a starting local cloud (see server.py's extension API)."""
    surface = BatchAI(cloud)
    surface.install(cloud.arm)
    cloud.on_start(surface.start)
    cloud.on_stop(surface.scheduler.stop)
    cloud.on_resource_group_delete(surface.delete_resource_group)


class BatchAI:
    def __init__(self, cloud):
        self.cloud = cloud
        self.store = cloud.store
        self.scheduler = Scheduler(cloud)

    def start(self) -> None:
        self.scheduler.recover()
        self._finish_deletes()
        self.scheduler.start()

    def _mark_deleting(self, record):
        """Stop first, forget last: a record being deleted says so (provisioningState
        ``deleting``, as Batch AI showed it) until what runs under it has stopped; a server
        that dies midway finishes the delete at its next start."""
        with self.store.transaction():
            record = self.store.get_resource(record.id) or record
            if isinstance(record.body.get("properties"), dict):
                record.body["properties"]["provisioningState"] = "deleting"
            record.extra["deleting"] = True
            self.store.put_resource(record.id, record.type, record.name, record.body, record.extra)
        return record

    def _finish_deletes(self) -> None:
        teardown = {
            WORKSPACE_TYPE: self._tear_down_workspace,
            EXPERIMENT_TYPE: self._tear_down_experiment,
            CLUSTER_TYPE: self._tear_down_cluster,
        }
        for kind, tear_down in teardown.items():
            for record in self.store.list_resources(type=kind):
                if record.extra.get("deleting"):
                    tear_down(record)

    def install(self, router) -> None:
        add = lambda method, template, handler: router.add(method, template, handler, VERSIONS)  # noqa: E731
        add("GET", SUB + "/providers/Microsoft.BatchAI/workspaces", self.list_workspaces)
        add("GET", RG + "/providers/Microsoft.BatchAI/workspaces", self.list_workspaces)
        add("PUT", WS, self.create_workspace)
        add("GET", WS, self.get_workspace)
        add("PATCH", WS, self.update_workspace)
        add("DELETE", WS, self.delete_workspace)
        add("GET", WS + "/clusters", self.list_clusters)
        add("PUT", CL, self.create_cluster)
        add("GET", CL, self.get_cluster)
        add("PATCH", CL, self.update_cluster)
        add("DELETE", CL, self.delete_cluster)
        add("POST", CL + "/listRemoteLoginInformation", self.cluster_remote_login)
        add("GET", WS + "/experiments", self.list_experiments)
        add("PUT", EXP, self.create_experiment)
        add("GET", EXP, self.get_experiment)
        add("DELETE", EXP, self.delete_experiment)
        add("GET", EXP + "/jobs", self.list_jobs)
        add("PUT", JOB, self.create_job)
        add("GET", JOB, self.get_job)
        add("DELETE", JOB, self.delete_job)
        add("POST", JOB + "/terminate", self.terminate_job)
        add("POST", JOB + "/listOutputFiles", self.list_output_files)
        add("POST", JOB + "/listRemoteLoginInformation", self.job_remote_login)
        add("GET", "/providers/Microsoft.BatchAI/operations", self.list_operations)
        add("GET", OPS + "/operationresults/{operationId}", self.operation_result)
        add("GET", OPS + "/operationstatuses/{operationId}", self.operation_status)
        add("GET", OPS + "/usages", self.not_emulated("usages (quota) reporting"))
        for method in ("GET", "PUT", "DELETE"):
            add(
                method,
                WS + "/fileServers/{fileServerName}",
                self.not_emulated("Batch AI file servers (NFS)"),
            )
        add("GET", WS + "/fileServers", self.not_emulated("Batch AI file servers (NFS)"))

    # ------------------------------------------------------------------ helpers

    @property
    def sub(self) -> str:
        return self.cloud.credentials.subscription_id

    def _group(self, name: str):
        record = self.store.get_resource(f"/subscriptions/{self.sub}/resourceGroups/{name}")
        if record is None:
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found."
            )
        return record

    def _workspace_id(self, rg: str, ws: str) -> str:
        return (
            f"/subscriptions/{self.sub}/resourceGroups/{rg}"
            f"/providers/Microsoft.BatchAI/workspaces/{ws}"
        )

    def _get(self, arm_id: str, kind: str, code: str, message: str):
        record = self.store.get_resource(arm_id)
        if record is None or record.type != kind:
            raise ArmError(404, code, message)
        return record

    def _workspace(self, rg: str, ws: str):
        return self._get(
            self._workspace_id(rg, ws),
            WORKSPACE_TYPE,
            "WorkspaceNotFound",
            f"The specified workspace '{ws}' is not found in resource group '{rg}'.",
        )

    def _experiment(self, rg: str, ws: str, exp: str):
        self._workspace(rg, ws)
        return self._get(
            f"{self._workspace_id(rg, ws)}/experiments/{exp}",
            EXPERIMENT_TYPE,
            "ExperimentNotFound",
            f"The specified experiment '{exp}' is not found in workspace '{ws}'.",
        )

    def _cluster(self, rg: str, ws: str, cl: str):
        return self._get(
            f"{self._workspace_id(rg, ws)}/clusters/{cl}",
            CLUSTER_TYPE,
            "ClusterNotFound",
            f"The specified managed compute cluster '{cl}' is not found in workspace '{ws}'.",
        )

    def _job(self, rg: str, ws: str, exp: str, job: str):
        return self._get(
            f"{self._workspace_id(rg, ws)}/experiments/{exp}/jobs/{job}",
            JOB_TYPE,
            "JobNotFound",
            f"The specified job '{job}' is not found in experiment '{exp}'.",
        )

    def _accepted(self, request: Request, kind: str, resource_id: str, location: str) -> Response:
        """202 + the async-operation headers for an operation already done."""
        op = self.store.create_operation(kind, resource_id, status="Succeeded")
        base = (
            f"{self.cloud.base_url}/subscriptions/{self.sub}"
            f"/providers/Microsoft.BatchAI/locations/{location}"
        )
        version = f"api-version={API_VERSION}"
        return arm_json(
            202,
            None,
            {
                "Azure-AsyncOperation": f"{base}/operationresults/{op.id}?{version}",
                "Location": f"{base}/operationstatuses/{op.id}?{version}",
                "Retry-After": "0",
            },
        )

    def _location_of(self, rg: str, ws: str) -> str:
        record = self.store.get_resource(self._workspace_id(rg, ws))
        return record.body.get("location", "eastus") if record else "eastus"

    def _page(self, request: Request, items: list) -> Response:
        """A page of ``items`` per ``maxresults``, with a nextLink holding every query arg."""
        limit = _int_arg(request, "maxresults", 1000, 1, 1000)
        skip = _int_arg(request, "$skiptoken", 0, 0, None)
        body = {"value": items[skip : skip + limit]}
        if skip + limit < len(items):
            args = request.args.to_dict()
            args["$skiptoken"] = str(skip + limit)
            body["nextLink"] = f"{self.cloud.base_url}{request.path}?{urlencode(args)}"
        return arm_json(200, body)

    def not_emulated(self, what: str):
        def handler(request: Request, **params) -> Response:
            raise ArmError(
                400,
                "NotSupported",
                f"The local cloud does not emulate {what}. It serves Batch AI workspaces, "
                "experiments, clusters and jobs, with Azure Files shares as storage.",
            )

        return handler

    # ------------------------------------------------------------------ workspaces

    def list_workspaces(
        self, request: Request, subscriptionId: str, resourceGroupName: str | None = None
    ):
        if resourceGroupName is not None:
            self._group(resourceGroupName)
        records = self.store.list_resources(type=WORKSPACE_TYPE, resource_group=resourceGroupName)
        return self._page(request, [r.body for r in sorted(records, key=lambda r: r.name.lower())])

    def create_workspace(self, request: Request, subscriptionId, resourceGroupName, workspaceName):
        check_name("workspace", workspaceName)
        group = self._group(resourceGroupName)
        body = json_body(request)
        location = body.get("location")
        if not isinstance(location, str) or not location.strip():
            raise bad("'location' is required, for example \"eastus\".", code="LocationRequired")
        location = location.replace(" ", "").lower()
        if location not in LOCATIONS:
            raise bad(
                f"The location '{body['location']}' is not available for resource type "
                f"'Microsoft.BatchAI/workspaces'; use an Azure region such as eastus.",
                code="LocationNotAvailableForResourceType",
            )
        tags = check_tags(body.get("tags"))
        arm_id = self._workspace_id(group.name, workspaceName)
        with self.store.transaction():
            old = self.store.get_resource(arm_id)
            if old is not None and old.body["location"] != location:
                raise ArmError(
                    409,
                    "InvalidResourceLocation",
                    f"The workspace '{old.name}' already exists in location "
                    f"'{old.body['location']}'; a workspace cannot move to '{location}'.",
                )
            name = old.name if old else workspaceName
            record = workspace_body(
                self._workspace_id(group.name, name),
                name,
                location,
                tags,
                old.created if old else time.time(),
            )
            self.store.put_resource(arm_id, WORKSPACE_TYPE, name, record)
        return _resource(self.store.get_resource(arm_id))

    def get_workspace(self, request: Request, subscriptionId, resourceGroupName, workspaceName):
        return _resource(self._workspace(resourceGroupName, workspaceName))

    def update_workspace(self, request: Request, subscriptionId, resourceGroupName, workspaceName):
        body = json_body(request)
        with self.store.transaction():
            record = self._workspace(resourceGroupName, workspaceName)
            workspace = record.body
            tags = check_tags(body.get("tags"))
            workspace.pop("tags", None)
            if tags:
                workspace["tags"] = tags
            self.store.put_resource(record.id, record.type, record.name, workspace)
        return _resource(self.store.get_resource(record.id))

    def delete_workspace(self, request: Request, subscriptionId, resourceGroupName, workspaceName):
        record = self._workspace(resourceGroupName, workspaceName)
        location = record.body.get("location", "eastus")
        self._tear_down_workspace(record)
        return self._accepted(request, "workspaceDelete", record.id, location)

    def _tear_down_workspace(self, workspace) -> None:
        self._mark_deleting(workspace)
        jobs = self.store.list_resources(type=JOB_TYPE, parent_id=workspace.id)
        self.scheduler.stop_jobs(
            jobs, job_error("WorkspaceDeleted", "The job's workspace was deleted."), remove=True
        )
        clusters = self.store.list_resources(type=CLUSTER_TYPE, parent_id=workspace.id)
        for cluster in clusters:
            self.scheduler.stop_setup_tasks(self._mark_deleting(cluster))
        self.store.delete_resource_tree(workspace.id)
        for cluster in clusters:
            self.scheduler.forget_cluster_files(cluster)

    def delete_resource_group(self, subscription_id: str, group_name: str) -> None:
        """Before ARM drops a resource group's records: stop its jobs, free its nodes."""
        for workspace in self.store.list_resources(type=WORKSPACE_TYPE, resource_group=group_name):
            self._tear_down_workspace(workspace)

    # ------------------------------------------------------------------ experiments

    def list_experiments(self, request: Request, subscriptionId, resourceGroupName, workspaceName):
        workspace = self._workspace(resourceGroupName, workspaceName)
        records = self.store.list_resources(type=EXPERIMENT_TYPE, parent_id=workspace.id)
        return self._page(request, [r.body for r in sorted(records, key=lambda r: r.name.lower())])

    def create_experiment(
        self, request: Request, subscriptionId, resourceGroupName, workspaceName, experimentName
    ):
        check_name("experiment", experimentName)
        json_body(request, required=False)  # the SDK sends no body; anything sent must be JSON
        with self.store.transaction():
            workspace = self._workspace(resourceGroupName, workspaceName)
            arm_id = f"{workspace.body['id']}/experiments/{experimentName}"
            old = self.store.get_resource(arm_id)
            if old is not None:
                return _resource(old)
            record = experiment_body(arm_id, experimentName, time.time())
            self.store.put_resource(arm_id, EXPERIMENT_TYPE, experimentName, record)
        return _resource(self.store.get_resource(arm_id))

    def get_experiment(
        self, request: Request, subscriptionId, resourceGroupName, workspaceName, experimentName
    ):
        return _resource(self._experiment(resourceGroupName, workspaceName, experimentName))

    def delete_experiment(
        self, request: Request, subscriptionId, resourceGroupName, workspaceName, experimentName
    ):
        record = self._experiment(resourceGroupName, workspaceName, experimentName)
        self._tear_down_experiment(record)
        return self._accepted(
            request,
            "experimentDelete",
            record.id,
            self._location_of(resourceGroupName, workspaceName),
        )

    def _tear_down_experiment(self, experiment) -> None:
        self._mark_deleting(experiment)
        jobs = self.store.list_resources(type=JOB_TYPE, parent_id=experiment.id)
        self.scheduler.stop_jobs(
            jobs, job_error("ExperimentDeleted", "The job's experiment was deleted."), remove=True
        )
        self.store.delete_resource_tree(experiment.id)

    # ------------------------------------------------------------------ clusters

    def _render_cluster(self, record) -> dict:
        body = dict(record.body)
        props = dict(body["properties"])
        state = record.extra["compute"]
        props["allocationState"] = "resizing" if state["resize_since"] is not None else "steady"
        props["allocationStateTransitionTime"] = iso(state["allocation_since"])
        props["currentNodeCount"] = len(state["nodes"])
        props["nodeStateCounts"] = node_counts(state)
        if state["errors"]:
            props["errors"] = state["errors"]
        body["properties"] = props
        return body

    def list_clusters(self, request: Request, subscriptionId, resourceGroupName, workspaceName):
        workspace = self._workspace(resourceGroupName, workspaceName)
        records = self.store.list_resources(type=CLUSTER_TYPE, parent_id=workspace.id)
        return self._page(
            request,
            [self._render_cluster(r) for r in sorted(records, key=lambda r: r.name.lower())],
        )

    def create_cluster(
        self, request: Request, subscriptionId, resourceGroupName, workspaceName, clusterName
    ):
        check_name("cluster", clusterName)
        props, secrets = check_cluster(json_body(request))
        with self.store.transaction():
            workspace = self._workspace(resourceGroupName, workspaceName)
            arm_id = f"{workspace.body['id']}/clusters/{clusterName}"
            if self.store.get_resource(arm_id) is not None:
                raise ArmError(
                    409,
                    "ClusterAlreadyExists",
                    f"A cluster named '{clusterName}' already exists in workspace "
                    f"'{workspace.name}'. Resize it with clusters.update, or delete it first.",
                )
            now = time.time()
            props.update(
                creationTime=iso(now),
                provisioningState="succeeded",
                provisioningStateTransitionTime=iso(now),
            )
            task = (props.get("nodeSetup") or {}).get("setupTask")
            if task is not None:
                group = self._group(resourceGroupName)
                task["stdOutErrPathSuffix"] = (
                    f"{self.sub}/{group.name}/workspaces/{workspace.name}/clusters/"
                    f"{clusterName}/{uuid.uuid4()}"
                )
            body = {
                "id": arm_id,
                "name": clusterName,
                "type": CLUSTER_TYPE,
                "location": workspace.body.get("location"),
                "properties": props,
            }
            extra = {
                "secrets": secrets,
                "compute": Scheduler.new_cluster_state(props["scaleSettings"]),
            }
            self.store.put_resource(arm_id, CLUSTER_TYPE, clusterName, body, extra)
        self.scheduler.wake()
        return self._accepted(
            request, "clusterCreate", arm_id, workspace.body.get("location", "eastus")
        )

    def get_cluster(
        self, request: Request, subscriptionId, resourceGroupName, workspaceName, clusterName
    ):
        record = self._cluster(resourceGroupName, workspaceName, clusterName)
        return _resource(record, self._render_cluster(record))

    def update_cluster(
        self, request: Request, subscriptionId, resourceGroupName, workspaceName, clusterName
    ):
        body = json_body(request)
        props = body.get("properties")
        if not isinstance(props, dict) or "scaleSettings" not in props:
            raise bad(
                "A cluster update must give 'properties.scaleSettings' (the only setting that "
                "can change after creation)."
            )
        scale = check_scale_settings(props["scaleSettings"], "properties.scaleSettings")
        with self.store.transaction():
            record = self._cluster(resourceGroupName, workspaceName, clusterName)
            record.body["properties"]["scaleSettings"] = scale
            self.store.put_resource(record.id, record.type, record.name, record.body, record.extra)
        if "manual" in scale:
            self.scheduler.resize(record.id, scale["manual"]["targetNodeCount"])
        self.scheduler.wake()
        record = self.store.get_resource(record.id)
        return _resource(record, self._render_cluster(record))

    def delete_cluster(
        self, request: Request, subscriptionId, resourceGroupName, workspaceName, clusterName
    ):
        record = self._cluster(resourceGroupName, workspaceName, clusterName)
        self._tear_down_cluster(record)
        return self._accepted(
            request,
            "clusterDelete",
            record.id,
            record.body.get("location") or self._location_of(resourceGroupName, workspaceName),
        )

    def _tear_down_cluster(self, cluster) -> None:
        cluster = self._mark_deleting(cluster)  # the scheduler leaves a deleting cluster alone
        jobs = [
            j
            for j in self.store.list_resources(type=JOB_TYPE)
            if j.extra.get("cluster") == cluster.id
            and j.body["properties"]["executionState"] in ACTIVE
        ]
        self.scheduler.stop_setup_tasks(cluster)
        self.scheduler.stop_jobs(
            jobs, job_error("ClusterDeleted", f"The job's cluster '{cluster.name}' was deleted.")
        )
        crash_point("cluster-delete.stopped")
        self.store.delete_resource(cluster.id)
        self.scheduler.forget_cluster_files(cluster)

    def cluster_remote_login(
        self, request: Request, subscriptionId, resourceGroupName, workspaceName, clusterName
    ):
        record = self._cluster(resourceGroupName, workspaceName, clusterName)
        nodes = record.extra["compute"]["nodes"]
        return self._page(request, [_login(n["id"], n.get("address")) for n in nodes])

    # ------------------------------------------------------------------ jobs

    def list_jobs(
        self, request: Request, subscriptionId, resourceGroupName, workspaceName, experimentName
    ):
        experiment = self._experiment(resourceGroupName, workspaceName, experimentName)
        records = self.store.list_resources(type=JOB_TYPE, parent_id=experiment.id)
        return self._page(
            request, [self._render_job(r) for r in sorted(records, key=lambda r: r.name.lower())]
        )

    def _render_job(self, record) -> dict:
        """The job as stored, plus why it is still queued (Batch AI users' most common
        question) as a BatchAIError in ``executionInfo.errors``, the one place the 2018-05-01
        API has for it; the reason goes as soon as the job leaves the queue."""
        props = record.body["properties"]
        if props.get("executionState") != "queued":
            return record.body
        reason = self._queued_reason(record)
        if reason is None:
            return record.body
        body = dict(record.body)
        body["properties"] = {**props, "executionInfo": {"errors": [reason]}}
        return body

    def _queued_reason(self, record) -> dict | None:
        props = record.body["properties"]
        cluster = self.store.get_resource(record.extra.get("cluster", ""))
        wanted = props.get("nodeCount", 1)
        if cluster is None:
            return None  # the scheduler fails it on its next pass
        name = cluster.name
        scale = cluster.body["properties"]["scaleSettings"]
        most = max_nodes(scale)
        if wanted > most:
            message = (
                f"The job needs {wanted} node(s) and cluster '{name}' can have at most {most}; "
                "it stays queued until the cluster is resized (clusters.update) to at least "
                f"{wanted} node(s)."
            )
            return job_error("WaitingForClusterResize", message)
        counts = node_counts(cluster.extra["compute"])
        message = (
            f"The job waits for {wanted} idle node(s) of cluster '{name}': "
            f"{counts['idleNodeCount']} idle, {counts['preparingNodeCount']} preparing, "
            f"{counts['runningNodeCount']} running other jobs, "
            f"{counts['unusableNodeCount']} unusable; the cluster "
            + (
                "is resizing."
                if cluster.extra["compute"]["resize_since"] is not None
                else "is steady."
            )
        )
        return job_error("WaitingForNodes", message)

    def create_job(
        self,
        request: Request,
        subscriptionId,
        resourceGroupName,
        workspaceName,
        experimentName,
        jobName,
    ):
        check_name("job", jobName)
        props, secrets = check_job(json_body(request))
        with self.store.transaction():
            experiment = self._experiment(resourceGroupName, workspaceName, experimentName)
            workspace = self._workspace(resourceGroupName, workspaceName)
            group = self._group(resourceGroupName)
            arm_id = f"{experiment.body['id']}/jobs/{jobName}"
            if self.store.get_resource(arm_id) is not None:
                raise ArmError(
                    409,
                    "JobAlreadyExists",
                    f"A job named '{jobName}' already exists in experiment '{experiment.name}'. "
                    "Jobs cannot be changed; delete it first or choose another name.",
                )
            cluster = self.store.get_resource(props["cluster"]["id"])
            if cluster is None or cluster.type != CLUSTER_TYPE:
                raise bad(
                    f"'properties.cluster.id' names no cluster of this local cloud: "
                    f"'{props['cluster']['id']}'. Create the cluster first (clusters.create) and "
                    "pass its id."
                )
            # A job bigger than its cluster is accepted and stays queued (with the reason, see
            # _render_job) until the cluster grows, as the service did.
            uid = str(uuid.uuid4())
            segment = nodeagent.job_path_segment(
                self.sub, group.name, workspace.name, experiment.name, jobName, uid
            )
            props["jobOutputDirectoryPathSegment"] = segment
            props["experimentName"] = experiment.name
            dirs = self._output_locations(props, secrets, cluster, uid)
            now = time.time()
            props.update(
                creationTime=iso(now),
                provisioningState="succeeded",
                provisioningStateTransitionTime=iso(now),
                executionState="queued",
                executionStateTransitionTime=iso(now),
            )
            body = {"id": arm_id, "name": jobName, "type": JOB_TYPE, "properties": props}
            extra = {
                "secrets": secrets,
                "uid": uid,
                "cluster": cluster.id,
                "dirs": dirs,
                "handle": None,
            }
            self.store.put_resource(arm_id, JOB_TYPE, jobName, body, extra)
        self.scheduler.job_added(arm_id)
        return self._accepted(
            request, "jobCreate", arm_id, workspace.body.get("location", "eastus")
        )

    def _output_locations(self, props: dict, secrets: dict, cluster, uid: str) -> dict:
        """Where stdouterr and each output directory land: {id: {"share", "path"}}.

        Both must be on a mounted Azure Files share, as on Batch AI (the service lists and
        links them through storage); a path elsewhere is refused here, not discovered later.
        """
        cluster_uid = cluster.extra["compute"]["uid"]
        try:
            plan = nodeagent.plan_job(
                props,
                job_name="",
                segment=props["jobOutputDirectoryPathSegment"],
                node=self.scheduler.node_context(cluster_uid),
                job_mount_root=self.scheduler.job_mount_root(uid),
                secret_values={},
            )
        except nodeagent.PlanError as err:
            raise bad(err.message) from None
        mounts = self.scheduler.share_mounts(
            cluster_uid, cluster.extra["secrets"].get("mounts", []), uid, secrets.get("mounts", [])
        )
        hint = (
            "Mount an Azure Files share (cluster nodeSetup.mountVolumes.azureFileShares or the "
            "job's mountVolumes) and write below $AZ_BATCHAI_MOUNT_ROOT/<relativeMountPath> (or "
            "$AZ_BATCHAI_JOB_MOUNT_ROOT/<relativeMountPath>)."
        )
        dirs = {}
        where = self.scheduler.locate(plan.stdouterr_dir, mounts)
        if where is None:
            raise bad(
                f"'properties.stdOutErrPathPrefix' ('{props['stdOutErrPathPrefix']}') is not on a "
                f"mounted file share. {hint}"
            )
        dirs[STDOUTERR] = where
        for ident, path in plan.output_dirs.items():
            where = self.scheduler.locate(path, mounts)
            if where is None:
                raise bad(
                    f"The pathPrefix of output directory '{ident}' is not on a mounted file "
                    f"share. {hint}"
                )
            dirs[ident] = where
        return dirs

    def get_job(
        self,
        request: Request,
        subscriptionId,
        resourceGroupName,
        workspaceName,
        experimentName,
        jobName,
    ):
        record = self._job(resourceGroupName, workspaceName, experimentName, jobName)
        return _resource(record, self._render_job(record))

    def delete_job(
        self,
        request: Request,
        subscriptionId,
        resourceGroupName,
        workspaceName,
        experimentName,
        jobName,
    ):
        record = self._job(resourceGroupName, workspaceName, experimentName, jobName)
        self.scheduler.stop_jobs(
            [record], job_error("JobDeleted", "The job was deleted."), remove=True
        )
        return self._accepted(
            request, "jobDelete", record.id, self._location_of(resourceGroupName, workspaceName)
        )

    def terminate_job(
        self,
        request: Request,
        subscriptionId,
        resourceGroupName,
        workspaceName,
        experimentName,
        jobName,
    ):
        record = self._job(resourceGroupName, workspaceName, experimentName, jobName)
        self.scheduler.stop_jobs(
            [record], job_error("JobTerminated", "The job was terminated by the user.")
        )
        return self._accepted(
            request, "jobTerminate", record.id, self._location_of(resourceGroupName, workspaceName)
        )

    def job_remote_login(
        self,
        request: Request,
        subscriptionId,
        resourceGroupName,
        workspaceName,
        experimentName,
        jobName,
    ):
        record = self._job(resourceGroupName, workspaceName, experimentName, jobName)
        running = record.body["properties"]["executionState"] == "running"
        cluster = self.store.get_resource(record.extra["cluster"])
        nodes = {n.id: n.address for n in self.scheduler.job_nodes(record, cluster)}
        return self._page(request, [_login(n, a) for n, a in nodes.items()] if running else [])

    def list_output_files(
        self,
        request: Request,
        subscriptionId,
        resourceGroupName,
        workspaceName,
        experimentName,
        jobName,
    ):
        record = self._job(resourceGroupName, workspaceName, experimentName, jobName)
        ident = request.args.get("outputdirectoryid")
        dirs = record.extra.get("dirs", {})
        if not ident:
            raise bad(
                "The 'outputdirectoryid' query parameter is required: 'stdouterr' or one of the "
                "job's output directory ids."
            )
        where = dirs.get(ident) or next(
            (v for k, v in dirs.items() if k.lower() == ident.lower()), None
        )
        if where is None:
            known = ", ".join(sorted(dirs)) or STDOUTERR
            raise bad(f"The job has no output directory '{ident}'; known: {known}.")
        expiry = _int_arg(request, "linkexpiryinminutes", 60, 5, 600)
        directory = (request.args.get("directory") or ".").strip()
        parts = [p for p in directory.replace("\\", "/").split("/") if p not in ("", ".")]
        if directory.startswith("/") or ".." in parts:
            raise bad(f"'directory' must be a path inside the output directory; got '{directory}'.")
        share_root = self.store.share_dir(where["share"])
        items = []
        if share_root is not None:
            rel = "/".join(p for p in [where["path"], *parts] if p)
            folder = os.path.realpath(os.path.join(share_root, rel))
            if folder == os.path.realpath(share_root) or folder.startswith(
                os.path.realpath(share_root) + os.sep
            ):
                items = self._listing(where["share"], rel, folder, expiry)
        return self._page(request, items)

    def _listing(self, share: str, rel: str, folder: str, expiry: int) -> list:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        items = []
        for entry in entries:
            if entry.name == nodeagent.RECORD_DIR_NAME:
                continue
            if entry.is_dir():
                items.append({"name": entry.name, "fileType": "directory"})
            elif entry.is_file():
                stat = entry.stat()
                path = f"{rel}/{entry.name}" if rel else entry.name
                items.append(
                    {
                        "name": entry.name,
                        "fileType": "file",
                        "downloadUrl": self.cloud.file_sas_url(share, path, "rl", expiry),
                        "properties": {
                            "lastModified": time.strftime(
                                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.st_mtime)
                            ),
                            "contentLength": stat.st_size,
                        },
                    }
                )
        return items

    # ------------------------------------------------------------------ operations

    def _operation(self, operationId: str):
        op = self.store.get_operation(operationId)
        if op is None or not op.kind.startswith(("workspace", "experiment", "cluster", "job")):
            raise ArmError(
                404, "OperationNotFound", f"The operation '{operationId}' was not found."
            )
        deadline = time.monotonic() + OPERATION_WAIT
        while op.status == "InProgress" and time.monotonic() < deadline:
            time.sleep(0.02)
            op = self.store.get_operation(operationId)
        return op

    def _status_body(self, request: Request, op) -> dict:
        body = {
            "id": f"{self.cloud.base_url}{request.path}",
            "name": op.id,
            "status": op.status,
            "startTime": iso(op.started),
        }
        if op.status != "InProgress":
            body["endTime"] = iso(op.ended)
            parts = (op.resource_id or "").strip("/").split("/")
            body["properties"] = {
                "resourceId": "$".join([parts[1], parts[3], *parts[7::2]])
                if len(parts) > 7
                else op.resource_id
            }
        if op.status not in ("InProgress", "Succeeded"):
            body["error"] = op.body.get("error") or {
                "code": op.status,
                "message": f"The operation {op.status}.",
            }
        return body

    def list_operations(self, request: Request):
        value = [
            {
                "name": f"Microsoft.BatchAI/{path}/{verb}",
                "display": {
                    "provider": "Microsoft Batch AI",
                    "resource": resource,
                    "operation": "{} {}".format(OPERATION_VERBS[verb], path.rsplit("/", 1)[-1]),
                    "description": (
                        f"{OPERATION_VERBS[verb]} {path} (as the local cloud emulates it)"
                    ),
                },
                "origin": "user,system",
            }
            for path, resource, served in SERVED_OPERATIONS
            for verb in served
        ]
        return arm_json(200, {"value": value})

    def operation_result(self, request: Request, subscriptionId, location, operationId):
        op = self._operation(operationId)
        return arm_json(200, self._status_body(request, op), {"Retry-After": "0"})

    def operation_status(self, request: Request, subscriptionId, location, operationId):
        op = self._operation(operationId)
        if op.status == "InProgress":
            return still_running(self.cloud.base_url, request)
        return arm_json(200, self._status_body(request, op), {"Retry-After": "0"})


def _login(node_id: str, address: str | None = None) -> dict:
    # Every node is this host: "logging in to a node" is logging in to this machine, at the
    # node's own loopback address.
    return {"nodeId": node_id, "ipAddress": address or "127.0.0.1", "port": 22}


def _int_arg(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    value = request.args.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad(f"The '{name}' query parameter must be a whole number; got '{value}'.") from None
    if number < low or (high is not None and number > high):
        limit = f"{low}..{high}" if high is not None else f"at least {low}"
        raise bad(f"The '{name}' query parameter must be {limit}; got {number}.")
    return number


def _resource(record, body: dict | None = None) -> Response:
    """One resource's 200 answer with the ``ETag`` and ``Last-Modified`` of its last change."""
    return arm_json(
        200,
        record.body if body is None else body,
        {
            "ETag": f'W/"{int(record.updated * 1e6):x}"',
            "Last-Modified": formatdate(record.updated, usegmt=True),
        },
    )
