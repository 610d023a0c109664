"""The command line: help, exit statuses, one-line errors, Ctrl-C, the local cloud's use, and
secrets that never appear in any output."""

import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from quickstart import __main__ as cli
from quickstart.localcloud.connection import requests_session
from tests.conftest import clear_azure_environment
from tests.fakes_azure import (
    ADMIN_PASSWORD,
    CLIENT_SECRET,
    STORAGE_KEY,
    SUBSCRIPTION,
    cloud_error,
    cluster,
    job,
    patched_sdk,
)
from tests.test_steps import JobScript, allocating_cluster, script_job

REPO = Path(__file__).resolve().parent.parent
LOCAL_SECRET = "LOCAL-CLOUD-SECRET-77e1"
LOCAL_KEY = "TE9DQUwtQ0xPVUQtS0VZLTc3ZTE="
AZURE_INI = f"""\
[cloud]
cloud = AzureCloud
[credentials]
tenant_id = mytenant
client_id = myclient
client_secret = {CLIENT_SECRET}
subscription_id = {SUBSCRIPTION}
[storage]
storage_account = mystorage
storage_key = {STORAGE_KEY}
[cluster]
admin_user_password = {ADMIN_PASSWORD}
[job]
poll_interval = 0.01
"""


@pytest.fixture(autouse=True)
def in_empty_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clear_azure_environment(monkeypatch)
    monkeypatch.delenv("QUICKSTART_DEBUG", raising=False)


@pytest.fixture
def azure_config(tmp_path):
    path = tmp_path / "azure.ini"
    path.write_text(AZURE_INI)
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def sample(tmp_path, monkeypatch):
    from quickstart import steps

    paths = []
    for name in ("Train-28x28_cntk_text.txt", "Test-28x28_cntk_text.txt", "ConvNet_MNIST.py"):
        (tmp_path / name).write_text("data\n")
        paths.append(tmp_path / name)
    monkeypatch.setattr(steps, "prepare_sample_files", lambda settings: {p.name: p for p in paths})


def no_sleep(monkeypatch):
    """Polls as fast as the settings allow (the config files here say 0.01 s too)."""
    monkeypatch.setenv("QUICKSTART_POLL_INTERVAL", "0.01")


# Help and usage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "teardown", "status", "localcloud"])
def test_each_command_has_help_with_config(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: quickstart {command}" in out and "--config FILE" in out


def test_help_lists_the_commands_without_importing_the_sdks():
    code = (
        "import sys, contextlib, io\n"
        "from quickstart.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('azure', 'msrest', "
        "'msrestazure', 'adal',"
        " 'requests', 'tqdm', 'werkzeug', 'torch', 'numpy') or "
        "m.startswith('quickstart.localcloud'))\n"
        "print(heavy)\nprint(out.getvalue())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    heavy, _, help_text = result.stdout.partition("\n")
    assert heavy == "[]"
    for command in ("run", "teardown", "status", "localcloud"):
        assert command in help_text


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["fly"], ["run", "--epochs", "many"], ["status", "--bogus"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2


def test_console_script_is_declared():
    assert "quickstart=quickstart.__main__:main" in (REPO / "setup.py").read_text()


# Config errors ------------------------------------------------------------------------------------


def test_config_errors_are_one_line_each_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.ini"
    bad.write_text("[resources]\nshare = No_Share\n[cluster]\nnode_count = 0\nvm_size = big\n")
    assert cli.main(["run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "config error: [resources] share: must be 3-63 lowercase letters, digits and single "
        "hyphens, "
        "starting and ending with a letter or digit",
        "config error: [cluster] vm_size: must be a VM size such as STANDARD_NC6 "
        "(Standard_<family><size>[_<version>])",
        "config error: [cluster] node_count: must be at least 1",
    ]


def test_a_real_process_exits_2_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[job]\nepochs = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "quickstart", "status", "--config", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == "config error: [job] epochs: must be at least 1\n"
    assert result.stdout == ""


def test_epochs_on_the_command_line_is_validated(capsys):
    assert cli.main(["run", "--epochs", "0"]) == 2
    assert capsys.readouterr().err == "config error: --epochs: must be at least 1\n"


# Running against (mocked) Azure -------------------------------------------------------------------


def test_run_exits_0_when_the_job_succeeds(azure_config, sample, monkeypatch, capsys):
    no_sleep(monkeypatch)
    with patched_sdk() as azure:
        allocating_cluster(azure)
        script_job(azure, JobScript(["running", "succeeded"], [b"epoch 1\n", b""]))
        assert cli.main(["run", "--config", azure_config, "--epochs", "2"]) == 0
    assert azure.batchai.jobs.create.call_args.args[4].cntk_settings.command_line_args.endswith(
        " --max-epochs 2"
    )
    assert "Job state: succeeded" in capsys.readouterr().out


def test_run_exits_with_the_failed_jobs_exit_code(azure_config, sample, monkeypatch):
    no_sleep(monkeypatch)
    with patched_sdk() as azure:
        allocating_cluster(azure)
        script_job(azure, JobScript(["running", "failed"], [b"oops\n"], exit_code=42))
        assert cli.main(["run", "--config", azure_config]) == 42


def test_a_cloud_error_is_one_line_with_exit_1(azure_config, sample, capsys):
    with patched_sdk() as azure:
        azure.resources.resource_groups.create_or_update.side_effect = cloud_error(
            403, "AuthorizationFailed", "The client does not have authorization\nto perform action"
        )
        assert cli.main(["run", "--config", azure_config]) == 1
    err = capsys.readouterr().err
    assert err == (
        "error: CloudError: Azure Error: AuthorizationFailed Message: The client does not have "
        "authorization to perform action\n"
    )


def test_a_cluster_allocation_failure_exits_1_after_printing_the_errors(
    azure_config, sample, capsys
):
    from azure.mgmt.batchai import models

    error = models.BatchAIError()
    error.code, error.message, error.details = "AllocationFailed", "No capacity", None
    with patched_sdk() as azure:
        azure.batchai.clusters.get.return_value = cluster("steady", errors=[error])
        assert cli.main(["run", "--config", azure_config]) == 1
    captured = capsys.readouterr()
    assert "Cluster error: AllocationFailed: No capacity" in captured.out
    assert captured.err.startswith("error: cluster mycluster could not allocate its nodes")


def test_ctrl_c_outside_monitoring_exits_130(azure_config, sample, capsys):
    with patched_sdk() as azure:
        azure.batchai.workspaces.create.side_effect = KeyboardInterrupt
        assert cli.main(["run", "--config", azure_config]) == 130
    assert "python -m quickstart teardown" in capsys.readouterr().err


def test_ctrl_c_while_monitoring_exits_130_and_says_the_job_keeps_running(
    azure_config, sample, capsys
):
    with patched_sdk() as azure:
        allocating_cluster(azure)
        azure.batchai.jobs.get.side_effect = KeyboardInterrupt
        assert cli.main(["run", "--config", azure_config]) == 130
        azure.batchai.jobs.delete.assert_not_called()
    err = capsys.readouterr().err
    assert "a submitted job keeps running in the cloud" in err
    assert "`python -m quickstart run` (or `status --follow`) reattaches to it" in err
    assert "`python -m quickstart teardown` removes everything" in err


def test_sigterm_while_monitoring_ends_like_ctrl_c_with_status_143(azure_config, sample, capsys):
    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # `kill <pid>` while the job is being watched
        time.sleep(1)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the command")

    def unhandled(signum, frame):  # what would otherwise have killed the whole test run
        raise AssertionError("quickstart left SIGTERM to its default")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with patched_sdk() as azure:
            allocating_cluster(azure)
            azure.batchai.jobs.get.side_effect = terminated
            assert cli.main(["run", "--config", azure_config]) == 143
        assert signal.getsignal(signal.SIGTERM) is unhandled  # restored for whatever runs next
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "keeps running in the cloud" in capsys.readouterr().err


def test_teardown_and_status_through_the_cli(azure_config, capsys):
    with patched_sdk() as azure:
        azure.batchai.jobs.list_by_experiment.return_value = iter([])
        assert cli.main(["teardown", "--config", azure_config, "--delete-share"]) == 0
        azure.files.delete_share.assert_called_once_with("batchaiquickstart", fail_not_exist=False)
        azure.batchai.clusters.get.side_effect = cloud_error(404)
        azure.batchai.jobs.list_by_experiment.return_value = iter([])
        assert cli.main(["status", "--config", azure_config]) == 0
    out = capsys.readouterr().out
    assert "Removed resource group myresourcegroup" in out and "Cluster mycluster: not found" in out


def test_error_lines_hide_sas_signatures_and_bearer_tokens():
    error = RuntimeError(
        "403 Client Error for url: https://h/acct/share/f.txt?sv=2018-03-28&sr=f&sig=abc%2Bdef&se=1"
        "\nheaders: Authorization: Bearer eyJ0eXAiOiJKV1Qi.payload"
    )
    line = cli.describe(error, [])
    assert line == (
        "RuntimeError: 403 Client Error for url: "
        "https://h/acct/share/f.txt?sv=2018-03-28&sr=f&sig=***&se=1 "
        "headers: Authorization: Bearer ***"
    )


# The local cloud ----------------------------------------------------------------------------------


def fake_local_cloud(monkeypatch, tmp_path, serving):
    """Stand-ins for quickstart.localcloud, recording whether one was started and stopped."""
    connection = {
        "resource_manager_url": "https://127.0.0.1:4443/",
        "tenant": "localtenant",
        "active_directory_url": "https://127.0.0.1:4443/adfs",
        "client_id": "local-client",
        "active_directory_resource_id": "https://127.0.0.1:4443/",
        "client_secret": LOCAL_SECRET,
        "subscription_id": SUBSCRIPTION,
        "storage_account": "localstorage",
        "storage_key": LOCAL_KEY,
        "storage_connection_string": "DefaultEndpointsProtocol=https;AccountName=localstorage;"
        + "AccountKey="
        + LOCAL_KEY
        + ";FileEndpoint=https://127.0.0.1:4443/localstorage",
        "ca_cert": str(tmp_path / "ca.pem"),
    }
    events = []

    class LocalCloud:
        def __init__(self, state_dir, port=0, **options):
            events.append(("new", state_dir))
            self.connection = connection

        def start(self):
            events.append("start")
            return self

        def stop(self):
            events.append("stop")

    class Standby:
        def __init__(self, state_dir, on_take_over=None):
            self.state_dir = state_dir

        def __enter__(self):
            events.append(("standby", self.state_dir))
            return self

        def __exit__(self, *exc):
            events.append("standby ends")

    package = types.ModuleType("quickstart.localcloud")
    package.LocalCloud = LocalCloud
    package.Standby = Standby
    package.serve_forever = lambda state_dir, port: events.append(("serve", state_dir, port))
    module = types.ModuleType("quickstart.localcloud.connection")
    module.read_connection = lambda state_dir: connection if serving else None
    module.is_serving = lambda conn: serving is True  # "gone": connection.json, nobody serving
    monkeypatch.setitem(sys.modules, "quickstart.localcloud", package)
    monkeypatch.setitem(sys.modules, "quickstart.localcloud.connection", module)
    return events


def test_status_and_teardown_without_local_cloud_state_create_nothing(
    tmp_path, monkeypatch, capsys
):
    events = fake_local_cloud(monkeypatch, tmp_path, serving=False)
    assert cli.main(["status"]) == 0
    assert cli.main(["teardown"]) == 0
    assert events == [] and not (tmp_path / ".localcloud").exists()
    assert (
        capsys.readouterr().out.count(
            "The local cloud has no state in ./.localcloud yet: nothing exists."
        )
        == 2
    )


def test_no_config_file_runs_on_an_embedded_local_cloud_stopped_afterwards(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / ".localcloud").mkdir()
    events = fake_local_cloud(monkeypatch, tmp_path, serving=False)
    with patched_sdk() as azure:
        azure.batchai.clusters.get.side_effect = cloud_error(404)
        azure.batchai.jobs.list_by_experiment.return_value = iter([])
        assert cli.main(["status"]) == 0
    assert events == [("new", "./.localcloud"), "start", "stop"]
    kwargs = azure.credentials_class.call_args.kwargs
    assert kwargs["secret"] == LOCAL_SECRET and kwargs["verify"] == str(tmp_path / "ca.pem")
    assert "Started the local cloud at https://127.0.0.1:4443/" in capsys.readouterr().out


def test_a_serving_local_cloud_is_reused(tmp_path, monkeypatch, capsys):
    (tmp_path / ".localcloud").mkdir()
    events = fake_local_cloud(monkeypatch, tmp_path, serving=True)
    with patched_sdk() as azure:
        azure.batchai.jobs.list_by_experiment.return_value = iter([])
        assert cli.main(["teardown"]) == 0
    assert events == [("standby", "./.localcloud"), "standby ends"]  # none started, none stopped
    assert "Using the local cloud serving at https://127.0.0.1:4443/" in capsys.readouterr().out


def test_the_embedded_local_cloud_is_stopped_when_a_step_fails(tmp_path, monkeypatch, capsys):
    (tmp_path / ".localcloud").mkdir()
    events = fake_local_cloud(monkeypatch, tmp_path, serving=False)
    with patched_sdk() as azure:
        azure.batchai.clusters.get.side_effect = cloud_error(500, "InternalError", "boom")
        assert cli.main(["status"]) == 1
    assert events[-1] == "stop"


def test_localcloud_command_serves_from_the_state_dir(tmp_path, monkeypatch):
    events = fake_local_cloud(monkeypatch, tmp_path, serving=False)
    monkeypatch.setenv("QUICKSTART_STATE_DIR", str(tmp_path / "state"))
    assert cli.main(["localcloud", "--port", "8443"]) == 0
    assert events == [("serve", str(tmp_path / "state"), 8443)]


def test_localcloud_verbose_asks_the_server_to_echo_every_request(tmp_path, monkeypatch):
    fake_local_cloud(monkeypatch, tmp_path, serving=False)
    calls = []
    package = sys.modules["quickstart.localcloud"]
    package.serve_forever = lambda state_dir, port, **options: calls.append(options)
    monkeypatch.setenv("QUICKSTART_STATE_DIR", str(tmp_path / "state"))
    assert cli.main(["localcloud", "--verbose"]) == 0
    assert calls == [{"verbose": True}]


def test_without_the_local_cloud_a_clear_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "quickstart.localcloud", None)
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the local cloud is not available yet" in err


# Secrets ------------------------------------------------------------------------------------------


def test_secrets_never_appear_in_any_output(tmp_path, azure_config, sample, monkeypatch, capsys):
    """Recognisable secrets in the file, the environment and the local cloud's connection; every
    command and failure path driven; none of them may show up on stdout or stderr."""
    no_sleep(monkeypatch)
    secrets = [
        CLIENT_SECRET,
        STORAGE_KEY,
        ADMIN_PASSWORD,
        LOCAL_SECRET,
        LOCAL_KEY,
        "ENV-SECRET-0c9f",
    ]
    outputs = []

    def drive(argv, expect):
        assert cli.main(argv) == expect, argv
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)

    loose = tmp_path / "loose.ini"
    loose.write_text(AZURE_INI)
    loose.chmod(0o644)  # the permission warning path
    broken = tmp_path / "broken.ini"
    broken.write_text(
        AZURE_INI + "[resources]\nshare = BAD\n" + "client_secret " + CLIENT_SECRET + "\n"
    )
    invalid = tmp_path / "invalid.ini"
    invalid.write_text(AZURE_INI.replace("[cluster]\n", "[cluster]\nnode_count = 0\n"))

    drive(["run", "--config", str(broken)], 2)
    drive(["run", "--config", str(invalid)], 2)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "ENV-SECRET-0c9f")
    monkeypatch.setenv("AZURE_STORAGE_KEY", "not base64 " + STORAGE_KEY)
    drive(["status", "--config", azure_config], 2)
    monkeypatch.delenv("AZURE_STORAGE_KEY")
    with patched_sdk() as azure:
        allocating_cluster(azure)
        script_job(azure, JobScript(["queued", "running", "succeeded"], [b"", b"training\n", b""]))
        drive(["run", "--config", str(loose), "--epochs", "1"], 0)
    with patched_sdk() as azure:
        allocating_cluster(azure)
        script_job(azure, JobScript(["running", "failed"], [b"failed\n"], exit_code=3))
        drive(["run", "--config", azure_config], 3)
    with patched_sdk() as azure:  # an SDK error that quotes a secret back
        azure.credentials_class.side_effect = RuntimeError(
            "token request failed for secret ENV-SECRET-0c9f"
        )
        drive(["run", "--config", azure_config], 1)
    with patched_sdk() as azure:
        azure.batchai.jobs.list_by_experiment.return_value = iter([])
        drive(["teardown", "--config", azure_config], 0)
        azure.batchai.clusters.get.side_effect = cloud_error(404)
        drive(["status", "--config", azure_config], 0)
    monkeypatch.delenv("AZURE_CLIENT_SECRET")
    fake_local_cloud(monkeypatch, tmp_path, serving=False)
    (tmp_path / ".localcloud").mkdir()
    with patched_sdk() as azure:  # the local cloud's own secrets, quoted back by a failing call
        azure.resources.resource_groups.create_or_update.side_effect = ValueError(
            "bad key " + LOCAL_KEY + " for " + LOCAL_SECRET
        )
        drive(["run"], 1)
        azure.resources.resource_groups.create_or_update.side_effect = None
        allocating_cluster(azure)
        azure.batchai.jobs.get.side_effect = KeyboardInterrupt  # Ctrl-C while monitoring
        drive(["run"], 130)
        azure.batchai.clusters.get.side_effect = None
        azure.batchai.clusters.get.return_value = cluster("steady", running=1, current=1)
        azure.batchai.jobs.list_by_experiment.return_value = iter([job("cntk_a", "running")])
        script_job(azure, JobScript(["running", "succeeded"], [b"more\n", b""]))
        drive(["status", "--follow"], 0)
        azure.batchai.jobs.list_by_experiment.return_value = iter([])
        drive(["teardown", "--delete-share"], 0)
    drive(["localcloud"], 0)

    text = "\n".join(outputs)
    assert text.count("Started the local cloud") == 4 and "Removed file share" in text
    assert (
        "readable by group or others" in text
        and "config error" in text
        and "error: RuntimeError" in text
    )
    for secret in secrets:
        assert secret not in text, secret


# Integration: the real SDK clients against the real local cloud ----------------------------------


def local_cloud_has_batch_ai():
    import importlib.util

    return importlib.util.find_spec("quickstart.localcloud.batchai") is not None


needs_batch_ai = pytest.mark.skipif(
    not local_cloud_has_batch_ai(), reason="the local cloud's Batch AI surface has not landed yet"
)
TINY_TRAINING_SCRIPT = """\
import os, sys
data_dir, model_dir, args = sys.argv[1], sys.argv[2], sys.argv[3:]
print("training on " + ",".join(sorted(os.listdir(data_dir))), file=sys.stderr, flush=True)
for epoch in range(2):
    with open(os.path.join(model_dir, "ConvNet_MNIST_{}.dnn".format(epoch)), "w") as model:
        model.write("model {}".format(epoch))
    print("Finished Epoch[{} of 2]".format(epoch + 1), file=sys.stderr, flush=True)
print("args=" + " ".join(args), file=sys.stderr)
if "--fail" in args:
    sys.exit(int(args[args.index("--fail") + 1]))
"""


@needs_batch_ai
def test_run_status_teardown_against_the_local_cloud(local_cloud, tmp_path, monkeypatch, capsys):
    """The tutorial end to end with a tiny training script: the real sample's code path."""
    from quickstart import steps

    sample_dir = tmp_path / "sample"
    sample_dir.mkdir()
    (sample_dir / "ConvNet_MNIST.py").write_text(TINY_TRAINING_SCRIPT)
    (sample_dir / "Train-28x28_cntk_text.txt").write_text(
        "|labels 1 0 0 0 0 0 0 0 0 0 |features 0\n" * 1000
    )
    (sample_dir / "Test-28x28_cntk_text.txt").write_text(
        "|labels 0 1 0 0 0 0 0 0 0 0 |features 0\n"
    )
    paths = [
        sample_dir / "Train-28x28_cntk_text.txt",
        sample_dir / "Test-28x28_cntk_text.txt",
        sample_dir / "ConvNet_MNIST.py",
    ]
    monkeypatch.setattr(steps, "prepare_sample_files", lambda settings: {p.name: p for p in paths})
    monkeypatch.setenv(
        "QUICKSTART_STATE_DIR", str(tmp_path / "localcloud")
    )  # where the fixture serves
    monkeypatch.setenv("QUICKSTART_POLL_INTERVAL", "0.2")
    monkeypatch.setenv("QUICKSTART_DOWNLOAD_DIR", str(tmp_path / "outputs"))

    assert cli.main(["run", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert (
        "Using the local cloud serving at " + local_cloud.connection["resource_manager_url"] in out
    )
    assert "Cluster state: steady Target: 1; Allocated: 1; Idle: 1;" in out
    (portal,) = re.findall(r"Cluster ready; watch it at (\S+)", out)  # once, and it signs in
    signed_in = requests_session(local_cloud.connection).get(portal)
    assert signed_in.status_code == 200 and signed_in.url.endswith("/portal/")
    assert "training on ConvNet_MNIST.py,Test-28x28_cntk_text.txt,Train-28x28_cntk_text.txt" in out
    assert "args=--max-epochs 2" in out
    assert "file: ConvNet_MNIST_1.dnn, download url: https://" in out
    assert "sig=***" in out and not re.search(r"sig=(?!\*\*\*)", out)  # SAS signatures hidden
    (job_dir,) = (tmp_path / "outputs").iterdir()
    assert (job_dir / "ConvNet_MNIST_1.dnn").read_text() == "model 1"
    assert "Finished Epoch[2 of 2]" in (job_dir / "stdouterr" / "stderr.txt").read_text()

    monkeypatch.setenv("QUICKSTART_EXTRA_ARGS", "--fail 3")
    assert cli.main(["run"]) == 3
    assert "with exit code 3" in capsys.readouterr().out

    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Job state: failed" in out and "file: stderr.txt, download url: https://" in out

    assert cli.main(["teardown", "--delete-share"]) == 0
    out = capsys.readouterr().out
    assert "Removed cluster mycluster" in out and "Removed resource group myresourcegroup" in out
    assert "Removed file share batchaiquickstart" in out
    assert cli.main(["teardown"]) == 0
    assert (
        "Nothing to remove: experiment myexperiment, cluster mycluster," in capsys.readouterr().out
    )


@needs_batch_ai
@pytest.mark.slow
def test_run_with_no_config_file_trains_the_real_sample_for_one_epoch(
    tmp_path, monkeypatch, capsys
):
    """`python -m quickstart run` as the README says, with the real sample, for one epoch."""
    result = subprocess.run(
        [sys.executable, "-m", "quickstart", "run", "--epochs", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "QUICKSTART_DATA_DIR": str(REPO / "data")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Finished Epoch[1 of 1]" in result.stdout
    assert list((tmp_path / "outputs").glob("*/ConvNet_MNIST_0.*"))
    teardown = subprocess.run(
        [sys.executable, "-m", "quickstart", "teardown", "--delete-share"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert teardown.returncode == 0, teardown.stderr
