"""The Batch AI scheduler on this host: clusters' nodes, their allocation, and the job queue.

A cluster is a list of nodes kept in its store record (``extra["compute"]``); each node is
``preparing``, ``idle``, ``running`` (one job at a time), ``unusable`` or ``leaving``. A
single scheduler thread moves everything on, as moto's ManagedState moves states by time:

* allocation: ``resizing`` for ``cluster_allocation_delay`` seconds after a create or resize,
  then ``steady`` with the new nodes ``preparing``; after ``node_preparation_delay`` the
  cluster's Azure Files and Blob mounts are made (links under the cluster's mount root to the
  shares' and containers' folders) and the nodes turn ``idle``, or ``unusable`` with a cluster
  error if a mount fails;
* jobs: the oldest queued job of the highest priority whose ``nodeCount`` fits the cluster's
  idle nodes takes them and is started through the node agent; a running job is probed each
  tick, and when its record says it ended, the job gets its final state and its nodes go back
  to ``idle``.

Because the job's own record (beside its output) and the store are the only state, a server
started later on the same state directory picks up where the last one stopped.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path

from . import nodeagent
from .nodeagent import JobHandle, NodeContext
from .schema import (
    CLUSTER_TYPE,
    JOB_TYPE,
    PRIORITIES,
    STDOUTERR,
    initial_target,
    iso,
    job_error,
)

log = logging.getLogger("quickstart.localcloud")

BUSY_TICK = 0.02  # seconds between scheduler passes while anything is moving
IDLE_TICK = 1.0  # ... while nothing is (a request that changes something wakes it at once)
ACTIVE = ("queued", "running", "terminating")


def _props(record) -> dict:
    return record.body["properties"]


class Scheduler:
    """The nodes and jobs of one local cloud (one instance per running server)."""

    def __init__(self, cloud):
        self.cloud = cloud
        self.store = cloud.store
        options = cloud.options
        self.allocation_delay = float(options.get("cluster_allocation_delay", 1.0))
        self.preparation_delay = float(
            options.get("node_preparation_delay", min(0.5, self.allocation_delay / 2))
        )
        self.default_python = options.get("job_python") or sys.executable
        self.root = Path(cloud.state_dir) / "compute"
        self.num_gpus = nodeagent.gpu_count()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # Ids of jobs not yet ended, so a pass reads only those (the store is the truth; this
        # is rebuilt from it at start, and one server at a time owns a state directory).
        self._active: set[str] = set()
        self._active_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="local-cloud-compute", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling; running jobs are left running (they outlive the server)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def job_added(self, job_id: str) -> None:
        """A job was created: schedule it on the next pass (at once)."""
        with self._active_lock:
            self._active.add(job_id.lower())
        self.wake()

    def _active_jobs(self) -> list:
        with self._active_lock:
            ids = list(self._active)
        jobs = []
        for job_id in ids:
            job = self.store.get_resource(job_id)
            if job is None or _props(job)["executionState"] not in ACTIVE:
                with self._active_lock:
                    self._active.discard(job_id)
            else:
                jobs.append(job)
        return jobs

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = self.tick()
            except sqlite3.ProgrammingError:
                return  # the store was closed under us: the server is gone, so is scheduling
            except Exception:
                log.exception("the local cloud's scheduler failed a pass; retrying in a second")
                busy = False
            self._wake.wait(BUSY_TICK if busy else IDLE_TICK)
            self._wake.clear()

    # ------------------------------------------------------------------ paths

    def cluster_mount_root(self, cluster_uid: str) -> str:
        return str(self.root / "clusters" / cluster_uid / "mounts")

    def job_mount_root(self, job_uid: str) -> str:
        return str(self.root / "jobmounts" / job_uid)

    def job_temp_root(self) -> str:
        return str(self.root / "jobs")

    def node_context(self, cluster_uid: str) -> NodeContext:
        return NodeContext(
            mount_root=self.cluster_mount_root(cluster_uid),
            job_temp_root=self.job_temp_root(),
            default_python=self.default_python,
            num_gpus=self.num_gpus,
        )

    def share_mounts(
        self, cluster_uid: str, cluster_shares: list, job_uid: str, job_shares: list
    ) -> list:
        """[(absolute mount folder, share name)] of the Azure Files shares a job on this cluster
        sees (its stdouterr and outputs must be on one; Blob mounts are inputs here)."""
        mounts = [
            (os.path.join(self.cluster_mount_root(cluster_uid), m["relative"]), m["share"])
            for m in cluster_shares
            if m.get("kind", "file") == "file"
        ]
        mounts += [
            (os.path.join(self.job_mount_root(job_uid), m["relative"]), m["share"])
            for m in job_shares
            if m.get("kind", "file") == "file"
        ]
        return mounts

    @staticmethod
    def locate(path: str, mounts: list) -> dict | None:
        """{"share", "path"} of an absolute node path that lies on a mounted share, else None."""
        path = os.path.normpath(path)
        for folder, share in mounts:
            if path == folder or path.startswith(folder + os.sep):
                return {
                    "share": share,
                    "path": os.path.relpath(path, folder).replace(os.sep, "/")
                    if path != folder
                    else "",
                }
        return None

    def mount_dir(self, mount: dict) -> Path | None:
        """The folder a mount links to: an Azure Files share's, or a Blob container's (blobfuse
        showed a container as a folder; the local cloud keeps one as a folder)."""
        if mount.get("kind", "file") == "blob":
            return self.store.container_dir(mount["share"])
        return self.store.share_dir(mount["share"])

    def mount_problem(self, mount: dict) -> str | None:
        """Why a share or container mount would fail here, or None if it works."""
        creds = self.cloud.credentials
        if mount["account"].lower() != creds.storage_account.lower():
            return (
                f"the storage account '{mount['account']}' is not the local cloud's "
                f"('{creds.storage_account}'); use the account from connection.json"
            )
        if mount["key"] != creds.storage_key:
            return f"the account key given for '{mount['account']}' is wrong"
        if self.mount_dir(mount) is None:
            if mount.get("kind", "file") == "blob":
                return (
                    f"there is no container named '{mount['share']}' in account "
                    f"'{mount['account']}'; create it (BlockBlobService.create_container) "
                    "before the nodes mount it"
                )
            return (
                f"there is no share named '{mount['share']}' in account '{mount['account']}'; "
                "create it (FileService.create_share) before the nodes mount it"
            )
        return None

    @staticmethod
    def mount_error(mount: dict, problem: str, root_variable: str) -> dict:
        """The error Batch AI gave for a mount that failed: AZFMountError for an Azure Files
        share, BFSMountError ("unable to mount blob fuse file system") for a Blob container."""
        at = f"${root_variable}/{mount['relative']}"
        if mount.get("kind", "file") == "blob":
            return job_error(
                "BFSMountError",
                f"Unable to mount blob fuse file system for container '{mount['share']}': "
                f"{problem}.",
                {"Info": f"Could not mount Azure Blob container {mount['url']} at {at}"},
            )
        return job_error(
            "AZFMountError",
            f"Unable to mount Azure File share '{mount['share']}': {problem}.",
            {"Info": f"Could not mount Azure File Share {mount['url']} at {at}"},
        )

    # ------------------------------------------------------------------ the scheduler pass

    def tick(self) -> bool:
        """One pass: clusters' allocation, finished jobs, then queued jobs. True if busy."""
        now = time.time()
        launches, kills = [], []
        with self.store.transaction():
            clusters = {c.id: c for c in self.store.list_resources(type=CLUSTER_TYPE)}
            jobs = self._active_jobs()
            busy = False
            for job in jobs:
                if _props(job)["executionState"] == "running" and job.extra.get("handle"):
                    busy = True
                    state, outcome = nodeagent.probe(JobHandle.from_json(job.extra["handle"]))
                    if state != "running":
                        self._finish(job, outcome, clusters)
            demand = {}
            for job in jobs:
                if _props(job)["executionState"] in ACTIVE:
                    key = job.extra["cluster"]
                    demand[key] = demand.get(key, 0) + _props(job)["nodeCount"]
            for key in list(clusters):
                cluster = self.store.get_resource(key)
                busy |= self._advance_cluster(cluster, now, demand.get(key, 0), kills)
                clusters[key] = self.store.get_resource(key)
            queued = [self.store.get_resource(j.id) for j in jobs]
            queued = [
                j for j in queued if j is not None and _props(j)["executionState"] == "queued"
            ]
            queued.sort(key=lambda j: (-PRIORITIES[_props(j)["schedulingPriority"]], j.created))
            for job in queued:
                busy = True
                cluster = clusters.get(job.extra["cluster"])
                if cluster is None:
                    self.finish_now(
                        job,
                        "failed",
                        job_error(
                            "ClusterNotFound",
                            f"The job's cluster '{_props(job)['cluster']['id']}' no longer "
                            "exists; the job cannot run.",
                        ),
                    )
                    continue
                nodes = self._take_nodes(cluster, job)
                if nodes:
                    clusters[cluster.id] = self.store.get_resource(cluster.id)
                    launches.append(job.id)
        for job_id in kills:
            self._stop_for_resize(job_id)
        for job_id in launches:
            self._launch(job_id)
        return busy or bool(launches)

    # ------------------------------------------------------------------ clusters

    def _advance_cluster(self, cluster, now: float, demand: int, kills: list) -> bool:
        state = cluster.extra["compute"]
        changed = False
        scale = _props(cluster)["scaleSettings"]
        if "autoScale" in scale and state["resize_since"] is None:
            auto = scale["autoScale"]
            wanted = max(auto["minimumNodeCount"], min(auto["maximumNodeCount"], demand))
            if wanted != state["target"]:
                state["target"], state["resize_since"] = wanted, now
                changed = True
        if (
            state["resize_since"] is not None
            and now - state["resize_since"] >= self.allocation_delay
        ):
            self._resize(cluster, state, now, kills)
            state["resize_since"] = None
            state["allocation_since"] = now
            changed = True
        for node in state["nodes"]:
            if node["state"] != "preparing":
                continue
            if node.get("setup"):
                changed |= self._check_setup_task(state, node, now)
            elif now - node["since"] >= self.preparation_delay:
                self._prepare(cluster, state, node, now)
                changed = True
        if changed:
            self.store.put_resource(
                cluster.id, cluster.type, cluster.name, cluster.body, cluster.extra
            )
        return state["resize_since"] is not None or any(
            n["state"] == "preparing" for n in state["nodes"]
        )

    def _resize(self, cluster, state: dict, now: float, kills: list) -> None:
        nodes = state["nodes"]
        target = state["target"]
        while len([n for n in nodes if n["state"] != "leaving"]) < target:
            state["next_node"] = state.get("next_node", 0) + 1
            stamp = time.strftime("%Y%m%dt%H%M%Sz", time.gmtime(now))
            nodes.append(
                {
                    "id": f"tvm-{int(state['uid'][:8], 16)}_{state['next_node']}-{stamp}",
                    "state": "preparing",
                    "since": now,
                    "job": None,
                }
            )
        surplus = len([n for n in nodes if n["state"] != "leaving"]) - target
        for wanted_state in ("unusable", "preparing", "idle"):
            for node in [n for n in nodes if n["state"] == wanted_state]:
                if surplus > 0:
                    if node.get("setup"):
                        nodeagent.terminate(JobHandle.from_json(node["setup"]))
                    nodes.remove(node)
                    surplus -= 1
        if surplus <= 0:
            return
        option = (_props(cluster)["scaleSettings"].get("manual") or {}).get(
            "nodeDeallocationOption", "waitforjobcompletion"
        )
        for node in [n for n in nodes if n["state"] == "running"][:surplus]:
            job = self.store.get_resource(node["job"]) if node["job"] else None
            if option in ("requeue", "terminate") and job is not None and job.extra.get("handle"):
                # Stopped after this pass's transaction; then requeued or failed (see tick).
                _props(job)["executionState"] = "terminating"
                job.extra["after_stop"] = option
                self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
                kills.append(job.id)
                nodes.remove(node)
            else:
                node["state"] = "leaving"

    def _stop_for_resize(self, job_id: str) -> None:
        """A resize took a running job's node: stop it, then requeue or fail it."""
        job = self.store.get_resource(job_id)
        if job is None or not job.extra.get("handle"):
            return
        handle = JobHandle.from_json(job.extra["handle"])
        nodeagent.terminate(handle)
        with self.store.transaction():
            job = self.store.get_resource(job_id)
            if job is None or _props(job)["executionState"] != "terminating":
                return
            if job.extra.pop("after_stop", None) == "requeue":
                props = _props(job)
                props["executionState"] = "queued"
                props["executionStateTransitionTime"] = _iso(time.time())
                props.pop("executionInfo", None)
                job.extra.update(handle=None, nodes=[], launching=False)
                with_exit = os.path.join(handle.record_dir, nodeagent.EXIT_FILE)
                if os.path.exists(with_exit):
                    os.unlink(with_exit)
                self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
            else:
                self.finish_now(
                    job,
                    "failed",
                    job_error(
                        "NodeDeallocated",
                        "The cluster was resized down with nodeDeallocationOption "
                        "'terminate' and the job's node was taken away.",
                    ),
                    release=False,
                )

    def _prepare(self, cluster, state: dict, node: dict, now: float) -> None:
        """Mount the cluster's shares for a node; idle if all mount, else unusable."""
        mount_root = self.cluster_mount_root(state["uid"])
        problems = []
        for mount in cluster.extra.get("secrets", {}).get("mounts", []):
            problem = self.mount_problem(mount)
            if problem is None:
                try:
                    _link(os.path.join(mount_root, mount["relative"]), str(self.mount_dir(mount)))
                except OSError as err:
                    problem = f"the mount folder could not be made: {err}"
            if problem:
                problems.append(self.mount_error(mount, problem, "AZ_BATCHAI_MOUNT_ROOT"))
        task = (_props(cluster).get("nodeSetup") or {}).get("setupTask")
        if not problems and task:
            try:
                node["setup"] = self._start_setup_task(cluster, state, node, task).to_json()
                return  # the node stays preparing until its setup task ends
            except (nodeagent.PlanError, OSError) as err:
                problems.append(
                    job_error(
                        "SetupTaskFailed",
                        f"The node setup task could not start on node "
                        f"{node['id']}: {getattr(err, 'message', err)}",
                    )
                )
        self._node_ready(state, node, problems, now)

    def _node_ready(self, state: dict, node: dict, problems: list, now: float) -> None:
        if problems:
            node["state"] = "unusable"
            known = {(e["code"], e["message"]) for e in state["errors"]}
            state["errors"] += [e for e in problems if (e["code"], e["message"]) not in known]
        else:
            os.makedirs(self.cluster_mount_root(state["uid"]), exist_ok=True)
            node["state"] = "idle"
        node["since"] = now

    def _start_setup_task(self, cluster, state: dict, node: dict, task: dict) -> JobHandle:
        """Run nodeSetup.setupTask for a node through the node agent; its stdout/stderr go to
        ``{stdOutErrPathPrefix}/{stdOutErrPathSuffix}/{node id}/``."""
        context = self.node_context(state["uid"])
        env = {
            "AZ_BATCHAI_MOUNT_ROOT": context.mount_root,
            "AZ_BATCHAI_NUM_GPUS": str(context.num_gpus),
            "PYTHONUNBUFFERED": "1",
        }
        for item in task.get("environmentVariables") or []:
            env[item["name"]] = item.get("value") or ""
        secrets = cluster.extra.get("secrets", {}).get("setup_secrets", {})
        env.update(secrets)
        prefix = nodeagent.expand(task["stdOutErrPathPrefix"], {**os.environ, **env})
        if "$" in prefix or not os.path.isabs(prefix):
            raise nodeagent.PlanError(
                "InvalidParameter",
                f"stdOutErrPathPrefix '{task['stdOutErrPathPrefix']}' is not a path on this node",
            )
        folder = os.path.join(prefix, task["stdOutErrPathSuffix"], node["id"])
        work = str(self.root / "clusters" / state["uid"] / "setup" / node["id"])
        spec = nodeagent.LaunchSpec(
            job=f"{cluster.id} setup task",
            record_dir=os.path.join(work, nodeagent.RECORD_DIR_NAME),
            stdouterr_dir=folder,
            cwd=work,
            env=env,
            secret_values=[v for v in secrets.values() if v],
            command=task["commandLine"],
            notes=[
                f"Setup task of node {node['id']} runs on this host ({os.uname().nodename}), "
                "directly, not on an Azure VM."
            ],
            make_dirs=[folder, work, os.path.join(work, nodeagent.RECORD_DIR_NAME)],
        )
        return nodeagent.launch(spec)

    def _check_setup_task(self, state: dict, node: dict, now: float) -> bool:
        status, outcome = nodeagent.probe(JobHandle.from_json(node["setup"]))
        if status == "running":
            return False
        problems = []
        if not outcome.succeeded:
            why = (
                outcome.error["message"]
                if outcome.error
                else f"exited with code {outcome.exit_code}"
            )
            problems.append(
                job_error(
                    "SetupTaskFailed",
                    f"The node setup task on node {node['id']} failed: "
                    f"{why}. See its stdout.txt and stderr.txt.",
                    {"exitCode": outcome.exit_code},
                )
            )
        node.pop("setup")
        self._node_ready(state, node, problems, now)
        return True

    def stop_setup_tasks(self, cluster) -> None:
        """Stop the setup tasks still running on a cluster's nodes (cluster deleted)."""
        for node in (cluster.extra.get("compute") or {}).get("nodes", []):
            if node.get("setup"):
                nodeagent.terminate(JobHandle.from_json(node["setup"]))

    def resize(self, cluster_id: str, target: int) -> None:
        """Start a resize to ``target`` nodes (clusters.update)."""
        with self.store.transaction():
            cluster = self.store.get_resource(cluster_id)
            state = cluster.extra["compute"]
            state["target"] = target
            state["resize_since"] = time.time()
            state["allocation_since"] = state["resize_since"]
            self.store.put_resource(
                cluster.id, cluster.type, cluster.name, cluster.body, cluster.extra
            )
        self.wake()

    @staticmethod
    def new_cluster_state(scale: dict) -> dict:
        now = time.time()
        return {
            "uid": uuid.uuid4().hex,
            "target": initial_target(scale),
            "resize_since": now,
            "allocation_since": now,
            "nodes": [],
            "errors": [],
            "next_node": 0,
        }

    def _take_nodes(self, cluster, job) -> list:
        state = cluster.extra["compute"]
        count = _props(job)["nodeCount"]
        idle = [n for n in state["nodes"] if n["state"] == "idle"]
        if len(idle) < count:
            return []
        now = time.time()
        taken = idle[:count]
        for node in taken:
            node.update(state="running", job=job.id, since=now)
        self.store.put_resource(cluster.id, cluster.type, cluster.name, cluster.body, cluster.extra)
        props = _props(job)
        props["executionState"] = "running"
        props["executionStateTransitionTime"] = _iso(now)
        props["executionInfo"] = {"startTime": _iso(now)}
        job.extra.update(
            nodes=[n["id"] for n in taken],
            handle=None,
            launching=True,
            cluster_uid=state["uid"],
            started=now,
        )
        self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
        return taken

    # ------------------------------------------------------------------ jobs

    def _launch(self, job_id: str) -> None:
        """Start a job the scheduler gave nodes to (outside the store lock: it takes a process
        start), then record its handle; a job deleted or terminated meanwhile is stopped."""
        job = self.store.get_resource(job_id)
        if job is None:
            return
        try:
            plan = self.plan(job)
            for mount in job.extra["secrets"].get("mounts", []):
                problem = self.mount_problem(mount)
                if problem:
                    error = self.mount_error(mount, problem, "AZ_BATCHAI_JOB_MOUNT_ROOT")
                    raise nodeagent.PlanError(error["code"], error["message"])
            handle = nodeagent.launch(plan.spec, python=sys.executable)
        except (nodeagent.PlanError, OSError, ValueError) as err:
            code = getattr(err, "code", "JobFailed")
            message = (
                getattr(err, "message", None) or f"The job could not be started on its node: {err}"
            )
            with self.store.transaction():
                job = self.store.get_resource(job_id)
                if job is not None and _props(job)["executionState"] == "running":
                    self.finish_now(
                        job,
                        "failed",
                        job_error(code, message),
                        exit_code=nodeagent.NOT_STARTED_EXIT_CODE,
                    )
            return
        with self.store.transaction():
            job = self.store.get_resource(job_id)
            alive = job is not None and _props(job)["executionState"] == "running"
            if alive:
                job.extra.update(handle=handle.to_json(), launching=False)
                self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
        if not alive:
            nodeagent.terminate(handle)

    def plan(self, job) -> nodeagent.JobPlan:
        """The node agent's plan for ``job`` on its cluster (directories, environment, command)."""
        cluster = self.store.get_resource(job.extra["cluster"])
        cluster_uid = (
            cluster.extra["compute"]["uid"] if cluster else job.extra.get("cluster_uid", "none")
        )
        values = job.extra["secrets"].get("values", {})
        return nodeagent.plan_job(
            _props(job),
            job_name=job.body["id"],
            segment=_props(job)["jobOutputDirectoryPathSegment"],
            node=self.node_context(cluster_uid),
            job_mount_root=self.job_mount_root(job.extra["uid"]),
            secret_values=values,
            job_mounts={
                m["relative"]: str(self.mount_dir(m) or "")
                for m in job.extra["secrets"].get("mounts", [])
            },
        )

    def _finish(self, job, outcome: nodeagent.Outcome, clusters: dict | None = None) -> None:
        """Record how a running job ended, from its node agent's outcome."""
        errors = []
        if outcome.error:
            errors.append(job_error(outcome.error["code"], outcome.error["message"]))
        elif outcome.exit_code != 0:
            if outcome.phase == "jobPreparation":
                errors.append(
                    job_error(
                        "JobPreparationFailed",
                        f"The job preparation command exited with code {outcome.exit_code}; "
                        "see stdout-job_prep.txt and stderr-job_prep.txt in stdouterr.",
                        {"exitCode": outcome.exit_code},
                    )
                )
            else:
                errors.append(
                    job_error(
                        "JobFailed",
                        f"The job's command exited with code {outcome.exit_code}; "
                        "see stderr.txt and stdout.txt in stdouterr.",
                        {"exitCode": outcome.exit_code},
                    )
                )
        self.finish_now(
            job,
            "succeeded" if outcome.succeeded else "failed",
            errors[0] if errors else None,
            exit_code=outcome.exit_code,
            ended=outcome.ended,
        )

    def finish_now(
        self,
        job,
        state: str,
        error: dict | None,
        exit_code: int | None = None,
        ended: float | None = None,
        release: bool = True,
    ) -> None:
        """Put ``job`` in its final ``state`` (call inside a store transaction)."""
        now = time.time()
        props = _props(job)
        props["executionState"] = state
        props["executionStateTransitionTime"] = _iso(now)
        info = dict(props.get("executionInfo") or {})
        info["endTime"] = _iso(ended or now)
        if exit_code is not None:
            info["exitCode"] = exit_code
        if error:
            info["errors"] = [error]
        props["executionInfo"] = info
        if release:
            self._release(job)
        job.extra.update(launching=False)
        self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
        self.wake()

    def _release(self, job) -> None:
        """Give a job's nodes back to its cluster (idle, or gone if they were leaving)."""
        cluster = self.store.get_resource(job.extra["cluster"])
        if cluster is None:
            return
        nodes = cluster.extra["compute"]["nodes"]
        now = time.time()
        for node in list(nodes):
            if node.get("job") == job.id:
                if node["state"] == "leaving":
                    nodes.remove(node)
                else:
                    node.update(state="idle", job=None, since=now)
        self.store.put_resource(cluster.id, cluster.type, cluster.name, cluster.body, cluster.extra)

    def stop_jobs(self, jobs: list, error: dict, remove: bool = False) -> None:
        """Terminate ``jobs`` (records): queued ones fail at once, running ones have their whole
        process group stopped (in parallel) before this returns. With ``remove`` the records
        are deleted first, so the deletion is visible at once."""
        handles = []
        with self.store.transaction():
            for stale in jobs:
                job = self.store.get_resource(stale.id)
                if job is None:
                    continue
                state = _props(job)["executionState"]
                if state in ACTIVE:
                    if job.extra.get("handle"):
                        handles.append((job.id, JobHandle.from_json(job.extra["handle"])))
                    if state != "queued" or remove:
                        props = _props(job)
                        props["executionState"] = "terminating"
                        props["executionStateTransitionTime"] = _iso(time.time())
                        self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
                    if state == "queued" and not remove:
                        self.finish_now(job, "failed", error)
                        continue
                if remove:
                    self.store.delete_resource(job.id)
        threads = [
            threading.Thread(target=nodeagent.terminate, args=(h,), daemon=True) for _, h in handles
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self.store.transaction():
            if remove:
                for stale in jobs:
                    self._release(stale)
            for job_id, handle in handles:
                job = self.store.get_resource(job_id)
                if job is None:
                    continue
                outcome = nodeagent.read_outcome(handle.record_dir)
                self.finish_now(
                    job, "failed", error, exit_code=outcome.exit_code if outcome else None
                )
            if not remove:
                for stale in jobs:  # running jobs still launching: their launch sees the state
                    job = self.store.get_resource(stale.id)
                    if job is not None and _props(job)["executionState"] == "terminating":
                        self.finish_now(job, "failed", error)
        if remove:
            for stale in jobs:
                self.forget_job_files(stale)
        self.wake()

    def forget_job_files(self, job) -> None:
        """Remove what the node kept for a deleted job (its temp folder, job-level mount links
        and agent record); the job's output on the share stays, as on Azure."""
        uid = job.extra.get("uid")
        if not uid:
            return
        shutil.rmtree(os.path.join(self.job_temp_root(), uid), ignore_errors=True)
        shutil.rmtree(self.job_mount_root(uid), ignore_errors=True)
        record_dir = (job.extra.get("handle") or {}).get("record_dir")
        if record_dir:
            shutil.rmtree(record_dir, ignore_errors=True)

    def forget_cluster_files(self, cluster) -> None:
        uid = (cluster.extra.get("compute") or {}).get("uid")
        if uid:
            shutil.rmtree(self.root / "clusters" / uid, ignore_errors=True)

    def recover(self) -> None:
        """At start: jobs whose launch was cut short by a stop have no process; fail them."""
        with self.store.transaction():
            for job in self.store.list_resources(type=JOB_TYPE):
                props = _props(job)
                if props["executionState"] in ACTIVE:
                    with self._active_lock:
                        self._active.add(job.id)
                if props["executionState"] in ("running", "terminating") and not job.extra.get(
                    "handle"
                ):
                    self.finish_now(
                        job,
                        "failed",
                        job_error(
                            "JobProcessVanished",
                            "The local cloud stopped while starting the job, so it never ran.",
                        ),
                    )


def _link(path: str, target: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path):
        if os.readlink(path) == target:
            return
        os.unlink(path)
    os.symlink(target, path, target_is_directory=True)


_iso = iso


def node_counts(state: dict) -> dict:
    counts = {
        "idleNodeCount": 0,
        "runningNodeCount": 0,
        "preparingNodeCount": 0,
        "unusableNodeCount": 0,
        "leavingNodeCount": 0,
    }
    for node in state["nodes"]:
        key = {
            "idle": "idleNodeCount",
            "running": "runningNodeCount",
            "preparing": "preparingNodeCount",
            "unusable": "unusableNodeCount",
            "leaving": "leavingNodeCount",
        }[node["state"]]
        counts[key] += 1
    return counts


__all__ = ["Scheduler", "node_counts", "STDOUTERR"]
