"""The Ray backend: a Batch AI cluster is a Ray placement group, a job's nodes Ray actors.

* A cluster of N nodes is one placement group of N bundles with ``STRICT_SPREAD`` (one Batch
  AI node per Ray node), named ``batchai-cluster-<uid>-<N>`` and detached, so it outlives the
  server. A bundle's resources come from the cluster's VM size (``VM_SIZES``: Azure's cores
  and GPUs; ``ray_bundles`` overrides). On a Ray cluster without GPUs the GPUs are left out,
  so the tutorial's NC6 job runs on CPU there, as it does on the local backend, and its
  execution log says so.
* While the group is pending the cluster stays ``resizing``; once Ray has had a moment to
  place it and has not, the cluster shows Batch AI's ``AllocationFailed`` naming what the Ray
  cluster lacks, and it turns ``steady`` by itself when a Ray node that fits joins. A resize
  replaces the group (after the cluster's running jobs), a delete removes it.
* When the group is placed, a small task in each bundle checks that its Ray node sees the
  shares' folders and a marker the server wrote (the state directory must be on a filesystem
  every Ray node mounts at the same path); a node that does not makes the cluster report
  ``AZFMountError``, as a failed Azure Files mount did. A node whose check does not answer
  within ``CHECK_TIMEOUT`` (it cannot start Ray workers, or hangs) keeps the cluster
  ``resizing`` with an ``AllocationFailed`` naming it; its check is cancelled and asked again
  until it answers. The checks are followed across passes, never waited on, so one silent
  node does not hold up other clusters.
* A job's node is a detached, named actor in its node's bundle (ray_node.NodeAgentActor)
  running the node agent with the job's plan, restricted to that node's processes; each
  node records its own outcome beside the job's output and the probe combines them (the first
  failure fails the job and stops the other nodes; the job succeeds when every node with a
  main process has). A Ray node that dies takes its actor and the agent with it; the agent
  records the loss, or the probe finds the actor gone, and the job fails with the error an
  unusable node gave.

The actor names and the per-node records are kept in ``launch.json`` beside the job's
record, so a server started later finds its jobs again by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from ...faults import NODE_ERROR_CODE
from .. import nodeagent
from ..nodeagent import Outcome
from ..schema import job_error
from . import Allocation, Compute, ComputeError
from .local import LocalCompute

log = logging.getLogger("quickstart.localcloud")

NAMESPACE = "quickstart-localcloud"
LAUNCH_FILE = "launch.json"
NODES_DIR = "nodes"
PLACEMENT_GRACE = 1.5  # seconds a group may stay pending before the cluster shows why
LIVENESS_INTERVAL = 1.0  # seconds between asking a job's actors whether they live
START_TIMEOUT = 60.0  # seconds for a job's actors to be placed and start their agents
CHECK_TIMEOUT = 60.0  # seconds for every node of a placed cluster to answer the mount check

# Cores and GPUs of the VM sizes Batch AI offered (Azure's published sizes). A bundle asks
# for {"CPU": cores, "GPU": gpus}; ``ray_bundles`` overrides any of them.
VM_SIZES = {
    "STANDARD_NC6": (6, 1),
    "STANDARD_NC12": (12, 2),
    "STANDARD_NC24": (24, 4),
    "STANDARD_NC24R": (24, 4),
    "STANDARD_NC6S_V2": (6, 1),
    "STANDARD_NC12S_V2": (12, 2),
    "STANDARD_NC24S_V2": (24, 4),
    "STANDARD_NC24RS_V2": (24, 4),
    "STANDARD_NC6S_V3": (6, 1),
    "STANDARD_NC12S_V3": (12, 2),
    "STANDARD_NC24S_V3": (24, 4),
    "STANDARD_NC24RS_V3": (24, 4),
    "STANDARD_ND6S": (6, 1),
    "STANDARD_ND12S": (12, 2),
    "STANDARD_ND24S": (24, 4),
    "STANDARD_ND24RS": (24, 4),
    "STANDARD_NV6": (6, 1),
    "STANDARD_NV12": (12, 2),
    "STANDARD_NV24": (24, 4),
    "STANDARD_D1_V2": (1, 0),
    "STANDARD_D2_V2": (2, 0),
    "STANDARD_D3_V2": (4, 0),
    "STANDARD_D4_V2": (8, 0),
    "STANDARD_D5_V2": (16, 0),
    "STANDARD_D11_V2": (2, 0),
    "STANDARD_D12_V2": (4, 0),
    "STANDARD_D13_V2": (8, 0),
    "STANDARD_D14_V2": (16, 0),
    "STANDARD_F2S_V2": (2, 0),
    "STANDARD_F4S_V2": (4, 0),
    "STANDARD_F8S_V2": (8, 0),
    "STANDARD_F16S_V2": (16, 0),
}
UNKNOWN_SIZE = (1, 0)


@dataclasses.dataclass
class _Check:
    """A placed cluster's mount checks in flight: for which group and folders, since when."""

    key: tuple  # (placement group name, folders)
    refs: list  # one task per bundle, in bundle order
    since: float


def parse_bundles(text) -> dict:
    """``ray_bundles`` as {VM size (upper case): {resource: amount}}: a dict, or text such as
    ``STANDARD_NC6=CPU:1,GPU:0;STANDARD_NC12=CPU:2`` (raises ValueError naming the bad part)."""
    if not text:
        return {}
    if isinstance(text, dict):
        items = text.items()
    else:
        items = []
        for part in str(text).split(";"):
            if not part.strip():
                continue
            size, sep, resources = part.partition("=")
            if not sep or not size.strip():
                raise ValueError(f"ray bundle {part.strip()!r} is not SIZE=RESOURCE:AMOUNT,...")
            amounts = {}
            for item in resources.split(","):
                name, sep, amount = item.partition(":")
                try:
                    amounts[name.strip()] = float(amount)
                except ValueError:
                    sep = ""
                if not sep or not name.strip() or amounts.get(name.strip(), 0) < 0:
                    raise ValueError(
                        f"ray bundle {part.strip()!r}: {item.strip()!r} is not RESOURCE:AMOUNT"
                    ) from None
            items.append((size.strip(), amounts))
    return {size.upper(): {k: float(v) for k, v in amounts.items()} for size, amounts in items}


class RayCompute(Compute):
    name = "ray"
    resizes_running_clusters = False

    def __init__(self, address: str = "auto", bundles: dict | None = None, state_dir=None):
        self.address = address or "auto"
        self.bundles = bundles or {}
        self.state_dir = Path(state_dir) if state_dir else None
        self.local = LocalCompute()  # handles made before this server used Ray
        self._ray = None
        self._connected_here = False
        self._wake = lambda: None
        self._lock = threading.Lock()
        self._wanted: dict = {}  # cluster uid -> (count, vm size, folders)
        self._known: dict = {}  # cluster uid -> Allocation for the wanted count
        self._pending_since: dict = {}
        self._released: set = set()
        self._reap: list = []  # handles of ended jobs whose actors are to be stopped
        self._actors: dict = {}
        self._last_alive: dict = {}
        self._gpus = 0.0
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._thread = None
        self._marker = None
        self._checks: dict = {}  # cluster uid -> _Check in flight

    @classmethod
    def from_options(cls, options: dict) -> RayCompute:
        try:
            bundles = parse_bundles(options.get("ray_bundles"))
        except ValueError as err:
            raise ComputeError(f"{err}") from None
        return cls(options.get("ray_address") or "auto", bundles, options.get("state_dir"))

    # ------------------------------------------------------------------ connection

    def start(self, wake) -> None:
        self._wake = wake
        if self._thread is not None:
            return
        try:
            import ray
        except ImportError:
            raise ComputeError(
                "compute 'ray' needs Ray: pip install -r requirements.txt (it pins ray)"
            ) from None
        self._ray = ray
        if not ray.is_initialized():
            self._check_reachable()
            try:
                ray.init(
                    address=self.address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise ComputeError(
                    f"cannot reach the Ray cluster at {self.address!r} "
                    f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); start "
                    "one (ray start --head) or give its address with --ray-address"
                ) from None
            self._connected_here = True
        self._refresh_resources()
        if self.state_dir is not None:
            self._marker = str(self.state_dir / "compute" / ".shared-filesystem")
            os.makedirs(os.path.dirname(self._marker), exist_ok=True)
            if not os.path.exists(self._marker):
                with open(self._marker, "w", encoding="utf-8") as handle:
                    handle.write(secrets.token_hex(8))
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="local-cloud-ray", daemon=True)
        self._thread.start()

    def _check_reachable(self) -> None:
        """Fail at once, in one line, for a head address nothing answers on (Ray itself
        retries for minutes)."""
        if self.address == "auto" or "://" in self.address:
            return
        host, _, port = self.address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except (OSError, ValueError) as err:
            raise ComputeError(
                f"cannot reach the Ray cluster at {self.address!r} ({err}); start one "
                "(ray start --head) or give its head's address with --ray-address HOST:PORT"
            ) from None

    def stop(self) -> None:
        self._stopping.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._lock:
            self._checks.clear()  # their refs belong to this connection
        if self._connected_here and self._ray is not None:
            with contextlib.suppress(Exception):
                self._ray.shutdown()
            self._connected_here = False

    # ------------------------------------------------------------------ clusters

    def bundle_for(self, vm_size: str) -> dict:
        """The Ray resources one node of ``vm_size`` asks for on this Ray cluster."""
        key = (vm_size or "").upper()
        if key in self.bundles:
            bundle = dict(self.bundles[key])
        else:
            cores, gpus = VM_SIZES.get(key, UNKNOWN_SIZE)
            bundle = {"CPU": float(cores), "GPU": float(gpus)}
            if not self._gpus:
                bundle.pop("GPU")  # a CPU-only Ray cluster runs GPU sizes on CPU, and says so
        bundle = {k: v for k, v in bundle.items() if v > 0}
        return bundle or {"CPU": 0.001}  # Ray needs one resource per bundle

    def allocation(self, cluster_uid: str, count: int, vm_size: str, folders: list) -> Allocation:
        wanted = (count, vm_size, tuple(folders))
        with self._lock:
            if self._wanted.get(cluster_uid) != wanted:
                self._wanted[cluster_uid] = wanted
                self._known.pop(cluster_uid, None)
                self._pending_since[cluster_uid] = time.monotonic()
                self._kick.set()
            return self._known.get(cluster_uid) or Allocation(ready=False)

    def release(self, cluster_uid: str) -> None:
        with self._lock:
            self._wanted.pop(cluster_uid, None)
            self._known.pop(cluster_uid, None)
            check = self._checks.pop(cluster_uid, None)
        if check is not None:
            self._cancel(check.refs)
        for group in self._groups(cluster_uid):
            self._remove_group(group)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            busy = False
            try:
                busy = self._pass()
            except Exception:
                log.exception("the Ray backend failed a pass; retrying")
            self._kick.wait(0.2 if busy else 1.0)
            self._kick.clear()

    def _pass(self) -> bool:
        """Place what the scheduler wants, stop ended jobs' actors; True while anything waits."""
        with self._lock:
            reap, self._reap = self._reap, []
        for handle in reap:
            self.terminate(handle)
        self._refresh_resources()
        with self._lock:
            wanted = {
                uid: w
                for uid, w in self._wanted.items()
                if uid not in self._known or not self._known[uid].ready
            }
        for uid, (count, vm_size, folders) in wanted.items():
            allocation = self._place(uid, count, vm_size, list(folders))
            if allocation is not None:
                with self._lock:
                    if self._wanted.get(uid) == (count, vm_size, folders):
                        self._known[uid] = allocation
                self._wake()
        with self._lock:
            return any(uid not in self._known or not self._known[uid].ready for uid in self._wanted)

    def _refresh_resources(self) -> None:
        with contextlib.suppress(Exception):
            self._gpus = float(self._ray.cluster_resources().get("GPU", 0))

    def _groups(self, cluster_uid: str) -> list:
        """The live placement groups of a cluster: [(name, id hex, table entry)]."""
        prefix = f"batchai-cluster-{cluster_uid}-"
        from ray.util.placement_group import placement_group_table

        return [
            entry
            for entry in placement_group_table().values()
            if (entry.get("name") or "").startswith(prefix) and entry.get("state") != "REMOVED"
        ]

    def _remove_group(self, entry: dict) -> None:
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        with contextlib.suppress(Exception):
            remove_placement_group(
                PlacementGroup(
                    self._ray.PlacementGroupID(bytes.fromhex(entry["placement_group_id"]))
                )
            )

    def _group(self, cluster_uid: str, count: int):
        """The cluster's placement group of ``count`` bundles (a PlacementGroup), or None."""
        from ray.util.placement_group import PlacementGroup

        for entry in self._groups(cluster_uid):
            if entry["name"] == f"batchai-cluster-{cluster_uid}-{count}":
                return PlacementGroup(
                    self._ray.PlacementGroupID(bytes.fromhex(entry["placement_group_id"])),
                    bundle_cache=[entry["bundles"][i] for i in sorted(entry["bundles"])],
                ), entry
        return None, None

    def _place(self, uid: str, count: int, vm_size: str, folders: list) -> Allocation | None:
        """One look at a cluster's placement: an Allocation, or None to look again later."""
        from ray.util.placement_group import placement_group

        name = f"batchai-cluster-{uid}-{count}"
        for entry in self._groups(uid):
            if entry["name"] != name:
                self._remove_group(entry)  # a resize replaces the group whole
        if count == 0:
            return Allocation(ready=True, addresses=[], bundles=[])
        group, entry = self._group(uid, count)
        bundle = self.bundle_for(vm_size)
        if group is None:
            placement_group(
                [bundle] * count, strategy="STRICT_SPREAD", name=name, lifetime="detached"
            )
            return None
        if entry["state"] != "CREATED":
            since = self._pending_since.get(uid, time.monotonic())
            if time.monotonic() - since < PLACEMENT_GRACE:
                return None
            return Allocation(ready=False, error=self._shortage(count, vm_size, bundle))
        node_ips = {n["NodeID"]: n["NodeManagerAddress"] for n in self._ray.nodes()}
        places = entry["bundles_to_node_id"]
        addresses = [node_ips.get(places.get(i), "") for i in range(count)]
        named = [f"{addresses[i] or '?'} (Ray node {places.get(i)})" for i in range(count)]
        return self._checked(uid, (name, tuple(folders)), group, addresses, named)

    def _shortage(self, count: int, vm_size: str, bundle: dict) -> dict:
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        fit = [n for n in nodes if all(n["Resources"].get(k, 0) >= v for k, v in bundle.items())]
        need = ", ".join(f"{v:g} {k}" for k, v in bundle.items())
        missing = max(count - len(fit), 0)
        what = (
            f"{missing} more Ray node(s) with {need}"
            if missing
            else f"{need} free on {count} Ray nodes (other clusters hold some, or a node has "
            "stopped answering Ray: `ray list nodes`, its raylet's log)"
        )
        return job_error(
            "AllocationFailed",
            f"Allocation failed: Ray cannot place {count} node(s) of size {vm_size} "
            f"({need} each, one per Ray node: STRICT_SPREAD); the Ray cluster has "
            f"{len(nodes)} live node(s), {len(fit)} of them with {need}. It needs {what}. "
            "Add Ray nodes (ray start --address ...) or resize the cluster; it keeps waiting "
            "for them.",
            {"Missing": what},
        )

    def _checked(self, uid: str, key: tuple, group, addresses: list, named: list):
        """The placed cluster's Allocation once every bundle's mount check has answered (the
        folders its nodes cannot see in ``unseen``); an ``AllocationFailed`` naming the nodes
        whose checks did not answer within CHECK_TIMEOUT (cancelled: the next pass asks
        again); None while the checks run."""
        with self._lock:
            check = self._checks.get(uid)
        if check is not None and check.key != key:  # a resize or other shares: ask anew
            self._cancel(check.refs)
            check = None
        if check is None:
            refs = self._submit_checks(group, len(addresses), list(key[1]))
            check = _Check(key, refs, time.monotonic())
            with self._lock:
                self._checks[uid] = check
        try:
            ready, waiting = self._ray.wait(check.refs, num_returns=len(check.refs), timeout=0)
        except Exception:
            with self._lock:
                self._checks.pop(uid, None)  # refs Ray no longer knows: ask again next pass
            raise
        if waiting and time.monotonic() - check.since < CHECK_TIMEOUT:
            return None
        with self._lock:
            if self._checks.get(uid) is check:
                self._checks.pop(uid)
        self._cancel(waiting)
        unanswered = {ref.hex() for ref in waiting}
        answers, silent, failed = [], [], []
        for node, ref in zip(named, check.refs, strict=True):
            if ref.hex() in unanswered:
                silent.append(node)
                continue
            try:
                answers.append(self._ray.get(ref, timeout=10))
            except Exception as err:  # the task failed on its node (a worker that crashed)
                failed.append(f"{node}: {type(err).__name__}")
        if silent or failed:
            log.warning(
                "cluster %s: the mount check did not answer on %s; asking again",
                uid,
                ", ".join(silent + failed),
            )
            return Allocation(ready=False, error=self._silence(len(named), silent, failed))
        return Allocation(
            ready=True,
            addresses=addresses,
            bundles=list(range(len(addresses))),
            unseen=self._unseen(answers, list(key[1])),
        )

    def _submit_checks(self, group, count: int, folders: list) -> list:
        """One ray_node.sees task in each of the group's bundles: their object refs."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from . import ray_node

        self._register_by_value()
        check = self._ray.remote(num_cpus=0)(ray_node.sees)
        return [
            check.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=i
                )
            ).remote(folders, self._marker)
            for i in range(count)
        ]

    def _cancel(self, refs: list) -> None:
        """Stop checks that did not answer, so that asking again does not pile them up."""
        for ref in refs:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)

    @staticmethod
    def _silence(count: int, silent: list, failed: list) -> dict:
        """Batch AI's allocation error for placed nodes whose Ray node runs no check."""
        parts = []
        if silent:
            parts.append(
                f"did not answer within {CHECK_TIMEOUT:g} s on {len(silent)} Ray node(s): "
                f"{', '.join(silent)}"
            )
        if failed:
            parts.append(f"failed on {len(failed)} Ray node(s): {', '.join(failed)}")
        nodes = [*silent, *(f.rsplit(": ", 1)[0] for f in failed)]
        return job_error(
            "AllocationFailed",
            f"Allocation failed: Ray placed the cluster's {count} node(s), but the check that "
            f"each node sees the shares (a small Ray task in its bundle) {'; it '.join(parts)}. "
            "Check that each of them is alive (ray list nodes) and runs Python with the same "
            "Ray as the local cloud and can start Ray workers (its raylet's log says why one "
            "does not start); the cluster keeps trying.",
            {"Unanswered": ", ".join(nodes)},
        )

    def _unseen(self, answers: list, folders: list) -> dict:
        """{folder: [the Ray nodes that cannot see it, by address and Ray node ID]}."""
        unseen: dict = {}
        for answer in answers:
            lost = (
                folders
                if self._marker and os.path.dirname(self._marker) in answer["missing"]
                else answer["missing"]
            )
            for folder in lost:
                unseen.setdefault(folder, []).append(answer["node"])
        return unseen

    def _register_by_value(self) -> None:
        """Send ray_node's code with each call, so Ray nodes need not have this package."""
        from ray import cloudpickle

        from . import ray_node

        with contextlib.suppress(ValueError):  # registered already
            cloudpickle.register_pickle_by_value(ray_node)

    # ------------------------------------------------------------------ jobs

    def launch(self, spec, placement) -> dict:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from . import ray_node

        self._register_by_value()
        count = len(placement.node_ids)
        group, entry = self._cluster_group(placement.cluster_uid)
        if group is None:
            raise OSError(
                "the cluster's Ray placement group is gone (removed outside the local cloud); "
                "resize or recreate the cluster"
            )
        nodeagent.lay_out(spec)  # the shared filesystem: every node sees what is made here
        several = count > 1
        key = hashlib.sha1(spec.record_dir.encode("utf-8")).hexdigest()[:16]
        main = sorted({t["node"] for t in spec.tasks if t.get("main", True)}) or [
            placement.node_ids[0]
        ]
        handle = {
            "backend": self.name,
            "address": self._ray.get_runtime_context().gcs_address,
            "record_dir": spec.record_dir,
            "nodes": list(placement.node_ids),
            "main": main if several else list(placement.node_ids),
            "actors": [f"batchai-{key}-{i}" for i in range(count)],
            "records": [
                os.path.join(spec.record_dir, NODES_DIR, node) for node in placement.node_ids
            ],
        }
        for record in handle["records"]:
            os.makedirs(record, exist_ok=True)
            for stale in (nodeagent.EXIT_FILE, nodeagent.AGENT_FILE):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(record, stale))
        nodeagent._write_json_atomically(os.path.join(spec.record_dir, LAUNCH_FILE), handle)
        source = Path(nodeagent.__file__).read_text(encoding="utf-8")
        actor_class = self._ray.remote(ray_node.NodeAgentActor)
        starts = []
        for index, node in enumerate(placement.node_ids):
            bundle_index = placement.bundles[index]
            gpus = entry["bundles"].get(bundle_index, {}).get("GPU", 0)
            notes = [
                f"Node {node} is bundle {bundle_index} of Ray placement group "
                f"{entry['name']}; its processes run on that Ray node."
            ]
            if not self._gpus:
                notes.append(
                    "This Ray cluster has no GPUs, so the job runs on CPU (the VM size's GPUs "
                    "are left out of its Ray bundle)."
                )
            node_spec = dataclasses.replace(
                spec,
                node=node if several else None,
                record_dir=handle["records"][index],
                notes=[*spec.notes, *notes],
                make_dirs=[],
                links={},
                files={},
                executables=[],
                node_lost_error=job_error(
                    NODE_ERROR_CODE,
                    f"Node {node} became unusable while the job ran on it: its Ray actor "
                    "ended (the Ray node died or left the cluster); the job was stopped.",
                ),
            )
            actor = actor_class.options(
                name=handle["actors"][index],
                namespace=NAMESPACE,
                lifetime="detached",
                num_cpus=0,
                num_gpus=gpus,
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=bundle_index
                ),
            ).remote()
            self._actors[handle["actors"][index]] = actor
            starts.append(
                actor.start.remote(
                    source, json.dumps(dataclasses.asdict(node_spec)), handle["records"][index]
                )
            )
        try:
            started = self._ray.get(starts, timeout=START_TIMEOUT)
        except Exception as err:
            self.terminate(handle)
            raise OSError(f"the job's Ray actors did not start: {err}") from None
        handle["ray_nodes"] = [answer["ray_node"] for answer in started]
        nodeagent._write_json_atomically(os.path.join(spec.record_dir, LAUNCH_FILE), handle)
        return handle

    def _cluster_group(self, cluster_uid: str):
        for entry in self._groups(cluster_uid):
            if entry.get("state") == "CREATED":
                return self._group(cluster_uid, len(entry["bundles"]))
        return None, None

    def _actor(self, name: str):
        actor = self._actors.get(name)
        if actor is None:
            actor = self._ray.get_actor(name, namespace=NAMESPACE)  # ValueError: gone
            self._actors[name] = actor
        return actor

    def _outcomes(self, handle: dict) -> dict:
        return {
            node: nodeagent.read_outcome(record)
            for node, record in zip(handle["nodes"], handle["records"], strict=True)
        }

    @staticmethod
    def _combined(handle: dict, outcomes: dict) -> Outcome | None:
        """The job's outcome from its nodes' (None while it runs): the first failure, else
        success once every node with a main process succeeded."""
        ended = [o for o in outcomes.values() if o is not None]
        failed = sorted((o for o in ended if not o.succeeded), key=lambda o: o.ended)
        if failed:
            return failed[0]
        if all(outcomes.get(node) is not None for node in handle["main"]):
            first = outcomes[handle["main"][0]]
            return dataclasses.replace(first, ended=max(o.ended for o in ended))
        return None

    def _load(self, handle: dict) -> dict | None:
        if handle.get("backend") == self.name:
            return handle
        path = os.path.join(handle.get("record_dir") or "", LAUNCH_FILE)
        try:
            with open(path, encoding="utf-8") as source:
                return json.load(source)
        except (OSError, ValueError):
            return None

    def probe(self, handle: dict):
        if handle.get("backend") != self.name:
            return self.local.probe(handle)
        outcomes = self._outcomes(handle)
        outcome = self._combined(handle, outcomes)
        if outcome is not None:
            with self._lock:
                self._reap.append(handle)
            self._kick.set()
            return "ended", outcome
        key = handle["record_dir"]
        if time.monotonic() - self._last_alive.get(key, 0) < LIVENESS_INTERVAL:
            return "running", None
        self._last_alive[key] = time.monotonic()
        for node, name in zip(handle["nodes"], handle["actors"], strict=True):
            if outcomes.get(node) is not None:
                continue
            try:
                status = self._ray.get(self._actor(name).poll.remote(), timeout=10)
            except self._ray.exceptions.GetTimeoutError:
                continue  # busy, not gone: look again next time
            except Exception:
                status = "gone"
            if status is None:
                continue
            outcome = nodeagent.read_outcome(handle["records"][handle["nodes"].index(node)])
            if outcome is not None:
                return self.probe(handle)
            with self._lock:
                self._reap.append(handle)
            self._kick.set()
            return "vanished", Outcome(
                None,
                "job",
                job_error(
                    NODE_ERROR_CODE,
                    f"Node {node} became unusable while the job ran on it: its Ray actor "
                    f"{name} is gone (the Ray node died or left the cluster); the job's other "
                    "nodes were stopped.",
                ),
                time.time(),
            )
        return "running", None

    def terminate(self, handle: dict) -> None:
        if handle.get("backend") != self.name:
            return self.local.terminate(handle)
        stops = []
        for name in handle["actors"]:
            with contextlib.suppress(Exception):
                actor = self._actor(name)
                stops.append((name, actor, actor.stop.remote(nodeagent.TERMINATE_GRACE_SECONDS)))
        for name, actor, ref in stops:
            with contextlib.suppress(Exception):
                self._ray.get(ref, timeout=nodeagent.TERMINATE_GRACE_SECONDS + 15)
            with contextlib.suppress(Exception):
                self._ray.kill(actor, no_restart=True)
            self._actors.pop(name, None)
        return None

    def read_outcome(self, handle: dict):
        loaded = self._load(handle)
        if loaded is None:
            return self.local.read_outcome(handle)
        return self._combined(loaded, self._outcomes(loaded))

    def find(self, record_dir: str) -> dict | None:
        loaded = self._load({"record_dir": record_dir})
        if loaded is not None:
            return loaded
        return self.local.find(record_dir)
