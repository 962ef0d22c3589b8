"""Path MTU: check_pkt_larger on the wire and in the simulator, and the controller's answers."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, UDP, IPerror, defragment
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, ICMPv6PacketTooBig, IPerror6, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from ryu_overlay.compat import ofproto as ofp, parser
from ryu_overlay.controller import ICMP_ERROR_BURST, ICMP_SOURCE_IPV4, ICMP_SOURCE_MAC
from ryu_overlay.flows import CheckPktLarger
from ryu_overlay.model import link_local
from ryu_overlay.ofmsg import NXActionCheckPktLarger, _action_bytes
from ryu_overlay.packets import MalformedFrame, fragment_ipv4
from ryu_overlay.testing.scenario import HYPERVISORS, PORTS, TUNNEL_OFPORT, Clock, build, connect, ofports
from ryu_overlay.trace import SimNet, SimSwitch

A1, A3 = PORTS["a1"], PORTS["a3"]
A1_MAC, A3_MAC = A1[1], A3[1]
A1_PORT = A1[5]


def eth(src: str, dst: str, **fields: Any) -> Packet:
    return Ether(src=src, dst=dst, **fields)


def ip4(**fields: Any) -> Packet:
    return IP(src="10.1.0.1", **fields)


def test_check_pkt_larger_has_open_vswitchs_wire_format_and_parses_back():
    wire = _action_bytes(CheckPktLarger(1464, "reg0", 0))
    assert wire == bytes.fromhex(
        "ffff" "0018"      # OFPAT_EXPERIMENTER, 24 bytes
        "00002320"         # Nicira
        "0031"             # subtype 49, NXAST_CHECK_PKT_LARGER
        "05b8" "0000"      # pkt_len 1464, result bit offset 0
        "00010004"         # dst: NXM_NX_REG0
        "000000000000")    # padding to 24 bytes
    back = parser.OFPAction.parser(wire, 0)
    assert isinstance(back, NXActionCheckPktLarger)
    assert (back.pkt_len, back.dst, back.offset) == (1464, "reg0", 0)


# --- the simulator ----------------------------------------------------------------------------


@pytest.fixture
def net() -> SimNet:
    return SimNet(build(), {hv: ofports(hv) for hv in HYPERVISORS})


def ipv4(src: tuple[Any, ...], dst_mac: str, frame_len: int | None = None) -> dict[str, Any]:
    _, mac, ips, _, _, no = src
    pkt = {"in_port": no, "eth_src": mac, "eth_dst": dst_mac, "eth_type": 0x0800, "ipv4_src": ips[0],
           "ipv4_dst": "10.1.0.3", "ip_proto": 17}
    return pkt if frame_len is None else {**pkt, "frame_len": frame_len}


def test_a_frame_one_byte_too_big_goes_to_the_controller_through_its_ports_meter(net):
    r = net.send("hv1", ipv4(A1, A3_MAC, 1450 + 14 + 1))
    assert r.deliveries == () and r.tunnelled == ()
    [(where, pin)] = r.packet_ins()
    assert where == "hv1" and pin.packet["reg0"] == 1
    assert A1_PORT in r.hops[0].result.meters
    assert [s.table for s in r.hops[0].result.trace][-2:] == ["mtu_check", "mtu_oversize"]


@pytest.mark.parametrize("frame_len", [None, 60, 1450 + 14])
def test_frames_that_fit_are_forwarded_as_before(net, frame_len):
    r = net.send("hv1", ipv4(A1, A3_MAC, frame_len))
    assert r.packet_ins() == [] and [t[1] for t in r.tunnelled] == ["hv2"] and r.at("hv2") == {A3[5]}


def test_big_ipv6_goes_to_the_controller(net):
    _, mac, ips, _, _, no = A1
    r = net.send("hv1", {"in_port": no, "eth_src": mac, "eth_dst": A3_MAC, "eth_type": 0x86DD, "ipv6_src": ips[1],
                         "ipv6_dst": "fd00:1::3", "ip_proto": 17, "frame_len": 1514})
    assert [w for w, _ in r.packet_ins()] == ["hv1"] and r.tunnelled == ()


def test_frames_from_the_tunnel_are_not_checked(net):
    r = net.send("hv2", {"in_port": TUNNEL_OFPORT, "tun_ipv4_src": HYPERVISORS["hv1"][1], "tunnel_id": 5001,
                         "eth_src": A1_MAC, "eth_dst": A3_MAC, "eth_type": 0x0800, "frame_len": 9000})
    assert r.at("hv2") == {A3[5]} and r.packet_ins() == []
    assert "mtu_check" not in [s.table for s in r.hops[0].result.trace]


def test_a_networks_own_mtu_sets_the_limit():
    c = build()
    c.put_network("blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"], "mtu": 9000})
    net = SimNet(c, {hv: ofports(hv) for hv in HYPERVISORS})
    assert net.send("hv1", ipv4(A1, A3_MAC, 1514)).at("hv2") == {A3[5]}
    assert net.send("hv1", ipv4(A1, A3_MAC, 9015)).packet_ins()
    red = net.send("hv1", ipv4(PORTS["r1"], PORTS["r2"][1], 1514))  # red has no mtu: 1450
    assert red.packet_ins() and red.tunnelled == ()


def test_the_simulator_sets_and_clears_only_the_named_bit():
    sw = SimSwitch()
    act = parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [NXActionCheckPktLarger(100, "reg0", 3),
                                                                 parser.OFPActionOutput(1)])
    sw.apply([parser.OFPFlowMod(None, table_id=0, priority=1, match=parser.OFPMatch(), instructions=[act])])
    assert sw.process({"in_port": 2, "reg0": 0b0001, "frame_len": 101}).outputs[0].packet["reg0"] == 0b1001
    assert sw.process({"in_port": 2, "reg0": 0b1001, "frame_len": 100}).outputs[0].packet["reg0"] == 0b0001


# --- the controller's answers -----------------------------------------------------------------


def controller(clock: Clock | None = None) -> Any:
    c = build(clock=clock)
    connect(c, "hv1")
    return c


def big_udp(df: bool = True, size: int = 1472, **ip: Any) -> bytes:
    return raw(Ether(src=A1_MAC, dst=A3_MAC) / IP(src="10.1.0.1", dst="10.1.0.3", flags="DF" if df else 0, id=7, **ip)
               / UDP(sport=1000, dport=2000) / (bytes(range(256)) * 8)[:size])


def answers(batches: dict[int, list[Any]]) -> list[Any]:
    return [m for m in batches.get(HYPERVISORS["hv1"][0], []) if isinstance(m, parser.OFPPacketOut)]


def test_ipv4_with_df_is_answered_fragmentation_needed_with_the_networks_mtu():
    c = controller()
    datagram = big_udp()
    [out] = answers(c.packet_in(1, A1_PORT, datagram))
    assert out.in_port == ofp.OFPP_CONTROLLER and [a.port for a in out.actions] == [A1_PORT]
    frame = Ether(out.data)
    assert (frame.src, frame.dst) == (ICMP_SOURCE_MAC, A1_MAC)
    assert (frame[IP].src, frame[IP].dst) == (ICMP_SOURCE_IPV4, "10.1.0.1")
    assert (frame[ICMP].type, frame[ICMP].code, frame[ICMP].nexthopmtu) == (3, 4, 1450)
    assert raw(frame[IPerror])[:28] == datagram[14:42]  # the offending header and 8 bytes of its payload
    checked = Ether(raw(frame))
    del checked[ICMP].chksum, checked[IP].chksum
    recomputed = Ether(raw(checked))
    assert (recomputed[ICMP].chksum, recomputed[IP].chksum) == (frame[ICMP].chksum, frame[IP].chksum)
    assert c.stats["pmtu_frag_needed"] == 1


def test_ipv6_is_answered_packet_too_big_from_the_link_local_source():
    c = controller()
    datagram = raw(Ether(src=A1_MAC, dst=A3_MAC) / IPv6(src="fd00:1::1", dst="fd00:1::3") /
                   ICMPv6EchoRequest(data=b"z" * 1452))
    [out] = answers(c.packet_in(1, A1_PORT, datagram))
    frame = Ether(out.data)
    assert (frame[IPv6].src, frame[IPv6].dst) == (str(link_local(ICMP_SOURCE_MAC)), "fd00:1::1")
    assert (frame[ICMPv6PacketTooBig].type, frame[ICMPv6PacketTooBig].mtu) == (2, 1450)
    assert frame[IPerror6].dst == "fd00:1::3"
    checked = Ether(raw(frame))
    del checked[ICMPv6PacketTooBig].cksum
    assert Ether(raw(checked))[ICMPv6PacketTooBig].cksum == frame[ICMPv6PacketTooBig].cksum
    assert c.stats["pmtu_packet_too_big"] == 1


def test_errors_are_rate_limited_per_port():
    clock = Clock()
    c = controller(clock)
    sent = [bool(answers(c.packet_in(1, A1_PORT, big_udp()))) for _ in range(ICMP_ERROR_BURST + 5)]
    assert sent == [True] * ICMP_ERROR_BURST + [False] * 5
    assert c.stats["pmtu_rate_limited"] == 5
    r1 = raw(eth(PORTS["r1"][1], A3_MAC) / ip4(dst="10.1.0.3", flags="DF") / Raw(b"r" * 1480))
    assert answers(c.packet_in(1, PORTS["r1"][5], r1))  # another port has its own budget
    clock.now += 1.0
    assert answers(c.packet_in(1, A1_PORT, big_udp()))  # the bucket refills


def test_ipv4_without_df_is_fragmented_back_into_the_pipeline_from_the_vms_port():
    c = controller()
    datagram = big_udp(df=False)
    outs = answers(c.packet_in(1, A1_PORT, datagram))
    assert len(outs) == 2
    assert all(o.in_port == A1_PORT and [a.port for a in o.actions] == [ofp.OFPP_TABLE] for o in outs)
    frames = [Ether(o.data) for o in outs]
    assert all(len(raw(f[IP])) <= 1450 and (f.src, f.dst) == (A1_MAC, A3_MAC) for f in frames)
    assert [(f[IP].flags.MF, f[IP].frag) for f in frames] == [(1, 0), (0, (1450 - 20) // 8)]
    [whole] = defragment([f[IP] for f in frames])
    assert raw(whole) == datagram[14:]
    assert c.stats["pmtu_fragmented"] == 1


def test_the_fragments_take_the_ordinary_path(net):
    c = net.controller
    outs = answers(c.packet_in(1, A1_PORT, big_udp(df=False)))
    for o in outs:
        f = Ether(o.data)
        r = net.send("hv1", {"in_port": o.in_port, "eth_src": f.src, "eth_dst": f.dst, "eth_type": 0x0800,
                             "ipv4_src": f[IP].src, "ipv4_dst": f[IP].dst, "ip_proto": 17, "frame_len": len(o.data)})
        assert r.at("hv2") == {A3[5]} and r.packet_ins() == []


def test_fragmenting_a_fragment_keeps_its_offset_and_copies_only_copied_options():
    options = bytes([0x94, 4, 0, 0]) + bytes([0x07, 7, 4]) + bytes(4) + bytes([1])  # router alert (copied), RR, NOP
    ip = IP(src="10.1.0.1", dst="10.1.0.3", flags="MF", frag=100, options=[Raw(options)]) / (b"p" * 2000)
    frame = raw(Ether(src=A1_MAC, dst=A3_MAC) / ip)
    parts = [Ether(f)[IP] for f in fragment_ipv4(frame, 1450)]
    assert [p.ihl for p in parts] == [8, 6]  # 20 + 12 bytes of options; 20 + the router alert
    assert raw(parts[1])[20:24] == bytes([0x94, 4, 0, 0])
    assert [(p.flags.MF, p.frag) for p in parts] == [(1, 100), (1, 100 + (1450 - 32) // 8)]
    assert b"".join(raw(p.payload) for p in parts) == b"p" * 2000


def test_fragmenting_refuses_df_and_lying_headers():
    with pytest.raises(ValueError):
        fragment_ipv4(big_udp(df=True), 1450)
    lying = bytearray(big_udp(df=False))
    lying[16:18] = (4000).to_bytes(2, "big")
    with pytest.raises(MalformedFrame):
        fragment_ipv4(bytes(lying), 1450)
    with pytest.raises(MalformedFrame):
        fragment_ipv4(bytes(lying[:14]) + b"\x60" + bytes(1500), 1450)  # an IPv6 version nibble
    c = controller()
    assert answers(c.packet_in(1, A1_PORT, bytes(lying))) == []
    assert c.stats["packet_in_malformed"] == 1


@pytest.mark.parametrize("frame", [
    raw(eth(A1_MAC, "01:00:5e:00:00:01") / ip4(dst="224.0.0.1", flags="DF") / Raw(b"m" * 1480)),
    raw(eth(A1_MAC, A3_MAC) / IP(src="10.1.0.1", dst="10.1.0.3", flags="DF") / ICMP(type=3, code=1)
        / (b"e" * 1480)),
    raw(eth(A1_MAC, A3_MAC) / IPv6(src="fd00:1::1", dst="fd00:1::3") / ICMPv6DestUnreach()
        / (b"e" * 1480)),
    raw(eth(A1_MAC, A3_MAC, type=0x88B5) / (b"l" * 1480)),
], ids=["multicast", "icmp-error", "icmpv6-error", "not-ip"])
def test_no_error_about_multicast_icmp_errors_or_non_ip_frames(frame):
    c = controller()
    assert answers(c.packet_in(1, A1_PORT, frame)) == []
    assert c.stats["pmtu_dropped"] == 1


def test_frames_that_fit_take_the_usual_packet_in_path():
    c = controller()
    small = raw(Ether(src=A1_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=A1_MAC, psrc="10.1.0.1",
                                                                    pdst="10.1.0.3"))
    [reply] = answers(c.packet_in(1, A1_PORT, small))
    assert Ether(reply.data)[ARP].op == 2
    assert answers(c.packet_in(1, A1_PORT, big_udp(size=1422))) == []  # 1450 bytes of IP: nothing to say
    assert c.stats["pmtu_frag_needed"] == c.stats["pmtu_dropped"] == 0
