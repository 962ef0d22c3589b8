"""Distributed routing, through the flows the controller actually sent (the simulator), and the
controller's ICMP errors and router answers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6TimeExceeded, IPv6
from scapy.layers.l2 import Ether

from ryu_overlay.controller import ICMP_ERROR_BURST, ICMP_ERROR_RATE, Controller
from ryu_overlay.flows import Output, SetField, SwitchView, desired_partition
from ryu_overlay.pipeline import ROUTER_METER, TABLE_IDS
from ryu_overlay.testing.scenario import HYPERVISORS, PORTS, TUNNEL_OFPORT, Clock, build, ofports
from ryu_overlay.trace import SimNet

HV_IP = {name: ip for name, (_, ip) in HYPERVISORS.items()}
GREEN = {"vni": 5003, "tenant": "acme", "subnets": ["10.2.0.0/24", "fd00:2::/64"]}
ORANGE = {"vni": 5009, "tenant": "acme", "subnets": ["10.5.0.0/24"]}
# name -> network, mac, ips, hypervisor, interface, ofport
MORE: dict[str, tuple[str, str, list[str], str | None, str | None, int]] = {
    "g1": ("green", "02:bb:00:00:00:01", ["10.2.0.1", "fd00:2::1"], "hv2", "tapG1", 3),
    "g4": ("green", "02:bb:00:00:00:04", ["10.2.0.4", "fd00:2::4"], "hv4", "tapG4", 1),
    "g5": ("green", "02:bb:00:00:00:05", ["10.2.0.5", "fd00:2::5"], "hv1", "tapG5", 4),
    "g9": ("green", "02:bb:00:00:00:09", ["10.2.0.9"], None, None, 0),  # not located
    "o1": ("orange", "02:cc:00:00:00:01", ["10.5.0.1"], "hv3", "tapO1", 2),
}
ALL = {**PORTS, **MORE}
ROUTER = {"tenant": "acme", "interfaces": [{"network": "blue", "ip": "10.1.0.254/24"},
                                           {"network": "blue", "ip": "fd00:1::fe/64"},
                                           {"network": "green", "ip": "10.2.0.254/24"},
                                           {"network": "green", "ip": "fd00:2::fe/64"}]}


def placement(clock: Clock | None = None, router: bool = True, path: str = ":memory:") -> Controller:
    c = build(clock, path)
    c.put_network("green", GREEN)
    c.put_network("orange", ORANGE)
    for name, (net, mac, ips, hv, iface, _) in MORE.items():
        c.put_port(name, {"network": net, "mac": mac, "ips": ips, "hypervisor": hv, "interface": iface})
    if router:
        c.put_router("r1", ROUTER)
    return c


def bridge_ports(hv: str) -> dict[str, int]:
    return {**ofports(hv), **{iface: no for (_, _, _, h, iface, no) in MORE.values() if h == hv and iface}}


def simnet(c: Controller) -> SimNet:
    return SimNet(c, {hv: bridge_ports(hv) for hv in HYPERVISORS})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def net(clock: Clock) -> SimNet:
    return simnet(placement(clock))


def rmac(net: SimNet) -> str:
    return net.controller.topo.routers["r1"].mac


def ip_frame(net: SimNet, src: str, dst_ip: str, ttl: int = 64, **fields: Any) -> dict[str, Any]:
    """A frame from port ``src`` to the router's MAC, for ``dst_ip``."""
    _, mac, ips, _, _, no = ALL[src]
    if ":" in dst_ip:
        v6 = next(ip for ip in ips if ":" in ip)
        return {"in_port": no, "eth_src": mac, "eth_dst": rmac(net), "eth_type": 0x86DD, "ipv6_src": v6,
                "ipv6_dst": dst_ip, "ip_proto": 17, "nw_ttl": ttl, **fields}
    return {"in_port": no, "eth_src": mac, "eth_dst": rmac(net), "eth_type": 0x0800, "ipv4_src": ips[0],
            "ipv4_dst": dst_ip, "ip_proto": 17, "nw_ttl": ttl, **fields}


def where(result: Any) -> list[tuple[str, int, str, int]]:
    return [(d.switch, d.port, d.packet["eth_dst"], d.packet["nw_ttl"]) for d in result.deliveries]


def test_routed_on_the_same_hypervisor_is_delivered_locally_with_the_targets_mac_and_ttl_one_less(net):
    r = net.send("hv1", ip_frame(net, "a1", "10.2.0.5"))
    assert r.tunnelled == ()
    assert where(r) == [("hv1", 4, "02:bb:00:00:00:05", 63)]
    assert r.deliveries[0].packet["eth_src"] == rmac(net)


def test_routed_across_hypervisors_goes_straight_to_the_targets_with_the_target_vni(net):
    r = net.send("hv1", ip_frame(net, "a1", "10.2.0.1"))
    assert r.tunnelled == (("hv1", "hv2", 5003, HV_IP["hv2"]),)
    assert where(r) == [("hv2", 3, "02:bb:00:00:00:01", 63)]  # decremented once, on hv1 only


def test_a_hypervisor_hosting_only_the_source_network_routes_straight_to_one_hosting_only_the_target(net):
    # hv3 hosts blue (a4) and orange, no green; hv4 hosts only green (g4).
    r = net.send("hv3", ip_frame(net, "a4", "10.2.0.4"))
    assert r.tunnelled == (("hv3", "hv4", 5003, HV_IP["hv4"]),)
    assert where(r) == [("hv4", 1, "02:bb:00:00:00:04", 63)]
    back = net.send("hv4", ip_frame(net, "g4", "fd00:1::4", ttl=7))
    assert back.tunnelled == (("hv4", "hv3", 5001, HV_IP["hv3"]),)
    assert where(back) == [("hv3", 1, "02:aa:00:00:00:04", 6)]


def test_ipv6_is_routed_with_the_hop_limit_decremented_once(net):
    r = net.send("hv1", ip_frame(net, "a2", "fd00:2::1", ttl=2))
    assert r.tunnelled == (("hv1", "hv2", 5003, HV_IP["hv2"]),)
    assert where(r) == [("hv2", 3, "02:bb:00:00:00:01", 1)]


def test_the_routed_frame_is_not_flagged_from_the_tunnel_on_its_ingress(net):
    r = net.send("hv1", ip_frame(net, "a1", "10.2.0.1"))
    first = r.hops[0].result.trace
    assert [s.table for s in first] == ["ingress", "port_security", "arp_nd", "mtu_check", "mtu_oversize", "l3_route",
                                        "l3_neighbour", "l2_lookup"]
    assert "write_metadata:0x138b/0x1ffffff" in first[5].actions  # green's VNI, FROM_TUNNEL clear


def test_ttl_one_goes_to_the_controller_through_the_router_meter_and_nowhere_else(net):
    for dst in ("10.2.0.1", "fd00:2::1"):
        r = net.send("hv1", ip_frame(net, "a1", dst, ttl=1))
        assert r.deliveries == () and r.tunnelled == ()
        (hop,) = r.hops
        assert [p.table_id for p in hop.result.packet_ins] == [TABLE_IDS["l3_route"]]
        assert hop.result.meters == (ROUTER_METER,)


def test_ttl_zero_is_dropped(net):
    assert net.send("hv1", ip_frame(net, "a1", "10.2.0.1", ttl=0)).dropped


@pytest.mark.parametrize("dst", ["10.2.0.77", "10.2.0.9", "fd00:2::77"])
def test_an_unknown_or_unlocated_destination_in_a_routed_subnet_goes_to_the_controller(net, dst):
    r = net.send("hv1", ip_frame(net, "a1", dst))
    assert r.deliveries == () and r.tunnelled == ()
    (hop,) = r.hops
    assert [p.table_id for p in hop.result.packet_ins] == [TABLE_IDS["l3_neighbour"]]
    assert hop.result.meters == (ROUTER_METER,)


def test_the_routers_own_address_behind_it_is_not_unreachable(net):
    assert net.send("hv1", ip_frame(net, "a1", "10.2.0.254")).dropped


def test_no_route_to_a_network_the_router_does_not_have(net):
    r = net.send("hv1", ip_frame(net, "a1", "10.5.0.1"))
    assert r.dropped
    assert r.hops[0].result.trace[-1].table == "l3_route"


def test_a_router_of_one_tenant_never_routes_a_frame_of_another(net):
    # globex's r1 (network red, same subnets as blue) sends to acme's router MAC.
    _, mac, _, _, _, no = PORTS["r1"]
    r = net.send("hv1", {**ip_frame(net, "a1", "10.2.0.1"), "in_port": no, "eth_src": mac})
    assert {vni for _, _, vni, _ in r.tunnelled} <= {5002}
    assert not any(d.packet["eth_dst"].startswith("02:bb") for d in r.deliveries)
    assert all(p.table_id != TABLE_IDS["l3_neighbour"] for _, p in r.packet_ins())
    assert all(s.table != "l3_neighbour" for h in r.hops for s in h.result.trace)


def test_arp_for_the_routers_address_is_answered_in_the_switch(net):
    _, mac, ips, _, _, no = PORTS["a1"]
    req = {"in_port": no, "eth_src": mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0806, "arp_op": 1,
           "arp_sha": mac, "arp_spa": ips[0], "arp_tha": "00:00:00:00:00:00", "arp_tpa": "10.1.0.254"}
    r = net.send("hv1", req)
    assert r.packet_ins() == [] and r.tunnelled == ()
    (d,) = r.deliveries
    assert (d.port, d.packet["arp_op"], d.packet["arp_sha"], d.packet["arp_spa"], d.packet["eth_dst"]) == (
        no, 2, rmac(net), "10.1.0.254", mac)
    # the same address in globex's red network is not the router's
    _, rmac_, rips, _, _, rno = PORTS["r1"]
    other = net.send("hv1", {**req, "in_port": rno, "eth_src": rmac_, "arp_sha": rmac_, "arp_spa": rips[0]})
    assert all(d.packet.get("arp_sha") != rmac(net) for d in other.deliveries)


def test_a_solicitation_for_the_routers_ipv6_is_answered_in_the_switch_with_the_router_flag(net):
    _, mac, ips, _, _, no = PORTS["a1"]
    ns = {"in_port": no, "eth_src": mac, "eth_dst": "33:33:ff:00:00:fe", "eth_type": 0x86DD, "ipv6_src": ips[1],
          "ipv6_dst": "ff02::1:ff00:fe", "ip_proto": 58, "icmpv6_type": 135, "icmpv6_code": 0,
          "ipv6_nd_target": "fd00:1::fe", "ipv6_nd_sll": mac, "nw_ttl": 255}
    r = net.send("hv1", ns)
    assert r.packet_ins() == [] and r.tunnelled == ()
    (d,) = r.deliveries
    assert (d.port, d.packet["icmpv6_type"], d.packet["nd_reserved"]) == (no, 136, 0xE0000000)  # R, S, O
    assert (d.packet["eth_src"], d.packet["ipv6_nd_tll"], d.packet["ipv6_src"]) == (rmac(net), rmac(net), "fd00:1::fe")


def test_a_solicitation_without_the_askers_address_goes_up_and_is_answered_with_the_router_flag(net):
    c = net.controller
    _, mac, ips, _, _, no = PORTS["a1"]
    ns = {"in_port": no, "eth_src": mac, "eth_dst": "33:33:ff:00:00:fe", "eth_type": 0x86DD, "ipv6_src": ips[1],
          "ip_proto": 58, "icmpv6_type": 135, "ipv6_nd_target": "fd00:1::fe"}
    r = net.send("hv1", ns)
    assert [h.result.meters for h in r.hops] == [(no,)] and len(r.packet_ins()) == 1
    data = bytes(Ether(src=mac, dst="33:33:ff:00:00:fe") / IPv6(src=ips[1], dst="ff02::1:ff00:fe") /
                 ICMPv6ND_NS(tgt="fd00:1::fe"))
    (out,) = c.packet_in(1, no, data)[1]
    na = Ether(out.data)
    assert na[ICMPv6ND_NA].tgt == "fd00:1::fe" and na[ICMPv6ND_NA].R == 1 and na[ICMPv6ND_NA].S == 1
    assert na.src == rmac(net) and na.dst == mac and out.actions[0].port == no
    assert c.stats["router_nd_answered"] == 1


def test_a_dad_probe_for_the_routers_address_is_defended_to_all_nodes(net):
    _, mac, _, _, _, no = PORTS["a1"]
    data = bytes(Ether(src=mac, dst="33:33:ff:00:00:fe") / IPv6(src="::", dst="ff02::1:ff00:fe") /
                 ICMPv6ND_NS(tgt="fd00:1::fe"))
    na = Ether(net.controller.packet_in(1, no, data)[1][0].data)
    assert (na.dst, na[IPv6].dst, na[ICMPv6ND_NA].R, na[ICMPv6ND_NA].S) == ("33:33:00:00:00:01", "ff02::1", 1, 0)


def _datagram(src: str, dst: str, ttl: int, rmac_: str) -> bytes:
    _, mac, ips, _, _, _ = ALL[src]
    if ":" in dst:
        return bytes(Ether(src=mac, dst=rmac_) / IPv6(src=next(i for i in ips if ":" in i), dst=dst, hlim=ttl) /
                     UDP(dport=33434))
    return bytes(Ether(src=mac, dst=rmac_) / IP(src=ips[0], dst=dst, ttl=ttl) / UDP(dport=33434))


def test_ttl_expiry_is_answered_with_time_exceeded_from_the_routers_address_at_most_at_the_rate(net, clock):
    c = net.controller
    sent = [c.packet_in(1, 1, _datagram("a1", "10.2.0.1", 1, rmac(net))) for _ in range(3 * ICMP_ERROR_BURST)]
    replies = [b[1][0] for b in sent if b]
    assert len(replies) == ICMP_ERROR_BURST
    err = Ether(replies[0].data)
    assert (err.src, err.dst, err[IP].src, err[IP].dst) == (rmac(net), "02:aa:00:00:00:01", "10.1.0.254", "10.1.0.1")
    assert (err[ICMP].type, err[ICMP].code) == (11, 0)
    assert replies[0].actions[0].port == 1
    assert c.stats["icmp_rate_limited"] == 2 * ICMP_ERROR_BURST
    clock.now += 1.0
    again = [c.packet_in(1, 1, _datagram("a1", "10.2.0.1", 1, rmac(net))) for _ in range(3 * ICMP_ERROR_BURST)]
    assert sum(bool(b) for b in again) == int(ICMP_ERROR_RATE)


def test_ipv6_hop_limit_expiry_is_answered_with_time_exceeded(net):
    out = net.controller.packet_in(1, 1, _datagram("a1", "fd00:2::1", 1, rmac(net)))[1][0]
    err = Ether(out.data)
    assert err[IPv6].src == "fd00:1::fe" and err[IPv6].dst == "fd00:1::1"
    assert err.haslayer(ICMPv6TimeExceeded)


def test_an_unknown_destination_is_answered_with_unreachable(net):
    c = net.controller
    routed = bytearray(_datagram("a1", "10.2.0.77", 63, rmac(net)))
    routed[6:12] = bytes.fromhex(rmac(net).replace(":", ""))  # what the switch sends up: routed, neighbour miss
    err = Ether(c.packet_in(1, 1, bytes(routed))[1][0].data)
    assert (err[IP].src, err[IP].dst, err[ICMP].type, err[ICMP].code) == ("10.1.0.254", "10.1.0.1", 3, 1)
    routed6 = bytearray(_datagram("a1", "fd00:2::77", 63, rmac(net)))
    routed6[6:12] = bytes.fromhex(rmac(net).replace(":", ""))
    err6 = Ether(c.packet_in(1, 1, bytes(routed6))[1][0].data)
    assert err6[ICMPv6DestUnreach].code == 3 and err6[IPv6].src == "fd00:1::fe"
    assert c.stats["icmp_unreachable"] == 2


def test_no_error_about_an_icmp_error_and_none_from_a_router_without_that_ip_version(net):
    c = net.controller
    _, mac, ips, _, _, _ = ALL["a1"]
    about_error = bytes(Ether(src=mac, dst=rmac(net)) / IP(src=ips[0], dst="10.2.0.1", ttl=1) / ICMP(type=3, code=1))
    assert c.packet_in(1, 1, about_error) == {}
    c.put_router("r1", {"tenant": "acme", "interfaces": [ROUTER["interfaces"][1], ROUTER["interfaces"][3]]})
    assert c.packet_in(1, 1, _datagram("a1", "10.2.0.1", 1, rmac(net))) == {}
    assert c.stats["icmp_time_exceeded"] == 0


def cookies(net: SimNet, hv: str) -> list[int]:
    return sorted(e.cookie for e in net.switches[hv].flows())


def test_a_router_added_later_and_a_full_resync_give_the_same_flows(clock):
    live = simnet(placement(clock, router=False))
    live.apply(live.controller.put_router("r1", ROUTER)[2])
    fresh = simnet(placement(clock))
    for hv in HYPERVISORS:
        assert cookies(live, hv) == cookies(fresh, hv)
    r = live.send("hv3", ip_frame(live, "a4", "10.2.0.4"))
    assert where(r) == [("hv4", 1, "02:bb:00:00:00:04", 63)]


def test_deleting_the_router_removes_every_routing_flow(clock):
    net = simnet(placement(clock))
    plain = simnet(placement(clock, router=False))
    net.apply(net.controller.delete_router("r1"))
    for hv in HYPERVISORS:
        assert cookies(net, hv) == cookies(plain, hv)


def test_a_port_appearing_on_a_new_hypervisor_brings_it_the_routes_and_is_reached_by_them(net):
    c = net.controller
    net.apply(c.put_port("g4", {"network": "green", "mac": "02:bb:00:00:00:04", "ips": ["10.2.0.4"],
                                "hypervisor": "hv3", "interface": "tapG4"})[2])
    net.ofports["hv3"]["tapG4"] = 5
    net.apply(c.port_status(3, "tapG4", 5))
    r = net.send("hv1", ip_frame(net, "a1", "10.2.0.4"))
    assert r.tunnelled == (("hv1", "hv3", 5003, HV_IP["hv3"]),)
    assert where(r) == [("hv3", 5, "02:bb:00:00:00:04", 63)]


ROUTED_SPEC = ("in_port=tapA4,eth_src=02:aa:00:00:00:04,eth_dst={mac},ip,ipv4_src=10.1.0.4,ipv4_dst=10.2.0.4,"
               "nw_ttl=9")


def _trace_says_routed(text: str) -> None:
    assert f"{TABLE_IDS['l3_route']} l3_route: priority 20" in text and "dec_ttl" in text
    assert f"{TABLE_IDS['l3_neighbour']} l3_neighbour: priority 100" in text
    assert "tunnel hv3 -> hv4 (tun_id=5003, tun_dst=198.18.0.4)" in text
    assert text.rstrip().endswith("delivered on hv4 port 2")  # tapG4, guessed after the tunnel port


def test_trace_command_follows_a_routed_frame_from_the_database(tmp_path, capsys, clock):
    from ryu_overlay.trace import main

    db = str(tmp_path / "db")
    c = placement(clock, path=db)
    mac = c.topo.routers["r1"].mac
    c.store.close()
    assert main(["--db", db, "hv3", ROUTED_SPEC.format(mac=mac)]) == 0
    _trace_says_routed(capsys.readouterr().out)


def test_trace_url_reads_the_routers_with_their_macs(capsys, clock):
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from ryu_overlay.rest import RestApp
    from ryu_overlay.trace import main

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    c = placement(clock)
    c.put_router("r0", {"tenant": "globex", "interfaces": [{"network": "red", "ip": "10.1.0.253/24"}]})
    c.delete_router("r0")  # r1's MAC is then not the first a fresh controller would allocate
    c.put_router("r1", {"tenant": "acme", "interfaces": ROUTER["interfaces"][:1]})
    c.delete_router("r1")
    c.put_router("r9", {"tenant": "globex", "interfaces": [{"network": "red", "ip": "10.1.0.253/24"}]})
    c.put_router("r1", ROUTER)
    mac = c.topo.routers["r1"].mac
    assert mac != "0e:52:00:00:00:01"
    server = make_server("127.0.0.1", 0, RestApp(c, lambda batches: None), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert main(["--url", f"http://127.0.0.1:{server.server_port}", "hv3", ROUTED_SPEC.format(mac=mac)]) == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    _trace_says_routed(capsys.readouterr().out)


def test_a_hypervisor_routing_into_a_network_it_does_not_host_holds_one_flow_per_neighbour_address(clock):
    # hv3 hosts blue and orange, no green: for green it needs a neighbour entry per address of a
    # located port (g1, g4, g5; g9 is not located), each tunnelling straight to the port's
    # hypervisor, and the drops for the router's own green addresses; no l2_lookup flow.
    c = placement(clock)
    view = SwitchView(c.topo.hypervisors["hv3"], bridge_ports("hv3"))
    flows = desired_partition(c.topo, view, 5003).flows.values()
    assert Counter(f.table for f in flows) == {"l3_neighbour": 6 + 2}
    to_g4 = [f for f in flows if ("ipv4_dst", "10.2.0.4") in f.match]
    assert [f.actions for f in to_g4] == [(SetField("eth_dst", "02:bb:00:00:00:04"), SetField("tunnel_id", 5003),
                                           SetField("tun_ipv4_dst", HV_IP["hv4"]), Output(TUNNEL_OFPORT))]
