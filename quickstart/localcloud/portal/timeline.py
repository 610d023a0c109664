"""A timeline of node states per cluster, as the portal saw them.

The scheduler keeps only each node's current state and since when; the portal samples the
clusters' records a few times a second and keeps every change it sees (bounded per cluster),
so the cluster page can show how nodes went preparing -> idle -> running -> ... since this
local cloud started.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque

from ..batchai.schema import CLUSTER_TYPE
from .reading import when

SAMPLE_EVERY = 0.25  # seconds
KEEP = 500  # changes per cluster


class NodeTimeline:
    def __init__(self, store):
        self.store = store
        self._seen: dict[str, dict[str, str]] = {}
        self._changes: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="portal-timeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            try:
                self.sample()
            except sqlite3.ProgrammingError:
                return  # the store closed: the local cloud is stopping

    def sample(self) -> None:
        for cluster in self.store.list_resources(type=CLUSTER_TYPE):
            nodes = (cluster.extra.get("compute") or {}).get("nodes", [])
            with self._lock:
                seen = self._seen.setdefault(cluster.id, {})
                changes = self._changes.setdefault(cluster.id, deque(maxlen=KEEP))
                current = {}
                for node in nodes:
                    current[node["id"]] = node["state"]
                    if seen.get(node["id"]) != node["state"]:
                        changes.append((node.get("since"), node["id"], node["state"]))
                for gone in set(seen) - set(current):
                    changes.append((time.time(), gone, "removed"))
                self._seen[cluster.id] = current

    def changes(self, cluster_id: str) -> list[dict]:
        """Newest first: {"time", "node", "state"}."""
        self.sample()
        with self._lock:
            items = list(self._changes.get(cluster_id, ()))
        return [{"time": when(t) if t else "", "node": n, "state": s} for t, n, s in items][::-1]
