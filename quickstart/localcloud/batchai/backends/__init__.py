"""Where a Batch AI cluster's nodes and a job's processes run: the compute seam.

The scheduler decides (which nodes a cluster has, which job takes which nodes, when a job
ended) and the node agent's plan says what a node does for a job; a backend only *places*
that work. ``local`` runs every node as processes on the local cloud's own host (the
embedded default); ``ray`` (backends/ray_backend.py) makes a cluster a Ray placement group
and a job's nodes detached Ray actors. Nothing above this module knows which one runs: the
REST surface, the store and the plan are the same for both.

A backend answers with plain data the scheduler keeps in the store: a *handle* (a JSON
dict) per started job or setup task, and an ``Allocation`` per cluster resize. Handles of
the local backend carry no ``backend`` key (they predate this seam), so a state directory
written before it still works.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...server import LocalCloudError
from ..nodeagent import LaunchSpec, Outcome

CHOICES = ("local", "ray")
DEFAULT = "local"


class ComputeError(LocalCloudError):
    """A backend that cannot start (Ray missing, its cluster unreachable): one line for the
    user, naming what to fix."""


@dataclass
class Allocation:
    """How a cluster's resize to ``count`` nodes stands.

    ``ready`` False while the backend is still placing the nodes (the cluster stays
    ``resizing``), with ``error`` in Batch AI's shape once it knows the nodes cannot be had
    now. ``addresses`` are the nodes' network addresses in order (None: the scheduler's own
    loopback addresses); ``bundles`` which slot of the backend each node holds;
    ``unseen`` maps a folder the nodes must see (a share's) to the nodes that cannot, each
    named as the user finds it (its address, and the backend's own name for it if it has one)."""

    ready: bool
    addresses: list | None = None
    bundles: list | None = None
    error: dict | None = None
    unseen: dict = field(default_factory=dict)


@dataclass
class Placement:
    """Where a job's (or a setup task's) nodes are: the cluster, each node's id and slot."""

    cluster_uid: str
    node_ids: list
    bundles: list


class Compute:
    """The interface; ``LocalCompute`` (backends/local.py) is the reference behaviour."""

    name = "abstract"
    # False where a resize must wait for the cluster's running jobs (a Ray placement group
    # is replaced whole, and its actors with it).
    resizes_running_clusters = True

    def start(self, wake) -> None:
        """Connect (again: a no-op); ``wake()`` asks the scheduler for a pass."""

    def stop(self) -> None:
        """Disconnect; jobs and clusters are left as they are (they outlive the server)."""

    def allocation(self, cluster_uid: str, count: int, vm_size: str, folders: list) -> Allocation:
        """Where a resize of the cluster to ``count`` nodes stands. Called under the store's
        lock, so it only reads what the backend already knows and asks for the rest."""
        raise NotImplementedError

    def release(self, cluster_uid: str) -> None:
        """Free everything a deleted cluster holds."""

    def launch(self, spec: LaunchSpec, placement: Placement) -> dict:
        """Start a job's (or setup task's) node agents; its handle. Raises OSError."""
        raise NotImplementedError

    def probe(self, handle: dict) -> tuple[str, Outcome | None]:
        """("running", None), ("ended", outcome) or ("vanished", outcome with the reason)."""
        raise NotImplementedError

    def terminate(self, handle: dict) -> None:
        """Stop every process of the handle's job; returns once they are gone."""
        raise NotImplementedError

    def read_outcome(self, handle: dict) -> Outcome | None:
        """The outcome recorded for the handle's job (beside its output), or None yet."""
        raise NotImplementedError

    def find(self, record_dir: str) -> dict | None:
        """After a launch cut short: the handle of the job whose record is ``record_dir`` if
        it started, else None (and then it never will)."""
        raise NotImplementedError


def backend_for(options: dict) -> Compute:
    """The backend the local cloud's options choose (``compute``, ``ray_address``, ...)."""
    choice = (options.get("compute") or DEFAULT).lower()
    if choice == "local":
        from .local import LocalCompute

        return LocalCompute()
    if choice == "ray":
        from .ray_backend import RayCompute

        return RayCompute.from_options(options)
    raise ComputeError(f"compute must be one of {', '.join(CHOICES)}, not {choice!r}")
