"""Every validation rule of the settings at its boundary: the last value accepted and the first
refused, so a limit that drifts by one (or a rule that is dropped) shows before Azure refuses it
minutes into `run`."""

import stat
import textwrap
from pathlib import Path

import pytest

from quickstart.config import (
    BOOLEANS,
    DEFAULT_CONFIG,
    ConfigError,
    Settings,
    load_settings,
)
from tests.conftest import clear_azure_environment

GUID = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
AZURE_ENVIRONMENT = {
    "QUICKSTART_CLOUD": "AzureCloud",
    "AZURE_TENANT_ID": "mytenant",
    "AZURE_CLIENT_ID": "myclient",
    "AZURE_CLIENT_SECRET": "CLIENT-SECRET-x",
    "AZURE_SUBSCRIPTION_ID": GUID,
    "AZURE_STORAGE_ACCOUNT": "mystorage",
    "AZURE_STORAGE_KEY": "U1RPUkFHRS1LRVk=",
    "QUICKSTART_ADMIN_USER_PASSWORD": "ADMIN-PASSWORD-x",
}


@pytest.fixture(autouse=True)
def in_empty_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clear_azure_environment(monkeypatch)


def outcome(key, value, azure=False):
    """(settings, None) when `key = value` is accepted, else (None, the problem lines)."""
    environ = dict(AZURE_ENVIRONMENT) if azure else {}
    try:
        return load_settings(environ=environ, overrides={key: value}), None
    except ConfigError as error:
        return None, error.problems


def accepted(key, value, azure=False):
    settings, problems = outcome(key, value, azure)
    assert problems is None, f"{key} = {value!r} was refused: {problems}"
    return getattr(settings, key)


OPTIONS = {"node_count": "nodes"}  # the command-line option that sets the key, where renamed


def refused(key, value, azure=False):
    _, problems = outcome(key, value, azure)
    assert problems is not None, f"{key} = {value!r} was accepted"
    assert len(problems) == 1, problems
    option = OPTIONS.get(key, key.replace("_", "-"))
    assert problems[0].startswith(f"--{option}: must be"), problems
    return problems[0]


NAME_BOUNDARIES = [
    # key, accepted values, refused values, azure_only
    ("resource_group", ["a" * 90, "r", "rg.(x)_-1", "rg.x"], ["a" * 91, "", "rg.", "rg x", "rg/x"]),
    ("workspace", ["w" * 64, "w", "w-1_x"], ["w" * 65, "", "w.x", "w x"]),
    ("cluster", ["c" * 64, "c", "c-1_x"], ["c" * 65, "", "c.x", "c/x"]),
    ("experiment", ["e" * 64, "e", "e-1_x"], ["e" * 65, "", "e.x", "e:x"]),
    ("job", ["j" * 64, "j", "j-1_x", ""], ["j" * 65, "j.x", "j x"]),
    (
        "share",
        ["abc", "a" * 63, "a-b", "a1-2b", "0ab"],
        ["ab", "a" * 64, "a--b", "-ab", "ab-", "Abc", "a_b", ""],
    ),
    (
        "directory",
        ["d" * 255, "d", "a.b", "  x", "x y"],
        ["d" * 256, "", " . ", "..", "a:b", "a|b", "a<b", "a>b", "a*b", "a?b", 'a"b', "a\\b"]
        + ["a/b", "a\tb"],
    ),
    ("location", ["ab", "l" * 40, "westus2"], ["a", "l" * 41, "East US", "east-us", ""]),
    (
        "vm_size",
        ["Standard_NC6", "STANDARD_NC6S_V3", "standard_d2_v2"],
        ["NC6", "Standard_", "Standard_NC6_", "Standard_NC-6", ""],
    ),
    (
        "admin_user_name",
        ["a" * 32, "u", "_user", "a.b-c_d9", "User"],
        ["a" * 33, "1user", "-user", ".user", "a b", "a@b", ""],
    ),
]


@pytest.mark.parametrize("key, good, bad", NAME_BOUNDARIES, ids=[row[0] for row in NAME_BOUNDARIES])
def test_names_at_their_limits(key, good, bad):
    for value in good:
        assert accepted(key, value) == value
    for value in bad:
        refused(key, value)


def test_storage_account_and_subscription_limits_on_azure():
    for value in ["abc", "s" * 24, "st0r4ge"]:
        assert accepted("storage_account", value, azure=True) == value
    for value in ["ab", "s" * 25, "Storage", "my-storage"]:
        refused("storage_account", value, azure=True)
    for value in [GUID, GUID.upper()]:
        assert accepted("subscription_id", value, azure=True) == value
    for value in [GUID[:-1], GUID + "0", GUID.replace("-", ""), "g" + GUID[1:]]:
        refused("subscription_id", value, azure=True)


@pytest.mark.parametrize(
    "value, expected",
    [("1", 1), ("2", 2), ("100", 100), (" 3", 3)],
)
def test_node_count_accepts_whole_numbers_from_1(value, expected):
    assert accepted("node_count", value) == expected


@pytest.mark.parametrize(
    "value, rule",
    [
        ("0", "must be at least 1"),
        ("-1", "must be at least 1"),
        ("1.5", "must be a whole number of at least 1"),
        ("two", "must be a whole number of at least 1"),
        ("", "must be a whole number of at least 1"),
    ],
)
def test_node_count_below_1_or_not_whole_is_refused(value, rule):
    assert refused("node_count", value) == f"--nodes: {rule}"


def test_epochs_empty_means_the_scripts_default_and_otherwise_at_least_1():
    assert accepted("epochs", "") is None
    assert accepted("epochs", "1") == 1
    assert accepted("epochs", "40") == 40
    assert refused("epochs", "0") == "--epochs: must be at least 1"
    assert refused("epochs", "x") == "--epochs: must be a whole number of at least 1"


@pytest.mark.parametrize("value, expected", [("0.001", 0.001), ("0.5", 0.5), ("3600", 3600.0)])
def test_poll_interval_just_inside_its_limits(value, expected):
    assert accepted("poll_interval", value) == expected


@pytest.mark.parametrize("value", ["0", "-0.5", "3600.5", "3601", "nan", "inf", "soon", ""])
def test_poll_interval_outside_its_limits(value):
    assert refused("poll_interval", value) == (
        "--poll-interval: must be a number of seconds between 0 and 3600, such as 2"
    )


@pytest.mark.parametrize("word, meaning", sorted(BOOLEANS.items()))
def test_delete_share_takes_every_yes_and_no_word_in_any_case(word, meaning):
    assert accepted("delete_share", word) is meaning
    assert accepted("delete_share", word.upper()) is meaning


def test_delete_share_empty_means_the_clouds_default_and_other_words_are_refused():
    assert accepted("delete_share", "") is None
    assert refused("delete_share", "maybe") == (
        "--delete-share: must be yes, no or empty (empty: yes on the local cloud, no on Azure)"
    )


@pytest.mark.parametrize(
    "key",
    [
        "ssh-rsa AAAAB3NzaC1yc2E= me@host",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
        "ssh-dss AAAAB3NzaC1kc3M=",
        "ecdsa-sha2-nistp256 AAAAE2VjZHNh",
    ],
)
def test_openssh_public_keys_of_each_kind_are_accepted(key):
    assert accepted("admin_ssh_public_key", key) == key


@pytest.mark.parametrize(
    "key", ["ssh-rsa", "ssh-rsa ", "ssh-foo AAAA", "AAAAB3NzaC1yc2E=", "-----BEGIN RSA"]
)
def test_other_ssh_key_text_is_refused(key):
    assert refused("admin_ssh_public_key", key) == (
        "--admin-ssh-public-key: must be an OpenSSH public key line (ssh-rsa AAAA...)"
    )


def test_storage_key_must_be_base64_with_at_most_two_pads():
    for key in ["abc+/9==", "QUJD", "QUI="]:
        assert accepted("storage_key", key, azure=True) == key
    for key in ["abc===", "ab c=", "a-b_c", "=abc"]:
        assert refused("storage_key", key, azure=True) == (
            "--storage-key: must be the storage account's base64 access key"
        )


def test_cloud_names_are_exact_and_empty_means_local():
    for cloud in ["AzureCloud", "AzureChinaCloud", "AzureUSGovernment", "AzureGermanCloud"]:
        settings = load_settings(environ=dict(AZURE_ENVIRONMENT, QUICKSTART_CLOUD=cloud))
        assert settings.cloud == cloud and not settings.is_local
    assert load_settings(environ={}, overrides={"cloud": ""}).cloud == "local"
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=dict(AZURE_ENVIRONMENT, QUICKSTART_CLOUD="azurecloud"))
    assert caught.value.problems == [
        "environment variable QUICKSTART_CLOUD: must be local or one of AzureCloud, "
        "AzureChinaCloud, AzureUSGovernment, AzureGermanCloud"
    ]


def test_an_azure_cluster_needs_a_password_or_a_key_but_either_alone_will_do():
    environ = dict(AZURE_ENVIRONMENT)
    del environ["QUICKSTART_ADMIN_USER_PASSWORD"]
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert caught.value.problems == [
        "[cluster] admin_user_password: neither admin_user_password nor admin_ssh_public_key "
        "is set; the cluster needs one of them"
    ]
    key = "ssh-rsa AAAAB3NzaC1yc2E= me@host"
    assert load_settings(environ=environ, overrides={"admin_ssh_public_key": key})
    assert load_settings(environ=environ, overrides={"admin_user_password": "pw"})


def test_a_bad_key_or_a_placeholder_is_reported_once_not_also_as_missing():
    environ = dict(AZURE_ENVIRONMENT)
    del environ["QUICKSTART_ADMIN_USER_PASSWORD"]
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ, overrides={"admin_ssh_public_key": "not a key"})
    assert caught.value.problems == [
        "--admin-ssh-public-key: must be an OpenSSH public key line (ssh-rsa AAAA...)"
    ]
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ, overrides={"admin_user_password": "FILL-IN-HERE"})
    assert caught.value.problems == [
        "--admin-user-password: still FILL-IN-HERE; replace it with your value"
    ]
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ, overrides={"admin_ssh_public_key": "FILL-IN-HERE"})
    assert caught.value.problems == [
        "--admin-ssh-public-key: still FILL-IN-HERE; replace it with your value"
    ]


def test_a_missing_azure_setting_names_its_environment_variable():
    environ = dict(AZURE_ENVIRONMENT)
    del environ["AZURE_TENANT_ID"]
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert caught.value.problems == [
        "[credentials] tenant_id: missing; required when cloud = AzureCloud (set it in the "
        "config file or environment variable AZURE_TENANT_ID)"
    ]
    assert str(caught.value) == caught.value.problems[0]


def test_every_problem_is_one_line_of_the_errors_message():
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides={"node_count": "0", "workspace": "a b"})
    assert str(caught.value).splitlines() == caught.value.problems
    assert len(caught.value.problems) == 2


def test_the_first_environment_variable_set_wins_and_empty_ones_are_skipped():
    environ = dict(AZURE_ENVIRONMENT)
    del environ["AZURE_STORAGE_ACCOUNT"]
    environ["AZURE_BATCHAI_STORAGE_ACCOUNT"] = "second"
    assert load_settings(environ=environ).storage_account == "second"
    environ["AZURE_STORAGE_ACCOUNT"] = ""
    assert load_settings(environ=environ).storage_account == "second"
    environ["AZURE_STORAGE_ACCOUNT"] = "first"
    assert load_settings(environ=environ).storage_account == "first"


def test_the_process_environment_is_read_when_none_is_given(monkeypatch):
    monkeypatch.setenv("QUICKSTART_CLUSTER", "fromenv")
    assert load_settings().cluster == "fromenv"


def test_an_override_of_none_keeps_the_files_value(tmp_path):
    (tmp_path / "c.ini").write_text("[resources]\nworkspace = fromfile\n")
    settings = load_settings(str(tmp_path / "c.ini"), environ={}, overrides={"workspace": None})
    assert settings.workspace == "fromfile"


# The config file: where problems point, and who may read it ----------------------------------


def write(path, text, mode=0o600):
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    path.chmod(mode)
    return path


SECRET_INI = "[cluster]\nadmin_user_password = ADMIN-PW-x\n"


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700, 0o644, 0o640, 0o604, 0o620, 0o602, 0o610])
def test_a_secret_holding_file_warns_exactly_when_group_or_others_have_any_access(tmp_path, mode):
    path = write(tmp_path / "c.ini", SECRET_INI, mode)
    warnings = []
    load_settings(str(path), environ={}, warn=warnings.append)
    loose = bool(mode & (stat.S_IRWXG | stat.S_IRWXO))
    assert warnings == (
        [
            f"warning: {path} holds secrets and is readable by group or others "
            f"(mode {mode:o}); run: chmod 600 {path}"
        ]
        if loose
        else []
    )


def test_the_default_config_ini_is_checked_for_loose_modes_too(tmp_path):
    write(tmp_path / DEFAULT_CONFIG, SECRET_INI, 0o640)
    warnings = []
    load_settings(environ={}, warn=warnings.append)
    assert warnings == [
        f"warning: {DEFAULT_CONFIG} holds secrets and is readable by group or others "
        f"(mode 640); run: chmod 600 {DEFAULT_CONFIG}"
    ]


def test_without_a_warn_callback_a_loose_file_still_loads(tmp_path):
    path = write(tmp_path / "c.ini", SECRET_INI, 0o644)
    assert load_settings(str(path), environ={}).admin_user_password == "ADMIN-PW-x"


def test_a_file_that_is_not_utf8_is_one_line_naming_the_error(tmp_path):
    path = tmp_path / "c.ini"
    path.write_bytes(b"[resources]\nworkspace = caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), environ={})
    assert caught.value.problems == [
        f"{path}: not a UTF-8 text file; --config names an ini file of settings"
    ]


def test_utf8_values_are_read_as_utf8(tmp_path):
    path = write(tmp_path / "c.ini", "[resources]\ndirectory = données\n")
    assert load_settings(str(path), environ={}).directory == "données"


def test_every_unparsable_line_is_named(tmp_path):
    path = write(tmp_path / "c.ini", "[resources]\nworkspace = w\nnot a setting\nnor this\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), environ={})
    assert caught.value.problems == [
        f"{path}: line 3, 4: not a 'key = value' line or [section] header"
    ]


def test_a_problem_in_the_file_names_its_section_and_key(tmp_path):
    path = write(tmp_path / "c.ini", "[cluster]\nnode_count = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), environ={})
    assert caught.value.problems == ["[cluster] node_count: must be at least 1"]


# Secrets and the local cloud's connection -----------------------------------------------------


def test_secret_values_are_every_secret_held_and_nothing_else():
    settings = Settings(
        client_secret="CS",
        storage_key="SK",
        admin_user_password="",
        storage_connection_string="AccountName=a;AccountKey=CONN-KEY==;FileEndpoint=x",
    )
    assert settings.secret_values() == ["CS", "SK", "CONN-KEY=="]
    assert Settings(client_secret="FILL-IN-HERE").secret_values() == []
    assert Settings().secret_values() == []


def test_binding_the_local_cloud_takes_every_field_of_its_connection():
    connection = {
        "tenant": "t1",
        "client_id": "c1",
        "client_secret": "s1",
        "subscription_id": "sub1",
        "storage_account": "acct1",
        "storage_key": "key1",
        "storage_connection_string": "cs1",
        "resource_manager_url": "https://127.0.0.1:1/",
        "active_directory_url": "https://127.0.0.1:1/aad",
        "active_directory_resource_id": "https://127.0.0.1:1/rid",
        "ca_cert": "/ca.pem",
    }
    bound = Settings().bind_local_cloud(connection)
    assert (bound.tenant_id, bound.client_id, bound.client_secret, bound.subscription_id) == (
        "t1",
        "c1",
        "s1",
        "sub1",
    )
    assert (bound.storage_account, bound.storage_key, bound.storage_connection_string) == (
        "acct1",
        "key1",
        "cs1",
    )
    assert (
        bound.resource_manager_url,
        bound.active_directory_url,
        bound.active_directory_resource_id,
        bound.ca_cert,
    ) == ("https://127.0.0.1:1/", "https://127.0.0.1:1/aad", "https://127.0.0.1:1/rid", "/ca.pem")
    # No password given: one is made per run, 18 random bytes as 24 URL-safe characters.
    password = bound.admin_user_password
    assert len(password) == 24 and password.replace("-", "").replace("_", "").isalnum()
    assert Settings().bind_local_cloud(connection).admin_user_password != password
    given = Settings(admin_user_password="mine").bind_local_cloud(connection)
    assert given.admin_user_password == "mine"


def test_no_secret_reaches_the_settings_repr():
    """repr is what a traceback or a debug print shows."""
    settings = Settings(client_secret="CS-1", storage_key="SK-1", admin_user_password="PW-1")
    text = repr(settings.replace(storage_connection_string="AccountKey=CK-1"))
    assert not any(secret in text for secret in ("CS-1", "SK-1", "PW-1", "CK-1"))


def test_a_placeholder_left_in_delete_share_is_one_problem():
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides={"delete_share": "FILL-IN-HERE"})
    assert caught.value.problems == [
        "--delete-share: still FILL-IN-HERE; replace it with your value"
    ]


STATE_DIR_IS_A_FILE = "a-file is a file; name a folder (it is made if missing)"


def test_a_state_dir_that_is_a_file_is_one_line_naming_where_it_was_set(tmp_path):
    (tmp_path / "a-file").write_text("kept\n")
    assert outcome("state_dir", "a-file") == (None, [f"--state-dir: {STATE_DIR_IS_A_FILE}"])
    ini = write(tmp_path / "c.ini", "[cloud]\nstate_dir = a-file\n")
    for path, environ, origin in [
        (str(ini), {}, "[cloud] state_dir"),
        (None, {"QUICKSTART_STATE_DIR": "a-file"}, "environment variable QUICKSTART_STATE_DIR"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_settings(path, environ=environ)
        assert caught.value.problems == [f"{origin}: {STATE_DIR_IS_A_FILE}"]
    assert (tmp_path / "a-file").read_text() == "kept\n"


def test_a_state_dir_that_is_a_folder_or_missing_or_empty_is_accepted(tmp_path):
    (tmp_path / "shared").mkdir()
    assert accepted("state_dir", "shared") == "shared"
    assert accepted("state_dir", "not-yet") == "not-yet"
    (tmp_path / "XX.XX").write_text("a file named like no setting\n")
    assert load_settings(environ={"QUICKSTART_STATE_DIR": ""}).state_dir == "./.localcloud"
    assert accepted("state_dir", "") == ""  # --state-dir "": the current folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["XX.XX", "shared"]


def test_run_with_a_state_dir_that_is_a_file_exits_2_with_one_line_and_creates_nothing(
    tmp_path, monkeypatch, capsys
):
    from quickstart import __main__ as cli

    monkeypatch.delenv("QUICKSTART_STATE_DIR", raising=False)
    (tmp_path / "a-file").write_text("kept\n")
    assert cli.main(["run", "--state-dir", "a-file"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--state-dir: {STATE_DIR_IS_A_FILE}" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]
    assert (tmp_path / "a-file").read_text() == "kept\n"


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc/self/mem")
def test_a_config_file_that_cannot_be_read_is_one_line_with_the_systems_reason():
    # /proc/self/mem opens but its first read fails (EIO), even for root, who reads any mode
    with pytest.raises(ConfigError) as caught:
        load_settings("/proc/self/mem", environ={})
    assert caught.value.problems == ["--config: cannot read /proc/self/mem (Input/output error)"]
