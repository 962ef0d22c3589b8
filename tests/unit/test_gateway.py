"""The external gateway (issue #12 item 2), through the flows the controller actually sent (the
simulator): the default route to the gateway hypervisor, SNAT and floating IPs on the uplink, the
next hop resolved by ARP, and the way back to the VM's hypervisor."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.l2 import ARP, Ether

from ryu_overlay.compat import ofproto as ofp, parser
from ryu_overlay.controller import Controller
from ryu_overlay.model import Conflict
from ryu_overlay.ofmsg import FlowAdd, _ryu_instructions, ryu_match
from ryu_overlay.pipeline import TABLE_IDS, Family, gateway_zone
from ryu_overlay.testing.scenario import HYPERVISORS, PORTS, TUNNEL_OFPORT, build, ofports
from ryu_overlay.trace import SimNet, SimSwitch, main as trace_main

HV_IP = {name: ip for name, (_, ip) in HYPERVISORS.items()}
UPLINK = 7
NEXT_HOP, NEXT_HOP_MAC = "198.51.100.1", "02:ee:00:00:00:01"
GATEWAY_IP, FLOATING = "198.51.100.2", "198.51.100.10"
OUTSIDE = "203.0.113.5"
GREEN = {"vni": 5003, "tenant": "acme", "subnets": ["10.2.0.0/24"]}
# name -> network, mac, ips, hypervisor, interface, ofport
MORE = {"g1": ("green", "02:bb:00:00:00:01", ["10.2.0.1"], "hv2", "tapG1", 3),
        "g4": ("green", "02:bb:00:00:00:04", ["10.2.0.4"], "hv4", "tapG4", 2)}
ALL = {**PORTS, **MORE}


def router(snat: bool = True, floating: bool = True) -> dict[str, Any]:
    return {"tenant": "acme",
            "interfaces": [{"network": "blue", "ip": "10.1.0.254/24"}, {"network": "green", "ip": "10.2.0.254/24"}],
            "gateway": {"hypervisor": "hv4", "interface": "uplink0", "ip": f"{GATEWAY_IP}/24", "next_hop": NEXT_HOP},
            "snat": snat, "floating_ips": {FLOATING: "a3"} if floating else {}}


def bridge_ports(hv: str) -> dict[str, int]:
    ports = {**ofports(hv), **{iface: no for (_, _, _, h, iface, no) in MORE.values() if h == hv}}
    return {**ports, "uplink0": UPLINK} if hv == "hv4" else ports


def placement(**kw: Any) -> Controller:
    c = build()
    c.put_network("green", GREEN)
    for name, (net, mac, ips, hv, iface, _) in MORE.items():
        c.put_port(name, {"network": net, "mac": mac, "ips": ips, "hypervisor": hv, "interface": iface})
    c.put_router("r1", router(**kw))
    return c


def resolved(net: SimNet) -> SimNet:
    """The next hop answers the controller's ARP request through the uplink's trap."""
    answer = {"in_port": UPLINK, "eth_src": NEXT_HOP_MAC, "eth_dst": rmac(net), "eth_type": 0x0806, "arp_op": 2,
              "arp_spa": NEXT_HOP, "arp_sha": NEXT_HOP_MAC, "arp_tpa": GATEWAY_IP, "arp_tha": rmac(net)}
    trapped = net.send("hv4", answer).packet_ins()
    assert [s for s, _ in trapped] == ["hv4"]
    frame = bytes(Ether(src=NEXT_HOP_MAC, dst=rmac(net)) /
                  ARP(op=2, hwsrc=NEXT_HOP_MAC, psrc=NEXT_HOP, hwdst=rmac(net), pdst=GATEWAY_IP))
    net.apply(net.controller.packet_in(4, UPLINK, frame))
    return net


@pytest.fixture
def net() -> SimNet:
    return resolved(SimNet(placement(), {hv: bridge_ports(hv) for hv in HYPERVISORS}))


def rmac(net: SimNet) -> str:
    return net.controller.topo.routers["r1"].mac


def out(net: SimNet, src: str, dst: str = OUTSIDE, ttl: int = 64, sport: int = 4000) -> dict[str, Any]:
    _, mac, ips, _, _, no = ALL[src]
    return {"in_port": no, "eth_src": mac, "eth_dst": rmac(net), "eth_type": 0x0800, "ipv4_src": ips[0],
            "ipv4_dst": dst, "ip_proto": 17, "udp_src": sport, "udp_dst": 53, "nw_ttl": ttl}


def inbound(net: SimNet, dst: str, src: str = OUTSIDE, sport: int = 53, dport: int = 4000) -> dict[str, Any]:
    return {"in_port": UPLINK, "eth_src": NEXT_HOP_MAC, "eth_dst": rmac(net), "eth_type": 0x0800, "ipv4_src": src,
            "ipv4_dst": dst, "ip_proto": 17, "udp_src": sport, "udp_dst": dport, "nw_ttl": 60}


def uplink(result: Any) -> list[tuple[str, str, str, str, int]]:
    return [(d.packet["eth_src"], d.packet["eth_dst"], d.packet["ipv4_src"], d.packet["ipv4_dst"], d.packet["nw_ttl"])
            for d in result.deliveries if d.switch == "hv4" and d.port == UPLINK]


def test_the_controller_asks_for_the_next_hop_on_the_uplink_and_traffic_out_waits_for_the_answer():
    c = placement()
    net = SimNet(c, {hv: bridge_ports(hv) for hv in HYPERVISORS})
    sent = [m for m in net.connect("hv4") if isinstance(m, parser.OFPPacketOut)]
    requests = [Ether(m.data) for m in sent if [a.port for a in m.actions] == [UPLINK] and ARP in Ether(m.data)]
    assert [(p[ARP].op, p[ARP].psrc, p[ARP].pdst, p[ARP].hwsrc, p.dst) for p in requests] == \
        [(1, GATEWAY_IP, NEXT_HOP, rmac(net), "ff:ff:ff:ff:ff:ff")]
    assert uplink(net.send("hv1", out(net, "a1"))) == []  # unresolved: dropped on hv4
    assert c.resolve_next_hops()[4][0].data == sent[0].data  # asked again on every poll
    resolved(net)
    assert c.stats["next_hop_learned"] == 1
    assert uplink(net.send("hv1", out(net, "a1"))) == [(rmac(net), NEXT_HOP_MAC, GATEWAY_IP, OUTSIDE, 63)]


def test_arp_from_another_address_on_the_uplink_teaches_nothing(net):
    frame = bytes(Ether(src="02:ee:00:00:00:99", dst="ff:ff:ff:ff:ff:ff") /
                  ARP(op=1, hwsrc="02:ee:00:00:00:99", psrc="198.51.100.99", pdst=GATEWAY_IP))
    assert net.controller.packet_in(4, UPLINK, frame) == {}
    assert net.controller.stats["next_hop_learned"] == 1


def test_snat_out_through_the_gateway_hypervisor_with_the_networks_vni_and_back_to_the_vms_hypervisor(net):
    r = net.send("hv2", out(net, "g1"))
    assert r.tunnelled == (("hv2", "hv4", 5003, HV_IP["hv4"]),)
    assert uplink(r) == [(rmac(net), NEXT_HOP_MAC, GATEWAY_IP, OUTSIDE, 63)]  # TTL decremented once
    back = net.send("hv4", inbound(net, GATEWAY_IP))
    assert back.tunnelled == (("hv4", "hv2", 5003, HV_IP["hv2"]),)
    assert [(d.switch, d.port, d.packet["eth_dst"], d.packet["ipv4_dst"], d.packet["nw_ttl"])
            for d in back.deliveries] == [("hv2", 3, "02:bb:00:00:00:01", "10.2.0.1", 59)]


def test_two_vms_share_the_gateway_address_and_each_gets_its_own_replies(net):
    net.send("hv1", out(net, "a1", sport=5001))
    net.send("hv1", out(net, "a2", sport=5002))
    for dport, port in ((5001, 1), (5002, 2)):
        back = net.send("hv4", inbound(net, GATEWAY_IP, dport=dport))
        assert [(d.switch, d.port) for d in back.deliveries] == [("hv1", port)]
        assert back.tunnelled == (("hv4", "hv1", 5001, HV_IP["hv1"]),)


def test_the_outside_cannot_open_a_connection_to_the_gateway_address_or_reach_private_addresses(net):
    assert net.send("hv4", inbound(net, GATEWAY_IP)).dropped  # no connection to answer
    assert net.send("hv4", inbound(net, "10.1.0.1")).dropped
    net.send("hv1", out(net, "a1"))
    assert net.send("hv4", inbound(net, GATEWAY_IP, src="203.0.113.6")).dropped  # not the peer it talked to


def test_a_vm_on_the_gateway_hypervisor_leaves_without_a_tunnel(net):
    r = net.send("hv4", out(net, "g4"))
    assert r.tunnelled == ()
    assert uplink(r) == [(rmac(net), NEXT_HOP_MAC, GATEWAY_IP, OUTSIDE, 63)]
    back = net.send("hv4", inbound(net, GATEWAY_IP))
    assert [(d.switch, d.port, d.packet["ipv4_dst"]) for d in back.deliveries] == [("hv4", 2, "10.2.0.4")]


def test_a_floating_ip_is_the_ports_address_both_ways(net):
    r = net.send("hv2", out(net, "a3"))
    assert r.tunnelled == (("hv2", "hv4", 5001, HV_IP["hv4"]),)
    assert uplink(r) == [(rmac(net), NEXT_HOP_MAC, FLOATING, OUTSIDE, 63)]
    first = net.send("hv4", inbound(net, FLOATING, sport=40000, dport=22))  # opened from the outside
    assert first.tunnelled == (("hv4", "hv2", 5001, HV_IP["hv2"]),)
    assert [(d.switch, d.port, d.packet["eth_dst"], d.packet["ipv4_dst"], d.packet["nw_ttl"])
            for d in first.deliveries] == [("hv2", 1, "02:aa:00:00:00:03", "10.1.0.3", 59)]


def test_a_floating_ip_works_without_snat_and_without_snat_private_subnets_are_routed_as_they_are():
    net = resolved(SimNet(placement(snat=False), {hv: bridge_ports(hv) for hv in HYPERVISORS}))
    assert uplink(net.send("hv2", out(net, "a3"))) == [(rmac(net), NEXT_HOP_MAC, FLOATING, OUTSIDE, 63)]
    assert [d.packet["ipv4_dst"] for d in net.send("hv4", inbound(net, FLOATING)).deliveries] == ["10.1.0.3"]
    assert uplink(net.send("hv1", out(net, "a1"))) == [(rmac(net), NEXT_HOP_MAC, "10.1.0.1", OUTSIDE, 63)]
    back = net.send("hv4", inbound(net, "10.1.0.1"))
    assert [(d.switch, d.port) for d in back.deliveries] == [("hv1", 1)]
    assert net.send("hv4", inbound(net, GATEWAY_IP)).dropped


def test_arp_for_the_gateway_and_floating_addresses_is_answered_on_the_uplink_in_the_switch(net):
    for ip in (GATEWAY_IP, FLOATING):
        r = net.send("hv4", {"in_port": UPLINK, "eth_src": NEXT_HOP_MAC, "eth_dst": "ff:ff:ff:ff:ff:ff",
                             "eth_type": 0x0806, "arp_op": 1, "arp_spa": "198.51.100.77", "arp_sha": NEXT_HOP_MAC,
                             "arp_tpa": ip})
        assert [(d.port, d.packet["arp_op"], d.packet["arp_spa"], d.packet["arp_sha"], d.packet["eth_dst"])
                for d in r.deliveries] == [(UPLINK, 2, ip, rmac(net), NEXT_HOP_MAC)]
    assert net.send("hv4", {"in_port": UPLINK, "eth_src": NEXT_HOP_MAC, "eth_dst": "ff:ff:ff:ff:ff:ff",
                            "eth_type": 0x0806, "arp_op": 1, "arp_spa": "198.51.100.77",
                            "arp_tpa": "198.51.100.11"}).dropped


def test_another_tenant_cannot_use_a_gateway_that_is_not_its_routers(net):
    # r1 (globex, red) sends to acme's router MAC for the outside: red has no route there
    red = {**out(net, "r1"), "ipv4_src": "10.1.0.1"}
    r = net.send("hv1", red)
    assert uplink(r) == [] and all(t[1] != "hv4" for t in r.tunnelled)
    # nor does a frame tunnelled to hv4 with a VNI that is not the router's get out
    forged = {**out(net, "a1"), "in_port": TUNNEL_OFPORT, "tun_ipv4_src": HV_IP["hv1"], "tunnel_id": 5002,
              "eth_src": rmac(net)}
    assert net.send("hv4", forged).dropped
    # nor from a hypervisor that is no host of the network
    forged = {**forged, "tunnel_id": 5001, "tun_ipv4_src": HV_IP["hv3"].replace(".3", ".9")}
    assert net.send("hv4", forged).dropped


def test_ipv6_and_ttl_one_do_not_leave(net):
    assert uplink(net.send("hv1", out(net, "a1", ttl=1))) == []
    six = {**out(net, "a1"), "eth_type": 0x86DD, "ipv6_src": "fd00:1::1", "ipv6_dst": "2001:db8::1"}
    del six["ipv4_src"], six["ipv4_dst"]
    assert uplink(net.send("hv1", six)) == []


def test_removing_the_gateway_removes_its_flows_and_the_way_out(net):
    c = net.controller
    net.apply(c.put_router("r1", {**router(), "gateway": None, "snat": False, "floating_ips": {}})[2])
    families = {Family.GATEWAY_IN, Family.DEFAULT_ROUTE, Family.UPLINK_ARP, Family.FLOATING_IP, Family.SNAT,
                Family.UPLINK_OUT}
    for hv, sw in net.switches.items():
        assert not [e for e in sw.flows() if e.cookie >> 56 in families], hv
    assert uplink(net.send("hv1", out(net, "a1"))) == []


def test_moving_the_gateway_moves_its_flows(net):
    c = net.controller
    moved = router()
    moved["gateway"] = {**moved["gateway"], "hypervisor": "hv3"}
    net.ofports["hv3"]["uplink0"] = 9
    net.apply(c.port_status(3, "uplink0", 9))
    net.apply(c.put_router("r1", moved)[2])
    assert not [e for e in net.switches["hv4"].flows() if e.cookie >> 56 == Family.UPLINK_ARP]
    assert c.resolve_next_hops().keys() == {3}
    net.apply(c.learn_next_hop("hv3", "uplink0", NEXT_HOP, NEXT_HOP_MAC))
    r = net.send("hv1", out(net, "a1"))
    assert r.tunnelled == (("hv1", "hv3", 5001, HV_IP["hv3"]),)
    assert [(d.switch, d.port, d.packet["ipv4_src"]) for d in r.deliveries] == [("hv3", 9, GATEWAY_IP)]


def test_the_uplink_appearing_brings_its_flows_and_an_arp_request():
    c = placement()
    ports = {hv: bridge_ports(hv) for hv in HYPERVISORS}
    del ports["hv4"]["uplink0"]
    net = SimNet(c, ports)
    assert not net.switches["hv4"].flows(TABLE_IDS["uplink_in"])
    batches = c.port_status(4, "uplink0", UPLINK)
    assert any(isinstance(m, parser.OFPPacketOut) for m in batches[4])
    net.ofports["hv4"]["uplink0"] = UPLINK
    net.apply(batches)
    resolved(net)
    assert uplink(net.send("hv1", out(net, "a1")))


def test_the_gateway_hypervisor_cannot_be_deleted_while_it_is_one():
    c = placement()
    c.delete_port("g4")
    with pytest.raises(Conflict, match="gateway of router r1"):
        c.delete_hypervisor("hv4")


def test_every_gateway_flow_encodes_to_ryus_bytes_and_each_router_has_its_own_zone(net):
    flows = [e for e in net.controller.switches[4].flows.values() for e in e.values()]
    gateway = [f for f in flows if f is not None and f.family >= Family.GATEWAY_IN]
    assert {f.family for f in gateway} == {Family.GATEWAY_IN, Family.DEFAULT_ROUTE, Family.UPLINK_ARP,
                                           Family.FLOATING_IP, Family.SNAT, Family.UPLINK_OUT}
    for f in gateway:
        ours = FlowAdd(f)
        ours.serialize()
        assert bytes(ours.buf) == ryu_bytes(f), f
    assert gateway_zone(rmac(net)) == 1 and gateway_zone("0e:52:00:00:01:02") == 0x102


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser


def ryu_bytes(f: Any) -> bytes:
    msg = parser.OFPFlowMod(FakeDatapath(), cookie=f.cookie, table_id=TABLE_IDS[f.table], command=ofp.OFPFC_ADD,
                            priority=f.priority, match=ryu_match(f), instructions=_ryu_instructions(f))
    msg.xid = 0
    msg.serialize()
    return bytes(msg.buf)


def test_the_simulator_refuses_nat_without_an_ip_match():
    from ryu_overlay.flows import Ct, flow
    from ryu_overlay.trace import SimError

    bad = flow("gateway_out", 50, Family.SNAT, {"metadata": (5001, 0xFFFFFF)}, 5001,
               actions=(Ct(1, "uplink_out", commit=True, snat=GATEWAY_IP),))
    with pytest.raises(SimError, match="nat needs an IP"):
        SimSwitch().apply([FlowAdd(bad)])


def test_trace_follows_snat_out_and_the_reply_back(tmp_path, capsys):
    db = tmp_path / "overlay.db"
    c = build(path=str(db))
    c.put_network("green", GREEN)
    for name, (netw, mac, ips, hv, iface, _) in MORE.items():
        c.put_port(name, {"network": netw, "mac": mac, "ips": ips, "hypervisor": hv, "interface": iface})
    mac = c.put_router("r1", router())[1].mac
    c.store.close()
    request = f"in_port=tapA1,eth_src=02:aa:00:00:00:01,eth_dst={mac},udp,ipv4_src=10.1.0.1,ipv4_dst={OUTSIDE}," \
              "udp_src=4000,udp_dst=53"
    reply = f"in_port=uplink0,eth_src=00:00:5e:00:53:01,eth_dst={mac},udp,ipv4_src={OUTSIDE}," \
            f"ipv4_dst={GATEWAY_IP},udp_src=53,udp_dst=4000"
    assert trace_main(["hv1", request, "--db", str(db), "--then", "hv4", reply]) == 0
    assert "port numbers of hv4 (guessed): vxlan0=1, tapG4=2, uplink0=3" in capsys.readouterr().out
    assert trace_main(["hv1", request, "--db", str(db), "--ofport", "hv4:uplink0=7",
                       "--then", "hv4", reply]) == 0
    text = capsys.readouterr().out
    assert f"ct(commit,zone=1,nat(src={GATEWAY_IP}),table=uplink_out)" in text
    assert f"zone 1: +new+trk, ipv4_src 10.1.0.1 -> {GATEWAY_IP}" in text
    assert f"leaves hv4 port 7 as eth_src={mac}, eth_dst=00:00:5e:00:53:01, ipv4_src={GATEWAY_IP}" in text
    assert "zone 1: +est+rpl+trk, ipv4_dst 198.51.100.2 -> 10.1.0.1" in text
    assert text.rstrip().endswith("delivered on hv1 port 2")  # tapA1 is hv1's second interface by name


def test_a_gateway_put_in_a_transaction_asks_for_its_next_hop_once_committed():
    from ryu_overlay.transactions import parse_transaction, run

    c = placement()
    net = SimNet(c, {hv: bridge_ports(hv) for hv in HYPERVISORS})
    net.apply(c.delete_router("r1"))
    body = {"operations": [{"op": "put", "kind": "routers", "name": "r1", "body": router()}]}
    _, batches = run(c, parse_transaction(body))
    outs = [m for m in batches[4] if isinstance(m, parser.OFPPacketOut)]
    assert [(Ether(m.data)[ARP].pdst, [a.port for a in m.actions]) for m in outs] == [(NEXT_HOP, [UPLINK])]
    net.apply(batches)
    resolved(net)
    assert uplink(net.send("hv1", out(net, "a1"))) == [(rmac(net), NEXT_HOP_MAC, GATEWAY_IP, OUTSIDE, 63)]


def test_a_gateway_put_by_another_controller_instance_brings_the_uplink_flows():
    from ryu_overlay.store import Put

    c = placement()
    r1 = c.topo.routers["r1"]
    net = SimNet(c, {hv: bridge_ports(hv) for hv in HYPERVISORS})
    net.apply(c.delete_router("r1"))
    assert not net.switches["hv4"].flows(TABLE_IDS["uplink_in"])
    net.apply(c.apply_remote([Put(r1)]))
    net.apply(c.resolve_next_hops())
    resolved(net)
    assert uplink(net.send("hv1", out(net, "a1"))) == [(rmac(net), NEXT_HOP_MAC, GATEWAY_IP, OUTSIDE, 63)]
    back = net.send("hv4", inbound(net, GATEWAY_IP))  # through the uplink's flows, in partition 0
    assert [(d.switch, d.port) for d in back.deliveries] == [("hv1", 1)]
