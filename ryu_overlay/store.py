"""Persistent placement state behind a small interface, with SQLite as the embedded default.

A write is a list of changes applied in one transaction, so a crash leaves the store before
or after a REST request, never in between. The controller serves reads from memory
(``topology.Topology``) and loads it from the store at start-up.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .model import (
    Hypervisor,
    Network,
    Port,
    Router,
    hypervisor_from_record,
    network_from_record,
    port_from_record,
    router_from_record,
)

Obj = Hypervisor | Network | Port | Router
KINDS: dict[type, str] = {Hypervisor: "hypervisors", Network: "networks", Port: "ports", Router: "routers"}
Loaded = tuple[list[Hypervisor], list[Network], list[Port], list[Router]]
# How a stored document of each kind becomes an object again; a new kind adds one entry here and in KINDS.
FROM_RECORD: dict[str, Callable[[dict[str, Any]], Obj]] = {
    "hypervisors": hypervisor_from_record, "networks": network_from_record, "ports": port_from_record,
    "routers": router_from_record}


@dataclass(frozen=True)
class Put:
    obj: Obj


@dataclass(frozen=True)
class Delete:
    kind: type
    name: str


Change = Put | Delete


class StoreUnavailable(Exception):
    """The store could not make a change durable, so the change was undone (HTTP 503)."""


def change_key(change: Change) -> tuple[str, str]:
    """(kind, name) of the object a change writes."""
    if isinstance(change, Put):
        return KINDS[type(change.obj)], change.obj.name
    return KINDS[change.kind], change.name


def document(obj: Obj) -> str:
    """The stored JSON document of an object, the same bytes in every store and on every instance."""
    return json.dumps(obj.to_json(), sort_keys=True)


class Store(Protocol):
    def load(self) -> Loaded: ...

    def apply(self, changes: Iterable[Change]) -> None:
        """Apply all ``changes`` atomically and durably, or none of them."""

    def close(self) -> None: ...


class SqliteStore:
    """One table per object kind, each row a JSON document keyed by name.

    The journal is a WAL with ``synchronous=FULL``: every commit is fsynced before
    ``apply`` returns, so an acknowledged REST write survives a crash or power loss (NORMAL
    would only keep the database consistent and could lose the last commits). WAL lets the
    file be read while a write is in progress and keeps each commit to one sequential write.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for table in KINDS.values():
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (name TEXT PRIMARY KEY, doc TEXT NOT NULL)")

    def load(self) -> Loaded:
        def rows(table: str) -> list[dict[str, Any]]:
            return [json.loads(doc) for (doc,) in self._db.execute(f"SELECT doc FROM {table} ORDER BY name")]

        hvs, nets, ports, routers = ([FROM_RECORD[kind](r) for r in rows(kind)] for kind in KINDS.values())
        return hvs, nets, ports, routers  # type: ignore[return-value]

    def apply(self, changes: Iterable[Change]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for change in changes:
                if isinstance(change, Put):
                    self._db.execute(
                        f"INSERT OR REPLACE INTO {KINDS[type(change.obj)]} (name, doc) VALUES (?, ?)",
                        (change.obj.name, document(change.obj)))
                else:
                    self._db.execute(f"DELETE FROM {KINDS[change.kind]} WHERE name = ?", (change.name,))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()
