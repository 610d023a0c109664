"""The portal link `run` prints once the cluster is ready: the local cloud's current one-time
login link, shown at once (a piped `run` still shows it before the long training wait), and
nothing on Azure or when the local cloud serves no portal."""

import io
import sys

from quickstart.config import Settings
from quickstart.localcloud.portal.login import Sessions
from quickstart.portal_link import announce_portal
from tests.fakes_azure import azure_settings


def unbuffered_stdout(monkeypatch):
    """A stdout whose bytes reach ``raw`` only when flushed, as a pipe's do."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8"))
    return raw


def test_the_local_cloud_link_is_printed_and_flushed_at_once(tmp_path, monkeypatch):
    Sessions(tmp_path)  # the portal writes its current login token into the state dir
    token = (tmp_path / "portal-login-token").read_text()
    raw = unbuffered_stdout(monkeypatch)
    settings = Settings(state_dir=str(tmp_path), resource_manager_url="https://127.0.0.1:8443/")

    announce_portal(settings)

    assert raw.getvalue().decode() == (
        f"Cluster ready; watch it at https://127.0.0.1:8443/portal/login?token={token}\n"
    )


def test_nothing_is_printed_without_a_portal_or_on_azure(tmp_path, capsys):
    local = Settings(state_dir=str(tmp_path), resource_manager_url="https://127.0.0.1:8443")
    announce_portal(local)  # no login token: this local cloud serves no portal
    assert capsys.readouterr().out == ""

    Sessions(tmp_path)
    announce_portal(azure_settings(state_dir=str(tmp_path)))  # a token there, but Azure
    assert capsys.readouterr().out == ""
