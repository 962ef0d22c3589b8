"""SqliteStore: atomic, durable writes and exact round trips."""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ryu_overlay.model import Hypervisor, Network, Port
from ryu_overlay.store import Delete, Put, SqliteStore

HV = Hypervisor("hv1", 0xFEDCBA9876543210, ipaddress.IPv4Address("198.18.0.1"), "vx-1")
HV2 = Hypervisor("hv2", 2, ipaddress.IPv4Address("198.18.0.2"))
NET = Network("blue", 16777215, "acme", (ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_network("fd00:1::/64")),
              1450, "drop")
NET2 = Network("red", 1, "globex")
LEARNED = Port("a1", "blue", "02:aa:00:00:00:01", (ipaddress.ip_address("10.1.0.1"), ipaddress.ip_address("fd00:1::1")),
               "hv1", "tapA1", "learned", 7, True)
UNLOCATED = Port("a2", "blue", "02:aa:00:00:00:02")
DECLARED = Port("a3", "red", "02:aa:00:00:00:03", (ipaddress.ip_address("fd00:9::3"),), "hv2", "tapA3", "declared")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "db.sqlite"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(str(db))
    yield s
    s.close()


def reopen(store: SqliteStore, db: Path) -> SqliteStore:
    store.close()
    return SqliteStore(str(db))


def test_wal_and_synchronous_full_are_set(store, db):
    assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)
    raw = sqlite3.connect(str(db))
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()


def test_pragmas_are_set_again_on_reopen(store, db):
    store.apply([Put(HV)])
    again = reopen(store, db)
    try:
        assert again._db.execute("PRAGMA synchronous").fetchone() == (2,)
        assert again._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        again.close()


def test_an_empty_store_loads_empty(store):
    assert store.load() == ([], [], [], [])


def test_every_field_round_trips_through_a_reopen(store, db):
    store.apply([Put(HV2), Put(HV), Put(NET2), Put(NET), Put(DECLARED), Put(UNLOCATED), Put(LEARNED)])
    again = reopen(store, db)
    try:
        assert again.load() == ([HV, HV2], [NET, NET2], [LEARNED, UNLOCATED, DECLARED], [])
        hvs, nets, ports, _ = again.load()
        assert [type(ip) for ip in ports[0].ips] == [ipaddress.IPv4Address, ipaddress.IPv6Address]
        assert isinstance(hvs[0].tunnel_ip, ipaddress.IPv4Address) and nets[1].mtu is None
    finally:
        again.close()


def test_put_replaces_and_delete_removes(store):
    store.apply([Put(NET), Put(NET2)])
    store.apply([Put(Network("blue", 9, "other")), Delete(Network, "red"), Delete(Network, "never-there")])
    assert store.load() == ([], [Network("blue", 9, "other")], [], [])


def test_a_put_then_delete_in_one_change_list_leaves_nothing(store):
    store.apply([Put(UNLOCATED), Delete(Port, "a2")])
    assert store.load() == ([], [], [], [])


def test_a_change_list_failing_midway_leaves_nothing(store, monkeypatch):
    store.apply([Put(NET2)])
    calls = {"n": 0}
    original = Port.to_json

    def flaky(self: Port) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return original(self)

    monkeypatch.setattr(Port, "to_json", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        store.apply([Put(NET), Put(UNLOCATED), Put(LEARNED), Delete(Network, "red")])
    monkeypatch.undo()
    assert calls["n"] == 2
    assert store.load() == ([], [NET2], [], [])
    store.apply([Put(HV)])
    assert store.load() == ([HV], [NET2], [], [])


def test_an_unknown_kind_midway_leaves_nothing(store):
    with pytest.raises(KeyError):
        store.apply([Put(HV), Delete(str, "x")])
    assert store.load() == ([], [], [], [])
    store.apply([Put(HV)])
    assert store.load()[0] == [HV]


class FailingCommit:
    """A connection whose next COMMIT fails, as a full disk or an I/O error would make it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.armed = True

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.armed:
            self.armed = False
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_failed_commit_leaves_nothing_and_the_store_usable(store, db):
    real = store._db
    store._db = FailingCommit(real)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        store.apply([Put(HV)])
    assert not real.in_transaction
    assert store.load() == ([], [], [], [])
    store.apply([Put(HV2)])
    store._db = real
    again = reopen(store, db)
    try:
        assert again.load() == ([HV2], [], [], [])
    finally:
        again.close()


def test_a_commit_is_visible_to_another_connection_at_once(store, db):
    store.apply([Put(NET)])
    raw = sqlite3.connect(str(db))
    try:
        assert raw.execute("SELECT name FROM networks").fetchall() == [("blue",)]
    finally:
        raw.close()


def test_a_writer_holding_the_lock_makes_apply_fail_without_partial_writes(store, db):
    other = sqlite3.connect(str(db), isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    try:
        store._db.execute("PRAGMA busy_timeout=0")
        with pytest.raises(sqlite3.OperationalError):
            store.apply([Put(HV)])
        assert not store._db.in_transaction
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.apply([Put(HV)])
    assert store.load()[0] == [HV]
