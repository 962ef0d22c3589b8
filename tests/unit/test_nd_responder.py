"""Neighbor Solicitations answered inside the switch (simulator), and how the new fields encode."""

from __future__ import annotations

import pytest

from ryu_overlay.compat import ofproto as ofp, parser
from ryu_overlay.flows import ICMPV6, Move, Output, SetField, SetNwTtl, flow, nd_responders, port_nd_responders
from ryu_overlay.model import link_local
from ryu_overlay.ofmsg import FlowAdd, _action_bytes, decode_action, ryu_match
from ryu_overlay.pipeline import ND_NA, ND_NS, OFPP_IN_PORT, Family, Priority as P
from ryu_overlay.testing.scenario import HYPERVISORS, PORTS, build, ofports
from ryu_overlay.trace import SimError, SimNet, SimSwitch

SLL, TLL = 1, 2


@pytest.fixture
def net() -> SimNet:
    c = build()
    return SimNet(c, {hv: ofports(hv) for hv in HYPERVISORS})


def ns(src: str, target: str, *, sll: bool = True, eth_dst: str | None = None, ipv6_src: str | None = None) -> dict:
    """A Neighbor Solicitation from port ``src``, to the target's solicited-node group unless ``eth_dst``."""
    _, mac, ips, _, _, no = PORTS[src]
    low = target.split(":")[-1].rjust(4, "0")
    pkt = {"in_port": no, "eth_src": mac, "eth_dst": eth_dst or f"33:33:ff:00:{low[:2]}:{low[2:]}",
           "eth_type": 0x86DD, "ipv6_src": ipv6_src or ips[1], "ipv6_dst": f"ff02::1:ff00:{low}",
           "ip_proto": 58, "icmpv6_type": ND_NS, "icmpv6_code": 0, "ipv6_nd_target": target, "nw_ttl": 255}
    if sll:
        pkt["ipv6_nd_sll"] = mac
    return pkt


def test_a_solicitation_for_a_remote_port_becomes_its_solicited_advertisement_out_of_the_asking_port(net):
    r = net.send("hv1", ns("a1", "fd00:1::3"))
    assert r.tunnelled == () and r.packet_ins() == []
    (d,) = r.deliveries
    assert (d.switch, d.port) == ("hv1", PORTS["a1"][5])
    na = d.packet
    assert {k: na.get(k) for k in ("eth_src", "eth_dst", "ipv6_src", "ipv6_dst", "icmpv6_type", "nd_reserved",
                                   "nd_options_type", "ipv6_nd_target", "ipv6_nd_tll", "ipv6_nd_sll", "nw_ttl")} == {
        "eth_src": "02:aa:00:00:00:03", "eth_dst": "02:aa:00:00:00:01",
        "ipv6_src": "fd00:1::3", "ipv6_dst": "fd00:1::1",
        "icmpv6_type": ND_NA, "nd_reserved": 0x60000000,  # R=0, S=1, O=1
        "nd_options_type": TLL, "ipv6_nd_target": "fd00:1::3", "ipv6_nd_tll": "02:aa:00:00:00:03",
        "ipv6_nd_sll": None, "nw_ttl": 255}
    assert [step.table for step in r.hops[0].result.trace][-2:] == ["arp_nd", "nd_reply"]


def test_link_local_addresses_are_answered_too(net):
    target = str(link_local("02:aa:00:00:00:02"))
    (d,) = net.send("hv1", ns("a1", target)).deliveries
    assert d.port == PORTS["a1"][5] and d.packet["ipv6_nd_tll"] == "02:aa:00:00:00:02"


def test_each_tenant_gets_its_own_ports_mac_for_a_shared_address(net):
    (blue,) = net.send("hv1", ns("a1", "fd00:1::2")).deliveries
    (red,) = net.send("hv1", ns("r1", "fd00:1::2")).deliveries
    assert blue.packet["ipv6_nd_tll"] == red.packet["ipv6_nd_tll"] == "02:aa:00:00:00:02"
    assert (blue.port, red.port) == (PORTS["a1"][5], PORTS["r1"][5])


def test_another_tenants_address_is_not_answered_nor_flooded(net):
    # fd00:1::3 and ::4 are blue's alone: red's r1 asking for them gets nothing, anywhere.
    for target in ("fd00:1::3", "fd00:1::4"):
        r = net.send("hv1", ns("r1", target))
        assert r.deliveries == () and r.tunnelled == () and r.packet_ins() == [], target


def test_an_unknown_target_is_dropped_in_the_switch(net):
    r = net.send("hv1", ns("a1", "fd00:1::99"))
    assert r.deliveries == () and r.tunnelled == () and r.packet_ins() == []
    assert r.hops[0].result.trace[-1].table == "arp_nd"


def test_a_dad_probe_goes_to_the_controller_through_the_ports_meter(net):
    probe = ns("a1", "fd00:1::3", sll=False, ipv6_src="::")
    r = net.switches["hv1"].process(probe)
    assert r.outputs == () and len(r.packet_ins) == 1 and r.meters == (PORTS["a1"][5],)


def test_a_solicitation_without_the_askers_link_layer_address_goes_to_the_controller(net):
    r = net.switches["hv1"].process(ns("a1", "fd00:1::3", sll=False))
    assert r.outputs == () and len(r.packet_ins) == 1 and r.meters == (PORTS["a1"][5],)


def test_a_solicitation_from_the_unspecified_address_with_a_link_layer_option_is_dropped(net):
    r = net.send("hv1", ns("a1", "fd00:1::3", ipv6_src="::"))
    assert r.deliveries == () and r.tunnelled == () and r.packet_ins() == []


def test_a_unicast_solicitation_still_reaches_its_target(net):
    r = net.send("hv1", ns("a1", "fd00:1::3", eth_dst="02:aa:00:00:00:03"))
    assert [(d.switch, d.port) for d in r.deliveries] == [("hv2", PORTS["a3"][5])]
    assert r.deliveries[0].packet["icmpv6_type"] == ND_NS


def test_a_spoofed_advertisement_is_still_dropped(net):
    na = {**ns("a1", "fd00:1::3", eth_dst="02:aa:00:00:00:02"), "icmpv6_type": ND_NA}
    del na["ipv6_nd_sll"]
    assert net.send("hv1", na).dropped


def test_the_builder_serves_any_owner_of_addresses_and_ports_share_one_result():
    flows = nd_responders("02:ee:00:00:00:fe", ("fd00:1::fe", "fe80::ee:ff:fe00:fe"), 5001)
    assert {dict(f.match)["ipv6_nd_target"] for f in flows.values()} == {"fd00:1::fe", "fe80::ee:ff:fe00:fe"}
    assert {(f.table, f.priority, f.family, f.goto) for f in flows.values()} == {
        ("arp_nd", P.ANSWER, Family.ND_RESPONDER, "nd_reply")}
    c = build()
    port = c.topo.ports["a1"]
    assert port_nd_responders(port, 5001) is port_nd_responders(port, 5001)


def test_the_simulator_refuses_what_ovs_refuses_writing_nd_tll_in_a_solicitation_flow():
    sw = SimSwitch()
    bad = flow("arp_nd", P.ANSWER, Family.ND_RESPONDER, {**ICMPV6, "icmpv6_type": ND_NS},
               actions=(Move("eth_src", "ipv6_nd_tll", 48), Output(OFPP_IN_PORT)))
    with pytest.raises(SimError, match="ipv6_nd_tll"):
        sw.apply([FlowAdd(bad)])


def test_nd_fields_and_hop_limit_encode_as_open_vswitch_reads_them():
    # set_field: OFPAT_SET_FIELD(25), length 16, OXM class 0x1000 (ERICOXM_OF_), field 1, 4 bytes: 0x10000204
    assert _action_bytes(SetField("nd_reserved", 0x60000000)).hex() == "0019001010000204" "6000000000000000"
    # field 2, 1 byte: 0x10000401
    assert _action_bytes(SetField("nd_options_type", 2)).hex() == "0019001010000401" "0200000000000000"
    # OFPAT_SET_NW_TTL(23), length 8, ttl, 3 bytes pad
    assert _action_bytes(SetNwTtl(255)).hex() == "00170008ff000000"
    assert decode_action(parser.OFPActionSetNwTtl(255)) == SetNwTtl(255)
    f = flow("arp_nd", P.ANSWER, Family.ND_RESPONDER, {**ICMPV6, "icmpv6_type": ND_NS, "nd_options_type": 1})
    assert bytes.fromhex("1000040101") in FlowAdd(f).buf
    read_back = parser.OFPFlowMod.parser(None, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, len(FlowAdd(f).buf), 0,
                                          FlowAdd(f).buf)
    assert read_back.match["nd_options_type"] == 1


def test_the_nd_fields_come_after_their_prerequisites_and_other_flows_keep_ryus_order():
    # OVS checks each OXM's prerequisites against the fields before it: nd_options_type after icmpv6_type.
    f = next(iter(nd_responders("02:ee:00:00:00:fe", ("fd00:1::fe",), 5001).values()))
    buf = FlowAdd(f).buf
    assert buf.index(bytes.fromhex("80003a01") + bytes([ND_NS])) < buf.index(bytes.fromhex("1000040101"))
    plain = flow("l2_lookup", P.EXACT, Family.L2_LOCAL, {"metadata": (5001, 0xFFFFFF), "eth_dst": "02:aa:00:00:00:01"})
    assert ryu_match(plain).items() == parser.OFPMatch(**dict(plain.match)).items()


def test_retyping_a_missing_nd_option_is_refused_and_registering_the_fields_twice_changes_nothing():
    from ryu_overlay import compat

    sw = SimSwitch()
    f = flow("arp_nd", P.ANSWER, Family.ND_RESPONDER, {**ICMPV6, "icmpv6_type": ND_NS},
             actions=(SetField("nd_options_type", 2), Output(OFPP_IN_PORT)))
    to_arp_nd = [flow("ingress", P.MISS, Family.TABLE_MISS, {}, goto="port_security"),
                 flow("port_security", P.MISS, Family.TABLE_MISS, {}, goto="arp_nd")]
    sw.apply([FlowAdd(x) for x in (*to_arp_nd, f)])
    pkt = {"in_port": 1, "eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": ND_NS, "ipv6_nd_target": "fd00:1::3"}
    with pytest.raises(SimError, match="without a link-layer address option"):
        sw.process(pkt)
    (out,) = sw.process({**pkt, "ipv6_nd_sll": "02:aa:00:00:00:01"}).outputs
    assert out.packet["ipv6_nd_tll"] == "02:aa:00:00:00:01" and "ipv6_nd_sll" not in out.packet

    count = len(compat.ofproto.oxm_types)
    compat._add_ericsson_nd_fields()
    assert len(compat.ofproto.oxm_types) == count
