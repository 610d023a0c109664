"""Faults on demand (faults.py, fault_routes.py): rules from a file and from the admin route,
answered in each service's own error shape, and compute faults as Batch AI reported them."""

from __future__ import annotations

import json

import pytest
import requests
from azure.common import AzureHttpError
from azure.storage.common.retry import no_retry
from msrestazure.azure_exceptions import CloudError

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.connection import requests_session
from quickstart.localcloud.server import LocalCloudError
from tests.conftest import (
    make_blob_service,
    make_credentials,
    make_file_service,
    make_resource_client,
)
from tests.localcloud.batchai.test_batchai import (  # noqa: F401 (no_job_process_left: autouse)
    CLUSTER,
    EXP,
    RG,
    WS,
    cluster_params,
    job_params,
    no_job_process_left,
    sdk_env,
    wait_for,
    wait_for_job,
)


def admin(cloud, method: str, body=None) -> requests.Response:
    """The admin route, with a token of the local cloud (as ARM takes it)."""
    token = make_credentials(cloud.connection).token["access_token"]
    return requests_session(cloud.connection).request(
        method,
        cloud.connection["resource_manager_url"].rstrip("/") + "/_localcloud/faults",
        headers={"Authorization": f"Bearer {token}"},
        data=None if body is None else json.dumps(body),
    )


def test_rules_from_a_file_answer_in_each_services_error_shape(tmp_path):
    rules = tmp_path / "faults.json"
    rules.write_text(
        json.dumps(
            {
                "rules": [
                    {"service": "arm", "method": "GET", "status": 429, "times": 1, "retryAfter": 0},
                    {"service": "files", "path": "/doomed", "status": 503, "times": 1},
                ]
            }
        )
    )
    with LocalCloud(tmp_path / "state", faults=str(rules)) as cloud:
        resources = make_resource_client(cloud.connection)
        resources.config.retry_policy.retries = 0
        resources.resource_groups.create_or_update("rg", {"location": "eastus"})
        with pytest.raises(CloudError) as caught:
            resources.resource_groups.get("rg")
        assert caught.value.status_code == 429
        assert caught.value.error.error == "TooManyRequests"
        assert caught.value.response.headers["Retry-After"] == "0"
        assert resources.resource_groups.get("rg").name == "rg"  # times: 1

        files = make_file_service(cloud.connection)
        files.retry = no_retry
        with pytest.raises(AzureHttpError) as caught:
            files.create_share("doomed")
        assert caught.value.status_code == 503
        assert "ServerBusy" in str(caught.value)
        assert not files.exists("doomed")  # a faulted request has no effect
        assert files.create_share("doomed")


def test_a_blob_rule_answers_in_the_storage_error_shape_and_spares_files(tmp_path):
    with LocalCloud(tmp_path / "state") as cloud:
        rule = {"service": "blob", "method": "PUT", "status": 503, "times": 1}
        assert admin(cloud, "PUT", [rule]).status_code == 200
        files = make_file_service(cloud.connection)
        files.retry = no_retry
        assert files.create_share("spared")  # a Files request never matches a blob rule
        blobs = make_blob_service(cloud.connection)
        blobs.retry = no_retry
        with pytest.raises(AzureHttpError) as caught:
            blobs.create_container("doomed")
        assert caught.value.status_code == 503 and "ServerBusy" in str(caught.value)
        assert not blobs.exists("doomed")  # a faulted request has no effect
        assert blobs.create_container("doomed")
        assert [r["fired"] for r in admin(cloud, "GET").json()["rules"]] == [1]


def test_the_sdks_retries_ride_through_faults_with_retry_after(tmp_path):
    rules = [{"status": 503, "retryAfter": 0, "times": 2}, {"status": 429, "times": 1}]
    with LocalCloud(tmp_path / "state") as cloud:
        resources = make_resource_client(cloud.connection)
        assert admin(cloud, "PUT", rules).status_code == 200
        resources.resource_groups.create_or_update("rg", {"location": "eastus"})
        listed = admin(cloud, "GET").json()["rules"]
        assert [r["fired"] for r in listed] == [2, 1]
        assert [r["left"] for r in listed] == [0, 0]


def test_the_admin_route_needs_a_token_and_checks_rules(tmp_path):
    with LocalCloud(tmp_path / "state") as cloud:
        url = cloud.connection["resource_manager_url"].rstrip("/") + "/_localcloud/faults"
        anonymous = requests_session(cloud.connection).put(url, data="[]")
        assert anonymous.status_code == 401
        bad = admin(cloud, "POST", {"status": 418})
        assert bad.status_code == 400
        assert "status must be one of" in bad.json()["error"]["message"]
        assert admin(cloud, "POST", {"latencyMs": 1}).json()["rules"][0]["latencyMs"] == 1
        assert admin(cloud, "DELETE").json() == {"rules": []}


def test_a_bad_rules_file_is_one_line_naming_it(tmp_path):
    rules = tmp_path / "faults.json"
    rules.write_text('[{"status": 503, "sometimes": true}]')
    with pytest.raises(LocalCloudError, match="unknown field 'sometimes'"):
        LocalCloud(tmp_path / "state", faults=str(rules)).start()


def test_an_allocation_failure_is_reported_on_the_cluster(local_cloud, tmp_path):
    env = sdk_env(local_cloud, tmp_path)
    assert admin(local_cloud, "POST", {"cluster": "^doomed$", "allocationFailure": True}).ok
    env.client.clusters.create(
        RG, WS, "doomed", cluster_params(env.connection, env.files, nodes=1)
    ).result()
    cluster = wait_for(
        lambda: (lambda c: c if c.errors else None)(env.client.clusters.get(RG, WS, "doomed"))
    )
    assert cluster.errors[0].code == "AllocationFailed"
    assert cluster.current_node_count == 0
    assert cluster.allocation_state == "steady"


def test_a_node_made_unusable_mid_job_fails_the_job(local_cloud, tmp_path):
    env = sdk_env(local_cloud, tmp_path)
    assert admin(local_cloud, "POST", {"job": "^doomed$", "nodeFailure": {"afterSeconds": 0.3}}).ok
    env.client.jobs.create(RG, WS, EXP, "doomed", job_params(env.cluster.id, "sleep 60")).result()
    job = wait_for_job(env.client, "doomed")
    assert job.execution_state == "failed"
    assert job.execution_info.errors[0].code == "InternalError"
    assert "became unusable" in job.execution_info.errors[0].message
    cluster = env.client.clusters.get(RG, WS, CLUSTER)
    assert cluster.node_state_counts.unusable_node_count == 1
    assert cluster.errors[0].code == "InternalError"
