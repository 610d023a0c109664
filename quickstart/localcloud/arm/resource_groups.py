"""Resource groups, the subscription reads, and ARM's async operation results for group deletes.

The first surface on the router and the parent of every other resource: deleting a group asks
each surface (``on_resource_group_delete``) to stop what runs under it before the records go.
"""

from __future__ import annotations

import re

from werkzeug.wrappers import Request, Response

from ..crashpoints import crash_point
from .responses import ArmError, arm_json, check_tags, json_body, still_running
from .router import ArmRouter

RESOURCE_GROUP_TYPE = "Microsoft.Resources/resourceGroups"
RESOURCE_GROUP_API_VERSIONS = None  # any well-formed version, as the SDK profiles vary
_RG_NAME = re.compile(r"^[-\w._()]{1,90}$")

# Azure public regions (ARM normalises "East US" to "eastus").
LOCATIONS = frozenset(
    """
eastus eastus2 centralus northcentralus southcentralus westcentralus westus westus2 westus3
canadacentral canadaeast brazilsouth brazilsoutheast northeurope westeurope uksouth ukwest
francecentral francesouth germanywestcentral germanynorth switzerlandnorth switzerlandwest
norwayeast norwaywest swedencentral polandcentral italynorth spaincentral eastasia southeastasia
japaneast japanwest koreacentral koreasouth australiaeast australiasoutheast australiacentral
australiacentral2 centralindia southindia westindia jioindiawest uaenorth uaecentral
southafricanorth southafricawest qatarcentral israelcentral mexicocentral
""".split()
)


class ResourceGroups:
    """``Microsoft.Resources/resourceGroups`` plus the subscription and operation-status reads."""

    def __init__(self, cloud):
        self.cloud = cloud
        self.store = cloud.store

    def install(self, router: ArmRouter) -> None:
        sub = "/subscriptions/{subscriptionId}"
        rg = sub + "/resourcegroups/{resourceGroupName}"
        router.add("GET", "/subscriptions", self.list_subscriptions)
        router.add("GET", sub, self.get_subscription)
        router.add("GET", sub + "/resourcegroups", self.list_groups)
        router.add("PUT", rg, self.create_or_update)
        router.add("PATCH", rg, self.update)
        router.add("GET", rg, self.get)
        router.add("HEAD", rg, self.check_existence)
        router.add("DELETE", rg, self.delete)
        router.add("GET", sub + "/operationresults/{operationId}", self.operation_result)

    # -- helpers

    def group_id(self, name: str) -> str:
        return f"/subscriptions/{self.cloud.credentials.subscription_id}/resourceGroups/{name}"

    def _existing(self, name: str):
        record = self.store.get_resource(self.group_id(name))
        if record is None:
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found."
            )
        return record

    @staticmethod
    def _check_name(name: str) -> None:
        if not _RG_NAME.fullmatch(name) or name.endswith("."):
            raise ArmError(
                400,
                "InvalidResourceGroup",
                f"The provided resource group name '{name}' has these invalid characters or "
                "length: use 1-90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'.",
            )

    # -- subscription

    def _subscription_body(self) -> dict:
        sub = self.cloud.credentials.subscription_id
        return {
            "id": f"/subscriptions/{sub}",
            "subscriptionId": sub,
            "tenantId": self.cloud.credentials.tenant,
            "displayName": "Local cloud subscription",
            "state": "Enabled",
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "PayAsYouGo_2014-09-01",
                "spendingLimit": "Off",
            },
            "authorizationSource": "RoleBased",
        }

    def list_subscriptions(self, request: Request) -> Response:
        return arm_json(200, {"value": [self._subscription_body()]})

    def get_subscription(self, request: Request, subscriptionId: str) -> Response:
        return arm_json(200, self._subscription_body())

    # -- resource groups

    def create_or_update(
        self, request: Request, subscriptionId: str, resourceGroupName: str
    ) -> Response:
        self._check_name(resourceGroupName)
        body = json_body(request)
        location = body.get("location")
        if not isinstance(location, str) or not location.strip():
            raise ArmError(
                400, "LocationRequired", "The location property is required for this definition."
            )
        location = location.replace(" ", "").lower()
        if location not in LOCATIONS:
            raise ArmError(
                400,
                "LocationNotAvailableForResourceGroup",
                f"The provided location '{body['location']}' is not available for resource "
                f"group. List of available regions is '{','.join(sorted(LOCATIONS))}'.",
            )
        tags = check_tags(body.get("tags"))
        with self.store.transaction():
            old = self.store.get_resource(self.group_id(resourceGroupName))
            if old is not None and old.body["location"] != location:
                raise ArmError(
                    409,
                    "InvalidResourceGroupLocation",
                    f"Invalid resource group location '{location}'. The Resource group "
                    f"already exists in location '{old.body['location']}'.",
                )
            name = old.name if old else resourceGroupName
            group = {
                "id": self.group_id(name),
                "name": name,
                "type": RESOURCE_GROUP_TYPE,
                "location": location,
                "properties": {"provisioningState": "Succeeded"},
            }
            if tags:
                group["tags"] = tags
            if body.get("managedBy"):
                group["managedBy"] = body["managedBy"]
            self.store.put_resource(group["id"], RESOURCE_GROUP_TYPE, name, group)
        return arm_json(200 if old else 201, group)

    def update(self, request: Request, subscriptionId: str, resourceGroupName: str) -> Response:
        body = json_body(request)
        with self.store.transaction():
            group = dict(self._existing(resourceGroupName).body)
            if "tags" in body:
                tags = check_tags(body["tags"])
                group.pop("tags", None)
                if tags:
                    group["tags"] = tags
            if body.get("managedBy"):
                group["managedBy"] = body["managedBy"]
            self.store.put_resource(group["id"], RESOURCE_GROUP_TYPE, group["name"], group)
        return arm_json(200, group)

    def get(self, request: Request, subscriptionId: str, resourceGroupName: str) -> Response:
        return arm_json(200, self._existing(resourceGroupName).body)

    def check_existence(
        self, request: Request, subscriptionId: str, resourceGroupName: str
    ) -> Response:
        found = self.store.get_resource(self.group_id(resourceGroupName)) is not None
        return arm_json(204 if found else 404)

    def list_groups(self, request: Request, subscriptionId: str) -> Response:
        groups = [r.body for r in self.store.list_resources(type=RESOURCE_GROUP_TYPE)]
        groups.sort(key=lambda g: g["name"].lower())
        skip = _int_arg(request, "$skiptoken", 0)
        top = _int_arg(request, "$top", None)
        page = groups[skip:] if top is None else groups[skip : skip + top]
        result = {"value": page}
        if top is not None and skip + top < len(groups):
            args = request.args.to_dict()
            args["$skiptoken"] = str(skip + top)
            query = "&".join(f"{k}={v}" for k, v in args.items())
            result["nextLink"] = f"{self.cloud.base_url}{request.path}?{query}"
        return arm_json(200, result)

    def delete(self, request: Request, subscriptionId: str, resourceGroupName: str) -> Response:
        group = self._existing(resourceGroupName)
        self._delete(group)
        op = self.store.create_operation(
            "resourceGroupDelete", group.body["id"], status="Succeeded"
        )
        location = (
            f"{self.cloud.base_url}/subscriptions/{self.cloud.credentials.subscription_id}"
            f"/operationresults/{op.id}?api-version={request.args.get('api-version')}"
        )
        return arm_json(202, None, {"Location": location, "Retry-After": "0"})

    def _delete(self, group) -> None:
        """Stop first, forget last: the group is marked Deleting (as ARM shows it), the
        surfaces stop what runs under it, and only then do its records go; a server that
        dies midway finishes the delete at its next start (``finish_deletes``)."""
        group.body.setdefault("properties", {})["provisioningState"] = "Deleting"
        group.extra["deleting"] = True
        self.store.put_resource(group.id, group.type, group.name, group.body, group.extra)
        crash_point("group-delete.marked")
        for hook in self.cloud.resource_group_delete_hooks:
            hook(self.cloud.credentials.subscription_id, group.name)
        crash_point("group-delete.stopped")
        self.store.delete_resource_tree(group.body["id"])

    def finish_deletes(self) -> None:
        """At start: complete the group deletes a crash cut short."""
        for group in self.store.list_resources(type=RESOURCE_GROUP_TYPE):
            if group.extra.get("deleting"):
                self._delete(group)

    def operation_result(self, request: Request, subscriptionId: str, operationId: str) -> Response:
        op = self.store.get_operation(operationId)
        if op is None:
            raise ArmError(
                404, "OperationNotFound", f"The operation '{operationId}' was not found."
            )
        if op.status == "InProgress":
            return still_running(self.cloud.base_url, request)
        if op.status != "Succeeded":
            error = op.body.get("error") or {
                "code": op.status,
                "message": f"The operation {op.status}.",
            }
            return arm_json(400, {"error": error}, {"Retry-After": "0"})
        return arm_json(200, None, {"Retry-After": "0"})


def _int_arg(request: Request, name: str, default):
    value = request.args.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ArmError(
            400, "InvalidQueryParameterValue", f"'{name}' must be a whole number."
        ) from None
    if number < 0 or (name == "$top" and number == 0):
        raise ArmError(400, "InvalidQueryParameterValue", f"'{name}' must be positive.")
    return number
