"""Port security against a hostile VM, in the simulator: the guards that the real-OVS suite
(tests/integration/test_hostile_vm.py) found missing, each beside a frame that still passes."""

from __future__ import annotations

from typing import Any

import pytest

from ryu_overlay.model import link_local
from ryu_overlay.pipeline import ETH_TYPE_IPV4, ETH_TYPE_IPV6, IP_PROTO_ICMPV6, IP_PROTO_UDP, ND_NA, ND_NS
from ryu_overlay.testing.scenario import HYPERVISORS, PORTS, build, connect, ofports
from ryu_overlay.trace import SimNet

A1_MAC, A1_IP, A1_IP6 = "02:aa:00:00:00:01", "10.1.0.1", "fd00:1::1"
A2_MAC = PORTS["a2"][1]
A3_MAC = PORTS["a3"][1]


@pytest.fixture
def sim() -> SimNet:
    c = build()
    for hv in HYPERVISORS:
        connect(c, hv)
    return SimNet(c, {hv: ofports(hv) for hv in HYPERVISORS})


def udp(dst_mac: str, sport: int, dport: int, **extra: Any) -> dict[str, Any]:
    return {"in_port": 1, "eth_src": A1_MAC, "eth_dst": dst_mac, "eth_type": ETH_TYPE_IPV4, "ipv4_src": A1_IP,
            "ipv4_dst": "10.1.0.255", "ip_proto": IP_PROTO_UDP, "udp_src": sport, "udp_dst": dport, **extra}


def udp6(sport: int, dport: int) -> dict[str, Any]:
    return {"in_port": 1, "eth_src": A1_MAC, "eth_dst": "33:33:00:00:00:01", "eth_type": ETH_TYPE_IPV6,
            "ipv6_src": str(link_local(A1_MAC)), "ipv6_dst": "ff02::1", "ip_proto": IP_PROTO_UDP,
            "udp_src": sport, "udp_dst": dport}


def na(tll: str | None) -> dict[str, Any]:
    pkt = {"in_port": 1, "eth_src": A1_MAC, "eth_dst": A2_MAC, "eth_type": ETH_TYPE_IPV6, "ipv6_src": A1_IP6,
           "ipv6_dst": "fd00:1::2", "ip_proto": IP_PROTO_ICMPV6, "icmpv6_type": ND_NA, "icmpv6_code": 0,
           "ipv6_nd_target": A1_IP6, "nd_reserved": 0x60000000}
    return pkt if tll is None else {**pkt, "ipv6_nd_tll": tll}


def ns(sll: str | None, src: str = A1_IP6) -> dict[str, Any]:
    """A unicast solicitation (a reachability probe) from a1 to a2."""
    pkt = {"in_port": 1, "eth_src": A1_MAC, "eth_dst": A2_MAC, "eth_type": ETH_TYPE_IPV6, "ipv6_src": src,
           "ipv6_dst": "fd00:1::2", "ip_proto": IP_PROTO_ICMPV6, "icmpv6_type": ND_NS, "icmpv6_code": 0,
           "ipv6_nd_target": "fd00:1::2"}
    return pkt if sll is None else {**pkt, "ipv6_nd_sll": sll}


@pytest.mark.parametrize("packet", [
    udp("ff:ff:ff:ff:ff:ff", 67, 68),
    udp("ff:ff:ff:ff:ff:ff", 4067, 68),  # a DHCP client reads any source port
    udp6(547, 546),
    udp6(4547, 546),
    udp(A2_MAC, 1000, 2000, vlan_vid=0x1005),  # 802.1Q (or the outer tag of QinQ)
    udp(A2_MAC, 1000, 2000, vlan_vid=0x1000),  # priority-tagged
    {"in_port": 1, "eth_src": A1_MAC, "eth_dst": "01:80:c2:00:00:0e", "eth_type": 0x88CC},  # LLDP
    {"in_port": 1, "eth_src": A1_MAC, "eth_dst": "01:80:c2:00:00:00", "eth_type": 0x0026},  # STP (802.3 length)
    na(A3_MAC),  # its own address, another VM's MAC
    ns(A3_MAC),  # from its own address, with another VM's MAC
    ns(A1_MAC, src="fd00:1::3"),  # its MAC, another VM's address
], ids=["dhcp-offer", "dhcp-offer-other-port", "dhcpv6", "dhcpv6-other-port", "vlan", "priority-tag", "lldp", "stp",
        "na-foreign-tll", "ns-foreign-sll", "ns-foreign-source"])
def test_a_vm_cannot_send_these_to_anybody(sim: SimNet, packet: dict[str, Any]) -> None:
    assert sim.send("hv1", packet).dropped


@pytest.mark.parametrize("packet", [
    udp(A2_MAC, 1000, 2000), udp(A2_MAC, 68, 6800),
    na(A1_MAC), na(None), ns(A1_MAC), ns(None),
], ids=["udp", "udp-other-port", "na-own-tll", "na-without-tll", "ns-own-sll", "ns-without-sll"])
def test_its_own_traffic_still_passes(sim: SimNet, packet: dict[str, Any]) -> None:
    assert [(d.switch, d.port) for d in sim.send("hv1", packet).deliveries] == [("hv1", 2)]
