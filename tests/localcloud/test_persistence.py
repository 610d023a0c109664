"""State survives a restart byte for byte; a crash never exposes a half-written file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.store import Store
from tests.conftest import make_file_service, make_resource_client

MiB = 1024 * 1024


def test_restart_keeps_groups_shares_directories_and_files(tmp_path):
    state = tmp_path / "state"
    contents = {
        ("mnistcntksample", "Train-28x28_cntk_text.txt"): os.urandom(9 * MiB + 17),
        ("mnistcntksample", "ConvNet_MNIST.py"): b"print('train')\n",
        (None, "empty.txt"): b"",
        ("mnistcntksample/deeper", "weights.bin"): bytes(range(256)) * 1000,
    }
    with LocalCloud(state) as first:
        rm = make_resource_client(first.connection)
        rm.resource_groups.create_or_update(
            "myresourcegroup", {"location": "eastus", "tags": {"k": "v"}}
        )
        files = make_file_service(first.connection)
        files.create_share("batchaiquickstart")
        files.create_directory("batchaiquickstart", "mnistcntksample")
        files.create_directory("batchaiquickstart", "mnistcntksample/deeper")
        for (directory, name), data in contents.items():
            files.create_file_from_bytes(
                "batchaiquickstart", directory, name, data, max_connections=4
            )
        connection = dict(first.connection)

    with LocalCloud(state) as second:
        assert second.connection == connection
        rm = make_resource_client(second.connection)
        group = rm.resource_groups.get("myresourcegroup")
        assert (group.location, group.tags) == ("eastus", {"k": "v"})
        files = make_file_service(second.connection)
        assert files.exists("batchaiquickstart", "mnistcntksample/deeper")
        for (directory, name), data in contents.items():
            assert files.get_file_to_bytes("batchaiquickstart", directory, name).content == data


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from quickstart.localcloud.store import Store
    store = Store(sys.argv[1])
    store.create_share("crashy", 5120)
    final = store.share_dir("crashy") / "model.dnn"
    def chunks():
        while True:
            yield b"x" * 65536
            print("writing", flush=True)
            time.sleep(0.01)
    store.write_file_atomically(final, chunks())
""")


def test_write_killed_midway_never_appears_under_its_final_name(tmp_path):
    state = tmp_path / "state"
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(state)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        for _ in range(3):
            assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
    final = state / "shares" / "crashy" / "model.dnn"
    assert not final.exists()
    assert any((state / "tmp").iterdir())  # the partial write is only in tmp/
    store = Store(state)  # the next start clears it
    try:
        assert list((state / "tmp").iterdir()) == []
        assert store.share_dir("crashy") is not None and not final.exists()
    finally:
        store.close()


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    store = Store(tmp_path / "state")
    try:
        store.create_share("keep", 5120)
        final = store.share_dir("keep") / "f.txt"
        store.write_file_atomically(final, b"old complete contents")

        def broken():
            yield b"new half"
            raise OSError("disk full")

        try:
            store.write_file_atomically(final, broken())
        except OSError:
            pass
        assert final.read_bytes() == b"old complete contents"
        assert list((tmp_path / "state" / "tmp").iterdir()) == []
    finally:
        store.close()


def test_deleted_share_is_gone_after_restart(tmp_path):
    state = tmp_path / "state"
    with LocalCloud(state) as cloud:
        files = make_file_service(cloud.connection)
        files.create_share("transient")
        files.create_file_from_bytes("transient", None, "f", b"data")
        files.delete_share("transient")
    with LocalCloud(state) as cloud:
        assert make_file_service(cloud.connection).exists("transient") is False
        assert not (state / "shares" / "transient").exists()
