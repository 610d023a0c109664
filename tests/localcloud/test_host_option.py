"""Issue 15, point 5: ``--host`` binds another address on explicit opt-in only; the
certificate covers it and authentication stays as strict. (127.0.0.2: still loopback, so the
test never leaves this machine.)"""

from __future__ import annotations

import socket

import pytest
import requests

from quickstart.__main__ import main
from quickstart.localcloud import LocalCloud, LocalCloudError
from quickstart.localcloud.certs import covered_hosts
from tests.conftest import make_resource_client


def test_another_address_is_served_with_a_certificate_for_it_and_the_same_checks(tmp_path):
    with LocalCloud(tmp_path / "lc", port=0, host="127.0.0.2") as cloud:
        url = cloud.base_url
        port = int(url.rsplit(":", 1)[1])
        assert url.startswith("https://127.0.0.2:")
        assert "127.0.0.2" in covered_hosts(tmp_path / "lc" / "tls" / "server.pem")
        with pytest.raises(ConnectionRefusedError):  # only the address asked for
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        client = make_resource_client(cloud.connection)  # verifies TLS against ca.pem
        client.resource_groups.create_or_update("viahost", {"location": "eastus"})
        assert [g.name for g in client.resource_groups.list()] == ["viahost"]
        anonymous = requests.get(
            f"{url}/subscriptions/{cloud.connection['subscription_id']}/resourcegroups",
            params={"api-version": "2019-10-01"},
            verify=cloud.connection["ca_cert"],
            timeout=10,
        )
        assert anonymous.status_code == 401
    with LocalCloud(tmp_path / "lc", port=0) as cloud:  # the default again: 127.0.0.1
        assert cloud.base_url.startswith("https://127.0.0.1:")


@pytest.mark.parametrize(
    ("host", "why"),
    [("0.0.0.0", "would listen on every address"), ("my-laptop", "is not an IP address")],
)
def test_a_wildcard_or_a_name_is_one_line_and_exit_status_2(tmp_path, capsys, host, why):
    with pytest.raises(LocalCloudError, match=why):
        LocalCloud(tmp_path / "lc", host=host)
    code = main(["localcloud", "--host", host, "--state-dir", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err
