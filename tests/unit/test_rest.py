"""The placement REST API driven in-process through webob: every route, every refusal, persistence.

Every response goes through ``Api.call`` (conftest), which fails the test unless the status is one
the OpenAPI document declares for that route and the body validates against the declared schema.
"""

from __future__ import annotations

import json
from typing import Any

import openapi_spec_validator
import pytest

from ryu_overlay.model import VNI_MAX
from ryu_overlay.rest import MAX_BODY
from ryu_overlay.store import SqliteStore
from ryu_overlay.testing.scenario import garp, handshake

HV1 = {"dpid": "0000000000000001", "tunnel_ip": "198.18.0.1", "tunnel_port": "vxlan0"}
HV2 = {"dpid": 2, "tunnel_ip": "198.18.0.2"}
BLUE = {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"], "mtu": 1450}
RED = {"vni": 5002, "tenant": "acme"}
A1 = {"network": "blue", "mac": "02:aa:00:00:00:01", "ips": ["10.1.0.1", "fd00:1::1"], "hypervisor": "hv1",
      "interface": "tapA1"}
A2 = {"network": "blue", "mac": "02:aa:00:00:00:02", "ips": ["10.1.0.2"]}
SEED = (("/v1/hypervisors/hv1", HV1), ("/v1/hypervisors/hv2", HV2), ("/v1/networks/blue", BLUE),
        ("/v1/networks/red", RED), ("/v1/ports/a1", A1), ("/v1/ports/a2", A2))

HV1_JSON = {"name": "hv1", "dpid": "0000000000000001", "tunnel_ip": "198.18.0.1", "tunnel_port": "vxlan0",
            "connected": False, "in_sync": False, "ofports": None, "master": None, "ovsdb": None,
            "tunnel_type": "vxlan", "cert_cn": "hv1"}
HV2_JSON = {"name": "hv2", "dpid": "0000000000000002", "tunnel_ip": "198.18.0.2", "tunnel_port": "vxlan0",
            "connected": False, "in_sync": False, "ofports": None, "master": None, "ovsdb": None,
            "tunnel_type": "vxlan", "cert_cn": "hv2"}
BLUE_JSON = {"name": "blue", "vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"], "mtu": 1450,
             "unknown_arp": "replicate", "dhcp": True, "mobility": None}
RED_JSON = {"name": "red", "vni": 5002, "tenant": "acme", "subnets": [], "mtu": None, "unknown_arp": "replicate",
            "dhcp": True, "mobility": None}
A1_JSON = {"name": "a1", "network": "blue", "mac": "02:aa:00:00:00:01", "ips": ["10.1.0.1", "fd00:1::1"],
           "hypervisor": "hv1", "interface": "tapA1", "location_source": "declared", "mobility_seq": 0,
           "frozen": False, "recent_moves": [], "duplicate": None, "mobility": None}
A2_JSON = {"name": "a2", "network": "blue", "mac": "02:aa:00:00:00:02", "ips": ["10.1.0.2"], "hypervisor": None,
           "interface": None, "location_source": None, "mobility_seq": 0, "frozen": False, "recent_moves": [],
           "duplicate": None, "mobility": None}


def seed(api: Any) -> None:
    for path, body in SEED:
        resp = api.put(path, body)
        assert resp.status_int == 201, resp.json


@pytest.fixture
def seeded(env: Any) -> Any:
    seed(env.api)
    env.emitted.clear()
    return env


def error(resp: Any) -> str:
    assert set(resp.json) == {"error"}
    return resp.json["error"]




# --- hypervisors --------------------------------------------------------------------------------


def test_put_hypervisor_creates_with_201_then_updates_with_200(env):
    resp = env.api.put("/v1/hypervisors/hv1", HV1)
    assert (resp.status_int, resp.json) == (201, HV1_JSON)
    assert env.emitted == [{}]
    resp = env.api.put("/v1/hypervisors/hv1", {**HV1, "tunnel_port": "vx1"})
    assert (resp.status_int, resp.json) == (200, {**HV1_JSON, "tunnel_port": "vx1"})
    assert env.api.get("/v1/hypervisors/hv1").json == {**HV1_JSON, "tunnel_port": "vx1"}


@pytest.mark.parametrize("dpid", ["0000000000000001", "1", "0x1", "0x0000000000000001", 1])
def test_dpid_forms_are_normalised_to_16_hex_digits(env, dpid):
    resp = env.api.put("/v1/hypervisors/hv1", {"dpid": dpid, "tunnel_ip": "198.18.0.1"})
    assert resp.status_int == 201 and resp.json["dpid"] == "0000000000000001"


def test_tunnel_port_defaults_to_vxlan0(env):
    resp = env.api.put("/v1/hypervisors/hv2", HV2)
    assert (resp.status_int, resp.json) == (201, HV2_JSON)


def test_hypervisor_list_is_sorted_by_name_and_shows_connected_false(env):
    for i, name in enumerate(["hv2", "hv10", "a", "hv1"], start=1):
        assert env.api.put(f"/v1/hypervisors/{name}", {"dpid": i, "tunnel_ip": f"198.18.0.{i}"}).status_int == 201
    resp = env.api.get("/v1/hypervisors")
    assert resp.status_int == 200 and list(resp.json) == ["hypervisors"]
    assert [h["name"] for h in resp.json["hypervisors"]] == ["a", "hv1", "hv10", "hv2"]
    assert all(h["connected"] is False and h["in_sync"] is False for h in resp.json["hypervisors"])


def test_connected_becomes_true_once_the_switch_is_reconciled(seeded):
    c = seeded.controller
    c.switch_connected(1)
    assert seeded.api.get("/v1/hypervisors/hv1").json["connected"] is False
    handshake(c, 1, {"vxlan0": 100, "tapA1": 1})
    assert seeded.api.get("/v1/hypervisors/hv1").json == {**HV1_JSON, "connected": True, "in_sync": True,
                                                          "ofports": {"tapA1": 1, "vxlan0": 100}}
    assert seeded.api.get("/v1/hypervisors/hv2").json["connected"] is False
    assert seeded.api.get("/v1/stats").json["hypervisors_connected"] == 1
    c.switch_disconnected(1)
    assert seeded.api.get("/v1/hypervisors/hv1").json["connected"] is False


def test_delete_hypervisor_answers_204_and_it_is_gone(env):
    env.api.put("/v1/hypervisors/hv1", HV1)
    resp = env.api.delete("/v1/hypervisors/hv1")
    assert (resp.status_int, resp.body) == (204, b"")
    assert error(env.api.get("/v1/hypervisors/hv1")) == "hypervisor hv1 does not exist"
    assert env.api.get("/v1/hypervisors").json == {"hypervisors": []}
    assert env.store.load() == ([], [], [], [])


def test_a_hypervisor_can_change_dpid_and_tunnel_ip(seeded):
    resp = seeded.api.put("/v1/hypervisors/hv1", {"dpid": 7, "tunnel_ip": "198.18.0.7"})
    assert resp.status_int == 200
    assert resp.json == {**HV1_JSON, "dpid": "0000000000000007", "tunnel_ip": "198.18.0.7"}
    assert seeded.api.put("/v1/hypervisors/hv3", HV1 | {"dpid": 1}).status_int == 201


# --- networks -----------------------------------------------------------------------------------


def test_put_network_201_then_200_and_get(env):
    resp = env.api.put("/v1/networks/blue", BLUE)
    assert (resp.status_int, resp.json) == (201, BLUE_JSON)
    resp = env.api.put("/v1/networks/blue", {**BLUE, "vni": 6000, "mtu": None, "unknown_arp": "drop"})
    assert (resp.status_int, resp.json) == (200, {**BLUE_JSON, "vni": 6000, "mtu": None, "unknown_arp": "drop"})
    assert env.api.get("/v1/networks/blue").json == resp.json
    assert env.api.put("/v1/networks/red", RED).json == RED_JSON


def test_dhcp_defaults_to_on_and_can_be_switched_off_and_on(env):
    assert env.api.put("/v1/networks/blue", BLUE).json["dhcp"] is True
    resp = env.api.put("/v1/networks/blue", {**BLUE, "dhcp": False})
    assert (resp.status_int, resp.json) == (200, {**BLUE_JSON, "dhcp": False})
    assert env.api.get("/v1/networks/blue").json["dhcp"] is False
    assert env.api.put("/v1/networks/blue", BLUE).json["dhcp"] is True  # a PUT states the whole network


@pytest.mark.parametrize("vni", [1, VNI_MAX])
def test_vni_bounds_are_accepted(env, vni):
    assert env.api.put("/v1/networks/n", {"vni": vni, "tenant": "t"}).status_int == 201


def test_network_subnets_are_normalised(env):
    resp = env.api.put("/v1/networks/n", {"vni": 9, "tenant": "t", "subnets": ["FD00:0001:0000::/64"]})
    assert resp.json["subnets"] == ["fd00:1::/64"]


def test_network_list_is_sorted_and_delete_answers_204(seeded):
    assert seeded.api.get("/v1/networks").json == {"networks": [BLUE_JSON, RED_JSON]}
    resp = seeded.api.delete("/v1/networks/red")
    assert (resp.status_int, resp.body) == (204, b"")
    assert seeded.api.get("/v1/networks").json == {"networks": [BLUE_JSON]}
    assert error(seeded.api.get("/v1/networks/red")) == "network red does not exist"


def test_a_freed_vni_can_be_reused(seeded):
    seeded.api.delete("/v1/networks/red")
    assert seeded.api.put("/v1/networks/green", {"vni": 5002, "tenant": "x"}).status_int == 201
    assert seeded.api.put("/v1/networks/red", {"vni": 5002, "tenant": "x"}).status_int == 409
    assert seeded.api.put("/v1/networks/green", {"vni": 5003, "tenant": "x"}).status_int == 200
    assert seeded.api.put("/v1/networks/red", {"vni": 5002, "tenant": "x"}).status_int == 201


# --- ports --------------------------------------------------------------------------------------


def test_put_port_201_then_200_and_get_shows_location(env):
    for path, body in SEED[:4]:
        env.api.put(path, body)
    resp = env.api.put("/v1/ports/a1", A1)
    assert (resp.status_int, resp.json) == (201, A1_JSON)
    resp = env.api.put("/v1/ports/a2", A2)
    assert (resp.status_int, resp.json) == (201, A2_JSON)
    moved = {**A2, "hypervisor": "hv2", "interface": "tapA2"}
    resp = env.api.put("/v1/ports/a2", moved)
    want = {**A2_JSON, "hypervisor": "hv2", "interface": "tapA2", "location_source": "declared"}
    assert (resp.status_int, resp.json) == (200, want)
    assert env.api.get("/v1/ports/a2").json == want
    assert env.api.get("/v1/ports").json == {"ports": [A1_JSON, want]}


def test_port_with_explicit_null_location_is_unlocated(seeded):
    resp = seeded.api.put("/v1/ports/a3", {"network": "red", "mac": "02:aa:00:00:00:03", "hypervisor": None,
                                            "interface": None})
    assert resp.status_int == 201
    assert (resp.json["hypervisor"], resp.json["interface"], resp.json["location_source"]) == (None, None, None)


def test_mac_is_normalised_to_lower_case_and_ipv6_to_its_short_form(seeded):
    resp = seeded.api.put("/v1/ports/a3", {"network": "blue", "mac": "02:AA:00:00:0a:Bc",
                                            "ips": ["FD00:1:0:0:0:0:0:3", "10.1.0.3"]})
    assert resp.status_int == 201
    assert (resp.json["mac"], resp.json["ips"]) == ("02:aa:00:00:0a:bc", ["fd00:1::3", "10.1.0.3"])


def test_same_mac_and_ip_are_fine_in_another_network(seeded):
    resp = seeded.api.put("/v1/ports/r1", {**A1, "network": "red", "interface": "tapR1"})
    assert resp.status_int == 201


def test_a_port_may_move_between_networks_and_frees_its_mac_and_ips(seeded):
    resp = seeded.api.put("/v1/ports/a2", {**A2, "network": "red"})
    assert resp.status_int == 200 and resp.json["network"] == "red"
    assert seeded.api.put("/v1/ports/a3", {**A2, "network": "blue"}).status_int == 201


def test_delete_port_answers_204_and_then_the_network_can_go(seeded):
    for name in ("a1", "a2"):
        resp = seeded.api.delete(f"/v1/ports/{name}")
        assert (resp.status_int, resp.body) == (204, b"")
    assert seeded.api.get("/v1/ports").json == {"ports": []}
    assert seeded.api.delete("/v1/networks/blue").status_int == 204
    assert seeded.api.delete("/v1/hypervisors/hv1").status_int == 204


def test_learned_location_is_shown_and_kept_by_a_put_without_location(seeded):
    c = seeded.controller
    handshake(c, 2, {"vxlan0": 100, "tapM": 9})
    c.packet_in(2, 9, garp("02:aa:00:00:00:02", "10.1.0.2"))
    learned = {**A2_JSON, "hypervisor": "hv2", "interface": "tapM", "location_source": "learned"}
    assert seeded.api.get("/v1/ports/a2").json == learned
    resp = seeded.api.put("/v1/ports/a2", A2)
    assert (resp.status_int, resp.json) == (200, learned)
    assert seeded.api.get("/v1/stats").json["learned"] == 1


def test_put_emits_the_batches_for_connected_switches(seeded):
    handshake(seeded.controller, 1, {"vxlan0": 100, "tapA1": 1, "tapA3": 3})
    seeded.api.put("/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "hypervisor": "hv1",
                                    "interface": "tapA3"})
    assert len(seeded.emitted) == 1 and list(seeded.emitted[0]) == [1] and seeded.emitted[0][1]
    seeded.api.delete("/v1/ports/a3")
    assert len(seeded.emitted) == 2 and list(seeded.emitted[1]) == [1] and seeded.emitted[1][1]
    seeded.api.get("/v1/ports")
    assert len(seeded.emitted) == 2


# --- topology, stats, openapi -------------------------------------------------------------------


def test_topology_is_node_link_json_of_the_placement(seeded):
    resp = seeded.api.get("/v1/topology")
    assert resp.status_int == 200
    doc = resp.json
    assert (doc["directed"], doc["multigraph"]) == (False, False)
    nodes = {n["id"]: n for n in doc["nodes"]}
    assert set(nodes) == {"hv:hv1", "hv:hv2", "net:blue", "net:red", "port:a1", "port:a2"}
    assert nodes["port:a1"] == {"id": "port:a1", "kind": "port", **A1_JSON}
    assert nodes["net:blue"] == {"id": "net:blue", "kind": "network", **BLUE_JSON}
    live = ("connected", "in_sync", "ofports", "master")
    hv2 = {k: v for k, v in HV2_JSON.items() if k not in live}
    assert nodes["hv:hv2"] == {"id": "hv:hv2", "kind": "hypervisor", **hv2}
    links = {(frozenset((link["source"], link["target"])), link["kind"]) for link in doc["links"]}
    assert links == {(frozenset(("port:a1", "net:blue")), "member"), (frozenset(("port:a2", "net:blue")), "member"),
                     (frozenset(("port:a1", "hv:hv1")), "located")}


def test_stats_counts_the_placement(seeded):
    stats = seeded.api.get("/v1/stats").json
    assert {k: stats[k] for k in ("hypervisors", "hypervisors_connected", "networks", "ports", "ports_located",
                                  "flows_installed", "flow_mods", "packet_in")} == {
        "hypervisors": 2, "hypervisors_connected": 0, "networks": 2, "ports": 2, "ports_located": 1,
        "flows_installed": 0, "flow_mods": 0, "packet_in": 0}


def test_openapi_document_is_valid_openapi_3_and_served_as_is(env, openapi):
    resp = env.api.get("/v1/openapi.json")
    assert resp.status_int == 200
    assert resp.json == openapi.doc
    assert resp.json["openapi"].startswith("3.")
    openapi_spec_validator.validate(resp.json)


def test_openapi_request_examples_are_valid_inputs_and_are_accepted(env, openapi):
    paths = openapi.doc["paths"]
    for kind, name in (("hypervisors", "hv1"), ("networks", "blue"), ("ports", "p1")):
        body = paths[f"/v1/{kind}/{{name}}"]["put"]["requestBody"]["content"]["application/json"]
        openapi.validate(body["example"], body["schema"])
        assert env.api.put(f"/v1/{kind}/{name}", body["example"]).status_int == 201


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "POST", "PATCH"])
def test_openapi_lists_exactly_the_methods_each_route_serves(seeded, openapi, method):
    for tpl, item in openapi.doc["paths"].items():
        path = tpl.replace("{name}", "a1" if tpl.startswith("/v1/ports") else "zz")
        resp = seeded.api.call(method, path, raw=b"{}" if method in ("PUT", "POST", "PATCH") else None)
        assert (resp.status_int == 405) == (method.lower() not in item), (method, path, resp.status)


def test_openapi_nullable_and_ref_handling_is_real(openapi):
    from jsonschema import ValidationError
    port = openapi.components["Port"]
    openapi.validate(A2_JSON, port)
    for bad in ({**A2_JSON, "frozen": None}, {**A2_JSON, "location_source": "guessed"}, {**A2_JSON, "ips": "x"}):
        with pytest.raises(ValidationError):
            openapi.validate(bad, port)
    listing = openapi.doc["paths"]["/v1/ports"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    with pytest.raises(ValidationError):
        openapi.validate({"ports": [{**A2_JSON, "mobility_seq": -1}]}, listing)


# --- refusals: exact status and body, and nothing changes ---------------------------------------

R = Any
REFUSALS: list[tuple[str, str, R, int, str]] = [
    # 400: the body is not JSON, or not an object
    ("PUT", "/v1/networks/green", b"{not json", 400, "body is not valid JSON: "),
    ("PUT", "/v1/networks/green", b"\xff\xfe{}", 400, "body is not valid JSON: "),
    ("PUT", "/v1/networks/green", b"", 400, "body is not valid JSON: "),
    ("PUT", "/v1/networks/green", b"[" * 200_000, 400, "body is not valid JSON: nested too deeply"),
    ("PUT", "/v1/networks/green", [], 400, "body must be a JSON object"),
    ("PUT", "/v1/ports/a3", "02:aa:00:00:00:03", 400, "body must be a JSON object"),
    ("PUT", "/v1/hypervisors/hv3", None, 400, "body is not valid JSON: "),
    # 400: fields
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "color": "green"}, 400, "unknown field(s): color"),
    ("PUT", "/v1/networks/green", {"vni": 5003}, 400, "missing field(s): tenant"),
    ("PUT", "/v1/networks/green", {"name": "green", "vni": 5003, "tenant": "acme"}, 400,
     "unknown field(s): name"),
    ("PUT", "/v1/networks/bl%C3%BCe", {"vni": 5003, "tenant": "acme"}, 400,
     "name 'blüe' is not valid: up to 64 ASCII letters, digits, '_', '.', ':' or '-'"),
    ("PUT", "/v1/networks/" + "n" * 65, {"vni": 5003, "tenant": "acme"}, 400, "name 'nnnn"),
    ("PUT", "/v1/networks/green%0A", {"vni": 5003, "tenant": "acme"}, 400, "name 'green\\n' is not valid"),
    ("PUT", "/v1/networks/%FF", {"vni": 5003, "tenant": "acme"}, 400, "name '\ufffd' is not valid"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "hypervisor": "hv1"}, 400,
     "hypervisor and interface go together: give both or neither"),
    # 400: wrong types
    ("PUT", "/v1/networks/green", {"vni": "5003", "tenant": "acme"}, 400, "vni must be an integer"),
    ("PUT", "/v1/networks/green", {"vni": True, "tenant": "acme"}, 400, "vni must be an integer"),
    ("PUT", "/v1/networks/green", {"vni": 5003.0, "tenant": "acme"}, 400, "vni must be an integer"),
    ("PUT", "/v1/networks/green", {"vni": None, "tenant": "acme"}, 400, "vni must be an integer"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": 5}, 400, "tenant must be a non-empty string"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "subnets": "10.3.0.0/24"}, 400,
     "subnets must be a list of CIDR strings"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "subnets": [5]}, 400,
     "subnets must be a list of CIDR strings"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "mtu": "1450"}, 400, "mtu must be an integer"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "mtu": True}, 400, "mtu must be an integer"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": True, "tunnel_ip": "198.18.0.3"}, 400,
     "dpid must be 16 hex digits or an integer"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": 1.5, "tunnel_ip": "198.18.0.3"}, 400,
     "dpid must be 16 hex digits or an integer"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": "xyz", "tunnel_ip": "198.18.0.3"}, 400,
     "dpid must be 16 hex digits or an integer"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": 3, "tunnel_ip": 3}, 400, "tunnel_ip must be a string"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": 3, "tunnel_ip": "198.18.0.3", "tunnel_port": None}, 400,
     "tunnel_port must be an interface name of 1 to 15 characters from [A-Za-z0-9_.:-]"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": 5}, 400, "mac must look like 02:aa:00:00:00:01"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": "10.1.0.3"}, 400,
     "ips must be a list of IP address strings"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": [5]}, 400, "ip must be a string"),
    ("PUT", "/v1/ports/a3", {"network": 5, "mac": "02:aa:00:00:00:03"}, 400, "network must be a non-empty string"),
    # 400: out of range
    ("PUT", "/v1/networks/green", {"vni": 0, "tenant": "acme"}, 400, "vni must be between 1 and 16777215"),
    ("PUT", "/v1/networks/green", {"vni": VNI_MAX + 1, "tenant": "acme"}, 400, "vni must be between 1 and 16777215"),
    ("PUT", "/v1/networks/green", {"vni": -1, "tenant": "acme"}, 400, "vni must be between 1 and 16777215"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "mtu": 1279}, 400,
     "mtu must be between 1280 and 9000"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "subnets": ["fd00:3::/64"], "mtu": 9001}, 400,
     "mtu must be between 1280 and 9000"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "unknown_arp": "flood"}, 400,
     "unknown_arp must be one of replicate, drop"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "dhcp": "yes"}, 400, "dhcp must be true or false"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "dhcp": 1}, 400, "dhcp must be true or false"),
    ("PUT", "/v1/networks/blue", {**BLUE, "dhcp": None}, 400, "dhcp must be true or false"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": 0, "tunnel_ip": "198.18.0.3"}, 400, "dpid must be between 1 and 2^64-1"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": 1 << 64, "tunnel_ip": "198.18.0.3"}, 400,
     "dpid must be between 1 and 2^64-1"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": 3, "tunnel_ip": "fe80::3"}, 400, "tunnel_ip fe80::3 is link-local"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": 3, "tunnel_ip": "198.18.0.256"}, 400,
     "tunnel_ip '198.18.0.256' is not an IP address"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": 3, "tunnel_ip": "224.0.0.3"}, 400,
     "tunnel_ip 224.0.0.3 is not a unicast host address"),
    # 400: subnets
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "subnets": ["10.3.0.1/24"]}, 400,
     "subnet '10.3.0.1/24' is not valid: 10.3.0.1/24 has host bits set"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "subnets": ["10.3.0.0/24", "10.3.0.128/25"]}, 400,
     "subnet 10.3.0.128/25 overlaps another subnet of the network"),
    ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme", "subnets": ["fd00:3::%eth0/64"]}, 400,
     "subnet 'fd00:3::%eth0/64' must not have a scope id"),
    # 400: MACs
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00"}, 400, "mac must look like 02:aa:00:00:00:01"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02-aa-00-00-00-03"}, 400,
     "mac must look like 02:aa:00:00:00:01"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:0g"}, 400,
     "mac must look like 02:aa:00:00:00:01"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03\n"}, 400,
     "mac must look like 02:aa:00:00:00:01"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "01:00:5E:00:00:01"}, 400,
     "mac 01:00:5e:00:00:01 is a multicast address"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "33:33:00:00:00:01"}, 400,
     "mac 33:33:00:00:00:01 is a multicast address"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "ff:ff:ff:ff:ff:ff"}, 400,
     "mac ff:ff:ff:ff:ff:ff is a multicast address"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "00:00:00:00:00:00"}, 400, "mac must not be all zeros"),
    # 400: IPs
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["10.1.0.256"]}, 400,
     "ip '10.1.0.256' is not an IP address"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["fd00:1::g"]}, 400,
     "ip 'fd00:1::g' is not an IP address"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["10.1.0.3/32"]}, 400,
     "ip '10.1.0.3/32' is not an IP address"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["fd00:1::3%eth0"]}, 400,
     "ip 'fd00:1::3%eth0' must not have a scope id"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["224.0.0.1"]}, 400,
     "ip 224.0.0.1 is not a unicast host address"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["::"]}, 400,
     "ip :: is not a unicast host address"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["10.1.0.3", "10.1.0.3"]}, 400,
     "ips must not repeat an address"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["fd00:1::3", "fd00:1:0::3"]},
     400, "ips must not repeat an address"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["10.2.0.1"]}, 400,
     "ip 10.2.0.1 is outside the subnets of network blue"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["10.1.0.3", "fd00:2::1"]}, 400,
     "ip fd00:2::1 is outside the subnets of network blue"),
    ("PUT", "/v1/ports/a2", {**A2, "ips": ["10.2.0.2"]}, 400, "ip 10.2.0.2 is outside the subnets of network blue"),
    # 404
    ("GET", "/v1/hypervisors/hv9", None, 404, "hypervisor hv9 does not exist"),
    ("DELETE", "/v1/hypervisors/hv9", None, 404, "hypervisor hv9 does not exist"),
    ("GET", "/v1/networks/green", None, 404, "network green does not exist"),
    ("DELETE", "/v1/networks/green", None, 404, "network green does not exist"),
    ("GET", "/v1/ports/zz", None, 404, "port zz does not exist"),
    ("DELETE", "/v1/ports/zz", None, 404, "port zz does not exist"),
    ("GET", "/v1/networks/bl%C3%BCe", None, 404, "network blüe does not exist"),
    ("PUT", "/v1/ports/a3", {"network": "green", "mac": "02:aa:00:00:00:03"}, 404, "network green does not exist"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "hypervisor": "hv9", "interface": "t"},
     404, "hypervisor hv9 does not exist"),
    ("PUT", "/v1/ports/a2", {**A2, "network": "green"}, 404, "network green does not exist"),
    ("GET", "/v1/nothing", None, 404, "no such resource: /v1/nothing"),
    ("GET", "/v1", None, 404, "no such resource: /v1"),
    ("GET", "/v2/networks", None, 404, "no such resource: /v2/networks"),
    ("GET", "/v1/networks/", None, 404, "no such resource: /v1/networks/"),
    ("GET", "/v1/networks%0A", None, 404, "no such resource: /v1/networks\n"),
    ("GET", "/v1/networks/blue/ports", None, 404, "no such resource: /v1/networks/blue/ports"),
    ("PUT", "/v1/stats/x", {}, 404, "no such resource: /v1/stats/x"),
    # 409
    ("PUT", "/v1/networks/green", {"vni": 5001, "tenant": "acme"}, 409, "vni 5001 is already used by network blue"),
    ("PUT", "/v1/networks/red", {"vni": 5001, "tenant": "acme"}, 409, "vni 5001 is already used by network blue"),
    ("PUT", "/v1/networks/blue", {**BLUE, "subnets": ["10.9.0.0/24"]}, 409,
     "port a1 has address 10.1.0.1 outside the new subnets"),
    ("DELETE", "/v1/networks/blue", None, 409, "network blue still has port(s) a1, a2"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:AA:00:00:00:01"}, 409,
     "mac 02:aa:00:00:00:01 is already used by port a1 in network blue"),
    ("PUT", "/v1/ports/a2", {**A2, "mac": "02:aa:00:00:00:01"}, 409,
     "mac 02:aa:00:00:00:01 is already used by port a1 in network blue"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["10.1.0.3", "10.1.0.2"]}, 409,
     "ip 10.1.0.2 is already used by port a2 in network blue"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "ips": ["FD00:1:0::1"]}, 409,
     "ip fd00:1::1 is already used by port a1 in network blue"),
    ("PUT", "/v1/ports/a2", {**A2, "ips": ["10.1.0.1"]}, 409, "ip 10.1.0.1 is already used by port a1 in network blue"),
    ("PUT", "/v1/ports/a3", {"network": "blue", "mac": "02:aa:00:00:00:03", "hypervisor": "hv1", "interface": "tapA1"},
     409, "interface tapA1 on hv1 is already bound to port a1"),
    ("PUT", "/v1/hypervisors/hv3", {"dpid": 1, "tunnel_ip": "198.18.0.3"}, 409,
     "dpid 0000000000000001 is already used by hypervisor hv1"),
    ("PUT", "/v1/hypervisors/hv2", {"dpid": 2, "tunnel_ip": "198.18.0.1"}, 409,
     "tunnel_ip 198.18.0.1 is already used by hypervisor hv1"),
    ("DELETE", "/v1/hypervisors/hv1", None, 409, "hypervisor hv1 still hosts port(s) a1"),
    # 405
    ("POST", "/v1/networks", {}, 405, "method POST is not allowed here; use GET"),
    ("PUT", "/v1/networks", {}, 405, "method PUT is not allowed here; use GET"),
    ("DELETE", "/v1/hypervisors", None, 405, "method DELETE is not allowed here; use GET"),
    ("POST", "/v1/ports/a1", {}, 405, "method POST is not allowed here; use GET, PUT, DELETE"),
    ("PATCH", "/v1/ports/a1", {"mac": "02:aa:00:00:00:09"}, 405,
     "method PATCH is not allowed here; use GET, PUT, DELETE"),
    ("PUT", "/v1/stats", {}, 405, "method PUT is not allowed here; use GET"),
    ("DELETE", "/v1/topology", None, 405, "method DELETE is not allowed here; use GET"),
    ("POST", "/v1/openapi.json", {}, 405, "method POST is not allowed here; use GET"),
    # 413
    ("PUT", "/v1/networks/green", b" " * (MAX_BODY + 1), 413, "body larger than 1048576 bytes"),
    ("PUT", "/v1/networks/green", json.dumps({"vni": 5003, "tenant": "acme"}).encode() + b" " * MAX_BODY, 413,
     "body larger than 1048576 bytes"),
]


@pytest.mark.parametrize("method,path,body,status,message", REFUSALS,
                         ids=[f"{s}-{m}-{p[:40]}-{i}" for i, (m, p, _, s, _) in enumerate(REFUSALS)])
def test_refused_request_answers_its_status_and_changes_nothing(seeded, method, path, body, status, message):
    before = seeded.snapshot()
    if isinstance(body, bytes):
        resp = seeded.api.call(method, path, raw=body)
    else:
        resp = seeded.api.call(method, path, body, raw=b"" if body is None and method == "PUT" else None)
    assert resp.status_int == status, resp.body[:300]
    assert resp.content_type == "application/json"
    text = error(resp)
    assert text == message or (message.endswith(": ") and text.startswith(message)) or (
        message.startswith("name '") and text.startswith(message)), text
    assert seeded.emitted == []
    assert seeded.snapshot() == before


def test_a_body_of_exactly_the_limit_is_accepted(seeded):
    data = json.dumps({"vni": 5003, "tenant": "acme"}).encode()
    resp = seeded.api.call("PUT", "/v1/networks/green", raw=data + b" " * (MAX_BODY - len(data)))
    assert resp.status_int == 201


def test_a_failing_store_answers_500_json_and_changes_nothing(seeded, monkeypatch):
    before = seeded.snapshot()

    def broken(changes: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(seeded.store, "apply", broken)
    for method, path, body in (("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme"}),
                               ("PUT", "/v1/ports/a2", {**A2, "hypervisor": "hv2", "interface": "tapA2"}),
                               ("PUT", "/v1/hypervisors/hv1", {**HV1, "tunnel_port": "vx9"}),
                               ("DELETE", "/v1/ports/a1", None), ("DELETE", "/v1/networks/red", None)):
        resp = seeded.api.call(method, path, body)
        assert (resp.status_int, resp.json) == (500, {"error": "internal error"})
    monkeypatch.undo()
    assert seeded.emitted == []
    assert seeded.snapshot() == before


def test_a_refused_put_keeps_the_move_history_of_a_port(seeded):
    c = seeded.controller
    handshake(c, 1, {"vxlan0": 100, "tapA1": 1, "tapM": 9})
    handshake(c, 2, {"vxlan0": 100, "tapM": 9})
    frame = garp("02:aa:00:00:00:02", "10.1.0.2")

    def vm_moves_to(dpid: int) -> None:  # its interface leaves the other bridge
        c.port_status(3 - dpid, "tapM", None)
        c.port_status(dpid, "tapM", 9)
        c.packet_in(dpid, 9, frame)

    for dpid in (1, 2, 1, 2, 1):
        vm_moves_to(dpid)
    assert seeded.api.get("/v1/ports/a2").json["mobility_seq"] == 4
    assert len(seeded.api.get("/v1/ports/a2").json["recent_moves"]) == 4
    assert seeded.api.put("/v1/ports/a2", {**A2, "ips": ["10.1.0.1"]}).status_int == 409
    for dpid in (2, 1):
        vm_moves_to(dpid)
    assert seeded.api.get("/v1/ports/a2").json["frozen"] is True


def test_a_put_based_on_an_older_mobility_seq_is_refused_and_changes_nothing(seeded):
    c = seeded.controller
    handshake(c, 2, {"vxlan0": 100, "tapM": 9})
    seeded.api.put("/v1/ports/a2", {**A2, "hypervisor": "hv1", "interface": "tapA2", "mobility": "learn"})
    c.packet_in(2, 9, garp("02:aa:00:00:00:02", "10.1.0.2"))  # the VM moved to hv2 by itself: seq 1
    assert seeded.api.get("/v1/ports/a2").json["mobility_seq"] == 1
    before = seeded.snapshot()
    stale = {**A2, "hypervisor": "hv1", "interface": "tapA3", "mobility_seq": 0}
    resp = seeded.api.put("/v1/ports/a2", stale)
    assert (resp.status_int, error(resp)) == (
        409, "port a2 is at mobility_seq 1: a declaration based on 0 is older; read the port again")
    assert seeded.snapshot() == before
    resp = seeded.api.put("/v1/ports/a2", {**stale, "mobility_seq": 1})
    assert resp.status_int == 200
    assert (resp.json["hypervisor"], resp.json["interface"], resp.json["mobility_seq"]) == ("hv1", "tapA3", 2)
    resp = seeded.api.put("/v1/ports/a2", {**stale, "mobility_seq": 40})  # a newer one is adopted
    assert (resp.status_int, resp.json["mobility_seq"]) == (200, 40)
    resp = seeded.api.put("/v1/ports/a2", {**A2, "hypervisor": "hv2", "interface": "tapA2"})  # without: as before
    assert (resp.status_int, resp.json["mobility_seq"]) == (200, 41)


def test_a_duplicate_is_shown_in_the_port_and_counted_and_a_put_clears_it(seeded):
    c = seeded.controller
    handshake(c, 1, {"vxlan0": 100, "tapA1": 1, "tapM": 9})
    handshake(c, 2, {"vxlan0": 100, "tapM": 9})
    frame = garp("02:aa:00:00:00:02", "10.1.0.2")
    for dpid in (1, 2, 1, 1):  # learned on hv1, moved to hv2, then talking from both
        c.packet_in(dpid, 9, frame)
    port = seeded.api.get("/v1/ports/a2").json
    assert (port["hypervisor"], port["interface"], port["mobility_seq"], port["frozen"]) == ("hv2", "tapM", 1, False)
    assert {k: v for k, v in port["duplicate"].items() if k != "detected_at"} == {"hypervisor": "hv1",
                                                                                "interface": "tapM"}
    stats = seeded.api.get("/v1/stats").json
    assert (stats["duplicates_detected"], stats["moves_refused_duplicate"], stats["moves"]) == (1, 1, 1)
    assert stats["ports_duplicate"] == 1
    resp = seeded.api.put("/v1/ports/a2", A2)
    assert (resp.status_int, resp.json["duplicate"], resp.json["hypervisor"]) == (200, None, "hv2")
    assert seeded.api.get("/v1/stats").json["ports_duplicate"] == 0


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer", "Bearer s3cret ", "Basic s3cret", "s3cret"])
def test_token_is_required_when_set_and_nothing_changes_without_it(make_env, header):
    env = make_env(token="s3cret")
    seed(env.api)
    before = env.snapshot()
    headers = {} if header is None else {"Authorization": header}
    for method, path, body in (("GET", "/v1/networks", None), ("GET", "/v1/openapi.json", None),
                               ("PUT", "/v1/networks/green", {"vni": 5003, "tenant": "acme"}),
                               ("DELETE", "/v1/ports/a1", None), ("GET", "/v1/nothing", None),
                               ("POST", "/v1/networks", {})):
        resp = env.api.call(method, path, body, headers=headers, auth=False)
        assert (resp.status_int, resp.json) == (401, {"error": "missing or wrong bearer token"})
    assert env.snapshot() == before


def test_the_right_token_is_accepted(make_env):
    env = make_env(token="s3cret")
    headers = {"Authorization": "Bearer s3cret"}
    assert env.api.call("PUT", "/v1/networks/blue", BLUE, headers=headers, auth=False).status_int == 201
    assert env.api.call("GET", "/v1/networks/blue", headers=headers, auth=False).json == BLUE_JSON
    assert env.api.call("DELETE", "/v1/networks/blue", headers=headers, auth=False).status_int == 204


def test_without_a_token_any_authorization_header_is_ignored(seeded):
    resp = seeded.api.call("GET", "/v1/networks/blue", headers={"Authorization": "Bearer whatever"})
    assert resp.status_int == 200


# --- persistence --------------------------------------------------------------------------------


def test_state_survives_a_restart_on_the_same_file(make_env, tmp_path):
    env = make_env()
    seed(env.api)
    env.api.put("/v1/networks/blue", {**BLUE, "unknown_arp": "drop"})
    env.api.put("/v1/hypervisors/hv3", {"dpid": "00000000000000ff", "tunnel_ip": "198.18.0.3", "tunnel_port": "vx3"})
    env.api.put("/v1/ports/a3", {"network": "red", "mac": "02:AA:00:00:00:03", "ips": ["fd00:9::3"],
                                 "hypervisor": "hv3", "interface": "tapA3"})
    env.api.put("/v1/ports/a2", {**A2, "hypervisor": "hv2", "interface": "tapA2"})
    env.api.put("/v1/ports/a2", {**A2, "hypervisor": "hv1", "interface": "tapA2"})
    env.api.delete("/v1/ports/a1")
    env.api.put("/v1/ports/a4", {"network": "blue", "mac": "02:aa:00:00:00:04", "ips": ["10.1.0.1"]})
    env.api.put("/v1/networks/tmp", {"vni": 77, "tenant": "x"})
    env.api.delete("/v1/networks/tmp")
    before = env.snapshot()
    assert before["ports"]["ports"][0]["mobility_seq"] == 1
    env.close()

    again = make_env(db=env.path)
    after = again.snapshot()
    assert after == before
    for kind, names in (("hypervisors", ["hv1", "hv2", "hv3"]), ("networks", ["blue", "red"]),
                        ("ports", ["a2", "a3", "a4"])):
        for name in names:
            assert again.api.get(f"/v1/{kind}/{name}").json == env_get(before, kind, name)
    assert again.api.get("/v1/networks/tmp").status_int == 404
    assert again.api.put("/v1/networks/other", {"vni": 5001, "tenant": "x"}).status_int == 409
    assert again.api.put("/v1/ports/a5", {"network": "blue", "mac": "02:aa:00:00:00:04"}).status_int == 409


def env_get(snapshot: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    return next(item for item in snapshot[kind][kind] if item["name"] == name)


def test_writes_are_durable_before_the_answer(seeded):
    other = SqliteStore(str(seeded.path))
    try:
        assert other.load() == seeded.store.load()
        seeded.api.put("/v1/networks/green", {"vni": 5003, "tenant": "acme"})
        assert [n.name for n in other.load()[1]] == ["blue", "green", "red"]
    finally:
        other.close()


def test_the_move_history_and_a_duplicate_are_shown_the_same_after_a_restart(make_env):
    env = make_env()
    seed(env.api)
    handshake(env.controller, 1, {"vxlan0": 100, "tapA1": 1, "tapM": 9})
    handshake(env.controller, 2, {"vxlan0": 100, "tapM": 9})
    for dpid in (1, 2, 1):
        env.controller.packet_in(dpid, 9, garp("02:aa:00:00:00:02", "10.1.0.2"))
    before = env.api.get("/v1/ports/a2").json
    assert len(before["recent_moves"]) == 1 and before["duplicate"] is not None
    env.close()
    again = make_env(db=env.path)
    assert again.api.get("/v1/ports/a2").json == before
    assert again.api.get("/v1/stats").json["ports_duplicate"] == 1
