"""Pure flow builders: mapping state in, the flows and groups a hypervisor should have out.

Nothing here talks to a switch. A hypervisor's desired state is split into partitions, one
per VNI it hosts plus partition 0 for flows of no network; a change to a network recomputes
only that network's partition on the hypervisors that host it. ``ofmsg`` turns these objects
into OpenFlow messages.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import wraps
from typing import Any, TypeVar

from .hostconfig import announces_prefixes, dhcp_address
from .model import Hypervisor, Network, Port, Router, link_local
from .pipeline import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST,
    CONTROLLER_METER,
    CT_INVALID,
    CT_REPLY,
    CT_TRACKED,
    DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
    DHCPV6_CLIENT_PORT,
    ETH_HEADER_LEN,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    FROM_TUNNEL,
    HYPERVISOR_PACKET_IN_BURST,
    HYPERVISOR_PACKET_IN_RATE,
    IEEE_LINK_LOCAL,
    IP_PROTO_ICMPV6,
    IP_PROTO_UDP,
    MULTICAST_BIT,
    ND_NA,
    ND_NA_ROUTER_SOLICITED_OVERRIDE,
    ND_NA_SOLICITED_OVERRIDE,
    ND_NS,
    ND_OPT_SLL,
    ND_OPT_TLL,
    ND_RA,
    ND_RS,
    NETWORK_MASK,
    NO_LINK_LAYER_ADDRESS,
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    OVERSIZE_BIT,
    PACKET_IN_BURST,
    PACKET_IN_RATE,
    ROUTER_METER,
    TABLE_IDS,
    TABLES_BY_NAME,
    UNKNOWN_PORT_METER,
    VLAN_PRESENT,
    VNI_MASK,
    Family,
    GroupRole,
    Priority as P,
    cookie,
    gateway_zone,
    group_id,
)
from .topology import Topology

LOG = logging.getLogger("ryu_overlay")


# The actions spell out the repr that dataclasses would generate: a flow's cookie hashes it,
# and the generated one (behind a recursion guard) cost a quarter of building a flow.

@dataclass(frozen=True)
class Output:
    port: int

    def __repr__(self) -> str:
        return f"Output(port={self.port!r})"


@dataclass(frozen=True)
class SetField:
    field: str
    value: Any

    def __repr__(self) -> str:
        return f"SetField(field={self.field!r}, value={self.value!r})"


@dataclass(frozen=True)
class Move:
    """Copy ``n_bits`` from one field to another (Nicira reg_move; OpenFlow 1.3 has no copy)."""

    src: str
    dst: str
    n_bits: int

    def __repr__(self) -> str:
        return f"Move(src={self.src!r}, dst={self.dst!r}, n_bits={self.n_bits!r})"


@dataclass(frozen=True)
class SetNwTtl:
    """Set the IPv4 TTL or IPv6 hop limit (OpenFlow 1.3 has no OXM field for it)."""

    ttl: int

    def __repr__(self) -> str:
        return f"SetNwTtl(ttl={self.ttl!r})"


@dataclass(frozen=True)
class DecTtl:
    """Decrement the IPv4 TTL or IPv6 hop limit (OpenFlow 1.3 DEC_NW_TTL). OVS drops a packet
    whose TTL is 0 or 1 instead; the pipeline sends those to the controller before it gets here."""

    def __repr__(self) -> str:
        return "DecTtl()"


@dataclass(frozen=True)
class ToGroup:
    group_id: int

    def __repr__(self) -> str:
        return f"ToGroup(group_id={self.group_id!r})"


@dataclass(frozen=True)
class CheckPktLarger:
    """Set bit ``offset`` of ``dst`` when the frame is longer than ``pkt_len`` bytes, else clear it
    (Nicira check_pkt_larger; the length counts the Ethernet frame without its FCS)."""

    pkt_len: int
    dst: str
    offset: int

    def __repr__(self) -> str:
        return f"CheckPktLarger(pkt_len={self.pkt_len!r}, dst={self.dst!r}, offset={self.offset!r})"


@dataclass(frozen=True)
class Ct:
    """Send the frame through conntrack in ``zone`` with NAT, then on in ``table`` (Nicira ct with
    a nat action; the rest of the flow's actions see the frame as it was).

    Committed with ``snat`` set, a new connection's source becomes ``snat``; without it, the nat
    action applies what the connection already has: a reply gets its original destination back.
    """

    zone: int
    table: str
    commit: bool = False
    snat: str | None = None

    def __repr__(self) -> str:
        return f"Ct(zone={self.zone!r}, table={self.table!r}, commit={self.commit!r}, snat={self.snat!r})"


Action = Output | SetField | Move | SetNwTtl | DecTtl | ToGroup | CheckPktLarger | Ct
Match = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Flow:
    """One flow entry. Its cookie is derived from its content (see ``pipeline``)."""

    table: str
    priority: int
    family: Family
    match: Match
    vni: int = 0
    actions: tuple[Action, ...] = ()
    metadata: tuple[int, int] | None = None
    goto: str | None = None
    meter: int | None = None
    salt: int = 0
    cookie: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table = TABLES_BY_NAME[self.table]
        if not table.match_fields.issuperset(name for name, _ in self.match):
            extra = {name for name, _ in self.match} - table.match_fields
            raise ValueError(f"table {self.table} does not match on {sorted(extra)}")
        for goto in (self.goto, *(a.table for a in self.actions if isinstance(a, Ct))):
            if goto is not None and goto not in table.next_tables:
                raise ValueError(f"table {self.table} may not go to {goto}")
        object.__setattr__(self, "cookie", cookie(self.family, self.vni, fingerprint(self.content(), self.salt)))
        # The slot of its encoding (``ofmsg._flow_message``), set first on every flow: CPython keeps
        # a flow's attributes inline only while every flow adds them in the same order.
        object.__setattr__(self, "_ofp13_flow_add", None)

    def content(self) -> str:
        """What the fingerprint hashes: everything the switch sees of the flow but its cookie.

        Tables are taken by number, as the switch sees them: a new version of the pipeline that
        renumbers a table gives its flows new cookies, so a controller upgraded over switches
        that still hold the old flows replaces them instead of taking them for its own.
        """
        goto = None if self.goto is None else TABLE_IDS[self.goto]
        return repr((TABLE_IDS[self.table], self.priority, self.match, self.actions, self.metadata, goto, self.meter))


def fingerprint(content: str, salt: int = 0) -> int:
    """The low 32 bits of a flow's cookie.

    Unsalted, the CRC32 of its content, as cookies have always been. A salted fingerprint
    (see ``resolve_clashes``) uses BLAKE2b instead: CRC is linear, so two inputs of one length
    whose CRCs collide still collide with any salt prepended or appended.
    """
    if not salt:
        return zlib.crc32(content.encode())
    digest = hashlib.blake2b(content.encode(), digest_size=4, salt=salt.to_bytes(16, "big"))
    return int.from_bytes(digest.digest(), "big")


@dataclass(frozen=True)
class Group:
    group_id: int
    buckets: tuple[tuple[Action, ...], ...]


@dataclass(frozen=True)
class Meter:
    """A packets-per-second limit with a drop band."""

    meter_id: int
    rate: int
    burst: int


@dataclass(frozen=True)
class Partition:
    flows: dict[int, Flow] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)
    meters: dict[int, Meter] = field(default_factory=dict)


@dataclass(frozen=True)
class SwitchView:
    """What the controller knows of one connected bridge: its hypervisor, port numbers, and the
    peers its BFD sessions say are down (``down``: no traffic goes to them)."""

    hypervisor: Hypervisor
    ofports: Mapping[str, int]
    down: frozenset[str] = frozenset()
    next_hops: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (uplink, next hop IP) -> MAC

    @property
    def tunnel_ofport(self) -> int | None:
        return self.ofports.get(self.hypervisor.tunnel_port)

    @property
    def tunnel_ofports(self) -> list[int]:
        """The flow-based tunnel port and the per-peer BFD ports (``bfd_port``): no VM behind them."""
        return sorted(no for name, no in self.ofports.items()
                      if name == self.hypervisor.tunnel_port or BFD_PORT_RE.fullmatch(name))


BFD_PORT_RE = re.compile(r"bfd-[0-9a-f]{8}")


def bfd_port(peer: str) -> str:
    """The name of the tunnel port that runs BFD towards hypervisor ``peer`` (docs/hypervisors.md)."""
    return f"bfd-{zlib.crc32(peer.encode()):08x}"


T = TypeVar("T")


class Shared:
    """One copy of each distinct match field, action and list of actions that flows hold.

    A large placement builds hundreds of thousands of flows whose match fields (``eth_type``,
    a VNI, a port's MAC) and actions repeat: sharing one object per distinct value took a
    quarter off the flows' memory and 13-15 % off a controller's RSS at 3,000 and 10,000
    hypervisors (docs/performance.md, "Summary"; docs/scale-out.md). Whole matches are not
    shared: nearly every flow's is its own.

    The table holds values no flow may hold any longer (a port deleted, a flow replaced). So
    that its size follows the placement rather than its history, it drops those whenever it
    has doubled since it last looked: a value whose only references are the table's own.
    """

    def __init__(self, min_limit: int = 1 << 16) -> None:
        self.table: dict[Any, Any] = {}
        self.min_limit = self.limit = min_limit

    def __call__(self, value: T) -> T:
        table = self.table
        try:
            hit: T = table[value]
            return hit
        except KeyError:
            if len(table) >= self.limit:
                self.sweep()
            self.table[value] = value
            return value

    def sweep(self) -> None:
        self.table = {v: v for v in self.table if sys.getrefcount(v) > _REFS_OF_TABLE_ENTRY}
        self.limit = max(self.min_limit, 2 * len(self.table))


def _refs_of_table_entry() -> int:
    """What ``sys.getrefcount`` says, inside ``Shared.sweep``'s loop, of a value nothing else holds."""
    table: dict[object, object] = {object(): None}
    table = {v: v for v in table}
    return max(sys.getrefcount(v) for v in table)


_REFS_OF_TABLE_ENTRY = _refs_of_table_entry()
shared = Shared()


def flow(table: str, priority: int, family: Family, match: Mapping[str, Any], vni: int = 0,
         actions: tuple[Action, ...] = (), metadata: tuple[int, int] | None = None,
         goto: str | None = None, meter: int | None = None) -> Flow:
    fields = tuple(shared(item) for item in sorted(match.items()))
    return Flow(table, priority, family, fields, vni, shared(tuple(shared(a) for a in actions)), metadata, goto, meter)


Flows = Mapping[int, Flow]  # by cookie; no two flows share one
Clashes = dict[int, set[Flow]]  # a cookie claimed by two or more distinct flows -> those flows


def by_cookie(flows: Iterable[Flow]) -> dict[int, Flow]:
    """One builder's flows by cookie; flows that would share one get their own (``resolve_clashes``)."""
    into: dict[int, Flow] = {}
    clashes: Clashes = {}
    gather(into, clashes, flows)
    return resolve_clashes(into, clashes) if clashes else into


def gather(into: dict[int, Flow], clashes: Clashes, flows: Flows | Iterable[Flow]) -> None:
    """Add flows to a partition being built, setting aside distinct flows that share a cookie.

    Every place that merges flows into one partition goes through here, so that a collision of
    fingerprints can never drop a flow silently. ``into`` keeps the flows whose cookie is theirs
    alone; a cookie that two distinct flows claim moves, with all its claimants, to ``clashes``
    until ``resolve_clashes``. The usual case, disjoint cookies, is one ``dict.update``.
    """
    if isinstance(flows, Mapping):
        if not clashes and into.keys().isdisjoint(flows.keys()):
            into.update(flows)
            return
        flows = flows.values()
    for f in flows:
        c = f.cookie
        group = clashes.get(c)
        if group is not None:
            group.add(f)
            continue
        have = into.setdefault(c, f)
        if have is not f and have != f:
            del into[c]
            clashes[c] = {have, f}


def discard(into: dict[int, Flow], clashes: Clashes, f: Flow) -> None:
    """Take a gathered flow out again (it may have been claiming a cookie with others)."""
    group = clashes.get(f.cookie)
    if group is None:
        del into[f.cookie]
    else:
        group.discard(f)


def resolve_clashes(into: dict[int, Flow], clashes: Clashes) -> dict[int, Flow]:
    """Give every clashing flow a cookie of its own; the result depends only on the flows.

    A cookie that two or more distinct flows claim goes to none of them: taken in the order of
    their content, each gets a copy of itself with the first salt (1, 2, ...) whose fingerprint
    no other flow of the partition holds or claims. Neither keeps the plain cookie, so a cookie
    on a switch never changes meaning while the claimants come and go: when one goes, the
    other's salted flow is replaced by its plain one (added, then the salted one deleted), and
    deleting by cookie removes exactly one flow. The same flows always get the same cookies,
    so a restarted controller still finds nothing to send. A claim left alone (the others were
    ``discard``-ed) gets its plain cookie back.
    """
    for c in sorted(clashes):
        if len(clashes[c]) == 1:
            into[c] = next(iter(clashes[c]))
    for c in sorted(clashes):
        if len(clashes[c]) < 2:
            continue
        LOG.debug("flows share cookie %#018x; each gets a salted one: %s", c, clashes[c])
        for f in sorted(clashes[c], key=lambda f: (f.content(), f.salt)):
            salt = f.salt + 1
            while (s := salted(f, salt)).cookie in into or s.cookie in clashes:
                salt += 1
            into[s.cookie] = s
    return into


def _partition(flows: dict[int, Flow], groups: tuple[Group, ...] = (), meters: tuple[Meter, ...] = ()) -> Partition:
    return Partition(flows, {g.group_id: g for g in groups}, {m.meter_id: m for m in meters})


ICMPV6 = {"eth_type": ETH_TYPE_IPV6, "ip_proto": IP_PROTO_ICMPV6}
NS = {**ICMPV6, "icmpv6_type": ND_NS}
DHCP_REQUEST = {"eth_type": ETH_TYPE_IPV4, "ip_proto": IP_PROTO_UDP, "udp_src": DHCP_CLIENT_PORT,
                "udp_dst": DHCP_SERVER_PORT}
# Replies to a DHCP client, whatever their source port: clients filter on the destination port only.
DHCP_SERVER_REPLY = {"eth_type": ETH_TYPE_IPV4, "ip_proto": IP_PROTO_UDP, "udp_dst": DHCP_CLIENT_PORT}
DHCPV6_SERVER_REPLY = {"eth_type": ETH_TYPE_IPV6, "ip_proto": IP_PROTO_UDP, "udp_dst": DHCPV6_CLIENT_PORT}


def base_partition(view: SwitchView) -> Partition:
    """Flows that belong to no network: what each table does with frames no network claims.

    A frame from a VM interface that no flow of ``ingress`` classifies goes to the controller
    through that interface's packet-in meter: that is how the controller learns where a port is.
    """
    m = Family.TABLE_MISS
    tunnels = view.tunnel_ofports
    vm_ports = sorted(no for no in view.ofports.values() if no not in tunnels)
    up = (Output(OFPP_CONTROLLER),)
    flows = [
        # A port the controller has not heard of yet (its port-status is on the way) shares one meter.
        flow("ingress", P.MISS, Family.LEARN, {}, actions=up, meter=UNKNOWN_PORT_METER),
        *(flow("ingress", P.LEARN_PORT, Family.LEARN, {"in_port": no}, actions=up, meter=no) for no in vm_ports),
        *(flow("ingress", P.TUNNEL_DROP, m, {"in_port": no}) for no in tunnels),
        flow("port_security", P.MISS, m, {}),
        *(flow("port_security", P.SPOOFED, m, {"eth_type": t}) for t in (ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6)),
        flow("port_security", P.OTHER_ETHERTYPE, m, {}, goto="arp_nd"),
        flow("port_security", P.FOREIGN_NA, m, {**ICMPV6, "icmpv6_type": ND_NA}),
        flow("port_security", P.FOREIGN_NS, m, {**NS, "nd_options_type": ND_OPT_SLL}),
        # DHCP and RA from a VM reach no other VM: a rogue server's replies and advertisements,
        # and the requests of ports the controller does not serve (no trap flow took them).
        *(flow("port_security", P.HOST_CONFIG_DROP, Family.HOST_CONFIG_DROP, match)
          for match in (DHCP_SERVER_REPLY, DHCPV6_SERVER_REPLY, DHCP_REQUEST, {**ICMPV6, "icmpv6_type": ND_RA})),
        # A VM has no business with VLANs or with the bridge protocols of the IEEE 802.1 link-local group.
        flow("port_security", P.L2_CONTROL_DROP, m, {"vlan_vid": VLAN_PRESENT}),
        flow("port_security", P.L2_CONTROL_DROP, m, {"eth_dst": IEEE_LINK_LOCAL}),
        flow("arp_nd", P.MISS, m, {}, goto="mtu_check"),
        flow("arp_nd", P.UNSOLICITED_DROP, m, {**ICMPV6, "icmpv6_type": ND_NA, "eth_dst": MULTICAST_BIT}),
        flow("arp_nd", P.UNSOLICITED_DROP, m, {"eth_type": ETH_TYPE_ARP, "arp_op": ARP_REPLY, "eth_dst": BROADCAST}),
        # RFC 4861 7.1.1: a solicitation from the unspecified address carries no link-layer address.
        flow("arp_nd", P.INVALID_NS, m, {**NS, "ipv6_src": "::", "nd_options_type": ND_OPT_SLL}),
        # A solicitation with the asker's address that no responder took: its target is unknown.
        flow("arp_nd", P.UNKNOWN_NS_DROP, m, {**NS, "nd_options_type": ND_OPT_SLL, "eth_dst": MULTICAST_BIT}),
        flow("nd_reply", P.ANSWER, Family.ND_RESPONDER, {**ICMPV6, "icmpv6_type": ND_NA, "nd_options_type": ND_OPT_TLL},
             actions=(Move("eth_src", "ipv6_nd_tll", 48), Output(OFPP_IN_PORT))),
        flow("nd_reply", P.MISS, m, {}),
        flow("mtu_check", P.MISS, m, {}, goto="mtu_oversize"),
        flow("mtu_oversize", P.MISS, m, {}, goto="l3_route"),
        flow("l3_route", P.MISS, m, {}, goto="l2_lookup"),
        # Only routes lead to l3_neighbour: a frame no neighbour entry takes was routed to an
        # address nobody owns, whatever its network (the controller answers unreachable).
        flow("l3_neighbour", P.MISS, Family.UNREACHABLE, {}, actions=up, meter=ROUTER_METER),
        flow("l2_lookup", P.MULTICAST, m, {"eth_dst": MULTICAST_BIT}, goto="flood"),
        flow("l2_lookup", P.TUNNEL_UNKNOWN_DROP, m, {"metadata": (FROM_TUNNEL, FROM_TUNNEL)}),
        flow("l2_lookup", P.MISS, m, {}, goto="flood"),
        flow("flood", P.MISS, m, {}),
    ]
    meters = (*(Meter(no, PACKET_IN_RATE, PACKET_IN_BURST) for no in vm_ports),
              Meter(UNKNOWN_PORT_METER, PACKET_IN_RATE, PACKET_IN_BURST),
              Meter(ROUTER_METER, PACKET_IN_RATE, PACKET_IN_BURST),
              Meter(CONTROLLER_METER, HYPERVISOR_PACKET_IN_RATE, HYPERVISOR_PACKET_IN_BURST))
    return _partition(by_cookie(flows), meters=meters)


R = TypeVar("R")


def memoised_on_owner(builder: Callable[..., R]) -> Callable[..., R]:
    """Memoise a pure builder in its first argument: a port, network or hypervisor of the topology.

    The results are kept in an attribute of that object, keyed by the other arguments (set with
    ``object.__setattr__``, not through ``__dict__``, so that the object's attributes stay inline:
    see ``ofmsg._flow_message``). Every hypervisor that needs a flow of a
    port or network therefore gets the same object, encoded once (see ``ofmsg._flow_message``),
    and the results are freed with the object when the topology replaces or deletes it: the
    memory held follows the current placement, not the history of changes.
    """
    slot = f"_memo_{builder.__name__}"

    @wraps(builder)
    def memoised(owner: Any, *args: Any) -> R:
        memo: dict[tuple[Any, ...], R] | None = getattr(owner, slot, None)
        if memo is None:
            memo = {}
            object.__setattr__(owner, slot, memo)
        try:
            hit: R = memo[args]
            return hit
        except KeyError:
            value = memo[args] = builder(owner, *args)
            return value

    return memoised


@memoised_on_owner
def salted(f: Flow, salt: int) -> Flow:
    """``f`` under another cookie: one object per salt, so that it is encoded once, like ``f``."""
    return replace(f, salt=salt)


@memoised_on_owner
def tunnel_bucket(remote: Hypervisor, vni: int, tunnel_ofport: int) -> tuple[Action, ...]:
    return (SetField("tunnel_id", vni), SetField(f"tun_ipv{remote.tunnel_ip.version}_dst", str(remote.tunnel_ip)),
            Output(tunnel_ofport))


@memoised_on_owner
def local_port_flows(port: Port, ofport: int, vni: int) -> Flows:
    """Classification, port security and delivery of a VM port on its own hypervisor."""
    fam = Family.PORT_SECURITY

    def allow(match: dict[str, Any]) -> Flow:
        return flow("port_security", P.OWN_ADDRESS, fam, {"in_port": ofport, **match}, vni, goto="arp_nd")

    flows = [
        flow("ingress", P.CLASSIFY, Family.PORT_IN, {"in_port": ofport, "eth_src": port.mac}, vni,
             metadata=(vni, NETWORK_MASK), goto="port_security"),
        flow("l2_lookup", P.EXACT, Family.L2_LOCAL, {"metadata": (vni, VNI_MASK), "eth_dst": port.mac}, vni,
             actions=(Output(ofport),)),
    ]
    for ip in port.ipv4():
        flows.append(allow({"eth_type": ETH_TYPE_ARP, "arp_spa": str(ip), "arp_sha": port.mac}))
        flows.append(allow({"eth_type": ETH_TYPE_IPV4, "ipv4_src": str(ip)}))
    for ip6 in own_ipv6(port):
        flows.append(allow({"eth_type": ETH_TYPE_IPV6, "ipv6_src": ip6}))
        # Naming another port's MAC for its own address would redirect that address elsewhere.
        flows.extend(flow("port_security", P.OWN_NA, fam,
                          {"in_port": ofport, **ICMPV6, "icmpv6_type": ND_NA, "ipv6_nd_target": ip6,
                           "ipv6_nd_tll": tll}, vni, goto="arp_nd") for tll in (port.mac, NO_LINK_LAYER_ADDRESS))
        flows.append(flow("port_security", P.OWN_NS, fam,
                          {"in_port": ofport, **NS, "ipv6_src": ip6, "nd_options_type": ND_OPT_SLL,
                           "ipv6_nd_sll": port.mac}, vni, goto="arp_nd"))
    flows.append(allow({**ICMPV6, "ipv6_src": "::"}))
    flows.append(flow("arp_nd", P.ND_CONTROLLER, Family.ND_PROXY,
                      {"in_port": ofport, **ICMPV6, "icmpv6_type": ND_NS, "eth_dst": MULTICAST_BIT}, vni,
                      actions=(Output(OFPP_CONTROLLER),), meter=ofport))
    flows.append(flow("mtu_oversize", P.OVERSIZE, Family.OVERSIZE,
                      {"in_port": ofport, "reg0": (OVERSIZE_BIT, OVERSIZE_BIT)}, vni,
                      actions=(Output(OFPP_CONTROLLER),), meter=ofport))
    return by_cookie(flows)


@memoised_on_owner
def host_config_traps(port: Port, ofport: int, vni: int, dhcp4: bool, ra: bool) -> Flows:
    """Bring the port's DHCP requests (``dhcp4``) and Router Solicitations (``ra``) to the
    controller, through the port's meter. The DHCP trap sits in ``port_security``, ahead of the
    source check, because a DISCOVER comes from 0.0.0.0."""
    fam = Family.HOST_CONFIG_TRAP
    up = (Output(OFPP_CONTROLLER),)
    flows = []
    if dhcp4:
        flows.append(flow("port_security", P.HOST_CONFIG_TRAP, fam, {"in_port": ofport, **DHCP_REQUEST}, vni,
                          actions=up, meter=ofport))
    if ra:
        flows.append(flow("arp_nd", P.ANSWER, fam, {"in_port": ofport, **ICMPV6, "icmpv6_type": ND_RS}, vni,
                          actions=up, meter=ofport))
    return by_cookie(flows)


def own_ipv6(port: Port) -> list[str]:
    """The IPv6 addresses a port may use: its declared ones and its EUI-64 link-local address."""
    return sorted({str(ip) for ip in (*port.ipv6(), link_local(port.mac))})


@memoised_on_owner
def arp_responders(port: Port, vni: int) -> Flows:
    """Answer "who has <ip>" for each IPv4 of ``port`` inside the switch, back out of the asking port."""
    return by_cookie(flow(
        "arp_nd", P.ANSWER, Family.ARP_RESPONDER,
        {"metadata": (vni, VNI_MASK), "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST, "arp_tpa": str(ip)}, vni,
        actions=(
            Move("eth_src", "eth_dst", 48),
            SetField("eth_src", port.mac),
            SetField("arp_op", ARP_REPLY),
            Move("arp_sha", "arp_tha", 48),
            Move("arp_spa", "arp_tpa", 32),
            SetField("arp_sha", port.mac),
            SetField("arp_spa", str(ip)),
            Output(OFPP_IN_PORT),
        )) for ip in port.ipv4())


def nd_responders(mac: str, ipv6_addresses: tuple[str, ...], vni: int, family: Family = Family.ND_RESPONDER,
                  flags: int = ND_NA_SOLICITED_OVERRIDE) -> Flows:
    """Answer multicast Neighbor Solicitations for ``ipv6_addresses`` (owned by ``mac``) inside the switch.

    Each flow turns a solicitation that carries the asker's link-layer address into the solicited
    advertisement, in place: Ethernet and IPv6 addresses swapped towards the asker, the type set
    to NA with the S and O flags (``nd_reserved``), the source link-layer option retyped as the
    target link-layer option (``nd_options_type``), hop limit 255. Open vSwitch only lets a flow
    write ``nd_tll`` when its match is an advertisement, so ``nd_reply`` (one flow in
    ``base_partition``) fills it in from the new Ethernet source and sends the frame back out of
    the asking port; OVS recomputes the ICMPv6 checksum. Solicitations without that option
    (DAD probes, or a sender that left it out) never match here: they go to the controller.

    Pure and not memoised itself: a caller memoises it on the object that owns the addresses
    (``port_nd_responders`` on a port), so that every hypervisor gets the same flow objects and
    they are freed with their owner (see ``memoised_on_owner``). A router's answers carry the R
    flag too (``flags``) and their own family.
    """
    return by_cookie(flow(
        "arp_nd", P.ANSWER, family,
        {"metadata": (vni, VNI_MASK), **NS, "eth_dst": MULTICAST_BIT, "ipv6_nd_target": ip,
         "nd_options_type": ND_OPT_SLL}, vni,
        actions=(
            Move("eth_src", "eth_dst", 48),
            SetField("eth_src", mac),
            Move("ipv6_src", "ipv6_dst", 128),
            SetField("ipv6_src", ip),
            SetField("icmpv6_type", ND_NA),
            SetField("nd_reserved", flags),
            SetField("nd_options_type", ND_OPT_TLL),
            SetNwTtl(255),
        ), goto="nd_reply") for ip in ipv6_addresses)


@memoised_on_owner
def port_nd_responders(port: Port, vni: int) -> Flows:
    """``nd_responders`` for every IPv6 address of ``port``, its EUI-64 link-local one included."""
    return nd_responders(port.mac, tuple(own_ipv6(port)), vni)


@memoised_on_owner
def remote_port_flow(port: Port, host: Hypervisor, tunnel_ofport: int, vni: int) -> Flow:
    """Unicast to a MAC on another hypervisor: into the tunnel, towards that hypervisor."""
    return flow("l2_lookup", P.EXACT, Family.L2_REMOTE, {"metadata": (vni, NETWORK_MASK), "eth_dst": port.mac}, vni,
                actions=tunnel_bucket(host, vni, tunnel_ofport))


@memoised_on_owner
def tunnel_in_flow(peer: Hypervisor, tunnel_ofport: int, vni: int) -> Flow:
    return flow("ingress", P.CLASSIFY, Family.TUNNEL_IN,
                {"in_port": tunnel_ofport, f"tun_ipv{peer.tunnel_ip.version}_src": str(peer.tunnel_ip),
                 "tunnel_id": vni}, vni,
                metadata=(vni | FROM_TUNNEL, NETWORK_MASK), goto="l2_lookup")


@memoised_on_owner
def network_flows(net: Network) -> Flows:
    """Flows every hypervisor hosting ``net`` has, whatever its ports."""
    vni = net.vni
    flows = [
        flow("mtu_check", P.CHECK_MTU, Family.MTU_CHECK, {"metadata": (vni, NETWORK_MASK)}, vni,
             actions=(CheckPktLarger(mtu_frame_len(net), "reg0", 0),), goto="mtu_oversize"),
        flow("flood", P.FLOOD, Family.FLOOD, {"metadata": (vni, NETWORK_MASK)}, vni,
             actions=(ToGroup(group_id(GroupRole.FLOOD, vni)),)),
        flow("flood", P.FLOOD, Family.FLOOD, {"metadata": (vni | FROM_TUNNEL, NETWORK_MASK)}, vni,
             actions=(ToGroup(group_id(GroupRole.FLOOD_LOCAL, vni)),)),
    ]
    if net.unknown_arp == "drop":
        flows.append(flow("arp_nd", P.UNKNOWN_ARP_DROP, Family.UNKNOWN_ARP_DROP,
                          {"metadata": (vni, VNI_MASK), "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST}, vni))
    return by_cookie(flows)


def mtu_frame_len(net: Network) -> int:
    """The longest untagged frame whose IP packet fits the network's MTU: what ``mtu_check`` allows.

    ``check_pkt_larger`` counts the whole frame as the datapath holds it (Ethernet header and any
    VLAN tag, no FCS); the VXLAN tunnel carries exactly that frame.
    """
    return net.announced_mtu + ETH_HEADER_LEN


@dataclass(frozen=True)
class NetworkCommon:
    """What every host of a network (with a given tunnel port number) has in common.

    ``flows`` are the network's own flows, every member's ARP responders, every located
    member's remote flow and every host's tunnel-in flow, gathered (``gather``) but not yet
    resolved: ``clashes`` holds those that claim a shared cookie. ``own`` names, per
    hypervisor, the flows among them it must leave out (the remote flows of its own ports, the
    tunnel-in flow from itself); ``peers`` are the flood buckets towards each host, by name.
    Computed once per network and change instead of once per host.
    """

    flows: dict[int, Flow]
    clashes: Clashes
    own: dict[str, list[Flow]]
    peers: tuple[tuple[str, tuple[Action, ...]], ...]


def network_common(topo: Topology, net: Network, tunnel_ofport: int | None) -> NetworkCommon:
    memo = topo.derived(net.name)
    common = memo.get(tunnel_ofport)
    if common is None:
        common = memo[tunnel_ofport] = _network_common(topo, net, tunnel_ofport)
    return common


def _network_common(topo: Topology, net: Network, tun: int | None) -> NetworkCommon:
    vni = net.vni
    members = topo.ports_of(net.name)
    flows = dict(network_flows(net))  # the memoised mappings are shared: merged, never changed
    clashes: Clashes = {}
    for port in members:
        gather(flows, clashes, arp_responders(port, vni))
        gather(flows, clashes, port_nd_responders(port, vni))
    own: dict[str, list[Flow]] = {}
    peers: list[tuple[str, tuple[Action, ...]]] = []
    if tun is not None:
        for port in members:
            if port.hypervisor is not None:
                f = remote_port_flow(port, topo.hypervisors[port.hypervisor], tun, vni)
                gather(flows, clashes, (f,))
                own.setdefault(port.hypervisor, []).append(f)
        hosts = topo.hosts(net.name)
        for name in sorted(topo.interested(net.name)):  # routers send into the network from all of these
            peer = topo.hypervisors[name]
            f = tunnel_in_flow(peer, tun, vni)
            gather(flows, clashes, (f,))
            own.setdefault(name, []).append(f)
            if name in hosts:
                peers.append((name, tunnel_bucket(peer, vni, tun)))
    return NetworkCommon(flows, clashes, own, tuple(peers))


def network_partition(topo: Topology, view: SwitchView, net: Network) -> Partition:
    """Every flow and group ``view``'s hypervisor needs for ``net``; empty if it hosts none of it."""
    me = view.hypervisor.name
    mine = [p for p in topo.ports_on(me) if p.network == net.name]
    router = topo.router_of(net.name)
    gateway = [] if router is None else gateway_flows(topo, view, router, net)
    if not mine:
        if router is None or me not in topo.interested(net.name):
            return Partition()
        return routed_partition(topo, view, net, router, gateway)
    vni = net.vni
    common = network_common(topo, net, view.tunnel_ofport)
    flows = dict(common.flows)
    clashes = {c: set(group) for c, group in common.clashes.items()}
    for name in (me, *sorted(view.down)):  # its own ports; and no unicast towards a peer that is down
        for f in common.own.get(name, ()):
            discard(flows, clashes, f)
    if router is not None:
        gather(flows, clashes, router_source_flows(router, net.name, router_vnis(topo, router)))
        gather(flows, clashes, router_target(topo, router, net))
        gather(flows, clashes, gateway)
        if router.gateway is not None:
            gw = router.gateway.hypervisor
            route = default_route_flow(router, vni, None if gw == me else topo.hypervisors[gw], view.tunnel_ofport)
            if route is not None:
                gather(flows, clashes, (route,))
    local = sorted(((p, view.ofports[p.interface]) for p in mine
                    if p.interface is not None and p.interface in view.ofports), key=lambda x: x[1])
    ra = announces_prefixes(net)
    for port, ofport in local:
        gather(flows, clashes, local_port_flows(port, ofport, vni))
        gather(flows, clashes, host_config_traps(port, ofport, vni, dhcp_address(net, port) is not None, ra))
    buckets = [(Output(ofport),) for _, ofport in local] + [b for name, b in common.peers
                                                            if name != me and name not in view.down]
    groups = (Group(group_id(GroupRole.FLOOD, vni), tuple(buckets)),
              Group(group_id(GroupRole.FLOOD_LOCAL, vni), tuple((Output(o),) for _, o in local)))
    return _partition(resolve_clashes(flows, clashes) if clashes else flows, groups)


# --- distributed routing -------------------------------------------------------------------------

IP_ETH_TYPES = {4: ETH_TYPE_IPV4, 6: ETH_TYPE_IPV6}
IP_DST = {4: "ipv4_dst", 6: "ipv6_dst"}


def router_vnis(topo: Topology, router: Router) -> tuple[tuple[str, int], ...]:
    return tuple((n, topo.networks[n].vni) for n in router.networks)


@memoised_on_owner
def router_source_flows(router: Router, network: str, vnis: tuple[tuple[str, int], ...]) -> Flows:
    """What a hypervisor hosting ports of ``network`` needs to route their frames through ``router``.

    A route per router interface (every subnet of every network of the router), the TTL-expiry
    catch before them, a drop for anything else sent to the router's MAC, and the answers for
    the router's own addresses in ``network``: ARP and Neighbor Solicitations in the switch (a
    solicitation without the asker's link-layer address goes to the controller, as for ports).
    Keyed by the router's networks' VNIs too: the routes carry them.
    """
    vni_of = dict(vnis)
    vni = vni_of[network]
    mac = router.mac
    src = {"metadata": (vni, VNI_MASK), "eth_dst": mac}
    up = (Output(OFPP_CONTROLLER),)
    flows = [flow("l3_route", P.TTL_EXPIRED, Family.TTL_EXPIRED, {**src, "eth_type": IP_ETH_TYPES[v], "nw_ttl": 1},
                  vni, actions=up, meter=ROUTER_METER)
             for v in sorted({i.ip.version for i in router.interfaces})]
    for iface in router.interfaces:
        v, subnet = iface.ip.version, iface.ip.network
        flows.append(flow("l3_route", P.ROUTE, Family.ROUTE,
                          {**src, "eth_type": IP_ETH_TYPES[v],
                           IP_DST[v]: (str(subnet.network_address), str(subnet.netmask))}, vni,
                          actions=(DecTtl(), SetField("eth_src", mac)),
                          metadata=(vni_of[iface.network], NETWORK_MASK), goto="l3_neighbour"))
    flows.append(flow("l3_route", P.ROUTER_MAC_DROP, Family.ROUTER_DROP, src, vni))
    ipv6 = [str(i.ip.ip) for i in router.interfaces_of(network) if i.ip.version == 6]
    for iface in router.interfaces_of(network):
        if iface.ip.version == 4:
            flows += router_arp_responder(router, str(iface.ip.ip), vni)
    if ipv6:
        flows += nd_responders(mac, tuple(sorted({*ipv6, str(link_local(mac))})), vni, Family.ROUTER_ND,
                               ND_NA_ROUTER_SOLICITED_OVERRIDE).values()
    return by_cookie(flows)


def router_arp_responder(router: Router, ip: str, vni: int) -> list[Flow]:
    """Answer "who has ``ip``" (a router address) with the router's MAC, as a port's responder does."""
    return [flow("arp_nd", P.ANSWER, Family.ROUTER_ARP,
                 {"metadata": (vni, VNI_MASK), "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST, "arp_tpa": ip}, vni,
                 actions=(Move("eth_src", "eth_dst", 48), SetField("eth_src", router.mac),
                          SetField("arp_op", ARP_REPLY), Move("arp_sha", "arp_tha", 48), Move("arp_spa", "arp_tpa", 32),
                          SetField("arp_sha", router.mac), SetField("arp_spa", ip), Output(OFPP_IN_PORT)))]


@memoised_on_owner
def router_target_flows(router: Router, network: str, vni: int) -> Flows:
    """In ``l3_neighbour``, for frames routed into ``network``: the router's own addresses stop.
    Addresses no neighbour entry knows go to the controller by the table's miss flow
    (``base_partition``), one for every network."""
    return by_cookie(flow("l3_neighbour", P.NEIGHBOUR, Family.ROUTER_DROP,
                          {"metadata": (vni, VNI_MASK), "eth_type": IP_ETH_TYPES[i.ip.version],
                           IP_DST[i.ip.version]: str(i.ip.ip)}, vni)
                     for i in router.interfaces_of(network))


@memoised_on_owner
def neighbour_flows(port: Port, vni: int) -> Flows:
    """The neighbour entries of a located port: a frame routed to one of its addresses gets its MAC."""
    return by_cookie(flow("l3_neighbour", P.NEIGHBOUR, Family.NEIGHBOUR,
                          {"metadata": (vni, VNI_MASK), "eth_type": IP_ETH_TYPES[ip.version],
                           IP_DST[ip.version]: str(ip)}, vni,
                          actions=(SetField("eth_dst", port.mac),), goto="l2_lookup") for ip in port.ips)


@memoised_on_owner
def tunnelled_neighbour_flows(port: Port, host: Hypervisor, tunnel_ofport: int, vni: int) -> Flows:
    """The neighbour entries of a located port for a hypervisor that hosts no port of its network:
    each sets the port's MAC and sends the frame into the tunnel towards ``host``, in one flow.

    Where the network is hosted, ``neighbour_flows`` leave the delivery to ``l2_lookup``, whose
    flow for the port switched frames need anyway; here that second flow would serve nothing else.
    """
    return by_cookie(flow("l3_neighbour", P.NEIGHBOUR, Family.NEIGHBOUR,
                          {"metadata": (vni, VNI_MASK), "eth_type": IP_ETH_TYPES[ip.version],
                           IP_DST[ip.version]: str(ip)}, vni,
                          actions=(SetField("eth_dst", port.mac), *tunnel_bucket(host, vni, tunnel_ofport)))
                     for ip in port.ips)


def router_target(topo: Topology, router: Router, net: Network) -> dict[int, Flow]:
    """Every ``l3_neighbour`` flow of ``net``: what all hypervisors hosting a network of its router share."""
    memo = topo.derived(net.name)
    flows: dict[int, Flow] | None = memo.get("router_target")
    if flows is None:
        clashes: Clashes = {}
        flows = dict(router_target_flows(router, net.name, net.vni))
        for port in topo.ports_of(net.name):
            if port.located:
                gather(flows, clashes, neighbour_flows(port, net.vni))
        flows = memo["router_target"] = resolve_clashes(flows, clashes) if clashes else flows
    return flows


def routed_partition(topo: Topology, view: SwitchView, net: Network, router: Router,
                     gateway: Iterable[Flow] = ()) -> Partition:
    """What a hypervisor hosting another network of ``net``'s router (or its gateway), but no port
    of ``net``, needs of it: ``router_target_flows`` and, per address of a located port, a
    neighbour entry that tunnels the frame straight to the port's hypervisor
    (``tunnelled_neighbour_flows``), the same on every such hypervisor with the same tunnel port
    number and computed once per network and change; ``gateway`` adds the gateway's flows of ``net``."""
    tun = view.tunnel_ofport
    if tun is None:
        flows = dict(router_target(topo, router, net))
    else:
        memo = topo.derived(net.name)
        down = view.down  # no unicast towards a peer whose tunnel is down (BFD)
        shared: dict[int, Flow] | None = memo.get(("routed", tun, down))
        if shared is None:
            clashes: Clashes = {}
            shared = dict(router_target_flows(router, net.name, net.vni))
            for port in topo.ports_of(net.name):
                if port.hypervisor is not None and port.interface is not None and port.hypervisor not in down:
                    gather(shared, clashes,
                           tunnelled_neighbour_flows(port, topo.hypervisors[port.hypervisor], tun, net.vni))
            shared = memo[("routed", tun, down)] = resolve_clashes(shared, clashes) if clashes else shared
        flows = dict(shared)
    more: Clashes = {}
    gather(flows, more, gateway)
    return _partition(resolve_clashes(flows, more) if more else flows)


def desired_partition(topo: Topology, view: SwitchView, vni: int) -> Partition:
    if vni == 0:
        base = base_partition(view)
        uplinks = [uplink_flows(r, view.ofports[r.gateway.interface])
                   for r in topo.gateways_on(view.hypervisor.name)
                   if r.gateway is not None and r.gateway.interface in view.ofports]
        if not uplinks:
            return base
        flows, clashes = dict(base.flows), {}  # type: ignore[var-annotated]
        for more in uplinks:
            gather(flows, clashes, more)
        return Partition(resolve_clashes(flows, clashes) if clashes else flows, base.groups, base.meters)
    net = topo.network_by_vni(vni)
    return Partition() if net is None else network_partition(topo, view, net)


def hosted_vnis(topo: Topology, hypervisor: str) -> set[int]:
    """The VNIs whose flows ``hypervisor`` needs: of its networks, of networks routed with them,
    and of the networks of the routers whose gateway it is."""
    nets = {r for n in topo.networks_on(hypervisor) for r in topo.routed_networks(n)}
    nets.update(n for router in topo.gateways_on(hypervisor) for n in router.networks)
    return {topo.networks[n].vni for n in nets}



# --- the external gateway ------------------------------------------------------------------------


@memoised_on_owner
def default_route_flow(router: Router, vni: int, remote: Hypervisor | None, tunnel_ofport: int | None) -> Flow | None:
    """On a hypervisor hosting ports of the network ``vni``: IPv4 to the router's MAC that no subnet
    route took leaves through the gateway. Routed here (TTL decremented once, the router's MAC as
    source), then tunnelled to the gateway hypervisor ``remote`` with the network's own VNI, the
    destination MAC still the router's; on the gateway hypervisor itself (``remote`` None), on to
    ``gateway_out``. None while there is no tunnel port to send it through."""
    match = {"metadata": (vni, VNI_MASK), "eth_dst": router.mac, "eth_type": ETH_TYPE_IPV4}
    routed: tuple[Action, ...] = (DecTtl(), SetField("eth_src", router.mac))
    if remote is None:
        return flow("l3_route", P.DEFAULT_ROUTE, Family.DEFAULT_ROUTE, match, vni, actions=routed, goto="gateway_out")
    if tunnel_ofport is None:
        return None
    return flow("l3_route", P.DEFAULT_ROUTE, Family.DEFAULT_ROUTE, match, vni,
                actions=routed + tunnel_bucket(remote, vni, tunnel_ofport))


@memoised_on_owner
def uplink_flows(router: Router, uplink: int) -> Flows:
    """What the gateway hypervisor does with every frame from ``router``'s uplink (OpenFlow port
    ``uplink``) before it knows the network: answer ARP for the gateway and floating IPs with the
    router's MAC, bring the next hop's ARP to the controller, and send IPv4 for the gateway IP
    through the router's conntrack zone (with SNAT) to find the connection it answers."""
    gw = router.gateway
    assert gw is not None
    src = {"in_port": uplink}
    flows = [flow("ingress", P.UPLINK, Family.GATEWAY_IN, src, goto="uplink_in"),
             flow("uplink_in", P.NEXT_HOP_ARP, Family.UPLINK_ARP,
                  {**src, "eth_type": ETH_TYPE_ARP, "arp_spa": str(gw.next_hop)},
                  actions=(Output(OFPP_CONTROLLER),), meter=ROUTER_METER)]
    for ip in (str(gw.ip.ip), *(str(fip) for fip, _ in router.floating_ips)):
        flows.append(flow("uplink_in", P.UPLINK_ARP_ANSWER, Family.UPLINK_ARP,
                          {**src, "eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST, "arp_tpa": ip},
                          actions=(Move("eth_src", "eth_dst", 48), SetField("eth_src", router.mac),
                                   SetField("arp_op", ARP_REPLY), Move("arp_sha", "arp_tha", 48),
                                   Move("arp_spa", "arp_tpa", 32), SetField("arp_sha", router.mac),
                                   SetField("arp_spa", ip), Output(OFPP_IN_PORT))))
    if router.snat:
        flows.append(flow("uplink_in", P.TO_PUBLIC, Family.SNAT,
                          {**src, "eth_type": ETH_TYPE_IPV4, "ipv4_dst": str(gw.ip.ip)},
                          actions=(Ct(gateway_zone(router.mac), "uplink_nat"),)))
    return by_cookie(flows)


def _routed_in(router: Router, vni: int) -> tuple[tuple[Action, ...], tuple[int, int]]:
    """Actions and metadata of a frame from the outside routed into the network ``vni``."""
    return (DecTtl(), SetField("eth_src", router.mac)), (vni, NETWORK_MASK)


def gateway_flows(topo: Topology, view: SwitchView, router: Router, net: Network) -> list[Flow]:
    """The flows of ``net`` on its router's gateway hypervisor (none elsewhere): frames of ``net``
    tunnelled to the router's MAC from its other hosts; floating IPs out (source rewritten) and in
    (destination rewritten, routed to the port); SNAT out and un-SNAT in; the way out of the uplink
    to the next hop, once its MAC is known. The outside never reaches a port of ``net`` otherwise
    (only with SNAT off: its subnets are routed in as they are)."""
    gw = router.gateway
    me = view.hypervisor.name
    if gw is None or gw.hypervisor != me:
        return []
    vni, mac = net.vni, router.mac
    zone = gateway_zone(mac)
    uplink = view.ofports.get(gw.interface)
    tun = view.tunnel_ofport
    flows: list[Flow] = []
    if tun is not None:
        flows += [flow("ingress", P.TO_GATEWAY, Family.GATEWAY_IN,
                       {"in_port": tun, "tun_ipv4_src": str(topo.hypervisors[peer].tunnel_ip), "tunnel_id": vni,
                        "eth_dst": mac}, vni, metadata=(vni | FROM_TUNNEL, NETWORK_MASK), goto="gateway_out")
                  for peer in sorted(topo.hosts(net.name) - {me})]
    out = {"metadata": (vni, VNI_MASK), "eth_type": ETH_TYPE_IPV4}
    routed, metadata = _routed_in(router, vni)
    for fip, port_name in router.floating_ips:
        port = topo.ports.get(port_name)
        if port is None or port.network != net.name or not port.ipv4():
            continue
        for ip in port.ipv4():
            flows.append(flow("gateway_out", P.FLOATING_OUT, Family.FLOATING_IP, {**out, "ipv4_src": str(ip)}, vni,
                              actions=(SetField("ipv4_src", str(fip)),), goto="uplink_out"))
        if uplink is not None:
            flows.append(flow("uplink_in", P.TO_PUBLIC, Family.FLOATING_IP,
                              {"in_port": uplink, "eth_type": ETH_TYPE_IPV4, "ipv4_dst": str(fip)}, vni,
                              actions=(SetField("ipv4_dst", str(port.ipv4()[0])), *routed), metadata=metadata,
                              goto="l3_neighbour"))
    subnets = [i.ip.network for i in router.interfaces_of(net.name) if i.ip.version == 4]
    if router.snat:
        flows.append(flow("gateway_out", P.SNAT_OUT, Family.SNAT, out, vni,
                          actions=(Ct(zone, "uplink_out", commit=True, snat=str(gw.ip.ip)),)))
        flows += [flow("uplink_nat", P.UNSNAT, Family.SNAT,
                       {"ct_state": (CT_TRACKED | CT_REPLY, CT_TRACKED | CT_REPLY | CT_INVALID), "ct_zone": zone,
                        "eth_type": ETH_TYPE_IPV4, "ipv4_dst": (str(s.network_address), str(s.netmask))}, vni,
                       actions=routed, metadata=metadata, goto="l3_neighbour") for s in subnets]
    else:
        flows.append(flow("gateway_out", P.SNAT_OUT, Family.SNAT, out, vni, goto="uplink_out"))
        if uplink is not None:
            flows += [flow("uplink_in", P.ROUTED_IN, Family.SNAT,
                           {"in_port": uplink, "eth_type": ETH_TYPE_IPV4,
                            "ipv4_dst": (str(s.network_address), str(s.netmask))}, vni,
                           actions=routed, metadata=metadata, goto="l3_neighbour") for s in subnets]
    next_hop = view.next_hops.get((gw.interface, str(gw.next_hop)))
    if uplink is not None and next_hop is not None:
        flows.append(flow("uplink_out", P.TO_NEXT_HOP, Family.UPLINK_OUT, {"metadata": (vni, VNI_MASK)}, vni,
                          actions=(SetField("eth_src", mac), SetField("eth_dst", next_hop), Output(uplink))))
    return flows
