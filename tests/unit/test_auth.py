"""Scoped REST tokens (issue #16): what a tenant's token sees and changes, the tokens file, the
request rate per token. Every answer is checked against the OpenAPI document (``Api``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ryu_overlay import auth
from ryu_overlay.auth import AuthError, RequestLimiter, Scope, Tokens, rest_tokens, visible
from ryu_overlay.controller import Batches, Controller
from ryu_overlay.model import Forbidden, NotFound
from ryu_overlay.rest import RestApp
from ryu_overlay.store import SqliteStore
from ryu_overlay.testing.rest_client import Api

ADMIN, ACME, GLOBEX = "admin-secret", "acme-secret", "globex-secret"
FILE = {ADMIN: {"role": "admin"}, "sha256:" + hashlib.sha256(ACME.encode()).hexdigest(): {"tenant": "acme"},
        GLOBEX: {"tenant": "globex"}}
SUBNETS = ["10.1.0.0/24", "fd00:1::/64"]


class Clients:
    def __init__(self, app: RestApp, controller: Controller) -> None:
        self.controller = controller
        self.admin, self.acme, self.globex = (Api(app, t) for t in (ADMIN, ACME, GLOBEX))


@pytest.fixture
def clock() -> list[float]:
    return [100.0]


@pytest.fixture
def clients(clock: list[float]) -> Iterator[Clients]:
    store = SqliteStore(":memory:")
    c = Controller(store)
    emitted: list[Batches] = []
    app = RestApp(c, emitted.append, tokens=Tokens.parse(FILE), limiter=RequestLimiter(1000, lambda: clock[0]))
    out = Clients(app, c)
    a = out.admin
    for hv, ip in (("hv1", "198.18.0.1"), ("hv2", "198.18.0.2"), ("hv3", "198.18.0.3")):
        assert a.put(f"/v1/hypervisors/{hv}", {"dpid": int(hv[2]), "tunnel_ip": ip}).status_int == 201
    assert a.put("/v1/networks/blue", {"vni": 5001, "tenant": "acme", "subnets": SUBNETS}).status_int == 201
    assert a.put("/v1/networks/red", {"vni": 5002, "tenant": "globex", "subnets": SUBNETS}).status_int == 201
    assert a.put("/v1/ports/a1", {"network": "blue", "mac": "02:aa:00:00:00:01", "ips": ["10.1.0.1"],
                                  "hypervisor": "hv1", "interface": "tapA1"}).status_int == 201
    assert a.put("/v1/ports/r2", {"network": "red", "mac": "02:aa:00:00:00:01", "ips": ["10.1.0.1"],
                                  "hypervisor": "hv2", "interface": "tapR2"}).status_int == 201
    assert a.put("/v1/routers/gw-red", {"tenant": "globex",
                                        "interfaces": [{"network": "red", "ip": "10.1.0.254/24"}]}).status_int == 201
    yield out
    store.close()


def names(resp: Any, kind: str) -> list[str]:
    assert resp.status_int == 200
    return [item["name"] for item in resp.json[kind]]


def test_a_tenant_lists_only_its_networks_ports_routers_and_the_names_of_its_hypervisors(clients: Clients) -> None:
    acme, globex = clients.acme, clients.globex
    assert names(acme.get("/v1/networks"), "networks") == ["blue"]
    assert names(acme.get("/v1/ports"), "ports") == ["a1"]
    assert names(acme.get("/v1/routers"), "routers") == []
    assert acme.get("/v1/hypervisors").json == {"hypervisors": [{"name": "hv1"}]}
    assert acme.get("/v1/hypervisors/hv1").json == {"name": "hv1"}
    assert names(globex.get("/v1/routers"), "routers") == ["gw-red"]
    assert names(globex.get("/v1/ports"), "ports") == ["r2"]
    assert names(clients.admin.get("/v1/networks"), "networks") == ["blue", "red"]
    assert set(clients.admin.get("/v1/hypervisors/hv1").json) > {"name", "dpid", "tunnel_ip"}


@pytest.mark.parametrize(("path", "absent"), [
    ("/v1/networks/red", "/v1/networks/nowhere"),
    ("/v1/ports/r2", "/v1/ports/nowhere"),
    ("/v1/routers/gw-red", "/v1/routers/nowhere"),
    ("/v1/hypervisors/hv2", "/v1/hypervisors/nowhere"),
    ("/v1/hypervisors/hv3", "/v1/hypervisors/nowhere"),  # hosts nobody's ports
])
def test_another_tenants_object_answers_exactly_as_if_absent(clients: Clients, path: str, absent: str) -> None:
    for method in ("GET", "DELETE"):
        seen, missing = clients.acme.call(method, path), clients.acme.call(method, absent)
        if "hypervisors" in path and method == "DELETE":
            continue
        assert seen.status_int == missing.status_int == 404
        assert seen.json["error"] == missing.json["error"].replace("nowhere", path.rsplit("/", 1)[1])
    assert clients.admin.get(path).status_int == 200  # nothing was deleted


def test_a_tenant_cannot_write_into_or_over_another_tenants_objects(clients: Clients) -> None:
    acme, admin = clients.acme, clients.admin
    before = {k: admin.get(f"/v1/{k}").json for k in ("networks", "ports", "routers", "hypervisors")}
    resp = acme.put("/v1/networks/red", {"vni": 5009, "tenant": "acme"})  # taken by globex
    assert (resp.status_int, resp.json["error"]) == (404, "network red does not exist")
    resp = acme.put("/v1/ports/x", {"network": "red", "mac": "02:aa:00:00:00:09"})  # into globex's network
    absent = acme.put("/v1/ports/x", {"network": "nowhere", "mac": "02:aa:00:00:00:09"})
    assert (resp.status_int, resp.json["error"]) == (absent.status_int, absent.json["error"].replace("nowhere", "red"))
    resp = acme.put("/v1/routers/gw", {"tenant": "acme", "interfaces": [{"network": "red", "ip": "10.1.0.253/24"}]})
    assert (resp.status_int, resp.json["error"]) == (404, "network red does not exist")
    assert acme.put("/v1/networks/green", {"vni": 5003, "tenant": "globex"}).status_int == 403
    assert acme.put("/v1/hypervisors/hv9", {"dpid": 9, "tunnel_ip": "198.18.0.9"}).status_int == 403
    assert acme.delete("/v1/hypervisors/hv1").status_int == 403
    assert {k: admin.get(f"/v1/{k}").json for k in before} == before


def test_a_tenant_manages_its_own_objects(clients: Clients) -> None:
    acme = clients.acme
    assert acme.put("/v1/networks/green", {"vni": 5003, "tenant": "acme", "subnets": ["10.2.0.0/24"]}).status_int == 201
    assert acme.put("/v1/ports/g1", {"network": "green", "mac": "02:aa:00:00:00:07", "ips": ["10.2.0.7"]}
                    ).status_int == 201
    assert acme.put("/v1/routers/gw", {"tenant": "acme", "interfaces": [{"network": "green", "ip": "10.2.0.1/24"},
                                                                        {"network": "blue", "ip": "10.1.0.254/24"}]}
                    ).status_int == 201
    assert names(acme.get("/v1/routers"), "routers") == ["gw"]
    assert acme.delete("/v1/routers/gw").status_int == 204
    assert acme.delete("/v1/ports/g1").status_int == 204
    assert names(clients.globex.get("/v1/networks"), "networks") == ["red"]


def test_a_conflict_with_another_tenants_object_does_not_name_it(clients: Clients) -> None:
    resp = clients.acme.put("/v1/networks/green", {"vni": 5002, "tenant": "acme"})  # red's VNI
    assert (resp.status_int, resp.json["error"]) == (409, auth.REDACTED_CONFLICT)
    assert "red" in clients.admin.put("/v1/networks/green", {"vni": 5002, "tenant": "acme"}).json["error"]


def test_counters_and_the_graph_need_an_administrator(clients: Clients) -> None:
    for path in ("/v1/stats", "/v1/topology"):
        assert clients.acme.get(path).status_int == 403
        assert clients.admin.get(path).status_int == 200
    assert clients.acme.get("/v1/openapi.json").status_int == 200


def test_a_wrong_or_missing_token_is_refused(clients: Clients) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {ADMIN}"},
                    {"Authorization": "Bearer " + hashlib.sha256(ACME.encode()).hexdigest()}):  # the hash is no token
        assert clients.admin.get("/v1/networks", headers=headers, auth=False).status_int == 401


def test_the_request_rate_is_limited_per_token_with_retry_after(clients: Clients, clock: list[float]) -> None:
    app = clients.admin.app
    app.limiter = RequestLimiter(2, lambda: clock[0])  # bursts of 4
    statuses = [clients.acme.get("/v1/networks").status_int for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    resp = clients.acme.get("/v1/networks")
    assert (resp.status_int, resp.headers["Retry-After"]) == (429, "1")
    assert clients.globex.get("/v1/networks").status_int == 200  # its own bucket
    clock[0] += 1.0
    assert clients.acme.get("/v1/networks").status_int == 200


@pytest.mark.parametrize(("doc", "message"), [
    ([], "non-empty JSON object"),
    ({}, "non-empty JSON object"),
    ({"t": {"role": "root"}}, "a scope is"),
    ({"t": {"tenant": "acme", "role": "admin"}}, "a scope is"),
    ({"t": {"tenant": "bad name!"}}, "tenant"),
    ({"sha256:abc": {"role": "admin"}}, "64 hex digits"),
    ({"t": {"role": "admin"}, "sha256:" + hashlib.sha256(b"t").hexdigest(): {"tenant": "acme"}}, "given twice"),
])
def test_a_bad_tokens_file_is_refused_with_the_reason(doc: Any, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        Tokens.parse(doc)


def test_the_tokens_file_and_the_single_admin_token_together(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(FILE))
    tokens = rest_tokens("solo", str(path))
    assert tokens is not None
    assert tokens.scope("Bearer solo") is not None and tokens.scope("Bearer solo").admin  # type: ignore[union-attr]
    assert tokens.scope(f"Bearer {ACME}") == Scope(hashlib.sha256(ACME.encode()).hexdigest()[:12], "acme")
    assert rest_tokens(None, None) is None
    with pytest.raises(AuthError, match="cannot read tokens file"):
        Tokens.load(tmp_path / "missing.json")


def test_visible_is_the_one_filter_for_any_route(clients: Clients) -> None:
    topo = clients.controller.topo
    acme = Scope("k", "acme")
    assert [p for p in topo.ports.values() if visible(acme, "ports", p, topo)] == [topo.ports["a1"]]
    assert [h.name for h in topo.hypervisors.values() if visible(acme, "hypervisors", h, topo)] == ["hv1"]
    assert all(visible(auth.ADMIN, "ports", p, topo) for p in topo.ports.values())


def test_authorize_and_visible_json_are_the_rules_for_any_other_route(clients: Clients) -> None:
    """What a transaction applies to each operation and an event stream to each event."""
    topo = clients.controller.topo
    acme = Scope("k", "acme")
    red, a1 = topo.networks["red"], topo.ports["a1"]
    with pytest.raises(NotFound, match="network red does not exist"):
        auth.authorize(acme, "DELETE", "networks", "red", red, None, topo)
    with pytest.raises(NotFound, match="network red does not exist"):
        auth.authorize(acme, "PUT", "ports", "x", None, {"network": "red", "mac": "02:aa:00:00:00:09"}, topo)
    with pytest.raises(Forbidden):
        auth.authorize(acme, "PUT", "networks", "green", None, {"vni": 5003, "tenant": "globex"}, topo)
    auth.authorize(acme, "PUT", "ports", "a1", a1, {"network": "blue", "mac": "02:aa:00:00:00:01"}, topo)
    auth.authorize(auth.ADMIN, "DELETE", "networks", "red", red, None, topo)
    assert auth.visible_json(acme, "networks", red.to_json(), topo) is False
    assert auth.visible_json(acme, "ports", a1.to_json(), topo) is True
    assert auth.visible_json(acme, "ports", topo.ports["r2"].to_json(), topo) is False
    assert auth.visible_json(acme, "routers", topo.routers["gw-red"].to_json(), topo) is False
    assert auth.visible_json(acme, "hypervisors", {"name": "hv1"}, topo) is True
    assert auth.visible_json(acme, "hypervisors", {"name": "hv2"}, topo) is False
    assert auth.visible_json(acme, "switch", {}, topo) is False
    assert auth.visible_json(auth.ADMIN, "switch", {}, topo) is True


def test_a_tenant_creates_no_more_than_its_quota(clients: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(auth.TENANT_QUOTA, "networks", 3)
    acme = clients.acme
    assert [acme.put(f"/v1/networks/n{i}", {"vni": 6000 + i, "tenant": "acme"}).status_int for i in range(3)] == \
        [201, 201, 403]  # blue is acme's too
    resp = acme.put("/v1/networks/n9", {"vni": 6009, "tenant": "acme"})
    assert (resp.status_int, resp.json["error"]) == (403, "tenant acme has its quota of 3 networks")
    assert acme.put("/v1/networks/n0", {"vni": 6000, "tenant": "acme", "mtu": 1400}).status_int == 200  # changing one
    assert clients.globex.put("/v1/networks/g1", {"vni": 7001, "tenant": "globex"}).status_int == 201
    assert clients.admin.put("/v1/networks/n8", {"vni": 6008, "tenant": "acme"}).status_int == 201  # no quota


def test_a_tenants_transaction_is_scoped_operation_by_operation_and_refused_whole(clients: Clients) -> None:
    acme = clients.acme
    before = clients.admin.get("/v1/ports").json
    ops = [{"op": "put", "kind": "ports", "name": "a9",
            "body": {"network": "blue", "mac": "02:aa:00:00:00:09", "ips": ["10.1.0.9"]}},
           {"op": "delete", "kind": "ports", "name": "r2"}]  # globex's: absent for acme
    refused = acme.post("/v1/transactions", {"operations": ops})
    assert (refused.status_int, refused.json["index"]) == (404, 1)
    assert "r2 does not exist" in refused.json["error"]
    assert clients.admin.get("/v1/ports").json == before
    assert acme.post("/v1/transactions", {"operations": ops[:1]}).status_int == 200
    writes_hv = [{"op": "put", "kind": "hypervisors", "name": "hv9", "body": {"dpid": 9, "tunnel_ip": "198.18.0.9"}}]
    assert acme.post("/v1/transactions", {"operations": writes_hv}).status_int == 403


def test_a_tenant_reads_only_its_own_events_and_no_metrics(clients: Clients) -> None:
    since = clients.admin.get("/v1/events?timeout=0").json["last"]
    clients.admin.put("/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["10.1.0.3"]})
    clients.admin.put("/v1/ports/r3", {"network": "red", "mac": "02:aa:00:00:00:03", "ips": ["10.1.0.3"]})
    clients.admin.delete("/v1/ports/r3")

    def seen(api: Api) -> list[tuple[str, str]]:
        page = api.get(f"/v1/events?since={since}&timeout=0").json
        return [(e["type"], e["name"]) for e in page["events"]]

    assert seen(clients.acme) == [("created", "a3")]
    assert seen(clients.globex) == [("created", "r3"), ("deleted", "r3")]
    assert len(seen(clients.admin)) == 3
    assert clients.acme.get("/metrics").status_int == 403
    assert clients.admin.get("/metrics").status_int == 200
