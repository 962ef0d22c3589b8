"""Controller behaviour that is about messages rather than packets: sync, diffs, learning, proxying."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from ryu_overlay.compat import ofproto as ofp, parser
from ryu_overlay.pipeline import Family, GroupRole, cookie_family, cookie_vni, group_id
from ryu_overlay.testing.scenario import HYPERVISORS, NETWORKS, Clock, build, connect, garp, kind, ofports
from ryu_overlay.trace import SimNet

BCAST = "ff:ff:ff:ff:ff:ff"


def flow_adds(msgs: list[Any]) -> list[Any]:
    return [m for m in msgs if isinstance(m, parser.OFPFlowMod) and m.command == ofp.OFPFC_ADD]


def installed_state(msgs: list[Any]) -> tuple[list[int], list[tuple[int, Any]], list[tuple[int, Any]]]:
    """What a switch would report after applying ``msgs`` to an empty table."""
    from ryu_overlay.ofmsg import decode_group, decode_meter
    cookies = [m.cookie for m in flow_adds(msgs)]
    groups = [(m.group_id, decode_group(m)) for m in msgs if isinstance(m, parser.OFPGroupMod)]
    meters = [(m.meter_id, decode_meter(m)) for m in msgs if isinstance(m, parser.OFPMeterMod)]
    return cookies, groups, meters


def test_first_connect_installs_meters_and_groups_before_flows_with_barriers():
    c = build()
    msgs = connect(c, "hv1")
    kinds = [kind(m) for m in msgs]
    first_flow = kinds.index("OFPFlowMod")
    assert "OFPMeterMod" in kinds[:first_flow] and "OFPGroupMod" in kinds[:first_flow]
    assert kinds[first_flow - 1] == "OFPBarrierRequest" and kinds[-1] == "OFPBarrierRequest"
    assert all(k != "OFPGroupMod" for k in kinds[first_flow:])


def test_reconnect_with_everything_installed_sends_nothing():
    c = build()
    cookies, groups, meters = installed_state(connect(c, "hv1"))
    assert connect(c, "hv1", cookies=cookies, groups=groups, meters=meters) == []


def test_reconnect_deletes_only_unknown_flows_and_groups():
    c = build()
    cookies, groups, meters = installed_state(connect(c, "hv1"))
    stale_cookie, stale_group = 0x0900DEAD00000001, group_id(GroupRole.FLOOD, 7777)
    msgs = connect(c, "hv1", cookies=[*cookies, stale_cookie], groups=[*groups, (stale_group, None)],
                   meters=meters)
    deletes = [m for m in msgs if isinstance(m, parser.OFPFlowMod)]
    assert [(m.command, m.cookie, m.cookie_mask, m.table_id) for m in deletes] == [
        (ofp.OFPFC_DELETE, stale_cookie, 0xFFFFFFFFFFFFFFFF, ofp.OFPTT_ALL)]
    group_deletes = [m for m in msgs if isinstance(m, parser.OFPGroupMod)]
    assert [(m.command, m.group_id) for m in group_deletes] == [(ofp.OFPGC_DELETE, stale_group)]


def test_group_with_other_buckets_is_modified_in_place_not_recreated():
    c = build()
    cookies, groups, meters = installed_state(connect(c, "hv1"))
    flood = group_id(GroupRole.FLOOD, 5001)
    tampered = [(gid, None if gid == flood else g) for gid, g in groups]
    msgs = connect(c, "hv1", cookies=cookies, groups=tampered, meters=meters)
    assert [(kind(m), getattr(m, "command", None)) for m in msgs] == [
        ("OFPGroupMod", ofp.OFPGC_MODIFY), ("OFPBarrierRequest", None)]


def test_same_put_twice_sends_nothing_the_second_time():
    c = build()
    for hv in HYPERVISORS:
        connect(c, hv)
    body = {"network": "blue", "mac": "02:aa:00:00:00:09", "ips": ["10.1.0.9"], "hypervisor": "hv2",
            "interface": "tapA9"}
    _, _, first = c.put_port("a9", body)
    assert set(first) == {1, 2, 3}  # every hypervisor hosting blue, and only those
    _, _, second = c.put_port("a9", body)
    assert second == {}


def test_a_hypervisor_carries_only_the_networks_it_hosts():
    c = build()
    vnis = {h: {cookie_vni(m.cookie) for m in flow_adds(connect(c, h))} for h in HYPERVISORS}
    assert vnis == {"hv1": {0, 5001, 5002}, "hv2": {0, 5001, 5002}, "hv3": {0, 5001}, "hv4": {0}}


def test_deleting_the_last_port_of_a_network_on_a_hypervisor_removes_its_flows_and_groups():
    c = build()
    for hv in HYPERVISORS:
        connect(c, hv)
    batches = c.delete_port("a4")
    hv3 = batches[3]
    assert {cookie_vni(m.cookie) for m in hv3 if isinstance(m, parser.OFPFlowMod)} == {5001}
    assert all(m.command == ofp.OFPFC_DELETE for m in hv3 if isinstance(m, parser.OFPFlowMod))
    assert {m.group_id for m in hv3 if isinstance(m, parser.OFPGroupMod)} == {
        group_id(GroupRole.FLOOD, 5001), group_id(GroupRole.FLOOD_LOCAL, 5001)}
    assert c.switches[3].flows.keys() == {0}


def test_interface_appearing_later_is_bound_when_it_appears():
    c = build()
    ports = ofports("hv2")
    del ports["tapA3"]
    connect(c, "hv2", ports=ports)
    batches = c.port_status(2, "tapA3", 7)
    adds = flow_adds(batches[2])
    assert {cookie_family(m.cookie) for m in adds} >= {Family.PORT_IN, Family.L2_LOCAL, Family.PORT_SECURITY}
    assert all(m.match.get("in_port", 7) == 7 for m in adds if cookie_family(m.cookie) == Family.PORT_IN)


# --- packet-in: learning, proxying, mobility ------------------------------------------------------------


def packet_outs(batches: dict[int, list[Any]], dpid: int) -> list[Any]:
    return [m for m in batches.get(dpid, []) if isinstance(m, parser.OFPPacketOut)]



def declare_unlocated(c, name="m1", mac="02:bb:00:00:00:01", ip="10.1.0.50"):
    c.put_port(name, {"network": "blue", "mac": mac, "ips": [ip, "fd00:1::50"]})


def unlocated_m1(clock=None, path=":memory:", hypervisors=HYPERVISORS):
    """The scenario with ``hypervisors`` connected and port m1 declared without a location."""
    c = build(clock=clock, path=path)
    for hv in hypervisors:
        connect(c, hv)
    declare_unlocated(c)
    return c


def test_port_without_location_is_learned_from_its_first_garp():
    c = unlocated_m1()
    appeared = c.port_status(4, "tapM1", 9)[4]  # an interface no port names: its meter and learning flow
    assert [m.meter_id for m in appeared if isinstance(m, parser.OFPMeterMod)] == [9]
    assert [(m.flow.family, m.flow.match) for m in appeared if isinstance(m, parser.OFPFlowMod)] == [
        (Family.LEARN, (("in_port", 9),))]
    batches = c.packet_in(4, 9, garp("02:bb:00:00:00:01", "10.1.0.50"))
    port = c.topo.ports["m1"]
    assert (port.hypervisor, port.interface, port.location_source) == ("hv4", "tapM1", "learned")
    assert set(batches) == {1, 2, 3, 4}  # the new host and every hypervisor of blue
    # A GARP is consumed, not answered nor re-injected; the port, now up, gets a Router Advertisement.
    assert [Ether(m.data)[ICMPv6ND_RA].type for m in packet_outs(batches, 4)] == [134]
    assert c.stats["learned"] == 1


def test_frames_from_undeclared_macs_are_dropped_and_counted():
    c = build()
    connect(c, "hv4")
    c.port_status(4, "tapX", 9)
    before = c.topo.node_link()
    assert c.packet_in(4, 9, garp("02:ee:00:00:00:01", "10.1.0.77")) == {}
    assert c.stats["dropped_unknown_source"] == 1
    assert c.topo.node_link() == before


def test_a_known_mac_with_a_foreign_ip_is_not_learned():
    c = build()
    connect(c, "hv4")
    declare_unlocated(c)
    c.port_status(4, "tapM1", 9)
    assert c.packet_in(4, 9, garp("02:bb:00:00:00:01", "10.1.0.1")) == {}
    assert c.topo.ports["m1"].hypervisor is None


def test_controller_answers_arp_for_a_known_address_with_a_correct_reply():
    c = build()
    connect(c, "hv1")
    request = Ether(src="02:aa:00:00:00:01", dst=BCAST) / ARP(op=1, hwsrc="02:aa:00:00:00:01", psrc="10.1.0.1",
                                                               pdst="10.1.0.3")
    outs = packet_outs(c.packet_in(1, 1, bytes(request)), 1)
    assert len(outs) == 1 and outs[0].in_port == ofp.OFPP_CONTROLLER
    assert [a.port for a in outs[0].actions] == [1]
    expected = bytes(Ether(src="02:aa:00:00:00:03", dst="02:aa:00:00:00:01")
                     / ARP(op=2, hwsrc="02:aa:00:00:00:03", psrc="10.1.0.3", hwdst="02:aa:00:00:00:01",
                           pdst="10.1.0.1"))
    assert outs[0].data == expected + bytes(60 - len(expected))  # padded to the Ethernet minimum
    reply = Ether(outs[0].data)
    assert (reply.src, reply.dst) == ("02:aa:00:00:00:03", "02:aa:00:00:00:01")
    assert (reply[ARP].op, reply[ARP].hwsrc, reply[ARP].psrc, reply[ARP].hwdst, reply[ARP].pdst) == (
        2, "02:aa:00:00:00:03", "10.1.0.3", "02:aa:00:00:00:01", "10.1.0.1")
    assert c.stats["arp_answered_controller"] == 1


def test_arp_is_answered_from_the_askers_own_tenant_only():
    c = build()
    connect(c, "hv1")
    # r1 (globex) asks for 10.1.0.3, which only acme has
    request = Ether(src="02:aa:00:00:00:01", dst=BCAST) / ARP(op=1, hwsrc="02:aa:00:00:00:01", psrc="10.1.0.1",
                                                               pdst="10.1.0.3")
    assert packet_outs(c.packet_in(1, 3, bytes(request)), 1) == []


def test_neighbor_solicitation_gets_a_valid_solicited_advertisement():
    c = build()
    connect(c, "hv1")
    ns = (Ether(src="02:aa:00:00:00:01", dst="33:33:ff:00:00:03") / IPv6(src="fd00:1::1", dst="ff02::1:ff00:3")
          / ICMPv6ND_NS(tgt="fd00:1::3"))
    (out,) = packet_outs(c.packet_in(1, 1, bytes(ns)), 1)
    na = Ether(out.data)
    assert (na.src, na.dst, na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == (
        "02:aa:00:00:00:03", "02:aa:00:00:00:01", "fd00:1::3", "fd00:1::1", 255)
    assert (na[ICMPv6ND_NA].R, na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O, na[ICMPv6ND_NA].tgt) == (0, 1, 1, "fd00:1::3")
    assert na[ICMPv6NDOptDstLLAddr].lladdr == "02:aa:00:00:00:03"
    sent = na[ICMPv6ND_NA].cksum
    del na[ICMPv6ND_NA].cksum
    assert Ether(bytes(na))[ICMPv6ND_NA].cksum == sent


def test_dad_probe_for_another_ports_address_is_defended_and_own_address_is_not():
    c = build()
    connect(c, "hv1")

    def dad(mac: str, target: str) -> list[Any]:
        probe = Ether(src=mac, dst="33:33:ff:00:00:03") / IPv6(src="::", dst="ff02::1:ff00:3") / ICMPv6ND_NS(tgt=target)
        return packet_outs(c.packet_in(1, 1, bytes(probe)), 1)

    (out,) = dad("02:aa:00:00:00:01", "fd00:1::3")
    na = Ether(out.data)
    assert (na.dst, na[IPv6].dst, na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == ("33:33:00:00:00:01", "ff02::1", 0, 1)
    assert dad("02:aa:00:00:00:01", "fd00:1::1") == []


@pytest.mark.parametrize("data", [b"", b"\x00" * 13, bytes(Ether(type=0x0806)) + b"\x00\x01",
                                  bytes(Ether(type=0x86DD)) + b"\x60\x00", b"\xff" * 1600])
def test_malformed_frames_are_counted_and_change_nothing(data):
    c = build()
    connect(c, "hv1")
    c.port_status(1, "tapX", 9)
    before = c.topo.node_link()
    assert c.packet_in(1, 9, data) == {}
    assert c.stats["packet_in_malformed"] + c.stats["dropped_unknown_source"] == 1
    assert c.topo.node_link() == before


M1_GARP = garp("02:bb:00:00:00:01", "10.1.0.50")
DPID = {hv: dpid for hv, (dpid, _) in HYPERVISORS.items()}


def hop(c, clock: Clock, to: int, seconds: float = 10) -> dict[int, list[Any]]:
    """m1's VM really moves to hypervisor ``to``: its interface leaves the old bridge, appears on the new one."""
    clock.now += seconds
    port = c.topo.ports["m1"]
    out: dict[int, list[Any]] = {}
    if port.hypervisor is not None:
        c._merge(out, c.port_status(DPID[port.hypervisor], port.interface, None))
    c._merge(out, c.port_status(to, "tapM", 9))
    c._merge(out, c.packet_in(to, 9, M1_GARP))
    return out


def test_a_port_moving_more_than_five_times_in_180s_is_frozen_at_its_last_location():
    clock = Clock()
    c = unlocated_m1(clock=clock)
    for dpid in [3, 4] * 3:  # the first sighting learns; five moves follow
        hop(c, clock, dpid)
    port = c.topo.ports["m1"]
    assert (port.hypervisor, port.mobility_seq, port.frozen, len(port.recent_moves)) == ("hv4", 5, False, 5)
    hop(c, clock, 3)
    port = c.topo.ports["m1"]
    assert (port.hypervisor, port.mobility_seq, port.frozen, port.duplicate) == ("hv4", 5, True, None)
    assert c.stats["ports_frozen"] == 1 and c.stats["duplicates_detected"] == 0
    c.put_port("m1", {"network": "blue", "mac": "02:bb:00:00:00:01", "ips": ["10.1.0.50", "fd00:1::50"],
                      "hypervisor": "hv3", "interface": "tapM"})
    port = c.topo.ports["m1"]
    assert (port.frozen, port.mobility_seq, port.recent_moves) == (False, 6, ())


def test_moves_spread_over_more_than_180s_never_freeze():
    clock = Clock()
    c = unlocated_m1(clock=clock, hypervisors=("hv3", "hv4"))
    for dpid in [3, 4] * 6:
        hop(c, clock, dpid, seconds=40)
    assert not c.topo.ports["m1"].frozen and c.topo.ports["m1"].mobility_seq == 11


def restarted(c, clock: Clock, path: str):
    """A new controller on ``c``'s store file, its switches reconnected with the interfaces they have now."""
    from ryu_overlay.controller import Controller
    from ryu_overlay.store import SqliteStore
    ports = {dpid: dict(sw.ofports) for dpid, sw in c.switches.items()}
    c.store.close()
    again = Controller(SqliteStore(path), clock=clock, wall_clock=clock)
    for hv, dpid in DPID.items():
        connect(again, hv, ports=ports[dpid])
    return again


@pytest.mark.parametrize("restart_after", [None, 1, 3, 5])
def test_the_move_history_and_the_freeze_survive_a_restart(tmp_path, restart_after):
    clock = Clock()
    path = str(tmp_path / "db.sqlite")
    c = unlocated_m1(clock=clock, path=path)
    hop(c, clock, 3)  # learned
    for move in range(1, 7):
        hop(c, clock, 4 if move % 2 else 3)
        if move == restart_after:
            c = restarted(c, clock, path)
    port = c.topo.ports["m1"]
    assert (port.hypervisor, port.mobility_seq, port.frozen) == ("hv4", 5, True)
    assert restarted(c, clock, path).topo.ports["m1"].frozen


def test_moves_older_than_the_window_by_the_wall_clock_do_not_count_after_a_restart(tmp_path):
    clock = Clock()
    path = str(tmp_path / "db.sqlite")
    c = unlocated_m1(clock=clock, path=path)
    for dpid in [3, 4, 3, 4, 3]:
        hop(c, clock, dpid)
    c = restarted(c, clock, path)
    clock.now += 200  # the controller was down for longer than the window
    for dpid in [4, 3, 4]:
        hop(c, clock, dpid)
    assert not c.topo.ports["m1"].frozen and c.topo.ports["m1"].mobility_seq == 7


def test_an_early_frame_observed_before_a_newer_move_does_not_move_the_port_back():
    clock = Clock()
    c = build(clock=clock)
    net = SimNet(c, {hv: ofports(hv) for hv in HYPERVISORS})
    declare_unlocated(c)
    net.apply(hop(c, clock, 3))  # learned on hv3 at seq 0
    # hv4 sends up a frame of m1 from a port whose port-status is late: it is kept (seq 0 then)
    assert c.packet_in(4, 9, M1_GARP) == {}
    net.apply(hop(c, clock, 2))  # meanwhile m1 really moved to hv2: seq 1
    assert c.topo.ports["m1"].mobility_seq == 1
    net.apply(c.port_status(4, "tapM", 9))  # hv4's port-status at last: the kept frame is stale
    port = c.topo.ports["m1"]
    assert (port.hypervisor, port.mobility_seq) == ("hv2", 1)
    assert c.stats["moves_refused_stale"] == 1 and c.stats["moves"] == 1
    to_m1 = {"in_port": ofports("hv1")["tapA1"], "eth_src": "02:aa:00:00:00:01", "eth_dst": "02:bb:00:00:00:01",
             "eth_type": 0x0800, "ipv4_src": "10.1.0.1", "ipv4_dst": "10.1.0.50", "ip_proto": 17}
    r = net.send("hv1", to_m1)
    assert [(d.switch, d.port) for d in r.deliveries] == [("hv2", 9)]


def test_an_early_frame_is_handled_when_no_newer_report_came_in_between():
    clock = Clock()
    c = unlocated_m1(clock=clock)
    hop(c, clock, 3)
    c.port_status(3, "tapM", None)
    assert c.packet_in(4, 9, M1_GARP) == {}
    c.port_status(4, "tapM", 9)
    assert (c.topo.ports["m1"].hypervisor, c.topo.ports["m1"].mobility_seq) == ("hv4", 1)


@pytest.mark.parametrize("old_interface_gone", [False, True])
def test_a_mac_active_in_two_places_is_a_duplicate_and_a_vm_moving_back_is_a_move(old_interface_gone):
    clock = Clock()
    c = unlocated_m1(clock=clock)
    c.port_status(3, "tapM", 9)
    c.packet_in(3, 9, M1_GARP)
    clock.now += 1
    c.port_status(4, "tapM", 9)  # hv3's tapM is still there, as during a live migration
    c.packet_in(4, 9, M1_GARP)
    assert (c.topo.ports["m1"].hypervisor, c.stats["moves"]) == ("hv4", 1)
    clock.now += 1
    if old_interface_gone:  # the VM went back to hv3: it left hv4
        c.port_status(4, "tapM", None)
    for _ in range(3):  # m1's MAC keeps talking from hv3
        c.packet_in(3, 9, M1_GARP)
    port = c.topo.ports["m1"]
    if old_interface_gone:
        assert (port.hypervisor, port.duplicate, c.stats["moves"]) == ("hv3", None, 2)
        assert c.stats["duplicates_detected"] == 0
        return
    assert (port.hypervisor, port.interface, port.mobility_seq, port.frozen) == ("hv4", "tapM", 1, False)
    assert port.duplicate is not None and (port.duplicate.hypervisor, port.duplicate.interface) == ("hv3", "tapM")
    assert port.duplicate.detected_at == clock.now
    assert (c.stats["duplicates_detected"], c.stats["moves_refused_duplicate"], c.stats["moves"]) == (1, 2, 1)
    assert c.stats_json()["ports_duplicate"] == 1
    c.put_port("m1", {"network": "blue", "mac": "02:bb:00:00:00:01", "ips": ["10.1.0.50", "fd00:1::50"]})
    port = c.topo.ports["m1"]
    assert (port.hypervisor, port.duplicate, c.stats_json()["ports_duplicate"]) == ("hv4", None, 0)


def test_switch_errors_resync_at_most_once_per_holddown():
    clock = Clock()
    c = build(clock=clock)
    connect(c, "hv1")
    first = c.switch_error(1, "type=5 code=1")
    assert [kind(m) for m in first] == [
        "OFPPortDescStatsRequest", "OFPFlowStatsRequest", "OFPGroupDescStatsRequest", "OFPMeterConfigStatsRequest"]
    clock.now += 1
    assert c.switch_error(1, "type=5 code=1") == []
    clock.now += 10
    assert c.switch_error(1, "type=5 code=1") != []
    assert c.stats["switch_errors"] == 3


def test_a_frame_from_a_port_announced_later_is_handled_when_the_port_appears():
    c = unlocated_m1()
    assert c.packet_in(4, 9, garp("02:bb:00:00:00:01", "10.1.0.50")) == {}
    assert c.topo.ports["m1"].hypervisor is None
    batches = c.port_status(4, "tapM1", 9)
    assert c.topo.ports["m1"].interface == "tapM1" and set(batches) == {1, 2, 3, 4}
    assert c.switches[4].early_frames == {}


def test_a_mac_and_address_reused_by_two_tenants_is_told_apart_by_the_interface_name():
    c = build()
    for hv in HYPERVISORS:
        connect(c, hv)
    for name, (vni, tenant) in NETWORKS.items():  # their VMs migrate: moves are learned from frames
        c.put_network(name, {"vni": vni, "tenant": tenant, "subnets": ["10.1.0.0/24", "fd00:1::/64"],
                             "mobility": "learn"})
    # a2 (acme) and r2 (globex) share 02:aa:00:00:00:02 and 10.1.0.2; a2's tap reappears on hv3
    c.port_status(3, "tapA2", 9)
    c.packet_in(3, 9, garp("02:aa:00:00:00:02", "10.1.0.2"))
    assert (c.topo.ports["a2"].hypervisor, c.topo.ports["r2"].hypervisor) == ("hv3", "hv2")
    c.port_status(4, "tapX", 9)  # an interface that names neither: ambiguous, so nothing moves
    assert c.packet_in(4, 9, garp("02:aa:00:00:00:02", "10.1.0.2")) == {}
    assert c.stats["dropped_unknown_source"] == 1


def test_a_flapping_switch_leaves_no_state_behind():
    c = build()
    for _ in range(200):
        connect(c, "hv1")
        c.barrier_sent(1, 7)
        c.responder_hits(1, 3)
        c.switch_disconnected(1)
    assert c.switches == {} and c._responder_hits == {}
    assert c.stats_json()["hypervisors_connected"] == 0
