"""Hypervisors managed over OVSDB: iface-id binding, tunnel types, the REST contract (no OVS needed)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from scapy.layers.l2 import ARP, Ether

from ryu_overlay.flows import bfd_port
from ryu_overlay.model import BadRequest, Conflict, Hypervisor
from ryu_overlay.ovsdb import OvsdbManager, OvsdbView, Provisioning, identify, listener
from ryu_overlay.testing.scenario import HYPERVISORS, Clock, build, connect, ofports
from ryu_overlay.trace import SimNet

M1 = {"network": "blue", "mac": "02:bb:00:00:00:01", "ips": ["10.1.0.50"]}


def managed(clock: Clock | None = None) -> Any:
    """The scenario with hv3 and hv4 managed over OVSDB (passive) and every bridge connected."""
    c = build(clock=clock)
    for name, dpid, ip in (("hv3", 3, "198.18.0.3"), ("hv4", 4, "198.18.0.4")):
        c.put_hypervisor(name, {"dpid": dpid, "tunnel_ip": ip, "ovsdb": "passive"})
    for hv in ("hv1", "hv2", "hv3", "hv4"):
        connect(c, hv)
    return c


def plugged(**taps: str) -> OvsdbView:
    return OvsdbView(iface_ids=taps)


def where(c: Any, port: str) -> tuple[Any, ...]:
    p = c.topo.ports[port]
    return p.hypervisor, p.interface, p.location_source, p.mobility_seq


def garp(mac: str, ip: str) -> bytes:
    return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=ip))


def test_a_port_without_location_is_bound_to_the_interface_with_its_name_as_iface_id():
    c = managed()
    net = SimNet(c, {hv: ofports(hv) for hv in HYPERVISORS})
    c.put_port("m1", M1)
    net.apply(c.port_status(4, "vnet7", 9))
    net.ofports["hv4"]["vnet7"] = 9
    batches = c.ovsdb_state("hv4", plugged(vnet7="m1", vnet8="nobody"), True)
    net.apply(batches)
    assert where(c, "m1") == ("hv4", "vnet7", "ovsdb", 0)
    assert set(batches) >= {1, 4} and c.stats["ovsdb_bound"] == 1
    # The VM is reachable from hv1 with no packet-in at all: a1's frame reaches the tap on hv4.
    to_m1 = {"in_port": ofports("hv1")["tapA1"], "eth_src": "02:aa:00:00:00:01", "eth_dst": "02:bb:00:00:00:01",
             "eth_type": 0x0800, "ipv4_src": "10.1.0.1", "ipv4_dst": "10.1.0.50", "ip_proto": 17}
    assert [(d.switch, d.port) for d in net.send("hv1", to_m1).deliveries] == [("hv4", 9)]
    assert c.stats["packet_in"] == 0


def test_a_port_declared_after_its_interface_appeared_is_bound_at_once():
    c = managed()
    c.ovsdb_state("hv4", plugged(vnet7="m1"), True)
    _, port, _ = c.put_port("m1", M1)
    assert (port.hypervisor, port.interface, port.location_source) == ("hv4", "vnet7", "ovsdb")
    # Declared again without a location, it stays bound.
    c.put_port("m1", M1)
    assert where(c, "m1")[:3] == ("hv4", "vnet7", "ovsdb")


def test_moving_the_tap_moves_the_port_and_going_away_unbinds_it_with_sequence_numbers():
    clock = Clock()
    c = managed(clock)
    c.put_port("m1", M1)
    c.ovsdb_state("hv3", plugged(vnet7="m1"), True)
    assert where(c, "m1") == ("hv3", "vnet7", "ovsdb", 0)
    clock.now += 10  # live migration: the tap comes up on hv4 before it goes from hv3
    c.ovsdb_state("hv4", plugged(tap9="m1"), True)
    assert where(c, "m1") == ("hv4", "tap9", "ovsdb", 1)
    c.ovsdb_state("hv3", plugged(), True)
    assert where(c, "m1") == ("hv4", "tap9", "ovsdb", 1)  # the old tap leaving changes nothing
    clock.now += 10
    c.ovsdb_state("hv4", plugged(), True)
    assert where(c, "m1") == (None, None, None, 2)
    assert [(m.hypervisor, m.interface) for m in c.topo.ports["m1"].recent_moves] == [("hv3", "vnet7"),
                                                                                      ("hv4", "tap9")]
    assert c.stats["ovsdb_unbound"] == 1


def test_an_unbound_port_binds_again_where_its_iface_id_still_is():
    c = managed()
    c.put_port("m1", M1)
    c.ovsdb_state("hv3", plugged(vnet7="m1"), True)
    c.ovsdb_state("hv4", plugged(tap9="m1"), True)  # moved to hv4
    c.ovsdb_state("hv4", plugged(), True)  # and gone from there: hv3 still has a tap for it
    assert where(c, "m1")[:3] == ("hv3", "vnet7", "ovsdb")


def test_ovsdb_moves_follow_the_freeze_rule_of_learned_moves():
    clock = Clock()
    c = managed(clock)
    c.put_port("m1", M1)
    for i in range(8):
        clock.now += 1
        hv = ("hv3", "hv4")[i % 2]
        c.ovsdb_state(hv, plugged(**{f"t{i}": "m1"}), True)
    port = c.topo.ports["m1"]
    assert port.frozen and c.stats["ports_frozen"] == 1


def test_ports_declared_with_a_location_are_not_rebound():
    c = managed()
    c.ovsdb_state("hv4", plugged(vnet7="a1"), True)
    assert where(c, "a1")[:3] == ("hv1", "tapA1", "declared")


def test_managed_hypervisors_do_not_learn_from_packet_in_and_unmanaged_ones_still_do():
    c = managed()
    c.put_port("m1", M1)
    c.port_status(4, "tapM1", 9)
    assert c.packet_in(4, 9, garp("02:bb:00:00:00:01", "10.1.0.50")) == {}
    assert where(c, "m1")[0] is None and c.stats["learned"] == 0
    c.port_status(2, "tapM1", 9)
    c.packet_in(2, 9, garp("02:bb:00:00:00:01", "10.1.0.50"))
    assert where(c, "m1")[:3] == ("hv2", "tapM1", "learned")


def test_views_of_unmanaged_or_unknown_hypervisors_bind_nothing():
    c = managed()
    c.put_port("m1", M1)
    assert c.ovsdb_state("hv1", plugged(vnet7="m1"), True) == {}
    assert c.ovsdb_state("nope", plugged(vnet7="m1"), True) == {}
    assert where(c, "m1")[0] is None


def test_get_shows_the_ovsdb_session_state():
    c = managed()
    assert c.hypervisor_json(c.topo.hypervisors["hv1"])["ovsdb"] is None
    assert c.hypervisor_json(c.topo.hypervisors["hv4"])["ovsdb"] == "disconnected"
    c.ovsdb_state("hv4", OvsdbView(), True)
    assert c.hypervisor_json(c.topo.hypervisors["hv4"])["ovsdb"] == "connected"
    c.ovsdb_state("hv4", None, False)
    assert c.hypervisor_json(c.topo.hypervisors["hv4"])["ovsdb"] == "disconnected"


def test_the_manager_is_told_every_hypervisor_change():
    c = build()
    told: list[list[str]] = []
    c.on_hypervisors = lambda hvs: told.append(sorted(h.name for h in hvs if h.managed))
    c.put_hypervisor("hv9", {"dpid": 9, "tunnel_ip": "198.18.0.9", "ovsdb": "tcp:198.19.0.9:6640"})
    c.delete_hypervisor("hv9")
    assert told == [["hv9"], []]


# --- tunnel types -------------------------------------------------------------------------------------


def test_tunnel_type_defaults_and_names_its_port():
    c = build()
    _, hv, _ = c.put_hypervisor("hv9", {"dpid": 9, "tunnel_ip": "198.18.0.9", "tunnel_type": "geneve"})
    assert (hv.tunnel_type, hv.tunnel_port) == ("geneve", "geneve0")
    assert c.topo.hypervisors["hv1"].tunnel_type == "vxlan"


@pytest.mark.parametrize("body, message", [
    ({"tunnel_type": "stt"}, "tunnel_type must be one of vxlan, geneve, gre"),
    ({"ovsdb": "ssl:1.2.3.4:6640"}, 'ovsdb must be "passive" or "tcp:IP:PORT"'),
    ({"ovsdb": "tcp:1.2.3.4:0"}, "ovsdb port must be between 1 and 65535"),
    ({"ovsdb": "tcp:224.0.0.1:6640"}, "not a unicast host address"),
    ({"ovsdb": 6640}, 'ovsdb must be "passive"'),
])
def test_bad_ovsdb_and_tunnel_type_are_refused(body, message):
    c = build()
    with pytest.raises(BadRequest, match=message):
        c.put_hypervisor("hv9", {"dpid": 9, "tunnel_ip": "198.18.0.9", **body})
    assert "hv9" not in c.topo.hypervisors


def test_ipv6_ovsdb_target_in_brackets_is_accepted():
    c = build()
    _, hv, _ = c.put_hypervisor("hv9", {"dpid": 9, "tunnel_ip": "198.18.0.9", "ovsdb": "tcp:[fd00::9]:6640"})
    assert hv.ovsdb == "tcp:[fd00::9]:6640"


def test_a_port_on_a_hypervisor_of_another_tunnel_type_than_its_networks_hosts_is_refused():
    c = build()
    c.put_hypervisor("hv9", {"dpid": 9, "tunnel_ip": "198.18.0.9", "tunnel_type": "geneve"})
    with pytest.raises(Conflict, match="hypervisor hv9 tunnels with geneve over IPv4 but network blue is also on hv1, "
                                       "which tunnels with vxlan over IPv4"):
        c.put_port("g1", {**M1, "hypervisor": "hv9", "interface": "tapG1"})
    assert "g1" not in c.topo.ports
    # A network of its own is fine, and so is the last port of blue leaving for a geneve hypervisor.
    c.put_network("green", {"vni": 5003, "tenant": "acme", "subnets": ["10.3.0.0/24"]})
    c.put_port("g1", {"network": "green", "mac": "02:cc:00:00:00:01", "hypervisor": "hv9", "interface": "tapG1"})
    with pytest.raises(Conflict, match="tunnels with"):
        c.put_hypervisor("hv1", {"dpid": 1, "tunnel_ip": "198.18.0.1", "tunnel_type": "gre"})
    assert c.topo.hypervisors["hv1"].tunnel_type == "vxlan"
    c.put_hypervisor("hv9", {"dpid": 9, "tunnel_ip": "198.18.0.9", "tunnel_type": "gre"})  # alone in green


def test_a_router_joining_networks_of_two_tunnel_types_is_refused():
    c = build()
    c.put_hypervisor("hv9", {"dpid": 9, "tunnel_ip": "198.18.0.9", "tunnel_type": "geneve"})
    c.put_network("green", {"vni": 5003, "tenant": "acme", "subnets": ["10.3.0.0/24"]})
    c.put_port("g1", {"network": "green", "mac": "02:cc:00:00:00:01", "hypervisor": "hv9", "interface": "tapG1"})
    with pytest.raises(Conflict, match="router r's networks are also on"):
        c.put_router("r", {"tenant": "acme", "interfaces": [{"network": "blue", "ip": "10.1.0.254/24"},
                                                             {"network": "green", "ip": "10.3.0.254/24"}]})
    assert "r" not in c.topo.routers


def test_an_ovsdb_binding_that_would_mix_tunnel_types_is_refused_and_counted():
    c = managed()
    c.put_hypervisor("hv4", {"dpid": 4, "tunnel_ip": "198.18.0.4", "ovsdb": "passive", "tunnel_type": "geneve"})
    c.put_port("m1", M1)
    c.ovsdb_state("hv4", plugged(vnet7="m1"), True)
    assert where(c, "m1")[0] is None and c.stats["moves_refused_tunnel_type"] == 1


# --- the OVSDB module's own logic -----------------------------------------------------------------------


def hv(name: str, dpid: int, ovsdb: str | None = "passive") -> Hypervisor:
    return Hypervisor(name, dpid, ipaddress.IPv4Address(f"198.18.0.{dpid}"), ovsdb=ovsdb)


def test_a_passive_connection_is_identified_by_datapath_id_then_by_system_id():
    hvs = [hv("hv1", 1), hv("hv2", 2), hv("hv3", 3, "tcp:198.19.0.3:6640")]
    assert identify(OvsdbView("hv2", frozenset({1})), hvs) == hvs[0]
    assert identify(OvsdbView("hv2", frozenset({99})), hvs) == hvs[1]
    assert identify(OvsdbView("hv3", frozenset({3})), hvs) is None  # not passive
    assert identify(OvsdbView(None, frozenset()), hvs) is None


def test_listener_takes_open_vswitch_syntax_and_refuses_anything_else():
    sock = listener("ptcp:0:127.0.0.1")
    try:
        assert sock.getsockname()[0] == "127.0.0.1" and not sock.getblocking()
    finally:
        sock.close()
    with pytest.raises(ValueError, match=r"is not ptcp:PORT\[:IP\]"):
        listener("tcp:127.0.0.1:6640")


def test_the_manager_opens_a_session_per_connect_out_hypervisor_and_closes_it_when_it_goes(monkeypatch):
    opened: list[tuple[str, str]] = []
    closed: list[str] = []
    provisioned: list[tuple[str, Any]] = []

    class FakeSession:
        def __init__(self, remote: str, name: str) -> None:
            self.peer, self.hypervisor, self.alive, self.connected = remote, name, True, False
            self.view = None
            opened.append((remote, name))

        def run(self) -> bool:
            self.connected = True
            return False

        def provision(self, hv: Hypervisor, prov: Provisioning, peers: Any) -> None:
            provisioned.append((hv.name, peers))

        def close(self) -> None:
            closed.append(self.hypervisor)

    from ryu_overlay import ovsdb
    monkeypatch.setattr(ovsdb.Session, "connect", classmethod(lambda cls, r, n: FakeSession(r, n)))
    reports: list[tuple[str, Any, bool]] = []
    m = OvsdbManager(lambda fn: fn(), lambda *r: reports.append(r), Provisioning())
    m.wanted([hv("hv1", 1, "tcp:198.19.0.1:6640"), hv("hv2", 2), hv("hv3", 3, None)])
    m.step()
    assert opened == [("tcp:198.19.0.1:6640", "hv1")]
    assert provisioned == []  # not before its BFD peers are known: it would remove their ports
    m.bfd_peers("hv1", [("hv2", "198.18.0.2")])
    m.step()
    assert provisioned == [("hv1", (("hv2", "198.18.0.2"),))]
    m.wanted([hv("hv1", 1, "tcp:198.19.0.1:6641")])
    m.step()
    assert closed == ["hv1"] and opened[-1] == ("tcp:198.19.0.1:6641", "hv1") and reports == [("hv1", None, False)]


def test_free_port_listener_accepts_nothing_until_a_client_connects():
    m = OvsdbManager(lambda fn: fn(), lambda *r: None, Provisioning(), "ptcp:0:127.0.0.1")
    m._listener = listener(m.listen)  # type: ignore[arg-type]
    try:
        m.step()
        assert m.pending == []
        client = socket.create_connection(m._listener.getsockname())
        try:
            for _ in range(50):
                m.step()
                if m.pending:
                    break
            assert len(m.pending) == 1 and m.pending[0].hypervisor is None
        finally:
            client.close()
        for _ in range(50):  # the client went: the unidentified session is dropped
            m.step()
            if not m.pending:
                break
        assert m.pending == []
    finally:
        m._listener.close()


# --- BFD liveness ------------------------------------------------------------------------------------------


def bfd_pair() -> tuple[Any, SimNet, list[tuple[str, set[str]]]]:
    """hv3 (a4) and hv4 (m1, declared) managed and sharing blue; what the manager was told."""
    told: list[tuple[str, set[str]]] = []
    c = managed()
    c.on_bfd_peers = lambda hv, peers: told.append((hv, {p for p, _ in peers}))
    net = SimNet(c, {hv: {**ofports(hv), **({"tapM1": 9} if hv == "hv4" else {})} for hv in HYPERVISORS})
    net.apply(c.put_port("m1", {**M1, "hypervisor": "hv4", "interface": "tapM1"})[2])
    return c, net, told


TO_A4 = {"in_port": 9, "eth_src": "02:bb:00:00:00:01", "eth_dst": "02:aa:00:00:00:04", "eth_type": 0x0800,
         "ipv4_src": "10.1.0.50", "ipv4_dst": "10.1.0.4", "ip_proto": 17}
BCAST = {**TO_A4, "eth_dst": "ff:ff:ff:ff:ff:ff"}


def test_managed_hypervisors_sharing_a_network_are_told_to_run_bfd_with_each_other_only():
    c, _, told = bfd_pair()
    assert ("hv4", {"hv3"}) in told and ("hv3", {"hv4"}) in told  # hv1/hv2 share blue but are unmanaged
    c.delete_port("m1")
    assert sorted(told[-2:]) == [("hv3", set()), ("hv4", set())]


def test_a_peer_whose_bfd_goes_down_gets_no_unicast_nor_flood_and_comes_back_when_it_recovers():
    c, net, _ = bfd_pair()
    hv4 = c.topo.hypervisors["hv4"]
    session = bfd_port("hv3")
    assert c.hypervisor_json(hv4)["tunnels"] == {}
    net.apply(c.ovsdb_state("hv4", OvsdbView(bfd={session: "init"}), True))
    assert c.hypervisor_json(hv4)["tunnels"] == {"hv3": "down"}
    assert [(d.switch, d.port) for d in net.send("hv4", TO_A4).deliveries] == [("hv3", 1)]  # never up: kept
    net.apply(c.ovsdb_state("hv4", OvsdbView(bfd={session: "up"}), True))
    assert c.hypervisor_json(hv4)["tunnels"] == {"hv3": "up"}
    assert "hv3" in {d.switch for d in net.send("hv4", BCAST).deliveries}
    net.apply(c.ovsdb_state("hv4", OvsdbView(bfd={session: "down"}), True))
    assert c.hypervisor_json(hv4)["tunnels"] == {"hv3": "down"}
    assert net.send("hv4", TO_A4).deliveries == ()
    assert "hv3" not in {d.switch for d in net.send("hv4", BCAST).deliveries}
    assert {d.switch for d in net.send("hv4", BCAST).deliveries} == {"hv1", "hv2"}  # the others still get it
    net.apply(c.ovsdb_state("hv4", OvsdbView(bfd={session: "up"}), True))
    assert [(d.switch, d.port) for d in net.send("hv4", TO_A4).deliveries] == [("hv3", 1)]


def test_bfd_ports_carry_no_vm_flows():
    c, _, _ = bfd_pair()
    view = c.view(c.topo.hypervisors["hv4"])
    assert view is not None
    ports = {**view.ofports, bfd_port("hv3"): 77}
    from ryu_overlay.flows import SwitchView, base_partition
    flows = base_partition(SwitchView(view.hypervisor, ports)).flows.values()
    on_77 = [f for f in flows if dict(f.match).get("in_port") == 77]
    assert [f.family.name for f in on_77] == ["TABLE_MISS"]  # dropped at ingress: no learning, no meter


# --- IPv6 underlay ------------------------------------------------------------------------------------------


def test_ipv6_tunnels_set_tun_ipv6_dst_and_match_tun_ipv6_src():
    c = build()
    ports = list(c.topo.ports.values())
    for p in ports:  # take the ports out, move every underlay to IPv6, put them back
        c.delete_port(p.name)
    for name, h in sorted(c.topo.hypervisors.items()):
        c.put_hypervisor(name, {"dpid": h.dpid, "tunnel_ip": f"2001:2::{h.dpid}"})
    for p in ports:
        c.put_port(p.name, {"network": p.network, "mac": p.mac, "ips": [str(ip) for ip in p.ips],
                            "hypervisor": p.hypervisor, "interface": p.interface})
    net = SimNet(c, {hv: ofports(hv) for hv in HYPERVISORS})
    a1_to_a3 = {"in_port": ofports("hv1")["tapA1"], "eth_src": "02:aa:00:00:00:01", "eth_dst": "02:aa:00:00:00:03",
                "eth_type": 0x0800, "ipv4_src": "10.1.0.1", "ipv4_dst": "10.1.0.3", "ip_proto": 17}
    result = net.send("hv1", a1_to_a3)
    assert [(d.switch, d.port) for d in result.deliveries] == [("hv2", 1)]
    assert [(t[3], t[2]) for t in result.tunnelled] == [("2001:2::2", 5001)]
    flows = [f for part in c.switches[1].flows.values() for f in part.values() if f is not None]
    assert any(("tun_ipv6_src", "2001:2::2") in f.match for f in flows)
    assert not any(k.startswith("tun_ipv4") for f in flows for k, _ in f.match)


def test_ipv4_and_ipv6_underlays_do_not_mix_in_a_network():
    c = build()
    c.put_hypervisor("hv9", {"dpid": 9, "tunnel_ip": "2001:2::9"})
    with pytest.raises(Conflict, match="hv9 tunnels with vxlan over IPv6 but network blue is also on hv1, which "
                                       "tunnels with vxlan over IPv4"):
        c.put_port("g1", {**M1, "hypervisor": "hv9", "interface": "tapG1"})


def test_a_tap_that_went_away_while_the_controller_was_down_is_unbound_at_the_first_view(tmp_path):
    from ryu_overlay.controller import Controller
    from ryu_overlay.store import SqliteStore

    path = str(tmp_path / "overlay.db")
    c = build(path=path)
    c.put_hypervisor("hv4", {"dpid": 4, "tunnel_ip": "198.18.0.4", "ovsdb": "passive"})
    c.put_port("m1", M1)
    c.put_port("m2", {**M1, "mac": "02:bb:00:00:00:02", "ips": ["10.1.0.51"]})
    c.ovsdb_state("hv4", plugged(vnet7="m1", vnet8="m2"), True)
    c.store.close()
    restarted = Controller(SqliteStore(path))
    assert where(restarted, "m1")[:3] == ("hv4", "vnet7", "ovsdb")
    restarted.ovsdb_state("hv4", plugged(vnet8="m2"), True)  # vnet7 went meanwhile
    assert where(restarted, "m1") == (None, None, None, 1)
    assert where(restarted, "m2")[:3] == ("hv4", "vnet8", "ovsdb")
