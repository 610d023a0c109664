"""Microsoft.BatchAI 2018-05-01 JSON shapes: checking what clients send, drawing what they read.

Kept apart from the HTTP handlers (routes.py) and the scheduler (scheduler.py) so each of
the three reads on its own. Everything here is pure: dicts in, dicts out, ``ArmError`` for bad
input with a message that names the field and says what to send instead.

Conventions of the service that these functions keep (see shared/reference/batchai.md §1.4, §10):
lowercase enum values; secrets (storage keys, admin password, secret values, registry
passwords) are kept by the caller in the record's ``extra`` and never drawn; server defaults
(``vmPriority``, ``nodeDeallocationOption``, ``fileMode``/``directoryMode``,
``schedulingPriority``, ``constraints.maxWallClockTime``, CNTK ``languageType``/``processCount``,
``imageReference``) are filled in as the service did.
"""

from __future__ import annotations

import copy
import re
import time
from urllib.parse import urlsplit

from ..arm import ArmError
from .nodeagent import TOOL_TYPES, duration_seconds

API_VERSION = "2018-05-01"
PROVIDER = "Microsoft.BatchAI"
WORKSPACE_TYPE = "Microsoft.BatchAI/workspaces"
EXPERIMENT_TYPE = "Microsoft.BatchAI/workspaces/experiments"
CLUSTER_TYPE = "Microsoft.BatchAI/workspaces/clusters"
JOB_TYPE = "Microsoft.BatchAI/workspaces/experiments/jobs"

NAME = re.compile(r"^[-\w]{1,64}$")
DEFAULT_IMAGE = {
    "publisher": "Canonical",
    "offer": "UbuntuServer",
    "sku": "16.04-LTS",
    "version": "latest",
}
DEFAULT_MAX_WALL_CLOCK = "P7D"
DEALLOCATION_OPTIONS = ("requeue", "terminate", "waitforjobcompletion", "unknown")
PRIORITIES = {"low": 0, "normal": 1, "high": 2}
STDOUTERR = "stdouterr"


def iso(ts: float | None) -> str | None:
    """Epoch seconds as Batch AI wrote times (ISO 8601, 7-digit fraction, Z)."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e7):07d}Z"


def bad(message: str, code: str = "InvalidParameter", status: int = 400) -> ArmError:
    return ArmError(status, code, message)


def check_name(kind: str, name: str) -> None:
    if not NAME.fullmatch(name):
        raise bad(
            f"The {kind} name '{name}' is invalid: use 1-64 letters, digits, '-' or '_'.",
            code="InvalidResourceName",
        )


def _obj(value, where: str, required: bool = False) -> dict | None:
    if value is None:
        if required:
            raise bad(f"'{where}' is required.")
        return None
    if not isinstance(value, dict):
        raise bad(f"'{where}' must be a JSON object.")
    return value


def _str(value, where: str, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise bad(f"'{where}' is required.")
        return None
    if not isinstance(value, str):
        raise bad(f"'{where}' must be a string.")
    return value


def _int(
    value,
    where: str,
    required: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    if value is None:
        if required:
            raise bad(f"'{where}' is required.")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"'{where}' must be a whole number.")
    if minimum is not None and value < minimum:
        raise bad(f"'{where}' must be at least {minimum} (got {value}).")
    if maximum is not None and value > maximum:
        raise bad(f"'{where}' must be at most {maximum} (got {value}).")
    return value


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(f"'{where}' must be a JSON array.")
    return value


# ---------------------------------------------------------------------- mounts


def parse_azure_file_url(url: str, where: str) -> tuple[str, str]:
    """(host, share) of an azureFileUrl such as ``https://host[:port]/account/share`` (path
    style, as the quickstart builds it from a FileEndpoint) or ``https://acct.file.../share``."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme not in ("https", "http") or not parts.netloc or not segments:
        raise bad(
            f"'{where}' must be a URL ending in the share's name, for example "
            f"https://<file endpoint>/<share>; got '{url}'."
        )
    return parts.netloc, segments[-1].lower()


def check_mount_volumes(value, where: str) -> tuple[dict | None, list]:
    """Validate MountVolumes; returns (body without secrets, [mount]): each mount a dict of
    "kind" ("file" or "blob"), "relative", "account", "share" (the share or container), "key"
    and "url". Storage kinds the local cloud lacks are refused by name."""
    mounts = _obj(value, where)
    if mounts is None:
        return None, []
    for kind, what in (
        ("fileServers", "Batch AI file servers (NFS)"),
        ("unmanagedFileSystems", "unmanaged file systems"),
    ):
        if mounts.get(kind):
            raise bad(
                f"'{where}.{kind}': the local cloud does not emulate {what}; mount an Azure "
                f"Files share with '{where}.azureFileShares' (or a Blob container with "
                f"'{where}.azureBlobFileSystems') instead.",
                code="NotSupported",
            )
    body = copy.deepcopy(mounts)
    found = []
    seen = set()
    for i, share in enumerate(_list(mounts.get("azureFileShares"), f"{where}.azureFileShares")):
        at = f"{where}.azureFileShares[{i}]"
        _obj(share, at, required=True)
        account = _str(share.get("accountName"), f"{at}.accountName", required=True)
        url = _str(share.get("azureFileUrl"), f"{at}.azureFileUrl", required=True)
        rel = _mount_path(share, at, seen)
        _, share_name = parse_azure_file_url(url, f"{at}.azureFileUrl")
        key = _account_key(share, at)
        body["azureFileShares"][i]["credentials"] = {}
        body["azureFileShares"][i].setdefault("fileMode", "0777")
        body["azureFileShares"][i].setdefault("directoryMode", "0777")
        found.append(
            {
                "kind": "file",
                "relative": rel,
                "account": account,
                "share": share_name,
                "key": key,
                "url": url,
            }
        )
    containers = _list(mounts.get("azureBlobFileSystems"), f"{where}.azureBlobFileSystems")
    for i, container in enumerate(containers):
        at = f"{where}.azureBlobFileSystems[{i}]"
        _obj(container, at, required=True)
        account = _str(container.get("accountName"), f"{at}.accountName", required=True)
        name = _str(container.get("containerName"), f"{at}.containerName", required=True)
        _str(container.get("mountOptions"), f"{at}.mountOptions")
        rel = _mount_path(container, at, seen)
        key = _account_key(container, at)
        body["azureBlobFileSystems"][i]["credentials"] = {}
        found.append(
            {
                "kind": "blob",
                "relative": rel,
                "account": account,
                "share": name,
                "key": key,
                "url": f"https://{account}.blob.core.windows.net/{name}",
            }
        )
    return body, found


def _mount_path(mount: dict, at: str, seen: set) -> str:
    """A mount's relativeMountPath: one folder name, used by no other mount of the same body."""
    rel = _str(mount.get("relativeMountPath"), f"{at}.relativeMountPath", required=True)
    if not re.fullmatch(r"[-\w.]+", rel) or rel in (".", ".."):
        raise bad(
            f"'{at}.relativeMountPath' must be one folder name (letters, digits, '-', '_', "
            f"'.'); got '{rel}'."
        )
    if rel in seen:
        raise bad(f"'{at}.relativeMountPath' '{rel}' is used by two mounts.")
    seen.add(rel)
    return rel


def _account_key(mount: dict, at: str) -> str:
    """The storage account key of a mount's credentials (the local cloud has no Key Vault)."""
    credentials = _obj(mount.get("credentials"), f"{at}.credentials", required=True)
    key = _str(credentials.get("accountKey"), f"{at}.credentials.accountKey")
    if credentials.get("accountKeySecretReference"):
        raise bad(
            f"'{at}.credentials.accountKeySecretReference': the local cloud has no Key "
            "Vault; give the storage account key in credentials.accountKey.",
            code="NotSupported",
        )
    if key is None:
        raise bad(f"'{at}.credentials.accountKey' is required.")
    return key


# ---------------------------------------------------------------------- workspaces / experiments


def workspace_body(
    arm_id: str, name: str, location: str, tags: dict | None, created: float
) -> dict:
    body = {
        "id": arm_id,
        "name": name,
        "type": WORKSPACE_TYPE,
        "location": location,
        "properties": {
            "creationTime": iso(created),
            "provisioningState": "succeeded",
            "provisioningStateTransitionTime": iso(created),
        },
    }
    if tags:
        body["tags"] = tags
    return body


def experiment_body(arm_id: str, name: str, created: float) -> dict:
    return {
        "id": arm_id,
        "name": name,
        "type": EXPERIMENT_TYPE,
        "properties": {
            "creationTime": iso(created),
            "provisioningState": "succeeded",
            "provisioningStateTransitionTime": iso(created),
        },
    }


# ---------------------------------------------------------------------- clusters


# The most nodes a cluster (or a job) may have here. A node is a record, not a VM, but every
# scheduler pass reads the cluster's node list, so the bound keeps a pass (and a resize) short;
# Batch AI's own limit was the subscription's core quota. tests/bench/bench_scheduler_latency.py
# measures a resize to this bound.
MAX_NODE_COUNT = 1000


def check_scale_settings(value, where: str) -> dict:
    scale = _obj(value, where)
    if scale is None:
        raise bad(
            f"'{where}' is required: give manual.targetNodeCount, or autoScale with "
            "minimumNodeCount and maximumNodeCount."
        )
    manual, auto = scale.get("manual"), scale.get("autoScale")
    if (manual is None) == (auto is None):
        raise bad(f"'{where}' must have exactly one of 'manual' and 'autoScale'.")
    if manual is not None:
        _obj(manual, f"{where}.manual")
        _int(
            manual.get("targetNodeCount"),
            f"{where}.manual.targetNodeCount",
            required=True,
            minimum=0,
            maximum=MAX_NODE_COUNT,
        )
        option = manual.get("nodeDeallocationOption") or "requeue"
        if option not in DEALLOCATION_OPTIONS:
            raise bad(
                f"'{where}.manual.nodeDeallocationOption' must be one of "
                f"{', '.join(DEALLOCATION_OPTIONS)}; got '{option}'."
            )
        return {
            "manual": {
                "targetNodeCount": manual["targetNodeCount"],
                "nodeDeallocationOption": option,
            }
        }
    _obj(auto, f"{where}.autoScale")
    low = _int(
        auto.get("minimumNodeCount"),
        f"{where}.autoScale.minimumNodeCount",
        required=True,
        minimum=0,
        maximum=MAX_NODE_COUNT,
    )
    high = _int(
        auto.get("maximumNodeCount"),
        f"{where}.autoScale.maximumNodeCount",
        required=True,
        minimum=1,
        maximum=MAX_NODE_COUNT,
    )
    initial = (
        _int(
            auto.get("initialNodeCount"),
            f"{where}.autoScale.initialNodeCount",
            minimum=0,
            maximum=MAX_NODE_COUNT,
        )
        or 0
    )
    if low > high:
        raise bad(
            f"'{where}.autoScale.minimumNodeCount' ({low}) exceeds maximumNodeCount ({high})."
        )
    if initial > high:
        raise bad(
            f"'{where}.autoScale.initialNodeCount' ({initial}) exceeds maximumNodeCount ({high})."
        )
    return {
        "autoScale": {
            "minimumNodeCount": low,
            "maximumNodeCount": high,
            "initialNodeCount": initial,
        }
    }


def initial_target(scale: dict) -> int:
    if "manual" in scale:
        return scale["manual"]["targetNodeCount"]
    auto = scale["autoScale"]
    return max(auto["minimumNodeCount"], auto["initialNodeCount"])


def max_nodes(scale: dict) -> int:
    if "manual" in scale:
        return scale["manual"]["targetNodeCount"]
    return scale["autoScale"]["maximumNodeCount"]


def check_cluster(body: dict) -> tuple[dict, dict]:
    """(stored properties without secrets, secrets) of a ClusterCreateParameters body."""
    props = _obj(body.get("properties"), "properties", required=True)
    out = {}
    vm_size = _str(props.get("vmSize"), "properties.vmSize", required=True)
    if not re.fullmatch(r"[A-Za-z0-9_]+", vm_size):
        raise bad(f"'properties.vmSize' '{vm_size}' is not a VM size name such as STANDARD_NC6.")
    out["vmSize"] = vm_size
    priority = props.get("vmPriority") or "dedicated"
    if priority not in ("dedicated", "lowpriority"):
        raise bad(
            f"'properties.vmPriority' must be 'dedicated' or 'lowpriority'; got '{priority}'."
        )
    out["vmPriority"] = priority
    out["scaleSettings"] = check_scale_settings(
        props.get("scaleSettings"), "properties.scaleSettings"
    )
    vm_config = _obj(
        props.get("virtualMachineConfiguration"), "properties.virtualMachineConfiguration"
    )
    image = dict(DEFAULT_IMAGE)
    if vm_config and vm_config.get("imageReference"):
        given = _obj(
            vm_config["imageReference"], "properties.virtualMachineConfiguration.imageReference"
        )
        image = {**{"version": "latest"}, **given}
    out["virtualMachineConfiguration"] = {"imageReference": image}
    secrets = {}
    node_setup = _obj(props.get("nodeSetup"), "properties.nodeSetup")
    if node_setup is not None:
        setup = copy.deepcopy(node_setup)
        mounts_body, shares = check_mount_volumes(
            node_setup.get("mountVolumes"), "properties.nodeSetup.mountVolumes"
        )
        if mounts_body is not None:
            setup["mountVolumes"] = mounts_body
        secrets["mounts"] = shares
        task = _obj(node_setup.get("setupTask"), "properties.nodeSetup.setupTask")
        if task is not None:
            _str(
                task.get("commandLine"), "properties.nodeSetup.setupTask.commandLine", required=True
            )
            _str(
                task.get("stdOutErrPathPrefix"),
                "properties.nodeSetup.setupTask.stdOutErrPathPrefix",
                required=True,
            )
            secret_values, stripped = check_secrets(
                task.get("secrets"), "properties.nodeSetup.setupTask.secrets"
            )
            setup["setupTask"]["secrets"] = stripped
            if not stripped:
                setup["setupTask"].pop("secrets")
            secrets["setup_secrets"] = secret_values
        out["nodeSetup"] = setup
    users = _obj(props.get("userAccountSettings"), "properties.userAccountSettings", required=True)
    _str(users.get("adminUserName"), "properties.userAccountSettings.adminUserName", required=True)
    if not users.get("adminUserPassword") and not users.get("adminUserSshPublicKey"):
        raise bad(
            "'properties.userAccountSettings' needs adminUserPassword or adminUserSshPublicKey."
        )
    out["userAccountSettings"] = {k: v for k, v in users.items() if k != "adminUserPassword"}
    if users.get("adminUserPassword"):
        secrets["admin_password"] = users["adminUserPassword"]
    if props.get("subnet") is not None:
        out["subnet"] = _obj(props["subnet"], "properties.subnet")
    return out, secrets


def check_secrets(value, where: str) -> tuple[dict, list]:
    """({name: value}, body list with values removed) of EnvironmentVariableWithSecretValue[]."""
    values, stripped = {}, []
    for i, item in enumerate(_list(value, where)):
        _obj(item, f"{where}[{i}]", required=True)
        name = _str(item.get("name"), f"{where}[{i}].name", required=True)
        if item.get("valueSecretReference"):
            raise bad(
                f"'{where}[{i}].valueSecretReference': the local cloud has no Key Vault; give "
                "the secret in 'value'.",
                code="NotSupported",
            )
        values[name] = _str(item.get("value"), f"{where}[{i}].value") or ""
        stripped.append({"name": name})
    return values, stripped


# ---------------------------------------------------------------------- jobs


_JOB_READ_ONLY = (
    "executionState",
    "executionInfo",
    "jobOutputDirectoryPathSegment",
    "provisioningState",
    "creationTime",
    "toolType",
)


def check_job(body: dict) -> tuple[dict, dict]:
    """(stored properties without secrets, secrets) of a JobCreateParameters body, with the
    service's defaults filled in. The cluster reference and node count are checked by the
    caller, which knows the clusters.

    Each section of the body has its own check below; they run in a fixed order, so a body
    with several problems always reports the same one first."""
    props = _obj(body.get("properties"), "properties", required=True)
    out = copy.deepcopy(props)
    for key in _JOB_READ_ONLY:
        out.pop(key, None)
    _check_job_placement(props)
    out["schedulingPriority"] = _check_priority(props)
    _check_toolkit(props, out)
    _check_job_preparation(props)
    _check_input_directories(props)
    _check_output_directories(props)
    _check_environment_variables(props)
    secrets = {"values": _take_secret_values(props, out)}
    secrets["mounts"] = _take_job_mounts(props, out)
    password = _take_registry_password(props, out)
    if password:
        secrets["registry_password"] = password
    out["constraints"] = _check_constraints(props)
    return out, secrets


def _check_job_placement(props: dict) -> None:
    """The cluster reference, the node count and where stdout/stderr go are required."""
    cluster = _obj(props.get("cluster"), "properties.cluster", required=True)
    _str(cluster.get("id"), "properties.cluster.id", required=True)
    _int(
        props.get("nodeCount"),
        "properties.nodeCount",
        required=True,
        minimum=1,
        maximum=MAX_NODE_COUNT,
    )
    _str(props.get("stdOutErrPathPrefix"), "properties.stdOutErrPathPrefix", required=True)


def _check_priority(props: dict) -> str:
    """schedulingPriority, ``normal`` when not given."""
    priority = props.get("schedulingPriority") or "normal"
    if priority not in PRIORITIES:
        raise bad(f"'properties.schedulingPriority' must be low, normal or high; got '{priority}'.")
    return priority


def _check_toolkit(props: dict, out: dict) -> None:
    """Exactly one toolkit's settings, checked for what that toolkit needs to run; sets the
    read-only toolType the service derived from it."""
    toolkits = [key for key in TOOL_TYPES if props.get(key) is not None]
    if not toolkits:
        raise bad(
            "The job has no toolkit settings: give exactly one of "
            + ", ".join(TOOL_TYPES)
            + " (the quickstart uses cntkSettings)."
        )
    if len(toolkits) > 1:
        raise bad(f"The job has more than one toolkit ({', '.join(toolkits)}); give exactly one.")
    toolkit = toolkits[0]
    settings = _obj(props[toolkit], f"properties.{toolkit}", required=True)
    out["toolType"] = TOOL_TYPES[toolkit]
    if toolkit in ("customToolkitSettings", "customMpiSettings"):
        if toolkit == "customMpiSettings" or settings.get("commandLine") is not None:
            _str(settings.get("commandLine"), f"properties.{toolkit}.commandLine", required=True)
    elif toolkit == "cntkSettings":
        _check_cntk_settings(settings, out[toolkit], props["nodeCount"])
    elif toolkit == "caffeSettings":
        if not settings.get("pythonScriptFilePath") and not settings.get("configFilePath"):
            raise bad("'properties.caffeSettings' needs pythonScriptFilePath or configFilePath.")
    else:
        _str(
            settings.get("pythonScriptFilePath"),
            f"properties.{toolkit}.pythonScriptFilePath",
            required=True,
        )
    _fill_process_counts(toolkit, out[toolkit], props["nodeCount"])


def _fill_process_counts(toolkit: str, out_settings: dict, node_count: int) -> None:
    """The counts the service filled in and showed in every GET (docs/distributed-jobs.md
    section 5): processCount defaults to nodeCount; a distributed TensorFlow job gets one
    worker per node and one parameter server."""
    if toolkit in PROCESS_COUNT_TOOLKITS:
        out_settings.setdefault("processCount", node_count)
    if toolkit == "tensorFlowSettings":
        workers = out_settings.setdefault("workerCount", node_count)
        if node_count > 1 or workers > 1:
            out_settings.setdefault("parameterServerCount", 1)


PROCESS_COUNT_TOOLKITS = (
    "cntkSettings",
    "pyTorchSettings",
    "horovodSettings",
    "chainerSettings",
    "customMpiSettings",
    "caffeSettings",
)


def _check_cntk_settings(settings: dict, out_settings: dict, node_count: int) -> None:
    """languageType (Python, or BrainScript for a config file alone), the file that language
    needs, and processCount defaulting to the node count, as the service filled them in."""
    language = settings.get("languageType") or "Python"
    if language.lower() not in ("python", "brainscript"):
        raise bad(
            "'properties.cntkSettings.languageType' must be Python or BrainScript; "
            f"got '{language}'."
        )
    if (
        language.lower() == "python"
        and not settings.get("pythonScriptFilePath")
        and settings.get("configFilePath")
    ):
        language = "BrainScript"
    out_settings["languageType"] = language
    if language.lower() == "python":
        _str(
            settings.get("pythonScriptFilePath"),
            "properties.cntkSettings.pythonScriptFilePath",
            required=True,
        )
    else:
        _str(
            settings.get("configFilePath"),
            "properties.cntkSettings.configFilePath",
            required=True,
        )
    out_settings.setdefault("processCount", node_count)


def _check_job_preparation(props: dict) -> None:
    """jobPreparation, when given, needs its commandLine."""
    prep = _obj(props.get("jobPreparation"), "properties.jobPreparation")
    if prep is not None:
        _str(prep.get("commandLine"), "properties.jobPreparation.commandLine", required=True)


def _check_input_directories(props: dict) -> None:
    """Each input directory: a unique id usable in a variable name, and a path."""
    ids = set()
    for i, item in enumerate(_list(props.get("inputDirectories"), "properties.inputDirectories")):
        _obj(item, f"properties.inputDirectories[{i}]", required=True)
        ident = _str(item.get("id"), f"properties.inputDirectories[{i}].id", required=True)
        _str(item.get("path"), f"properties.inputDirectories[{i}].path", required=True)
        _check_directory_id(ident, f"properties.inputDirectories[{i}].id", ids)


def _check_output_directories(props: dict) -> None:
    """Each output directory: a unique id (not ``stdouterr``), a prefix, and a suffix that
    stays inside the job's outputs folder."""
    ids = set()
    for i, item in enumerate(_list(props.get("outputDirectories"), "properties.outputDirectories")):
        where = f"properties.outputDirectories[{i}]"
        _obj(item, where, required=True)
        ident = _str(item.get("id"), f"{where}.id", required=True)
        _str(item.get("pathPrefix"), f"{where}.pathPrefix", required=True)
        suffix = _str(item.get("pathSuffix"), f"{where}.pathSuffix")
        if suffix and (suffix.startswith("/") or ".." in suffix.split("/")):
            raise bad(
                f"'{where}.pathSuffix' must be a relative path inside "
                f"the job's outputs folder; got '{suffix}'."
            )
        _check_directory_id(ident, f"{where}.id", ids)
        if ident.lower() == STDOUTERR:
            raise bad(
                f"'{where}.id' may not be '{STDOUTERR}' (that id lists the job's stdout/stderr)."
            )


def _check_environment_variables(props: dict) -> None:
    """Each environment variable needs a name."""
    where = "properties.environmentVariables"
    for i, item in enumerate(_list(props.get("environmentVariables"), where)):
        _obj(item, f"{where}[{i}]", required=True)
        _str(item.get("name"), f"{where}[{i}].name", required=True)


def _take_secret_values(props: dict, out: dict) -> dict:
    """{name: value} of the job's secrets; the stored body keeps only their names."""
    secret_values, stripped = check_secrets(props.get("secrets"), "properties.secrets")
    if "secrets" in props:
        out["secrets"] = stripped
    return secret_values


def _take_job_mounts(props: dict, out: dict) -> list:
    """The job-level mount volumes' shares (with their keys); the stored body keeps none."""
    mounts_body, shares = check_mount_volumes(props.get("mountVolumes"), "properties.mountVolumes")
    if mounts_body is not None:
        out["mountVolumes"] = mounts_body
    return shares


def _take_registry_password(props: dict, out: dict) -> str | None:
    """The container registry's password, removed from the stored body (never drawn)."""
    registry = (props.get("containerSettings") or {}).get("imageSourceRegistry") or {}
    if not registry.get("credentials"):
        return None
    creds = out["containerSettings"]["imageSourceRegistry"]["credentials"]
    password = creds.pop("password") if creds.get("password") else None
    creds.pop("passwordSecretReference", None)
    return password


def _check_constraints(props: dict) -> dict:
    """constraints with maxWallClockTime a positive ISO 8601 duration, P7D when not given."""
    constraints = dict(props.get("constraints") or {})
    wall_clock = constraints.get("maxWallClockTime") or DEFAULT_MAX_WALL_CLOCK
    try:
        if duration_seconds(wall_clock) <= 0:
            raise ValueError
    except ValueError:
        raise bad(
            f"'properties.constraints.maxWallClockTime' must be a positive ISO 8601 duration "
            f"such as P7D or PT2H; got '{wall_clock}'."
        ) from None
    constraints["maxWallClockTime"] = wall_clock
    return constraints


def _check_directory_id(ident: str, where: str, seen: set) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_]+", ident):
        raise bad(
            f"'{where}' '{ident}' may hold only letters, digits and '_' (it becomes part of an "
            "environment variable name)."
        )
    if ident in seen:
        raise bad(f"'{where}' '{ident}' is used twice.")
    seen.add(ident)


def job_error(code: str, message: str, details: dict | None = None) -> dict:
    """A BatchAIError."""
    error = {"code": code, "message": message}
    if details:
        error["details"] = [{"name": k, "value": str(v)} for k, v in details.items()]
    return error
