"""Who may do what through the REST API: bearer tokens, their scopes, and what a scope may see.

A token is an administrator's or a tenant's. ``--rest-tokens FILE`` holds a JSON object that maps
each token to its scope, ``{"role": "admin"}`` or ``{"tenant": "acme"}``; a key written
``sha256:<64 hex digits>`` is the SHA-256 of the token rather than the token itself, so the file
need not hold secrets. ``--rest-token`` is one administrator token.

A tenant sees and changes only its own networks, the ports of those networks and its routers;
of hypervisors it reads the names of those that host its ports. Everything else answers as if
it did not exist (404). ``visible`` is the one rule, a function of (scope, kind, object), for
every route that shows objects: collections, items, and whatever lists objects later (events,
transactions).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import BadRequest, Forbidden, Hypervisor, Network, NotFound, OverlayError, Port, Router, parse_name
from .ratelimit import TokenBucket
from .topology import Topology

HASH_PREFIX = "sha256:"
REQUEST_RATE = 100.0  # requests per second per token (--rest-rate)
TENANT_KINDS = ("networks", "ports", "routers")
# What one tenant's tokens may create: the controller's memory for a tenant is bounded by it.
TENANT_QUOTA = {"networks": 100, "ports": 4000, "routers": 50}
REDACTED_CONFLICT = ("the request conflicts with an existing object (a name, VNI, MAC, address or interface "
                     "already in use)")


class AuthError(BadRequest):
    """A bad tokens file: the controller does not start."""


@dataclass(frozen=True)
class Scope:
    """What one token may do. ``key`` names the token (its digest) for rate limiting and logs."""

    key: str
    tenant: str | None = None  # None: an administrator

    @property
    def admin(self) -> bool:
        return self.tenant is None


ADMIN = Scope("admin")  # no tokens configured: every request is an administrator's


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The tokens the API accepts, kept only as SHA-256 digests."""

    def __init__(self, scopes: Mapping[str, Scope]) -> None:
        self._by_digest = dict(scopes)

    @classmethod
    def single_admin(cls, token: str) -> Tokens:
        d = digest(token)
        return cls({d: Scope(d[:12])})

    @classmethod
    def parse(cls, doc: Any) -> Tokens:
        """From the JSON of a tokens file; a bad entry is refused with the reason."""
        if not isinstance(doc, dict) or not doc:
            raise AuthError("the tokens file must hold a non-empty JSON object: token -> scope")
        scopes: dict[str, Scope] = {}
        for key, scope in doc.items():
            if not isinstance(key, str) or not key:
                raise AuthError("a token must be a non-empty string")
            if key.startswith(HASH_PREFIX):
                d = key[len(HASH_PREFIX):].lower()
                if len(d) != 64 or any(ch not in "0123456789abcdef" for ch in d):
                    raise AuthError(f"{key[:16]}...: a hashed token is sha256: and 64 hex digits")
            else:
                d = digest(key)
            if d in scopes:
                raise AuthError(f"token {d[:12]} (SHA-256) is given twice")
            if scope == {"role": "admin"}:
                scopes[d] = Scope(d[:12])
            elif isinstance(scope, dict) and set(scope) == {"tenant"}:
                try:
                    scopes[d] = Scope(d[:12], parse_name(scope["tenant"], "tenant"))
                except OverlayError as exc:
                    raise AuthError(f"token {d[:12]} (SHA-256): {exc}") from None
            else:
                raise AuthError(f"token {d[:12]} (SHA-256): a scope is {{\"role\": \"admin\"}} or {{\"tenant\": NAME}}")
        return cls(scopes)

    @classmethod
    def load(cls, path: str | Path) -> Tokens:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise AuthError(f"cannot read tokens file {path}: {exc}") from None
        return cls.parse(doc)

    def scope(self, authorization: str) -> Scope | None:
        """The scope of an ``Authorization: Bearer <token>`` header, or None."""
        kind, _, token = authorization.partition(" ")
        if kind != "Bearer" or not token:
            return None
        d = digest(token)
        for known, scope in self._by_digest.items():  # compare_digest over all: no early exit
            if hmac.compare_digest(known, d):
                return scope
        return None


def rest_tokens(admin_token: str | None, path: str | None) -> Tokens | None:
    """The tokens of ``--rest-token`` and ``--rest-tokens`` together; None if neither is given."""
    scopes: dict[str, Scope] = {}
    if path is not None:
        scopes.update(Tokens.load(path)._by_digest)
    if admin_token is not None:
        scopes.update(Tokens.single_admin(admin_token)._by_digest)
    return Tokens(scopes) if scopes else None


def tenant_of(kind: str, obj: Hypervisor | Network | Port | Router, topo: Topology) -> str | None:
    """The tenant an object belongs to (None: no tenant's, or its network is gone)."""
    if isinstance(obj, (Network, Router)):
        return obj.tenant
    if isinstance(obj, Port):
        net = topo.networks.get(obj.network)
        return None if net is None else net.tenant
    return None


def visible(scope: Scope, kind: str, obj: Hypervisor | Network | Port | Router, topo: Topology) -> bool:
    """Whether ``scope`` may see ``obj`` (of REST kind ``kind``): the filter of every route."""
    if scope.admin:
        return True
    if isinstance(obj, Hypervisor):
        return any(tenant_of("ports", p, topo) == scope.tenant for p in topo.ports_on(obj.name))
    return tenant_of(kind, obj, topo) == scope.tenant


def shown(scope: Scope, kind: str, obj: Hypervisor | Network | Port | Router, full: dict[str, Any]) -> dict[str, Any]:
    """What ``scope`` reads of a visible object: a tenant reads only a hypervisor's name."""
    return {"name": full["name"]} if kind == "hypervisors" and not scope.admin else full


def authorize(scope: Scope, method: str, kind: str, name: str, old: Hypervisor | Network | Port | Router | None,
              body: Any, topo: Topology) -> None:
    """Raise unless ``scope`` may do ``method`` (GET, PUT, DELETE) on object ``name`` of ``kind``,
    currently ``old`` (None if absent), with ``body`` (PUT). The one check of every write, for the
    item routes and for each operation of anything that writes several (a transaction).

    What the scope may not see is absent (``NotFound``, worded as for an absent object); what it
    sees but may not change is ``Forbidden``.
    """
    if scope.admin:
        return
    absent = NotFound(f"{kind[:-1]} {name} does not exist")
    if old is not None and not visible(scope, kind, old, topo):
        raise absent
    if method == "GET":
        if old is None:
            raise absent
        return
    for network in referenced_networks(kind, body):
        net = topo.networks.get(network)
        if net is None or not visible(scope, "networks", net, topo):
            raise NotFound(f"network {network} does not exist")
    if not may_write(scope, kind, body, topo):
        raise Forbidden(f"this token may change only the networks, ports and routers of tenant {scope.tenant}")
    if method == "PUT" and old is None:
        kinds: dict[str, Mapping[str, Network | Port | Router]] = {
            "networks": topo.networks, "ports": topo.ports, "routers": topo.routers}
        if sum(visible(scope, kind, o, topo) for o in kinds[kind].values()) >= TENANT_QUOTA[kind]:
            raise Forbidden(f"tenant {scope.tenant} has its quota of {TENANT_QUOTA[kind]} {kind}")


def visible_json(scope: Scope, kind: str, obj: Mapping[str, Any], topo: Topology) -> bool:
    """``visible`` for an object given as its JSON (as an event carries it): a network or router
    by its ``tenant``, a port by its network's, a hypervisor by the ports on it now."""
    if scope.admin:
        return True
    if kind in ("networks", "routers"):
        return obj.get("tenant") == scope.tenant
    if kind == "ports":
        net = topo.networks.get(obj.get("network", ""))
        return net is not None and net.tenant == scope.tenant
    if kind == "hypervisors":
        hv = topo.hypervisors.get(obj.get("name", ""))
        return hv is not None and visible(scope, kind, hv, topo)
    return False


def may_write(scope: Scope, kind: str, body: Any, topo: Topology) -> bool:
    """Whether ``scope`` may write ``body`` as an object of ``kind`` (its old version, if any,
    must be visible too: the caller checks that first). Only administrators write hypervisors.
    A tenant's network and router name the tenant; its port names one of its networks."""
    if scope.admin:
        return True
    if kind not in TENANT_KINDS or not isinstance(body, dict):
        return kind in TENANT_KINDS  # a malformed body is refused later, with the reason
    if kind == "ports":
        return True  # its network is the tenant's (``referenced_networks``)
    return body.get("tenant") == scope.tenant


def referenced_networks(kind: str, body: Any) -> list[str]:
    """The networks a port or router body names: a tenant must see each of them."""
    if not isinstance(body, dict):
        return []
    if kind == "ports":
        return [body["network"]] if isinstance(body.get("network"), str) else []
    if kind == "routers" and isinstance(body.get("interfaces"), list):
        return [i["network"] for i in body["interfaces"] if isinstance(i, dict) and isinstance(i.get("network"), str)]
    return []


class RequestLimiter:
    """At most ``rate`` requests per second per token, in bursts of up to twice that. Its memory
    is one entry per token of the tokens file: nothing a client can grow (a wrong token is
    refused before it is counted)."""

    def __init__(self, rate: float = REQUEST_RATE, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._bucket = TokenBucket(rate, max(1, int(2 * rate)), clock)

    def retry_after(self, scope: Scope) -> int | None:
        """None if the request may go on, else the whole seconds until it could."""
        if self._bucket.allow(scope.key):
            return None
        return max(1, math.ceil(1.0 / self.rate))
