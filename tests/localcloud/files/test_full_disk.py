"""A full disk fails the request with the storage service's error, leaves nothing
half-visible, and the local cloud keeps serving (on a small tmpfs; needs root to mount)."""

from __future__ import annotations

import os
import subprocess

import pytest
from azure.common import AzureHttpError
from azure.storage.common.retry import no_retry

from quickstart.localcloud import LocalCloud
from tests.conftest import make_blob_service, make_file_service, make_resource_client

MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MiB tmpfs, unmounted after the test."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_cleanly_and_the_cloud_keeps_serving(small_disk):
    with LocalCloud(small_disk / "state", port=0) as cloud:
        files = make_file_service(cloud.connection)
        files.retry = no_retry
        files.create_share("full")
        kept = os.urandom(3 * MiB + 11)
        files.create_file_from_bytes("full", None, "kept.bin", kept)

        # Too big for what is left: refused whole at Create File, never listed.
        with pytest.raises(AzureHttpError) as caught:
            files.create_file_from_bytes("full", None, "huge.bin", os.urandom(40 * MiB))
        assert caught.value.status_code == 500
        assert "disk is full" in str(caught.value)
        assert "huge.bin" not in [f.name for f in files.list_directories_and_files("full")]

        # The disk fills up under a file already made: its range fails whole.
        files.create_file("full", None, "model.bin", 4 * MiB)
        filler = small_disk / "filler"
        with open(filler, "wb") as out, pytest.raises(OSError):
            while True:
                out.write(bytes(MiB))
        with pytest.raises(AzureHttpError) as caught:
            files.update_range("full", None, "model.bin", os.urandom(4 * MiB), 0, 4 * MiB - 1)
        assert caught.value.status_code == 500
        assert files.get_file_to_bytes("full", None, "model.bin").content == bytes(4 * MiB)
        assert files.get_file_to_bytes("full", None, "kept.bin").content == kept
        assert make_resource_client(cloud.connection).resource_groups.check_existence("rg") is False

        filler.unlink()  # space again: the same requests succeed
        data = os.urandom(4 * MiB)
        files.update_range("full", None, "model.bin", data, 0, 4 * MiB - 1)
        assert files.get_file_to_bytes("full", None, "model.bin").content == data


def test_a_blob_upload_on_a_full_disk_fails_whole_with_the_storage_error(small_disk):
    with LocalCloud(small_disk / "state", port=0) as cloud:
        blobs = make_blob_service(cloud.connection)
        blobs.retry = no_retry
        blobs.create_container("full")
        with pytest.raises(AzureHttpError) as caught:
            blobs.create_blob_from_bytes("full", "huge.bin", os.urandom(45 * MiB))
        assert caught.value.status_code == 500
        assert "disk is full" in str(caught.value)
        assert [b.name for b in blobs.list_blobs("full")] == []
        assert list((small_disk / "state" / "tmp").iterdir()) == []  # no half blob left
        data = os.urandom(MiB)
        blobs.create_blob_from_bytes("full", "small.bin", data)
        assert blobs.get_blob_to_bytes("full", "small.bin").content == data


def fill_leaving(disk, free_mib: int):
    """A filler file taking all but about ``free_mib`` MiB of ``disk``."""
    filler = disk / "filler"
    with open(filler, "wb") as out, pytest.raises(OSError):
        while True:
            out.write(bytes(MiB))
            out.flush()
    os.truncate(filler, max(0, filler.stat().st_size - free_mib * MiB))
    return filler


def test_blocks_on_a_full_disk_fail_whole_and_commit_once_space_is_back(small_disk):
    from azure.storage.blob.models import BlobBlock, BlockListType

    with LocalCloud(small_disk / "state", port=0) as cloud:
        blobs = make_blob_service(cloud.connection)
        blobs.retry = no_retry
        blobs.create_container("full")
        old = os.urandom(MiB)
        blobs.create_blob_from_bytes("full", "model.bin", old)
        parts = [os.urandom(2 * MiB), os.urandom(2 * MiB)]
        blobs.put_block("full", "model.bin", parts[0], "YmxvY2sx")  # ids not named by offset:
        blobs.put_block("full", "model.bin", parts[1], "YmxvY2sy")  # the commit copies them

        filler = fill_leaving(small_disk, 8)
        # A block the disk cannot take with room to spare is refused before it is read.
        with pytest.raises(AzureHttpError) as caught:
            blobs.put_block("full", "model.bin", os.urandom(4 * MiB), "YmxvY2sz")
        assert caught.value.status_code == 500 and "disk is full" in str(caught.value)
        # So is a commit that must copy its blocks into a new file: the old blob stays.
        with pytest.raises(AzureHttpError) as caught:
            blobs.put_block_list(
                "full", "model.bin", [BlobBlock("YmxvY2sx"), BlobBlock("YmxvY2sy")]
            )
        assert caught.value.status_code == 500 and "disk is full" in str(caught.value)
        assert blobs.get_blob_to_bytes("full", "model.bin").content == old
        pending = blobs.get_block_list("full", "model.bin", block_list_type=BlockListType.All)
        assert sorted(b.id for b in pending.uncommitted_blocks) == ["YmxvY2sx", "YmxvY2sy"]
        assert list((small_disk / "state" / "tmp").iterdir()) == []

        filler.unlink()  # space again: the same commit succeeds
        blobs.put_block_list("full", "model.bin", [BlobBlock("YmxvY2sx"), BlobBlock("YmxvY2sy")])
        assert blobs.get_blob_to_bytes("full", "model.bin").content == b"".join(parts)
