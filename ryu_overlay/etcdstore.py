"""The placement state on an etcd v3 cluster (``--db etcd://HOST:PORT[,HOST:PORT...][/PREFIX]``).

Keys are ``PREFIX/<kind>/<name>`` and values the same JSON documents as SQLite's rows; live
controller instances are ``PREFIX/instances/<id>``, each attached to its instance's lease.
The client is ``etcd3gw`` (etcd's v3 JSON gateway), imported only when etcd is selected.

**Compare-and-swap.** A change is written in an etcd transaction that compares each key's
current value with the value this instance had in memory when it made the change (absent
when it had none). Comparing the value (not the revision) lets changes queued one after another
on one instance chain without waiting for each other's revisions. If another instance wrote
the key in between, the transaction fails and the change is refused with ``Conflict`` (409),
unless the other instance wrote exactly the value this one writes: the two changes then commute
and the write counts as done. See docs/scale-out.md.

**Watch.** ``watch`` streams every change under the prefix from a revision on, resumes from
the last revision it saw when its connection drops (trying the next endpoint), and reports a
compaction so that the caller reloads everything. ``observe`` turns what it saw into changes
for the in-memory topology, on the state path, skipping the echoes of this instance's own writes.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .model import Conflict
from .store import FROM_RECORD, KINDS, Change, Delete, Loaded, Obj, Put, StoreUnavailable, change_key, document

LOG = logging.getLogger("ryu_overlay.etcd")
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
TIMEOUT = 2.0  # seconds an etcd request may take; a write is tried for twice that before it answers 503
INSTANCES = "instances"


def parse_url(url: str) -> tuple[list[tuple[str, int]], str]:
    """``etcd://h1:p1,h2:p2/prefix`` -> ([(h1, p1), (h2, p2)], "/prefix"); the prefix defaults to /ryu-overlay."""
    if not url.startswith("etcd://"):
        raise ValueError(f"not an etcd URL: {url}")
    hosts, slash, prefix = url[len("etcd://"):].partition("/")
    endpoints = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad etcd endpoint {item!r} in {url} (expected HOST:PORT)")
        endpoints.append((host.strip("[]"), int(port)))
    prefix = "/" + prefix.strip("/") if slash and prefix.strip("/") else "/ryu-overlay"
    return endpoints, prefix


def is_etcd(db: str) -> bool:
    return db.startswith("etcd://")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str | None) -> str:
    return base64.b64decode(b64 or "").decode()


def _range_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True)
class Write:
    """A change bound to the value its key had in this instance's memory (None: absent)."""

    key: str
    expect: str | None
    value: str | None  # None deletes


@dataclass(frozen=True)
class Event:
    revision: int
    key: str
    value: str | None  # None: deleted


class Endpoints:
    """etcd3gw clients of the cluster's members; a request that cannot reach one tries the next."""

    def __init__(self, endpoints: list[tuple[str, int]], timeout: float = TIMEOUT) -> None:
        import etcd3gw  # only when etcd is selected
        self._module = etcd3gw
        self.clients = [etcd3gw.client(host=h, port=p, timeout=timeout) for h, p in endpoints]
        self.current = 0

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        for step in range(len(self.clients)):
            client = self.clients[(self.current + step) % len(self.clients)]
            try:
                answer: dict[str, Any] = client.post(client.get_url(path), json=body)
            except self._module.exceptions.ConnectionFailedError as exc:
                errors.append(f"{client.host}:{client.port}: {exc.detail_text or exc or 'unreachable'}")
                continue
            except self._module.exceptions.Etcd3Exception as exc:
                self.current = (self.current + step + 1) % len(self.clients)
                raise StoreUnavailable(f"etcd did not confirm the request in time; is a quorum of its members up? "
                                       f"Not acknowledged: a write may still take effect once etcd has a quorum "
                                       f"again, so read it then ({type(exc).__name__}: "
                                       f"{(exc.detail_text or '').strip()[:160]})") from None
            self.current = (self.current + step) % len(self.clients)
            return answer
        raise StoreUnavailable("no etcd member reachable: " + "; ".join(errors))

    def stream(self, path: str, body: dict[str, Any]) -> Any:
        """A streaming response from the current member (the next one on each call after a failure)."""
        client = self.clients[self.current]
        self.current = (self.current + 1) % len(self.clients)
        return client.session.post(client.get_url(path), json=body, stream=True, timeout=(client.timeout, None))


class LeaseKeeper:
    """Renews one etcd lease every third of its TTL from an OS thread of its own, over plain sockets
    (not eventlet's green ones). The renewal must not wait for the event loop: while thousands of
    switches connect, the loop can be busy for longer than a short TTL, the lease would expire, and
    the instance would drop and retake every switch it masters. ``expired`` names a lease that etcd
    no longer knows, for the owner to replace."""

    def __init__(self, urls: list[str], ttl: int, timeout: float = TIMEOUT) -> None:
        import eventlet.patcher  # the unpatched modules, also when Ryu has monkey-patched everything
        self._socket = eventlet.patcher.original("socket")
        self._time = eventlet.patcher.original("time")
        threading = eventlet.patcher.original("threading")
        self.urls = [urllib.parse.urlsplit(u) for u in urls]
        self.ttl = ttl
        self.timeout = timeout
        self.lease: int | None = None
        self.expired: int | None = None
        self.current = 0
        self.stopped = False
        self._thread = threading.Thread(target=self._run, name="etcd-lease", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped = True

    def _run(self) -> None:
        while not self.stopped:
            self._time.sleep(self.ttl / 3)
            lease = self.lease
            if lease is None or self.stopped:
                continue
            try:
                if self.keepalive(lease) <= 0 and self.lease == lease:
                    self.expired = lease
            except (OSError, ValueError) as exc:
                LOG.warning("could not renew lease %x: %s", lease, exc)

    def keepalive(self, lease: int) -> int:
        """Renew on the current member (the next ones if it fails); the remaining TTL."""
        error: Exception | None = None
        for step in range(len(self.urls)):
            url = self.urls[(self.current + step) % len(self.urls)]
            try:
                answer = self._post(url, {"ID": lease})
            except (OSError, ValueError) as exc:
                error = exc
                continue
            self.current = (self.current + step) % len(self.urls)
            return int(answer.get("result", {}).get("TTL", 0))
        raise error or OSError("no etcd member")

    def _post(self, url: urllib.parse.SplitResult, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        head = (f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        with self._socket.create_connection((url.hostname, url.port), timeout=self.timeout) as sock:
            sock.sendall(head + data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head_bytes, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
        status = head_bytes.partition(b"\r\n")[0]
        if status.split(b" ")[1:2] != [b"200"]:
            raise ValueError(f"etcd answered {status.decode(errors='replace')}")
        if b"transfer-encoding: chunked" in head_bytes.lower():
            payload = _dechunk(payload)
        answer: dict[str, Any] = json.loads(payload)
        return answer


class EtcdStore:
    """A ``Store`` on etcd. ``load``/``apply`` run on the store writer; ``prepare`` and ``observe``
    on the state path, which owns ``_values``/``_pending`` (what memory holds, and this
    instance's writes not yet seen back through the watch)."""

    native = False  # its I/O goes through (green) sockets: the writer calls it directly, not in a thread pool

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        endpoints, self.prefix = parse_url(url)
        self.url = url
        self.closed = False
        self.client = Endpoints(endpoints, timeout)
        self._endpoints = endpoints
        self._timeout = timeout
        self.revision = 0  # the revision of the last load: events up to it are in memory already
        self.seen = 0  # the newest revision this instance has loaded or watched
        self.instances: dict[str, dict[str, Any]] = {}
        self._values: dict[str, str] = {}
        self._pending: dict[str, list[str | None]] = {}

    def key(self, kind: str, name: str) -> str:
        return f"{self.prefix}/{kind}/{name}"

    def _split(self, key: str) -> tuple[str, str] | None:
        if not key.startswith(self.prefix + "/"):
            return None
        kind, slash, name = key[len(self.prefix) + 1:].partition("/")
        return (kind, name) if slash else None

    # --- reading -------------------------------------------------------------------------------

    def load(self) -> Loaded:
        """Everything under the prefix, read through a quorum; if there is none, from any member whose
        copy is at least as recent as what this instance has seen (nothing it saw is lost)."""
        body = {"key": _b64(self.prefix + "/"), "range_end": _b64(_range_end(self.prefix + "/"))}
        try:
            answer = self.client.post("/kv/range", body)
        except StoreUnavailable:
            answer = self._serializable_range(body)
        self.revision = int(answer["header"]["revision"])
        self.seen = max(self.seen, self.revision)
        self._values, self._pending, self.instances = {}, {}, {}
        objects: dict[str, list[Obj]] = {kind: [] for kind in KINDS.values()}
        for kv in answer.get("kvs", []):
            key, value = _text(kv["key"]), _text(kv.get("value"))
            where = self._split(key)
            if where is None:
                continue
            kind, name = where
            if kind == INSTANCES:
                self.instances[name] = json.loads(value)
            elif kind in FROM_RECORD:
                self._values[key] = value
                objects[kind].append(FROM_RECORD[kind](json.loads(value)))
        for items in objects.values():
            items.sort(key=lambda o: o.name)
        return objects["hypervisors"], objects["networks"], objects["ports"], objects["routers"]  # type: ignore[return-value]

    def _serializable_range(self, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        for host, port in self._endpoints:
            one = Endpoints([(host, port)], self._timeout)
            try:
                answer = one.post("/kv/range", {**body, "serializable": True})
            except StoreUnavailable as exc:
                errors.append(str(exc))
                continue
            if int(answer["header"]["revision"]) >= self.seen:
                LOG.warning("etcd has no quorum; read the state from member %s:%d at revision %s", host, port,
                            answer["header"]["revision"])
                return answer
        if len(errors) == len(self._endpoints):
            raise StoreUnavailable("; ".join(errors))
        raise StoreUnavailable("etcd has no quorum and no reachable member is as recent as this instance")

    # --- writing -------------------------------------------------------------------------------

    def prepare(self, changes: Iterable[Change]) -> list[Write]:
        """Bind each change to the value memory held for its key (on the state path, as it is queued)."""
        out = []
        for change in changes:
            key = self.key(*change_key(change))
            value = document(change.obj) if isinstance(change, Put) else None
            pending = self._pending.get(key)
            expect = pending[-1] if pending else self._values.get(key)
            self._pending.setdefault(key, []).append(value)
            out.append(Write(key, expect, value))
        return out

    def apply(self, changes: Iterable[Change | Write]) -> None:
        """Commit the writes (in transactions of at most ``MAX_TXN_OPS`` keys), or raise ``Conflict``."""
        merged: dict[str, Write] = {}
        for item in changes:
            write = item if isinstance(item, Write) else self.prepare([item])[0]
            first = merged.pop(write.key, None)
            merged[write.key] = write if first is None else Write(write.key, first.expect, write.value)
        writes = list(merged.values())
        for i in range(0, len(writes), MAX_TXN_OPS):
            self._commit(writes[i:i + MAX_TXN_OPS])

    def _txn(self, writes: list[Write]) -> dict[str, Any]:
        """One transaction, tried again (on the next member) for up to twice the timeout: a proposal made
        just as the leader died waits longer than that in etcd, while the next attempt meets the new
        leader. Trying again is safe: if an attempt did commit, the next finds its value and commutes."""
        deadline = time.monotonic() + 2 * self._timeout
        while True:
            try:
                return self.client.post("/kv/txn", _txn(writes))
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _commit(self, writes: list[Write]) -> None:
        for _attempt in range(2):
            answer = self._txn(writes)
            if answer.get("succeeded"):
                return
            current = {}
            for write, response in zip(writes, answer.get("responses", []), strict=False):
                kvs = response.get("response_range", {}).get("kvs", [])
                current[write.key] = _text(kvs[0].get("value")) if kvs else None
            lost = [w for w in writes if current.get(w.key) != w.expect and current.get(w.key) != w.value]
            if lost:
                names = ", ".join(w.key[len(self.prefix) + 1:] for w in lost)
                raise Conflict(f"another controller instance changed {names} at the same time; nothing of this "
                               f"request was kept: read it again and retry")
            writes = [w for w in writes if current.get(w.key) != w.value]  # the rest commute: already written
            if not writes:
                return
        raise Conflict("the etcd transaction kept failing its comparison; nothing was kept: retry")

    # --- watching ------------------------------------------------------------------------------

    def watch(self, start: int, deliver: Callable[[list[Event]], None], compacted: Callable[[], None],
              pause: Callable[[float], None] = time.sleep) -> None:
        """Stream the prefix's changes from revision ``start`` on, forever: ``deliver`` gets the events of
        one watch response; after a compaction ``compacted()`` is called and the stream goes on from the
        oldest revision still kept (the caller reloads the whole state). Ends once the store is closed."""
        body = {"key": _b64(self.prefix + "/"), "range_end": _b64(_range_end(self.prefix + "/"))}
        next_rev = start
        while not self.closed:
            try:
                for result in self._stream({"create_request": {**body, "start_revision": next_rev}}):
                    if int(result.get("compact_revision", 0)):
                        LOG.warning("etcd compacted past revision %d; reloading everything", next_rev)
                        next_rev = int(result["compact_revision"])
                        compacted()
                        break
                    if result.get("canceled"):
                        raise StoreUnavailable(f"watch canceled: {result.get('cancel_reason', '')}")
                    events = [_event(e) for e in result.get("events", [])]
                    if events:
                        next_rev = events[-1].revision + 1
                        deliver(events)
            except Exception as exc:  # a dropped stream: resume from the next member
                LOG.info("etcd watch interrupted (%s); resuming from revision %d", exc, next_rev)
                pause(0.2)

    def _stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        resp = self.client.stream("/watch", body)
        try:
            if resp.status_code != 200:
                raise StoreUnavailable(f"watch answered {resp.status_code}")
            for line in resp.iter_lines(chunk_size=None):
                if line.strip():
                    chunk = json.loads(line)
                    if "error" in chunk:
                        raise StoreUnavailable(f"watch error: {chunk['error']}")
                    yield chunk.get("result", {})
        finally:
            resp.close()

    def observe(self, events: Iterable[Event]) -> tuple[list[Change], bool]:
        """On the state path: the changes other instances made, for the in-memory topology (the echoes
        of this instance's own writes skipped), and whether the set of instances changed."""
        changes: list[Change] = []
        members = False
        for ev in events:
            where = self._split(ev.key)
            if where is None or ev.revision <= self.revision:
                continue
            self.seen = max(self.seen, ev.revision)
            kind, name = where
            if kind == INSTANCES:
                if ev.value is None:
                    self.instances.pop(name, None)
                else:
                    self.instances[name] = json.loads(ev.value)
                members = True
                continue
            if kind not in FROM_RECORD:
                continue
            pending = self._pending.get(ev.key)
            if pending:
                if ev.value in pending:  # our own write (or the same value written by another instance)
                    del pending[:pending.index(ev.value) + 1]
                    if not pending:
                        del self._pending[ev.key]
                    self._set(ev.key, ev.value)
                # otherwise another instance wrote first: our pending write fails its comparison and the
                # state is reloaded; memory keeps what it has until then.
                continue
            self._set(ev.key, ev.value)
            if ev.value is None:
                changes.append(Delete(_kind_type(kind), name))
            else:
                changes.append(Put(FROM_RECORD[kind](json.loads(ev.value))))
        return changes, members

    def _set(self, key: str, value: str | None) -> None:
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value

    # --- instances and leases ----------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        return int(self.client.post("/lease/grant", {"TTL": ttl})["ID"])

    def keepalive(self, lease: int) -> int:
        """Renew the lease; its remaining TTL (0 or less: it had expired)."""
        answer = self.client.post("/lease/keepalive", {"ID": lease})
        return int(answer.get("result", {}).get("TTL", 0))

    def lease_keeper(self, ttl: int) -> LeaseKeeper:
        """A ``LeaseKeeper`` on this store's members (not started)."""
        return LeaseKeeper([c.get_url("/lease/keepalive") for c in self.client.clients], ttl, self._timeout)

    def revoke(self, lease: int) -> None:
        self.client.post("/kv/lease/revoke", {"ID": lease})

    def register(self, instance: str, record: dict[str, Any], lease: int) -> None:
        """Publish this instance's record, alive as long as its lease."""
        self.client.post("/kv/put", {"key": _b64(self.key(INSTANCES, instance)),
                                     "value": _b64(json.dumps(record, sort_keys=True)), "lease": lease})

    def close(self) -> None:
        self.closed = True
        for client in self.client.clients:
            client.session.close()


def _dechunk(data: bytes) -> bytes:
    """The body of an HTTP/1.1 chunked transfer."""
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2:]
    return b"".join(out)


def _kind_type(kind: str) -> type:
    return next(t for t, k in KINDS.items() if k == kind)


def _event(raw: dict[str, Any]) -> Event:
    kv = raw["kv"]
    deleted = raw.get("type") == "DELETE"
    return Event(int(kv["mod_revision"]), _text(kv["key"]), None if deleted else _text(kv.get("value")))


def _txn(writes: list[Write]) -> dict[str, Any]:
    compare = []
    for w in writes:
        key = _b64(w.key)
        if w.expect is None:
            compare.append({"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0})
        else:
            compare.append({"key": key, "result": "EQUAL", "target": "VALUE", "value": _b64(w.expect)})
    success = [{"request_delete_range": {"key": _b64(w.key)}} if w.value is None
               else {"request_put": {"key": _b64(w.key), "value": _b64(w.value)}} for w in writes]
    failure = [{"request_range": {"key": _b64(w.key)}} for w in writes]
    return {"compare": compare, "success": success, "failure": failure}
