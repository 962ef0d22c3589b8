"""What changed in the controller, for clients that follow it, and the barrier replies a writer waits for.

``EventLog`` keeps the last ``RETAINED`` events, numbered in order. The controller appends to
it on the state path; REST green threads read it directly and wait on it (long poll,
server-sent events), so a client waiting for news never occupies the state path. It is the one
object besides the store's queue that both sides touch, hence its lock (docs/architecture.md).

``Confirmations`` is how a transaction with ``"wait": "hv"`` waits for the switches: on the
state path it registers the barriers just sent to each affected switch; barrier replies and
disconnections (also on the path) tick them off; the REST green thread waits on the watch.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .compat import framework_module

hub = framework_module("lib.hub")
# os-ken's native hub.Event can miss a wake-up (it swaps its inner event after setting it).
Flag = hub.Event if hub.HUB_TYPE == "eventlet" else threading.Event
RETAINED = 4096  # events kept for clients that fall behind
KEEPALIVE = 15.0  # seconds of silence after which a server-sent event stream gets a comment line
MAX_WAIT = 300.0  # the longest long poll, in seconds


@dataclass(frozen=True)
class Event:
    """One change; ``obj`` is the object's JSON after it, or None once the object is gone."""

    seq: int
    at: float
    type: str
    kind: str | None
    name: str | None
    obj: dict[str, Any] | None
    dpid: int | None = None
    tenant: str | None = None  # whose it is: a tenant-scoped token reads only its tenant's events

    def to_json(self) -> dict[str, Any]:
        out = {"seq": self.seq, "at": self.at, "type": self.type, "kind": self.kind, "name": self.name,
               "object": self.obj}
        if self.dpid is not None:
            out["dpid"] = f"{self.dpid:016x}"
        return out


@dataclass(frozen=True)
class Page:
    """What a reader gets: the events after its ``since``, the latest ``seq``, and whether it must resync."""

    events: list[Event]
    last: int
    resync: bool

    def to_json(self) -> dict[str, Any]:
        return {"events": [e.to_json() for e in self.events], "last": self.last, "resync": self.resync}


class EventLog:
    """A ring of the last ``retained`` events. Numbers start at the wall-clock time in microseconds,
    so they keep growing across restarts and a ``since`` from an earlier run reads as too old."""

    def __init__(self, wall_clock: Callable[[], float] = time.time, retained: int = RETAINED) -> None:
        self.wall_clock = wall_clock
        self._events: deque[Event] = deque(maxlen=retained)
        self._next = int(wall_clock() * 1_000_000)
        self._lock = threading.Lock()
        self._flag = Flag()
        self._held: list[tuple[Any, ...]] | None = None

    # --- the state path's side ----------------------------------------------------------------

    def append(self, type_: str, kind: str | None, name: str | None, obj: dict[str, Any] | None,
               dpid: int | None = None, tenant: str | None = None) -> None:
        entry = (self.wall_clock(), type_, kind, name, obj, dpid, tenant)
        if self._held is not None:
            self._held.append(entry)
            return
        self._publish([entry])

    def hold(self) -> None:
        """Keep what is appended from now on until ``release``: a transaction's events are
        published when it commits, and never if it is undone."""
        self._held = []

    def release(self, publish: bool) -> None:
        held, self._held = self._held or [], None
        if publish and held:
            self._publish(held)

    def _publish(self, entries: list[tuple[Any, ...]]) -> None:
        with self._lock:
            for entry in entries:
                self._events.append(Event(self._next, *entry))
                self._next += 1
            flag, self._flag = self._flag, Flag()
        flag.set()

    # --- readers, on any thread ---------------------------------------------------------------

    @property
    def last(self) -> int:
        with self._lock:
            return self._next - 1

    def after(self, since: int | None) -> Page:
        """The events after ``since`` (none for None); all kept ones and ``resync`` if some are lost."""
        with self._lock:
            last = self._next - 1
            if since is None or since == last:
                return Page([], last, False)
            first = self._events[0].seq if self._events else self._next
            if since > last or since < first - 1:
                return Page(list(self._events), last, True)
            return Page(list(itertools.islice(self._events, since - first + 1, None)), last, False)

    def wait(self, since: int | None, timeout: float) -> Page:
        """``after(since)``, waiting up to ``timeout`` seconds for an event if there is none yet."""
        if since is None:
            since = self.last
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                flag = self._flag
            page = self.after(since)
            remaining = deadline - time.monotonic()
            if page.events or page.resync or remaining <= 0:
                return page
            flag.wait(remaining)

    def stream(self, since: int | None, timeout: float | None = None, keepalive: float = KEEPALIVE,
               shown: Callable[[Event], bool] = lambda event: True) -> Iterator[bytes]:
        """Server-sent events: those after ``since`` (or from now) that ``shown`` lets through, then
        each as it comes, until ``timeout`` seconds have passed (None: until the client goes away)."""
        yield b"retry: 1000\n\n"
        if since is None:
            since = self.last
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = keepalive if deadline is None else min(keepalive, deadline - time.monotonic())
            page = self.wait(since, max(0.0, left))
            if page.resync:
                yield _sse({"type": "resync", "last": page.last})
            for event in page.events:
                if shown(event):
                    yield _sse(event.to_json(), event.seq)
            if page.events or page.resync:
                since = page.last
            elif deadline is None or time.monotonic() < deadline:
                yield b": keep-alive\n\n"
            if deadline is not None and time.monotonic() >= deadline:
                return


def _sse(data: dict[str, Any], seq: int | None = None) -> bytes:
    head = b"" if seq is None else b"id: %d\n" % seq
    return head + b"data: " + json.dumps(data, sort_keys=True).encode() + b"\n\n"


@dataclass
class Watch:
    """Barriers still unanswered, per switch; ``done`` is set once none is left. A switch that
    disconnects before it answers is ``lost``. After ``deadline`` (monotonic) nobody waits."""

    pending: dict[int, set[int]]
    names: dict[int, str]
    deadline: float
    lost: set[int] = field(default_factory=set)
    done: Any = field(default_factory=Flag)

    def unconfirmed(self) -> list[str]:
        dpids = self.lost | {dpid for dpid, xids in list(self.pending.items()) if xids}
        return sorted(self.names.get(dpid, f"{dpid:016x}") for dpid in dpids)


class Confirmations:
    """The watches of writers waiting for barrier replies; every method runs on the state path."""

    def __init__(self) -> None:
        self._watches: list[Watch] = []

    def watch(self, pending: dict[int, set[int]], names: dict[int, str], timeout: float) -> Watch:
        watch = Watch({dpid: set(xids) for dpid, xids in pending.items() if xids}, names,
                      time.monotonic() + timeout)
        if not self._settled(watch):
            self._watches.append(watch)
        return watch

    def replied(self, dpid: int, xid: int) -> None:
        for watch in self._watches:
            watch.pending.get(dpid, set()).discard(xid)
        self._prune()

    def gone(self, dpid: int) -> None:
        """The switch disconnected: its replies will not come; stop waiting for them."""
        for watch in self._watches:
            if watch.pending.pop(dpid, None):
                watch.lost.add(dpid)
        self._prune()

    def __len__(self) -> int:
        return len(self._watches)

    def _prune(self) -> None:
        now = time.monotonic()
        self._watches = [w for w in self._watches if not self._settled(w) and w.deadline > now]

    @staticmethod
    def _settled(watch: Watch) -> bool:
        if any(watch.pending.values()):
            return False
        watch.done.set()
        return True
