"""Settings: the ini file, environment overrides, defaults, and every validation rule."""

import os
import textwrap
from pathlib import Path

import pytest

from quickstart.config import AZURE_CLOUDS, SCHEMA, ConfigError, Settings, load_settings
from tests.conftest import clear_azure_environment

REPO = Path(__file__).resolve().parent.parent
AZURE_INI = """\
[cloud]
cloud = AzureCloud
[credentials]
tenant_id = mytenant.onmicrosoft.com
client_id = 11111111-2222-3333-4444-555555555555
client_secret = CLIENT-SECRET-value
subscription_id = 00000000-1111-2222-3333-444444444444
[storage]
storage_account = mystorage
storage_key = U1RPUkFHRS1LRVk=
[cluster]
admin_user_password = ADMIN-PASSWORD-value
"""


@pytest.fixture(autouse=True)
def in_empty_dir(tmp_path, monkeypatch):
    """Each test runs where no ./config.ini exists, with no Azure variables set."""
    monkeypatch.chdir(tmp_path)
    clear_azure_environment(monkeypatch)


def write(tmp_path, text, name="config.ini", mode=0o600):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return str(path)


def problems(tmp_path, text, environ=None, overrides=None):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=environ or {}, overrides=overrides)
    return caught.value.problems


def test_no_config_file_means_the_local_cloud_with_the_articles_names():
    settings = load_settings(environ={})
    assert settings.cloud == "local" and settings.is_local
    assert (settings.resource_group, settings.workspace, settings.cluster, settings.experiment) == (
        "myresourcegroup",
        "myworkspace",
        "mycluster",
        "myexperiment",
    )
    assert (settings.share, settings.directory, settings.location) == (
        "batchaiquickstart",
        "mnistcntksample",
        "eastus",
    )
    assert settings.job == ""  # a timestamped name per run
    assert (settings.vm_size, settings.node_count) == ("STANDARD_NC6", 1)
    assert settings.container_image == "microsoft/cntk:2.1-gpu-python3.5-cuda8.0-cudnn6.0"
    assert settings.download_dir == "./outputs" and settings.state_dir == "./.localcloud"
    assert settings.epochs is None and settings.poll_interval == 2.0


def test_the_example_file_documents_every_setting_and_loads_as_is():
    text = (REPO / "config.example.ini").read_text()
    lines = text.splitlines()
    for setting in SCHEMA:
        index = next(
            (i for i, line in enumerate(lines) if line.lstrip("# ").startswith(setting.key + " =")),
            None,
        )
        assert index is not None, setting.key
        assert lines[index - 1].startswith("#"), f"{setting.key} has no comment above it"
        assert f"[{setting.section}]" in text
        for name in setting.env:
            assert name in text, name
    settings = load_settings(str(REPO / "config.example.ini"), environ={})
    assert settings.is_local


def test_a_complete_azure_file_loads(tmp_path):
    settings = load_settings(write(tmp_path, AZURE_INI), environ={})
    assert settings.cloud == "AzureCloud" and not settings.is_local
    assert settings.client_secret == "CLIENT-SECRET-value"
    assert settings.storage_account == "mystorage"
    assert "CLIENT-SECRET-value" not in repr(settings) and "U1RPUkFHRS1LRVk=" not in repr(settings)
    assert "ADMIN-PASSWORD-value" not in repr(settings)


@pytest.mark.parametrize("cloud", AZURE_CLOUDS)
def test_every_named_azure_cloud_is_accepted(tmp_path, cloud):
    assert (
        load_settings(write(tmp_path, AZURE_INI.replace("AzureCloud", cloud)), environ={}).cloud
        == cloud
    )


def test_environment_overrides_the_file_under_azure_names(tmp_path):
    environ = {
        "AZURE_CLIENT_ID": "env-client",
        "AZURE_CLIENT_SECRET": "env-secret",
        "AZURE_TENANT_ID": "env-tenant",
        "AZURE_SUBSCRIPTION_ID": "99999999-1111-2222-3333-444444444444",
        "AZURE_STORAGE_ACCOUNT": "envstorage",
        "AZURE_STORAGE_KEY": "RU5WS0VZ",
        "AZURE_DEFAULTS_LOCATION": "westus2",
        "AZURE_DEFAULTS_GROUP": "envgroup",
        "QUICKSTART_EPOCHS": "3",
        "QUICKSTART_JOB": "myjob",
    }
    settings = load_settings(write(tmp_path, AZURE_INI), environ=environ)
    assert (settings.client_id, settings.client_secret, settings.tenant_id) == (
        "env-client",
        "env-secret",
        "env-tenant",
    )
    assert settings.subscription_id == "99999999-1111-2222-3333-444444444444"
    assert (settings.storage_account, settings.storage_key) == ("envstorage", "RU5WS0VZ")
    assert (settings.location, settings.resource_group, settings.epochs, settings.job) == (
        "westus2",
        "envgroup",
        3,
        "myjob",
    )


def test_batchai_storage_variables_are_accepted_too(tmp_path):
    environ = {
        "AZURE_BATCHAI_STORAGE_ACCOUNT": "baistorage",
        "AZURE_BATCHAI_STORAGE_KEY": "QkFJS0VZ",
    }
    settings = load_settings(
        write(
            tmp_path,
            AZURE_INI.replace("storage_account = mystorage\n", "").replace(
                "storage_key = U1RPUkFHRS1LRVk=\n", ""
            ),
        ),
        environ=environ,
    )
    assert (settings.storage_account, settings.storage_key) == ("baistorage", "QkFJS0VZ")


def test_command_line_overrides_everything(tmp_path):
    path = write(tmp_path, "[job]\nepochs = 5\n")
    assert (
        load_settings(path, environ={"QUICKSTART_EPOCHS": "4"}, overrides={"epochs": 2}).epochs == 2
    )
    assert load_settings(path, environ={}, overrides={"epochs": None}).epochs == 5


# Every validation rule: one line per problem, naming the setting and the rule --------------------


@pytest.mark.parametrize(
    "key, expected",
    [
        ("tenant_id", "[credentials] tenant_id: missing; required when cloud = AzureCloud"),
        ("client_id", "[credentials] client_id: missing; required when cloud = AzureCloud"),
        ("client_secret", "environment variable AZURE_CLIENT_SECRET"),
        ("subscription_id", "[credentials] subscription_id: missing"),
        ("storage_account", "[storage] storage_account: missing"),
        ("storage_key", "[storage] storage_key: missing"),
    ],
)
def test_a_missing_key_for_an_azure_cloud(tmp_path, key, expected):
    text = "\n".join(line for line in AZURE_INI.splitlines() if not line.startswith(key + " "))
    found = problems(tmp_path, text)
    assert len(found) == 1 and expected in found[0]


def test_fill_in_here_left_in_is_reported_per_key(tmp_path):
    text = AZURE_INI.replace("mytenant.onmicrosoft.com", "FILL-IN-HERE").replace(
        "CLIENT-SECRET-value", "FILL-IN-HERE"
    )
    assert problems(tmp_path, text) == [
        "[credentials] tenant_id: still FILL-IN-HERE; replace it with your value",
        "[credentials] client_secret: still FILL-IN-HERE; replace it with your value",
    ]


def test_the_local_cloud_ignores_fill_in_here_credentials(tmp_path):
    settings = load_settings(str(REPO / "config.example.ini"), environ={})
    assert settings.client_secret == "" and settings.admin_user_password == ""


SHARE_RULE = "3-63 lowercase letters, digits and single hyphens"
NAME_RULE = "1-64 letters, digits, '-' or '_'"


@pytest.mark.parametrize(
    "section, key, value, rule",
    [
        ("resources", "share", "ab", SHARE_RULE),
        ("resources", "share", "a" * 64, SHARE_RULE),
        ("resources", "share", "Batchai", SHARE_RULE),
        ("resources", "share", "batch--ai", SHARE_RULE),
        ("resources", "share", "-batchai", SHARE_RULE),
        ("resources", "share", "batchai-", SHARE_RULE),
        ("resources", "share", "batch_ai", SHARE_RULE),
        ("resources", "resource_group", "my group", "1-90 letters, digits"),
        ("resources", "resource_group", "mygroup.", "not ending in '.'"),
        ("resources", "resource_group", "g" * 91, "1-90 letters, digits"),
        ("resources", "workspace", "my.workspace", NAME_RULE),
        ("resources", "workspace", "w" * 65, NAME_RULE),
        ("resources", "cluster", "my cluster", NAME_RULE),
        ("resources", "experiment", "exp/1", NAME_RULE),
        ("resources", "job", "job.1", NAME_RULE),
        ("resources", "directory", "a/b", "none of"),
        ("resources", "location", "East US", "an Azure region name"),
        ("cluster", "vm_size", "NC6", "a VM size such as STANDARD_NC6"),
        ("cluster", "vm_size", "STANDARD NC6", "a VM size such as STANDARD_NC6"),
        ("cluster", "node_count", "0", "must be at least 1"),
        ("cluster", "node_count", "two", "must be a whole number of at least 1"),
        ("cluster", "admin_user_name", "1admin", "starting with a letter"),
        ("cluster", "admin_ssh_public_key", "not a key", "OpenSSH public key"),
        ("job", "epochs", "0", "must be at least 1"),
        ("job", "poll_interval", "0", "a number of seconds between 0 and 3600"),
        ("job", "poll_interval", "soon", "a number of seconds between 0 and 3600"),
        (
            "output",
            "delete_share",
            "maybe",
            "must be yes, no or empty (empty: yes on the local cloud, no on Azure)",
        ),
        ("storage", "storage_account", "My_Storage", "3-24 lowercase letters and digits"),
        ("storage", "storage_key", "not base64!", "base64 access key"),
        ("credentials", "subscription_id", "my-subscription", "a GUID"),
        ("cloud", "cloud", "AzureMoonCloud", "must be local or one of AzureCloud, AzureChinaCloud"),
    ],
)
def test_each_rule_names_the_setting_and_the_rule(tmp_path, section, key, value, rule):
    text = (
        AZURE_INI.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n", 1)
        if f"[{section}]" in AZURE_INI
        else AZURE_INI + f"[{section}]\n{key} = {value}\n"
    )
    text = "\n".join(
        line
        for line in text.splitlines()
        if not (line.startswith(key + " = ") and line != f"{key} = {value}")
    )
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith(f"[{section}] {key}: ") and rule in found[0], found[0]


@pytest.mark.parametrize("name", ["abc", "a-b-c", "batchaiquickstart", "a1" * 31 + "a"])
def test_valid_share_names_pass(tmp_path, name):
    assert (
        load_settings(write(tmp_path, f"[resources]\nshare = {name}\n"), environ={}).share == name
    )


@pytest.mark.parametrize(
    "size", ["STANDARD_NC6", "Standard_NC6s_v3", "Standard_D2_v2", "standard_nd40rs_v2"]
)
def test_valid_vm_sizes_pass(tmp_path, size):
    assert (
        load_settings(write(tmp_path, f"[cluster]\nvm_size = {size}\n"), environ={}).vm_size == size
    )


def test_an_azure_cloud_needs_an_admin_password_or_ssh_key(tmp_path):
    text = AZURE_INI.replace("admin_user_password = ADMIN-PASSWORD-value\n", "")
    found = problems(tmp_path, text)
    assert found == [
        "[cluster] admin_user_password: neither admin_user_password nor admin_ssh_public_key is set; "
        "the cluster needs one of them"
    ]
    key = text + "admin_ssh_public_key = ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI me@host\n"
    assert load_settings(write(tmp_path, key), environ={}).admin_ssh_public_key.startswith(
        "ssh-ed25519"
    )


def test_every_problem_is_reported_at_once(tmp_path):
    text = AZURE_INI + "[resources]\nshare = X\nworkspace = a b\n[cluster]\nnode_count = 0\n"
    text = text.replace("[cluster]\nadmin_user_password = ADMIN-PASSWORD-value\n", "")
    text = text.replace("[cluster]\nnode_count", "[cluster]\nadmin_user_password = pw\nnode_count")
    found = problems(tmp_path, text)
    assert [p.split(":")[0] for p in found] == [
        "[resources] workspace",
        "[resources] share",
        "[cluster] node_count",
    ]


def test_problems_name_the_environment_variable_or_flag_that_set_a_value(tmp_path):
    found = problems(
        tmp_path, "[job]\n", environ={"QUICKSTART_NODE_COUNT": "0"}, overrides={"epochs": 0}
    )
    assert found == [
        "environment variable QUICKSTART_NODE_COUNT: must be at least 1",
        "--epochs: must be at least 1",
    ]


def test_unknown_keys_and_keys_in_the_wrong_section_are_refused(tmp_path):
    assert problems(tmp_path, "[cluster]\nvmsize = STANDARD_NC6\nshare = abc\n") == [
        "[cluster] vmsize: unknown setting; see config.example.ini for the settings",
        "[cluster] share: belongs in section [resources]",
    ]


def test_a_broken_ini_file_is_one_line_without_its_contents(tmp_path):
    found = problems(
        tmp_path, "[credentials]\nclient_secret = CLIENT-SECRET-value\nthis line is broken\n"
    )
    assert len(found) == 1 and "line 3" in found[0] and "CLIENT-SECRET-value" not in found[0]
    found = problems(tmp_path, "client_secret = CLIENT-SECRET-value\n")
    assert (
        "line 1: settings must follow a [section] header" in found[0]
        and "CLIENT-SECRET" not in found[0]
    )
    found = problems(tmp_path, "[job]\nepochs = 1\nepochs = 2\n")
    assert "[job] epochs is set twice" in found[0]


def test_a_named_config_file_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(str(tmp_path / "nope.ini"), environ={})
    assert caught.value.problems == [
        "--config: {} does not exist; copy config.example.ini to make one".format(
            tmp_path / "nope.ini"
        )
    ]


def test_the_default_config_ini_is_read_when_present(tmp_path):
    write(tmp_path, "[resources]\nworkspace = fromdefault\n")
    assert load_settings(environ={}).workspace == "fromdefault"


def test_a_config_file_with_secrets_readable_by_others_gets_a_warning(tmp_path):
    warnings = []
    load_settings(write(tmp_path, AZURE_INI, mode=0o644), environ={}, warn=warnings.append)
    assert len(warnings) == 1
    assert (
        "holds secrets and is readable by group or others (mode 644); run: chmod 600" in warnings[0]
    )
    assert "CLIENT-SECRET-value" not in warnings[0]
    warnings.clear()
    load_settings(write(tmp_path, AZURE_INI, mode=0o600), environ={}, warn=warnings.append)
    load_settings(
        write(tmp_path, "[resources]\nworkspace = w\n", "plain.ini", mode=0o644),
        environ={},
        warn=warnings.append,
    )
    load_settings(
        str(REPO / "config.example.ini"), environ={}, warn=warnings.append
    )  # FILL-IN-HERE only
    assert warnings == []


def test_binding_the_local_cloud_takes_its_connection(tmp_path):
    connection = {
        "resource_manager_url": "https://127.0.0.1:5000/",
        "tenant": "localtenant",
        "active_directory_url": "https://127.0.0.1:5000/adfs",
        "client_id": "local-client",
        "active_directory_resource_id": "https://127.0.0.1:5000/",
        "client_secret": "LOCAL-SECRET",
        "subscription_id": "00000000-0000-0000-0000-000000000001",
        "storage_account": "localstorage",
        "storage_key": "TE9DQUxLRVk=",
        "ca_cert": str(tmp_path / "ca.pem"),
        "storage_connection_string": "DefaultEndpointsProtocol=https;AccountName=localstorage;"
        "AccountKey=TE9DQUxLRVk=;FileEndpoint=https://127.0.0.1:5000/localstorage",
    }
    settings = Settings().bind_local_cloud(connection)
    assert (settings.client_id, settings.client_secret, settings.tenant_id) == (
        "local-client",
        "LOCAL-SECRET",
        "localtenant",
    )
    assert settings.ca_cert == str(tmp_path / "ca.pem")
    assert settings.resource_manager_url == "https://127.0.0.1:5000/"
    assert settings.admin_user_password  # made up: the local cloud needs one like Azure does
    assert set(settings.secret_values()) >= {
        "LOCAL-SECRET",
        "TE9DQUxLRVk=",
        settings.admin_user_password,
    }
    assert "LOCAL-SECRET" not in repr(settings) and "TE9DQUxLRVk=" not in repr(settings)
    assert os.path.basename(settings.ca_cert) == "ca.pem"
