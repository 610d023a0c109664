"""Issue 15: the compute seam. The scheduler decides; a backend places. These run without Ray:
a scripted backend shows that a cluster waits (``resizing``, with the backend's error) until
its nodes are placed and then takes the backend's addresses, and the Ray backend's own rules
(VM size -> bundle, the allocation error, combining its nodes' outcomes) are checked alone."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from quickstart.localcloud import LocalCloud, LocalCloudError
from quickstart.localcloud.batchai import backends
from quickstart.localcloud.batchai.backends import Allocation, local, ray_backend
from quickstart.localcloud.batchai.nodeagent import Outcome
from tests.conftest import (
    make_batchai_client,
    make_credentials,
    make_file_service,
    make_resource_client,
)
from tests.localcloud.batchai.test_batchai import (  # noqa: F401 (no_job_process_left: autouse)
    CLUSTER,
    RG,
    WS,
    cluster_params,
    no_job_process_left,
    wait_for,
)


class ScriptedCompute(local.LocalCompute):
    """The local backend, except that allocation answers what the test says."""

    name = "scripted"

    def __init__(self):
        self.answer = Allocation(ready=False)
        self.asked = []

    def allocation(self, cluster_uid, count, vm_size, folders):
        self.asked.append((count, vm_size, len(folders)))
        return self.answer


@pytest.fixture
def scripted(monkeypatch, tmp_path):
    compute = ScriptedCompute()
    monkeypatch.setattr(backends, "backend_for", lambda options: compute)
    cloud = LocalCloud(tmp_path / "lc", port=0, cluster_allocation_delay=0.05).start()
    try:
        connection = cloud.connection
        client = make_batchai_client(connection, make_credentials(connection))
        files = make_file_service(connection)
        files.create_share("batchaiquickstart", fail_on_exist=False)
        make_resource_client(connection).resource_groups.create_or_update(
            RG, {"location": "eastus"}
        )
        client.workspaces.create(RG, WS, "eastus").result()
        client.clusters.create(RG, WS, CLUSTER, cluster_params(connection, files, 2)).result()
        yield SimpleNamespace(compute=compute, client=client, cloud=cloud)
    finally:
        cloud.stop()


def test_a_cluster_stays_resizing_with_the_backends_error_until_placed(scripted):
    error = {"code": "AllocationFailed", "message": "Allocation failed: one Ray node short."}
    scripted.compute.answer = Allocation(ready=False, error=error)
    cluster = wait_for(
        lambda: (lambda c: c if c.errors else None)(scripted.client.clusters.get(RG, WS, CLUSTER))
    )
    assert cluster.allocation_state == "resizing" and cluster.current_node_count == 0
    assert [(e.code, e.message) for e in cluster.errors] == [(error["code"], error["message"])]
    assert scripted.compute.asked[-1] == (2, "STANDARD_NC6", 1)  # the share's folder
    scripted.compute.answer = Allocation(
        ready=True, addresses=["10.1.0.7", "10.1.0.8"], bundles=[0, 1]
    )
    cluster = wait_for(
        lambda: (lambda c: c if c.node_state_counts.idle_node_count == 2 else None)(
            scripted.client.clusters.get(RG, WS, CLUSTER)
        )
    )
    assert cluster.allocation_state == "steady" and not cluster.errors
    logins = scripted.client.clusters.list_remote_login_information(RG, WS, CLUSTER)
    assert sorted(n.ip_address for n in logins) == ["10.1.0.7", "10.1.0.8"]


def test_a_node_that_cannot_see_the_share_makes_the_cluster_report_azfmounterror(scripted):
    share = str(scripted.cloud.context.store.share_dir("batchaiquickstart"))
    scripted.compute.answer = Allocation(
        ready=True, addresses=["10.1.0.7", "10.1.0.8"], bundles=[0, 1], unseen={share: ["10.1.0.8"]}
    )
    cluster = wait_for(
        lambda: (lambda c: c if c.node_state_counts.unusable_node_count == 2 else None)(
            scripted.client.clusters.get(RG, WS, CLUSTER)
        )
    )
    (error,) = cluster.errors
    assert error.code == "AZFMountError"
    assert "the node(s) at 10.1.0.8 cannot see the share's folder" in error.message


def test_an_unknown_compute_is_one_line_naming_the_choices(tmp_path):
    with pytest.raises(LocalCloudError, match="compute must be one of local, ray, not 'slurm'"):
        LocalCloud(tmp_path / "lc", port=0, compute="slurm").start()


def test_a_ray_address_nothing_answers_on_is_one_line_at_once(tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed: pip install -r requirements.txt")
    from quickstart.__main__ import main

    argv = ["localcloud", "--compute", "ray", "--ray-address", "127.0.0.1:1"]
    assert main([*argv, "--state-dir", str(tmp_path / "lc")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the Ray cluster at '127.0.0.1:1' (")
    assert err.endswith("--ray-address HOST:PORT") and len(err.splitlines()) == 1


def test_ray_bundles_parse_and_bad_ones_say_which_part_is_wrong():
    parse = ray_backend.parse_bundles
    assert parse("STANDARD_NC6=CPU:1,GPU:0; standard_nc12=CPU:2") == {
        "STANDARD_NC6": {"CPU": 1.0, "GPU": 0.0},
        "STANDARD_NC12": {"CPU": 2.0},
    }
    with pytest.raises(ValueError, match="'STANDARD_NC6' is not SIZE=RESOURCE:AMOUNT"):
        parse("STANDARD_NC6")
    with pytest.raises(ValueError, match="'CPU:many' is not RESOURCE:AMOUNT"):
        parse("STANDARD_NC6=CPU:many")


def test_a_vm_size_asks_for_its_cores_and_gpus_and_gpus_only_where_ray_has_some():
    compute = ray_backend.RayCompute(bundles=ray_backend.parse_bundles("STANDARD_D1_V2=CPU:0.5"))
    compute._gpus = 2.0
    assert compute.bundle_for("Standard_NC12") == {"CPU": 12.0, "GPU": 2.0}
    compute._gpus = 0.0  # a CPU-only Ray cluster runs the NC6 job on CPU
    assert compute.bundle_for("STANDARD_NC6") == {"CPU": 6.0}
    assert compute.bundle_for("STANDARD_D1_V2") == {"CPU": 0.5}
    assert compute.bundle_for("STANDARD_WHATEVER") == {"CPU": 1.0}


def test_the_allocation_error_names_what_the_ray_cluster_lacks():
    compute = ray_backend.RayCompute()
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0}}, {"Alive": True, "Resources": {"CPU": 4.0}}]
    compute._ray = SimpleNamespace(nodes=lambda: nodes)
    error = compute._shortage(3, "STANDARD_NC6", {"CPU": 6.0})
    assert error["code"] == "AllocationFailed"
    assert "the Ray cluster has 2 live node(s), 1 of them with 6 CPU" in error["message"]
    assert error["details"] == [{"name": "Missing", "value": "2 more Ray node(s) with 6 CPU"}]


def test_enough_ray_nodes_that_still_cannot_take_the_cluster_are_told_apart_from_too_few():
    compute = ray_backend.RayCompute()
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0}}, {"Alive": True, "Resources": {"CPU": 6.0}}]
    compute._ray = SimpleNamespace(nodes=lambda: nodes)
    error = compute._shortage(2, "STANDARD_NC6", {"CPU": 6.0})
    (missing,) = error["details"]
    assert missing["value"].startswith("6 CPU free on 2 Ray nodes (other clusters hold some")
    assert "a node has stopped answering Ray: `ray list nodes`" in missing["value"]
    assert "more Ray node(s)" not in error["message"]


class ScriptedRef:
    """An object ref: only its id is read."""

    def __init__(self, name: str):
        self.name = name

    def hex(self) -> str:
        return self.name


class ScriptedChecks:
    """Ray's side of the mount checks, scripted: which refs answer, what they answer, and the
    cancels asked for (``ray.wait``/``get``/``cancel``)."""

    def __init__(self):
        self.answers = {}  # ref -> answer (an Exception: the task failed)
        self.cancelled = []
        self.submitted = []

    def submit(self, group, count, folders):
        refs = [ScriptedRef(f"ref{len(self.submitted) + i}") for i in range(count)]
        self.submitted += refs
        return refs

    def wait(self, refs, num_returns, timeout):
        assert num_returns == len(refs) and timeout == 0  # never blocks the backend's pass
        return [r for r in refs if r in self.answers], [r for r in refs if r not in self.answers]

    def get(self, ref, timeout):
        if isinstance(self.answers[ref], Exception):
            raise self.answers[ref]
        return self.answers[ref]

    def cancel(self, ref, force):
        assert force
        self.cancelled.append(ref)


def test_a_ray_node_whose_mount_check_never_answers_is_named_and_asked_again(monkeypatch):
    ray = ScriptedChecks()
    compute = ray_backend.RayCompute()
    compute._ray = ray
    compute._submit_checks = ray.submit
    clock = [100.0]
    monkeypatch.setattr(ray_backend.time, "monotonic", lambda: clock[0])
    key = ("batchai-cluster-u-2", ("/share",))
    named = ["10.0.0.4 (Ray node aaa)", "10.0.0.5 (Ray node bbb)"]
    place = lambda: compute._checked("u", key, None, ["10.0.0.4", "10.0.0.5"], named)  # noqa: E731
    assert place() is None  # the checks run
    first, second = ray.submitted
    ray.answers[first] = {"node": named[0], "missing": []}
    clock[0] += ray_backend.CHECK_TIMEOUT - 1
    assert place() is None and len(ray.submitted) == 2  # still within the timeout: no new ones
    clock[0] += 1
    allocation = place()
    assert not allocation.ready and ray.cancelled == [second]
    assert allocation.error["code"] == "AllocationFailed"
    message = allocation.error["message"]
    assert "did not answer within 60 s on 1 Ray node(s): 10.0.0.5 (Ray node bbb)." in message
    assert "10.0.0.4" not in message and "ray list nodes" in message
    assert "same Ray" in message and message.endswith("the cluster keeps trying.")
    assert allocation.error["details"] == [
        {"name": "Unanswered", "value": "10.0.0.5 (Ray node bbb)"}
    ]
    # asked again: both answer now, the second cannot see the share
    assert place() is None and len(ray.submitted) == 4
    third, fourth = ray.submitted[2:]
    ray.answers[third] = {"node": named[0], "missing": []}
    ray.answers[fourth] = {"node": named[1], "missing": ["/share"]}
    allocation = place()
    assert allocation.ready and allocation.error is None and ray.cancelled == [second]
    assert allocation.addresses == ["10.0.0.4", "10.0.0.5"] and allocation.bundles == [0, 1]
    assert allocation.unseen == {"/share": [named[1]]}
    # a check that failed on its node says so; a resize (another group) cancels the old checks
    assert place() is None
    ray.answers[ray.submitted[4]] = RuntimeError("worker crashed")
    clock[0] += ray_backend.CHECK_TIMEOUT
    error = place().error["message"]
    assert (
        "did not answer within 60 s on 1 Ray node(s): 10.0.0.5 (Ray node bbb); it failed " in error
    )
    assert "failed on 1 Ray node(s): 10.0.0.4 (Ray node aaa): RuntimeError" in error
    assert place() is None
    waiting = ray.submitted[6:]
    assert compute._checked("u", ("batchai-cluster-u-1", ("/share",)), None, ["x"], ["x"]) is None
    assert ray.cancelled[-2:] == waiting


def outcome(code, ended, error=None):
    return Outcome(code, "job", error, ended)


def test_a_ray_jobs_outcome_is_its_first_failure_else_its_main_nodes_success():
    handle = {"nodes": ["a", "b", "c"], "main": ["a", "b"]}
    combined = ray_backend.RayCompute._combined
    assert combined(handle, {"a": outcome(0, 2.0), "b": None, "c": None}) is None
    done = combined(handle, {"a": outcome(0, 2.0), "b": outcome(0, 3.0), "c": None})
    assert done.succeeded and done.ended == 3.0  # "c" (a parameter server) is then stopped
    lost = {"code": "InternalError", "message": "node b lost"}
    failed = combined(handle, {"a": outcome(143, 5.0), "b": outcome(None, 4.0, lost), "c": None})
    assert failed.error == lost  # the first to fail, not the ones stopped after it


def test_the_local_backend_is_the_default():
    assert isinstance(backends.backend_for({}), local.LocalCompute)
    assert isinstance(backends.backend_for({"compute": "LOCAL"}), local.LocalCompute)
