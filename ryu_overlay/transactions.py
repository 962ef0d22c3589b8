"""Several placement changes as one: ``POST /v1/transactions``.

The operations run in order on the state path, each through the same controller method as its
single REST route, so each is checked against the state the earlier ones left. While they
run, ``Controller.begin`` holds back what they would write, send and announce; once all are
accepted, ``Controller.end`` makes it one store write (one ticket: durable together or not at
all), one batch of flows per switch, and their events. If one is refused, the earlier ones are
undone in memory, in reverse order, from the objects they replaced; nothing was written, sent
or announced, so nothing else is left to undo.

A collection plugs in with one entry of ``KINDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .controller import Batches, Controller
from .events import MAX_WAIT
from .model import BadRequest, OverlayError
from .topology import Topology

DEFAULT_WAIT = 30.0  # seconds a transaction with "wait": "hv" waits for the switches by default


@dataclass(frozen=True)
class Kind:
    """How a transaction changes one collection, and how it undoes that change in memory."""

    objects: Callable[[Topology], dict[str, Any]]
    put: Callable[[Controller, str, Any], tuple[bool, Any, Batches]]
    delete: Callable[[Controller, str], Batches]
    restore: Callable[[Topology, Any], Any]
    remove: Callable[[Topology, str], Any]


KINDS: dict[str, Kind] = {
    "hypervisors": Kind(lambda t: t.hypervisors, Controller.put_hypervisor, Controller.delete_hypervisor,
                        Topology.put_hypervisor, Topology.delete_hypervisor),
    "networks": Kind(lambda t: t.networks, Controller.put_network, Controller.delete_network,
                     Topology.put_network, Topology.delete_network),
    "ports": Kind(lambda t: t.ports, Controller.put_port, Controller.delete_port,
                  Topology.put_port, Topology.delete_port),
    "routers": Kind(lambda t: t.routers, Controller.put_router, Controller.delete_router,
                    Topology.put_router, Topology.delete_router),
}


@dataclass(frozen=True)
class Operation:
    index: int
    op: str
    kind: str
    name: str
    body: Any = None

    def describe(self) -> str:
        return f"operation {self.index} ({self.op} {self.kind} {self.name})"


@dataclass(frozen=True)
class Transaction:
    operations: tuple[Operation, ...]
    wait: bool
    timeout: float


class OperationFailed(OverlayError):
    """One operation was refused; the whole transaction changed nothing. Its status is the operation's."""

    def __init__(self, index: int | None, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.index = index
        self.status = status


def parse_transaction(body: Any) -> Transaction:
    if not isinstance(body, dict):
        raise BadRequest("a transaction is a JSON object with \"operations\"")
    unknown = sorted(set(body) - {"operations", "wait", "timeout"})
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}")
    ops = body.get("operations")
    if not isinstance(ops, list):
        raise BadRequest("\"operations\" must be a list")
    if "wait" in body and body["wait"] != "hv":
        raise BadRequest("\"wait\" must be \"hv\" or absent")
    timeout = body.get("timeout", DEFAULT_WAIT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout <= MAX_WAIT:
        raise BadRequest(f"\"timeout\" must be a number of seconds from 0 to {MAX_WAIT:.0f}")
    return Transaction(tuple(_operation(i, op) for i, op in enumerate(ops)), "wait" in body, float(timeout))


def _operation(index: int, op: Any) -> Operation:
    def refuse(message: str) -> OperationFailed:
        return OperationFailed(index, f"operation {index}: {message}")

    if not isinstance(op, dict):
        raise refuse("must be an object with \"op\", \"kind\" and \"name\"")
    verb, kind, name = op.get("op"), op.get("kind"), op.get("name")
    if verb not in ("put", "delete"):
        raise refuse("\"op\" must be \"put\" or \"delete\"")
    if not isinstance(kind, str) or kind not in KINDS:
        raise refuse(f"\"kind\" must be one of {', '.join(KINDS)}")
    if not isinstance(name, str):
        raise refuse("\"name\" must be a string")
    allowed = {"op", "kind", "name", "body"} if verb == "put" else {"op", "kind", "name"}
    unknown = sorted(set(op) - allowed)
    if unknown:
        raise refuse(f"unknown field(s) {', '.join(unknown)}")
    if verb == "put" and "body" not in op:
        raise refuse("a put needs a \"body\"")
    return Operation(index, verb, kind, name, op.get("body"))


def run(c: Controller, tx: Transaction,
        check: Callable[[Operation, Any], None] | None = None) -> tuple[list[dict[str, Any]], Batches]:
    """Apply every operation or none; on the state path. The results are what each single route
    would have answered, with its status. ``check(op, the object it replaces)`` may refuse an
    operation before it is applied (a tenant token's scope, ``auth.authorize``)."""
    done: list[tuple[Kind, str, Any]] = []  # (kind, name, the object it replaced or None)
    results: list[dict[str, Any]] = []
    c.begin()
    try:
        for op in tx.operations:
            kind = KINDS[op.kind]
            replaced = kind.objects(c.topo).get(op.name)
            try:
                if check is not None:
                    check(op, replaced)
                results.append(_apply(c, kind, op))
            except OverlayError as exc:
                raise OperationFailed(op.index, f"{op.describe()}: {exc}", exc.status) from None
            done.append((kind, op.name, replaced))
        batches = c.end(commit=True)
    except BaseException:
        if c.in_transaction:
            c.end(commit=False)
        _undo(c.topo, done)
        raise
    return results, batches


def _apply(c: Controller, kind: Kind, op: Operation) -> dict[str, Any]:
    result = {"op": op.op, "kind": op.kind, "name": op.name}
    if op.op == "delete":
        kind.delete(c, op.name)
        return {**result, "status": 204, "body": None}
    created, obj, _ = kind.put(c, op.name, op.body)
    return {**result, "status": 201 if created else 200, "body": c.object_json(obj)}


def _undo(topo: Topology, done: list[tuple[Kind, str, Any]]) -> None:
    for kind, name, replaced in reversed(done):
        if replaced is not None:
            kind.restore(topo, replaced)
        elif name in kind.objects(topo):
            kind.remove(topo, name)
