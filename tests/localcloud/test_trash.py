"""Replaced and deleted blobs and Azure Files files leave view at once and their space is freed
in the background (trash.py); what a crash leaves in trash/ is gone at the next start."""

from __future__ import annotations

import os

import pytest
from azure.common import AzureMissingResourceHttpError

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.trash import Trash
from tests.conftest import make_blob_service, make_file_service

MiB = 1024 * 1024


def test_replace_shows_the_new_file_and_frees_the_old_one(tmp_path):
    trash_root = tmp_path / "trash"
    trash_root.mkdir()
    trash = Trash(trash_root)
    target, new = tmp_path / "blob", tmp_path / "new"
    target.write_bytes(b"old" * MiB)
    new.write_bytes(b"new")
    reader = open(target, "rb")  # a job still reading the old blob keeps reading it whole
    trash.replace(new, target)
    assert target.read_bytes() == b"new" and not new.exists()
    trash.close()
    assert list(trash_root.iterdir()) == []
    assert reader.read() == b"old" * MiB
    reader.close()


def test_replace_onto_a_new_name_or_a_folder_behaves_as_os_replace(tmp_path):
    trash = Trash(tmp_path)
    first = tmp_path / "first"
    first.write_bytes(b"1")
    trash.replace(first, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == b"1"
    folder = tmp_path / "folder"
    folder.mkdir()
    second = tmp_path / "second"
    second.write_bytes(b"2")
    with pytest.raises(IsADirectoryError):
        trash.replace(second, folder)
    assert second.exists() and folder.is_dir()
    assert not trash.discard(tmp_path / "missing")
    trash.close()


def test_overwritten_and_deleted_blobs_free_their_space_and_a_crash_leftover_goes(tmp_path):
    state = tmp_path / "state"
    with LocalCloud(state, port=0) as cloud:
        blobs = make_blob_service(cloud.connection)
        blobs.create_container("data")
        for content in (b"a" * (3 * MiB), b"b" * (2 * MiB)):
            blobs.create_blob_from_bytes("data", "big.bin", content)
        assert blobs.get_blob_to_bytes("data", "big.bin").content == b"b" * (2 * MiB)
        blobs.create_blob_from_bytes("data", "gone.bin", b"x" * MiB)
        blobs.delete_blob("data", "gone.bin")
        assert [b.name for b in blobs.list_blobs("data")] == ["big.bin"]
    assert list((state / "trash").iterdir()) == []  # freed by the time the cloud stopped
    os.link(state / "containers" / "data" / "big.bin", state / "trash" / "replaced-crash")
    with LocalCloud(state, port=0) as cloud:
        assert list((state / "trash").iterdir()) == []
        blobs = make_blob_service(cloud.connection)
        assert blobs.get_blob_to_bytes("data", "big.bin").content == b"b" * (2 * MiB)


def test_overwritten_and_deleted_share_files_free_their_space(tmp_path):
    state = tmp_path / "state"
    with LocalCloud(state, port=0) as cloud:
        files = make_file_service(cloud.connection)
        files.create_share("data")
        for content in (b"a" * (3 * MiB), b"b" * (2 * MiB)):
            files.create_file_from_bytes("data", None, "big.bin", content)
        reader = open(state / "shares" / "data" / "big.bin", "rb")  # a job reading it
        files.create_file_from_bytes("data", None, "big.bin", b"c" * MiB)
        files.create_file_from_bytes("data", None, "gone.bin", b"x" * MiB)
        files.delete_file("data", None, "gone.bin")
        assert [f.name for f in files.list_directories_and_files("data")] == ["big.bin"]
        assert files.get_file_to_bytes("data", None, "big.bin").content == b"c" * MiB
        assert not files.exists("data", None, "gone.bin")
        with pytest.raises(AzureMissingResourceHttpError, match="ResourceNotFound"):
            files.delete_file("data", None, "gone.bin")
        # Get Share Stats counts what the share holds now, not the files on their way out
        assert files.get_share_stats_in_bytes("data") == MiB
        assert files.get_share_stats("data") == 1  # in GiB, rounded up
        assert reader.read() == b"b" * (2 * MiB)
        reader.close()
    assert list((state / "trash").iterdir()) == []
