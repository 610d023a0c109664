"""Settings for the quickstart: an ini file, overridden by environment variables, validated.

The tutorial needs a dozen names and a handful of secrets. They live in one ini file (see
config.example.ini) so a user can read and edit them in one place; environment variables override
the file under the names Azure tools use, so CI systems and `az`-style setups work unchanged.

Validation reports every problem at once, one line each, naming the setting and the rule, because
a user fixing a config file wants the whole list, not one error per run. Secrets never reach a
message: problems name the setting, never its value, and `Settings` hides secret fields from repr.

This module imports nothing heavy (no SDK), so `python -m quickstart --help` stays fast.
"""

import configparser
import dataclasses
import os
import re
import secrets as _secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

PLACEHOLDER = "FILL-IN-HERE"
LOCAL = "local"
AZURE_CLOUDS = ("AzureCloud", "AzureChinaCloud", "AzureUSGovernment", "AzureGermanCloud")
DEFAULT_CONFIG = "config.ini"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    """One key of the ini file: where it lives, its default, and who may override it."""

    section: str
    key: str
    default: str | None = None
    env: tuple = ()
    secret: bool = False
    azure_only: bool = False  # taken from the local cloud's connection when cloud = local


SCHEMA = (
    Setting("cloud", "cloud", LOCAL, ("QUICKSTART_CLOUD",)),
    Setting("cloud", "state_dir", "./.localcloud", ("QUICKSTART_STATE_DIR",)),
    Setting("cloud", "compute", "local", ("QUICKSTART_COMPUTE",)),
    Setting("cloud", "ray_address", "", ("QUICKSTART_RAY_ADDRESS",)),
    Setting("cloud", "ray_bundles", "", ("QUICKSTART_RAY_BUNDLES",)),
    Setting("credentials", "tenant_id", None, ("AZURE_TENANT_ID",), azure_only=True),
    Setting("credentials", "client_id", None, ("AZURE_CLIENT_ID",), azure_only=True),
    Setting(
        "credentials", "client_secret", None, ("AZURE_CLIENT_SECRET",), secret=True, azure_only=True
    ),
    Setting("credentials", "subscription_id", None, ("AZURE_SUBSCRIPTION_ID",), azure_only=True),
    Setting(
        "storage",
        "storage_account",
        None,
        ("AZURE_STORAGE_ACCOUNT", "AZURE_BATCHAI_STORAGE_ACCOUNT"),
        azure_only=True,
    ),
    Setting(
        "storage",
        "storage_key",
        None,
        ("AZURE_STORAGE_KEY", "AZURE_BATCHAI_STORAGE_KEY"),
        secret=True,
        azure_only=True,
    ),
    Setting("resources", "location", "eastus", ("AZURE_DEFAULTS_LOCATION",)),
    Setting("resources", "resource_group", "myresourcegroup", ("AZURE_DEFAULTS_GROUP",)),
    Setting("resources", "workspace", "myworkspace", ("QUICKSTART_WORKSPACE",)),
    Setting("resources", "cluster", "mycluster", ("QUICKSTART_CLUSTER",)),
    Setting("resources", "experiment", "myexperiment", ("QUICKSTART_EXPERIMENT",)),
    Setting("resources", "job", "", ("QUICKSTART_JOB",)),
    Setting("resources", "share", "batchaiquickstart", ("QUICKSTART_SHARE",)),
    Setting("resources", "directory", "mnistcntksample", ("QUICKSTART_DIRECTORY",)),
    Setting("cluster", "vm_size", "STANDARD_NC6", ("QUICKSTART_VM_SIZE",)),
    Setting("cluster", "node_count", "1", ("QUICKSTART_NODE_COUNT",)),
    Setting("cluster", "admin_user_name", "demouser", ("QUICKSTART_ADMIN_USER_NAME",)),
    Setting("cluster", "admin_user_password", "", ("QUICKSTART_ADMIN_USER_PASSWORD",), secret=True),
    Setting("cluster", "admin_ssh_public_key", "", ("QUICKSTART_ADMIN_SSH_PUBLIC_KEY",)),
    Setting(
        "job",
        "container_image",
        "microsoft/cntk:2.1-gpu-python3.5-cuda8.0-cudnn6.0",
        ("QUICKSTART_CONTAINER_IMAGE",),
    ),
    Setting("job", "extra_args", "", ("QUICKSTART_EXTRA_ARGS",)),
    Setting("job", "epochs", "", ("QUICKSTART_EPOCHS",)),
    Setting("job", "poll_interval", "2", ("QUICKSTART_POLL_INTERVAL",)),
    Setting("output", "data_dir", str(REPO_ROOT / "data"), ("QUICKSTART_DATA_DIR",)),
    Setting("output", "download_dir", "./outputs", ("QUICKSTART_DOWNLOAD_DIR",)),
    Setting("output", "delete_share", "", ("QUICKSTART_DELETE_SHARE",)),
)
SCHEMA_BY_KEY = {s.key: s for s in SCHEMA}
SECRET_KEYS = tuple(s.key for s in SCHEMA if s.secret)

# Name rules of the services (Batch AI 2018-05-01 swagger, ARM, Azure Files).
NAME_RULES = {
    "resource_group": (
        re.compile(r"^[-\w.()]{1,90}$"),
        lambda v: not v.endswith("."),
        "1-90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'",
    ),
    "workspace": (re.compile(r"^[-\w]{1,64}$"), None, "1-64 letters, digits, '-' or '_'"),
    "cluster": (re.compile(r"^[-\w]{1,64}$"), None, "1-64 letters, digits, '-' or '_'"),
    "experiment": (re.compile(r"^[-\w]{1,64}$"), None, "1-64 letters, digits, '-' or '_'"),
    "job": (
        re.compile(r"^[-\w]{1,64}$"),
        None,
        "1-64 letters, digits, '-' or '_' (empty: a timestamped name)",
    ),
    "share": (
        re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$"),
        None,
        "3-63 lowercase letters, digits and single hyphens, starting and ending with a letter "
        "or digit",
    ),
    "directory": (
        re.compile(r'^[^"\\/:|<>*?\x00-\x1f]{1,255}$'),
        lambda v: v.strip(" .") != "",
        '1-255 characters, none of " \\ / : | < > * ?',
    ),
    "location": (re.compile(r"^[a-z0-9]{2,40}$"), None, "an Azure region name such as eastus"),
    "vm_size": (
        re.compile(r"^standard_[a-z0-9]+(?:_[a-z0-9]+)*$", re.I),
        None,
        "a VM size such as STANDARD_NC6 (Standard_<family><size>[_<version>])",
    ),
    "admin_user_name": (
        re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$", re.I),
        None,
        "1-32 characters: letters, digits, '_', '.', '-', starting with a letter or '_'",
    ),
    "storage_account": (re.compile(r"^[a-z0-9]{3,24}$"), None, "3-24 lowercase letters and digits"),
    "subscription_id": (
        re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I),
        None,
        "a GUID such as 00000000-0000-0000-0000-000000000000",
    ),
}
BOOLEANS = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
}


class ConfigError(Exception):
    """Settings that cannot be used; `problems` holds one line per problem, no secret values."""

    def __init__(self, problems):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Settings:
    """Everything the tutorial needs, validated. Secret fields are hidden from repr."""

    cloud: str = LOCAL
    state_dir: str = "./.localcloud"
    compute: str = "local"  # where the local cloud runs nodes: local processes or Ray
    ray_address: str = ""
    ray_bundles: str = ""
    tenant_id: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    subscription_id: str = ""
    storage_account: str = ""
    storage_key: str = field(default="", repr=False)
    location: str = "eastus"
    resource_group: str = "myresourcegroup"
    workspace: str = "myworkspace"
    cluster: str = "mycluster"
    experiment: str = "myexperiment"
    job: str = ""
    share: str = "batchaiquickstart"
    directory: str = "mnistcntksample"
    vm_size: str = "STANDARD_NC6"
    node_count: int = 1
    admin_user_name: str = "demouser"
    admin_user_password: str = field(default="", repr=False)
    admin_ssh_public_key: str = ""
    container_image: str = "microsoft/cntk:2.1-gpu-python3.5-cuda8.0-cudnn6.0"
    extra_args: str = ""
    epochs: int | None = None
    poll_interval: float = 2.0
    data_dir: str = str(REPO_ROOT / "data")
    download_dir: str = "./outputs"
    delete_share: bool | None = None  # None: yes on the local cloud, no on Azure
    # Filled from the local cloud's connection (cloud = local) or left empty for Azure clouds.
    resource_manager_url: str = ""
    active_directory_url: str = ""
    active_directory_resource_id: str = ""
    storage_connection_string: str = field(default="", repr=False)
    ca_cert: str = ""

    @property
    def is_local(self):
        return self.cloud == LOCAL

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def secret_values(self):
        """The secret strings held, so callers (and tests) can make sure none is ever printed."""
        values = [self.client_secret, self.storage_key, self.admin_user_password]
        match = re.search(r"AccountKey=([^;]+)", self.storage_connection_string)
        if match:
            values.append(match.group(1))
        return [v for v in values if v and v != PLACEHOLDER]

    def bind_local_cloud(self, connection):
        """Take credentials, subscription, storage and endpoints from the local cloud's
        connection."""
        return self.replace(
            tenant_id=connection["tenant"],
            client_id=connection["client_id"],
            client_secret=connection["client_secret"],
            subscription_id=connection["subscription_id"],
            storage_account=connection["storage_account"],
            storage_key=connection["storage_key"],
            storage_connection_string=connection["storage_connection_string"],
            resource_manager_url=connection["resource_manager_url"],
            active_directory_url=connection["active_directory_url"],
            active_directory_resource_id=connection["active_directory_resource_id"],
            ca_cert=connection["ca_cert"],
            admin_user_password=self.admin_user_password or _secrets.token_urlsafe(18),
        )


def load_settings(path=None, environ=None, overrides=None, warn=None):
    """Read `path` (default ./config.ini, optional), apply the environment and `overrides`,
    validate.

    Returns a `Settings`, or raises `ConfigError` listing every problem. `warn(line)` receives
    warnings (a config file holding secrets that others can read).
    """
    environ = os.environ if environ is None else environ
    raw, problems = _read_ini(path)
    if path is not None or Path(DEFAULT_CONFIG).exists():
        _warn_if_exposed(Path(path or DEFAULT_CONFIG), raw, warn)
    for setting in SCHEMA:
        for name in setting.env:
            if environ.get(name):
                raw[setting.key] = (environ[name], "environment variable " + name)
                break
    for key, value in (overrides or {}).items():
        if value is not None:
            option = {"node_count": "nodes"}.get(key, key)  # run --nodes sets node_count
            raw[key] = (str(value), "--" + option.replace("_", "-"))
    settings, more = _validate(raw)
    problems += more
    if problems:
        raise ConfigError(problems)
    return settings


def _read_ini(path):
    """Return ({key: (value, origin)}, problems) from the ini file; a missing default file is
    fine."""
    problems = []
    file = Path(path) if path is not None else Path(DEFAULT_CONFIG)
    if not file.exists():
        if path is not None:
            problems.append(f"--config: {file} does not exist; copy config.example.ini to make one")
        return {}, problems
    if file.is_dir():
        return {}, [f"--config: {file} is a folder; name the settings file (config.ini) in it"]
    try:  # ConfigParser.read would skip a file it cannot open, silently
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return {}, [f"{file}: not a UTF-8 text file; --config names an ini file of settings"]
    except OSError as error:
        return {}, [f"--config: cannot read {file} ({error.strerror or error})"]
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(file))
    except configparser.MissingSectionHeaderError as error:
        return {}, [f"{file}: line {error.lineno}: settings must follow a [section] header"]
    except configparser.ParsingError as error:
        lines = ", ".join(str(lineno) for lineno, _ in error.errors)
        return {}, [f"{file}: line {lines}: not a 'key = value' line or [section] header"]
    except configparser.DuplicateOptionError as error:
        return {}, [f"{file}: line {error.lineno}: [{error.section}] {error.option} is set twice"]
    except configparser.DuplicateSectionError as error:
        return {}, [f"{file}: line {error.lineno}: section [{error.section}] appears twice"]
    except (configparser.Error, UnicodeDecodeError, OSError) as error:
        return {}, [f"{file}: not a readable UTF-8 ini file ({type(error).__name__})"]
    raw = {}
    for section in parser.sections():
        for key, value in parser.items(section):
            setting = SCHEMA_BY_KEY.get(key)
            where = f"[{section}] {key}"
            if setting is None:
                problems.append(
                    f"{where}: unknown setting; see config.example.ini for the settings"
                )
            elif setting.section != section:
                problems.append(f"{where}: belongs in section [{setting.section}]")
            else:
                raw[key] = (value.strip(), where)
    return raw, problems


def _warn_if_exposed(file, raw, warn):
    if warn is None or not file.exists():
        return
    holds_secret = any(raw.get(k, ("",))[0] not in ("", PLACEHOLDER) for k in SECRET_KEYS)
    mode = file.stat().st_mode
    if holds_secret and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(
            f"warning: {file} holds secrets and is readable by group or others "
            f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {file}"
        )


def _validate(raw):
    """Turn raw strings into typed Settings; collect one line per problem."""
    problems = []
    values = {}
    cloud = raw.get("cloud", (LOCAL, ""))[0] or LOCAL

    def where(key):
        setting = SCHEMA_BY_KEY[key]
        return raw.get(key, (None, None))[1] or f"[{setting.section}] {key}"

    if cloud != LOCAL and cloud not in AZURE_CLOUDS:  # alone: what else is needed depends on it
        return None, [f"{where('cloud')}: must be local or one of {', '.join(AZURE_CLOUDS)}"]

    flagged = set()

    def problem(key, rule):
        flagged.add(key)
        problems.append(f"{where(key)}: {rule}")

    for setting in SCHEMA:
        value = raw.get(setting.key, (setting.default, None))[0]
        value = "" if value is None else value
        if setting.azure_only and cloud == LOCAL:
            continue  # the local cloud's connection provides these
        if PLACEHOLDER in value and setting.secret and cloud == LOCAL:
            value = ""  # the local cloud needs no admin password; one is made up per run
        if PLACEHOLDER in value:
            problem(setting.key, "still FILL-IN-HERE; replace it with your value")
            continue
        if setting.azure_only and not value:
            env = " or environment variable " + setting.env[0] if setting.env else ""
            problem(
                setting.key,
                f"missing; required when cloud = {cloud} (set it in the config file{env})",
            )
            continue
        values[setting.key] = value

    for key, (pattern, extra_check, rule) in NAME_RULES.items():
        value = values.get(key)
        if key == "job" and not value:
            continue
        if value is not None and not (
            pattern.match(value) and (extra_check is None or extra_check(value))
        ):
            problem(key, "must be " + rule)
    values["node_count"] = _integer(values.get("node_count"), "node_count", 1, problem)
    values["epochs"] = (
        None if not values.get("epochs") else _integer(values["epochs"], "epochs", 1, problem)
    )
    values["poll_interval"] = _number(values.get("poll_interval"), "poll_interval", problem)
    delete_share = values.get("delete_share", "").lower()
    if delete_share and delete_share not in BOOLEANS:
        problem(
            "delete_share", "must be yes, no or empty (empty: yes on the local cloud, no on Azure)"
        )
    values["delete_share"] = BOOLEANS.get(delete_share)
    if (
        cloud != LOCAL
        and not values.get("admin_user_password")
        and not values.get("admin_ssh_public_key")
        and not flagged & {"admin_user_password", "admin_ssh_public_key"}
    ):
        problem(
            "admin_user_password",
            "neither admin_user_password nor admin_ssh_public_key is set; "
            "the cluster needs one of them",
        )
    key = values.get("admin_ssh_public_key")
    if key and not re.match(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-\S+) [A-Za-z0-9+/=]+", key):
        problem("admin_ssh_public_key", "must be an OpenSSH public key line (ssh-rsa AAAA...)")
    compute = values.get("compute") or "local"
    if compute not in ("local", "ray"):
        problem("compute", "must be local (processes on this machine) or ray (a Ray cluster)")
    values["compute"] = compute
    state_dir = Path(values.get("state_dir") or ".")
    if state_dir.exists() and not state_dir.is_dir():
        problem("state_dir", f"{state_dir} is a file; name a folder (it is made if missing)")
    storage_key = values.get("storage_key")
    if storage_key and not re.match(r"^[A-Za-z0-9+/]+={0,2}$", storage_key):
        problem("storage_key", "must be the storage account's base64 access key")
    if problems:
        return None, problems
    values["cloud"] = cloud
    known = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known}), []


def _integer(value, key, minimum, problem):
    try:
        number = int(value)
    except (TypeError, ValueError):
        problem(key, f"must be a whole number of at least {minimum}")
        return minimum
    if number < minimum:
        problem(key, f"must be at least {minimum}")
    return number


def _number(value, key, problem):
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1
    if not 0 < number <= 3600:
        problem(key, "must be a number of seconds between 0 and 3600, such as 2")
        return 2.0
    return number
