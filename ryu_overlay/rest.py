"""The placement REST API: a thin webob WSGI app over ``Controller``.

Each handler reads and decodes the body, then, through ``run``, calls one controller method,
hands the resulting OpenFlow batches to ``emit`` and builds the answer. In the Ryu app ``run``
is ``worker.StatePath.call``: the step runs on the app's event loop and the answer is given
once what it wrote is durable; by default it runs the step directly (tests). Domain errors
become ``{"error": ...}`` with their HTTP status; nothing is changed by a refused request
because the controller validates before it writes. A write the store failed to make durable
answers 503 and is undone.

    curl -X PUT localhost:8080/v1/networks/blue -d '{"vni": 5001, "tenant": "acme"}'
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from webob import Request, Response

from . import auth
from .auth import Scope, Tokens
from .controller import Batches, Controller
from .model import Conflict, Hypervisor, Network, OverlayError, Port, Router
from .openapi import openapi_document
from .store import StoreUnavailable

MAX_BODY = 1 << 20
SCOPE = "ryu_overlay.scope"  # the request's auth.Scope, in its WSGI environ
LOG = logging.getLogger("ryu_overlay.rest")
T = TypeVar("T")

_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/v1/(hypervisors|networks|ports|routers)$"), "collection"),
    (re.compile(r"^/v1/(hypervisors|networks|ports|routers)/([^/]+)$"), "item"),
    (re.compile(r"^/v1/(topology|stats|openapi\.json)$"), "info"),
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
                 tokens: Tokens | None = None, limiter: auth.RequestLimiter | None = None) -> None:
        self.controller = controller
        self.emit = emit
        self.tokens = tokens if token is None else Tokens.single_admin(token)
        self.limiter = limiter
        self.run = run or _direct

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, req: Request) -> Response:
        scope = auth.ADMIN
        try:
            scope = self._authorize(req)
            return self._route(req)
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
        return _json(200, openapi_document())


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
