"""Where packets end up, through the flows the controller actually sent (the simulator)."""

from __future__ import annotations

import pytest

from ryu_overlay.testing.scenario import HYPERVISORS, PORTS, TUNNEL_OFPORT, build, ofports
from ryu_overlay.trace import SimError, SimNet

BCAST = "ff:ff:ff:ff:ff:ff"
HV_IP = {name: ip for name, (_, ip) in HYPERVISORS.items()}


@pytest.fixture
def net() -> SimNet:
    c = build()
    return SimNet(c, {hv: ofports(hv) for hv in HYPERVISORS})


def port_no(name: str) -> int:
    return PORTS[name][5]


def frame(src: str, dst_mac: str, **fields) -> dict:
    """An IPv4 frame from port ``src`` (its own MAC and address)."""
    _, mac, ips, _, _, no = PORTS[src]
    return {"in_port": no, "eth_src": mac, "eth_dst": dst_mac, "eth_type": 0x0800, "ipv4_src": ips[0],
            "ipv4_dst": "10.1.0.200", "ip_proto": 17, **fields}


def arp_request(src: str, target: str, **fields) -> dict:
    _, mac, ips, _, _, no = PORTS[src]
    return {"in_port": no, "eth_src": mac, "eth_dst": BCAST, "eth_type": 0x0806, "arp_op": 1, "arp_sha": mac,
            "arp_spa": ips[0], "arp_tha": "00:00:00:00:00:00", "arp_tpa": target, **fields}


def test_unicast_to_a_local_port_reaches_exactly_that_port(net):
    r = net.send("hv1", frame("a1", "02:aa:00:00:00:02"))
    assert [(d.switch, d.port) for d in r.deliveries] == [("hv1", port_no("a2"))]
    assert r.tunnelled == ()


def test_unicast_to_a_remote_port_takes_one_tunnel_with_the_vni_and_the_hosts_ip(net):
    r = net.send("hv1", frame("a1", "02:aa:00:00:00:03"))
    assert r.tunnelled == (("hv1", "hv2", 5001, HV_IP["hv2"]),)
    assert [(d.switch, d.port) for d in r.deliveries] == [("hv2", port_no("a3"))]


def test_same_mac_in_two_tenants_goes_to_each_tenants_own_port(net):
    # acme's a1 and globex's r1 share MAC 02:..:01 and address 10.1.0.1; so do a2 and r2.
    acme = net.send("hv1", frame("a1", "02:aa:00:00:00:02"))
    globex = net.send("hv1", frame("r1", "02:aa:00:00:00:02"))
    assert [(d.switch, d.port) for d in acme.deliveries] == [("hv1", port_no("a2"))]
    assert globex.tunnelled == (("hv1", "hv2", 5002, HV_IP["hv2"]),)
    assert [(d.switch, d.port) for d in globex.deliveries] == [("hv2", port_no("r2"))]


def test_broadcast_reaches_other_local_ports_and_one_copy_per_hosting_hypervisor(net):
    r = net.send("hv1", frame("a1", BCAST))
    assert sorted(r.tunnelled) == [("hv1", "hv2", 5001, HV_IP["hv2"]), ("hv1", "hv3", 5001, HV_IP["hv3"])]
    assert sorted((d.switch, d.port) for d in r.deliveries) == [
        ("hv1", port_no("a2")), ("hv2", port_no("a3")), ("hv3", port_no("a4"))]


def test_broadcast_of_the_other_tenant_reaches_only_its_hypervisors(net):
    r = net.send("hv1", frame("r1", BCAST))
    assert r.tunnelled == (("hv1", "hv2", 5002, HV_IP["hv2"]),)  # never hv3 or hv4
    assert [(d.switch, d.port) for d in r.deliveries] == [("hv2", port_no("r2"))]


@pytest.mark.parametrize("src", ["a1", "a2", "r1"])
@pytest.mark.parametrize("dst", ["02:aa:00:00:00:01", "02:aa:00:00:00:02", "02:aa:00:00:00:03",
                                 "02:aa:00:00:00:04", BCAST, "33:33:00:00:00:01", "02:cc:00:00:00:99"])
def test_no_frame_ever_reaches_a_port_of_another_network(net, src, dst):
    mine = PORTS[src][0]
    r = net.send("hv1", frame(src, dst))
    by_place = {(hv, no): net_ for net_, _, _, hv, _, no in PORTS.values()}
    for d in r.deliveries:
        assert by_place[(d.switch, d.port)] == mine
    for _, _, vni, _ in r.tunnelled:
        assert vni == {"blue": 5001, "red": 5002}[mine]


@pytest.mark.parametrize("spoof", [
    {"eth_src": "02:aa:00:00:00:03"},                    # another port's MAC
    {"ipv4_src": "10.1.0.3"},                            # another port's address
])
def test_spoofed_sources_are_dropped(net, spoof):
    r = net.send("hv1", frame("a1", "02:aa:00:00:00:02", **spoof))
    assert r.deliveries == () and r.tunnelled == ()


def test_arp_claiming_another_address_is_dropped(net):
    r = net.send("hv1", arp_request("a1", "10.1.0.3", arp_spa="10.1.0.2"))
    assert r.deliveries == () and r.tunnelled == () and r.packet_ins() == []


def tunnel_frame(src_ip: str, vni: int, dst: str = "02:aa:00:00:00:01") -> dict:
    return {"in_port": TUNNEL_OFPORT, "tun_ipv4_src": src_ip, "tunnel_id": vni, "eth_src": "02:aa:00:00:00:03",
            "eth_dst": dst, "eth_type": 0x0800, "ipv4_src": "10.1.0.3"}


@pytest.mark.parametrize("src_ip,vni", [
    ("198.18.9.9", 5001),       # not a hypervisor
    (HV_IP["hv4"], 5001),       # a hypervisor that does not host blue
    (HV_IP["hv3"], 5002),       # hosts blue, not red
    (HV_IP["hv2"], 7777),       # a VNI nobody configured
])
def test_tunnel_traffic_from_unknown_sources_or_vnis_is_dropped_in_the_first_table(net, src_ip, vni):
    r = net.switches["hv1"].process(tunnel_frame(src_ip, vni))
    assert r.dropped and [s.table for s in r.trace] == ["ingress"]


def test_tunnel_traffic_from_a_peer_reaches_the_local_port(net):
    r = net.switches["hv1"].process(tunnel_frame(HV_IP["hv2"], 5001))
    assert r.ports() == {port_no("a1")}


def test_split_horizon_broadcast_from_a_tunnel_is_delivered_locally_only(net):
    r = net.switches["hv1"].process(tunnel_frame(HV_IP["hv2"], 5001, dst=BCAST))
    assert r.ports() == {port_no("a1"), port_no("a2")}


def test_unicast_from_a_tunnel_for_a_mac_not_here_is_dropped_not_reflooded(net):
    r = net.switches["hv1"].process(tunnel_frame(HV_IP["hv2"], 5001, dst="02:aa:00:00:00:04"))
    assert r.dropped


def test_in_switch_arp_responder_builds_the_reply_and_sends_nothing_else(net):
    r = net.send("hv1", arp_request("a1", "10.1.0.3"))
    assert r.tunnelled == () and r.packet_ins() == []
    (d,) = r.deliveries
    assert (d.switch, d.port) == ("hv1", port_no("a1"))
    reply = {k: d.packet[k] for k in ("eth_src", "eth_dst", "arp_op", "arp_sha", "arp_spa", "arp_tha", "arp_tpa")}
    assert reply == {"eth_src": "02:aa:00:00:00:03", "eth_dst": "02:aa:00:00:00:01", "arp_op": 2,
                     "arp_sha": "02:aa:00:00:00:03", "arp_spa": "10.1.0.3",
                     "arp_tha": "02:aa:00:00:00:01", "arp_tpa": "10.1.0.1"}


def test_arp_for_the_same_address_in_the_other_tenant_gets_that_tenants_mac(net):
    # r9 (globex, not located anywhere) owns 10.1.0.3 in red; acme's a3 owns it in blue.
    net.apply(net.controller.put_port("r9", {"network": "red", "mac": "02:dd:00:00:00:09", "ips": ["10.1.0.3"]})[2])
    (d,) = net.send("hv1", arp_request("r1", "10.1.0.3")).deliveries
    assert d.packet["arp_sha"] == "02:dd:00:00:00:09"


def test_arp_for_an_unknown_address_is_replicated_only_to_hosting_hypervisors(net):
    r = net.send("hv1", arp_request("a1", "10.1.0.99"))
    assert sorted(x[1] for x in r.tunnelled) == ["hv2", "hv3"]


def test_arp_for_an_unknown_address_is_dropped_when_the_network_says_so(net):
    c = net.controller
    _, _, batches = c.put_network("blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"],
                                           "unknown_arp": "drop"})
    net.apply(batches)
    r = net.send("hv1", arp_request("a1", "10.1.0.99"))
    assert r.deliveries == () and r.tunnelled == ()


def test_gratuitous_arp_reply_and_unsolicited_na_are_not_flooded(net):
    garp = arp_request("a1", "10.1.0.1", arp_op=2)
    assert net.send("hv1", garp).deliveries == ()
    na = {"in_port": port_no("a1"), "eth_src": "02:aa:00:00:00:01", "eth_dst": "33:33:00:00:00:01",
          "eth_type": 0x86DD, "ipv6_src": "fd00:1::1", "ip_proto": 58, "icmpv6_type": 136,
          "ipv6_nd_target": "fd00:1::1"}
    r = net.send("hv1", na)
    assert r.deliveries == () and r.tunnelled == ()


def test_na_for_another_ports_address_is_dropped_by_port_security(net):
    na = {"in_port": port_no("a1"), "eth_src": "02:aa:00:00:00:01", "eth_dst": "02:aa:00:00:00:02",
          "eth_type": 0x86DD, "ipv6_src": "fd00:1::1", "ip_proto": 58, "icmpv6_type": 136,
          "ipv6_nd_target": "fd00:1::2"}
    r = net.send("hv1", na)
    assert r.dropped and r.hops[0].result.trace[-1].table == "port_security"


def test_multicast_solicitation_without_a_link_layer_option_goes_to_the_controller_metered(net):
    ns = {"in_port": port_no("a1"), "eth_src": "02:aa:00:00:00:01", "eth_dst": "33:33:ff:00:00:03",
          "eth_type": 0x86DD, "ipv6_src": "fd00:1::1", "ip_proto": 58, "icmpv6_type": 135,
          "ipv6_nd_target": "fd00:1::3"}
    r = net.switches["hv1"].process(ns)
    assert r.outputs == () and len(r.packet_ins) == 1 and r.meters == (1,)


def test_frames_from_an_unbound_interface_go_to_the_controller_through_its_own_meter(net):
    net.apply(net.controller.port_status(4, "tapNew", 9))
    frame = {"in_port": 9, "eth_src": "02:bb:00:00:00:01", "eth_dst": BCAST, "eth_type": 0x0806, "arp_op": 1}
    r = net.switches["hv4"].process(frame)
    assert r.outputs == () and len(r.packet_ins) == 1 and r.meters == (9,)
    unknown = net.switches["hv4"].process({**frame, "in_port": 10})  # a port not announced yet: shared meter
    assert len(unknown.packet_ins) == 1 and unknown.meters == (0xFFFF,)
    assert net.switches["hv4"].process({**frame, "in_port": TUNNEL_OFPORT}).dropped


def test_each_vm_port_has_its_own_packet_in_meter(net):
    def ns(src: str) -> dict:
        _, mac, ips, _, _, no = PORTS[src]
        return {"in_port": no, "eth_src": mac, "eth_dst": "33:33:ff:00:00:03", "eth_type": 0x86DD,
                "ipv6_src": ips[1], "ip_proto": 58, "icmpv6_type": 135, "ipv6_nd_target": "fd00:1::3"}

    assert net.switches["hv1"].process(ns("a1")).meters == (port_no("a1"),)
    assert net.switches["hv1"].process(ns("a2")).meters == (port_no("a2"),)
    unknown_ports, routers, whole_hypervisor = 0xFFFF, 0xFFFE, 0xFFFFFFFE  # the last is OFPM_CONTROLLER
    assert set(net.switches["hv1"].meters) == {port_no(p) for p in ("a1", "a2", "r1")} | {unknown_ports, routers,
                                                                                           whole_hypervisor}


def test_moving_a_port_by_rest_redirects_unicast_to_the_new_host(net):
    c = net.controller
    _, _, batches = c.put_port("a3", {"network": "blue", "mac": "02:aa:00:00:00:03",
                                      "ips": ["10.1.0.3", "fd00:1::3"], "hypervisor": "hv3", "interface": "tapA3"})
    net.ofports["hv3"]["tapA3"] = 7
    net.apply(batches)
    net.apply(c.port_status(3, "tapA3", 7))
    r = net.send("hv1", frame("a1", "02:aa:00:00:00:03"))
    assert r.tunnelled == (("hv1", "hv3", 5001, HV_IP["hv3"]),)
    assert [(d.switch, d.port) for d in r.deliveries] == [("hv3", 7)]
    # hv2 no longer hosts blue: broadcasts skip it
    assert sorted(x[1] for x in net.send("hv1", frame("a1", BCAST)).tunnelled) == ["hv3"]


def test_incremental_updates_leave_the_same_tables_as_a_fresh_connect(net):
    c = net.controller
    net.apply(c.put_port("a9", {"network": "blue", "mac": "02:aa:00:00:00:09", "ips": ["10.1.0.9"],
                                "hypervisor": "hv4", "interface": "tapA9"})[2])
    net.apply(c.delete_port("a2"))
    net.apply(c.put_hypervisor("hv3", {"dpid": 3, "tunnel_ip": "198.18.0.33"})[2])
    net.ofports["hv4"]["tapA9"] = 5
    net.apply(c.port_status(4, "tapA9", 5))

    def tables(sw):
        return sorted((e.table_id, e.priority, e.cookie, sorted(e.match.items())) for e in sw.flows())

    def groups(sw):
        return {gid: [[repr(a) for a in b.actions] for b in g.buckets] for gid, g in sw.groups.items()}

    incremental = {hv: (tables(sw), groups(sw)) for hv, sw in net.switches.items()}
    for hv in HYPERVISORS:
        net.connect(hv)
    fresh = {hv: (tables(sw), groups(sw)) for hv, sw in net.switches.items()}
    assert incremental == fresh


def test_the_simulator_refuses_ambiguous_tables():
    from ryu_overlay.compat import parser
    from ryu_overlay.trace import SimSwitch
    sw = SimSwitch()
    sw.apply([parser.OFPFlowMod(None, table_id=0, priority=5, match=parser.OFPMatch(in_port=1), instructions=[]),
              parser.OFPFlowMod(None, table_id=0, priority=5, match=parser.OFPMatch(eth_type=0x800), instructions=[])])
    with pytest.raises(SimError):
        sw.process({"in_port": 1, "eth_type": 0x800})
