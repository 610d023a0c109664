"""The extension API other REST surfaces (Microsoft.BatchAI) build on, exercised as they use it."""

from __future__ import annotations

import pytest

from quickstart.localcloud.arm import ArmError, arm_json, json_body
from quickstart.localcloud.connection import requests_session
from tests.conftest import make_file_service, make_resource_client

PROVIDER = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Contoso.Widgets/widgets/{widgetName}"


@pytest.fixture
def widgets(local_cloud):
    """A tiny surface registered through cloud.arm.add, storing records in the generic table."""
    cloud = local_cloud.context
    calls = []

    def put(request, subscriptionId, resourceGroupName, widgetName):
        calls.append((resourceGroupName, widgetName))
        body = json_body(request)
        if body.get("explode"):
            raise RuntimeError("a bug in a surface")
        if body.get("refuse"):
            raise ArmError(409, "WidgetBusy", "The widget is busy.")
        arm_id = f"/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Contoso.Widgets/widgets/{widgetName}"
        record = cloud.store.put_resource(
            arm_id, "Contoso.Widgets/widgets", widgetName, {"id": arm_id, "name": widgetName}
        )
        return arm_json(200, record.body)

    cloud.arm.add("PUT", PROVIDER, put, api_versions=("2018-05-01",))
    return calls


def _put(local_cloud, resource_client, path, body, api_version="2018-05-01", token=True):
    headers = {}
    if token:
        headers["Authorization"] = (
            "Bearer " + resource_client.config.credentials.token["access_token"]
        )
    return requests_session(local_cloud.connection).put(
        local_cloud.base_url + path, params={"api-version": api_version}, json=body, headers=headers
    )


def _path(local_cloud, group="MyGroup", name="Widget1", casing="resourceGroups"):
    sub = local_cloud.connection["subscription_id"]
    return f"/subscriptions/{sub}/{casing}/{group}/providers/contoso.WIDGETS/Widgets/{name}"


def test_routes_match_case_insensitively_and_keep_name_case(local_cloud, resource_client, widgets):
    response = _put(local_cloud, resource_client, _path(local_cloud, casing="RESOURCEGROUPS"), {})
    assert response.status_code == 200
    assert widgets == [("MyGroup", "Widget1")]
    stored = local_cloud.context.store.list_resources(type="contoso.widgets/widgets")
    assert [r.name for r in stored] == ["Widget1"] and stored[0].resource_group == "mygroup"


def test_added_routes_get_the_bearer_check_and_api_version_check(
    local_cloud, resource_client, widgets
):
    assert (
        _put(local_cloud, resource_client, _path(local_cloud), {}, token=False).status_code == 401
    )
    wrong = _put(
        local_cloud, resource_client, _path(local_cloud), {}, api_version="2017-09-01-preview"
    )
    assert (
        wrong.status_code == 400 and wrong.json()["error"]["code"] == "InvalidApiVersionParameter"
    )
    assert widgets == []


def test_arm_error_and_unexpected_exception_answers(local_cloud, resource_client, widgets, capfd):
    refused = _put(local_cloud, resource_client, _path(local_cloud), {"refuse": True})
    assert refused.status_code == 409
    assert refused.json() == {"error": {"code": "WidgetBusy", "message": "The widget is busy."}}
    broken = _put(local_cloud, resource_client, _path(local_cloud), {"explode": True})
    assert broken.status_code == 500
    assert broken.json()["error"]["code"] == "InternalServerError"
    assert "Traceback" not in capfd.readouterr().err
    assert "a bug in a surface" in (local_cloud.state_dir / "localcloud.log").read_text()


def test_resource_group_delete_removes_surface_records(local_cloud, resource_client, widgets):
    resource_client.resource_groups.create_or_update("MyGroup", {"location": "eastus"})
    assert _put(local_cloud, resource_client, _path(local_cloud), {}).status_code == 200
    resource_client.resource_groups.delete("mygroup").result()
    assert local_cloud.context.store.list_resources(type="Contoso.Widgets/widgets") == []


def test_share_path_and_sas_helpers(local_cloud):
    cloud = local_cloud.context
    service = make_file_service(local_cloud.connection)
    service.create_share("jobshare")
    service.create_directory("jobshare", "stdouterr")
    path = cloud.share_path("jobshare", "stdouterr/stdout.txt")
    cloud.store.write_file_atomically(path, b"hello from a job\n")
    assert path.parent == cloud.share_dir("jobshare") / "stdouterr"
    url = cloud.file_sas_url("jobshare", "stdouterr/stdout.txt", expiry_minutes=5)
    assert requests_session(local_cloud.connection).get(url).content == b"hello from a job\n"
    for bad in ("../escape.txt", "/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError):
            cloud.share_path("jobshare", bad)
    with pytest.raises(ValueError):
        cloud.share_path("noshare", "x")
    assert cloud.share_dir("noshare") is None


def test_unknown_provider_routes_are_arm_404(local_cloud, resource_client):
    client = make_resource_client(local_cloud.connection)
    token = client.config.credentials.token["access_token"]
    response = requests_session(local_cloud.connection).get(
        local_cloud.base_url + _path(local_cloud).replace("Contoso.Widgets", "Nowhere.Things"),
        params={"api-version": "2018-05-01"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "InvalidResourceType"


def test_options_reach_surfaces(tmp_path):
    from quickstart.localcloud import LocalCloud

    with LocalCloud(tmp_path / "s", cluster_allocation_delay=0.25, my_surface_knob="on") as cloud:
        assert cloud.context.options["cluster_allocation_delay"] == 0.25
        assert cloud.context.options["my_surface_knob"] == "on"
    with LocalCloud(tmp_path / "t") as cloud:
        assert cloud.context.options["cluster_allocation_delay"] == 1.0
