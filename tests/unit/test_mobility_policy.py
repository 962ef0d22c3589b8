"""Mobility policy (issue #16): ``learn`` ports follow their frames, ``declared`` ones move only by a
PUT or an iface-id binding; a declared port's MAC seen anywhere else is dropped and counted."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.l2 import ARP, Ether

from ryu_overlay.controller import Controller
from ryu_overlay.model import BadRequest, Network, Port, mobility_of, parse_network, parse_port
from ryu_overlay.testing.scenario import HYPERVISORS, build, connect
from ryu_overlay.trace import SimNet


def garp(mac: str, ip: str) -> bytes:
    return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=ip))

A2 = {"network": "blue", "mac": "02:aa:00:00:00:02", "ips": ["10.1.0.2", "fd00:1::2"]}
BLUE = {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"]}


@pytest.mark.parametrize(("port", "network", "policy"), [
    ({}, None, "learn"),  # no declared location
    ({"hypervisor": "hv1", "interface": "tapA2"}, None, "declared"),
    ({"hypervisor": "hv1", "interface": "tapA2"}, "learn", "learn"),  # the network's value is the default
    ({}, "declared", "declared"),
    ({"hypervisor": "hv1", "interface": "tapA2", "mobility": "learn"}, "declared", "learn"),  # the port's wins
    ({"mobility": "declared"}, "learn", "declared"),
])
def test_the_policy_in_force(port: dict[str, Any], network: str | None, policy: str) -> None:
    p: Port = parse_port("a2", {**A2, **port})
    n: Network = parse_network("blue", {**BLUE, "mobility": network})
    assert mobility_of(p, n) == policy


@pytest.mark.parametrize("value", ["roam", 1, True, ""])
def test_other_values_are_refused(value: Any) -> None:
    with pytest.raises(BadRequest, match="mobility must be one of learn, declared"):
        parse_port("a2", {**A2, "mobility": value})
    with pytest.raises(BadRequest, match="mobility must be one of learn, declared"):
        parse_network("blue", {**BLUE, "mobility": value})


def controller() -> Controller:
    c = build()
    for hv in HYPERVISORS:
        connect(c, hv)
    c.port_status(3, "tapA2", 9)  # a2's interface appears on hv3 (its declared place is hv1)
    return c


def test_a_declared_ports_mac_from_another_interface_is_dropped_and_counted() -> None:
    c = controller()
    before = c.topo.ports["a2"]
    assert c.packet_in(3, 9, garp("02:aa:00:00:00:02", "10.1.0.2")) == {}
    assert c.topo.ports["a2"] == before
    assert c.stats["moves_refused_declared"] == 1 and c.stats["moves"] == 0


def test_a_learn_port_follows_its_frames() -> None:
    c = controller()
    c.put_port("a2", {**A2, "hypervisor": "hv1", "interface": "tapA2", "mobility": "learn"})
    assert c.packet_in(3, 9, garp("02:aa:00:00:00:02", "10.1.0.2"))
    assert (c.topo.ports["a2"].hypervisor, c.stats["moves"]) == ("hv3", 1)


def test_a_declared_port_without_location_is_not_learned() -> None:
    c = controller()
    c.put_port("a2", {**A2, "mobility": "declared"})
    assert c.packet_in(3, 9, garp("02:aa:00:00:00:02", "10.1.0.2")) == {}
    assert not c.topo.ports["a2"].located and c.stats["learned"] == 0


def test_an_iface_id_binding_moves_a_declared_port_as_a_put_would() -> None:
    c = controller()
    sim = SimNet(c, {"hv1": {"tapA1": 1, "tapA2": 2, "vxlan0": 100}, "hv3": {"tapA4": 1, "tapA2": 9, "vxlan0": 100}})
    batches = c.bind_port("a2", "hv3", "tapA2")
    port = c.topo.ports["a2"]
    assert (port.hypervisor, port.interface, port.location_source, port.mobility_seq) == ("hv3", "tapA2", "declared", 1)
    sim.apply(batches)
    result = sim.send("hv1", {"in_port": 1, "eth_src": "02:aa:00:00:00:01", "eth_dst": "02:aa:00:00:00:02",
                              "eth_type": 0x0800, "ipv4_src": "10.1.0.1", "ipv4_dst": "10.1.0.2"})
    assert [(d.switch, d.port) for d in result.deliveries] == [("hv3", 9)]


def test_the_policy_is_stored_with_the_port_and_the_network() -> None:
    from ryu_overlay.model import network_from_record, port_from_record

    port = parse_port("a2", {**A2, "mobility": "learn"})
    net = parse_network("blue", {**BLUE, "mobility": "declared"})
    assert port_from_record(port.to_json()) == port
    assert network_from_record(net.to_json()) == net
