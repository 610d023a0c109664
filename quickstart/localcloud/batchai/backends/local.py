"""The local backend: every node of every cluster is this host, every job a detached node
agent process here (the behaviour the local cloud always had)."""

from __future__ import annotations

import sys

from .. import nodeagent
from ..nodeagent import JobHandle
from . import Allocation, Compute


class LocalCompute(Compute):
    name = "local"

    def allocation(self, cluster_uid: str, count: int, vm_size: str, folders: list) -> Allocation:
        return Allocation(ready=True)

    def launch(self, spec, placement) -> dict:
        return nodeagent.launch(spec, python=sys.executable).to_json()

    def probe(self, handle: dict):
        return nodeagent.probe(JobHandle.from_json(handle))

    def terminate(self, handle: dict) -> None:
        nodeagent.terminate(JobHandle.from_json(handle))

    def read_outcome(self, handle: dict):
        return nodeagent.read_outcome(handle["record_dir"])

    def find(self, record_dir: str) -> dict | None:
        found = nodeagent.claim_or_find(record_dir)
        return found.to_json() if found is not None else None
