"""The API never waits on the scheduler, and one bad cluster or job never blocks the others."""

from __future__ import annotations

import azure.mgmt.batchai.models as models
import pytest
from msrestazure.azure_exceptions import CloudError

from quickstart.localcloud.batchai import nodeagent
from quickstart.localcloud.batchai.schema import CLUSTER_TYPE, MAX_NODE_COUNT
from tests.localcloud.batchai.test_batchai import (  # noqa: F401 (no_job_process_left: autouse)
    CLUSTER,
    EXP,
    MOUNT,
    RG,
    WS,
    cluster_params,
    job_params,
    no_job_process_left,
    sdk_env,
    wait_for,
    wait_for_idle_cluster,
    wait_for_job,
)


@pytest.fixture
def env(local_cloud, tmp_path):
    return sdk_env(local_cloud, tmp_path)


def _corrupt(store, cluster_id: str, **compute) -> None:
    """Write a cluster record that makes the scheduler raise (as the unvalidated setup task of
    issue 13 did), bypassing the API's checks."""
    with store.transaction():
        record = store.get_resource(cluster_id)
        record.extra["compute"].update(compute)
        store.put_resource(record.id, record.type, record.name, record.body, record.extra)


def test_a_poisoned_cluster_is_failed_and_the_healthy_clusters_jobs_still_run(env):
    poisoned = env.client.clusters.create(
        RG, WS, "poisoned", cluster_params(env.connection, env.files, nodes=1)
    ).result()
    store = env.cloud.context.store
    _corrupt(store, poisoned.id, target="many", resize_since=0.0)
    env.client.jobs.create(RG, WS, EXP, "stuck", job_params(poisoned.id, "true")).result()

    broken = wait_for(
        lambda: (lambda c: c if c.errors else None)(env.client.clusters.get(RG, WS, "poisoned"))
    )
    assert broken.provisioning_state == "failed"
    assert broken.errors[0].code == "ClusterProcessingFailed"
    assert "TypeError" in broken.errors[0].message

    env.client.jobs.create(RG, WS, EXP, "healthy", job_params(env.cluster.id, "echo ok")).result()
    assert wait_for_job(env.client, "healthy").execution_state == "succeeded"
    assert env.client.jobs.get(RG, WS, EXP, "stuck").execution_state == "queued"


def test_a_job_whose_processing_raises_fails_with_its_error_and_others_run(env):
    env.client.jobs.create(RG, WS, EXP, "blocker", job_params(env.cluster.id, "sleep 1")).result()
    env.client.jobs.create(RG, WS, EXP, "poisoned", job_params(env.cluster.id, "true")).result()
    store = env.cloud.context.store
    with store.transaction():
        job = next(r for r in store.list_resources() if r.name == "poisoned")
        assert job.body["properties"]["executionState"] == "queued"
        del job.extra["uid"]  # what no request can store; only the job's launch reads it
        store.put_resource(job.id, job.type, job.name, job.body, job.extra)
    env.client.jobs.create(RG, WS, EXP, "healthy", job_params(env.cluster.id, "echo ok")).result()
    failed = wait_for_job(env.client, "poisoned")
    assert failed.execution_state == "failed"
    assert failed.execution_info.errors[0].code == "JobProcessingFailed"
    assert wait_for_job(env.client, "healthy").execution_state == "succeeded"


def test_node_counts_have_a_bound_that_the_error_names(env):
    params = cluster_params(env.connection, env.files, nodes=MAX_NODE_COUNT + 1)
    with pytest.raises(CloudError) as caught:
        env.client.clusters.create(RG, WS, "toobig", params).result()
    assert caught.value.status_code == 400
    assert f"at most {MAX_NODE_COUNT}" in caught.value.message


def test_a_resize_to_the_bound_and_back_completes(env):
    env.client.clusters.update(RG, WS, CLUSTER, scale_settings=_manual(MAX_NODE_COUNT))
    wait_for_idle_cluster(env.client, MAX_NODE_COUNT)
    env.client.clusters.update(RG, WS, CLUSTER, scale_settings=_manual(0))
    cluster = wait_for(
        lambda: (lambda c: c if c.allocation_state == "steady" else None)(
            env.client.clusters.get(RG, WS, CLUSTER)
        )
    )
    assert cluster.current_node_count == 0


def _manual(count: int) -> models.ScaleSettings:
    return models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=count))


def test_setup_tasks_ignoring_sigterm_are_stopped_without_holding_the_api(env):
    """The resize answers, and the API keeps answering, while the stubborn tasks still live
    (they ignore SIGTERM for the whole grace period); afterwards none is left."""
    params = cluster_params(env.connection, env.files, nodes=3)
    params.node_setup.setup_task = models.SetupTask(
        command_line="trap '' TERM; sleep 600 & wait; sleep 600",
        std_out_err_path_prefix=f"$AZ_BATCHAI_MOUNT_ROOT/{MOUNT}",
    )
    env.client.clusters.create(RG, WS, "stubborn", params).result()
    store = env.cloud.context.store

    def setup_handles():
        record = next(r for r in store.list_resources(type=CLUSTER_TYPE) if r.name == "stubborn")
        handles = [n["setup"] for n in record.extra["compute"]["nodes"] if n.get("setup")]
        return handles if len(handles) == 3 else None

    handles = [nodeagent.JobHandle.from_json(h) for h in wait_for(setup_handles)]
    env.client.clusters.update(RG, WS, "stubborn", scale_settings=_manual(0))
    assert env.resources.resource_groups.get(RG).name == RG
    assert env.client.clusters.get(RG, WS, "stubborn").scale_settings.manual.target_node_count == 0
    assert any(nodeagent.group_alive(h) for h in handles), "stopped before the API answered"
    wait_for(lambda: not any(nodeagent.group_alive(h) for h in handles), timeout=30)
