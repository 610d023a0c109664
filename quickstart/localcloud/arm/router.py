"""Azure Resource Manager: the router every ARM surface plugs into, and resource groups.

The router matches paths case-insensitively (ARM does; azure-mgmt-resource sends
``/resourcegroups/`` where azure-mgmt-batchai sends ``/resourceGroups/``) while keeping the
case of the names it captures. werkzeug's routing is case-sensitive, hence this small regex
router. Before any handler runs, the router checks the bearer token, the subscription and the
api-version, and turns an ``ArmError`` raised anywhere in a handler into ARM's error JSON.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from werkzeug.wrappers import Request, Response

from ..identity.bearer_tokens import TokenError, verify_token

log = logging.getLogger("quickstart.localcloud")

RESOURCE_GROUP_TYPE = "Microsoft.Resources/resourceGroups"
RESOURCE_GROUP_API_VERSIONS = None  # any well-formed version, as the SDK profiles vary
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
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


class ArmError(Exception):
    """Raise from an ARM handler to answer ``status`` with ARM's error JSON."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def arm_json(status: int, body=None, headers: dict | None = None) -> Response:
    """A JSON response as ARM sends it (an empty body when ``body`` is None)."""
    data = b"" if body is None else json.dumps(body).encode("utf-8")
    response = Response(data, status=status, headers=headers or {})
    if body is not None:
        response.headers["Content-Type"] = "application/json; charset=utf-8"
    else:
        response.headers.remove("Content-Type")
    return response


def arm_error(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    """ARM's error body: ``{"error": {"code": ..., "message": ...}}``."""
    return arm_json(status, {"error": {"code": code, "message": message}}, headers)


def json_body(request: Request, required: bool = True) -> dict:
    """The request's JSON object body, or ArmError 400 saying what is wrong with it."""
    data = request.get_data(cache=True)
    if not data.strip():
        if required:
            raise ArmError(
                400,
                "InvalidRequestContent",
                "The request content was empty; send a JSON object body.",
            )
        return {}
    try:
        body = json.loads(data)
    except ValueError as err:
        raise ArmError(
            400,
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: {err}.",
        ) from None
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
    return body


def utc_now_iso() -> str:
    """Current UTC time the way ARM and Batch AI write it (ISO 8601, 7-digit fraction, Z)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e7):07d}Z"


@dataclass
class _Route:
    method: str
    template: str
    regex: re.Pattern
    handler: Callable
    api_versions: tuple[str, ...] | None


class ArmRouter:
    """Case-insensitive ARM routing with the bearer check in front of every handler.

    Templates name path parameters in braces, e.g.
    ``/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}``; a handler is called as
    ``handler(request, **params)`` and returns a werkzeug Response (or raises ArmError).
    A parameter named ``subscriptionId`` must equal the local cloud's subscription (else 404
    SubscriptionNotFound).
    """

    def __init__(self, cloud):
        self.cloud = cloud
        self._routes: list[_Route] = []

    def add(
        self,
        method: str,
        template: str,
        handler: Callable,
        api_versions: Iterable[str] | None = None,
    ) -> None:
        """Route ``method`` (GET, PUT, ...) on ``template`` to ``handler``.

        ``api_versions``: the versions this route accepts (None: any well-formed version).
        """
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template.rstrip("/")))
        self._routes.append(
            _Route(
                method.upper(),
                template,
                re.compile("^" + pattern + "/?$", re.IGNORECASE),
                handler,
                tuple(api_versions) if api_versions else None,
            )
        )

    def dispatch(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            self._authenticate(request)
            response = self._route(request)
        except ArmError as err:
            response = arm_error(err.status, err.code, err.message, err.headers)
        except Exception:  # a bug: answer as ARM would, keep the traceback in the log only
            log.exception("ARM handler failed for %s %s", request.method, request.path)
            response = arm_error(
                500,
                "InternalServerError",
                "The local cloud hit an internal error; see localcloud.log in its state directory.",
            )
        response.headers.setdefault("x-ms-request-id", request_id)
        response.headers.setdefault("x-ms-correlation-request-id", request_id)
        if "x-ms-client-request-id" in request.headers:
            response.headers.setdefault(
                "x-ms-client-request-id", request.headers["x-ms-client-request-id"]
            )
        return response

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization")
        challenge = {
            "WWW-Authenticate": f'Bearer authorization_uri="{self.cloud.aad_url}", '
            f'error="invalid_token"'
        }
        if not header:
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                challenge,
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ArmError(
                401,
                "AuthenticationFailedInvalidHeader",
                "Authentication failed. The 'Authorization' header is provided in an "
                "invalid format; expected 'Bearer <token>'.",
                challenge,
            )
        try:
            request.environ["localcloud.claims"] = verify_token(
                token.strip(),
                self.cloud.credentials.token_signing_key,
                audience=self.cloud.resource_id,
                issuer=self.cloud.token_issuer,
            )
        except TokenError as err:
            raise ArmError(401, err.code, err.message, challenge) from None

    def _route(self, request: Request) -> Response:
        path = request.path
        matches = [(route, m) for route in self._routes if (m := route.regex.match(path))]
        method = request.method
        if method == "HEAD" and not any(route.method == "HEAD" for route, _ in matches):
            method = (
                "GET"  # HEAD without its own route is answered as GET (werkzeug drops the body)
            )
        for route, match in matches:
            if route.method == method:
                params = match.groupdict()
                self._check_subscription(params)
                self._check_api_version(request, route)
                return route.handler(request, **params)
        if matches:
            allowed = ", ".join(sorted({route.method for route, _ in matches}))
            raise ArmError(
                405,
                "MethodNotAllowed",
                f"The HTTP method '{request.method}' is not supported for '{path}'. "
                f"Supported: {allowed}.",
            )
        self._check_known_subscription(path)
        raise ArmError(
            404,
            "InvalidResourceType" if "/providers/" in path.lower() else "NotFound",
            f"The local cloud does not serve '{path}' (method {request.method}).",
        )

    def _check_subscription(self, params: dict) -> None:
        sub = params.get("subscriptionId")
        if sub is not None and sub.lower() != self.cloud.credentials.subscription_id.lower():
            raise ArmError(
                404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found."
            )

    def _check_known_subscription(self, path: str) -> None:
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0].lower() == "subscriptions":
            self._check_subscription({"subscriptionId": parts[1]})

    @staticmethod
    def _check_api_version(request: Request, route: _Route) -> None:
        version = request.args.get("api-version")
        if not version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if route.api_versions is not None:
            if version not in route.api_versions:
                raise ArmError(
                    400,
                    "InvalidApiVersionParameter",
                    f"The api-version '{version}' is invalid. The supported versions are "
                    f"'{','.join(route.api_versions)}'.",
                )
        elif not _API_VERSION.match(version):
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid: expected YYYY-MM-DD[-preview].",
            )


# ---------------------------------------------------------------------- resource groups


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
        if not _RG_NAME.match(name) or name.endswith("."):
            raise ArmError(
                400,
                "InvalidResourceGroup",
                f"The provided resource group name '{name}' has these invalid characters or "
                "length: use 1-90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'.",
            )

    @staticmethod
    def _check_tags(tags) -> dict:
        if tags is None:
            return {}
        if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise ArmError(
                400, "InvalidRequestContent", "'tags' must be an object of string values."
            )
        return tags

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
        tags = self._check_tags(body.get("tags"))
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
                tags = self._check_tags(body["tags"])
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
        group_id = group.body["id"]
        # Surfaces first (stop jobs, release nodes), then every record under the group at once.
        for hook in self.cloud.resource_group_delete_hooks:
            hook(self.cloud.credentials.subscription_id, group.name)
        self.store.delete_resource_tree(group_id)
        op = self.store.create_operation("resourceGroupDelete", group_id, status="Succeeded")
        location = (
            f"{self.cloud.base_url}/subscriptions/{self.cloud.credentials.subscription_id}"
            f"/operationresults/{op.id}?api-version={request.args.get('api-version')}"
        )
        return arm_json(202, None, {"Location": location, "Retry-After": "0"})

    def operation_result(self, request: Request, subscriptionId: str, operationId: str) -> Response:
        op = self.store.get_operation(operationId)
        if op is None:
            raise ArmError(
                404, "OperationNotFound", f"The operation '{operationId}' was not found."
            )
        if op.status == "InProgress":
            return arm_json(
                202,
                None,
                {
                    "Location": self.cloud.base_url + request.full_path.rstrip("?"),
                    "Retry-After": "0",
                },
            )
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
