"""The Put Range journal's slots (Store.commit_range): a whole record is replayed after a crash,
a record cut short is ignored, and a voided one never overwrites later data."""

from __future__ import annotations

import io

import pytest

from quickstart.localcloud.store import SLOT_PREFIX, Store


@pytest.fixture
def store_and_file(tmp_path):
    store = Store(tmp_path / "state")
    target = store.shares_root / "share" / "f.bin"
    target.parent.mkdir()
    target.write_bytes(bytes(64))
    yield store, target, tmp_path / "state"
    store.close()


def _slots(state):
    return sorted((state / "journal").glob(f"{SLOT_PREFIX}*"))


def test_a_range_journaled_but_not_copied_is_finished_at_the_next_start(
    store_and_file, monkeypatch
):
    store, target, state = store_and_file
    staged = store.stage_range(target, 8, io.BytesIO(b"\xaa" * 16), 16)

    def dies(*args):
        raise RuntimeError("the process died here")

    monkeypatch.setattr(store, "_copy_range", dies)
    with pytest.raises(RuntimeError):
        store.commit_range(staged)
    assert target.read_bytes() == bytes(64)  # the file never saw it
    store.close()
    Store(state).close()  # the restart replays the slot
    assert target.read_bytes() == bytes(8) + b"\xaa" * 16 + bytes(40)
    assert _slots(state) == []


def test_a_record_cut_short_is_ignored_and_a_voided_one_never_replays(store_and_file, monkeypatch):
    store, target, state = store_and_file
    store.commit_range(store.stage_range(target, 0, io.BytesIO(b"\x01" * 32), 32))
    assert target.read_bytes() == b"\x01" * 32 + bytes(32)
    (slot,) = _slots(state)
    target.write_bytes(b"\x02" * 64)  # later data, e.g. from a job on the share
    store.close()
    Store(state).close()  # the voided record is not replayed over it
    assert target.read_bytes() == b"\x02" * 64
    # a whole record, then cut short as a crash mid-write leaves it: ignored
    store = Store(state)
    staged = store.stage_range(target, 0, io.BytesIO(b"\x03" * 32), 32)
    monkeypatch.setattr(store, "_copy_range", lambda *a: (_ for _ in ()).throw(RuntimeError()))
    with pytest.raises(RuntimeError):
        store.commit_range(staged)
    store.close()
    (slot,) = _slots(state)
    slot.write_bytes(slot.read_bytes()[:-5])
    Store(state).close()
    assert target.read_bytes() == b"\x02" * 64
    assert _slots(state) == []


def test_a_big_range_gives_its_slot_space_back(store_and_file):
    store, target, state = store_and_file
    size = 2 * 1024 * 1024
    with open(target, "r+b") as out:
        out.truncate(size)
    store.commit_range(store.stage_range(target, 0, io.BytesIO(b"\x05" * size), size))
    assert target.read_bytes() == b"\x05" * size
    (slot,) = _slots(state)
    assert slot.stat().st_size == 0  # not 2 MiB kept for the life of the server
