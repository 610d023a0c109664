"""The local backend: every node of every cluster is this host, every job a detached node
agent process here (the behaviour the local cloud always had).

A job started on Ray by an earlier server of the same state directory (its handle says so) is
still followed, through a Ray connection made for it: a server that takes over a state
directory without ``--compute ray`` (standby.py) must not lose those jobs."""

from __future__ import annotations

import json
import os
import sys

from .. import nodeagent
from ..nodeagent import JobHandle
from . import Allocation, Compute


class LocalCompute(Compute):
    name = "local"

    def __init__(self):
        self._other = None

    def _elsewhere(self, handle: dict):
        """The backend that follows a job this one did not start, or None for its own."""
        if handle.get("backend", self.name) == self.name:
            return None
        if self._other is None:
            from .ray_backend import RayCompute

            other = RayCompute(handle.get("address") or "auto")
            other.start(lambda: None)
            self._other = other
        return self._other

    def stop(self) -> None:
        if self._other is not None:
            self._other.stop()
            self._other = None

    def allocation(self, cluster_uid: str, count: int, vm_size: str, folders: list) -> Allocation:
        return Allocation(ready=True)

    def launch(self, spec, placement) -> dict:
        return nodeagent.launch(spec, python=sys.executable).to_json()

    def probe(self, handle: dict):
        other = self._elsewhere(handle)
        return other.probe(handle) if other else nodeagent.probe(JobHandle.from_json(handle))

    def terminate(self, handle: dict) -> None:
        other = self._elsewhere(handle)
        if other:
            other.terminate(handle)
        else:
            nodeagent.terminate(JobHandle.from_json(handle))

    def read_outcome(self, handle: dict):
        other = self._elsewhere(handle)
        return other.read_outcome(handle) if other else nodeagent.read_outcome(handle["record_dir"])

    def find(self, record_dir: str) -> dict | None:
        try:  # a launch on Ray leaves its handle beside the record (ray_backend.LAUNCH_FILE)
            with open(os.path.join(record_dir, "launch.json"), encoding="utf-8") as launched:
                handle = json.load(launched)
        except (OSError, ValueError):
            handle = None
        if handle is not None and self._elsewhere(handle):
            return self._elsewhere(handle).find(record_dir)
        found = nodeagent.claim_or_find(record_dir)
        return found.to_json() if found is not None else None
