"""What the store remembers between requests (existing containers and shares) never serves a
stale answer: a delete is seen by the next request of any client, a container or share made
again is the new one, and a restart remembers nothing the database does not hold."""

from __future__ import annotations

import threading

import pytest
from azure.common import AzureMissingResourceHttpError

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.store import Store

from ..conftest import make_blob_service, make_file_service


def test_a_container_deleted_by_one_client_is_gone_for_the_next_request_of_another(local_cloud):
    writer = make_blob_service(local_cloud.connection)
    reader = make_blob_service(local_cloud.connection)
    writer.create_container("again", metadata={"round": "one"})
    writer.create_blob_from_bytes("again", "a.txt", b"first")
    first = reader.get_container_properties("again")  # remembered from here on
    assert reader.get_blob_to_bytes("again", "a.txt").content == b"first"
    assert writer.delete_container("again") is True
    assert reader.exists("again") is False
    with pytest.raises(AzureMissingResourceHttpError, match="ContainerNotFound"):
        reader.get_blob_to_bytes("again", "a.txt")
    writer.create_container("again", metadata={"round": "two"})
    second = reader.get_container_properties("again")
    assert second.metadata == {"round": "two"}
    assert second.properties.etag != first.properties.etag
    assert reader.exists("again", "a.txt") is False  # the old container's blob went with it


def test_a_share_deleted_by_one_client_is_gone_for_the_next_request_of_another(local_cloud):
    writer = make_file_service(local_cloud.connection)
    reader = make_file_service(local_cloud.connection)
    writer.create_share("again")
    writer.create_file_from_bytes("again", None, "a.txt", b"first")
    assert reader.get_file_to_bytes("again", None, "a.txt").content == b"first"
    assert writer.delete_share("again") is True
    assert reader.exists("again") is False
    with pytest.raises(AzureMissingResourceHttpError, match="ShareNotFound"):
        reader.get_file_to_bytes("again", None, "a.txt")
    writer.create_share("again")
    assert reader.exists("again", None, "a.txt") is False
    assert [entry.name for entry in reader.list_directories_and_files("again")] == []


def test_a_restart_remembers_only_what_the_database_holds(tmp_path):
    state = tmp_path / "state"
    with LocalCloud(state) as cloud:
        blobs = make_blob_service(cloud.connection)
        blobs.create_container("kept")
        blobs.create_container("dropped")
        blobs.create_blob_from_bytes("kept", "a.txt", b"kept")
        assert blobs.exists("dropped") is True
    with LocalCloud(state) as cloud:
        blobs = make_blob_service(cloud.connection)
        assert blobs.get_blob_to_bytes("kept", "a.txt").content == b"kept"
        assert blobs.delete_container("dropped") is True
    with LocalCloud(state) as cloud:
        blobs = make_blob_service(cloud.connection)
        assert [c.name for c in blobs.list_containers()] == ["kept"]
        assert blobs.exists("dropped") is False
        assert blobs.create_container("dropped") is True


def test_a_container_made_inside_a_rolled_back_transaction_is_not_remembered(tmp_path):
    store = Store(tmp_path)
    try:
        with pytest.raises(RuntimeError), store.transaction():
            assert store.create_container("undone") is True
            assert store.get_container("undone") is not None  # seen inside the transaction
            raise RuntimeError("roll back")
        assert store.get_container("undone") is None
        assert store.container_dir("undone") is None
    finally:
        store.close()


def test_reads_outside_a_transaction_see_the_last_commit_and_do_not_wait_for_one(tmp_path):
    store = Store(tmp_path)
    try:
        store.create_share("seen", 5)
        arm_id = "/subscriptions/s/resourceGroups/rg"
        store.put_resource(arm_id, "Microsoft.Resources/resourceGroups", "rg", {"v": 1})
        inside, done = threading.Event(), threading.Event()
        seen = {}

        def writer():
            with store.transaction():
                store.put_resource(arm_id, "Microsoft.Resources/resourceGroups", "rg", {"v": 2})
                assert store.get_resource(arm_id).body == {"v": 2}  # its own write
                inside.set()
                done.wait(10)

        thread = threading.Thread(target=writer)
        thread.start()
        assert inside.wait(10)
        seen["during"] = store.get_resource(arm_id).body  # answered while the writer holds on
        done.set()
        thread.join(10)
        assert seen["during"] == {"v": 1}
        assert store.get_resource(arm_id).body == {"v": 2}
        assert store.integrity_check() == "ok"
    finally:
        store.close()


GROUP = "/subscriptions/s/resourceGroups/rg"
GROUP_TYPE = "Microsoft.Resources/resourceGroups"


def test_a_resource_read_is_never_older_than_the_last_write(tmp_path):
    store = Store(tmp_path)
    try:
        store.put_resource(GROUP, GROUP_TYPE, "rg", {"v": 1})
        store.put_resource(f"{GROUP}/providers/X/w/one", "X/w", "one", {"v": 1})
        assert store.get_resource(GROUP).body == {"v": 1}  # remembered from here on
        store.get_resource(GROUP).body["v"] = "changed by a caller"  # a copy: not remembered
        assert store.get_resource(GROUP).body == {"v": 1}
        store.put_resource(GROUP.upper(), GROUP_TYPE, "rg", {"v": 2})
        assert store.get_resource(GROUP).body == {"v": 2}
        with pytest.raises(RuntimeError), store.transaction():
            store.put_resource(GROUP, GROUP_TYPE, "rg", {"v": 3})
            assert store.get_resource(GROUP).body == {"v": 3}
            raise RuntimeError("roll back")
        assert store.get_resource(GROUP).body == {"v": 2}
        assert store.get_resource(f"{GROUP}/providers/X/w/one").body == {"v": 1}
        assert store.delete_resource_tree(GROUP) == 2
        assert store.get_resource(GROUP) is None
        assert store.get_resource(f"{GROUP}/providers/X/w/one") is None
        store.put_resource(GROUP, GROUP_TYPE, "rg", {"v": 4})
        assert store.get_resource(GROUP).body == {"v": 4}
        assert store.delete_resource(GROUP) is True
        assert store.get_resource(GROUP) is None
    finally:
        store.close()


def test_a_row_read_while_a_write_commits_is_not_remembered(tmp_path, monkeypatch):
    """The race a remembered row must not lose: a read fetches the old row, a write commits and
    forgets, then the read would remember the old row for good."""
    store = Store(tmp_path)
    try:
        store.put_resource(GROUP, GROUP_TYPE, "rg", {"v": 1})
        query = store._query
        raced = []

        def query_then_let_a_write_commit(sql, args=()):
            rows = query(sql, args)
            if not raced and threading.current_thread() is threading.main_thread():
                raced.append(True)
                writer = threading.Thread(
                    target=store.put_resource, args=(GROUP, GROUP_TYPE, "rg", {"v": 2})
                )
                writer.start()
                writer.join(10)
            return rows

        monkeypatch.setattr(store, "_query", query_then_let_a_write_commit)
        assert store.get_resource(GROUP).body == {"v": 1}  # read before the write committed
        assert raced
        assert store.get_resource(GROUP).body == {"v": 2}
    finally:
        store.close()


def test_arm_clients_see_each_others_changes_at_once(local_cloud):
    from ..conftest import make_resource_client

    first = make_resource_client(local_cloud.connection)
    second = make_resource_client(local_cloud.connection)
    first.resource_groups.create_or_update("shared", {"location": "eastus", "tags": {"n": "1"}})
    assert second.resource_groups.get("shared").tags == {"n": "1"}
    first.resource_groups.create_or_update("shared", {"location": "eastus", "tags": {"n": "2"}})
    assert second.resource_groups.get("shared").tags == {"n": "2"}
    first.resource_groups.delete("shared").wait()
    assert second.resource_groups.check_existence("shared") is False
