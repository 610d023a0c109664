"""Names as long as Azure allows (255 characters of any Unicode), though a Linux disk holds only
255 bytes per name: kept under a hashed disk name, shown by their real name everywhere."""

from __future__ import annotations

import pytest
from azure.common import AzureHttpError

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.files.names import is_long_disk_name, long_disk_name
from tests.conftest import make_file_service

EMOJI = "\U0001f600"  # 4 bytes in UTF-8: 255 of them are 1,020 bytes


def _names(file_service, share, directory=None):
    return [entry.name for entry in file_service.list_directories_and_files(share, directory)]


@pytest.mark.parametrize("name", [EMOJI * 255, "é" * 128, "é" * 255, EMOJI * 200 + ".txt"])
def test_a_name_azure_accepts_is_created_listed_read_and_deleted(local_cloud, file_service, name):
    file_service.create_share("long")
    file_service.create_file_from_bytes("long", None, name, b"content")
    assert _names(file_service, "long") == [name]
    assert file_service.get_file_to_bytes("long", None, name).content == b"content"
    assert file_service.get_file_properties("long", None, name).properties.content_length == 7
    assert file_service.exists("long", None, name)
    file_service.delete_file("long", None, name)
    assert _names(file_service, "long") == []
    assert local_cloud.context.store.file_names("long", "") == {}  # the record went too


@pytest.mark.parametrize("name", [EMOJI * 256, "é" * 256, "a" * 256])
def test_a_name_of_256_characters_is_refused_with_azures_error(file_service, name):
    file_service.create_share("long")
    with pytest.raises(AzureHttpError) as caught:
        file_service.create_file_from_bytes("long", None, name, b"x")
    assert caught.value.status_code == 400 and "InvalidResourceName" in str(caught.value)
    assert "256 characters long" in str(caught.value)
    assert _names(file_service, "long") == []


def test_a_long_directory_holds_files_and_both_keep_their_names(local_cloud, file_service):
    folder, inner = "Δ" * 200, EMOJI * 255
    file_service.create_share("long")
    file_service.create_directory("long", folder)
    file_service.create_file_from_bytes("long", folder, inner, b"inside")
    file_service.create_file_from_bytes("long", folder, "short.txt", b"short")
    assert _names(file_service, "long") == [folder]
    assert sorted(_names(file_service, "long", folder)) == sorted([inner, "short.txt"])
    assert file_service.get_file_to_bytes("long", folder, inner).content == b"inside"
    # listings filter and page by the real name, as Azure does
    assert [
        e.name for e in file_service.list_directories_and_files("long", folder, prefix=EMOJI)
    ] == [inner]
    page = file_service.list_directories_and_files("long", folder, num_results=1)
    assert len(list(page)) == 1 and page.next_marker
    with pytest.raises(AzureHttpError, match="DirectoryNotEmpty"):
        file_service.delete_directory("long", folder)
    file_service.delete_file("long", folder, inner)
    file_service.delete_file("long", folder, "short.txt")
    file_service.delete_directory("long", folder)
    assert _names(file_service, "long") == []
    assert local_cloud.context.store.file_names("long", "") == {}


def test_long_names_differing_only_in_case_are_one_file_with_the_first_spelling(file_service):
    upper, lower = "É" * 128, "é" * 128
    file_service.create_share("long")
    file_service.create_file_from_bytes("long", None, upper, b"first")
    file_service.create_file_from_bytes("long", None, lower, b"second")
    assert _names(file_service, "long") == [upper]  # case-preserving
    assert file_service.get_file_to_bytes("long", None, upper).content == b"second"
    with pytest.raises(AzureHttpError, match="ResourceAlreadyExists"):
        file_service.create_directory("long", lower, fail_on_exist=True)
    # a name that is short in one spelling and long in another is still one file
    short, long_ = "s" * 200, "ſ" * 200  # U+017F upper-cases to "S": 200 bytes against 400
    file_service.create_file_from_bytes("long", None, long_, b"long s")
    file_service.create_file_from_bytes("long", None, short, b"plain s")
    assert sorted(_names(file_service, "long")) == sorted([upper, long_])
    assert file_service.get_file_to_bytes("long", None, long_).content == b"plain s"


def test_long_names_survive_a_restart_and_a_job_sees_the_hashed_disk_name(tmp_path):
    name = EMOJI * 255
    state = tmp_path / "state"
    with LocalCloud(state) as cloud:
        service = make_file_service(cloud.connection)
        service.create_share("long")
        service.create_file_from_bytes("long", None, name, b"kept")
        on_disk = [p.name for p in (state / "shares" / "long").iterdir()]
    # what a job sees through its mount of the share: the disk name, at most 255 bytes
    assert len(on_disk) == 1 and is_long_disk_name(on_disk[0]) and len(on_disk[0]) < 255
    with LocalCloud(state) as cloud:
        service = make_file_service(cloud.connection)
        assert _names(service, "long") == [name]
        assert service.get_file_to_bytes("long", None, name).content == b"kept"
        service.delete_share("long")
        assert cloud.context.store.file_names("long", "") == {}


def test_a_name_record_left_by_a_crash_before_its_entry_is_never_shown(local_cloud, file_service):
    """The record is written before the entry (the crash-safe order); a crash between the two
    leaves a record alone, which no listing shows and the next create of that name replaces."""
    file_service.create_share("long")
    store, asked = local_cloud.context.store, "É" * 128
    store.remember_file_name("long", "", long_disk_name(asked), asked)  # the entry never came
    assert _names(file_service, "long") == []
    assert not file_service.exists("long", None, asked)
    file_service.create_file_from_bytes("long", None, "é" * 128, b"now")
    assert _names(file_service, "long") == ["é" * 128]
