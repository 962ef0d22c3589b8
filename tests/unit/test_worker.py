"""The single state path and the write-behind store: order of writes, and failed writes undone.

The path is driven as the Ryu app drives it (closures posted to one loop), with the REST app
on top and a real SQLite file under a store that can be told to fail or to hold a commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import eventlet
import eventlet.queue
import pytest

from ryu_overlay.controller import Batches, Controller
from ryu_overlay.model import Conflict, Port
from ryu_overlay.rest import RestApp
from ryu_overlay.store import Change, Put, SqliteStore, StoreUnavailable
from ryu_overlay.testing.rest_client import Api
from ryu_overlay.testing.scenario import kind
from ryu_overlay.worker import StatePath, WriteBehindStore

HV1 = {"dpid": 1, "tunnel_ip": "198.18.0.1"}
BLUE = {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24"]}


def port_body(i: int, hv: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"network": "blue", "mac": f"02:aa:00:00:00:{i:02x}", "ips": [f"10.1.0.{i}"]}
    if hv is not None:
        body.update(hypervisor=hv, interface=f"tap{i}")
    return body


class Flaky:
    """A SqliteStore whose commits can be held (until released) or made to fail."""

    def __init__(self, path: Path) -> None:
        self.inner = SqliteStore(str(path))
        self.fail = False
        self.hold = threading.Event()
        self.hold.set()
        self.holding = threading.Event()
        self.commits: list[list[Change]] = []

    def load(self) -> Any:
        return self.inner.load()

    def apply(self, changes: Iterable[Change]) -> None:
        changes = list(changes)
        self.holding.set()
        self.hold.wait(10)
        if self.fail:
            raise OSError("disk full")
        self.inner.apply(changes)
        self.commits.append(changes)

    def close(self) -> None:
        self.inner.close()


class Path1:
    """One green thread running posted closures in order: the Ryu app's event loop, in miniature."""

    def __init__(self) -> None:
        self.queue: eventlet.queue.LightQueue = eventlet.queue.LightQueue()
        self.thread = eventlet.spawn(self._loop)

    def post(self, fn: Callable[[], None]) -> None:
        self.queue.put(fn)

    def _loop(self) -> None:
        while True:
            self.queue.get()()


class Rig:
    def __init__(self, db: Path) -> None:
        self.flaky = Flaky(db)
        self.store = WriteBehindStore(self.flaky)
        self.controller = Controller(self.store)
        self.store.start()
        self.loop = Path1()
        self.emitted: list[Batches] = []
        self.path = StatePath(self.controller, self.loop.post, self.emitted.append)
        self.api = Api(RestApp(self.controller, self.emitted.append, run=self.path.call))

    def close(self) -> None:
        self.flaky.hold.set()
        self.loop.thread.kill()
        self.store.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path / "db.sqlite")
    try:
        yield r
    finally:
        r.close()


def wait_until(cond: Callable[[], bool]) -> None:
    for _ in range(5000):
        if cond():
            return
        eventlet.sleep(0.002)
    raise AssertionError("condition never held")


def test_writes_commit_in_order_and_queue_up_behind_a_slow_commit(rig: Rig) -> None:
    rig.flaky.hold.clear()
    rig.flaky.holding.clear()
    first = Port("p0", "blue", "02:aa:00:00:00:01", ())
    rig.store.apply([Put(first)])
    wait_until(rig.flaky.holding.is_set)  # the writer is inside the first commit
    later = [Port(f"p{i}", "blue", "02:aa:00:00:00:01", ()) for i in range(1, 50)]
    for port in later:
        rig.store.apply([Put(port)])
    ticket = rig.store.ticket()
    rig.flaky.hold.set()
    rig.store.wait(ticket)
    committed = [[c.obj.name for c in commit if isinstance(c, Put)] for commit in rig.flaky.commits]
    assert committed == [["p0"], [p.name for p in later]]


def test_a_request_is_answered_only_once_its_write_is_durable(rig: Rig) -> None:
    rig.flaky.hold.clear()
    rig.flaky.holding.clear()
    pending = eventlet.spawn(rig.api.put, "/v1/hypervisors/hv1", HV1)
    wait_until(rig.flaky.holding.is_set)
    assert not pending.dead and SqliteStore(str(rig.flaky.inner.path)).load()[0] == []
    assert rig.controller.topo.hypervisors  # applied in memory; the path went on
    rig.flaky.hold.set()
    assert pending.wait().status_int == 201
    assert [h.name for h in SqliteStore(str(rig.flaky.inner.path)).load()[0]] == ["hv1"]


def test_a_failed_write_is_refused_undone_and_the_switches_reread(rig: Rig) -> None:
    assert rig.api.put("/v1/hypervisors/hv1", HV1).status_int == 201
    assert rig.api.put("/v1/networks/blue", BLUE).status_int == 201
    assert rig.api.put("/v1/ports/p1", port_body(1, "hv1")).status_int == 201
    rig.path.call(lambda: rig.controller.switch_connected(1))
    rig.emitted.clear()

    rig.flaky.hold.clear()
    rig.flaky.holding.clear()
    rig.flaky.fail = True
    threads = [eventlet.spawn(rig.api.put, f"/v1/ports/p{i}", port_body(i, "hv1")) for i in (2, 3)]
    threads.append(eventlet.spawn(rig.api.delete, "/v1/ports/p1"))
    wait_until(rig.flaky.holding.is_set)
    rig.flaky.hold.set()
    answers = [t.wait() for t in threads]
    assert [a.status_int for a in answers] == [503, 503, 503]
    assert all("undone" in a.json["error"] for a in answers)

    wait_until(lambda: any(1 in b for b in rig.emitted))
    rig.flaky.fail = False
    assert [kind(m) for b in rig.emitted for m in b.get(1, [])] == [
        "OFPPortDescStatsRequest", "OFPFlowStatsRequest", "OFPGroupDescStatsRequest", "OFPMeterConfigStatsRequest"]
    assert [p["name"] for p in rig.api.get("/v1/ports").json["ports"]] == ["p1"]
    assert rig.api.put("/v1/ports/p4", port_body(4)).status_int == 201
    assert [p.name for p in SqliteStore(str(rig.flaky.inner.path)).load()[2]] == ["p1", "p4"]


def test_writes_queued_after_a_failure_are_refused_until_the_reload(rig: Rig) -> None:
    rig.store.on_failure = None  # no recovery: the store stays refusing
    rig.flaky.fail = True
    rig.store.apply([Put(Port("p1", "blue", "02:aa:00:00:00:01", ()))])
    failed = rig.store.ticket()
    with pytest.raises(StoreUnavailable):
        rig.store.wait(failed)
    rig.flaky.fail = False
    rig.store.apply([Put(Port("p2", "blue", "02:aa:00:00:00:02", ()))])
    with pytest.raises(StoreUnavailable):
        rig.store.wait(rig.store.ticket())
    assert rig.store.load()[2] == []
    rig.store.apply([Put(Port("p3", "blue", "02:aa:00:00:00:03", ()))])
    rig.store.wait(rig.store.ticket())
    assert [p.name for p in rig.store.load()[2]] == ["p3"]
    with pytest.raises(StoreUnavailable):
        rig.store.wait(failed)


def test_a_conflicting_write_in_a_group_commit_answers_409_and_those_before_it_stay(rig: Rig) -> None:
    """As with etcd (docs/scale-out.md): the group is committed again one write at a time."""
    flaky = rig.flaky
    inner_apply = flaky.apply

    def apply(changes: Iterable[Change]) -> None:
        changes = list(changes)
        if any(isinstance(c, Put) and c.obj.name == "p2" for c in changes):
            raise Conflict("another controller instance changed ports/p2 at the same time")
        inner_apply(changes)

    flaky.apply = apply  # type: ignore[method-assign]
    flaky.hold.clear()
    flaky.holding.clear()
    rig.store.apply([Put(Port("p0", "blue", "02:aa:00:00:00:01", ()))])
    wait_until(flaky.holding.is_set)  # p1, p2 and p3 queue up into one group behind p0
    tickets = []
    for i in (1, 2, 3):
        rig.store.apply([Put(Port(f"p{i}", "blue", "02:aa:00:00:00:01", ()))])
        tickets.append(rig.store.ticket())
    flaky.hold.set()
    rig.store.wait(tickets[0])
    for ticket in tickets[1:]:
        with pytest.raises(Conflict):
            rig.store.wait(ticket)
    assert [c.obj.name for commit in flaky.commits for c in commit if isinstance(c, Put)] == ["p0", "p1"]
