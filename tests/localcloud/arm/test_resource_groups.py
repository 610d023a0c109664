"""ARM resource groups through azure-mgmt-resource's ResourceManagementClient."""

from __future__ import annotations

import pytest
from msrestazure.azure_exceptions import CloudError

from quickstart.localcloud.connection import requests_session


def test_create_get_list_and_check_existence(resource_client, local_cloud):
    created = resource_client.resource_groups.create_or_update(
        "myresourcegroup", {"location": "eastus"}
    )
    sub = local_cloud.connection["subscription_id"]
    assert created.id == f"/subscriptions/{sub}/resourceGroups/myresourcegroup"
    assert created.name == "myresourcegroup"
    assert created.location == "eastus"
    assert created.properties.provisioning_state == "Succeeded"
    assert resource_client.resource_groups.check_existence("myresourcegroup") is True
    assert resource_client.resource_groups.check_existence("othergroup") is False
    fetched = resource_client.resource_groups.get("MyResourceGroup")  # names are case-insensitive
    assert (
        fetched.name == "myresourcegroup" and fetched.type == "Microsoft.Resources/resourceGroups"
    )
    assert [g.name for g in resource_client.resource_groups.list()] == ["myresourcegroup"]


def test_create_answers_201_then_200_and_keeps_tags(local_cloud, resource_client):
    conn = local_cloud.connection
    session = requests_session(conn)
    token = resource_client.config.credentials.token["access_token"]
    url = f"{local_cloud.base_url}/subscriptions/{conn['subscription_id']}/resourcegroups/rg1"
    params = {"api-version": "2021-04-01"}
    headers = {"Authorization": f"Bearer {token}", "x-ms-client-request-id": "abc-123"}
    first = session.put(url, params=params, headers=headers, json={"location": "East US"})
    again = session.put(
        url,
        params=params,
        headers=headers,
        json={"location": "eastus", "tags": {"purpose": "quickstart"}},
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.headers["x-ms-client-request-id"] == "abc-123"
    assert again.json()["tags"] == {"purpose": "quickstart"}
    assert resource_client.resource_groups.get("rg1").tags == {"purpose": "quickstart"}


def test_delete_is_a_polled_long_running_operation(local_cloud, resource_client):
    resource_client.resource_groups.create_or_update("doomed", {"location": "westeurope"})
    poller = resource_client.resource_groups.delete("doomed")
    poller.result(timeout=10)
    assert poller.done()
    assert resource_client.resource_groups.check_existence("doomed") is False
    with pytest.raises(CloudError) as caught:
        resource_client.resource_groups.get("doomed")
    assert caught.value.status_code == 404
    assert caught.value.error.error == "ResourceGroupNotFound"


def test_delete_answers_202_with_absolute_location_and_retry_after(local_cloud, resource_client):
    conn = local_cloud.connection
    resource_client.resource_groups.create_or_update("rg2", {"location": "eastus"})
    token = resource_client.config.credentials.token["access_token"]
    session = requests_session(conn)
    response = session.delete(
        f"{local_cloud.base_url}/subscriptions/{conn['subscription_id']}/resourcegroups/rg2",
        params={"api-version": "2021-04-01"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202
    assert response.headers["Location"].startswith(local_cloud.base_url + "/subscriptions/")
    assert response.headers["Retry-After"] == "0"
    status = session.get(response.headers["Location"], headers={"Authorization": f"Bearer {token}"})
    assert status.status_code == 200 and status.headers["Retry-After"] == "0"


def test_deleting_a_group_deletes_every_record_in_it(local_cloud, resource_client):
    store = local_cloud.context.store
    sub = local_cloud.connection["subscription_id"]
    resource_client.resource_groups.create_or_update("withstuff", {"location": "eastus"})
    resource_client.resource_groups.create_or_update("bystander", {"location": "eastus"})
    inside = (
        f"/subscriptions/{sub}/resourceGroups/withstuff/providers/Microsoft.BatchAI/workspaces/ws"
    )
    outside = (
        f"/subscriptions/{sub}/resourceGroups/bystander/providers/Microsoft.BatchAI/workspaces/ws"
    )
    store.put_resource(inside, "Microsoft.BatchAI/workspaces", "ws", {"name": "ws"})
    store.put_resource(inside + "/clusters/c", "Microsoft.BatchAI/workspaces/clusters", "c", {})
    store.put_resource(outside, "Microsoft.BatchAI/workspaces", "ws", {"name": "ws"})
    seen = []
    local_cloud.context.on_resource_group_delete(lambda s, g: seen.append((s, g)))
    resource_client.resource_groups.delete("WithStuff").result()
    assert seen == [(sub, "withstuff")]
    assert store.get_resource(inside) is None and store.get_resource(inside + "/clusters/c") is None
    assert store.get_resource(outside) is not None


def test_unknown_location_is_an_arm_error(resource_client):
    with pytest.raises(CloudError) as caught:
        resource_client.resource_groups.create_or_update("badgroup", {"location": "atlantis"})
    assert caught.value.status_code == 400
    assert caught.value.error.error == "LocationNotAvailableForResourceGroup"


@pytest.mark.parametrize(
    "data,code",
    [
        (b"{}", "LocationRequired"),
        (b"{not json", "InvalidRequestContent"),
        (b"[1, 2]", "InvalidRequestContent"),
        (b"", "InvalidRequestContent"),
    ],
)
def test_bad_create_bodies_are_arm_errors(local_cloud, resource_client, data, code):
    conn = local_cloud.connection
    token = resource_client.config.credentials.token["access_token"]
    response = requests_session(conn).put(
        f"{local_cloud.base_url}/subscriptions/{conn['subscription_id']}/resourcegroups/badgroup",
        params={"api-version": "2021-04-01"},
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert resource_client.resource_groups.check_existence("badgroup") is False


def test_changing_location_is_a_conflict(resource_client):
    resource_client.resource_groups.create_or_update("placed", {"location": "eastus"})
    with pytest.raises(CloudError) as caught:
        resource_client.resource_groups.create_or_update("placed", {"location": "westus"})
    assert caught.value.status_code == 409
    assert caught.value.error.error == "InvalidResourceGroupLocation"


def test_delete_of_missing_group_is_404(resource_client):
    with pytest.raises(CloudError) as caught:
        resource_client.resource_groups.delete("nosuchgroup").result()
    assert caught.value.status_code == 404


def test_other_subscription_is_not_found(local_cloud, resource_client):
    resource_client.config.subscription_id = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(CloudError) as caught:
        resource_client.resource_groups.get("anything")
    assert caught.value.status_code == 404
    assert caught.value.error.error == "SubscriptionNotFound"


def test_missing_api_version_is_400(local_cloud, resource_client):
    conn = local_cloud.connection
    token = resource_client.config.credentials.token["access_token"]
    response = requests_session(conn).get(
        f"{local_cloud.base_url}/subscriptions/{conn['subscription_id']}/resourcegroups",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "MissingApiVersionParameter"


def test_list_pages_with_top(resource_client):
    for name in ("rga", "rgb", "rgc"):
        resource_client.resource_groups.create_or_update(name, {"location": "eastus"})
    assert [g.name for g in resource_client.resource_groups.list(top=2)] == ["rga", "rgb", "rgc"]
