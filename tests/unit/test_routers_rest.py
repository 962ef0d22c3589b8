"""The routers of the REST contract (issue #12): bodies, answers, every error code, persistence."""

from __future__ import annotations

from typing import Any

import pytest

HV = {"dpid": 1, "tunnel_ip": "198.18.0.1"}
HV3 = {"dpid": 3, "tunnel_ip": "198.18.0.3"}
NETS: dict[str, dict[str, Any]] = {
    "blue": {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"]},
    "green": {"vni": 5002, "tenant": "acme", "subnets": ["10.2.0.0/24"]},
    "plain": {"vni": 5003, "tenant": "acme"},
    "red": {"vni": 5004, "tenant": "globex", "subnets": ["10.9.0.0/24"]},
    "spare": {"vni": 5005, "tenant": "acme", "subnets": ["10.3.0.0/24"]},
}
PORTS: dict[str, dict[str, Any]] = {
    "vmA1": {"network": "blue", "mac": "02:aa:00:00:00:01", "ips": ["10.1.0.1", "fd00:1::1"], "hypervisor": "hv1",
             "interface": "tapA1"},
    "vmG1": {"network": "green", "mac": "02:aa:00:00:00:02", "ips": ["10.2.0.1"]},
    "vmS1": {"network": "spare", "mac": "02:aa:00:00:00:03", "ips": ["10.3.0.1"]},
}
# The example, as written.
R1: dict[str, Any] = {"tenant": "acme",
      "interfaces": [{"network": "blue", "ip": "10.1.0.254/24"},
                     {"network": "blue", "ip": "fd00:1::fe/64"},
                     {"network": "green", "ip": "10.2.0.254/24"}],
      "gateway": {"hypervisor": "hv3", "interface": "uplink0", "ip": "198.51.100.2/24", "next_hop": "198.51.100.1"},
      "snat": True,
      "floating_ips": {"198.51.100.10": "vmA1"}}


def seed(api: Any) -> None:
    api.put("/v1/hypervisors/hv1", HV)
    api.put("/v1/hypervisors/hv3", HV3)
    for name, body in NETS.items():
        assert api.put(f"/v1/networks/{name}", body).status_int == 201
    for name, body in PORTS.items():
        assert api.put(f"/v1/ports/{name}", body).status_int == 201


@pytest.fixture
def routed(env: Any) -> Any:
    seed(env.api)
    resp = env.api.put("/v1/routers/r1", R1)
    assert resp.status_int == 201, resp.json
    env.emitted.clear()
    return env


def test_put_answers_the_body_with_an_allocated_mac_and_get_and_list_show_it(routed):
    r1 = routed.api.get("/v1/routers/r1").json
    assert r1 == {**R1, "name": "r1", "mac": r1["mac"]}
    assert r1["mac"].startswith("0e:52:00:")
    assert routed.api.get("/v1/routers").json == {"routers": [r1]}


def test_a_second_put_keeps_the_mac_and_another_router_gets_another(routed):
    mac = routed.api.get("/v1/routers/r1").json["mac"]
    resp = routed.api.put("/v1/routers/r1", {"tenant": "acme", "interfaces": R1["interfaces"][:2]})
    assert resp.status_int == 200
    assert resp.json["mac"] == mac
    assert resp.json["gateway"] is None and resp.json["snat"] is False and resp.json["floating_ips"] == {}
    other = routed.api.put("/v1/routers/r2", {"tenant": "acme", "interfaces": [{"network": "spare",
                                                                                 "ip": "10.3.0.254/24"}]})
    assert other.status_int == 201 and other.json["mac"] not in (mac, "")


def test_snat_defaults_to_true_with_a_gateway(routed):
    body = {k: v for k, v in R1.items() if k != "snat"}
    assert routed.api.put("/v1/routers/r1", body).json["snat"] is True


def test_restart_keeps_routers_and_their_macs(routed, make_env):
    before = routed.api.get("/v1/routers").json
    routed.store.close()
    again = make_env(db=routed.path)
    assert again.api.get("/v1/routers").json == before
    assert again.controller.topo.router_of("green").name == "r1"


def test_delete_answers_204_frees_the_networks_and_then_they_can_go(routed):
    assert routed.api.delete("/v1/networks/green").status_int == 409
    assert routed.api.delete("/v1/routers/r1").status_int == 204
    assert routed.api.get("/v1/routers/r1").status_int == 404
    assert routed.api.delete("/v1/ports/vmG1").status_int == 204
    assert routed.api.delete("/v1/networks/green").status_int == 204
    assert routed.store.load()[3] == []


def _with(**changes: Any) -> dict[str, Any]:
    return {**R1, **changes}


IFACES = R1["interfaces"]
REFUSALS = [
    # 400: the body
    ({"interfaces": IFACES}, 400, "missing field(s): tenant"),
    (_with(mac="0e:52:00:00:00:09"), 400, "unknown field(s): mac"),
    (_with(name="r1"), 400, "unknown field(s): name"),
    (_with(interfaces=[]), 400, "interfaces must be a non-empty list of {network, ip}"),
    (_with(interfaces=[{"network": "blue", "ip": "10.1.0.254"}]), 400,
     "interface ip must be an address with its prefix length, e.g. 10.1.0.254/24"),
    (_with(interfaces=[{"network": "blue", "ip": "10.1.0.254/24", "mtu": 1}]), 400, "unknown field(s): mtu"),
    (_with(interfaces=[{"network": "blue", "ip": "10.1.0.0/24"}]), 400,
     "interface ip 10.1.0.0/24 is the subnet's own address"),
    (_with(interfaces=[{"network": "blue", "ip": "10.1.0.255/24"}]), 400,
     "interface ip 10.1.0.255/24 is the subnet's broadcast address"),
    (_with(interfaces=[{"network": "blue", "ip": "10.1.0.300/24"}]), 400,
     "interface ip '10.1.0.300/24' is not an address with a prefix length"),
    (_with(floating_ips={"2001:db8::1": "vmA1"}), 400, "floating ip 2001:db8::1 must be IPv4"),
    (_with(interfaces=[{"network": "blue", "ip": "10.1.0.254/24"}, {"network": "blue", "ip": "10.1.0.253/24"}]), 400,
     "interface 10.1.0.253/24 overlaps interface 10.1.0.254/24 of blue"),
    # 400: an interface IP outside its network's subnets
    (_with(interfaces=[{"network": "blue", "ip": "10.2.0.254/24"}]), 400,
     "interface ip 10.2.0.254/24 is not an address of a subnet of network blue (10.1.0.0/24, fd00:1::/64)"),
    (_with(interfaces=[{"network": "blue", "ip": "10.1.0.254/16"}]), 400,
     "interface ip 10.1.0.254/16 is not an address of a subnet of network blue (10.1.0.0/24, fd00:1::/64)"),
    (_with(interfaces=[{"network": "plain", "ip": "10.7.0.1/24"}]), 400,
     "interface ip 10.7.0.1/24 is not an address of a subnet of network plain (none)"),
    (_with(gateway={**R1["gateway"], "next_hop": "198.51.101.1"}), 400,
     "gateway next_hop 198.51.101.1 must be another address of 198.51.100.0/24"),
    (_with(gateway={**R1["gateway"], "ip": "fd00:9::1/64"}), 400, "gateway ip must be IPv4"),
    (_with(gateway=None), 400, "snat needs a gateway"),
    (_with(snat="yes"), 400, "snat must be true or false"),
    (_with(floating_ips=["198.51.100.10"]), 400, "floating_ips must map an IPv4 address to a port name"),
    # 404
    (_with(interfaces=[{"network": "nowhere", "ip": "10.1.0.254/24"}]), 404, "network nowhere does not exist"),
    (_with(gateway={**R1["gateway"], "hypervisor": "hv9"}), 404, "hypervisor hv9 does not exist"),
    (_with(floating_ips={"198.51.100.10": "ghost"}), 404, "port ghost does not exist"),
    # 409: another tenant's network
    (_with(interfaces=[{"network": "red", "ip": "10.9.0.254/24"}]), 409,
     "network red belongs to tenant globex, not acme"),
    # 409: a floating IP outside the gateway's subnet, or used twice
    (_with(floating_ips={"198.51.101.10": "vmA1"}), 409,
     "floating ip 198.51.101.10 is outside the gateway's subnet 198.51.100.0/24 or is its own address"),
    (_with(floating_ips={"198.51.100.2": "vmA1"}), 409,
     "floating ip 198.51.100.2 is outside the gateway's subnet 198.51.100.0/24 or is its own address"),
    (_with(floating_ips={"198.51.100.10": "vmA1", "198.51.100.11": "vmA1"}), 409,
     "port vmA1 is given two floating ips"),
    (_with(floating_ips={"198.51.100.10": "vmS1"}), 409,
     "port vmS1 of floating ip 198.51.100.10 is not in a network of router r1"),
    # 409: an address a port has
    (_with(interfaces=[{"network": "blue", "ip": "10.1.0.1/24"}]), 409,
     "ip 10.1.0.1 is already used by port vmA1 in network blue"),
]


@pytest.mark.parametrize("body,status,message", REFUSALS, ids=[f"{s}-{i}" for i, (_, s, _) in enumerate(REFUSALS)])
def test_a_refused_router_answers_the_contract_code_and_changes_nothing(routed, body, status, message):
    for name in ("r1", "r9"):  # replacing the router, and a new one (whose networks are r1's: 409 anyway)
        before = routed.snapshot()
        resp = routed.api.put(f"/v1/routers/{name}", body)
        if name == "r1" or status != 409:
            assert (resp.status_int, resp.json) == (status, {"error": message})
        assert resp.status_int == status
        assert routed.emitted == []
        assert routed.snapshot() == before


def test_a_network_with_a_router_refuses_a_second_router(routed):
    before = routed.snapshot()
    resp = routed.api.put("/v1/routers/r2", {"tenant": "acme", "interfaces": [{"network": "green",
                                                                                "ip": "10.2.0.253/24"}]})
    assert (resp.status_int, resp.json) == (409, {"error": "network green already has router r1"})
    assert routed.snapshot() == before


def test_a_floating_ip_of_another_router_is_refused(routed):
    routed.api.put("/v1/hypervisors/hv3", HV3)
    body = {"tenant": "acme", "interfaces": [{"network": "spare", "ip": "10.3.0.254/24"}],
            "gateway": {**R1["gateway"], "ip": "198.51.100.3/24"}, "floating_ips": {"198.51.100.10": "vmS1"}}
    resp = routed.api.put("/v1/routers/r2", body)
    assert (resp.status_int, resp.json) == (409, {"error": "floating ip 198.51.100.10 is already used by router r1"})
    body["gateway"] = R1["gateway"]
    resp = routed.api.put("/v1/routers/r2", body)
    assert (resp.status_int, resp.json) == (409, {"error": "gateway ip 198.51.100.2 is already used by router r1"})


@pytest.mark.parametrize("method,path,body,status,message", [
    ("PUT", "/v1/ports/vmB9", {"network": "blue", "mac": "02:aa:00:00:00:09", "ips": ["10.1.0.254"]}, 409,
     "ip 10.1.0.254 is router r1's in network blue"),
    ("PUT", "/v1/ports/vmB9", {"network": "blue", "mac": "0e:52:00:00:00:01"}, 409,
     "mac 0e:52:00:00:00:01 is router r1's in network blue"),
    ("PUT", "/v1/networks/blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/16", "fd00:1::/64"]}, 409,
     "router r1 has interface 10.1.0.254/24 outside the new subnets"),
    ("PUT", "/v1/networks/green", {"vni": 5002, "tenant": "globex", "subnets": ["10.2.0.0/24"]}, 409,
     "network green is attached to router r1 of tenant acme"),
    ("DELETE", "/v1/networks/blue", None, 409, "network blue still has port(s) vmA1"),
    ("DELETE", "/v1/networks/plain", None, 204, ""),
    ("DELETE", "/v1/ports/vmA1", None, 409, "port vmA1 is the target of floating ip 198.51.100.10 of router r1"),
    ("PUT", "/v1/ports/vmA1", {"network": "spare", "mac": "02:aa:00:00:00:01", "ips": ["10.3.0.9"]}, 409,
     "port vmA1 is the target of floating ip 198.51.100.10 of router r1"),
    ("DELETE", "/v1/routers/r9", None, 404, "router r9 does not exist"),
    ("GET", "/v1/routers/r9", None, 404, "router r9 does not exist"),
])
def test_other_objects_respect_the_router(routed, method, path, body, status, message):
    before = routed.snapshot()
    resp = routed.api.call(method, path, body)
    assert resp.status_int == status
    if status != 204:
        assert resp.json == {"error": message}
        assert routed.snapshot() == before


def test_green_without_its_ports_still_cannot_go_while_routed(routed):
    routed.api.delete("/v1/ports/vmG1")
    resp = routed.api.delete("/v1/networks/green")
    assert (resp.status_int, resp.json) == (409, {"error": "network green is still attached to router r1"})


def test_the_gateway_hypervisor_cannot_be_deleted_while_a_router_uses_it(routed):
    before = routed.snapshot()
    resp = routed.api.delete("/v1/hypervisors/hv3")
    assert (resp.status_int, resp.json) == (409, {"error": "hypervisor hv3 is the gateway of router r1"})
    assert routed.snapshot() == before
    no_gateway = {**R1, "gateway": None, "snat": False, "floating_ips": {}}
    assert routed.api.put("/v1/routers/r1", no_gateway).status_int == 200
    assert routed.api.delete("/v1/hypervisors/hv3").status_int == 204
