"""The local cloud's only state: SQLite for records, plain files for share contents.

Layout of a state directory::

    localcloud.sqlite3   settings (credentials, signing secret), resource records,
                         shares, long-running operations
    shares/<share>/...   the contents of each Azure Files share, as ordinary files
    containers/<c>/...   the committed blobs of each Blob container, as ordinary files
                         (blob name "a/b" is the file a/b), so a blob mount is a link to it
    blocks/<c>/...       uncommitted blocks (Put Block), until Put Block List commits them
    tmp/                 files being written; renamed into shares/ when complete,
                         so a crash never leaves a half-written file under its final name
    journal/             Put Range bodies received in full and not yet copied into their
                         file; replayed at start, so a range is in its file all or not at all
    trash/               shares being deleted (renamed here first, then removed), and
                         replaced or deleted files and blobs being freed in the background
                         (trash.py)
    tls/                 the CA and server certificate (see certs.py)

Resource records are generic so that every REST surface (ARM resource groups, Microsoft.BatchAI,
...) can keep its resources here without changing this module: a record is keyed by its
lower-cased ARM id and carries its type, its subscription and resource group (lower-cased, for
cascading deletes), a JSON body and free-form JSON ``extra`` data the body must not show (for
example secrets the service keeps but never returns).

One SQLite connection, behind a re-entrant lock, makes every change: each public method that
writes is one transaction, and ``transaction()`` groups several into one read-modify-write.
Reads outside a transaction go to a small pool of read connections instead and take no lock
(WAL lets them read the last committed state while a transaction is open): under many clients,
request threads queued on that one lock for what were single-row reads. A read inside a
transaction uses the transaction's own connection, so it sees the transaction's writes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .crashpoints import crash_point
from .trash import Trash

DATABASE_FILE = "localcloud.sqlite3"
SHARES_DIR = "shares"
TMP_DIR = "tmp"
CONTAINERS_DIR = "containers"
BLOCKS_DIR = "blocks"
TRASH_DIR = "trash"
JOURNAL_DIR = "journal"
COPY_BLOCK = 1024 * 1024
READERS = 8  # read connections at most; past that, a read shares the writing connection
REMEMBERED_ROWS = 1024  # resource rows kept in memory at most (get_resource)
SLOT_PREFIX = "slot-"  # journal slots (Store.commit_range)
SLOT_KEEP_BYTES = 1024 * 1024  # a slot keeps its disk space between records up to this size
_SLOT_MAGIC = b"LCRANGE1"
_SLOT_HEAD = struct.Struct("<8sIQI")  # magic, header length, data length, CRC-32 of both
_VOID = bytes(8)  # written over a record's magic once its range is in its file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    id             TEXT PRIMARY KEY,     -- lower-cased ARM id
    type           TEXT NOT NULL,        -- e.g. Microsoft.Resources/resourceGroups
    subscription   TEXT NOT NULL,        -- lower-cased
    resource_group TEXT,                 -- lower-cased; NULL for subscription-level records
    name           TEXT NOT NULL,        -- as the client first spelled it
    body           TEXT NOT NULL,        -- JSON the REST surface returns
    extra          TEXT NOT NULL,        -- JSON the REST surface keeps but never returns
    created        REAL NOT NULL,
    updated        REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_by_group ON resources (subscription, resource_group);
CREATE INDEX IF NOT EXISTS resources_by_type ON resources (type);
CREATE TABLE IF NOT EXISTS shares (
    name     TEXT PRIMARY KEY,
    created  REAL NOT NULL,
    quota    INTEGER NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS file_properties (
    share TEXT NOT NULL,
    path  TEXT NOT NULL,                 -- "dir/sub/file" inside the share
    props TEXT NOT NULL,                 -- JSON: content settings and metadata
    PRIMARY KEY (share, path)
);
CREATE TABLE IF NOT EXISTS file_names (  -- names too long for the disk (files/names.py)
    share     TEXT NOT NULL,
    parent    TEXT NOT NULL,             -- the directory's path as stored on disk ("" the root)
    disk_name TEXT NOT NULL,             -- the entry's hashed name on disk
    name      TEXT NOT NULL,             -- the name the client created it with
    PRIMARY KEY (share, parent, disk_name)
);
CREATE TABLE IF NOT EXISTS blob_containers (
    name     TEXT PRIMARY KEY,
    created  REAL NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_properties (
    container TEXT NOT NULL,
    name      TEXT NOT NULL,             -- the blob's name ("dir/sub/blob")
    props     TEXT NOT NULL,             -- JSON: content settings, metadata, committed blocks
    PRIMARY KEY (container, name)
);
CREATE TABLE IF NOT EXISTS operations (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,           -- InProgress | Succeeded | Failed | Canceled
    resource_id TEXT,
    started     REAL NOT NULL,
    ended       REAL,
    body        TEXT NOT NULL            -- JSON: error or result details
);
"""


class StoreError(Exception):
    """A store operation that cannot be done as asked (the message says why)."""


@dataclass(frozen=True)
class ResourceRecord:
    """One stored resource. ``id`` is lower-cased; ``body`` is what the API returns."""

    id: str
    type: str
    subscription: str
    resource_group: str | None
    name: str
    body: dict
    extra: dict
    created: float
    updated: float


@dataclass(frozen=True)
class ShareRecord:
    name: str
    created: float
    quota: int
    metadata: dict


@dataclass(frozen=True)
class ContainerRecord:
    name: str
    created: float
    metadata: dict


@dataclass(frozen=True)
class OperationRecord:
    id: str
    kind: str
    status: str
    resource_id: str | None
    started: float
    ended: float | None
    body: dict


def parse_arm_id(arm_id: str) -> tuple[str, str | None]:
    """Return (subscription, resource group or None), lower-cased, from an ARM id.

    >>> parse_arm_id('/subscriptions/S/resourceGroups/RG/providers/X/y/z')
    ('s', 'rg')
    """
    parts = arm_id.strip("/").split("/")
    if len(parts) < 2 or parts[0].lower() != "subscriptions":
        raise StoreError(f"not an ARM id (it must start with /subscriptions/<id>): {arm_id!r}")
    subscription = parts[1].lower()
    group = parts[3].lower() if len(parts) >= 4 and parts[2].lower() == "resourcegroups" else None
    return subscription, group


class Store:
    """Everything the local cloud remembers, under one state directory."""

    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir).resolve()
        self.shares_root = self.state_dir / SHARES_DIR
        self.tmp_root = self.state_dir / TMP_DIR
        self.trash_root = self.state_dir / TRASH_DIR
        self.journal_root = self.state_dir / JOURNAL_DIR
        self.containers_root = self.state_dir / CONTAINERS_DIR
        self.blocks_root = self.state_dir / BLOCKS_DIR
        for folder in (
            self.state_dir,
            self.shares_root,
            self.tmp_root,
            self.trash_root,
            self.journal_root,
            self.containers_root,
            self.blocks_root,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        self.trash = Trash(self.trash_root)
        self._lock = threading.RLock()
        self._share_dirs: dict[str, Path] = {}  # existing shares (see share_dir)
        self._containers: dict[str, ContainerRecord] = {}  # existing containers (get_container)
        self._free_slots: list[int] = []  # journal slots not in use (list ops are atomic)
        self._slot_count = 0
        database = self.state_dir / DATABASE_FILE
        # It holds the client secret, storage key and token signing key: owner-only, like
        # connection.json (SQLite gives its -wal/-shm files the same mode).
        os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(database, 0o600)
        self._db = sqlite3.connect(str(database), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a crash of this process (not of the OS) without an fsync
        # per commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._depth = 0
        self._owner: int | None = None  # the thread whose transaction is open
        self._database = database
        self._readers: list[sqlite3.Connection] = []  # idle read connections (pop/append atomic)
        self._reader_count = 0
        self._readers_lock = threading.Lock()
        # committed resource rows by id, for get_resource: emptied after every transaction that
        # wrote a resource (committed or not); a read fills in only if no such transaction
        # ended while it read (the generation tells)
        self._rows: dict[str, tuple] = {}
        self._rows_lock = threading.Lock()
        self._rows_generation = 0
        self._rows_dirty = False
        self._closed = False
        self._recover_files()

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self.trash.close()
        with self._lock, self._readers_lock:
            self._closed = True
            while self._readers:
                self._readers.pop().close()
            self._db.close()  # last: the writing connection folds the WAL into the database
        while self._free_slots:
            with contextlib.suppress(OSError, IndexError):
                os.close(self._free_slots.pop())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group store calls into one atomic read-modify-write (re-entrant)."""
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
                self._owner = threading.get_ident()
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    try:
                        self._db.execute("ROLLBACK")
                    finally:
                        self._forget_rows()
                raise
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                try:
                    self._db.execute("COMMIT")
                finally:
                    self._forget_rows()

    def _forget_rows(self) -> None:
        """After a transaction that wrote resources ends: the remembered rows go (under the
        store's lock, so no other transaction runs meanwhile)."""
        if self._rows_dirty:
            with self._rows_lock:
                self._rows.clear()
                self._rows_generation += 1
            self._rows_dirty = False

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a transaction: undo only this block's changes if it raises (the error still
        propagates), so one bad record cannot roll back a whole scheduler pass."""
        with self.transaction():
            name = f"sp{self._depth}"
            self._db.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                self._db.execute(f"ROLLBACK TO {name}")
                self._db.execute(f"RELEASE {name}")
                raise
            self._db.execute(f"RELEASE {name}")

    def integrity_check(self) -> str:
        """SQLite's own verdict on the database file ("ok" when sound)."""
        return self._query("PRAGMA integrity_check")[0][0]

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        if self._owner != threading.get_ident():  # not inside this thread's own transaction
            reader = self._take_reader()
            if reader is not None:
                try:
                    return reader.execute(sql, args).fetchall()
                finally:
                    self._give_back(reader)
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _give_back(self, reader: sqlite3.Connection) -> None:
        self._readers.append(reader)
        if self._closed:  # the store closed while this read ran
            with self._readers_lock:
                while self._readers:
                    self._readers.pop().close()

    def _take_reader(self) -> sqlite3.Connection | None:
        """An idle read connection, opened on first need; None when READERS are all busy."""
        try:
            return self._readers.pop()
        except IndexError:
            pass
        with self._readers_lock:  # not the store's lock: a transaction may hold that one
            if self._reader_count >= READERS or self._closed:
                return None
            self._reader_count += 1
        reader = sqlite3.connect(str(self._database), check_same_thread=False, isolation_level=None)
        reader.execute("PRAGMA query_only=ON")
        return reader

    def _execute(self, sql: str, args: tuple = ()) -> int:
        with self.transaction():
            return self._db.execute(sql, args).rowcount

    def _recover_files(self) -> None:
        """Finish or drop what a crash left half-done: complete ranges are copied into their
        files; unfinished temp files and half-deleted shares go."""
        for entry in sorted(self.journal_root.iterdir()):
            self._apply_range(entry)
        for leftover in list(self.tmp_root.iterdir()) + list(self.trash_root.iterdir()):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    leftover.unlink()

    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def setting(self, key: str, make_default) -> str:
        """The stored value of ``key``; on first use store and return ``make_default()``."""
        with self.transaction():
            value = self.get_setting(key)
            if value is None:
                value = make_default()
                self._db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (key, value))
            return value

    def set_setting(self, key: str, value: str) -> None:
        self._execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ resources

    def put_resource(
        self, arm_id: str, type: str, name: str, body: dict, extra: dict | None = None
    ) -> ResourceRecord:
        """Create or replace the record for ``arm_id`` (matched case-insensitively).

        The first spelling of ``name`` and the creation time are kept on replace.
        """
        key = arm_id.lower()
        subscription, group = parse_arm_id(arm_id)
        now = time.time()
        with self.transaction():
            self._rows_dirty = True
            old = self.get_resource(key)
            created = old.created if old else now
            stored_name = old.name if old else name
            extra = extra if extra is not None else (old.extra if old else {})
            self._db.execute(
                "INSERT OR REPLACE INTO resources "
                "(id, type, subscription, resource_group, name, body, extra, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    type,
                    subscription,
                    group,
                    stored_name,
                    json.dumps(body),
                    json.dumps(extra),
                    created,
                    now,
                ),
            )
        return ResourceRecord(
            key, type, subscription, group, stored_name, body, extra, created, now
        )

    def get_resource(self, arm_id: str) -> ResourceRecord | None:
        """The record of ``arm_id``, or None.

        Asked several times by every ARM request (its resource group, workspace, cluster, ...),
        so committed rows are remembered; each call still decodes its own copy of the body, so
        a caller may change what it gets."""
        key = arm_id.lower()
        if self._owner == threading.get_ident():  # inside this thread's transaction: its view
            rows = self._query(_SELECT_RESOURCE, (key,))
            return _resource(rows[0]) if rows else None
        row = self._rows.get(key)
        if row is None:
            generation = self._rows_generation
            rows = self._query(_SELECT_RESOURCE, (key,))
            if not rows:
                return None
            row = rows[0]
            with self._rows_lock:
                if generation == self._rows_generation:  # no resource write ended meanwhile
                    if len(self._rows) >= REMEMBERED_ROWS:
                        self._rows.clear()
                    self._rows[key] = row
        return _resource(row)

    def list_resources(
        self,
        type: str | None = None,
        parent_id: str | None = None,
        subscription: str | None = None,
        resource_group: str | None = None,
    ) -> list[ResourceRecord]:
        """Records matching every given filter, oldest first.

        ``parent_id`` selects records whose id lies below that id (any depth);
        ``type`` is compared case-insensitively.
        """
        sql = (
            "SELECT id, type, subscription, resource_group, name, body, extra, created, updated "
            "FROM resources WHERE 1=1"
        )
        args: list = []
        if type is not None:
            sql += " AND lower(type) = ?"
            args.append(type.lower())
        if parent_id is not None:
            prefix = parent_id.lower().rstrip("/") + "/"
            sql += " AND substr(id, 1, ?) = ?"
            args += [len(prefix), prefix]
        if subscription is not None:
            sql += " AND subscription = ?"
            args.append(subscription.lower())
        if resource_group is not None:
            sql += " AND resource_group = ?"
            args.append(resource_group.lower())
        sql += " ORDER BY created, id"
        return [_resource(row) for row in self._query(sql, tuple(args))]

    def resource_fields(self, type: str, *paths: str) -> list[tuple]:
        """(id, name, *the body's values at JSON ``paths``) of every record of ``type``, oldest
        first, without decoding whole records (the portal's overview of 1,000 jobs)."""
        rows = self._query(
            f"SELECT id, name, json_extract(body{', ?' * len(paths)}) FROM resources "
            "WHERE lower(type) = ? ORDER BY created, id",
            (*paths, type.lower()),
        )
        if len(paths) == 1:
            return rows
        return [(row[0], row[1], *json.loads(row[2])) for row in rows]

    def delete_resource(self, arm_id: str) -> bool:
        """Delete one record; True if it existed."""
        with self.transaction():
            self._rows_dirty = True
            return (
                self._db.execute("DELETE FROM resources WHERE id = ?", (arm_id.lower(),)).rowcount
                > 0
            )

    def delete_resource_tree(self, arm_id: str) -> int:
        """Delete a record and every record below it; returns how many went."""
        key = arm_id.lower().rstrip("/")
        prefix = key + "/"
        with self.transaction():
            self._rows_dirty = True
            return self._db.execute(
                "DELETE FROM resources WHERE id = ? OR substr(id, 1, ?) = ?",
                (key, len(prefix), prefix),
            ).rowcount

    # ------------------------------------------------------------------ operations

    def create_operation(
        self,
        kind: str,
        resource_id: str | None = None,
        status: str = "InProgress",
        body: dict | None = None,
    ) -> OperationRecord:
        """Record a long-running operation; its id is what a status URL carries."""
        op = OperationRecord(
            str(uuid.uuid4()),
            kind,
            status,
            resource_id,
            time.time(),
            None if status == "InProgress" else time.time(),
            body or {},
        )
        self._execute(
            "INSERT INTO operations (id, kind, status, resource_id, started, ended, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (op.id, op.kind, op.status, op.resource_id, op.started, op.ended, json.dumps(op.body)),
        )
        return op

    def finish_operation(
        self, op_id: str, status: str = "Succeeded", body: dict | None = None
    ) -> None:
        self._execute(
            "UPDATE operations SET status = ?, ended = ?, body = ? WHERE id = ?",
            (status, time.time(), json.dumps(body or {}), op_id),
        )

    def get_operation(self, op_id: str) -> OperationRecord | None:
        rows = self._query(
            "SELECT id, kind, status, resource_id, started, ended, body FROM operations "
            "WHERE id = ?",
            (op_id.lower(),),
        )
        if not rows:
            return None
        row = rows[0]
        return OperationRecord(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]))

    # ------------------------------------------------------------------ shares

    def share_dir(self, name: str) -> Path | None:
        """The directory holding share ``name``'s contents, or None if there is no such share.

        Asked two or three times by every Azure Files request, so existing shares are
        remembered (filled and dropped under the store's lock, by delete_share)."""
        name = name.lower()
        found = self._share_dirs.get(name)
        if found is None:
            with self._lock:
                rows = self._db.execute("SELECT name FROM shares WHERE name = ?", (name,))
                row = rows.fetchone()
                if row is not None:
                    found = self._share_dirs[name] = self.shares_root / row[0]
        return found

    def get_share(self, name: str) -> ShareRecord | None:
        rows = self._query(
            "SELECT name, created, quota, metadata FROM shares WHERE name = ?", (name.lower(),)
        )
        return (
            ShareRecord(rows[0][0], rows[0][1], rows[0][2], json.loads(rows[0][3]))
            if rows
            else None
        )

    def list_shares(self) -> list[ShareRecord]:
        rows = self._query("SELECT name, created, quota, metadata FROM shares ORDER BY name")
        return [ShareRecord(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def create_share(self, name: str, quota: int, metadata: dict | None = None) -> bool:
        """Create a share; False if it already exists. ``name`` must already be validated."""
        name = name.lower()
        with self.transaction():
            if self.get_share(name):
                return False
            (self.shares_root / name).mkdir(exist_ok=True)
            self._db.execute(
                "INSERT INTO shares (name, created, quota, metadata) VALUES (?, ?, ?, ?)",
                (name, time.time(), quota, json.dumps(metadata or {})),
            )
        return True

    def delete_share(self, name: str) -> bool:
        """Delete a share and its contents; False if it did not exist."""
        name = name.lower()
        with self.transaction():
            if not self.get_share(name):
                return False
            self._db.execute("DELETE FROM shares WHERE name = ?", (name,))
            self._share_dirs.pop(name, None)
            self._db.execute("DELETE FROM file_properties WHERE share = ?", (name,))
            self._db.execute("DELETE FROM file_names WHERE share = ?", (name,))
            folder = self.shares_root / name
            doomed = self.trash_root / f"{name}-{uuid.uuid4().hex}"
            if folder.exists():
                os.replace(folder, doomed)  # gone from view at once, even if removal is interrupted
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    # ------------------------------------------------------------------ files

    def get_file_props(self, share: str, path: str) -> dict:
        """Content settings and metadata kept for a file ({} if none were given)."""
        rows = self._query(
            "SELECT props FROM file_properties WHERE share = ? AND path = ?", (share.lower(), path)
        )
        return json.loads(rows[0][0]) if rows else {}

    def set_file_props(self, share: str, path: str, props: dict) -> None:
        if props:
            self._execute(
                "INSERT OR REPLACE INTO file_properties (share, path, props) VALUES (?, ?, ?)",
                (share.lower(), path, json.dumps(props)),
            )
        else:
            self.delete_file_props(share, path)

    def delete_file_props(self, share: str, path: str) -> None:
        self._execute(
            "DELETE FROM file_properties WHERE share = ? AND path = ?", (share.lower(), path)
        )

    def remember_file_name(self, share: str, parent: str, disk_name: str, name: str) -> None:
        """Record the real name of an entry kept under a hashed disk name, before it is made
        (a record without its entry, left by a crash, is never shown and is overwritten)."""
        self._execute(
            "INSERT OR REPLACE INTO file_names (share, parent, disk_name, name) "
            "VALUES (?, ?, ?, ?)",
            (share.lower(), parent, disk_name, name),
        )

    def file_names(self, share: str, parent: str) -> dict[str, str]:
        """Disk name -> real name, for the entries of directory ``parent`` that have one."""
        rows = self._query(
            "SELECT disk_name, name FROM file_names WHERE share = ? AND parent = ?",
            (share.lower(), parent),
        )
        return dict(rows)

    def forget_file_name(self, share: str, parent: str, disk_name: str) -> None:
        self._execute(
            "DELETE FROM file_names WHERE share = ? AND parent = ? AND disk_name = ?",
            (share.lower(), parent, disk_name),
        )

    # ------------------------------------------------------------------ blob containers

    def container_dir(self, name: str) -> Path | None:
        """The directory holding container ``name``'s committed blobs, or None if there is none."""
        return self.containers_root / name if self.get_container(name) else None

    def get_container(self, name: str) -> ContainerRecord | None:
        """Container ``name``'s record, or None if there is no such container.

        Asked by every Blob request, and a container's record never changes once made (only
        create and delete write one), so existing containers are remembered: filled under the
        store's lock from committed rows only (never inside a transaction, which could still be
        rolled back), dropped by delete_container inside its transaction. The memory is the
        process's own, so a restart starts it empty."""
        found = self._containers.get(name)
        if found is not None:
            return found
        with self._lock:
            row = self._db.execute(
                "SELECT name, created, metadata FROM blob_containers WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                return None
            found = ContainerRecord(row[0], row[1], json.loads(row[2]))
            if self._depth == 0:
                self._containers[name] = found
        return found

    def list_containers(self) -> list[ContainerRecord]:
        rows = self._query("SELECT name, created, metadata FROM blob_containers ORDER BY name")
        return [ContainerRecord(r[0], r[1], json.loads(r[2])) for r in rows]

    def create_container(self, name: str, metadata: dict | None = None) -> bool:
        """Create a container; False if it already exists. ``name`` must already be validated."""
        with self.transaction():
            if self.get_container(name):
                return False
            (self.containers_root / name).mkdir(exist_ok=True)
            self._db.execute(
                "INSERT INTO blob_containers (name, created, metadata) VALUES (?, ?, ?)",
                (name, time.time(), json.dumps(metadata or {})),
            )
        return True

    def delete_container(self, name: str) -> bool:
        """Delete a container, its blobs and its uncommitted blocks; False if it did not exist."""
        doomed = []
        with self.transaction():
            if not self.get_container(name):
                return False
            self._db.execute("DELETE FROM blob_containers WHERE name = ?", (name,))
            self._containers.pop(name, None)
            self._db.execute("DELETE FROM blob_properties WHERE container = ?", (name,))
            for folder in (self.containers_root / name, self.blocks_root / name):
                if folder.exists():
                    doomed.append(self.trash_root / f"{folder.parent.name}-{uuid.uuid4().hex}")
                    os.replace(folder, doomed[-1])  # gone from view at once
        for folder in doomed:
            shutil.rmtree(folder, ignore_errors=True)
        return True

    def get_blob_props(self, container: str, name: str) -> dict:
        """Content settings, metadata and committed block list of a blob ({} if none kept)."""
        rows = self._query(
            "SELECT props FROM blob_properties WHERE container = ? AND name = ?", (container, name)
        )
        return json.loads(rows[0][0]) if rows else {}

    def set_blob_props(self, container: str, name: str, props: dict) -> None:
        self._execute(
            "INSERT OR REPLACE INTO blob_properties (container, name, props) VALUES (?, ?, ?)",
            (container, name, json.dumps(props)),
        )

    def delete_blob_props(self, container: str, name: str) -> None:
        self._execute(
            "DELETE FROM blob_properties WHERE container = ? AND name = ?", (container, name)
        )

    def temp_path(self) -> Path:
        """A fresh path on the same file system as the shares, for write-then-rename."""
        return self.tmp_root / f"write-{uuid.uuid4().hex}"

    def write_file_atomically(self, final_path: Path, chunks, size: int | None = None) -> int:
        """Write ``chunks`` (bytes or an iterable of bytes) to a temp file, then rename it to
        ``final_path``. ``size`` pre-sizes the file (zeros beyond the data) with its disk space
        reserved, so the ranges written into it later cannot find the disk full; a disk too full
        for it raises OSError(ENOSPC) and nothing appears.

        Readers see either the old file or the complete new one, never a partial write.
        """
        temp = self.temp_path()
        written = 0
        try:
            with open(temp, "wb") as out:
                if isinstance(chunks, (bytes, bytearray, memoryview)):
                    chunks = [chunks]
                for chunk in chunks:
                    out.write(chunk)
                    written += len(chunk)
                if size is not None and size > written:
                    _reserve(out.fileno(), written, size)
            self.trash.replace(temp, final_path)  # a replaced file is freed in the background
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return written

    # ------------------------------------------------------------------ ranges

    def free_bytes(self) -> int:
        """Bytes free for the shares on the disk that holds them."""
        stats = os.statvfs(self.shares_root)
        return stats.f_bavail * stats.f_frsize

    def stage_range(
        self, target: Path, offset: int, stream, length: int, with_md5: bool = False
    ) -> StagedRange:
        """Read up to ``length`` bytes of ``stream`` (a request body the caller has bounded, at
        most 4 MiB) into memory, with their MD5 if asked; nothing is on disk yet. The caller
        checks the result, then calls ``commit_range`` (or drops it)."""
        staged = StagedRange(target, offset, bytearray(length))
        view = memoryview(staged.data)
        while staged.length < length:
            n = stream.readinto(view[staged.length :])
            if not n:
                break
            staged.length += n
        del staged.data[staged.length :]
        if with_md5:
            staged.md5 = hashlib.md5(staged.data).digest()
        return staged

    def commit_range(self, staged: StagedRange) -> None:
        """Make a staged range part of its file, all or nothing: it is written to a journal
        slot as one record whose checksum covers it all (the commit point: a record cut short
        by a crash or a full disk does not check out and is ignored), copied into the file,
        then the record is voided. A crash between is finished at the next start
        (``_recover_files``). Slots are files kept open and reused, so a range costs three
        writes and no file created, renamed or deleted."""
        header = json.dumps({"path": str(staged.target), "offset": staged.offset}).encode()
        data = memoryview(staged.data)
        checksum = zlib.crc32(data, zlib.crc32(header))
        record = _SLOT_HEAD.pack(_SLOT_MAGIC, len(header), len(data), checksum) + header
        slot = self._take_slot()
        try:
            _write_all(slot, [record, data])
        except BaseException:
            with contextlib.suppress(OSError):
                os.pwrite(slot, _VOID, 0)
            self._free_slots.append(slot)
            raise
        crash_point("put-range.journaled")
        self._copy_range(staged.target, staged.offset, data)  # on failure the slot stays
        if len(data) > SLOT_KEEP_BYTES:  # (held, replayed at the next start)
            os.ftruncate(slot, 0)  # an empty slot holds no record; a big one's space goes back
        else:
            os.pwrite(slot, _VOID, 0)
        self._free_slots.append(slot)

    def _take_slot(self) -> int:
        """A free journal slot (an open file descriptor), made on first need."""
        try:
            return self._free_slots.pop()
        except IndexError:
            pass
        with self._lock:
            self._slot_count += 1
            number = self._slot_count
        return os.open(self.journal_root / f"{SLOT_PREFIX}{number}", os.O_RDWR | os.O_CREAT, 0o600)

    def _copy_range(self, target: Path, offset: int, data) -> None:
        if self.shares_root not in target.parents or target.is_symlink() or not target.is_file():
            return  # the file went meanwhile (deleted): the range goes with it
        with open(target, "r+b") as out:
            for start in range(0, len(data), COPY_BLOCK):
                os.pwrite(out.fileno(), data[start : start + COPY_BLOCK], offset + start)
                crash_point("put-range.copying")

    def _apply_range(self, entry: Path) -> None:
        """Replay one journal entry (at start, after a crash), then drop it."""
        if entry.name.startswith(SLOT_PREFIX):
            with open(entry, "rb") as journal:
                found = _read_slot(journal)
            if found is not None:
                self._copy_range(*found)
            entry.unlink()
            return
        with open(entry, "rb") as journal:  # a range journaled by an earlier version
            try:
                header = json.loads(journal.readline())
                target, offset = Path(header["path"]), int(header["offset"])
            except (ValueError, KeyError, TypeError):
                target = None  # cannot happen for a renamed entry; never write a guess
            if target is not None:
                self._copy_range(target, offset, journal.read())
        entry.unlink()


def _write_all(fd: int, pieces: list) -> None:
    """Write ``pieces`` one after another from the start of ``fd`` (short writes continued)."""
    offset = 0
    for piece in pieces:
        view = memoryview(piece)
        while view:
            done = os.pwrite(fd, view, offset)
            offset += done
            view = view[done:]


def _read_slot(journal) -> tuple[Path, int, bytes] | None:
    """(file, offset, data) of a journal slot's record if it is whole and checks out, else
    None (voided, or cut short when the process died while writing it)."""
    head = journal.read(_SLOT_HEAD.size)
    if len(head) < _SLOT_HEAD.size:
        return None
    magic, header_length, length, checksum = _SLOT_HEAD.unpack(head)
    if magic != _SLOT_MAGIC or header_length > 64 * 1024 or length > 64 * 1024 * 1024:
        return None
    header, data = journal.read(header_length), journal.read(length)
    if len(header) < header_length or len(data) < length:
        return None
    if zlib.crc32(data, zlib.crc32(header)) != checksum:
        return None
    try:
        fields = json.loads(header)
        return Path(fields["path"]), int(fields["offset"]), data
    except (ValueError, KeyError, TypeError):
        return None


def _reserve(fd: int, start: int, size: int) -> None:
    """Allocate the disk blocks of bytes [start, size) (reading as zeros), or raise ENOSPC;
    where the file system cannot allocate ahead, the file is only extended (sparse)."""
    try:
        os.posix_fallocate(fd, start, size - start)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        os.ftruncate(fd, size)


@dataclass
class StagedRange:
    """A Put Range body received in full (see ``Store.stage_range``)."""

    target: Path
    offset: int
    data: bytearray
    length: int = 0
    md5: bytes = b""


_SELECT_RESOURCE = (
    "SELECT id, type, subscription, resource_group, name, body, extra, created, updated "
    "FROM resources WHERE id = ?"
)


def _resource(row: tuple) -> ResourceRecord:
    return ResourceRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        json.loads(row[5]),
        json.loads(row[6]),
        row[7],
        row[8],
    )
