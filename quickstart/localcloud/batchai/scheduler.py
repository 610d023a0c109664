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

import contextlib
import logging
import os
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..crashpoints import crash_point
from ..faults import NODE_ERROR_CODE, Faults
from . import backends, launch_plans, nodeagent
from .backends import Placement
from .nodeagent import NodeContext
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


def _node(cluster, node_id: str) -> dict | None:
    """The node ``node_id`` of a cluster record, or None (no such cluster or node)."""
    if cluster is None:
        return None
    return next((n for n in cluster.extra["compute"]["nodes"] if n["id"] == node_id), None)


@dataclass
class _Actions:
    """What one scheduler pass decided under the store's lock and does after releasing it."""

    launches: list = field(default_factory=list)  # job ids given nodes
    kills: list = field(default_factory=list)  # job ids whose node a resize took
    setup_starts: list = field(default_factory=list)  # (cluster id, node id)
    setup_stops: list = field(default_factory=list)  # (cluster id, setup task handle json)


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
        self.faults = getattr(cloud, "faults", None) or Faults()
        self.num_gpus = nodeagent.gpu_count()
        # Where nodes and job processes run (backends/): the one thing that differs between
        # the local and the Ray compute; everything here only decides.
        self.compute = backends.backend_for({**options, "state_dir": cloud.state_dir})
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # Ids of jobs not yet ended, so a pass reads only those (the store is the truth; this
        # is rebuilt from it at start, and one server at a time owns a state directory).
        self._active: set[str] = set()
        self._active_lock = threading.Lock()
        # Clusters whose processing raised and whose record could not even be marked failed.
        self._poisoned: set[str] = set()
        # Process stops running outside the lock; the server waits for them before it closes
        # the store, so none of them writes to a closed database.
        self._stoppers: set[threading.Thread] = set()
        self._stoppers_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stopping.clear()
        self.compute.start(self.wake)  # once: recover() may have connected it already
        self._thread = threading.Thread(target=self._loop, name="local-cloud-compute", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling; running jobs are left running (they outlive the server)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._stoppers_lock:
            stoppers = list(self._stoppers)
        for thread in stoppers:  # each ends within the stop grace period and its SIGKILL
            thread.join(timeout=10)
        self.compute.stop()

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

    def node_job_temp(self, node_id: str, job_uid: str) -> str:
        """A node's own AZ_BATCHAI_JOB_TEMP for a job (its local disk, on Batch AI)."""
        return str(self.root / "nodes" / node_id / "jobs" / job_uid)

    def shared_job_temp(self, job_uid: str) -> str:
        """AZ_BATCHAI_SHARED_JOB_TEMP: one folder for all the job's nodes (NFS, on Batch AI)."""
        return os.path.join(self.job_temp_root(), job_uid, "shared")

    def job_nodes(self, job, cluster) -> list:
        """The job's nodes (launch_plans.JobNode), the master first."""
        addresses = {
            n["id"]: n.get("address") or launch_plans.node_address(1)
            for n in ((cluster.extra.get("compute") or {}).get("nodes", []) if cluster else [])
        }
        return [
            launch_plans.JobNode(
                node_id,
                addresses.get(node_id, launch_plans.node_address(1)),
                self.node_job_temp(node_id, job.extra["uid"]),
            )
            for node_id in job.extra.get("nodes") or []
        ]

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
        """One pass: look at processes, decide under the store's lock, then act outside it
        (process starts and stops take milliseconds to seconds; the API must not wait on them).
        True if anything is moving."""
        now = time.time()
        job_probes, setup_probes = self._observe()
        todo = _Actions()
        with self.store.transaction():
            busy = self._decide(now, job_probes, setup_probes, todo)
        self._act(todo)
        return busy or bool(todo.launches or todo.setup_starts)

    def _observe(self) -> tuple[dict, dict]:
        """Probe running jobs and setup tasks ({id: (handle json, probe result)}), unlocked."""
        job_probes, setup_probes = {}, {}
        for job in self._active_jobs():
            handle = job.extra.get("handle")
            if handle and _props(job)["executionState"] == "running":
                job_probes[job.id] = (handle, self.compute.probe(handle))
        for cluster in self.store.list_resources(type=CLUSTER_TYPE):
            if self._is_poisoned(cluster):
                continue
            try:
                for node in cluster.extra["compute"]["nodes"]:
                    if node.get("setup"):
                        setup_probes[(cluster.id, node["id"])] = (
                            node["setup"],
                            self.compute.probe(node["setup"]),
                        )
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # a malformed record; the pass marks the cluster failed
        return job_probes, setup_probes

    def _decide(self, now: float, job_probes: dict, setup_probes: dict, todo: _Actions) -> bool:
        busy = False
        jobs = self._active_jobs()
        for job in jobs:
            probed = job_probes.get(job.id)
            if probed is None or _props(job)["executionState"] != "running":
                continue
            busy = True
            handle, (state, outcome) = probed
            if state != "running" and job.extra.get("handle") == handle:
                with self._isolated_job(job):
                    self._finish(job, outcome)
            elif state == "running" and self.faults.node_failure(
                job.name, now - job.extra.get("started", now)
            ):
                with self._isolated_job(job):
                    self._fail_node_under(job, todo)
        demand = {}
        for job in jobs:
            with self._isolated_job(job):
                if _props(job)["executionState"] in ACTIVE:
                    key = job.extra["cluster"]
                    demand[key] = demand.get(key, 0) + _props(job)["nodeCount"]
        clusters = {}
        for cluster in self.store.list_resources(type=CLUSTER_TYPE):
            clusters[cluster.id] = cluster
            if self._is_poisoned(cluster):
                continue
            with self._isolated_cluster(cluster):
                busy |= self._advance_cluster(
                    cluster, now, demand.get(cluster.id, 0), todo, setup_probes
                )
            clusters[cluster.id] = self.store.get_resource(cluster.id)
        queued = [self.store.get_resource(j.id) for j in jobs]
        queued = [j for j in queued if j is not None and _props(j)["executionState"] == "queued"]
        queued.sort(
            key=lambda j: (-PRIORITIES.get(_props(j).get("schedulingPriority"), 0), j.created)
        )
        for job in queued:
            busy = True
            with self._isolated_job(job):
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
                elif not self._is_poisoned(cluster) and self._take_nodes(cluster, job):
                    clusters[cluster.id] = self.store.get_resource(cluster.id)
                    todo.launches.append(job.id)
        return busy

    def _act(self, todo: _Actions) -> None:
        """The slow half of a pass, with the store unlocked. Stops run in their own threads
        (a task that ignores SIGTERM holds its stopper for the grace period, not the pass)."""
        for cluster_id, handle in todo.setup_stops:
            self._in_background(self._stop_setup_task, cluster_id, handle)
        for job_id in todo.kills:
            self._in_background(self._stop_for_resize, job_id)
        for cluster_id, node_id in todo.setup_starts:
            self._start_setup(cluster_id, node_id)
        for job_id in todo.launches:
            try:
                self._launch(job_id)
            except Exception as err:  # one job's failure must not stop the others' launches
                log.exception("the local cloud could not launch job %s", job_id)
                self._poison_job(job_id, err)

    def _in_background(self, target, *args) -> threading.Thread:
        def stop_then_forget():
            try:
                target(*args)
            finally:
                with self._stoppers_lock:
                    self._stoppers.discard(threading.current_thread())

        thread = threading.Thread(target=stop_then_forget, daemon=True, name="local-cloud-stop")
        with self._stoppers_lock:
            self._stoppers.add(thread)
        thread.start()
        return thread

    # ------------------------------------------------------------------ isolation

    def _is_poisoned(self, cluster) -> bool:
        """True for a cluster the scheduler leaves alone: failed, or being deleted."""
        compute = cluster.extra.get("compute")
        return (
            cluster.id in self._poisoned
            or bool(cluster.extra.get("deleting"))
            or bool(isinstance(compute, dict) and compute.get("failed"))
        )

    @contextlib.contextmanager
    def _isolated_cluster(self, cluster) -> Iterator[None]:
        """Undo a cluster's half-done changes if processing it raises, and mark it failed."""
        try:
            with self.store.savepoint():
                yield
        except Exception as err:
            log.exception("the local cloud could not process cluster %s", cluster.id)
            self._poison_cluster(cluster.id, err)

    @contextlib.contextmanager
    def _isolated_job(self, job) -> Iterator[None]:
        """Undo a job's half-done changes if processing it raises, and fail the job."""
        try:
            with self.store.savepoint():
                yield
        except Exception as err:
            log.exception("the local cloud could not process job %s", job.id)
            self._poison_job(job.id, err)

    def _poison_cluster(self, cluster_id: str, err: Exception) -> None:
        self._poisoned.add(cluster_id)
        error = job_error(
            "ClusterProcessingFailed",
            f"The local cloud could not process this cluster ({type(err).__name__}: {err}); "
            "delete it and create it again.",
        )
        try:
            with self.store.savepoint():
                record = self.store.get_resource(cluster_id)
                state = record.extra["compute"]
                state["failed"] = True
                state["errors"] = [*state.get("errors", []), error]
                record.body["properties"]["provisioningState"] = "failed"
                self.store.put_resource(
                    record.id, record.type, record.name, record.body, record.extra
                )
        except Exception:
            log.exception("cluster %s cannot even be marked failed; it is skipped", cluster_id)

    def _poison_job(self, job_id: str, err: Exception) -> None:
        with self._active_lock:
            self._active.discard(job_id)
        error = job_error(
            "JobProcessingFailed",
            f"The local cloud could not process this job ({type(err).__name__}: {err}).",
        )
        for release in (True, False):
            try:
                with self.store.savepoint():
                    job = self.store.get_resource(job_id)
                    if job is not None:
                        self.finish_now(job, "failed", error, release=release)
                return
            except Exception:
                log.exception("job %s cannot be marked failed (release=%s)", job_id, release)

    # ------------------------------------------------------------------ clusters

    def _advance_cluster(
        self, cluster, now: float, demand: int, todo: _Actions, setup_probes: dict
    ) -> bool:
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
            if self._allocated(cluster, state):
                self._resize(cluster, state, now, todo)
                self._place_nodes(state)
                state["resize_since"] = None
                state["allocation_since"] = now
            changed = True
        mount_problems = None  # the cluster's mounts, checked once per pass for all its nodes
        for node in state["nodes"]:
            if node["state"] != "preparing" or node.get("setup_pending"):
                continue
            if node.get("setup"):
                probed = setup_probes.get((cluster.id, node["id"]))
                if probed is not None and probed[0] == node["setup"] and probed[1][0] != "running":
                    self._setup_task_ended(state, node, now, probed[1][1])
                    changed = True
            elif now - node["since"] >= self.preparation_delay:
                if mount_problems is None:
                    mount_problems = self._mount(cluster, state)
                self._prepare(cluster, state, node, now, mount_problems, todo)
                changed = True
        if changed:
            self.store.put_resource(
                cluster.id, cluster.type, cluster.name, cluster.body, cluster.extra
            )
        return state["resize_since"] is not None or any(
            n["state"] == "preparing" for n in state["nodes"]
        )

    def _allocated(self, cluster, state: dict) -> bool:
        """Whether the compute backend holds the cluster's target nodes now. While it does not
        the cluster stays ``resizing`` and shows the backend's allocation error, if any."""
        if not self.compute.resizes_running_clusters and any(
            n["state"] in ("running", "leaving") for n in state["nodes"]
        ):
            return False  # the backend replaces the cluster's nodes whole: after the jobs
        mounts = cluster.extra.get("secrets", {}).get("mounts", [])
        folders = [str(f) for f in (self.mount_dir(m) for m in mounts) if f is not None]
        allocation = self.compute.allocation(
            state["uid"], state["target"], _props(cluster).get("vmSize", ""), folders
        )
        shown = state.pop("allocation_error", None)
        if shown in state["errors"]:
            state["errors"].remove(shown)
        if not allocation.ready:
            if allocation.error is not None:
                state["allocation_error"] = allocation.error
                state["errors"] = [*state["errors"], allocation.error]
            return False
        state["placed"] = {
            "addresses": allocation.addresses,
            "bundles": allocation.bundles,
            "unseen": allocation.unseen,
        }
        return True

    def _resize(self, cluster, state: dict, now: float, todo: _Actions) -> None:
        """Add or remove nodes to reach the target, in time linear in the node count."""
        nodes = state["nodes"]
        target = state["target"]
        present = sum(1 for n in nodes if n["state"] != "leaving")
        failure = self.faults.allocation_failure(cluster.name) if target > present else None
        if failure is not None:  # the allocation fails: no node is added, as on Batch AI
            state["errors"] = [*state["errors"], failure]
            target = present
        stamp = time.strftime("%Y%m%dt%H%M%Sz", time.gmtime(now))
        for _ in range(target - present):
            state["next_node"] = state.get("next_node", 0) + 1
            nodes.append(
                {
                    "id": f"tvm-{int(state['uid'][:8], 16)}_{state['next_node']}-{stamp}",
                    "address": launch_plans.node_address(state["next_node"]),
                    "state": "preparing",
                    "since": now,
                    "job": None,
                }
            )
        surplus = present - target
        if surplus <= 0:
            return
        removed = set()
        for wanted_state in ("unusable", "preparing", "idle"):
            for index, node in enumerate(nodes):
                if surplus <= 0:
                    break
                if node["state"] == wanted_state:
                    removed.add(index)
                    surplus -= 1
                    if node.get("setup"):  # stopped after the pass; forgotten once stopped
                        state.setdefault("stopping", []).append(node["setup"])
                        todo.setup_stops.append((cluster.id, node["setup"]))
        option = (_props(cluster)["scaleSettings"].get("manual") or {}).get(
            "nodeDeallocationOption", "waitforjobcompletion"
        )
        for index, node in enumerate(nodes):
            if surplus <= 0:
                break
            if node["state"] != "running":
                continue
            surplus -= 1
            job = self.store.get_resource(node["job"]) if node["job"] else None
            if option in ("requeue", "terminate") and job is not None and job.extra.get("handle"):
                # Stopped after this pass's transaction; then requeued or failed.
                _props(job)["executionState"] = "terminating"
                job.extra["after_stop"] = option
                self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
                todo.kills.append(job.id)
                removed.add(index)
            else:
                node["state"] = "leaving"
        state["nodes"] = [n for i, n in enumerate(nodes) if i not in removed]

    @staticmethod
    def _place_nodes(state: dict) -> None:
        """Give each node its compute backend's address and slot, where the backend has its
        own nodes (the local backend has none: nodes keep their loopback addresses)."""
        placed = state.get("placed") or {}
        if placed.get("addresses") is None:
            return
        for index, node in enumerate(n for n in state["nodes"] if n["state"] != "leaving"):
            node["address"] = placed["addresses"][index]
            node["bundle"] = placed["bundles"][index]

    def _fail_node_under(self, job, todo: _Actions) -> None:
        """A fault rule made the job's node unusable: the node leaves service with the error
        Batch AI reported for it, and the job is stopped and failed with it."""
        cluster = self.store.get_resource(job.extra["cluster"])
        node_ids = set(job.extra.get("nodes") or [])
        error = job_error(
            NODE_ERROR_CODE,
            f"Node {', '.join(sorted(node_ids))} became unusable while the job ran on it "
            "(a fault rule of the local cloud); the job was stopped.",
        )
        if cluster is not None:
            state = cluster.extra["compute"]
            for node in state["nodes"]:
                if node["id"] in node_ids:
                    node.update(state="unusable", job=None, since=time.time())
            state["errors"] = [*state["errors"], error]
            self.store.put_resource(
                cluster.id, cluster.type, cluster.name, cluster.body, cluster.extra
            )
        _props(job)["executionState"] = "terminating"
        job.extra.update(after_stop="fail", stop_error=error)
        self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
        todo.kills.append(job.id)

    def _stop_for_resize(self, job_id: str) -> None:
        """A resize took a running job's node: stop it, then requeue or fail it."""
        job = self.store.get_resource(job_id)
        if job is None or not job.extra.get("handle"):
            return
        handle = job.extra["handle"]
        self.compute.terminate(handle)
        with self.store.transaction():
            job = self.store.get_resource(job_id)
            if job is None or _props(job)["executionState"] != "terminating":
                return
            if job.extra.pop("after_stop", None) == "requeue":
                props = _props(job)
                props["executionState"] = "queued"
                props["executionStateTransitionTime"] = _iso(time.time())
                props.pop("executionInfo", None)
                job.extra.update(handle=None, nodes=[], launching=False, record_dir=None)
                with_exit = os.path.join(handle["record_dir"], nodeagent.EXIT_FILE)
                if os.path.exists(with_exit):
                    os.unlink(with_exit)
                self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
            else:
                self.finish_now(
                    job,
                    "failed",
                    job.extra.get("stop_error")
                    or job_error(
                        "NodeDeallocated",
                        "The cluster was resized down with nodeDeallocationOption "
                        "'terminate' and the job's node was taken away.",
                    ),
                    release=False,
                )

    def _mount(self, cluster, state: dict) -> list:
        """Make the cluster's share mounts (links under its mount root); the errors of those
        that fail, as Batch AI reported them."""
        mount_root = self.cluster_mount_root(state["uid"])
        os.makedirs(mount_root, exist_ok=True)
        problems = []
        for mount in cluster.extra.get("secrets", {}).get("mounts", []):
            problem = self.mount_problem(mount)
            unseen = (state.get("placed") or {}).get("unseen") or {}
            if problem is None and str(self.mount_dir(mount)) in unseen:
                problem = (
                    f"the node(s) at {', '.join(unseen[str(self.mount_dir(mount))])} cannot "
                    f"see the share's folder {self.mount_dir(mount)}; every node must see the "
                    "local cloud's state directory at the same path (a shared filesystem)"
                )
            if problem is None:
                try:
                    _link(os.path.join(mount_root, mount["relative"]), str(self.mount_dir(mount)))
                except OSError as err:
                    problem = f"the mount folder could not be made: {err}"
            if problem:
                problems.append(self.mount_error(mount, problem, "AZ_BATCHAI_MOUNT_ROOT"))
        return problems

    def _prepare(
        self, cluster, state: dict, node: dict, now: float, problems: list, todo: _Actions
    ) -> None:
        """A node whose mounts are made: idle, or unusable if one failed; with a setup task it
        stays preparing while the task is started (after the pass) and runs."""
        task = (_props(cluster).get("nodeSetup") or {}).get("setupTask")
        if not problems and task:
            node["setup_pending"] = True
            todo.setup_starts.append((cluster.id, node["id"]))
            return
        self._node_ready(state, node, problems, now)

    def _node_ready(self, state: dict, node: dict, problems: list, now: float) -> None:
        if problems:
            node["state"] = "unusable"
            known = {(e["code"], e["message"]) for e in state["errors"]}
            state["errors"] += [e for e in problems if (e["code"], e["message"]) not in known]
        else:
            node["state"] = "idle"  # its mount root was made by _mount, once for all nodes
        node["since"] = now

    def _setup_work_dir(self, state: dict, node: dict) -> str:
        return str(self.root / "clusters" / state["uid"] / "setup" / node["id"])

    def _start_setup(self, cluster_id: str, node_id: str) -> None:
        """Start one node's setup task (unlocked), then record its handle or its failure."""
        cluster = self.store.get_resource(cluster_id)
        node = _node(cluster, node_id)
        if node is None or not node.get("setup_pending"):
            return
        problems, handle = [], None
        try:
            task = _props(cluster)["nodeSetup"]["setupTask"]
            handle = self._start_setup_task(cluster, cluster.extra["compute"], node, task)
        except Exception as err:  # a bad task fails its node, never the scheduler
            problems.append(
                job_error(
                    "SetupTaskFailed",
                    f"The node setup task could not start on node {node_id}: "
                    f"{getattr(err, 'message', None) or f'{type(err).__name__}: {err}'}",
                )
            )
        crash_point("setup-task.started")
        with self.store.transaction():
            cluster = self.store.get_resource(cluster_id)
            node = _node(cluster, node_id)
            if node is None or not node.get("setup_pending"):
                if handle is not None:  # the node left meanwhile
                    self._in_background(self.compute.terminate, handle)
                return
            node.pop("setup_pending")
            if handle is not None:
                node["setup"] = handle
            else:
                self._node_ready(cluster.extra["compute"], node, problems, time.time())
            self.store.put_resource(
                cluster.id, cluster.type, cluster.name, cluster.body, cluster.extra
            )

    def _stop_setup_task(self, cluster_id: str, handle: dict) -> None:
        """Stop a departed node's setup task, then forget it (stop first, forget last)."""
        crash_point("setup-task.stopping")
        self.compute.terminate(handle)
        with self.store.transaction():
            cluster = self.store.get_resource(cluster_id)
            stopping = (cluster.extra["compute"].get("stopping") or []) if cluster else []
            if handle in stopping:
                stopping.remove(handle)
                self.store.put_resource(
                    cluster.id, cluster.type, cluster.name, cluster.body, cluster.extra
                )

    def _start_setup_task(self, cluster, state: dict, node: dict, task: dict) -> dict:
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
        work = self._setup_work_dir(state, node)
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
        return self.compute.launch(
            spec, Placement(state["uid"], [node["id"]], [node.get("bundle", 0)])
        )

    def _setup_task_ended(self, state: dict, node: dict, now: float, outcome) -> None:
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

    def stop_setup_tasks(self, cluster) -> None:
        """Stop the setup tasks still running on a cluster's nodes (cluster deleted), all at
        once: each may take the whole grace period."""
        compute = cluster.extra.get("compute") or {}
        handles = [n["setup"] for n in compute.get("nodes", []) if n.get("setup")]
        handles += compute.get("stopping") or []
        stoppers = [self._in_background(self.compute.terminate, h) for h in handles]
        for stopper in stoppers:
            stopper.join()

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
            # Where the agent will claim the job is known before it starts, so a server that
            # dies before saving the handle finds the job again (see recover).
            with self.store.transaction():
                job = self.store.get_resource(job_id)
                if job is None or _props(job)["executionState"] != "running":
                    return
                job.extra["record_dir"] = plan.spec.record_dir
                self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
            crash_point("job-launch.before-start")
            handle = self.compute.launch(plan.spec, self._placement(job))
            crash_point("job-launch.started")
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
                job.extra.update(handle=handle, launching=False)
                self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
        if not alive:
            self.compute.terminate(handle)

    def _placement(self, job) -> Placement:
        """Which slot of the compute backend each of the job's nodes holds."""
        cluster = self.store.get_resource(job.extra["cluster"])
        nodes = (cluster.extra["compute"]["nodes"] if cluster else []) or []
        bundles = {n["id"]: n.get("bundle", 0) for n in nodes}
        ids = job.extra.get("nodes") or []
        return Placement(
            job.extra.get("cluster_uid", ""), list(ids), [bundles.get(i, 0) for i in ids]
        )

    def plan(self, job) -> nodeagent.JobPlan:
        """The node agent's plan for ``job`` on its cluster (directories, environment, command)."""
        cluster = self.store.get_resource(job.extra["cluster"])
        cluster_uid = (
            cluster.extra["compute"]["uid"] if cluster else job.extra.get("cluster_uid", "none")
        )
        values = job.extra["secrets"].get("values", {})
        nodes = self.job_nodes(job, cluster)
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
            nodes=nodes or None,
            shared_temp=self.shared_job_temp(job.extra["uid"]) if nodes else None,
        )

    def _finish(self, job, outcome: nodeagent.Outcome, clusters: dict | None = None) -> None:
        """Record how a running job ended, from its node agent's outcome."""
        errors = []
        if outcome.error:
            errors.append(job_error(outcome.error["code"], outcome.error["message"]))
        elif outcome.exit_code != 0 and outcome.task:
            task = outcome.task
            what = "job preparation" if outcome.phase == "jobPreparation" else "job's process"
            errors.append(
                job_error(
                    "JobPreparationFailed" if outcome.phase == "jobPreparation" else "JobFailed",
                    f"The {what} {task['name']} on node {task['node']} exited with code "
                    f"{outcome.exit_code}, so the job's other processes were stopped; see "
                    f"{task['stderr']} and {task['stdout']} in stdouterr.",
                    {"exitCode": outcome.exit_code},
                )
            )
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
        are deleted too, last: a record is marked ``deleting`` first, so a server that dies
        midway finishes the delete when it starts again (see recover), and no process
        outlives its record."""
        handles = []
        with self.store.transaction():
            for stale in jobs:
                job = self.store.get_resource(stale.id)
                if job is None:
                    continue
                props = _props(job)
                state = props["executionState"]
                if not remove and state not in ACTIVE:
                    continue
                if state == "queued" and not remove:
                    self.finish_now(job, "failed", error)
                    continue
                if job.extra.get("handle") and state in ACTIVE:
                    handles.append((job.id, job.extra["handle"]))
                if state in ACTIVE:
                    props["executionState"] = "terminating"
                    props["executionStateTransitionTime"] = _iso(time.time())
                job.extra["stop_error"] = error
                if remove:
                    job.extra["deleting"] = True
                    props["provisioningState"] = "deleting"
                self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
        crash_point("job-stop.marked")
        stoppers = [self._in_background(self.compute.terminate, h) for _, h in handles]
        for stopper in stoppers:
            stopper.join()
        crash_point("job-stop.stopped")
        with self.store.transaction():
            for stale in jobs:
                job = self.store.get_resource(stale.id)
                if job is None:
                    continue
                if _props(job)["executionState"] == "terminating":
                    handle = job.extra.get("handle")
                    outcome = (
                        self.compute.read_outcome(handle) if handle else None
                    )  # a launch still in progress sees the state and stops its process
                    self.finish_now(
                        job,
                        "failed",
                        error,
                        exit_code=outcome.exit_code if outcome else None,
                        release=not remove,
                    )
                if remove:
                    self._release(job)
                    self.store.delete_resource(job.id)
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
        for node_id in job.extra.get("nodes") or []:
            shutil.rmtree(self.node_job_temp(node_id, uid), ignore_errors=True)
        shutil.rmtree(self.job_mount_root(uid), ignore_errors=True)
        record_dir = (job.extra.get("handle") or {}).get("record_dir")
        if record_dir:
            shutil.rmtree(record_dir, ignore_errors=True)

    def forget_cluster_files(self, cluster) -> None:
        """Release a deleted cluster's nodes and remove what they kept here."""
        uid = (cluster.extra.get("compute") or {}).get("uid")
        if uid:
            self.compute.release(uid)
            shutil.rmtree(self.root / "clusters" / uid, ignore_errors=True)

    def recover(self) -> None:
        """At start, finish what a crash (or a stop) cut short, so that every process is
        tracked or stopped and no job that ran is reported as never run:

        * setup tasks of departed nodes are stopped, then forgotten;
        * a node's or a job's launch cut short: the agent's claim (``agent.json``) says
          whether its process started; if it did it is tracked, else it never will start;
        * a job whose process ended untracked gets its recorded outcome;
        * a job being terminated or deleted is stopped, then failed or deleted.
        """
        self.compute.start(self.wake)  # its jobs are looked at below
        for cluster in self.store.list_resources(type=CLUSTER_TYPE):
            try:
                self._recover_cluster(cluster.id)
            except Exception:
                log.exception("cluster %s could not be recovered; it is left as it is", cluster.id)
        deletes, stops, resize_stops = [], [], []
        for job in self.store.list_resources(type=JOB_TYPE):
            props = _props(job)
            if props["executionState"] in ACTIVE:
                with self._active_lock:
                    self._active.add(job.id)
            if props["executionState"] in ("running", "terminating") and not job.extra.get(
                "handle"
            ):
                job = self._adopt(job)
            if job.extra.get("deleting"):
                deletes.append(job)
            elif _props(job)["executionState"] == "terminating":
                (resize_stops if job.extra.get("after_stop") else stops).append(job)
        for job in resize_stops:
            self._stop_for_resize(job.id)
        for job in stops:
            self.stop_jobs([job], job.extra.get("stop_error") or _stopped_by_restart())
        if deletes:
            self.stop_jobs(deletes, _stopped_by_restart(), remove=True)

    def _recover_cluster(self, cluster_id: str) -> None:
        cluster = self.store.get_resource(cluster_id)
        state = cluster.extra["compute"]
        stoppers = [
            self._in_background(self.compute.terminate, h) for h in state.get("stopping") or []
        ]
        found = {}
        for node in state["nodes"]:
            if node.get("setup_pending"):
                record_dir = os.path.join(
                    self._setup_work_dir(state, node), nodeagent.RECORD_DIR_NAME
                )
                found[node["id"]] = self.compute.find(record_dir)
        for stopper in stoppers:
            stopper.join()
        with self.store.transaction():
            cluster = self.store.get_resource(cluster_id)
            state = cluster.extra["compute"]
            state["stopping"] = []
            for node in state["nodes"]:
                if node["id"] in found:
                    node.pop("setup_pending", None)  # not found: prepared (started) again
                    if found[node["id"]] is not None:
                        node["setup"] = found[node["id"]]
            self.store.put_resource(
                cluster.id, cluster.type, cluster.name, cluster.body, cluster.extra
            )

    def _adopt(self, job):
        """A job left running or terminating without a handle: its launch was cut short."""
        record_dir = job.extra.get("record_dir")
        outcome = self.compute.read_outcome({"record_dir": record_dir}) if record_dir else None
        handle = None
        if outcome is None and record_dir:
            handle = self.compute.find(record_dir)
            if handle is not None:
                outcome = self.compute.read_outcome(handle)
        with self.store.transaction():
            job = self.store.get_resource(job.id)
            if handle is not None:
                job.extra.update(handle=handle, launching=False)
                self.store.put_resource(job.id, job.type, job.name, job.body, job.extra)
            elif outcome is not None:
                self._finish(job, outcome)
            elif not job.extra.get("deleting"):
                self.finish_now(
                    job,
                    "failed",
                    job_error(
                        "JobProcessVanished",
                        "The local cloud stopped while starting the job, so it never ran.",
                    ),
                )
            return self.store.get_resource(job.id)


def _stopped_by_restart() -> dict:
    return job_error(
        "JobTerminated", "The job was terminated (the local cloud finished a stop it had begun)."
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
