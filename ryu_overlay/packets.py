"""Pure packet parsing and building for the controller's ARP and ND proxy, DHCP and RA.

``parse_frame`` reduces a frame from a packet-in to the few facts the mapping needs;
``arp_reply`` and ``neighbor_advert`` build answers as bytes (ICMPv6 checksum included).
``parse_dhcp``, ``dhcp_reply`` and ``router_advert`` are the DHCPv4 server's and the Router
Advertisement's wire formats (struct-based, checksums included).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from .compat import packet_lib
from .model import IPAddress, link_local

# ARP_REQUEST and ND_NS are also the controller's (re-exported).
from .pipeline import (
    ARP_REPLY,
    ARP_REQUEST as ARP_REQUEST,
    ND_NA,
    ND_NS as ND_NS,
    ND_RA,
)

_pkt, _eth, _arp = packet_lib.packet, packet_lib.ethernet, packet_lib.arp
_ipv4, _ipv6, _icmpv6, _ether = packet_lib.ipv4, packet_lib.ipv6, packet_lib.icmpv6, packet_lib.ether_types

ALL_NODES_MAC = "33:33:00:00:00:01"
ALL_NODES = "ff02::1"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


class MalformedFrame(ValueError):
    """A packet-in whose frame cannot be parsed as what its headers claim."""


@dataclass(frozen=True)
class Frame:
    """What the mapping needs from one frame."""

    eth_src: str
    eth_dst: str
    eth_type: int
    src_ip: IPAddress | None = None
    arp_op: int | None = None
    arp_tpa: ipaddress.IPv4Address | None = None
    icmpv6_type: int | None = None
    nd_target: ipaddress.IPv6Address | None = None

    @property
    def gratuitous(self) -> bool:
        return self.arp_op is not None and self.src_ip == self.arp_tpa

    @property
    def unsolicited_na(self) -> bool:
        return self.icmpv6_type == ND_NA and _multicast_mac(self.eth_dst)


def _multicast_mac(mac: str) -> bool:
    return bool(int(mac[:2], 16) & 1)


_ARP_IPV4 = struct.Struct("!HHBBH6s4s6s4s")  # htype, ptype, hlen, plen, op, sha, spa, tha, tpa


def _mac(raw: bytes) -> str:
    return raw.hex(":")


def parse_frame(data: bytes) -> Frame:
    if len(data) < 14:
        raise MalformedFrame(f"frame of {len(data)} bytes is shorter than an Ethernet header")
    if data[12:14] == b"\x08\x06" and len(data) >= 42:
        # ARP is the controller's hot path (the proxy): read it directly, not through Ryu's library.
        htype, ptype, hlen, plen, op, _, spa, _, tpa = _ARP_IPV4.unpack_from(data, 14)
        if (htype, ptype, hlen, plen) == (1, _ether.ETH_TYPE_IP, 6, 4):
            return Frame(_mac(data[6:12]), _mac(data[0:6]), _ether.ETH_TYPE_ARP, ipaddress.IPv4Address(spa), op,
                         ipaddress.IPv4Address(tpa))
    try:
        pkt = _pkt.Packet(data)
    except Exception as exc:  # Ryu's parsers raise assorted errors on garbage
        raise MalformedFrame(f"unparsable frame: {exc}") from None
    eth = pkt.get_protocol(_eth.ethernet)
    if eth is None:
        raise MalformedFrame("no Ethernet header")
    base = {"eth_src": eth.src.lower(), "eth_dst": eth.dst.lower(), "eth_type": eth.ethertype}
    if eth.ethertype == _ether.ETH_TYPE_ARP:
        a = pkt.get_protocol(_arp.arp)
        if a is None:
            raise MalformedFrame("truncated ARP")
        return Frame(**base, src_ip=_ip(a.src_ip), arp_op=a.opcode, arp_tpa=_ip(a.dst_ip))  # type: ignore[arg-type]
    if eth.ethertype == _ether.ETH_TYPE_IP:
        ip4 = pkt.get_protocol(_ipv4.ipv4)
        if ip4 is None:
            raise MalformedFrame("truncated IPv4")
        return Frame(**base, src_ip=_ip(ip4.src))
    if eth.ethertype == _ether.ETH_TYPE_IPV6:
        ip6 = pkt.get_protocol(_ipv6.ipv6)
        if ip6 is None:
            raise MalformedFrame("truncated IPv6")
        icmp = pkt.get_protocol(_icmpv6.icmpv6)
        target = None
        if icmp is not None and icmp.type_ in (ND_NS, ND_NA):
            if not isinstance(icmp.data, _icmpv6.nd_neighbor):
                raise MalformedFrame("truncated neighbour discovery message")
            target = _ip(icmp.data.dst)
        return Frame(**base, src_ip=_ip(ip6.src), icmpv6_type=None if icmp is None else icmp.type_,
                     nd_target=target)  # type: ignore[arg-type]
    return Frame(**base)


def _ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise MalformedFrame(f"bad address {text!r}") from None


def arp_reply(requester_mac: str, requester_ip: str, target_mac: str, target_ip: str) -> bytes:
    """The reply "``target_ip`` is at ``target_mac``", addressed to the requester, padded to 60 bytes."""
    them, me = bytes.fromhex(requester_mac.replace(":", "")), bytes.fromhex(target_mac.replace(":", ""))
    frame = them + me + b"\x08\x06" + _ARP_IPV4.pack(1, _ether.ETH_TYPE_IP, 6, 4, ARP_REPLY, me,
                                                     ipaddress.IPv4Address(target_ip).packed, them,
                                                     ipaddress.IPv4Address(requester_ip).packed)
    return frame + bytes(60 - len(frame))


def arp_request(sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    """A broadcast "who has ``target_ip``? tell ``sender_ip``", padded to 60 bytes."""
    me = bytes.fromhex(sender_mac.replace(":", ""))
    frame = b"\xff" * 6 + me + b"\x08\x06" + _ARP_IPV4.pack(1, _ether.ETH_TYPE_IP, 6, 4, ARP_REQUEST, me,
                                                             ipaddress.IPv4Address(sender_ip).packed, bytes(6),
                                                             ipaddress.IPv4Address(target_ip).packed)
    return frame + bytes(60 - len(frame))


def neighbor_advert(target_mac: str, target_ip: str, dst_mac: str, dst_ip: str, solicited: bool,
                    router: bool = False) -> bytes:
    """A Neighbor Advertisement for ``target_ip`` with the override flag and target link-layer option.

    ``solicited`` answers a normal NS (sent to the asker); an unsolicited one defends an address
    against a DAD probe and goes to all nodes (RFC 4861 section 7.2.4, RFC 4862 section 5.4.3).
    ``router`` sets the R flag, for a router's own address.
    """
    flags = (0b100 if router else 0) | (0b010 if solicited else 0) | 0b001  # res bits R|S|O
    pkt = _pkt.Packet()
    pkt.add_protocol(_eth.ethernet(dst=dst_mac, src=target_mac, ethertype=_ether.ETH_TYPE_IPV6))
    pkt.add_protocol(_ipv6.ipv6(nxt=58, hop_limit=255, src=target_ip, dst=dst_ip))
    pkt.add_protocol(_icmpv6.icmpv6(
        type_=ND_NA, code=0,
        data=_icmpv6.nd_neighbor(res=flags, dst=target_ip, option=_icmpv6.nd_option_tla(hw_src=target_mac))))
    pkt.serialize()
    return bytes(pkt.data)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


ICMP4_QUOTE = 548  # an ICMPv4 error quotes as much of the datagram as keeps it within 576 bytes (RFC 1812 4.3.2.3)
ICMP6_QUOTE = 1232  # an ICMPv6 error stays within the minimum MTU of 1280 bytes (RFC 4443 section 2.4)


def icmp4_error(src_mac: str, dst_mac: str, src_ip: str, datagram: bytes, icmp_type: int, code: int,
                mtu: int = 0, ttl: int = 64) -> bytes:
    """An ICMPv4 error about ``datagram`` (the offending IPv4 packet, from its IP header on), sent
    from ``src_ip`` back to the datagram's source. ``mtu`` is the next-hop MTU of "fragmentation
    needed" (type 3 code 4, RFC 1191); other errors leave that field zero."""
    quote = datagram[:ICMP4_QUOTE]
    rest = struct.pack("!HH", 0, mtu) if mtu else b"\x00" * 4
    icmp = struct.pack("!BBH", icmp_type, code, 0) + rest + quote
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    dst_ip = datagram[12:16]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(icmp), 0, 0, ttl, 1, 0,
                         ipaddress.IPv4Address(src_ip).packed, dst_ip)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    frame = _mac_bytes(dst_mac) + _mac_bytes(src_mac) + b"\x08\x00" + header + icmp
    return frame + bytes(max(0, 60 - len(frame)))


def icmp6_error(src_mac: str, dst_mac: str, src_ip: str, datagram: bytes, icmp_type: int, code: int,
                mtu: int = 0, hop_limit: int = 64) -> bytes:
    """An ICMPv6 error about ``datagram`` (the offending IPv6 packet, from its IP header on), sent
    from ``src_ip`` back to the datagram's source. The 32-bit field after the checksum is the
    MTU of "packet too big" (type 2) and zero for the others (RFC 4443)."""
    quote = datagram[:ICMP6_QUOTE]
    src, dst = ipaddress.IPv6Address(src_ip).packed, datagram[8:24]
    icmp = struct.pack("!BBHI", icmp_type, code, 0, mtu) + quote
    pseudo = src + dst + struct.pack("!IxxxB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    header = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), 58, hop_limit, src, dst)
    return _mac_bytes(dst_mac) + _mac_bytes(src_mac) + b"\x86\xdd" + header + icmp


# --- DHCPv4 (RFC 2131, options RFC 2132) ------------------------------------------------------

DHCP_MAGIC = b"\x63\x82\x53\x63"
DHCP_BROADCAST_FLAG = 0x8000
BOOTREQUEST, BOOTREPLY = 1, 2
BOOTP_MIN = 300  # clients derived from BOOTP expect at least this many bytes of message (RFC 1542 2.1)
# op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file
_BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_UDP = struct.Struct("!HHHH")


class DhcpType(enum.IntEnum):
    """Option 53, the DHCP message type."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class DhcpOption(enum.IntEnum):
    SUBNET_MASK = 1
    ROUTER = 3
    INTERFACE_MTU = 26
    REQUESTED_ADDRESS = 50
    LEASE_TIME = 51
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    END = 255


@dataclass(frozen=True)
class DhcpRequest:
    """What the server needs from a client's message."""

    msg_type: int
    xid: int
    flags: int
    chaddr: str
    ciaddr: ipaddress.IPv4Address
    requested: ipaddress.IPv4Address | None = None
    server_id: ipaddress.IPv4Address | None = None


def parse_dhcp(data: bytes) -> DhcpRequest | None:
    """The DHCP message of a frame that is an untagged IPv4 UDP datagram from port 68 to port 67, or
    None for any other frame. Raises ``MalformedFrame`` for such a datagram that is not a DHCP request."""
    if len(data) < 34 or data[12:14] != b"\x08\x00" or data[23] != 17:
        return None
    udp = 14 + (data[14] & 0x0F) * 4
    if len(data) < udp + 8:
        return None
    sport, dport, _, _ = _UDP.unpack_from(data, udp)
    if (sport, dport) != (68, 67):
        return None
    bootp = udp + 8
    if len(data) < bootp + _BOOTP.size + 4 or data[bootp + _BOOTP.size:bootp + _BOOTP.size + 4] != DHCP_MAGIC:
        raise MalformedFrame("UDP 68 -> 67 without a DHCP message")
    op, htype, hlen, _, xid, _, flags, ciaddr, _, _, _, chaddr, _, _ = _BOOTP.unpack_from(data, bootp)
    if (op, htype, hlen) != (BOOTREQUEST, 1, 6):
        raise MalformedFrame("DHCP message is not an Ethernet BOOTREQUEST")
    options = _dhcp_options(data[bootp + _BOOTP.size + 4:])
    kind = options.get(DhcpOption.MESSAGE_TYPE)
    if kind is None or len(kind) != 1:
        raise MalformedFrame("DHCP message without a message type")

    def address(code: int) -> ipaddress.IPv4Address | None:
        raw = options.get(code)
        return None if raw is None or len(raw) != 4 else ipaddress.IPv4Address(raw)

    return DhcpRequest(kind[0], xid, flags, _mac(chaddr[:6]), ipaddress.IPv4Address(ciaddr),
                       address(DhcpOption.REQUESTED_ADDRESS), address(DhcpOption.SERVER_ID))


def _dhcp_options(raw: bytes) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    i = 0
    while i < len(raw):
        code = raw[i]
        if code == DhcpOption.END:
            break
        if code == 0:  # pad
            i += 1
            continue
        if i + 2 > len(raw) or i + 2 + raw[i + 1] > len(raw):
            raise MalformedFrame("truncated DHCP option")
        options[code] = raw[i + 2:i + 2 + raw[i + 1]]
        i += 2 + raw[i + 1]
    return options


def dhcp_reply(request: DhcpRequest, msg_type: DhcpType, server_mac: str, server_ip: ipaddress.IPv4Address,
               address: ipaddress.IPv4Interface | None = None, router: ipaddress.IPv4Address | None = None,
               mtu: int | None = None, lease: int | None = None) -> bytes:
    """A server's answer to ``request``: an OFFER or ACK giving ``address`` (with its mask), the
    lease time, the MTU (option 26) and the router (option 3, when there is one); or a NAK.

    Addressed as RFC 2131 section 4.1 says for a client on the server's own link: a NAK, or an
    answer to a client that set the broadcast flag, to 255.255.255.255; a renewal to the
    client's current address; otherwise to the address offered, at the client's MAC.
    """
    options = bytearray([DhcpOption.MESSAGE_TYPE, 1, msg_type, DhcpOption.SERVER_ID, 4]) + server_ip.packed
    yiaddr = ipaddress.IPv4Address(0)
    if address is not None:
        yiaddr = address.ip
        if lease is not None:
            options += struct.pack("!BBI", DhcpOption.LEASE_TIME, 4, lease)
        options += bytes([DhcpOption.SUBNET_MASK, 4]) + address.netmask.packed
        if router is not None:
            options += bytes([DhcpOption.ROUTER, 4]) + router.packed
        if mtu is not None:
            options += struct.pack("!BBH", DhcpOption.INTERFACE_MTU, 2, mtu)
    options.append(DhcpOption.END)
    options += bytes(max(0, BOOTP_MIN - _BOOTP.size - 4 - len(options)))
    chaddr = _mac_bytes(request.chaddr) + bytes(10)
    bootp = _BOOTP.pack(BOOTREPLY, 1, 6, 0, request.xid, 0, request.flags & DHCP_BROADCAST_FLAG,
                        (request.ciaddr if msg_type == DhcpType.ACK else ipaddress.IPv4Address(0)).packed,
                        yiaddr.packed, bytes(4), bytes(4), chaddr, bytes(64), bytes(128)) + DHCP_MAGIC + options
    if msg_type == DhcpType.NAK or request.flags & DHCP_BROADCAST_FLAG:
        dst_ip, dst_mac = ipaddress.IPv4Address("255.255.255.255"), BROADCAST_MAC
    else:
        dst_ip, dst_mac = (request.ciaddr if int(request.ciaddr) else yiaddr), request.chaddr
    return _udp4_frame(server_mac, dst_mac, server_ip, dst_ip, 67, 68, bootp)


def _udp4_frame(src_mac: str, dst_mac: str, src_ip: ipaddress.IPv4Address, dst_ip: ipaddress.IPv4Address,
                sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    pseudo = src_ip.packed + dst_ip.packed + struct.pack("!xBH", 17, length)
    udp = _UDP.pack(sport, dport, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0, 64, 17, 0, src_ip.packed, dst_ip.packed)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return _mac_bytes(dst_mac) + _mac_bytes(src_mac) + b"\x08\x00" + header + udp


# --- Router Advertisements (RFC 4861 section 4.2) ---------------------------------------------

ND_OPT_SOURCE_LL = 1
ND_OPT_PREFIX_INFO = 3
ND_OPT_MTU = 5
PREFIX_ON_LINK = 0x80
PREFIX_AUTONOMOUS = 0x40
RA_CUR_HOP_LIMIT = 64  # what hosts should put in their packets' hop limit


@dataclass(frozen=True)
class PrefixInfo:
    """One Prefix Information option: ``autonomous`` lets hosts form an address in it (SLAAC)."""

    prefix: ipaddress.IPv6Network
    autonomous: bool
    valid_lifetime: int
    preferred_lifetime: int


def router_advert(src_mac: str, dst_mac: str, dst_ip: str, router_lifetime: int, mtu: int,
                  prefixes: tuple[PrefixInfo, ...]) -> bytes:
    """A Router Advertisement from ``src_mac`` and the link-local address derived from it: the
    source link-layer address, MTU and on-link prefix options. ``router_lifetime`` 0 says the
    sender is not a default router (RFC 4861 section 4.2)."""
    src_ip = link_local(src_mac)
    options = struct.pack("!BB6s", ND_OPT_SOURCE_LL, 1, _mac_bytes(src_mac))
    options += struct.pack("!BBHI", ND_OPT_MTU, 1, 0, mtu)
    for p in prefixes:
        flags = PREFIX_ON_LINK | (PREFIX_AUTONOMOUS if p.autonomous else 0)
        options += struct.pack("!BBBBIII16s", ND_OPT_PREFIX_INFO, 4, p.prefix.prefixlen, flags, p.valid_lifetime,
                               p.preferred_lifetime, 0, p.prefix.network_address.packed)
    icmp = struct.pack("!BBHBBHII", ND_RA, 0, 0, RA_CUR_HOP_LIMIT, 0, router_lifetime, 0, 0) + options
    dst = ipaddress.IPv6Address(dst_ip).packed
    pseudo = src_ip.packed + dst + struct.pack("!IxxxB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    header = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), 58, 255, src_ip.packed, dst)
    return _mac_bytes(dst_mac) + _mac_bytes(src_mac) + b"\x86\xdd" + header + icmp


IPV4_DF, IPV4_MF = 0x4000, 0x2000


def _copied_options(options: bytes) -> bytes:
    """The IPv4 options every fragment repeats (copied flag set), padded to a multiple of 4 bytes."""
    kept, i = b"", 0
    while i < len(options) and options[i] != 0:  # 0: end of options
        size = 1 if options[i] == 1 else max(2, options[i + 1] if i + 1 < len(options) else 2)
        if options[i] & 0x80:
            kept += options[i:i + size]
        i += size
    return kept + bytes(-len(kept) % 4)


def fragment_ipv4(frame: bytes, mtu: int) -> list[bytes]:
    """Fragments (RFC 791 section 3.2) of the IPv4 packet in ``frame`` that each fit ``mtu``, as
    frames with the original Ethernet header. A fragment is cut again with its offsets kept.
    Raises ``MalformedFrame`` for a packet whose header lies, and ``ValueError`` when DF is set."""
    ip = frame[14:]
    if len(ip) < 20 or ip[0] >> 4 != 4:
        raise MalformedFrame("not an IPv4 packet")
    ihl = (ip[0] & 0x0F) * 4
    total, flags = struct.unpack_from("!H2xH", ip, 2)
    if ihl < 20 or not ihl <= total <= len(ip):
        raise MalformedFrame(f"IPv4 header length {ihl}, total length {total}, {len(ip)} bytes")
    if flags & IPV4_DF:
        raise ValueError("the packet may not be fragmented (DF)")
    first, later = ip[:ihl], ip[:20] + _copied_options(ip[20:ihl])
    payload, offset, more = ip[ihl:total], flags & 0x1FFF, flags & IPV4_MF
    fragments: list[bytes] = []
    pos = 0
    while pos < len(payload) or not fragments:
        header = bytearray(first if pos == 0 else later)
        chunk = payload[pos:pos + (mtu - len(header)) // 8 * 8]
        last = pos + len(chunk) >= len(payload)
        header[0] = 0x40 | len(header) // 4
        struct.pack_into("!H", header, 2, len(header) + len(chunk))
        struct.pack_into("!H", header, 6, (0 if last and not more else IPV4_MF) | (offset + pos // 8))
        struct.pack_into("!H", header, 10, 0)
        struct.pack_into("!H", header, 10, _checksum(bytes(header)))
        out = frame[:14] + bytes(header) + chunk
        fragments.append(out + bytes(max(0, 60 - len(out))))
        pos += len(chunk)
    return fragments
