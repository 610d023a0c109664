"""What the portal shows, read from the store and the shares: plain dicts for the templates.

Only the stored bodies (which never hold secrets: the Batch AI surface keeps them in a record's
``extra``) and the job's own files are read; every text that may carry a secret goes through
``Scrubber`` first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..arm.resource_groups import RESOURCE_GROUP_TYPE
from ..batchai.schema import (
    CLUSTER_TYPE,
    EXPERIMENT_TYPE,
    JOB_TYPE,
    PRIORITIES,
    STDOUTERR,
    WORKSPACE_TYPE,
)
from ..blob.listing import blob_files
from ..server import redact

JOB_STATES = ("queued", "running", "terminating", "succeeded", "failed")
NODE_STATES = ("idle", "running", "preparing", "unusable", "leaving")
TAIL_BYTES = 64 * 1024
LOG_FILES = ("stdout.txt", "stderr.txt")


class Scrubber:
    """Hides the secrets this local cloud knows in any text it shows (client secret, storage
    key, and the admin passwords, secret values and keys stored in records' ``extra``), and
    SAS signatures."""

    MASK = "••••••"

    def __init__(self, credentials, store):
        self._credentials = credentials
        self._store = store

    def secrets(self, *records) -> list[str]:
        found = [self._credentials.client_secret, self._credentials.storage_key]
        for record in records:
            if record is not None:
                _collect(record.extra.get("secrets"), found)
        return sorted({s for s in found if isinstance(s, str) and len(s) >= 4}, key=len)[::-1]

    def __call__(self, text: str, *records) -> str:
        for secret in self.secrets(*records):
            text = text.replace(secret, self.MASK)
        return redact(text)


def _collect(value, found: list) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect(item, found)
    elif isinstance(value, str):
        found.append(value)


def when(iso_or_ts) -> str:
    """A stored time (ISO string or epoch seconds) as the portal shows it (local time)."""
    if iso_or_ts is None:
        return ""
    if isinstance(iso_or_ts, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(iso_or_ts))
    return iso_or_ts.replace("T", " ")[:19]


def short_id(arm_id: str) -> str:
    return arm_id.split("/providers/", 1)[-1] if "/providers/" in arm_id else arm_id


# ------------------------------------------------------------------ overview


@dataclass
class Page:
    items: list
    number: int
    count: int
    total: int


def overview(store, page: int = 1, per_page: int = 50) -> dict:
    """Resource groups, their workspaces with clusters and experiments (job counts per state),
    one page of jobs (newest first), and the file shares and Blob containers with their sizes."""
    groups = store.list_resources(type=RESOURCE_GROUP_TYPE)
    workspaces = store.list_resources(type=WORKSPACE_TYPE)
    clusters = store.list_resources(type=CLUSTER_TYPE)
    experiments = store.list_resources(type=EXPERIMENT_TYPE)
    jobs = store.resource_fields(JOB_TYPE, *JOB_FIELDS)
    counts: dict[str, dict[str, int]] = {}
    for job_id, _, state, *_ in jobs:
        per_state = counts.setdefault(job_id.rsplit("/jobs/", 1)[0], {})
        per_state[state] = per_state.get(state, 0) + 1
    tree = []
    for group in groups:
        entry = {"name": group.name, "tags": group.body.get("tags") or {}, "workspaces": []}
        for ws in workspaces:
            if ws.resource_group != group.resource_group:
                continue
            prefix = ws.id + "/"
            entry["workspaces"].append(
                {
                    "name": ws.name,
                    "clusters": [cluster_summary(c) for c in clusters if c.id.startswith(prefix)],
                    "experiments": [
                        {
                            "id": e.id,
                            "name": e.name,
                            "counts": counts.get(e.id, {}),
                            "total": sum(counts.get(e.id, {}).values()),
                        }
                        for e in experiments
                        if e.id.startswith(prefix)
                    ],
                }
            )
        tree.append(entry)
    pages = max(1, -(-len(jobs) // per_page))
    page = min(max(1, page), pages)
    newest = jobs[::-1][(page - 1) * per_page : page * per_page]
    rows = [job_row(*j) for j in newest]
    names = {e.id: e.name for e in experiments}
    for row in rows:
        row["experiment"] = names.get(row["id"].rsplit("/jobs/", 1)[0], row["experiment"])
    return {
        "groups": tree,
        "jobs": Page(rows, page, pages, len(jobs)),
        "shares": shares(store),
        "containers": containers(store),
    }


def cluster_summary(cluster) -> dict:
    props = cluster.body["properties"]
    state = cluster.extra.get("compute") or {"nodes": [], "errors": [], "resize_since": None}
    counts = {s: 0 for s in NODE_STATES}
    for node in state["nodes"]:
        counts[node["state"]] = counts.get(node["state"], 0) + 1
    manual = props.get("scaleSettings", {}).get("manual")
    target = manual["targetNodeCount"] if manual else "n/a"
    auto = props.get("scaleSettings", {}).get("autoScale")
    allocation = "resizing" if state.get("resize_since") is not None else "steady"
    return {
        "id": cluster.id,
        "name": cluster.name,
        "vm_size": props.get("vmSize", ""),
        "allocation": allocation,
        "target": manual["targetNodeCount"] if manual else None,
        "auto": auto,
        "allocated": len(state["nodes"]),
        "counts": counts,
        "errors": state.get("errors") or [],
        "status_line": (
            f"Cluster state: {allocation} Target: {target}; "
            f"Allocated: {len(state['nodes'])}; Idle: {counts['idle']}; "
            f"Unusable: {counts['unusable']}; Running: {counts['running']}; "
            f"Preparing: {counts['preparing']}; Leaving: {counts['leaving']}"
        ),
    }


JOB_FIELDS = (
    "$.properties.executionState",
    "$.properties.creationTime",
    "$.properties.executionInfo.exitCode",
    "$.properties.cluster.id",
)


def job_row(job_id: str, name: str, state: str, created, exit_code, cluster_id) -> dict:
    """A job's line in the overview, from ``resource_fields(JOB_TYPE, *JOB_FIELDS)``."""
    parts = job_id.split("/")
    return {
        "id": job_id,
        "name": name,
        "experiment": parts[-3] if len(parts) > 3 else "",
        "state": state,
        "created": when(created),
        "exit_code": exit_code,
        "cluster": (cluster_id or "").rsplit("/", 1)[-1],
    }


def job_summary(job) -> dict:
    props = job.body["properties"]
    info = props.get("executionInfo") or {}
    parts = job.body.get("id", job.id).split("/")  # as created, not lower-cased
    return {
        "id": job.id,
        "name": job.name,
        "experiment": parts[-3] if len(parts) > 3 else "",
        "state": props["executionState"],
        "created": when(props.get("creationTime")),
        "exit_code": info.get("exitCode"),
        "cluster": (props.get("cluster") or {}).get("id", "").rsplit("/", 1)[-1],
    }


def shares(store) -> list[dict]:
    found = []
    for share in store.list_shares():
        root = store.share_dir(share.name)
        size = files = 0
        for folder, _, names in os.walk(root) if root else ():
            for name in names:
                try:
                    size += os.lstat(os.path.join(folder, name)).st_size
                    files += 1
                except OSError:
                    pass
        found.append({"name": share.name, "quota": share.quota, "size": size, "files": files})
    return found


def containers(store) -> list[dict]:
    """Each Blob container with the blobs a List Blobs would return (a job's symbolic links
    and empty folders on a blob mount are not blobs) and their bytes."""
    found = []
    for container in store.list_containers():
        root = store.container_dir(container.name)
        blobs = blob_files(root, "") if root else []
        found.append(
            {
                "name": container.name,
                "size": sum(st.st_size for _, st in blobs),
                "blobs": len(blobs),
            }
        )
    return found


# ------------------------------------------------------------------ a cluster


def cluster_detail(store, cluster, timeline: list) -> dict:
    summary = cluster_summary(cluster)
    jobs = {}
    nodes = []
    for node in cluster.extra["compute"]["nodes"]:
        job_id = node.get("job")
        if job_id and job_id not in jobs:
            record = store.get_resource(job_id)
            jobs[job_id] = record.name if record else job_id.rsplit("/", 1)[-1]
        nodes.append(
            {
                "id": node["id"],
                "state": node["state"],
                "since": when(node.get("since")),
                "job_id": job_id,
                "job": jobs.get(job_id),
                "setup": bool(node.get("setup")),
            }
        )
    unusable = [n for n in nodes if n["state"] == "unusable"]
    summary.update(
        nodes=nodes,
        unusable_reason=[e["message"] for e in summary["errors"]] if unusable else [],
        timeline=timeline,
        created=when(cluster.body["properties"].get("creationTime")),
    )
    return summary


# ------------------------------------------------------------------ a job


def job_timeline(props: dict) -> list[tuple[str, str]]:
    """(state, since) from the times Batch AI records: created (queued), started (running),
    ended (the final state)."""
    info = props.get("executionInfo") or {}
    steps = [("queued", when(props.get("creationTime")))]
    if info.get("startTime"):
        steps.append(("running", when(info["startTime"])))
    state = props["executionState"]
    if state == "terminating":
        steps.append(("terminating", when(props.get("executionStateTransitionTime"))))
    if info.get("endTime") and state in ("succeeded", "failed"):
        steps.append((state, when(info["endTime"])))
    return steps


def queue_reason(store, job) -> str | None:
    """Why a queued job has not started, in the words a user needs; None unless queued."""
    props = job.body["properties"]
    if props["executionState"] != "queued":
        return None
    cluster = store.get_resource(job.extra.get("cluster", ""))
    if cluster is None:
        return "Its cluster no longer exists; the job will fail."
    state = cluster.extra["compute"]
    wanted = props.get("nodeCount", 1)
    nodes = state["nodes"]
    idle = [n for n in nodes if n["state"] == "idle"]
    if state["errors"] and all(n["state"] == "unusable" for n in nodes):
        return f"Every node of cluster '{cluster.name}' is unusable: " + "; ".join(
            e["message"] for e in state["errors"]
        )
    if state.get("resize_since") is not None:
        return f"Cluster '{cluster.name}' is resizing to {state['target']} node(s)."
    if len(nodes) < wanted:
        return (
            f"It needs {wanted} node(s); cluster '{cluster.name}' has {len(nodes)} "
            f"(target {state['target']}). Resize the cluster."
        )
    preparing = [n for n in nodes if n["state"] == "preparing"]
    if len(idle) < wanted and preparing:
        return f"{len(preparing)} node(s) of cluster '{cluster.name}' are still preparing."
    if len(idle) < wanted:
        ahead = [
            j
            for j in store.list_resources(type=JOB_TYPE)
            if j.extra.get("cluster") == cluster.id
            and j.body["properties"]["executionState"] in ("running", "terminating")
        ]
        names = ", ".join(j.name for j in ahead[:5]) or "none"
        return (
            f"It needs {wanted} idle node(s); cluster '{cluster.name}' has {len(idle)} idle. "
            f"Busy with: {names}."
        )
    priority = PRIORITIES.get(props.get("schedulingPriority", "normal"), 0)
    return f"Waiting for the scheduler's next pass (priority {priority}); it should start now."


def stdouterr_dir(store, job) -> str | None:
    where = (job.extra.get("dirs") or {}).get(STDOUTERR)
    root = store.share_dir(where["share"]) if where else None
    return os.path.join(root, where["path"]) if root else None


def read_from(path: str, offset: int, limit: int = TAIL_BYTES) -> tuple[str, int]:
    """(text, next offset) of a growing file from ``offset``; offset < 0 means its last
    ``limit`` bytes. A partial UTF-8 character at the end waits for the next read."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = max(0, size - limit) if offset < 0 else min(offset, size)
            f.seek(start)
            data = f.read(limit)
    except OSError:
        return "", max(offset, 0)
    cut = _whole_characters(data)
    return data[:cut].decode("utf-8", "replace"), start + cut


def _whole_characters(data: bytes) -> int:
    """How many leading bytes of ``data`` end on a UTF-8 character boundary."""
    i = len(data) - 1
    while i >= 0 and i > len(data) - 4 and (data[i] & 0xC0) == 0x80:
        i -= 1
    if i < 0:
        return len(data)
    lead = data[i]
    need = (
        2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1
    )
    return len(data) if len(data) - i >= need else i


def output_files(store, job, limit: int = 500) -> list[dict]:
    """Every file of the job's output directories and stdouterr: (directory id, path, size)."""
    found = []
    for ident, where in sorted((job.extra.get("dirs") or {}).items()):
        root = store.share_dir(where["share"])
        if root is None:
            continue
        base = os.path.join(root, where["path"])
        for folder, dirs, names in os.walk(base):
            dirs.sort()
            for name in sorted(names):
                path = os.path.join(folder, name)
                try:
                    size = os.stat(path).st_size
                except OSError:
                    continue
                found.append({"dir": ident, "path": os.path.relpath(path, base), "size": size})
                if len(found) >= limit:
                    return found
    return found


def output_file_path(store, job, ident: str, rel: str) -> str | None:
    """The on-disk path of file ``rel`` in the job's output directory ``ident``; None unless it
    is a file inside that directory."""
    where = (job.extra.get("dirs") or {}).get(ident)
    root = store.share_dir(where["share"]) if where else None
    if root is None:
        return None
    base = os.path.realpath(os.path.join(root, where["path"]))
    path = os.path.realpath(os.path.join(base, rel))
    if not path.startswith(base + os.sep) or not os.path.isfile(path):
        return None
    return path
