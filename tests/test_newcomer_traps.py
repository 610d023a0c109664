"""What a newcomer who cloned the repository and tried everything ran into (issue 12): each trap
now ends in one line that says what is wrong and what to do, exit status 2 for usage and
configuration errors, and nothing created."""

import os
import re
from pathlib import Path

import pytest

from quickstart import __main__ as cli
from tests.conftest import clear_azure_environment
from tests.test_cli import fake_local_cloud

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def in_empty_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clear_azure_environment(monkeypatch)
    monkeypatch.delenv("QUICKSTART_STATE_DIR", raising=False)
    monkeypatch.delenv("QUICKSTART_DEBUG", raising=False)


def one_line_exit_2(argv, capsys):
    """Run the command line; assert exit 2 and one line on stderr, and return that line."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def nothing_created(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# --config naming something that is not a readable ini file ---------------------------------


@pytest.mark.parametrize("command", ["run", "status", "teardown", "download"])
def test_config_naming_a_folder_is_one_line_and_creates_nothing(tmp_path, command, capsys):
    (tmp_path / "settings").mkdir()
    line = one_line_exit_2([command, "--config", "settings"], capsys)
    assert line == "config error: --config: settings is a folder; name the settings file " + (
        "(config.ini) in it"
    )
    assert nothing_created(tmp_path) == ["settings"]


def test_config_file_that_cannot_be_read_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "config.ini").write_text("[cloud]\ncloud = local\n")
    read_text = Path.read_text

    def denied(path, *args, **kwargs):
        if path.name == "config.ini":
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)  # (root reads any file, so chmod cannot)
    line = one_line_exit_2(["run", "--config", "config.ini"], capsys)
    assert line == "config error: --config: cannot read config.ini (Permission denied)"
    assert nothing_created(tmp_path) == ["config.ini"]


@pytest.mark.parametrize(
    "content,problem",
    [
        (b'{"cloud": "local"}\n', "config.ini: line 1: settings must follow a [section] header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "config.ini: not a UTF-8 text file; --config names an ini"),
    ],
)
def test_config_file_that_is_not_an_ini_is_one_line(tmp_path, content, problem, capsys):
    (tmp_path / "config.ini").write_bytes(content)
    line = one_line_exit_2(["run", "--config", "config.ini"], capsys)
    assert line.startswith("config error: " + problem), line
    assert nothing_created(tmp_path) == ["config.ini"]


def test_an_unknown_cloud_is_that_one_line_alone(tmp_path, capsys):
    (tmp_path / "config.ini").write_text("[cloud]\ncloud = AzureMars\n")
    line = one_line_exit_2(["run"], capsys)
    assert line == (
        "config error: [cloud] cloud: must be local or one of AzureCloud, AzureChinaCloud, "
        "AzureUSGovernment, AzureGermanCloud"
    )


# The local cloud's state directory ---------------------------------------------------------


@pytest.mark.parametrize("command", ["status", "teardown", "download"])
def test_state_dir_option_is_the_same_as_the_environment_variable(
    tmp_path, monkeypatch, command, capsys
):
    absent = str(tmp_path / "elsewhere")
    assert cli.main([command, "--state-dir", absent]) in (0, 1)
    by_option = capsys.readouterr().out
    monkeypatch.setenv("QUICKSTART_STATE_DIR", absent)
    assert cli.main([command]) in (0, 1)
    assert capsys.readouterr().out == by_option
    assert f"The local cloud has no state in {absent} yet" in by_option
    assert not Path(absent).exists()


def test_run_uses_the_local_cloud_in_the_state_dir_it_is_given(tmp_path, monkeypatch, capsys):
    events = fake_local_cloud(monkeypatch, tmp_path, serving=True)
    monkeypatch.setattr("quickstart.steps.run", lambda settings: 0)
    assert cli.main(["run", "--state-dir", str(tmp_path / "shared")]) == 0
    assert events[0] == ("standby", str(tmp_path / "shared"))
    assert "Using the local cloud serving at https://127.0.0.1:4443/" in capsys.readouterr().out


def test_localcloud_prints_the_line_that_uses_it_from_another_terminal(
    tmp_path, monkeypatch, capsys
):
    events = fake_local_cloud(monkeypatch, tmp_path, serving=False)
    assert cli.main(["localcloud", "--state-dir", "shared"]) == 0
    assert events == [("serve", "shared", 0)]
    out = capsys.readouterr().out
    state_dir = str(tmp_path / "shared")
    line = next(line for line in out.splitlines() if "-m quickstart run" in line)
    python, _, rest = line.strip().partition(" -m quickstart run ")
    assert rest == f"--state-dir {state_dir}"
    assert python == "python" or os.path.samefile(python, os.sys.executable)
    assert f"export QUICKSTART_STATE_DIR={state_dir}" in out


def test_a_connection_file_whose_server_is_gone_is_said_in_one_line(tmp_path, monkeypatch, capsys):
    events = fake_local_cloud(monkeypatch, tmp_path, serving="gone")
    monkeypatch.setattr("quickstart.steps.run", lambda settings: 0)
    (tmp_path / "shared").mkdir()
    assert cli.main(["run", "--state-dir", "shared"]) == 0
    out = capsys.readouterr().out
    assert (
        "The local cloud that served from shared is gone; starting one for this command "
        "(`python -m quickstart localcloud` serves one for every terminal)\n"
    ) in out
    assert events[0] == ("new", "shared") and events[-1] == "stop"


@pytest.mark.parametrize(
    "argv,problem",
    [
        (["--port", "99999"], "argument --port: '99999' is not a port number from 0 to 65535"),
        (["--port", "http"], "argument --port: 'http' is not a port number from 0 to 65535"),
        (["--state-dir", "a-file"], "--state-dir: a-file is a file; name a folder"),
    ],
)
def test_bad_localcloud_arguments_are_one_line_with_exit_2(tmp_path, argv, problem, capsys):
    (tmp_path / "a-file").write_text("not a folder\n")
    try:
        line = one_line_exit_2(["localcloud", *argv], capsys)
    except SystemExit as exited:  # argparse's own exit, after its one line
        assert exited.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        line = err.strip()
    assert problem in line and "Traceback" not in line
    assert nothing_created(tmp_path) == ["a-file"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert re.fullmatch(r"quickstart \d+\.\d+\.\d+\n", capsys.readouterr().out)


# Fetching a job's files after the fact ------------------------------------------------------


def test_download_command_fetches_the_named_or_the_latest_job(tmp_path, monkeypatch):
    from tests.test_cli import AZURE_INI

    (tmp_path / "azure.ini").write_text(AZURE_INI)
    (tmp_path / "azure.ini").chmod(0o600)
    asked = []
    monkeypatch.setattr("quickstart.status.download", lambda settings, job: asked.append(job) or 0)
    assert cli.main(["download", "cntk_b", "--config", "azure.ini"]) == 0
    assert cli.main(["download", "--config", "azure.ini"]) == 0
    assert asked == ["cntk_b", None]
