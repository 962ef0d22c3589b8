"""ICMP error builders, checked by scapy's own parser and checksums."""

from __future__ import annotations

from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, UDP, IPerror
from scapy.layers.inet6 import ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPerror6, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from ryu_overlay.packets import ICMP6_QUOTE, icmp4_error, icmp6_error

VM, ROUTER = "02:aa:00:00:00:01", "02:00:00:00:00:fe"


def test_fragmentation_needed_carries_the_mtu_and_quotes_the_datagram():
    ip: Packet = IP(src="10.1.0.1", dst="10.2.0.2", flags="DF", ttl=63)
    datagram = raw(ip / UDP(sport=1, dport=2) / Raw(b"x" * 1472))
    frame = Ether(icmp4_error(ROUTER, VM, "10.1.0.254", datagram, 3, 4, mtu=1450))
    assert (frame.src, frame.dst) == (ROUTER, VM)
    ip, icmp = frame[IP], frame[ICMP]
    assert (ip.src, ip.dst, ip.proto) == ("10.1.0.254", "10.1.0.1", 1)
    assert (icmp.type, icmp.code, icmp.nexthopmtu) == (3, 4, 1450)
    assert frame[IPerror].dst == "10.2.0.2" and frame[IPerror].flags == "DF"
    for layer in (IP, ICMP):
        recomputed = Ether(raw(frame))
        del recomputed[layer].chksum
        assert Ether(raw(recomputed))[layer].chksum == frame[layer].chksum
    assert len(raw(frame[IP])) <= 576


def test_time_exceeded_has_no_mtu_and_a_small_datagram_is_padded_to_the_ethernet_minimum():
    datagram = raw(IP(src="10.1.0.1", dst="10.2.0.2", ttl=1) / ICMP())
    frame = icmp4_error(ROUTER, VM, "10.1.0.254", datagram, 11, 0)
    assert len(frame) >= 60
    icmp = Ether(frame)[ICMP]
    assert (icmp.type, icmp.code, icmp.unused) == (11, 0, 0)


def test_packet_too_big_and_time_exceeded_over_ipv6_have_valid_checksums():
    ip6: Packet = IPv6(src="fd00:1::1", dst="fd00:2::2", hlim=1)
    datagram = raw(ip6 / UDP(sport=1, dport=2) / Raw(b"y" * 1600))
    for icmp_type, mtu, layer in ((2, 1450, ICMPv6PacketTooBig), (3, 0, ICMPv6TimeExceeded)):
        frame: Packet = Ether(icmp6_error(ROUTER, VM, "fd00:1::fe", datagram, icmp_type, 0, mtu=mtu))
        assert (frame[IPv6].src, frame[IPv6].dst) == ("fd00:1::fe", "fd00:1::1")
        assert frame[layer].type == icmp_type
        if mtu:
            assert frame[layer].mtu == mtu
        checked: Packet = frame.copy()
        del checked[layer].cksum
        assert Ether(raw(checked))[layer].cksum == frame[layer].cksum
        assert frame[IPerror6].dst == "fd00:2::2"
        assert len(raw(frame[IPv6])) == 40 + 8 + ICMP6_QUOTE
