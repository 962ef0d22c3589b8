"""DHCPv4 and Router Advertisements: the bytes (read back by scapy), the controller's answers,
and the trap and guard flows (where a VM's DHCP and RA end up, in the simulator)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Ether

from ryu_overlay import hostconfig
from ryu_overlay.compat import parser
from ryu_overlay.hostconfig import AttachedRouter, service_mac
from ryu_overlay.model import DEFAULT_MTU, link_local
from ryu_overlay.packets import DhcpRequest, DhcpType, MalformedFrame, parse_dhcp
from ryu_overlay.pipeline import ETH_TYPE_IPV4, ETH_TYPE_IPV6, IP_PROTO_ICMPV6, IP_PROTO_UDP, Family
from ryu_overlay.testing.scenario import HYPERVISORS, build, connect, ofports
from ryu_overlay.trace import SimNet

A1_MAC = "02:aa:00:00:00:01"
BCAST = "ff:ff:ff:ff:ff:ff"


def dhcp_frame(kind: str, mac: str = A1_MAC, src: str = "0.0.0.0", xid: int = 0x1234, flags: int = 0,
               extra: tuple[Any, ...] = (), chaddr: str | None = None, ciaddr: str = "0.0.0.0") -> bytes:
    return bytes(Ether(src=mac, dst=BCAST) / IP(src=src, dst="255.255.255.255") / UDP(sport=68, dport=67)
                 / BOOTP(chaddr=bytes.fromhex((chaddr or mac).replace(":", "")), xid=xid, flags=flags, ciaddr=ciaddr)
                 / DHCP(options=[("message-type", kind), *extra, "end"]))


def rs_frame(mac: str = A1_MAC) -> bytes:
    return bytes(Ether(src=mac, dst="33:33:00:00:00:02") / IPv6(src=str(link_local(mac)), dst="ff02::2")
                 / ICMPv6ND_RS())


def options(frame: bytes) -> dict[str, Any]:
    return {o[0]: o[1] for o in Ether(frame)[DHCP].options if isinstance(o, tuple)}


def checksums_hold(frame: bytes) -> bool:
    """Scapy computes the checksums again from a copy with them removed: they must agree."""
    pkt: Any = Ether(frame)
    fresh: Any = Ether(frame)
    fields = [(layer, attr) for layer, attr in ((IP, "chksum"), (UDP, "chksum"), (ICMPv6ND_RA, "cksum"))
              if layer in pkt]
    assert fields
    for layer, attr in fields:
        delattr(fresh[layer], attr)
    fresh = Ether(bytes(fresh))
    return all(getattr(fresh[layer], attr) == getattr(pkt[layer], attr) for layer, attr in fields)


def answers(batches: dict[int, list[Any]], dpid: int = 1) -> list[tuple[list[int], bytes]]:
    return [([a.port for a in m.actions], bytes(m.data)) for m in batches.get(dpid, [])
            if isinstance(m, parser.OFPPacketOut)]


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


@pytest.fixture
def ctl(clock):
    c = build(clock=lambda: clock[0])
    for hv in HYPERVISORS:
        connect(c, hv)
    return c


# --- bytes ------------------------------------------------------------------------------------


def test_parse_dhcp_reads_type_xid_chaddr_and_the_requested_address():
    req = parse_dhcp(dhcp_frame("request", xid=7, flags=0x8000,
                                extra=(("requested_addr", "10.1.0.1"), ("server_id", "10.1.0.254"))))
    assert req == DhcpRequest(DhcpType.REQUEST, 7, 0x8000, A1_MAC, ipaddress.IPv4Address("0.0.0.0"),
                              ipaddress.IPv4Address("10.1.0.1"), ipaddress.IPv4Address("10.1.0.254"))


def test_parse_dhcp_ignores_other_frames_and_refuses_broken_requests():
    assert parse_dhcp(bytes(Ether() / IP() / UDP(sport=67, dport=68) / BOOTP())) is None
    assert parse_dhcp(rs_frame()) is None
    assert parse_dhcp(bytes(Ether() / IP() / UDP(sport=68, dport=67))[:40]) is None
    with pytest.raises(MalformedFrame, match="without a DHCP message"):
        parse_dhcp(bytes(Ether() / IP() / UDP(sport=68, dport=67) / b"short"))
    with pytest.raises(MalformedFrame, match="message type"):
        parse_dhcp(bytes(Ether() / IP() / UDP(sport=68, dport=67) / BOOTP(chaddr=b"\x02" * 6) / DHCP(options=["end"])))
    with pytest.raises(MalformedFrame, match="BOOTREQUEST"):
        parse_dhcp(bytes(Ether() / IP() / UDP(sport=68, dport=67) / BOOTP(op=2) / DHCP(options=["end"])))
    truncated = bytes(Ether() / IP() / UDP(sport=68, dport=67) / BOOTP() / DHCP(options=[("message-type", 1)]))
    with pytest.raises(MalformedFrame, match="truncated"):
        parse_dhcp(truncated[:-2] + b"\x35\x09")


def test_offer_carries_address_mask_mtu_lease_and_server_with_valid_checksums(ctl):
    out = answers(ctl.packet_in(1, 1, dhcp_frame("discover", xid=0xABCD)))
    assert [ports for ports, _ in out] == [[1]]  # out of the asking port only
    frame = out[0][1]
    pkt = Ether(frame)
    assert (pkt.src, pkt.dst, pkt[IP].src, pkt[IP].dst) == (service_mac(ctl.topo.networks["blue"]), A1_MAC,
                                                            "10.1.0.254", "10.1.0.1")
    assert (pkt[UDP].sport, pkt[UDP].dport, pkt[BOOTP].op, pkt[BOOTP].xid, pkt[BOOTP].yiaddr) == (
        67, 68, 2, 0xABCD, "10.1.0.1")
    assert pkt[BOOTP].chaddr[:6] == bytes.fromhex("02aa00000001")
    assert options(frame) == {"message-type": 2, "server_id": "10.1.0.254", "lease_time": hostconfig.LEASE_TIME,
                              "subnet_mask": "255.255.255.0", "interface-mtu": DEFAULT_MTU}
    assert DEFAULT_MTU == 1450
    assert len(pkt[BOOTP]) >= 300
    assert checksums_hold(frame)


def test_request_for_the_port_address_is_acked_and_any_other_is_naked(ctl):
    ack = answers(ctl.packet_in(1, 1, dhcp_frame("request", extra=(("requested_addr", "10.1.0.1"),
                                                                   ("server_id", "10.1.0.254")))))[0][1]
    assert options(ack)["message-type"] == 5 and Ether(ack)[BOOTP].yiaddr == "10.1.0.1"
    renew = answers(ctl.packet_in(1, 1, dhcp_frame("request", src="10.1.0.1", ciaddr="10.1.0.1")))[0][1]
    assert options(renew)["message-type"] == 5 and Ether(renew)[IP].dst == "10.1.0.1"
    nak = answers(ctl.packet_in(1, 1, dhcp_frame("request", extra=(("requested_addr", "10.1.0.99"),))))[0][1]
    pkt = Ether(nak)
    assert options(nak) == {"message-type": 6, "server_id": "10.1.0.254"}
    assert (pkt.dst, pkt[IP].dst, pkt[BOOTP].yiaddr) == (BCAST, "255.255.255.255", "0.0.0.0")
    assert checksums_hold(nak)
    assert ctl.stats["dhcp_answered"] == 3


def test_broadcast_flag_gets_a_broadcast_answer(ctl):
    pkt = Ether(answers(ctl.packet_in(1, 1, dhcp_frame("discover", flags=0x8000)))[0][1])
    assert (pkt.dst, pkt[IP].dst, pkt[BOOTP].flags) == (BCAST, "255.255.255.255", 0x8000)


@pytest.mark.parametrize("frame", [
    dhcp_frame("request", extra=(("requested_addr", "10.1.0.1"), ("server_id", "10.9.9.9"))),  # another server
    dhcp_frame("release", src="10.1.0.1", ciaddr="10.1.0.1"),
    dhcp_frame("discover", chaddr="02:aa:00:00:00:02"),  # asks for another MAC
])
def test_what_needs_no_answer_gets_none(ctl, frame):
    assert answers(ctl.packet_in(1, 1, frame)) == []


def test_no_answer_for_a_port_without_ipv4_nor_in_a_network_with_dhcp_off(ctl):
    ctl.put_port("a1", {"network": "blue", "mac": A1_MAC, "ips": ["fd00:1::1"], "hypervisor": "hv1",
                        "interface": "tapA1"})
    assert answers(ctl.packet_in(1, 1, dhcp_frame("discover"))) == []
    ctl.put_network("red", {"vni": 5002, "tenant": "globex", "subnets": ["10.1.0.0/24", "fd00:1::/64"],
                            "dhcp": False})
    assert answers(ctl.packet_in(1, 3, dhcp_frame("discover"))) == []  # r1, of red
    assert answers(ctl.packet_in(1, 3, rs_frame())) == []
    assert ctl.stats["dhcp_answered"] == ctl.stats["ra_sent"] == 0


def test_no_answer_for_an_unknown_port_or_a_spoofed_source(ctl):
    assert answers(ctl.packet_in(1, 1, dhcp_frame("discover", mac="02:cc:00:00:00:09"))) == []
    assert answers(ctl.packet_in(4, 1, dhcp_frame("discover"))) == []  # hv4 has no such port
    assert ctl.stats["dhcp_answered"] == 0


def test_answers_are_rate_limited_per_port(ctl, clock):
    sent = [len(answers(ctl.packet_in(1, 1, dhcp_frame("discover")))) for _ in range(hostconfig.ANSWER_BURST + 5)]
    assert sent == [1] * hostconfig.ANSWER_BURST + [0] * 5
    assert ctl.stats["host_config_rate_limited"] == 5
    assert len(answers(ctl.packet_in(1, 2, dhcp_frame("discover", mac="02:aa:00:00:00:02")))) == 1  # a2 has its own
    clock[0] += 1.0
    sent = [len(answers(ctl.packet_in(1, 1, dhcp_frame("discover")))) for _ in range(10)]
    assert sum(sent) == int(hostconfig.ANSWER_RATE)


def test_router_solicitation_gets_the_prefix_and_mtu_with_router_lifetime_zero(ctl):
    out = answers(ctl.packet_in(1, 1, rs_frame()))
    assert [ports for ports, _ in out] == [[1]]
    frame = out[0][1]
    pkt = Ether(frame)
    mac = service_mac(ctl.topo.networks["blue"])
    assert mac == "0a:00:00:00:13:89"  # CONTROLLER_MAC with VNI 5001
    assert (pkt.src, pkt.dst, pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (
        mac, "33:33:00:00:00:01", str(link_local(mac)), "ff02::1", 255)
    ra = pkt[ICMPv6ND_RA]
    assert (ra.routerlifetime, ra.chlim, ra.M, ra.O) == (0, 64, 0, 0)
    assert pkt[ICMPv6NDOptMTU].mtu == 1450
    assert pkt[ICMPv6NDOptSrcLLAddr].lladdr == mac
    pio = pkt[ICMPv6NDOptPrefixInfo]
    assert (pio.prefix, pio.prefixlen, pio.L, pio.A) == ("fd00:1::", 64, 1, 0)  # fd00:1::1 is not its SLAAC address
    assert (pio.validlifetime, pio.preferredlifetime) == (hostconfig.PREFIX_VALID_LIFETIME,
                                                          hostconfig.PREFIX_PREFERRED_LIFETIME)
    assert checksums_hold(frame)


def test_prefix_is_autonomous_when_the_slaac_address_is_the_ports_own(ctl):
    slaac = "fd00:1::aa:ff:fe00:1"  # EUI-64 of 02:aa:00:00:00:01
    ctl.put_port("a1", {"network": "blue", "mac": A1_MAC, "ips": ["10.1.0.1", slaac], "hypervisor": "hv1",
                        "interface": "tapA1"})
    pio = Ether(answers(ctl.packet_in(1, 1, rs_frame()))[0][1])[ICMPv6NDOptPrefixInfo]
    assert (pio.L, pio.A) == (1, 1)


def test_network_mtu_is_what_is_announced(ctl):
    ctl.put_network("blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"], "mtu": 9000})
    assert options(answers(ctl.packet_in(1, 1, dhcp_frame("discover")))[0][1])["interface-mtu"] == 9000
    assert Ether(answers(ctl.packet_in(1, 1, rs_frame()))[0][1])[ICMPv6NDOptMTU].mtu == 9000


def test_an_attached_router_is_the_gateway_and_the_advertising_router(ctl, monkeypatch):
    router = AttachedRouter("02:ee:00:00:00:01", (ipaddress.ip_interface("10.1.0.1/24"),
                                                  ipaddress.ip_interface("10.1.0.200/24"),
                                                  ipaddress.ip_interface("fd00:1::fe/64")))
    monkeypatch.setattr(hostconfig, "router_on", lambda topo, net: router if net.name == "blue" else None)
    ctl.put_port("a1", {"network": "blue", "mac": A1_MAC, "ips": ["10.1.0.7"], "hypervisor": "hv1",
                        "interface": "tapA1"})
    frame = answers(ctl.packet_in(1, 1, dhcp_frame("discover")))[0][1]
    assert Ether(frame).src == router.mac
    assert options(frame)["router"] == options(frame)["server_id"] == "10.1.0.1"
    pkt = Ether(answers(ctl.packet_in(1, 1, rs_frame()))[0][1])
    assert (pkt.src, pkt[IPv6].src, pkt[ICMPv6ND_RA].routerlifetime) == (
        router.mac, str(link_local(router.mac)), hostconfig.ROUTER_LIFETIME)


def test_a_declared_router_is_the_gateway_and_the_advertising_router(ctl):
    ctl.put_port("a1", {"network": "blue", "mac": A1_MAC, "ips": ["10.1.0.7"], "hypervisor": "hv1",
                        "interface": "tapA1"})
    router = ctl.put_router("r1", {"tenant": "acme", "interfaces": [{"network": "blue", "ip": "10.1.0.254/24"},
                                                                    {"network": "blue", "ip": "fd00:1::fe/64"}]})[1]
    frame = answers(ctl.packet_in(1, 1, dhcp_frame("discover")))[0][1]
    assert Ether(frame).src == router.mac
    assert options(frame)["router"] == options(frame)["server_id"] == "10.1.0.254"
    pkt = Ether(answers(ctl.packet_in(1, 1, rs_frame()))[0][1])
    assert (pkt.src, pkt[ICMPv6ND_RA].routerlifetime) == (router.mac, hostconfig.ROUTER_LIFETIME)
    gone = ctl.delete_router("r1")
    assert [Ether(d)[ICMPv6ND_RA].routerlifetime for ports, d in answers(gone) if ports == [1]] == [0]


def test_attaching_a_router_readvertises_to_the_located_ports_of_its_networks(ctl):
    ctl.put_port("a1", {"network": "blue", "mac": A1_MAC, "ips": ["10.1.0.7"], "hypervisor": "hv1",
                        "interface": "tapA1"})
    batches = ctl.put_router("r1", {"tenant": "acme", "interfaces": [{"network": "blue", "ip": "fd00:1::fe/64"}]})[2]
    ras = [Ether(d) for ports, d in answers(batches) if ports == [1]]
    assert [ra[ICMPv6ND_RA].routerlifetime for ra in ras] == [hostconfig.ROUTER_LIFETIME]


def test_port_up_sends_a_router_advertisement():
    c = build()
    for hv in HYPERVISORS:
        connect(c, hv, ports={"vxlan0": 100})
    up = c.port_status(1, "tapA1", 1)
    assert [Ether(d)[ICMPv6ND_RA].type for ports, d in answers(up) if ports == [1]] == [134]
    c.put_port("m1", {"network": "blue", "mac": "02:bb:00:00:00:01", "ips": ["10.1.0.50"]})
    c.port_status(4, "tapM1", 9)
    bound = c.put_port("m1", {"network": "blue", "mac": "02:bb:00:00:00:01", "ips": ["10.1.0.50"],
                              "hypervisor": "hv4", "interface": "tapM1"})[2]
    assert [ports for ports, _ in answers(bound, 4)] == [[9]]
    c.put_network("red", {"vni": 5002, "tenant": "globex", "subnets": ["10.1.0.0/24", "fd00:1::/64"],
                          "dhcp": False})
    assert answers(c.port_status(1, "tapR1", 3)) == []


# --- where a VM's DHCP and RA end up -------------------------------------------------------------

def sim_dhcp(mac: str, ofport: int, sport: int = 68, dport: int = 67, src: str = "0.0.0.0") -> dict[str, Any]:
    return {"in_port": ofport, "eth_src": mac, "eth_dst": BCAST, "eth_type": ETH_TYPE_IPV4, "ipv4_src": src,
            "ipv4_dst": "255.255.255.255", "ip_proto": IP_PROTO_UDP, "udp_src": sport, "udp_dst": dport}


def sim_icmp6(mac: str, ofport: int, icmp_type: int) -> dict[str, Any]:
    return {"in_port": ofport, "eth_src": mac, "eth_dst": "33:33:00:00:00:01", "eth_type": ETH_TYPE_IPV6,
            "ipv6_src": str(link_local(mac)), "ipv6_dst": "ff02::1", "ip_proto": IP_PROTO_ICMPV6,
            "icmpv6_type": icmp_type, "icmpv6_code": 0}


@pytest.fixture
def sim(ctl):
    return SimNet(ctl, {hv: ofports(hv) for hv in HYPERVISORS})


def test_dhcp_and_router_solicitations_reach_the_controller_and_nowhere_else(sim):
    for packet in (sim_dhcp(A1_MAC, 1), sim_dhcp(A1_MAC, 1, src="10.1.0.1"), sim_icmp6(A1_MAC, 1, 133)):
        result = sim.send("hv1", packet)
        assert [(hv, p.cookie >> 56) for hv, p in result.packet_ins()] == [("hv1", Family.HOST_CONFIG_TRAP)]
        assert (result.deliveries, result.tunnelled) == ((), ()), packet
        assert result.hops[0].result.meters == (1,)  # through the port's packet-in meter


def test_rogue_dhcp_servers_and_router_advertisements_from_vms_are_dropped(sim):
    for packet in (sim_dhcp(A1_MAC, 1, sport=67, dport=68, src="10.1.0.1"), sim_icmp6(A1_MAC, 1, 134)):
        assert sim.send("hv1", packet).dropped, packet


def test_dhcp_of_a_port_the_controller_does_not_serve_is_dropped(ctl, sim):
    ctl_net = {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"], "dhcp": False}
    sim.apply(ctl.put_network("blue", ctl_net)[2])
    assert sim.send("hv1", sim_dhcp(A1_MAC, 1, src="10.1.0.1")).dropped
    assert sim.send("hv1", sim_dhcp(A1_MAC, 1)).dropped
    rs = sim.send("hv1", sim_icmp6(A1_MAC, 1, 133))
    assert not rs.packet_ins()  # no trap: an RS without a server is an ordinary multicast


def test_a_discover_from_a_port_not_yet_located_binds_it_and_is_answered(ctl):
    ctl.put_port("m1", {"network": "blue", "mac": "02:bb:00:00:00:01", "ips": ["10.1.0.50"]})
    ctl.port_status(4, "tapM1", 9)
    batches = ctl.packet_in(4, 9, dhcp_frame("discover", mac="02:bb:00:00:00:01"))
    assert (ctl.topo.ports["m1"].hypervisor, ctl.topo.ports["m1"].interface) == ("hv4", "tapM1")
    offers = [d for ports, d in answers(batches, 4) if ports == [9] and DHCP in Ether(d)]
    assert [Ether(d)[BOOTP].yiaddr for d in offers] == ["10.1.0.50"]


def test_a_malformed_dhcp_request_is_counted_and_unanswered(ctl):
    broken = bytes(Ether(src=A1_MAC, dst=BCAST) / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
                   / b"not bootp")
    assert answers(ctl.packet_in(1, 1, broken)) == []
    assert ctl.stats["packet_in_malformed"] == 1
    assert answers(ctl.packet_in(1, 1, bytes(Ether(src=A1_MAC) / IP(src="10.1.0.1") / UDP(dport=53)))) == []
