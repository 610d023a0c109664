"""A Ray cluster of two nodes on this host, for the local cloud's Ray backend.

These tests run only inside a private network namespace (tests/privatenet.py), started by
tests/localcloud/test_ray_backend.py; anywhere else they skip, saying so."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from types import SimpleNamespace

import pytest

from tests import privatenet

NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}
# One Batch AI node of the tutorial's size per one-CPU Ray node (docs/ray.md: the mapping).
BUNDLES = "STANDARD_NC6=CPU:1"
FIGURES = "QUICKSTART_RAY_FIGURES"  # a file the outer test reads the start-up time from
TEMP_PREFIX = "QUICKSTART_RAY_TEMP_PREFIX"  # how the Ray cluster's temp folder is named


def pytest_collection_modifyitems(config, items):
    if privatenet.inside():
        return
    skip = pytest.mark.skip(
        reason="runs inside a private network namespace: tests/localcloud/test_ray_backend.py "
        "starts it"
    )
    for item in items:
        if "localcloud/ray/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_cluster():
    """A head and one more node, one CPU each; the test process owns their processes."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # short (Ray's socket paths), and named by the outer test so it checks only its own cluster
    temp = tempfile.mkdtemp(prefix=os.environ.get(TEMP_PREFIX, "rayq-"), dir="/tmp")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    started = time.monotonic()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**NODE, "include_dashboard": False, "temp_dir": temp},
    )
    second = cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    seconds = time.monotonic() - started
    if os.environ.get(FIGURES):
        with open(os.environ[FIGURES], "a", encoding="utf-8") as out:
            out.write(json.dumps({"ray_start_seconds": round(seconds, 2)}) + "\n")
    try:
        yield SimpleNamespace(cluster=cluster, second=second, address=cluster.address, temp=temp)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
