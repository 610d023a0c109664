"""Names and space as Azure keeps them (issue 13, point 5): simple case mapping, the quota,
``clear`` freeing space."""

from __future__ import annotations

import os

import pytest
from azure.common import AzureHttpError

from quickstart.localcloud.files.names import simple_fold


@pytest.mark.parametrize(
    ("one", "other"),
    [("Data.TXT", "data.txt"), ("ÉTÉ.txt", "été.txt"), ("ΣΟΦΌΣ", "σοφός"), ("ǅ", "ǆ")],
)
def test_names_differing_only_in_simple_case_are_the_same_file(file_service, one, other):
    file_service.create_share("collide")
    file_service.create_file_from_bytes("collide", None, one, b"first")
    file_service.create_file_from_bytes("collide", None, other, b"second")
    names = [f.name for f in file_service.list_directories_and_files("collide")]
    assert names == [one]  # the case it was created with is kept
    assert file_service.get_file_to_bytes("collide", None, one).content == b"second"


@pytest.mark.parametrize(
    ("one", "other"),
    [("straße.txt", "STRASSE.txt"), ("ﬁle", "FILE"), ("ŉ", "ʼN"), ("ǰ", "J̌"), ("ΐ", "Ϊ́")],
)
def test_names_azure_keeps_apart_stay_apart(file_service, one, other):
    assert simple_fold(one) != simple_fold(other)
    file_service.create_share("apart")
    file_service.create_file_from_bytes("apart", None, one, b"first")
    file_service.create_file_from_bytes("apart", None, other, b"second")
    assert file_service.get_file_to_bytes("apart", None, one).content == b"first"
    assert file_service.get_file_to_bytes("apart", None, other).content == b"second"


def test_the_quota_is_enforced_with_the_services_error(file_service):
    file_service.create_share("small", quota=1)
    file_service.create_file("small", None, "half.bin", 600 * 1024**2)
    with pytest.raises(AzureHttpError) as caught:
        file_service.create_file("small", None, "more.bin", 600 * 1024**2)
    assert caught.value.status_code == 403 and "ShareSizeLimitReached" in str(caught.value)
    assert not file_service.exists("small", None, "more.bin")
    with pytest.raises(AzureHttpError, match="ShareSizeLimitReached"):
        file_service.resize_file("small", None, "half.bin", 3 * 1024**3)
    file_service.resize_file("small", None, "half.bin", 1024**3)  # exactly the quota fits
    file_service.resize_file("small", None, "half.bin", 10)
    file_service.create_file("small", None, "more.bin", 600 * 1024**2)  # space came back


def test_clear_frees_the_space_of_the_range(local_cloud, file_service):
    file_service.create_share("sparse")
    size = 8 * 1024**2
    file_service.create_file_from_bytes("sparse", None, "f.bin", os.urandom(size))
    path = local_cloud.context.share_path("sparse", "f.bin")
    before = os.stat(path).st_blocks
    file_service.clear_range("sparse", None, "f.bin", 0, size - 1)
    assert file_service.get_file_to_bytes("sparse", None, "f.bin").content == bytes(size)
    assert os.stat(path).st_size == size
    assert os.stat(path).st_blocks < before / 4  # the disk space was given back
