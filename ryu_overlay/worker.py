"""The one path that may touch ``Controller``, and the store writer that keeps fsync off it.

Every change to controller state (a REST request, a switch event, a timer) runs as a closure
on one thread: in the Ryu app that is the app's own event loop (docs/architecture.md).
The store is written behind that path: ``WriteBehindStore.apply`` only queues the changes,
and a writer thread commits what has queued up in one transaction (group commit), so neither
the path nor the eventlet hub waits for an fsync. A REST answer is given once everything its
request wrote is durable (``StatePath.call``).

Threads come from the framework's hub: green threads on Ryu (the commit itself then runs in
eventlet's native thread pool, ``tpool``), native threads on os-ken 4.x. Hence the hub's
queue and threads, events that suit them, and a lock around what both sides read.

If a commit fails, that write and every write queued after it are refused (their requests
answer 503) until the path has reloaded the topology from the store and re-read the
switches; nothing acknowledged is lost and nothing unacknowledged is kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from eventlet import tpool

from .compat import framework_module
from .controller import Batches, Controller
from .model import Conflict
from .store import Change, Loaded, Store, StoreUnavailable

LOG = logging.getLogger("ryu_overlay.worker")
hub = framework_module("lib.hub")
T = TypeVar("T")
EVENTLET = hub.HUB_TYPE == "eventlet"
# os-ken's native hub.Event can miss a wake-up (it swaps its inner event after setting it).
Event = hub.Event if EVENTLET else threading.Event
RECOVERY_RETRY = 1.0  # seconds between attempts to reload the topology after a failed write


class _Outcome:
    """A value or an error handed from one thread to another that waits for it."""

    def __init__(self) -> None:
        self.done = Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def send(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self.done.set()

    def wait(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class _Load(_Outcome):
    """A marker in the write queue: read the store back once every earlier write is settled."""


def _blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a call that blocks on the disk without blocking the eventlet hub (if there is one)."""
    if EVENTLET:
        return tpool.execute(fn, *args)  # type: ignore[no-any-return]
    return fn(*args)


def _in_store(lock: threading.Lock, fn: Callable[..., T], *args: Any) -> T:
    with lock:
        return fn(*args)


class WriteBehindStore:
    """A ``Store`` whose ``apply`` queues and returns; a writer thread commits in order.

    Writes are numbered in the order they are queued and committed in that order, several at
    a time in one transaction of the wrapped store, outside the eventlet hub. ``ticket()`` is
    the number of the last queued write; ``wait(ticket)`` returns once that write and all
    before it are durable, or raises ``StoreUnavailable``.
    """

    def __init__(self, store: Store, on_failure: Callable[[], None] | None = None) -> None:
        self.store = store
        self.on_failure = on_failure
        self._queue = hub.Queue()
        self._lock = threading.Lock()  # never held across a wait
        # Held by the native thread while it is inside the wrapped store: closing the store waits
        # for it, since killing the writer green thread does not stop a commit or read under way.
        self._in_store = threading.Lock()
        self._queued = 0  # number of the last write queued
        self._settled = 0  # number of the last write committed or refused
        self._refused: list[tuple[int, int, Exception]] = []  # (first, last) numbers of refused writes, why
        self._cause: Exception | None = None  # why writes are refused until the next reload
        self._broken = False
        self._reloaded_at = 0  # writes up to this number are behind the last reload
        self._waiters: dict[int, Any] = {}  # ticket -> Event
        self._writer: Any = None

    def start(self) -> None:
        if self._writer is None:
            self._writer = hub.spawn(self._write_loop)

    def load(self) -> Loaded:
        """The stored state; once writing has started, read after every queued write is settled."""
        if self._writer is None:
            return self.store.load()
        marker, queued = _Load(), self._queued
        self._queue.put(marker)
        loaded = marker.wait()
        self._reloaded_at = queued
        return loaded  # type: ignore[no-any-return]

    def apply(self, changes: Iterable[Change]) -> None:
        """Queue ``changes``; called only on the state path, so the numbering is its order.

        A store that compares what it writes with what memory held (etcd) binds the changes to
        that here, on the state path (``prepare``), since memory moves on before the commit."""
        prepare = getattr(self.store, "prepare", None)
        self._queued += 1
        self._queue.put((self._queued, prepare(changes) if prepare else list(changes)))

    def ticket(self) -> int:
        """What the state in memory depends on: the last write queued since the last reload, or 0."""
        return self._queued if self._queued > self._reloaded_at else 0

    def wait(self, ticket: int) -> None:
        with self._lock:
            pending = self._waiters.setdefault(ticket, Event()) if ticket > self._settled else None
        if pending is not None:
            pending.wait()
        with self._lock:
            refused = [why for first, last, why in self._refused if first <= ticket <= last]
        if refused:
            raise refused[0]

    def close(self) -> None:
        if self._writer is not None:
            hub.kill(self._writer)
            self._writer = None
        with self._in_store:
            self.store.close()

    def _write_loop(self) -> None:
        while True:
            items = [self._queue.get()]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            writes: list[tuple[int, list[Change]]] = []
            for item in items:
                if isinstance(item, _Load):
                    self._commit(writes)
                    writes = []
                    self._load(item)
                else:
                    writes.append(item)
            self._commit(writes)

    def _commit(self, writes: list[tuple[int, list[Any]]]) -> None:
        if not writes:
            return
        last = writes[-1][0]
        if not self._broken:
            try:
                self._store_apply([c for _, changes in writes for c in changes])
            except Conflict:
                writes = self._one_by_one(writes)
            except Exception as exc:
                self._fail(writes[0][0], exc)
            if not writes:
                return
            if not self._broken:
                self._settle(last)
                return
        with self._lock:
            self._refused.append((writes[0][0], last, self._cause or StoreUnavailable("refused")))
        self._settle(last)

    def _one_by_one(self, writes: list[tuple[int, list[Any]]]) -> list[tuple[int, list[Any]]]:
        """A group commit conflicted (etcd): commit its writes one at a time to find the one that did.
        Those before it are durable; it is refused with its ``Conflict``, and the writes after it are
        returned to be refused too (their validation saw its change)."""
        for i, (number, changes) in enumerate(writes):
            try:
                self._store_apply(changes)
            except Exception as exc:
                self._fail(number, exc)
                with self._lock:
                    self._refused.append((number, number, exc if isinstance(exc, Conflict) else self._cause))  # type: ignore[arg-type]
                self._settle(number)
                return writes[i + 1:]
            self._settle(number)
        return []

    def _fail(self, first: int, exc: Exception) -> None:
        """Refuse writes from ``first`` on until the path has reloaded the store's state."""
        if isinstance(exc, Conflict):
            LOG.warning("write %d conflicted with another instance's (%s); refusing writes until reloaded", first, exc)
            self._cause = Conflict("refused: an earlier write of this controller instance conflicted with another "
                                   "instance's; nothing of this request was kept: read again and retry")
        else:
            LOG.error("the store failed to commit write %d (%s); refusing writes until reloaded", first, exc)
            self._cause = exc if isinstance(exc, StoreUnavailable) else \
                StoreUnavailable("the store failed to write the change; it was undone")
        self._broken = True
        if self.on_failure is not None:
            self.on_failure()

    def _store_apply(self, changes: list[Any]) -> None:
        if getattr(self.store, "native", True):
            _blocking(_in_store, self._in_store, self.store.apply, changes)
        else:
            self.store.apply(changes)  # green I/O: a native thread would not share the hub's sockets

    def _load(self, marker: _Load) -> None:
        try:
            loaded = (_blocking(_in_store, self._in_store, self.store.load) if getattr(self.store, "native", True)
                      else self.store.load())
        except Exception as exc:
            LOG.exception("the store could not be read back")
            marker.send(error=exc)
            return
        self._broken = False
        marker.send(loaded)

    def _settle(self, last: int) -> None:
        with self._lock:
            self._settled = last
            done = [self._waiters.pop(t) for t in [t for t in self._waiters if t <= last]]
        for event in done:
            event.set()


class StatePath:
    """Runs closures on the one path that may touch the controller, in the order submitted.

    ``post`` hands a closure to that path (the Ryu app posts it as an event to its own queue).
    ``call`` is for callers on other green threads (REST handlers, timers): it waits for the
    closure's result and, if the store writes behind, for everything it wrote to be durable.
    """

    def __init__(self, controller: Controller, post: Callable[[Callable[[], None]], None],
                 emit: Callable[[Batches], None]) -> None:
        self.controller = controller
        self.post = post
        self.emit = emit
        store = controller.store
        self.store = store if isinstance(store, WriteBehindStore) else None
        if self.store is not None:
            self.store.on_failure = self._failed

    def call(self, step: Callable[[], T]) -> T:
        outcome = _Outcome()

        def on_path() -> None:
            try:
                result = step()
            except Exception as exc:  # handed to the caller, which re-raises it
                outcome.send(error=exc)
                return
            outcome.send((result, None if self.store is None else self.store.ticket()))

        self.post(on_path)
        result, ticket = outcome.wait()
        if ticket is not None:
            self.store.wait(ticket)  # type: ignore[union-attr]
        return result  # type: ignore[no-any-return]

    def _failed(self) -> None:
        self.post(self._recover)

    def _recover(self) -> None:
        """A write failed: take the store's state as the truth again and re-read every switch."""
        try:
            batches = self.controller.reload()
        except Exception:
            LOG.exception("reloading the topology failed; retrying in %.0f s", RECOVERY_RETRY)
            hub.spawn_after(RECOVERY_RETRY, self.post, self._recover)
            return
        LOG.warning("topology reloaded from the store after a failed write; resynchronising %d switches", len(batches))
        self.emit(batches)
