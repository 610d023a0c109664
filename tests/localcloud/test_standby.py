"""A command that borrowed another command's local cloud carries on when that command ends.

``status --follow`` in a second terminal uses the cloud that ``run`` started; when ``run`` ends
first, the follower takes over serving the state directory at the same URL, and its clients
(the tutorial's own, from steps.create_clients) keep working.
"""

from __future__ import annotations

import time

from quickstart import steps
from quickstart.__main__ import connected
from quickstart.config import load_settings
from quickstart.localcloud import LocalCloud, Standby, is_serving, read_connection
from quickstart.localcloud.connection import HEALTH_PATH


def local_settings(state_dir):
    return load_settings(environ={}, overrides={"cloud": "local", "state_dir": str(state_dir)})


def test_a_borrowing_command_serves_the_cloud_when_its_owner_ends(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no ./config.ini from the checkout reaches the settings
    state = tmp_path / "state"
    owner = LocalCloud(state).start()
    url = owner.connection["resource_manager_url"]
    try:
        with connected(local_settings(state), secrets=[]) as settings:
            clients = steps.create_clients(settings)
            clients.resources.resource_groups.create_or_update("kept", {"location": "eastus"})
            owner.stop()  # `run` ends while `status --follow` still watches
            health = clients.http.get(
                url.rstrip("/") + HEALTH_PATH, timeout=10
            )  # the streaming session
            assert health.status_code == 200
            group = clients.resources.resource_groups.get("kept")  # and the ARM clients
            assert group.name == "kept"
            assert read_connection(state)["resource_manager_url"] == url
        out = capsys.readouterr().out
        assert f"Using the local cloud serving at {url}" in out
        assert f"this command serves it now at {url}" in out
    finally:
        owner.stop()
    assert not is_serving(read_connection(state))  # the taker stopped when its command ended


def test_standby_stays_idle_while_the_owner_serves(tmp_path):
    state = tmp_path / "state"
    taken = []
    with LocalCloud(state) as owner:
        with Standby(state, on_take_over=taken.append) as standby:
            time.sleep(0.5)
            assert standby.cloud is None and taken == []
        assert is_serving(owner.connection)  # leaving the standby left the owner alone
