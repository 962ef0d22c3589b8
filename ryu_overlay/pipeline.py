"""The OpenFlow pipeline of a hypervisor bridge, declared as data.

Tables are referred to by name everywhere; their numbers come from their order here. Each
table lists the match fields and next tables it allows, and ``flows.Flow`` refuses to build a
flow that breaks that contract. ``docs/pipeline.md`` describes every table and its flows.

Layouts shared by all tables:

* **metadata** carries the packet's network: bits 0-23 the VNI, bit 24 set when the frame
  arrived from a tunnel (split horizon: such frames are only delivered locally).
* **cookie**: bits 56-63 the flow family (``Family``), bits 32-55 the VNI the flow belongs to
  (0 for flows of no network), bits 0-31 a fingerprint of the flow's content. Where two
  distinct flows of one partition would share a cookie, each gets a salted fingerprint instead
  (``flows.resolve_clashes``). The cookie therefore names one exact flow of a switch: the
  controller deletes and resynchronises flows by cookie alone, and
  ``ovs-ofctl dump-flows br-int cookie=0x00001389_00000000/0x00ffffff00000000`` lists everything
  of VNI 5001.
* **group ids**: bits 0-23 the VNI, bits 24-31 the group's role (``GroupRole``).
* **reg0** bit 0: set by ``mtu_check`` when the frame is larger than its network's MTU allows
  (``check_pkt_larger``), read by ``mtu_oversize``.
* **ct_zone**: a router's SNAT connections are tracked in its own conntrack zone, the low 16
  bits of its MAC (``gateway_zone``): routers' MACs are numbered from 1, so zones are distinct for
  the first 65535 routers, and two tenants' identical private addresses never share a zone.
* **meter** N limits what port N may send to the controller (``PACKET_IN_RATE``), so one VM
  flooding ARP or ND cannot starve another's answers. ``ROUTER_METER`` limits, per hypervisor,
  what the distributed routers send up (expired TTLs, unknown destinations, solicitations for
  their addresses). ``CONTROLLER_METER`` limits everything the hypervisor sends up, whatever
  the flow's own meter.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .compat import framework_module, ofproto as _ofp

_ether = framework_module("lib.packet.ether_types")
_in_proto = framework_module("lib.packet.in_proto")
_arp = framework_module("lib.packet.arp")
_icmpv6 = framework_module("lib.packet.icmpv6")

VNI_MASK = 0xFFFFFF
FROM_TUNNEL = 1 << 24
NETWORK_MASK = VNI_MASK | FROM_TUNNEL

# Protocol numbers and OpenFlow reserved ports, named once (Ryu's values where Ryu has them).
ETH_TYPE_ARP: int = _ether.ETH_TYPE_ARP
ETH_TYPE_IPV4: int = _ether.ETH_TYPE_IP
ETH_TYPE_IPV6: int = _ether.ETH_TYPE_IPV6
ETH_TYPE_RARP = 0x8035  # not in Ryu's ether_types
IP_PROTO_ICMPV6: int = _in_proto.IPPROTO_ICMPV6
ARP_REQUEST: int = _arp.ARP_REQUEST
ARP_REPLY: int = _arp.ARP_REPLY
ND_NS: int = _icmpv6.ND_NEIGHBOR_SOLICIT
ND_NA: int = _icmpv6.ND_NEIGHBOR_ADVERT
ND_OPT_SLL: int = _icmpv6.ND_OPTION_SLA  # source link-layer address option
ND_OPT_TLL: int = _icmpv6.ND_OPTION_TLA  # target link-layer address option
ND_NA_SOLICITED_OVERRIDE = 0x60000000  # an NA's flags word (nd_reserved): R=0, S=1, O=1
ND_NA_ROUTER_SOLICITED_OVERRIDE = 0xE0000000  # a router's: R=1, S=1, O=1
ND_RS: int = _icmpv6.ND_ROUTER_SOLICIT
ND_RA: int = _icmpv6.ND_ROUTER_ADVERT
IP_PROTO_UDP: int = _in_proto.IPPROTO_UDP
DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
OFPP_IN_PORT: int = _ofp.OFPP_IN_PORT
OFPP_TABLE: int = _ofp.OFPP_TABLE
OFPP_CONTROLLER: int = _ofp.OFPP_CONTROLLER
CT_TRACKED, CT_REPLY, CT_INVALID = 0x20, 0x08, 0x10  # ct_state bits (+trk, +rpl, +inv)
NAT_SRC = 1  # NXActionNAT flags
CT_COMMIT = 1  # NXActionCT flags
BROADCAST = "ff:ff:ff:ff:ff:ff"
MULTICAST_BIT = ("01:00:00:00:00:00", "01:00:00:00:00:00")
IEEE_LINK_LOCAL = ("01:80:c2:00:00:00", "ff:ff:ff:ff:ff:f0")  # 802.1D reserved group: STP, LLDP, 802.1X, pause
VLAN_PRESENT = (0x1000, 0x1000)  # OFPVID_PRESENT: any 802.1Q or 802.1ad tag
DHCPV6_CLIENT_PORT = 546
NO_LINK_LAYER_ADDRESS = "00:00:00:00:00:00"  # what OVS reads as nd_tll from an NA without that option


class Priority:
    """Flow priorities by what the flow does; ``docs/pipeline.md`` lists each table's flows by them.

    Plain ints, not an enum: a flow's fingerprint hashes the repr of its priority, and these
    keep the cookies flows had before the priorities were named.
    """

    MISS = 0  # every table: what happens to a frame no other flow takes
    # ingress
    CLASSIFY = 100  # a bound VM port with its MAC, or a tunnel peer with a VNI it hosts
    TUNNEL_DROP = 2  # other tunnel traffic
    LEARN_PORT = 1  # other frames of a known VM interface: to the controller, metered
    TO_GATEWAY = 110  # (gateway hypervisor) from a tunnel, a network's frame routed to the router's MAC
    UPLINK = 100  # (gateway hypervisor) anything from a router's uplink: to uplink_in
    # uplink_in
    UPLINK_ARP_ANSWER = 100  # ARP requests for the gateway IP or a floating IP: answered in the switch
    NEXT_HOP_ARP = 90  # any other ARP from the next hop: to the controller, which learns its MAC
    TO_PUBLIC = 50  # IPv4 to the gateway IP (conntrack, un-SNAT) or to a floating IP (DNAT)
    ROUTED_IN = 40  # without SNAT: IPv4 to one of the router's subnets, routed in as it is
    # port_security
    L2_CONTROL_DROP = 40  # VLAN-tagged frames (802.1Q, 802.1ad) and the IEEE 802.1 link-local group (STP, LLDP)
    HOST_CONFIG_TRAP = 30  # a port's DHCP requests (UDP 68 -> 67, any source address): to the controller
    HOST_CONFIG_DROP = 25  # DHCP(v6) replies to clients, Router Advertisements, DHCP requests no trap took
    OWN_NA = 20  # a Neighbor Advertisement for one of the port's own addresses
    OWN_NS = 20  # a Neighbor Solicitation from one of the port's addresses giving the port's MAC
    FOREIGN_NA = 15  # any other Neighbor Advertisement
    FOREIGN_NS = 15  # any other Neighbor Solicitation with a source link-layer address
    OWN_ADDRESS = 10  # ARP, IPv4, IPv6 from one of the port's own addresses
    SPOOFED = 5  # ARP, IPv4, IPv6 from any other address
    OTHER_ETHERTYPE = 1  # e.g. RARP: on to arp_nd
    # arp_nd
    INVALID_NS = 110  # a solicitation from the unspecified address with a link-layer address option
    ANSWER = 100  # in-switch ARP and ND responders (and nd_reply's last touch); RS to the controller
    UNKNOWN_NS_DROP = 60  # a solicitation with the asker's link-layer address that no responder took
    ND_CONTROLLER = 50  # other multicast solicitations (DAD probes, no link-layer option): controller
    UNSOLICITED_DROP = 40  # gratuitous ARP replies, unsolicited NAs
    UNKNOWN_ARP_DROP = 10  # ARP requests no responder took, in networks that drop them
    # mtu_check
    CHECK_MTU = 100  # every frame of a network: compare its length with the network's MTU
    # mtu_oversize
    OVERSIZE = 100  # a frame too big for its network: to the controller, metered
    # l3_route
    TTL_EXPIRED = 30  # to the router's MAC with TTL / hop limit 1: to the controller (time exceeded)
    ROUTE = 20  # to the router's MAC for one of its subnets: route into that subnet's network
    DEFAULT_ROUTE = 15  # other IPv4 to the router's MAC, the router having a gateway: to the gateway
    ROUTER_MAC_DROP = 10  # anything else to the router's MAC
    # uplink_nat
    UNSNAT = 100  # a reply of an SNAT connection, its destination restored: routed in
    # gateway_out
    FLOATING_OUT = 100  # from a port with a floating IP: its source becomes the floating IP
    SNAT_OUT = 50  # from any other port: SNAT to the gateway IP in conntrack (or as it is, without SNAT)
    # uplink_out
    TO_NEXT_HOP = 100  # the router's MAC as source, the next hop's as destination, out of the uplink
    # l3_neighbour
    NEIGHBOUR = 100  # a known address of the target network (or the router's own: dropped)
    # l2_lookup
    EXACT = 100  # a known destination MAC of the network
    MULTICAST = 10  # broadcast and multicast: to flood
    TUNNEL_UNKNOWN_DROP = 5  # unicast from a tunnel for a MAC not here
    # flood
    FLOOD = 100  # the network's flood group


@dataclass(frozen=True)
class Table:
    name: str
    purpose: str
    match_fields: frozenset[str]
    next_tables: frozenset[str] = frozenset()


def _table(name: str, purpose: str, fields: str, next_tables: str = "") -> Table:
    return Table(name, purpose, frozenset(fields.split()), frozenset(next_tables.split()))


TABLES: tuple[Table, ...] = (
    _table("ingress",
           "Classify a frame by where it came from: a bound VM port with its own MAC, or the tunnel "
           "port from a known hypervisor with a VNI both host. Sets metadata to the network. Other "
           "tunnel traffic is dropped here; other VM frames go to the controller, rate-limited, "
           "which learns locations from them.",
           "in_port eth_src eth_dst tun_ipv4_src tun_ipv6_src tunnel_id",
           "uplink_in port_security gateway_out l2_lookup"),
    _table("uplink_in",
           "Frames from a router's uplink, on its gateway hypervisor: ARP requests for the gateway "
           "IP and floating IPs are answered here; other ARP from the next hop goes to the controller "
           "(which learns its MAC). IPv4 to the gateway IP goes through the router's conntrack zone "
           "(un-SNAT); IPv4 to a floating IP gets the port's address (DNAT) and is routed in. "
           "Everything else from the outside stops here.",
           "in_port eth_type arp_op arp_spa arp_tpa ipv4_dst", "uplink_nat l3_neighbour"),
    _table("uplink_nat",
           "After conntrack: a reply (+trk+rpl) of a connection the router SNAT-ed, its destination "
           "now the port's address, is routed into the port's network. Other frames stop here.",
           "ct_state ct_zone eth_type ipv4_dst", "l3_neighbour"),
    _table("port_security",
           "Let a VM send ARP, IPv4 and IPv6 only from the addresses its port owns (plus its "
           "EUI-64 link-local address and the unspecified address for DAD), and advertise only "
           "its own addresses in ARP and Neighbor Advertisements. DHCP requests go to the "
           "controller from here (before the source check: a DISCOVER comes from 0.0.0.0); DHCP "
           "server replies and Router Advertisements from VMs stop here, and so do VLAN-tagged frames "
           "and frames to the IEEE 802.1 link-local group (STP, LLDP).",
           "in_port eth_dst vlan_vid eth_type arp_spa arp_sha ipv4_src ipv6_src ip_proto udp_src udp_dst icmpv6_type "
           "ipv6_nd_target ipv6_nd_tll ipv6_nd_sll nd_options_type", "arp_nd"),
    _table("arp_nd",
           "Answer ARP requests and Neighbor Solicitations for addresses the mapping knows inside "
           "the switch, before either could be flooded; solicitations without the asker's "
           "link-layer address (DAD probes) and Router Solicitations go to the controller. "
           "Gratuitous ARP replies, unsolicited NAs and solicitations for unknown IPv6 addresses "
           "stop here.",
           "in_port metadata eth_type eth_dst arp_op arp_tpa ip_proto icmpv6_type ipv6_nd_target ipv6_src "
           "nd_options_type", "nd_reply mtu_check"),
    _table("nd_reply",
           "Finish a Neighbor Advertisement that an arp_nd responder made of a solicitation: write "
           "its target link-layer address (Open vSwitch allows that only in a flow whose match is "
           "an advertisement) and send it back out of the asking port.",
           "eth_type ip_proto icmpv6_type nd_options_type"),
    _table("mtu_check",
           "Mark (reg0 bit 0) a frame from a VM that is longer than its network's MTU plus the "
           "14-byte Ethernet header: once encapsulated it would not fit the underlay. Frames from "
           "a tunnel never come here.",
           "metadata", "mtu_oversize"),
    _table("mtu_oversize",
           "Send a marked frame to the controller through its port's meter, which answers ICMP "
           "fragmentation needed or packet too big, or fragments an IPv4 packet that allows it. "
           "Other frames go on to be forwarded.",
           "in_port reg0", "l3_route"),
    _table("l3_route",
           "Distributed routing, on the hypervisor where the frame entered: a frame of a network "
           "with a router, sent to the router's MAC for one of the router's subnets, has its TTL "
           "or hop limit decremented, the router's MAC as source, and the target network as "
           "metadata (not from a tunnel). TTL 1 goes to the controller for time exceeded; "
           "anything else sent to the router's MAC stops here. Other frames go on to l2_lookup.",
           "metadata eth_type eth_dst ipv4_dst ipv6_dst nw_ttl", "gateway_out l3_neighbour l2_lookup"),
    _table("gateway_out",
           "On the gateway hypervisor, IPv4 routed out of a router's network: a port with a floating "
           "IP gets it as source; other ports are SNAT-ed to the gateway IP in the router's conntrack "
           "zone (or keep their address, without SNAT).",
           "metadata eth_type ipv4_src", "uplink_out"),
    _table("uplink_out",
           "Out of the router's uplink, from the router's MAC to the next hop's, once the controller "
           "has resolved it; until then the frame is dropped here.",
           "metadata"),
    _table("l3_neighbour",
           "The routed frame's destination MAC: the port owning the destination address in the "
           "target network, from the mapping (every port of every network of the router, on every "
           "hypervisor hosting one of them). An unknown address goes to the controller for "
           "unreachable; the router's own addresses stop here.",
           "metadata eth_type ipv4_dst ipv6_dst", "l2_lookup"),
    _table("l2_lookup",
           "Forward by (network, destination MAC): to the local VM port, or into the tunnel to "
           "the hypervisor hosting the MAC. Broadcast, multicast and unknown unicast go to flood.",
           "metadata eth_dst", "flood"),
    _table("flood",
           "Replicate a frame to the network's local ports and to the hypervisors that host the "
           "network (never to others); frames from a tunnel only to local ports.",
           "metadata"),
)

TABLE_IDS: dict[str, int] = {t.name: i for i, t in enumerate(TABLES)}
TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
TABLE_NAMES: dict[int, str] = {i: t.name for i, t in enumerate(TABLES)}


class Family(enum.IntEnum):
    """What a flow is for; the top byte of its cookie."""

    TABLE_MISS = 1
    PORT_IN = 2
    TUNNEL_IN = 3
    PORT_SECURITY = 4
    ARP_RESPONDER = 5
    L2_LOCAL = 6
    L2_REMOTE = 7
    FLOOD = 8
    LEARN = 9
    ND_PROXY = 10
    UNKNOWN_ARP_DROP = 11  # not ARP_RESPONDER: the app counts that family's hits as answers
    HOST_CONFIG_TRAP = 12  # a port's DHCP requests and Router Solicitations, to the controller
    HOST_CONFIG_DROP = 13  # DHCP and RA from VMs that must reach no other VM
    ND_RESPONDER = 14
    ROUTER_ARP = 15  # in-switch ARP responder for a router's IPv4 addresses
    ROUTER_ND = 16
    ROUTE = 17
    TTL_EXPIRED = 18
    ROUTER_DROP = 19  # frames for the router itself that it does not answer
    NEIGHBOUR = 20
    UNREACHABLE = 21
    MTU_CHECK = 22
    OVERSIZE = 23
    GATEWAY_IN = 24  # ingress: a router's uplink, and frames tunnelled to its gateway hypervisor
    DEFAULT_ROUTE = 25
    UPLINK_ARP = 26  # answers for the gateway and floating IPs on the uplink; the next hop's ARP trap
    FLOATING_IP = 27
    SNAT = 28
    UPLINK_OUT = 29


class GroupRole(enum.IntEnum):
    FLOOD = 0  # local ports and every other hypervisor hosting the network
    FLOOD_LOCAL = 1  # local ports only, for frames that came from a tunnel


PACKET_IN_RATE = 100  # packet-ins per second per VM interface
UNKNOWN_PORT_METER = 0xFFFF  # above any OVS port number: frames from ports not yet announced
ROUTER_METER = 0xFFFE  # what the hypervisor's routers send to the controller
PACKET_IN_BURST = 50
# Open vSwitch applies the OpenFlow 1.3 controller meter (OFPM_CONTROLLER) to every packet-in of the
# switch, after the flow's own meter: all the VMs of a hypervisor together get no more than this.
CONTROLLER_METER: int = _ofp.OFPM_CONTROLLER
HYPERVISOR_PACKET_IN_RATE = 400
HYPERVISOR_PACKET_IN_BURST = 200
ETH_HEADER_LEN = 14  # what check_pkt_larger counts besides the IP packet of an untagged frame
OVERSIZE_BIT = 1  # reg0 bit 0


def gateway_zone(router_mac: str) -> int:
    """The conntrack zone of a router's SNAT connections (see the module doc)."""
    return int(router_mac.replace(":", "")[-4:], 16)


def cookie(family: Family, vni: int, fingerprint: int) -> int:
    return (int(family) << 56) | ((vni & VNI_MASK) << 32) | (fingerprint & 0xFFFFFFFF)


def cookie_vni(value: int) -> int:
    return (value >> 32) & VNI_MASK


def cookie_family(value: int) -> int:
    return value >> 56


def group_id(role: GroupRole, vni: int) -> int:
    return (int(role) << 24) | (vni & VNI_MASK)


def group_vni(gid: int) -> int:
    return gid & VNI_MASK
