"""A packet-level OpenFlow 1.3 pipeline simulator, and the ``ryu-overlay trace`` command.

``SimSwitch`` applies the flow-mods, group-mods and meter-mods the controller produced (the
same Ryu message objects it sends) and answers what a packet does: which tables it visits,
where it is output and with which tunnel metadata, whether it goes to the controller or is
dropped. ``SimFabric`` joins switches by their tunnel addresses so a frame can be followed
from one VM, through a tunnel, to another. ``SimNet`` drives a ``Controller`` through the
switch handshake and keeps one SimSwitch per hypervisor in step with what it sends.

Packets are mappings from OXM field names (as Ryu spells them: ``eth_src``, ``arp_tpa``,
``tunnel_id``, ``tun_ipv4_dst``...) to values in Ryu's user form (MAC and IP strings, ints).
``frame_len``, the length of the Ethernet frame without FCS, is what ``check_pkt_larger``
compares; a packet without one is a small frame (``SMALL_FRAME``).
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .compat import ofproto as ofp, parser
from .ofmsg import NXActionCheckPktLarger
from .pipeline import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    IP_PROTO_ICMPV6,
    IP_PROTO_UDP,
    ND_NA,
    ND_NS,
    ND_OPT_SLL,
    ND_OPT_TLL,
    TABLE_NAMES,
)

CT_NEW, CT_ESTABLISHED, CT_REPLY, CT_TRACKED = 0x01, 0x02, 0x08, 0x20
CT_STATE_NAMES = ((CT_NEW, "new"), (CT_ESTABLISHED, "est"), (CT_REPLY, "rpl"), (CT_TRACKED, "trk"))
L4_PORTS = (("tcp_src", "tcp_dst"), ("udp_src", "udp_dst"))

Packet = dict[str, Any]

MAC_FIELDS = {"eth_src", "eth_dst", "arp_sha", "arp_tha", "ipv6_nd_sll", "ipv6_nd_tll"}
IPV4_FIELDS = {"arp_spa", "arp_tpa", "ipv4_src", "ipv4_dst", "tun_ipv4_src", "tun_ipv4_dst"}
IPV6_FIELDS = {"ipv6_src", "ipv6_dst", "ipv6_nd_target", "tun_ipv6_src", "tun_ipv6_dst"}
ND_FIELDS = {"ipv6_nd_target", "ipv6_nd_sll", "ipv6_nd_tll", "nd_reserved", "nd_options_type"}
ND_OPTION_FIELDS = {ND_OPT_SLL: "ipv6_nd_sll", ND_OPT_TLL: "ipv6_nd_tll"}
PIPELINE_FIELDS = {"metadata", "tunnel_id", "ct_state", "ct_zone", *(f"reg{i}" for i in range(8))}
ETH_ARP, ETH_IPV4, ETH_IPV6 = ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6
PREREQUISITES: dict[str, Mapping[str, tuple[int, ...]]] = {
    **{f: {"eth_type": (ETH_ARP,)} for f in ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")},
    **{f: {"eth_type": (ETH_IPV4,)} for f in ("ipv4_src", "ipv4_dst")},
    **{f: {"eth_type": (ETH_IPV6,)} for f in ("ipv6_src", "ipv6_dst")},
    "ip_proto": {"eth_type": (ETH_IPV4, ETH_IPV6)},
    "nw_ttl": {"eth_type": (ETH_IPV4, ETH_IPV6)},
    "icmpv6_type": {"eth_type": (ETH_IPV6,), "ip_proto": (IP_PROTO_ICMPV6,)},
    **{f: {"eth_type": (ETH_IPV6,), "ip_proto": (IP_PROTO_ICMPV6,), "icmpv6_type": (ND_NS, ND_NA)}
       for f in ("ipv6_nd_target", "nd_reserved", "nd_options_type")},
    "ipv6_nd_sll": {"eth_type": (ETH_IPV6,), "ip_proto": (IP_PROTO_ICMPV6,), "icmpv6_type": (ND_NS,)},
    "ipv6_nd_tll": {"eth_type": (ETH_IPV6,), "ip_proto": (IP_PROTO_ICMPV6,), "icmpv6_type": (ND_NA,)},
    **{f: {"eth_type": (ETH_IPV4, ETH_IPV6), "ip_proto": (IP_PROTO_UDP,)} for f in ("udp_src", "udp_dst")},
}
MAX_HOPS = 8
SMALL_FRAME = 64
DEFAULT_TTL = 64  # what dec_ttl finds in an IP packet given without nw_ttl


class _TtlExpired(Exception):
    """dec_ttl met a TTL of 0 or 1: Open vSwitch stops the pipeline (no controller asked for
    OFPR_INVALID_TTL packet-ins), so the packet is dropped."""


class SimError(Exception):
    """A message a real switch would refuse, or a pipeline that is ambiguous."""


def to_int(name: str, value: Any) -> int:
    if isinstance(value, int):
        return value
    if name in MAC_FIELDS:
        return int(str(value).replace(":", ""), 16)
    if name in IPV4_FIELDS or name in IPV6_FIELDS:
        return int(ipaddress.ip_address(value))
    raise SimError(f"cannot interpret {name}={value!r}")


def from_int(name: str, value: int) -> Any:
    if name in MAC_FIELDS:
        raw = f"{value:012x}"
        return ":".join(raw[i:i + 2] for i in range(0, 12, 2))
    if name in IPV4_FIELDS:
        return str(ipaddress.IPv4Address(value))
    if name in IPV6_FIELDS:
        return str(ipaddress.IPv6Address(value))
    return value


def _norm_match(match: Any) -> dict[str, tuple[int, int | None]]:
    out: dict[str, tuple[int, int | None]] = {}
    for name, value in match.items():
        if isinstance(value, tuple):
            out[name] = (to_int(name, value[0]), to_int(name, value[1]))
        else:
            out[name] = (to_int(name, value), None)
    return out


def _check_prerequisites(match: Mapping[str, tuple[int, int | None]], fields: Iterable[str] | None = None,
                         what: str = "match on") -> None:
    for name in match if fields is None else fields:
        for need, allowed in PREREQUISITES.get(name, {}).items():
            have = match.get(need)
            if have is None or have[1] is not None or have[0] not in allowed:
                raise SimError(f"{what} {name} needs {need} in {allowed}")


def _fields_touched(instructions: Iterable[Any]) -> set[str]:
    """The fields a flow's actions write or copy from: OVS checks their prerequisites against the
    flow's match alone (not as earlier actions changed the packet), and refuses the flow if unmet."""
    touched: set[str] = set()
    for inst in instructions:
        for action in getattr(inst, "actions", ()):
            if isinstance(action, parser.OFPActionSetField):
                touched.add(action.key)
            elif isinstance(action, parser.NXActionRegMove):
                touched |= {action.src_field, action.dst_field}
    return touched


def nd_option_type(pkt: Mapping[str, Any]) -> int:
    """What OVS reads as ``nd_options_type``: the type of the link-layer address option, 0 if none."""
    if "nd_options_type" in pkt:
        return int(pkt["nd_options_type"])
    return next((kind for kind, name in ND_OPTION_FIELDS.items() if name in pkt), 0)


@dataclass
class Entry:
    table_id: int
    priority: int
    cookie: int
    match: dict[str, tuple[int, int | None]]
    instructions: list[Any]
    packets: int = 0

    def matches(self, pkt: Packet) -> bool:
        for name, (value, mask) in self.match.items():
            if name in ND_FIELDS and pkt.get("icmpv6_code", 0) != 0:
                have = 0  # Open vSwitch reads no ND fields from a message whose code is not 0
            elif name == "nd_options_type":
                have = nd_option_type(pkt)
            elif name in pkt:
                have = to_int(name, pkt[name])
            elif name in PIPELINE_FIELDS or name in ND_OPTION_FIELDS.values():
                have = 0  # Open vSwitch reads an absent link-layer address option as 00:00:00:00:00:00
            else:
                return False
            if mask is None:
                if have != value:
                    return False
            elif have & mask != value & mask:
                return False
        return True


@dataclass(frozen=True)
class Output:
    port: int
    packet: Mapping[str, Any]


@dataclass(frozen=True)
class PacketIn:
    table_id: int
    cookie: int
    packet: Mapping[str, Any]


@dataclass(frozen=True)
class Step:
    table_id: int
    table: str
    priority: int | None
    cookie: int | None
    match: str
    actions: str


@dataclass(frozen=True)
class SimResult:
    outputs: tuple[Output, ...]
    packet_ins: tuple[PacketIn, ...]
    trace: tuple[Step, ...]
    meters: tuple[int, ...]

    @property
    def dropped(self) -> bool:
        return not self.outputs and not self.packet_ins

    def ports(self) -> set[int]:
        return {o.port for o in self.outputs}


@dataclass
class _Run:
    outputs: list[Output] = field(default_factory=list)
    packet_ins: list[PacketIn] = field(default_factory=list)
    trace: list[Step] = field(default_factory=list)
    meters: list[int] = field(default_factory=list)


Tuple = tuple[int, str, str, int, int]  # ip_proto, source, destination, source port, destination port


@dataclass(frozen=True)
class Connection:
    """A committed conntrack entry: the tuple its first packet had, and the source it was given."""

    original: Tuple
    snat: str | None


def _tuple(pkt: Mapping[str, Any]) -> Tuple:
    ports = next(((int(pkt.get(a, 0)), int(pkt.get(b, 0))) for a, b in L4_PORTS if a in pkt or b in pkt), (0, 0))
    return (int(pkt.get("ip_proto", 0)), str(pkt.get("ipv4_src", "")), str(pkt.get("ipv4_dst", "")), *ports)


def _reply_of(t: Tuple) -> Tuple:
    return (t[0], t[2], t[1], t[4], t[3])


class SimSwitch:
    """One switch's flow tables, groups, meters, and its connection tracker (``conntrack``, per
    zone: the tuples a committed connection's packets have in either direction, as Linux and the
    userspace datapath key them; ICMP is keyed without its identifier)."""

    def __init__(self, table_names: Mapping[int, str] | None = None) -> None:
        self.table_names = dict(TABLE_NAMES if table_names is None else table_names)
        self.entries: list[Entry] = []
        self.groups: dict[int, Any] = {}
        self.meters: dict[int, Any] = {}
        self.conntrack: dict[int, dict[Tuple, tuple[Connection, bool]]] = {}

    # --- applying messages ------------------------------------------------------------------

    def apply(self, msgs: Iterable[Any]) -> None:
        for msg in msgs:
            if isinstance(msg, parser.OFPFlowMod):
                self._flow_mod(msg)
            elif isinstance(msg, parser.OFPGroupMod):
                self._group_mod(msg)
            elif isinstance(msg, parser.OFPMeterMod):
                self._meter_mod(msg)

    def _flow_mod(self, msg: Any) -> None:
        match = _norm_match(msg.match)
        if msg.command == ofp.OFPFC_ADD:
            _check_prerequisites(match)
            _check_prerequisites(match, _fields_touched(msg.instructions), "action on")
            if _nats(msg.instructions) and match.get("eth_type", (0, None)) not in ((ETH_IPV4, None), (ETH_IPV6, None)):
                raise SimError("ct with nat needs an IP eth_type in the match (OVS refuses the flow)")
            for inst in msg.instructions:
                if isinstance(inst, parser.OFPInstructionGotoTable) and inst.table_id <= msg.table_id:
                    raise SimError(f"goto_table:{inst.table_id} from table {msg.table_id} goes backwards")
                if isinstance(inst, parser.OFPInstructionMeter) and inst.meter_id not in self.meters:
                    raise SimError(f"flow uses meter {inst.meter_id}, which does not exist (OVS refuses it)")
            entry = Entry(msg.table_id, msg.priority, msg.cookie, match, list(msg.instructions))
            missing = _groups_used(entry) - set(self.groups)
            if missing:
                raise SimError(f"flow uses group(s) {sorted(missing)}, which do not exist (OVS refuses it)")
            self.entries = [e for e in self.entries
                            if not (e.table_id == msg.table_id and e.priority == msg.priority and e.match == match)]
            self.entries.append(entry)
        elif msg.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
            if msg.out_port != ofp.OFPP_ANY or msg.out_group != ofp.OFPG_ANY:
                # Ryu's defaults are 0, and OVS then deletes only flows that output to port 0: nothing.
                raise SimError("delete filtered by out_port/out_group is not simulated; use OFPP_ANY/OFPG_ANY")
            strict = msg.command == ofp.OFPFC_DELETE_STRICT

            def doomed(e: Entry) -> bool:
                if msg.table_id != ofp.OFPTT_ALL and e.table_id != msg.table_id:
                    return False
                if e.cookie & msg.cookie_mask != msg.cookie & msg.cookie_mask:
                    return False
                if strict:
                    return e.priority == msg.priority and e.match == match
                return all(e.match.get(k) == v for k, v in match.items())

            self.entries = [e for e in self.entries if not doomed(e)]
        else:
            raise SimError(f"flow-mod command {msg.command} is not simulated")

    def _group_mod(self, msg: Any) -> None:
        if msg.command == ofp.OFPGC_ADD:
            if msg.group_id in self.groups:
                raise SimError(f"group {msg.group_id} exists")
            self.groups[msg.group_id] = msg
        elif msg.command == ofp.OFPGC_MODIFY:
            if msg.group_id not in self.groups:
                raise SimError(f"group {msg.group_id} does not exist")
            self.groups[msg.group_id] = msg
        elif msg.command == ofp.OFPGC_DELETE:
            gone = set(self.groups) if msg.group_id == ofp.OFPG_ALL else {msg.group_id}
            for gid in gone:
                self.groups.pop(gid, None)
            self.entries = [e for e in self.entries if not _groups_used(e) & gone]

    def _meter_mod(self, msg: Any) -> None:
        if msg.command == ofp.OFPMC_DELETE:
            self.meters.pop(msg.meter_id, None)
        elif msg.command == ofp.OFPMC_ADD and msg.meter_id in self.meters:
            raise SimError(f"meter {msg.meter_id} exists")
        else:
            self.meters[msg.meter_id] = msg

    def flows(self, table_id: int | None = None) -> list[Entry]:
        return [e for e in self.entries if table_id is None or e.table_id == table_id]

    # --- processing packets -----------------------------------------------------------------

    def process(self, packet: Mapping[str, Any]) -> SimResult:
        run = _Run()
        self._table(0, dict(packet), run)
        return SimResult(tuple(run.outputs), tuple(run.packet_ins), tuple(run.trace), tuple(run.meters))

    def _table(self, table_id: int, pkt: Packet, run: _Run) -> None:
        name = self.table_names.get(table_id, str(table_id))
        hits = [e for e in self.entries if e.table_id == table_id and e.matches(pkt)]
        if not hits:
            run.trace.append(Step(table_id, name, None, None, "miss", "drop"))
            return
        best = max(e.priority for e in hits)
        top = [e for e in hits if e.priority == best]
        if len(top) > 1:
            raise SimError(f"{len(top)} flows of priority {best} in table {name} match {pkt}")
        entry = top[0]
        entry.packets += 1
        run.trace.append(Step(table_id, name, entry.priority, entry.cookie, _fmt_match(entry.match),
                              _fmt_instructions(entry.instructions)))
        goto = None
        for inst in entry.instructions:
            if isinstance(inst, parser.OFPInstructionMeter):
                if inst.meter_id not in self.meters:
                    raise SimError(f"meter {inst.meter_id} does not exist")
                run.meters.append(inst.meter_id)
            elif isinstance(inst, parser.OFPInstructionActions) and inst.type == ofp.OFPIT_APPLY_ACTIONS:
                try:
                    self._actions(inst.actions, pkt, run, table_id, entry.cookie)
                except _TtlExpired:
                    run.trace.append(Step(table_id, name, None, None, "dec_ttl", "TTL expired: drop"))
                    return
            elif isinstance(inst, parser.OFPInstructionWriteMetadata):
                old = pkt.get("metadata", 0)
                pkt["metadata"] = (old & ~inst.metadata_mask) | (inst.metadata & inst.metadata_mask)
            elif isinstance(inst, parser.OFPInstructionGotoTable):
                goto = inst.table_id
            else:
                raise SimError(f"instruction {inst} is not simulated")
        if goto is not None:
            self._table(goto, pkt, run)

    def _actions(self, actions: Iterable[Any], pkt: Packet, run: _Run, table_id: int, cookie: int) -> None:
        for action in actions:
            if isinstance(action, parser.OFPActionOutput):
                self._output(action.port, pkt, run, table_id, cookie)
            elif isinstance(action, parser.OFPActionSetField):
                if action.key == "nd_options_type":
                    _retype_nd_option(pkt, action.value)
                pkt[action.key] = action.value
            elif isinstance(action, parser.OFPActionSetNwTtl):
                pkt["nw_ttl"] = action.nw_ttl
            elif isinstance(action, parser.NXActionRegMove):
                src = to_int(action.src_field, pkt.get(action.src_field, 0))
                bits = (src >> action.src_ofs) & ((1 << action.n_bits) - 1)
                dst_old = to_int(action.dst_field, pkt.get(action.dst_field, 0))
                mask = ((1 << action.n_bits) - 1) << action.dst_ofs
                pkt[action.dst_field] = from_int(action.dst_field, (dst_old & ~mask) | (bits << action.dst_ofs))
            elif isinstance(action, parser.OFPActionDecNwTtl):
                if pkt.get("eth_type") not in (ETH_IPV4, ETH_IPV6):
                    continue  # OVS ignores dec_ttl on other frames
                ttl = int(pkt.get("nw_ttl", DEFAULT_TTL))
                if ttl <= 1:
                    raise _TtlExpired()
                pkt["nw_ttl"] = ttl - 1
            elif isinstance(action, NXActionCheckPktLarger):
                larger = int(pkt.get("frame_len", SMALL_FRAME) > action.pkt_len)
                old = to_int(action.dst, pkt.get(action.dst, 0))
                pkt[action.dst] = (old & ~(1 << action.offset)) | (larger << action.offset)
            elif isinstance(action, parser.NXActionCT):
                self._ct(action, pkt, run, table_id)
            elif isinstance(action, parser.OFPActionGroup):
                group = self.groups.get(action.group_id)
                if group is None:
                    raise SimError(f"group {action.group_id} does not exist")
                if group.type != ofp.OFPGT_ALL:
                    raise SimError(f"group type {group.type} is not simulated")
                for bucket in group.buckets:
                    self._actions(bucket.actions, dict(pkt), run, table_id, cookie)
            else:
                raise SimError(f"action {action} is not simulated")

    def _ct(self, action: Any, pkt: Packet, run: _Run, table_id: int) -> None:
        """Conntrack with NAT: the copy that goes on (in ``recirc_table``) carries ``ct_state`` and
        ``ct_zone`` and the NAT rewrite, as the userspace datapath's does."""
        if action.zone_src:
            raise SimError("ct with a zone taken from a field is not simulated")
        zone = action.zone_ofs_nbits
        nat = next((a for a in action.actions if isinstance(a, parser.NXActionNAT)), None)
        conns = self.conntrack.setdefault(zone, {})
        out = dict(pkt)
        key = _tuple(pkt)
        known = conns.get(key)
        before = (out.get("ipv4_src"), out.get("ipv4_dst"))
        if known is not None:
            conn, reply = known
            state = CT_TRACKED | CT_ESTABLISHED | (CT_REPLY if reply else 0)
            if nat is not None and conn.snat is not None:
                if reply:
                    out["ipv4_dst"] = conn.original[1]
                else:
                    out["ipv4_src"] = conn.snat
        else:
            state = CT_TRACKED | CT_NEW
            snat = None
            if nat is not None and nat.flags & 1 and nat.range_ipv4_min:
                snat = out["ipv4_src"] = nat.range_ipv4_min
            if action.flags & 1:  # commit
                conn = Connection(key, snat)
                translated = key if snat is None else (key[0], snat, *key[2:])
                conns[key] = (conn, False)
                conns[_reply_of(translated)] = (conn, True)
        out["ct_state"], out["ct_zone"] = state, zone
        flags = "+" + "+".join(name for bit, name in CT_STATE_NAMES if state & bit)
        after = (out.get("ipv4_src"), out.get("ipv4_dst"))
        rewrite = "".join(f", {f} {a} -> {b}" for f, a, b in zip(("ipv4_src", "ipv4_dst"), before, after, strict=True)
                          if a != b)
        name = self.table_names.get(table_id, str(table_id))
        run.trace.append(Step(table_id, name, None, None, "conntrack", f"zone {zone}: {flags}{rewrite}"))
        if action.recirc_table != ofp.OFPTT_ALL:
            self._table(action.recirc_table, out, run)
        else:
            pkt.update(out)

    @staticmethod
    def _output(port: int, pkt: Packet, run: _Run, table_id: int, cookie: int) -> None:
        if port == ofp.OFPP_CONTROLLER:
            run.packet_ins.append(PacketIn(table_id, cookie, dict(pkt)))
        elif port == ofp.OFPP_IN_PORT:
            run.outputs.append(Output(pkt["in_port"], dict(pkt)))
        elif port != pkt.get("in_port"):  # OpenFlow never sends a frame back where it came from
            run.outputs.append(Output(port, dict(pkt)))


def _retype_nd_option(pkt: Packet, new: int) -> None:
    """OVS rewrites the type of the first ND option in place: its address now reads as the new kind."""
    old = nd_option_type(pkt)
    if old == 0:
        raise SimError("set_field nd_options_type on a message without a link-layer address option")
    if old != new and old in ND_OPTION_FIELDS:
        value = pkt.pop(ND_OPTION_FIELDS[old], None)
        if new in ND_OPTION_FIELDS and value is not None:
            pkt[ND_OPTION_FIELDS[new]] = value


def _nats(instructions: Iterable[Any]) -> bool:
    return any(isinstance(a, parser.NXActionCT) and any(isinstance(n, parser.NXActionNAT) for n in a.actions)
               for inst in instructions for a in getattr(inst, "actions", ()))


def _groups_used(entry: Entry) -> set[int]:
    return {a.group_id for inst in entry.instructions if isinstance(inst, parser.OFPInstructionActions)
            for a in inst.actions if isinstance(a, parser.OFPActionGroup)}


def _fmt_match(match: Mapping[str, tuple[int, int | None]]) -> str:
    parts = []
    for name, (value, mask) in sorted(match.items()):
        text = str(from_int(name, value)) if name not in PIPELINE_FIELDS else hex(value)
        if mask is not None:
            text += "/" + (str(from_int(name, mask)) if name not in PIPELINE_FIELDS else hex(mask))
        parts.append(f"{name}={text}")
    return ",".join(parts) or "any"


def _fmt_action(action: Any) -> str:
    if isinstance(action, parser.OFPActionOutput):
        return {ofp.OFPP_IN_PORT: "output:IN_PORT", ofp.OFPP_CONTROLLER: "output:CONTROLLER"}.get(
            action.port, f"output:{action.port}")
    if isinstance(action, parser.OFPActionSetField):
        value = hex(action.value) if action.key in PIPELINE_FIELDS else action.value
        return f"set_field:{value}->{action.key}"
    if isinstance(action, parser.NXActionRegMove):
        return f"move:{action.src_field}->{action.dst_field}"
    if isinstance(action, parser.OFPActionGroup):
        return f"group:{action.group_id:#x}"
    if isinstance(action, NXActionCheckPktLarger):
        return f"check_pkt_larger({action.pkt_len})->{action.dst}[{action.offset}]"
    if isinstance(action, parser.OFPActionSetNwTtl):
        return f"mod_nw_ttl:{action.nw_ttl}"
    if isinstance(action, parser.OFPActionDecNwTtl):
        return "dec_ttl"
    if isinstance(action, parser.NXActionCT):
        parts = ["commit"] if action.flags & 1 else []
        parts.append(f"zone={action.zone_ofs_nbits}")
        for nat in action.actions:
            if isinstance(nat, parser.NXActionNAT):
                parts.append(f"nat(src={nat.range_ipv4_min})" if nat.flags & 1 else "nat")
        if action.recirc_table != ofp.OFPTT_ALL:
            parts.append(f"table={TABLE_NAMES.get(action.recirc_table, action.recirc_table)}")
        return f"ct({','.join(parts)})"
    return type(action).__name__


def _fmt_instructions(instructions: Iterable[Any]) -> str:
    parts: list[str] = []
    for inst in instructions:
        if isinstance(inst, parser.OFPInstructionMeter):
            parts.append(f"meter:{inst.meter_id}")
        elif isinstance(inst, parser.OFPInstructionActions):
            parts.extend(_fmt_action(a) for a in inst.actions)
        elif isinstance(inst, parser.OFPInstructionWriteMetadata):
            parts.append(f"write_metadata:{inst.metadata:#x}/{inst.metadata_mask:#x}")
        elif isinstance(inst, parser.OFPInstructionGotoTable):
            parts.append(f"goto_table:{TABLE_NAMES.get(inst.table_id, inst.table_id)}")
    return ",".join(parts) or "drop"


# --- several hypervisors ------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery(Output):
    """An output of the last switch a frame reached, to one of its ports."""

    switch: str


@dataclass(frozen=True)
class Hop:
    switch: str
    result: SimResult


@dataclass(frozen=True)
class FabricResult:
    deliveries: tuple[Delivery, ...]
    tunnelled: tuple[tuple[str, str | None, int, str], ...]  # (from, to or None if lost, tunnel_id, tun_dst)
    hops: tuple[Hop, ...]

    @property
    def dropped(self) -> bool:
        return not self.deliveries and not self.tunnelled and not self.packet_ins()

    def packet_ins(self) -> list[tuple[str, PacketIn]]:
        return [(h.switch, p) for h in self.hops for p in h.result.packet_ins]

    def at(self, switch: str) -> set[int]:
        return {d.port for d in self.deliveries if d.switch == switch}


@dataclass
class _Member:
    switch: SimSwitch
    tunnel_ip: str
    tunnel_ofport: int | None


class SimFabric:
    """Switches joined by an ideal underlay: a tunnel output reaches the switch owning tun_dst."""

    def __init__(self) -> None:
        self.members: dict[str, _Member] = {}

    def add_switch(self, name: str, switch: SimSwitch, tunnel_ip: str, tunnel_ofport: int | None) -> None:
        self.members[name] = _Member(switch, tunnel_ip, tunnel_ofport)

    def send(self, name: str, packet: Mapping[str, Any]) -> FabricResult:
        deliveries: list[Delivery] = []
        tunnelled: list[tuple[str, str | None, int, str]] = []
        hops: list[Hop] = []
        queue: list[tuple[str, Packet, int]] = [(name, dict(packet), 0)]
        by_ip = {m.tunnel_ip: n for n, m in self.members.items()}
        while queue:
            here, pkt, depth = queue.pop(0)
            if depth > MAX_HOPS:
                raise SimError("frame looped through tunnels")
            member = self.members[here]
            result = member.switch.process(pkt)
            hops.append(Hop(here, result))
            for out in result.outputs:
                if out.port != member.tunnel_ofport:
                    deliveries.append(Delivery(out.port, out.packet, here))
                    continue
                dst = str(out.packet.get("tun_ipv4_dst", out.packet.get("tun_ipv6_dst", "")))
                vni = int(out.packet.get("tunnel_id", 0))
                there = by_ip.get(dst)
                tunnelled.append((here, there, vni, dst))
                if there is None:
                    continue
                inner = {k: v for k, v in out.packet.items()
                         if k not in PIPELINE_FIELDS and not k.startswith("tun_")}
                inner.update(in_port=self.members[there].tunnel_ofport, tunnel_id=vni)
                inner["tun_ipv6_src" if ":" in member.tunnel_ip else "tun_ipv4_src"] = member.tunnel_ip
                queue.append((there, inner, depth + 1))
        return FabricResult(tuple(deliveries), tuple(tunnelled), tuple(hops))


class SimNet:
    """A ``Controller`` with one simulated switch per hypervisor, kept in step with what it sends."""

    def __init__(self, controller: Any, ofports: Mapping[str, Mapping[str, int]]) -> None:
        self.controller = controller
        self.ofports = {hv: dict(p) for hv, p in ofports.items()}
        self.switches: dict[str, SimSwitch] = {}
        self.fabric = SimFabric()
        for hv in ofports:
            self.connect(hv)

    def connect(self, hv: str) -> list[Any]:
        """Connect (or reconnect) ``hv``'s switch as an empty one; return what the controller sent."""
        c = self.controller
        h = c.topo.hypervisors[hv]
        sw = self.switches[hv] = SimSwitch()
        c.switch_connected(h.dpid)
        msgs: list[Any] = []
        for batches in (c.ports_reply(h.dpid, self.ofports[hv], False), c.flows_reply(h.dpid, [], False),
                        c.groups_reply(h.dpid, [], False), c.meters_reply(h.dpid, [], False)):
            msgs += batches.get(h.dpid, [])
        sw.apply(msgs)
        self.fabric.add_switch(hv, sw, str(h.tunnel_ip), self.ofports[hv].get(h.tunnel_port))
        return msgs

    def apply(self, batches: Mapping[int, list[Any]]) -> None:
        by_dpid = {h.dpid: name for name, h in self.controller.topo.hypervisors.items()}
        for dpid, msgs in batches.items():
            name = by_dpid.get(dpid)
            if name in self.switches:
                self.switches[name].apply(msgs)

    def send(self, hv: str, packet: Mapping[str, Any]) -> FabricResult:
        return self.fabric.send(hv, packet)


# --- the command ---------------------------------------------------------------------------------

SHORTHANDS: dict[str, dict[str, int]] = {
    "arp": {"eth_type": ETH_ARP},
    "ip": {"eth_type": ETH_IPV4},
    "ipv6": {"eth_type": ETH_IPV6},
    "icmp": {"eth_type": ETH_IPV4, "ip_proto": 1},
    "icmp6": {"eth_type": ETH_IPV6, "ip_proto": 58},
    "tcp": {"eth_type": ETH_IPV4, "ip_proto": 6},
    "udp": {"eth_type": ETH_IPV4, "ip_proto": 17},
}
KNOWN_FIELDS = MAC_FIELDS | IPV4_FIELDS | IPV6_FIELDS | PIPELINE_FIELDS | {
    "in_port", "eth_type", "vlan_vid", "arp_op", "ip_proto", "icmpv6_type", "icmpv6_code", "tcp_src", "tcp_dst",
    "udp_src", "udp_dst", "nd_options_type", "nd_reserved", "nw_ttl", "frame_len"}


def parse_packet_spec(spec: str, interfaces: Mapping[str, int] | None = None) -> Packet:
    """``in_port=tapA1,eth_src=..,eth_dst=..,arp,arp_op=1,arp_tpa=10.1.0.2`` -> a packet."""
    pkt: Packet = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        if item in SHORTHANDS:
            pkt.update(SHORTHANDS[item])
            continue
        name, sep, raw = item.partition("=")
        if not sep or name not in KNOWN_FIELDS:
            raise ValueError(f"unknown field or shorthand {item!r}")
        if name == "in_port" and interfaces is not None and raw in interfaces:
            pkt[name] = interfaces[raw]
        elif name in MAC_FIELDS | IPV4_FIELDS | IPV6_FIELDS:
            try:
                pkt[name] = from_int(name, to_int(name, raw))
            except (ValueError, SimError):
                raise ValueError(f"bad value for {name}: {raw!r}") from None
        else:
            try:
                pkt[name] = int(raw, 0)
            except ValueError:
                raise ValueError(f"bad value for {name}: {raw!r}") from None
    if "in_port" not in pkt:
        raise ValueError("the packet needs an in_port")
    return pkt


ASSUMED_NEXT_HOP_MAC = "00:00:5e:00:53:01"  # RFC 7042's documentation range
DELIVERY_FIELDS = ("eth_src", "eth_dst", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "nw_ttl")


def format_fabric(result: FabricResult) -> str:
    lines: list[str] = []
    for hop in result.hops:
        lines.append(f"== {hop.switch} ==")
        for step in hop.result.trace:
            if step.priority is None and step.match == "miss":
                lines.append(f"  {step.table_id} {step.table}: no flow matches -> drop")
            elif step.priority is None:
                lines.append(f"  {step.table_id} {step.table}: {step.match}: {step.actions}")
            else:
                lines.append(f"  {step.table_id} {step.table}: priority {step.priority}, cookie {step.cookie:#018x}")
                lines.append(f"      match   {step.match}")
                lines.append(f"      actions {step.actions}")
        for pin in hop.result.packet_ins:
            lines.append(f"  -> packet-in to the controller (table {pin.table_id})")
    for src, dst, vni, ip in result.tunnelled:
        lines.append(f"tunnel {src} -> {dst or 'nobody'} (tun_id={vni}, tun_dst={ip})")
    for d in result.deliveries:
        shown = ", ".join(f"{k}={d.packet[k]}" for k in DELIVERY_FIELDS if k in d.packet)
        if shown:
            lines.append(f"leaves {d.switch} port {d.port} as {shown}")
    for d in result.deliveries:
        lines.append(f"delivered on {d.switch} port {d.port}")
    if not result.deliveries and not result.packet_ins():
        lines.append("dropped")
    return "\n".join(lines)


def assumed_ofports(controller: Any, overrides: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Port numbers per hypervisor: tunnel port 1, then its ports' interfaces and its routers'
    uplinks by name, unless given."""
    out: dict[str, dict[str, int]] = {}
    for name, hv in controller.topo.hypervisors.items():
        ifaces = sorted({p.interface for p in controller.topo.ports_on(name) if p.interface} |
                        {r.gateway.interface for r in controller.topo.gateways_on(name) if r.gateway is not None})
        ports = {hv.tunnel_port: 1, **{i: n for n, i in enumerate(ifaces, start=2)}}
        ports.update(overrides.get(name, {}))
        out[name] = ports
    return out


def port_numbers(controller: Any, live: Mapping[str, Mapping[str, int] | None],
                 overrides: Mapping[str, Mapping[str, int]]) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Each hypervisor's port numbers and where they came from: the switch (``live``), else guessed.

    ``--ofport`` overrides apply on top of either.
    """
    guessed = assumed_ofports(controller, {})
    out: dict[str, dict[str, int]] = {}
    sources: dict[str, str] = {}
    for name in controller.topo.hypervisors:
        reported = live.get(name)
        out[name] = dict(guessed[name] if reported is None else reported)
        sources[name] = "guessed" if reported is None else "switch"
        if overrides.get(name):
            out[name].update(overrides[name])
            sources[name] += " + --ofport"
    return out, sources


class RestSourceError(Exception):
    """The controller's REST API could not be read."""


def _get(url: str, path: str, token: str | None) -> Any:
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url.rstrip("/") + path,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise RestSourceError(f"GET {url.rstrip('/')}{path}: HTTP {err.code} {err.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise RestSourceError(f"GET {url.rstrip('/')}{path}: {err}") from None


def controller_from_rest(url: str, token: str | None = None) -> tuple[Any, dict[str, dict[str, int] | None]]:
    """A ``Controller`` (in memory) holding the live controller's placement, and each switch's port numbers.

    The port numbers are ``GET /v1/hypervisors``' ``ofports``: None for a switch not connected.
    """
    from .controller import Controller
    from .store import SqliteStore

    hvs = _get(url, "/v1/hypervisors", token)["hypervisors"]
    nets = _get(url, "/v1/networks", token)["networks"]
    ports = _get(url, "/v1/ports", token)["ports"]
    controller = Controller(SqliteStore(":memory:"))
    for h in hvs:
        controller.put_hypervisor(h["name"], {k: h[k] for k in ("dpid", "tunnel_ip", "tunnel_port")})
    for n in nets:
        controller.put_network(n["name"], {k: n[k] for k in ("vni", "tenant", "subnets", "mtu", "unknown_arp")})
    for p in ports:
        controller.put_port(p["name"], {k: p[k] for k in ("network", "mac", "ips", "hypervisor", "interface")})
    for r in _get(url, "/v1/routers", token)["routers"]:
        body = {k: r[k] for k in ("tenant", "interfaces", "gateway", "snat", "floating_ips")}
        controller.put_router(r["name"], body, mac=r["mac"])
    return controller, {h["name"]: h.get("ofports") for h in hvs}


def main(argv: list[str]) -> int:
    from .controller import Controller
    from .store import SqliteStore

    ap = argparse.ArgumentParser(
        prog="ryu-overlay trace",
        description="Follow a packet through the flows the controller wants on a hypervisor "
                    "(and through tunnels to others), computed from the placement: read from the live "
                    "controller's REST API (--url), with the switches' real port numbers, or from its "
                    "database file (--db), with guessed port numbers.")
    ap.add_argument("hypervisor", help="where the packet enters")
    ap.add_argument("packet", help="e.g. in_port=tapA1,eth_src=02:aa:00:00:00:01,eth_dst=ff:ff:ff:ff:ff:ff,"
                                   "arp,arp_op=1,arp_spa=10.1.0.1,arp_tpa=10.1.0.2 (in_port may be an interface; "
                                   "frame_len=N gives the frame's length, default 64)")
    ap.add_argument("--db", default="./ryu-overlay.db", help="the controller's SQLite file")
    ap.add_argument("--url", help="the running controller's REST API, e.g. http://127.0.0.1:8080: placement "
                                  "and port numbers of connected switches come from there instead of --db")
    ap.add_argument("--token", help="bearer token for --url (default: $RYU_OVERLAY_REST_TOKEN)")
    ap.add_argument("--ofport", action="append", default=[], metavar="HV:IFACE=N",
                    help="a port number (default: the switch's, with --url and a connected switch; otherwise "
                         "tunnel port 1, then interfaces in name order from 2)")
    ap.add_argument("--then", nargs=2, action="append", default=[], metavar=("HYPERVISOR", "PACKET"),
                    help="then trace another packet through the same switches: a reply finds the connection "
                         "that an earlier packet committed in conntrack (SNAT)")
    ap.add_argument("--next-hop-mac", default=ASSUMED_NEXT_HOP_MAC,
                    help="the MAC assumed for every gateway's next hop, which only the live switch learns "
                         f"(default {ASSUMED_NEXT_HOP_MAC}, a documentation MAC)")
    args = ap.parse_args(argv)
    overrides: dict[str, dict[str, int]] = {}
    for item in args.ofport:
        try:
            where, number = item.split("=")
            hv, iface = where.split(":")
            overrides.setdefault(hv, {})[iface] = int(number)
        except ValueError:
            ap.error(f"--ofport wants HV:IFACE=N, not {item!r}")
    if args.url:
        import os

        try:
            controller, live = controller_from_rest(args.url, args.token or os.environ.get("RYU_OVERLAY_REST_TOKEN"))
        except RestSourceError as exc:
            ap.error(str(exc))
        where = args.url
    else:
        controller, live, where = Controller(SqliteStore(args.db)), {}, args.db
    if args.hypervisor not in controller.topo.hypervisors:
        ap.error(f"no hypervisor {args.hypervisor} in {where}")
    ofports, sources = port_numbers(controller, live, overrides)
    net = SimNet(controller, ofports)
    packets = []
    for hv, spec in [(args.hypervisor, args.packet), *args.then]:
        if hv not in ofports:
            ap.error(f"no hypervisor {hv} in {where}")
        try:
            packets.append((hv, parse_packet_spec(spec, ofports[hv])))
        except ValueError as exc:
            ap.error(str(exc))
    for hv, ports in ofports.items():
        numbers = ", ".join(f"{i}={n}" for i, n in sorted(ports.items(), key=lambda x: x[1]))
        print(f"port numbers of {hv} ({sources[hv]}): {numbers}")
    for router in controller.topo.routers.values():
        gw = router.gateway
        if gw is not None:
            net.apply(controller.learn_next_hop(gw.hypervisor, gw.interface, str(gw.next_hop), args.next_hop_mac))
            print(f"next hop {gw.next_hop} of router {router.name} ({gw.hypervisor}/{gw.interface}) "
                  f"assumed at {args.next_hop_mac}")
    for n, (hv, packet) in enumerate(packets):
        if n:
            print(f"--- then, on {hv}:")
        print(format_fabric(net.send(hv, packet)))
    return 0
