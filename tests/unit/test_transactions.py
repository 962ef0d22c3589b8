"""POST /v1/transactions in-process: all or nothing (memory, store, switches, events), order, one store
write and one batch per switch, and ``"wait": "hv"`` answering only after the switches' barrier replies."""

from __future__ import annotations

from typing import Any

import eventlet
import pytest

from ryu_overlay.controller import Batches, Controller
from ryu_overlay.ofmsg import barrier
from ryu_overlay.rest import RestApp
from ryu_overlay.testing.rest_client import Api

HV1 = {"dpid": "0000000000000001", "tunnel_ip": "198.18.0.1", "tunnel_port": "vxlan0"}
BLUE = {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"], "mtu": 1450}
A1 = {"network": "blue", "mac": "02:aa:00:00:00:01", "ips": ["10.1.0.1", "fd00:1::1"], "hypervisor": "hv1",
      "interface": "tapA1"}
A2 = {"network": "blue", "mac": "02:aa:00:00:00:02", "ips": ["10.1.0.2"]}
SEED = (("/v1/hypervisors/hv1", HV1), ("/v1/hypervisors/hv2", {"dpid": 2, "tunnel_ip": "198.18.0.2"}),
        ("/v1/networks/blue", BLUE), ("/v1/networks/red", {"vni": 5002, "tenant": "acme"}), ("/v1/ports/a1", A1),
        ("/v1/ports/a2", A2))
GREEN = {"vni": 5003, "tenant": "acme", "subnets": ["10.3.0.0/24"]}


def seed(api: Api) -> None:
    for path, body in SEED:
        assert api.put(path, body).status_int == 201


def connect(c: Controller, dpid: int, ofports: dict[str, int]) -> None:
    c.switch_connected(dpid)
    c.ports_reply(dpid, ofports, False)
    c.flows_reply(dpid, [], False)
    c.groups_reply(dpid, [], False)
    c.meters_reply(dpid, [], False)


def messages(emitted: list[Batches]) -> list[dict[int, list[str]]]:
    return [{dpid: [str(m) for m in msgs] for dpid, msgs in batches.items()} for batches in emitted]


def put(kind: str, name: str, body: Any) -> dict[str, Any]:
    return {"op": "put", "kind": kind, "name": name, "body": body}


def delete(kind: str, name: str) -> dict[str, Any]:
    return {"op": "delete", "kind": kind, "name": name}


def green_port(i: int, hv: str = "hv1") -> dict[str, Any]:
    return {"network": "green", "mac": f"02:cc:00:00:00:{i:02x}", "ips": [f"10.3.0.{i}"], "hypervisor": hv,
            "interface": f"tapG{i}"}


def green_ops(n: int) -> list[dict[str, Any]]:
    return [put("networks", "green", GREEN), *(put("ports", f"g{i}", green_port(i)) for i in range(1, n + 1))]


OFPORTS = {"vxlan0": 100, "tapA1": 1, **{f"tapG{i}": 10 + i for i in range(1, 9)}}


@pytest.fixture
def seeded(env: Any) -> Any:
    seed(env.api)
    connect(env.controller, 1, OFPORTS)
    env.emitted.clear()
    return env


def test_a_network_and_its_ports_in_one_transaction_are_created_in_order(seeded):
    resp = seeded.api.post("/v1/transactions", {"operations": green_ops(3)})
    assert resp.status_int == 200
    assert [(r["kind"], r["name"], r["status"]) for r in resp.json["results"]] == [
        ("networks", "green", 201), ("ports", "g1", 201), ("ports", "g2", 201), ("ports", "g3", 201)]
    assert resp.json["results"][1]["body"] == seeded.api.get("/v1/ports/g1").json
    assert "unconfirmed" not in resp.json
    assert [p.name for p in seeded.store.load()[2] if p.network == "green"] == ["g1", "g2", "g3"]


def test_results_are_what_the_single_routes_answer(seeded, make_env, tmp_path):
    ops = [put("hypervisors", "hv1", {**HV1, "tunnel_port": "vx1"}), put("ports", "a2", {**A2, "ips": ["10.1.0.9"]}),
           delete("ports", "a1"), put("networks", "blue", {**BLUE, "mtu": 1400})]
    resp = seeded.api.post("/v1/transactions", {"operations": ops})
    single = make_env(db=tmp_path / "single.sqlite")
    seed(single.api)
    connect(single.controller, 1, OFPORTS)
    for op, result in zip(ops, resp.json["results"], strict=True):
        answer = single.api.call(op["op"].upper(), f"/v1/{op['kind']}/{op['name']}", op.get("body"))
        assert (result["status"], result["body"]) == (answer.status_int, answer.json if answer.body else None)


def test_all_changes_are_one_store_write_and_one_batch_per_switch(seeded, monkeypatch):
    writes: list[list[Any]] = []
    apply = seeded.store.apply

    def counted(changes: Any) -> None:
        writes.append(list(changes))
        apply(writes[-1])

    monkeypatch.setattr(seeded.store, "apply", counted)
    resp = seeded.api.post("/v1/transactions", {"operations": green_ops(5)})
    assert resp.status_int == 200
    assert [len(w) for w in writes] == [6]
    assert len(seeded.emitted) == 1 and list(seeded.emitted[0]) == [1]


def test_the_flows_are_those_the_single_requests_leave(seeded, make_env, tmp_path):
    seeded.api.post("/v1/transactions", {"operations": [*green_ops(4), delete("ports", "g2"),
                                                        put("ports", "g3", green_port(7))]})
    single = make_env(db=tmp_path / "single.sqlite")
    seed(single.api)
    connect(single.controller, 1, OFPORTS)
    for op in [*green_ops(4), delete("ports", "g2"), put("ports", "g3", green_port(7))]:
        assert single.api.call(op["op"].upper(), f"/v1/{op['kind']}/{op['name']}", op.get("body")).status_int < 300
    tx, one_by_one = seeded.controller.switches[1], single.controller.switches[1]
    assert tx.flows == one_by_one.flows and tx.groups == one_by_one.groups and tx.meters == one_by_one.meters


FAILING = [
    # (operations, index of the refused one, status)
    ([*green_ops(3), put("ports", "g9", {**green_port(9), "mac": "02:cc:00:00:00:01"})], 4, 409),
    ([*green_ops(2), put("ports", "g9", {**green_port(9), "network": "nowhere"})], 3, 404),
    ([*green_ops(2), put("ports", "g9", {**green_port(9), "ips": ["10.9.0.1"]})], 3, 400),
    ([delete("ports", "a1"), delete("networks", "blue")], 1, 409),
    ([put("hypervisors", "hv1", {**HV1, "tunnel_ip": "198.18.0.9"}), put("ports", "a1", {**A1, "interface": "tapG1"}),
      delete("ports", "a2"), put("networks", "red", {"vni": 5001, "tenant": "acme"})], 3, 409),
    ([put("networks", "green", GREEN), delete("networks", "green"), put("networks", "green", GREEN),
      delete("hypervisors", "nobody")], 3, 404),
    ([*green_ops(2), {"op": "put", "kind": "ports", "name": "g3"}], 3, 400),
]


@pytest.mark.parametrize(("ops", "index", "status"), FAILING)
def test_a_refused_operation_leaves_nothing_of_the_earlier_ones(seeded, ops, index, status):
    before, last = seeded.snapshot(), seeded.controller.events.last
    flows = {vni: dict(cookies) for vni, cookies in seeded.controller.switches[1].flows.items()}
    resp = seeded.api.post("/v1/transactions", {"operations": ops, "wait": "hv"})
    assert resp.status_int == status
    assert resp.json["index"] == index
    assert resp.json["error"].startswith(f"operation {index}")
    assert seeded.snapshot() == before
    assert seeded.emitted == []
    assert seeded.controller.switches[1].flows == flows
    assert seeded.controller.events.last == last
    assert not seeded.controller.in_transaction


def test_after_a_refused_transaction_the_same_one_without_its_fault_sends_what_it_would_have(seeded, make_env,
                                                                                          tmp_path):
    bad = put("ports", "g9", {**green_port(9), "mac": "02:cc:00:00:00:01"})
    assert seeded.api.post("/v1/transactions", {"operations": [*green_ops(3), bad]}).status_int == 409
    seeded.api.post("/v1/transactions", {"operations": green_ops(3)})
    fresh = make_env(db=tmp_path / "fresh.sqlite")
    seed(fresh.api)
    connect(fresh.controller, 1, OFPORTS)
    fresh.emitted.clear()
    fresh.api.post("/v1/transactions", {"operations": green_ops(3)})
    assert messages(seeded.emitted) == messages(fresh.emitted)


def test_a_store_failure_undoes_the_whole_transaction(seeded, monkeypatch):
    before = seeded.snapshot()

    def broken(changes: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(seeded.store, "apply", broken)
    resp = seeded.api.post("/v1/transactions", {"operations": [*green_ops(2), delete("ports", "a2")]})
    assert (resp.status_int, resp.json) == (500, {"error": "internal error"})
    monkeypatch.undo()
    assert seeded.snapshot() == before and seeded.emitted == []


@pytest.mark.parametrize(("body", "index"), [
    (None, None), ([], None), ({}, None), ({"operations": {}}, None), ({"operations": [], "extra": 1}, None),
    ({"operations": [], "wait": "all"}, None), ({"operations": [], "wait": None}, None),
    ({"operations": [], "timeout": -1}, None),
    ({"operations": [], "timeout": 301}, None), ({"operations": [], "timeout": True}, None),
    ({"operations": ["put"]}, 0), ({"operations": [{"op": "get", "kind": "ports", "name": "a1"}]}, 0),
    ({"operations": [delete("ports", "a1"), {"op": "delete", "kind": "things", "name": "a1"}]}, 1),
    ({"operations": [{"op": "delete", "kind": "ports", "name": 7}]}, 0),
    ({"operations": [{"op": "delete", "kind": {}, "name": ""}]}, 0),
    ({"operations": [{**delete("ports", "a1"), "body": {}}]}, 0),
    ({"operations": [put("ports", "a1", A1), put("ports", "x" * 65, A1)]}, 1),
])
def test_a_malformed_transaction_is_refused_with_400_and_changes_nothing(seeded, body, index):
    before = seeded.snapshot()
    resp = seeded.api.post("/v1/transactions", body)
    assert resp.status_int == 400
    assert resp.json.get("index") == index
    assert seeded.snapshot() == before and seeded.emitted == []


def test_an_empty_transaction_answers_no_results(seeded):
    resp = seeded.api.post("/v1/transactions", {"operations": [], "wait": "hv"})
    assert (resp.status_int, resp.json) == (200, {"results": [], "unconfirmed": []})


def test_only_post_is_allowed(seeded):
    assert seeded.api.get("/v1/transactions").status_int == 405


# --- wait: "hv" ------------------------------------------------------------------------------------


class Switches:
    """Stands for the app's send: numbers each barrier as a connection would and records it as sent."""

    def __init__(self) -> None:
        self.app: Any = None
        self.xid = 0
        self.sent: list[tuple[int, int]] = []

    def emit(self, batches: Batches) -> None:
        for dpid, msgs in batches.items():
            for msg in msgs:
                if type(msg) is type(barrier()):
                    self.xid += 1
                    self.sent.append((dpid, self.xid))
                    self.app.controller.barrier_sent(dpid, self.xid)


@pytest.fixture
def waiting(env: Any) -> Any:
    switches = Switches()
    app = RestApp(env.controller, switches.emit)
    switches.app = app
    api = Api(app)
    seed(api)
    connect(env.controller, 1, OFPORTS)
    connect(env.controller, 2, {"vxlan0": 100, **{f"tapG{i}": 10 + i for i in range(1, 9)}})
    return api, switches


def test_wait_hv_answers_only_once_every_affected_switch_replied_to_its_barriers(env, waiting):
    api, switches = waiting
    replied: list[tuple[int, int]] = []

    def switch_replies() -> None:  # runs only while the request waits
        for dpid, xid in list(switches.sent):
            replied.append((dpid, xid))
            env.controller.barrier_replied(dpid, xid)

    eventlet.spawn(switch_replies)
    ops = [*green_ops(2), put("ports", "g3", green_port(3, "hv2"))]
    resp = api.post("/v1/transactions", {"operations": ops, "wait": "hv", "timeout": 30})
    assert resp.status_int == 200 and resp.json["unconfirmed"] == []
    assert {dpid for dpid, _ in switches.sent} == {1, 2}
    assert replied == switches.sent


def test_wait_hv_gives_up_at_the_timeout_and_names_the_switches_that_did_not_confirm(env, waiting):
    api, switches = waiting
    eventlet.spawn(lambda: [env.controller.barrier_replied(d, x) for d, x in switches.sent if d == 2])
    ops = [*green_ops(2), put("ports", "g3", green_port(3, "hv2"))]
    resp = api.post("/v1/transactions", {"operations": ops, "wait": "hv", "timeout": 0.2})
    assert resp.status_int == 200 and resp.json["unconfirmed"] == ["hv1"]


def test_wait_hv_stops_waiting_for_a_switch_that_disconnects(env, waiting):
    api, switches = waiting
    eventlet.spawn(lambda: (env.controller.switch_disconnected(1),
                            [env.controller.barrier_replied(d, x) for d, x in switches.sent if d == 2]))
    ops = [*green_ops(2), put("ports", "g3", green_port(3, "hv2"))]
    resp = api.post("/v1/transactions", {"operations": ops, "wait": "hv", "timeout": 10})
    assert resp.status_int == 200 and resp.json["unconfirmed"] == ["hv1"]
    assert len(env.controller.confirmations) == 0


def test_without_wait_the_answer_does_not_wait_for_barriers(env, waiting):
    api, switches = waiting
    resp = api.post("/v1/transactions", {"operations": green_ops(2)})
    assert resp.status_int == 200 and switches.sent and len(env.controller.confirmations) == 0


# --- routers: one more entry of the kind table ------------------------------------------------------

R1 = {"tenant": "acme", "interfaces": [{"network": "green", "ip": "10.3.0.254/24"}]}


def test_a_network_its_router_and_its_ports_in_one_transaction_then_all_removed_in_one(seeded):
    ops = [put("networks", "green", GREEN), put("routers", "r1", R1), put("ports", "g1", green_port(1))]
    resp = seeded.api.post("/v1/transactions", {"operations": ops})
    assert [r["status"] for r in resp.json["results"]] == [201, 201, 201]
    assert resp.json["results"][1]["body"] == seeded.api.get("/v1/routers/r1").json
    assert seeded.api.delete("/v1/networks/green").status_int == 409  # held by its router and port
    resp = seeded.api.post("/v1/transactions", {"operations": [delete("ports", "g1"), delete("routers", "r1"),
                                                               delete("networks", "green")]})
    assert [r["status"] for r in resp.json["results"]] == [204, 204, 204]
    assert seeded.api.get("/v1/routers").json == {"routers": []}


def test_a_refused_router_undoes_the_network_and_router_before_it(seeded):
    before = seeded.snapshot()
    ops = [put("networks", "green", GREEN), put("routers", "r1", R1),
           put("routers", "r2", {**R1, "interfaces": [{"network": "green", "ip": "10.3.0.253/24"}]})]
    resp = seeded.api.post("/v1/transactions", {"operations": ops})
    assert (resp.status_int, resp.json["index"]) == (409, 2)
    assert seeded.snapshot() == before and seeded.api.get("/v1/routers").json == {"routers": []}
    assert seeded.emitted == []
