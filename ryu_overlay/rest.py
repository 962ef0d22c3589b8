"""The placement REST API: a thin webob WSGI app over ``Controller``.

Each handler reads and decodes the body, then, through ``run``, calls one controller method,
hands the resulting OpenFlow batches to ``emit`` and builds the answer. In the Ryu app ``run``
is ``worker.StatePath.call``: the step runs on the app's event loop and the answer is given
once what it wrote is durable; by default it runs the step directly (tests). Domain errors
become ``{"error": ...}`` with their HTTP status; nothing is changed by a refused request
because the controller validates before it writes. A write the store failed to make durable
answers 503 and is undone.

``GET /metrics`` serves the Prometheus metrics (``metrics.py``), with the token like the API.
``GET /`` and ``GET /console/<file>`` serve the web console: the files of ``ryu_overlay/console``,
by name only (nothing else on disk is reachable) and without the token, which the console asks
for and sends with its own data requests.

    curl -X PUT localhost:8080/v1/networks/blue -d '{"vni": 5001, "tenant": "acme"}'
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from webob import Request, Response

from . import auth, transactions
from .auth import Scope, Tokens
from .controller import Batches, Controller
from .events import MAX_WAIT, Event, Watch
from .metrics import CONTENT_TYPE as METRICS_TYPE, Metrics, Snapshot
from .model import Conflict, Hypervisor, Network, OverlayError, Port, Router
from .openapi import MAX_SEQ, openapi_document
from .store import StoreUnavailable

MAX_BODY = 1 << 20
SCOPE = "ryu_overlay.scope"  # the request's auth.Scope, in its WSGI environ
LOG = logging.getLogger("ryu_overlay.rest")
T = TypeVar("T")
CONSOLE_DIR = Path(__file__).parent / "console"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".LICENSE": "text/plain"}
# The console's page may load only its own files and talk only to this server (Cytoscape.js sets
# inline styles on the elements it draws in, hence 'unsafe-inline' for styles, not scripts).
CONSOLE_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"

_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/v1/(hypervisors|networks|ports|routers)$"), "collection"),
    (re.compile(r"^/v1/(hypervisors|networks|ports|routers)/([^/]+)$"), "item"),
    (re.compile(r"^/v1/(topology|stats|instances|openapi\.json)$"), "info"),
    (re.compile(r"^/v1/transactions$"), "transactions"),
    (re.compile(r"^/v1/events$"), "events"),
    (re.compile(r"^/metrics$"), "metrics"),
]


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _json(status: int, body: Any) -> Response:
    return Response(status=status, content_type="application/json", charset="utf-8",
                    body=json.dumps(body, sort_keys=True).encode() + b"\n")


class RestApp:
    def __init__(self, controller: Controller, emit: Callable[[Batches], None],
                 token: str | None = None, run: Callable[[Callable[[], Any]], Any] | None = None,
                 metrics: Metrics | None = None, tokens: Tokens | None = None,
                 limiter: auth.RequestLimiter | None = None) -> None:
        self.controller = controller
        self.emit = emit
        self.tokens = tokens if token is None else Tokens.single_admin(token)
        self.limiter = limiter
        self.run = run or _direct
        self.metrics = metrics or Metrics()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, req: Request) -> Response:
        started = time.perf_counter()
        resp = self._handle(req)
        self.metrics.rest.labels(req.method, route_template(_path(req)), str(resp.status_int)).observe(
            time.perf_counter() - started)
        return resp

    def _handle(self, req: Request) -> Response:
        scope = auth.ADMIN
        try:
            static = _console_file(_path(req))
            if static is not None:
                _allow(req, "GET", "HEAD")
                return _static(static)
            scope = self._authorize(req)
            return self._route(req)
        except transactions.OperationFailed as exc:
            error = str(exc) if scope.admin or exc.status != 409 else auth.REDACTED_CONFLICT
            return _json(exc.status, {"error": error, **({} if exc.index is None else {"index": exc.index})})
        except Conflict as exc:  # a tenant is not told which object of another tenant is in the way
            return _json(exc.status, {"error": str(exc) if scope.admin else auth.REDACTED_CONFLICT})
        except OverlayError as exc:
            return _json(exc.status, {"error": str(exc)})
        except StoreUnavailable as exc:
            return _json(503, {"error": str(exc)})
        except HTTPError as exc:
            resp = _json(exc.status, {"error": str(exc)})
            resp.headers.update(exc.headers)
            return resp
        except Exception:  # a bug must still answer JSON, and be logged with its trace
            LOG.exception("internal error on %s %s", req.method, req.environ.get("PATH_INFO"))
            return _json(500, {"error": "internal error"})

    def _authorize(self, req: Request) -> Scope:
        """The request's scope (``auth``), kept in its environ for the handlers; 401, or 429 over the rate."""
        scope = auth.ADMIN
        if self.tokens is not None:
            found = self.tokens.scope(req.headers.get("Authorization", ""))
            if found is None:
                raise HTTPError(401, "missing or wrong bearer token")
            scope = found
        wait = None if self.limiter is None else self.limiter.retry_after(scope)
        if wait is not None:
            raise HTTPError(429, "too many requests for this token", {"Retry-After": str(wait)})
        req.environ[SCOPE] = scope
        return scope

    def _route(self, req: Request) -> Response:
        path = _path(req)
        for pattern, kind in _ROUTES:
            m = pattern.fullmatch(path)
            if m:
                return getattr(self, "_" + kind)(req, *m.groups())
        raise HTTPError(404, f"no such resource: {path}")

    def _collection(self, req: Request, kind: str) -> Response:
        _allow(req, "GET")
        return self.run(lambda: self._list(kind, req.environ[SCOPE]))

    def _list(self, kind: str, scope: Scope) -> Response:
        c = self.controller
        objects = self._objects(kind)
        items = [auth.shown(scope, kind, o, self._json_of(o)) for o in objects.values()
                 if auth.visible(scope, kind, o, c.topo)]
        return _json(200, {kind: sorted(items, key=lambda i: i["name"])})

    def _objects(self, kind: str) -> Mapping[str, Hypervisor | Network | Port | Router]:
        topo = self.controller.topo
        kinds: dict[str, Mapping[str, Any]] = {"hypervisors": topo.hypervisors, "networks": topo.networks,
                                               "ports": topo.ports, "routers": topo.routers}
        return kinds[kind]

    def _json_of(self, obj: Hypervisor | Network | Port | Router) -> dict[str, Any]:
        return self.controller.hypervisor_json(obj) if isinstance(obj, Hypervisor) else obj.to_json()

    def _item(self, req: Request, kind: str, name: str) -> Response:
        _allow(req, "GET", "PUT", "DELETE")
        body = _body(req) if req.method == "PUT" else None
        scope = req.environ[SCOPE]
        return self.run(lambda: self._scoped_step(scope, req.method, kind, name, body))

    def _scoped_step(self, scope: Scope, method: str, kind: str, name: str, body: Any) -> Response:
        """``_item_step`` within the scope: what it may not see is absent (404), what it may see
        but not change is forbidden (403). An administrator's request goes straight through."""
        if scope.admin:
            return self._item_step(method, kind, name, body)
        old = self._objects(kind).get(name)
        auth.authorize(scope, method, kind, name, old, body, self.controller.topo)
        if method == "GET":
            assert old is not None
            return _json(200, auth.shown(scope, kind, old, self._json_of(old)))
        return self._item_step(method, kind, name, body)

    def _item_step(self, method: str, kind: str, name: str, body: Any) -> Response:
        c = self.controller
        if method == "GET":
            if kind == "hypervisors":
                return _json(200, c.hypervisor_json(c.topo.get_hypervisor(name)))
            getters: dict[str, Callable[[str], Network | Port | Router]] = {
                "networks": c.topo.get_network, "ports": c.topo.get_port, "routers": c.topo.get_router}
            return _json(200, getters[kind](name).to_json())
        if method == "DELETE":
            delete = {"hypervisors": c.delete_hypervisor, "networks": c.delete_network, "ports": c.delete_port,
                      "routers": c.delete_router}[kind]
            self.emit(delete(name))
            return Response(status=204)
        if kind == "hypervisors":
            created, hv, batches = c.put_hypervisor(name, body)
            self.emit(batches)
            return _json(201 if created else 200, c.hypervisor_json(hv))
        putters: dict[str, Callable[[str, Any], tuple[bool, Network | Port | Router, Batches]]] = {
            "networks": c.put_network, "ports": c.put_port, "routers": c.put_router}
        created, obj, batches = putters[kind](name, body)
        self.emit(batches)
        return _json(201 if created else 200, obj.to_json())

    def _info(self, req: Request, what: str) -> Response:
        _allow(req, "GET")
        if what != "openapi.json" and not req.environ[SCOPE].admin:
            raise HTTPError(403, f"/v1/{what} needs an administrator's token")
        if what == "topology":
            return self.run(lambda: _json(200, self.controller.topo.node_link()))
        if what == "stats":
            return self.run(lambda: _json(200, self.controller.stats_json()))
        if what == "instances":
            return self.run(lambda: _json(200, {"instances": self.controller.instances_json()}))
        return _json(200, openapi_document())


    def _metrics(self, req: Request) -> Response:
        """The controller's part is copied on the state path; the histograms lock themselves."""
        _allow(req, "GET")
        if not req.environ[SCOPE].admin:
            raise HTTPError(403, "/metrics needs an administrator's token")
        snapshot = self.run(lambda: Snapshot.of(self.controller))
        resp = Response(status=200, body=self.metrics.render(snapshot))
        resp.headers["Content-Type"] = METRICS_TYPE
        return resp

    def _transactions(self, req: Request) -> Response:
        _allow(req, "POST")
        tx = transactions.parse_transaction(_body(req))
        scope = req.environ[SCOPE]
        results, watch = self.run(lambda: self._transaction_step(tx, scope))
        answer: dict[str, Any] = {"results": results}
        if watch is not None:
            watch.done.wait(tx.timeout)
            answer["unconfirmed"] = watch.unconfirmed()
        return _json(200, answer)

    def _transaction_step(self, tx: transactions.Transaction,
                          scope: Scope) -> tuple[list[dict[str, Any]], Watch | None]:
        """Every operation is authorized as its single route would be, against the state the earlier
        ones left (a tenant's transaction touching another tenant's object fails at that index)."""
        c = self.controller

        def check(op: transactions.Operation, old: Any) -> None:
            auth.authorize(scope, op.op.upper(), op.kind, op.name, old, op.body, c.topo)

        results, batches = transactions.run(c, tx, None if scope.admin else check)
        self.emit(batches)
        if not tx.wait:
            return results, None
        pending = {dpid: set(sw.barriers) for dpid in batches if (sw := c.switches.get(dpid)) is not None}
        names = {dpid: hv.name for dpid in batches if (hv := c.topo.hypervisor_by_dpid(dpid)) is not None}
        return results, c.confirmations.watch(pending, names, tx.timeout)

    def _events(self, req: Request) -> Response:
        """Read without the state path: the event log is safe to read from here, and waiting on it
        holds only this connection."""
        _allow(req, "GET")
        since = _query_int(req, "since")
        scope: Scope = req.environ[SCOPE]

        def shown(event: Event) -> bool:
            return scope.admin or event.tenant == scope.tenant

        if "text/event-stream" in req.headers.get("Accept", ""):
            last_id = req.headers.get("Last-Event-ID")
            if last_id is not None and last_id.strip().isdigit():
                since = int(last_id)
            timeout = _query_seconds(req, "timeout", None)
            req.environ["eventlet.minimum_write_chunk_size"] = 0  # write each event as it comes
            resp = Response(status=200, content_type="text/event-stream", charset=None,
                            app_iter=self.controller.events.stream(since, timeout, shown=shown))
            resp.headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            return resp
        page = self.controller.events.wait(since, _query_seconds(req, "timeout", 0.0) or 0.0)
        return _json(200, replace(page, events=[e for e in page.events if shown(e)]).to_json())


def route_template(path: str) -> str:
    """The route a path matched, with its variable part named (``/v1/ports/{name}``), for the REST
    latency histogram: raw paths would make one series per object, or per typo."""
    if path == "/" or path.startswith("/console/"):
        return "/" if path == "/" else "/console/{file}"
    for pattern, kind in _ROUTES:
        m = pattern.fullmatch(path)
        if m:
            return f"/v1/{m.group(1)}/{{name}}" if kind == "item" else path
    return "other"


def _query_int(req: Request, name: str) -> int | None:
    raw = req.GET.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,16}", raw) or int(raw) > MAX_SEQ:
        raise HTTPError(400, f"{name} must be an integer from 0 to {MAX_SEQ}")
    return int(raw)


def _query_seconds(req: Request, name: str, default: float | None) -> float | None:
    raw = req.GET.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_WAIT:
        raise HTTPError(400, f"{name} must be a number of seconds from 0 to {MAX_WAIT:.0f}")
    return value


def _console_file(path: str) -> str | None:
    """The console file a path names (``/`` is its page), or None for any path outside the console."""
    if path == "/":
        return "index.html"
    if not path.startswith("/console/"):
        return None
    name = path.removeprefix("/console/")
    if name not in _console_files():
        raise HTTPError(404, f"no such resource: {path}")
    return name


def _console_files() -> frozenset[str]:
    """The names a request may ask for: the files of the console directory itself, no others."""
    return frozenset(p.name for p in CONSOLE_DIR.iterdir() if p.is_file() and p.suffix in CONTENT_TYPES)


def _static(name: str) -> Response:
    resp = Response(status=200, content_type=CONTENT_TYPES[Path(name).suffix], charset="utf-8",
                    body=(CONSOLE_DIR / name).read_bytes())
    resp.headers.update({"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                         "Content-Security-Policy": CONSOLE_CSP, "Referrer-Policy": "no-referrer"})
    return resp


def _direct(step: Callable[[], T]) -> T:
    return step()


def _path(req: Request) -> str:
    try:
        path: str = req.path_info
    except UnicodeDecodeError:
        path = str(req.environ.get("PATH_INFO", "")).encode("latin-1").decode("utf-8", "replace")
    return path


def _allow(req: Request, *methods: str) -> None:
    if req.method not in methods:
        raise HTTPError(405, f"method {req.method} is not allowed here; use {', '.join(methods)}",
                        {"Allow": ", ".join(methods)})


def _body(req: Request) -> Any:
    if req.content_length is not None and req.content_length > MAX_BODY:
        raise HTTPError(413, f"body larger than {MAX_BODY} bytes")
    raw = req.body_file.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise HTTPError(413, f"body larger than {MAX_BODY} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise HTTPError(400, "body is not valid JSON: nested too deeply") from None
