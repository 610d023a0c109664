"""The tutorial's own resource-group and upload steps (quickstart/steps.py) against the local cloud."""

from __future__ import annotations

import os

import pytest

from quickstart import steps
from quickstart.config import Settings
from tests.conftest import make_file_service, make_resource_client


def _settings(cloud) -> Settings:
    return Settings().bind_local_cloud(cloud.connection)


def test_resource_group_share_directory_and_upload_steps(local_cloud, tmp_path, capsys):
    settings = _settings(local_cloud)
    sample = {
        "Train-28x28_cntk_text.txt": os.urandom(6 * 1024 * 1024 + 5),
        "Test-28x28_cntk_text.txt": b"|labels 0 1 |features 0 0\n" * 1000,
        "ConvNet_MNIST.py": b"import sys\nprint(sys.argv)\n",
    }
    paths = {}
    for name, data in sample.items():
        (tmp_path / name).write_bytes(data)
        paths[name] = tmp_path / name

    clients = steps.create_clients(settings)
    steps.create_resource_group(clients.resources, settings)
    steps.create_resource_group(clients.resources, settings)  # reuse is fine
    service = steps.create_file_share(settings, clients.http)
    steps.create_sample_directory(service, settings)
    steps.upload_sample_files(service, settings, paths)

    rm = make_resource_client(local_cloud.connection)
    assert rm.resource_groups.get(settings.resource_group).location == settings.location
    files = make_file_service(local_cloud.connection)
    for name, data in sample.items():
        assert files.get_file_to_bytes(settings.share, settings.directory, name).content == data
    out = capsys.readouterr().out
    assert "Resource group myresourcegroup ready" in out
    for secret in settings.secret_values():
        assert secret not in out


@pytest.mark.slow
def test_real_sample_files_upload(local_cloud):
    settings = _settings(local_cloud)
    clients = steps.create_clients(settings)
    steps.create_resource_group(clients.resources, settings)
    service = steps.create_file_share(settings, clients.http)
    steps.create_sample_directory(service, settings)
    paths = steps.prepare_sample_files(settings)
    steps.upload_sample_files(service, settings, paths)
    files = make_file_service(local_cloud.connection)
    for name, path in paths.items():  # the port in its folder: "convnet_pytorch/train.py"
        folder, _, file_name = f"{settings.directory}/{name}".rpartition("/")
        remote = files.get_file_properties(settings.share, folder, file_name)
        assert remote.properties.content_length == path.stat().st_size
