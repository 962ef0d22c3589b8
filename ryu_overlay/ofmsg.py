"""Turn flows and groups into OpenFlow 1.3 messages (built without a datapath) and back.

Also orders a change into one batch: groups first, then new flows, then deletions, with
barriers between, so that a flow never points at a missing group and a replaced flow is
removed only after its successor is in place (make before break). Last come flows whose
cookie the switch holds for another flow (a fingerprint collision over time, see
``flows.resolve_clashes``): the old one must be deleted by that cookie before the new one is added.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache
from typing import Any

from .compat import ERICSSON_OXM_CLASS, framework_module, ofproto as ofp, parser
from .flows import Action, CheckPktLarger, Ct, DecTtl, Flow, Group, Meter, Move, Output, SetField, SetNwTtl, ToGroup
from .pipeline import CT_COMMIT, NAT_SRC, TABLE_IDS

ALL_COOKIE_BITS = 0xFFFFFFFFFFFFFFFF
NX_FIELDS_WITH_PREREQUISITES = frozenset({bytes.fromhex("00013a01")})  # NXM_NX_IP_TTL (nw_ttl)
type_desc = framework_module("lib.type_desc")
NXAST_CHECK_PKT_LARGER = 49


class NXActionCheckPktLarger(parser.NXAction):  # type: ignore[misc,name-defined]
    """Open vSwitch's check_pkt_larger, which Ryu 4.34 lacks (``struct nx_action_check_pkt_larger``
    in OVS's lib/ofp-actions.c): after the Nicira header and subtype, ``pkt_len`` and the bit
    ``offset`` (16 bits each), the destination field's NXM/OXM header, zeros up to 24 bytes.
    """

    _subtype = NXAST_CHECK_PKT_LARGER
    _fmt_str = "!HH"

    def __init__(self, pkt_len: int, dst: str, offset: int, type_: Any = None, len_: Any = None,
                 experimenter: Any = None, subtype: Any = None) -> None:
        super().__init__()
        self.pkt_len = pkt_len
        self.dst = dst
        self.offset = offset

    @classmethod
    def parser(cls, buf: bytes) -> NXActionCheckPktLarger:
        pkt_len, offset = struct.unpack_from(cls._fmt_str, buf, 0)
        n, _ = ofp.oxm_parse_header(buf, struct.calcsize(cls._fmt_str))
        return cls(pkt_len, ofp.oxm_to_user_header(n), offset)

    def serialize_body(self) -> bytearray:
        data = bytearray(struct.pack(self._fmt_str, self.pkt_len, self.offset))
        ofp.oxm_serialize_header(ofp.oxm_from_user_header(self.dst), data, len(data))
        return data + bytes(6)


parser.NXAction.register(NXActionCheckPktLarger)  # so that flows read back from OVS decode it


def encode_action(action: Action) -> Any:
    if isinstance(action, Output):
        return parser.OFPActionOutput(action.port, ofp.OFPCML_NO_BUFFER)
    if isinstance(action, SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, Move):
        return parser.NXActionRegMove(src_field=action.src, dst_field=action.dst, n_bits=action.n_bits)
    if isinstance(action, SetNwTtl):
        return parser.OFPActionSetNwTtl(action.ttl)
    if isinstance(action, ToGroup):
        return parser.OFPActionGroup(action.group_id)
    if isinstance(action, DecTtl):
        return parser.OFPActionDecNwTtl()
    if isinstance(action, CheckPktLarger):
        return NXActionCheckPktLarger(action.pkt_len, action.dst, action.offset)
    if isinstance(action, Ct):
        rewrite = {} if action.snat is None else {"range_ipv4_min": action.snat, "range_ipv4_max": action.snat}
        nat = parser.NXActionNAT(flags=NAT_SRC if action.snat else 0, **rewrite)
        return parser.NXActionCT(flags=CT_COMMIT if action.commit else 0, zone_src="", zone_ofs_nbits=action.zone,
                                 recirc_table=TABLE_IDS[action.table], alg=0, actions=[nat])
    raise TypeError(f"cannot encode {action!r}")


def decode_action(action: Any) -> Action | None:
    """Our form of an action read back from a switch, or None if it is not one we build."""
    if isinstance(action, parser.OFPActionOutput):
        return Output(action.port)
    if isinstance(action, parser.OFPActionSetField):
        return SetField(action.key, action.value)
    if isinstance(action, parser.OFPActionSetNwTtl):
        return SetNwTtl(action.nw_ttl)
    if isinstance(action, parser.OFPActionGroup):
        return ToGroup(action.group_id)
    return None


class FlowAdd(parser.OFPFlowMod):  # type: ignore[misc,name-defined]
    """An OFPFC_ADD flow-mod for one ``Flow`` that serialises without Ryu's match machinery.

    Building an ``OFPMatch`` costs Ryu about 100 µs, which would cap a cold start near 10k
    flows/s. This message packs the match fields and actions with ``struct`` (TLV headers
    taken from Ryu once per field name) and encodes each ``Flow`` once: every switch that
    needs the flow is sent the same bytes. ``match`` and ``instructions`` are still real Ryu
    objects, built on first read, for the simulator and the tests; unit tests check the bytes
    equal those of the plain Ryu message for every flow and group of the test scenario.
    """

    version, msg_type, command = ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, ofp.OFPFC_ADD
    cookie_mask = idle_timeout = hard_timeout = out_port = out_group = flags = 0
    buffer_id = ofp.OFP_NO_BUFFER
    datapath = None
    # Every flow-add carries xid 0, so that its bytes are the same for every switch and encoded
    # once per flow. An error from the switch still names the flow: it quotes the start of the
    # refused message, cookie included.
    xid = 0

    def __init__(self, f: Flow) -> None:  # one per flow sent to a switch: nothing more than needed
        self.flow = f

    @property
    def buf(self) -> bytes:
        return _flow_message(self.flow)

    @property
    def msg_len(self) -> int:
        return len(self.buf)

    @property
    def cookie(self) -> int:
        return self.flow.cookie

    @property
    def table_id(self) -> int:
        return TABLE_IDS[self.flow.table]

    @property
    def priority(self) -> int:
        return self.flow.priority

    @cached_property
    def match(self) -> Any:
        return ryu_match(self.flow)

    @cached_property
    def instructions(self) -> list[Any]:
        return _ryu_instructions(self.flow)

    def serialize(self) -> None:
        """Nothing to do: ``buf`` is the flow's own encoding."""


def _ryu_instructions(f: Flow) -> list[Any]:
    instructions: list[Any] = []
    if f.meter is not None:
        instructions.append(parser.OFPInstructionMeter(f.meter, ofp.OFPIT_METER))
    if f.actions:
        instructions.append(parser.OFPInstructionActions(
            ofp.OFPIT_APPLY_ACTIONS, [encode_action(a) for a in f.actions]))
    if f.metadata is not None:
        instructions.append(parser.OFPInstructionWriteMetadata(*f.metadata))
    if f.goto is not None:
        instructions.append(parser.OFPInstructionGotoTable(TABLE_IDS[f.goto]))
    return instructions


def ryu_match(f: Flow) -> Any:
    """Ryu's ``OFPMatch`` of a flow, its fields in the order the encoder sends them (``_oxm_layout``)."""
    fields = sorted(f.match, key=lambda kv: _oxm_layout(kv[0], isinstance(kv[1], tuple))[0])
    return parser.OFPMatch(_ordered_fields=[ofp.oxm_normalize_user(k, v) for k, v in fields])


@cache  # one entry per field name (and masked or not) that the pipeline uses
def _oxm_layout(name: str, masked: bool) -> tuple[int, bytes, Any]:
    """A match field's sort key, its TLV header (Ryu's bytes), and its value type.

    The key is Ryu's (the OXM type), which puts prerequisites first (``eth_type`` before
    ``ipv4_src``), except for the Ericsson ND fields: their class (0x1000) sorts before
    OpenFlow's basic one (0x8000), and OVS checks each field's prerequisites against those
    that came before it (``OFPBMC_BAD_PREREQ``), so they go last.
    """
    num, kind = ofp.oxm_get_field_info_by_name(name)
    size = kind.size
    buf = bytearray()
    length = ofp.oxm_serialize(num, bytes(size), bytes(size) if masked else None, buf, 0)
    key = ofp.oxm_from_user_header(name)
    key = key[0] if isinstance(key, tuple) else key
    if isinstance(num, int) and num >> 7 == ERICSSON_OXM_CLASS:
        key += 1 << 40
    return key, bytes(buf[:length - size * (1 + masked)]), kind


def _field_bytes(kind: Any, value: Any) -> bytes:
    if isinstance(value, int):
        return value.to_bytes(kind.size, "big")
    if kind is type_desc.MacAddr:
        raw = bytes.fromhex(value.replace(":", ""))
    elif kind is type_desc.IPv4Addr:
        raw = socket.inet_pton(socket.AF_INET, value)
    elif kind is type_desc.IPv6Addr:
        raw = socket.inet_pton(socket.AF_INET6, value)
    else:
        raw = kind.from_user(value)
    if len(raw) != kind.size:
        raise ValueError(f"{value!r} is not a {kind.__name__}")
    return raw


def _oxm(name: str, value: Any) -> tuple[int, bytes]:
    """One match field as (Ryu's sort key, its OXM TLV bytes), without building an ``OFPMatch``."""
    masked = isinstance(value, tuple)
    key, header, kind = _oxm_layout(name, masked)
    if masked:
        return key, header + _field_bytes(kind, value[0]) + _field_bytes(kind, value[1])
    return key, header + _field_bytes(kind, value)


@lru_cache(maxsize=1 << 12)  # the hot ones: outputs, tunnel buckets, reg moves; a miss costs a few µs
def _action_bytes(action: Action) -> bytes:
    if isinstance(action, Output):
        return struct.pack(ofp.OFP_ACTION_OUTPUT_PACK_STR, ofp.OFPAT_OUTPUT, ofp.OFP_ACTION_OUTPUT_SIZE,
                           action.port, ofp.OFPCML_NO_BUFFER)
    if isinstance(action, ToGroup):
        return struct.pack(ofp.OFP_ACTION_GROUP_PACK_STR, ofp.OFPAT_GROUP, ofp.OFP_ACTION_GROUP_SIZE,
                           action.group_id)
    if isinstance(action, SetField):
        tlv = _oxm(action.field, action.value)[1]
        length = 4 + len(tlv) + (-(4 + len(tlv)) % 8)
        return struct.pack("!HH", ofp.OFPAT_SET_FIELD, length) + tlv + bytes(length - 4 - len(tlv))
    buf = bytearray()
    encode_action(action).serialize(buf, 0)
    return bytes(buf)


def _flow_message(f: Flow) -> bytes:
    """The whole flow-mod (xid 0), encoded once and kept on the ``Flow`` object itself.

    It is an attribute of the object, so it is shared by every switch whose desired state holds
    that same object (the builders in ``flows`` hand the same object to every hypervisor) and
    freed with it: no cache outlives the placement. It is set and read as an attribute, never
    through ``f.__dict__``: CPython keeps an instance's attributes inline until its ``__dict__``
    is asked for, and a materialised dictionary would be one more object on each of the hundreds
    of thousands of flows a large placement holds.
    """
    msg: bytes | None = getattr(f, "_ofp13_flow_add", None)
    if msg is None:
        msg = _encode_flow(f)
        object.__setattr__(f, "_ofp13_flow_add", msg)
    return msg


def _encode_flow(f: Flow) -> bytes:
    """The flow-mod's bytes. Match fields go in Ryu's order, except the Nicira fields that have
    prerequisites (``nw_ttl``), which go last: Open vSwitch checks each field's prerequisites
    (``eth_type``) as it reads it, and Ryu's order would put ``nw_ttl`` first (OFPBMC_BAD_PREREQ)."""
    fields = sorted((_oxm(name, value) for name, value in f.match),
                    key=lambda kv: (kv[1][:4] in NX_FIELDS_WITH_PREREQUISITES, kv[0]))
    oxms = b"".join(tlv for _, tlv in fields)
    match_len = 4 + len(oxms)
    match = struct.pack("!HH", ofp.OFPMT_OXM, match_len) + oxms + bytes(-match_len % 8)
    instructions = b""
    if f.meter is not None:
        instructions += struct.pack(ofp.OFP_INSTRUCTION_METER_PACK_STR, ofp.OFPIT_METER, 8, f.meter)
    if f.actions:
        actions = b"".join(_action_bytes(a) for a in f.actions)
        instructions += struct.pack(ofp.OFP_INSTRUCTION_ACTIONS_PACK_STR, ofp.OFPIT_APPLY_ACTIONS,
                                    8 + len(actions)) + actions
    if f.metadata is not None:
        instructions += struct.pack(ofp.OFP_INSTRUCTION_WRITE_METADATA_PACK_STR, ofp.OFPIT_WRITE_METADATA, 24,
                                    *f.metadata)
    if f.goto is not None:
        instructions += struct.pack(ofp.OFP_INSTRUCTION_GOTO_TABLE_PACK_STR, ofp.OFPIT_GOTO_TABLE, 8,
                                    TABLE_IDS[f.goto])
    body = struct.pack("!" + ofp._OFP_FLOW_MOD_PACK_STR0, f.cookie, 0, TABLE_IDS[f.table], ofp.OFPFC_ADD, 0, 0,
                       f.priority, ofp.OFP_NO_BUFFER, 0, 0, 0) + match + instructions
    header = struct.pack(ofp.OFP_HEADER_PACK_STR, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD,
                         ofp.OFP_HEADER_SIZE + len(body), 0)
    return header + body


def flow_delete(cookie: int) -> Any:
    """Delete exactly the flow(s) carrying ``cookie``, in every table."""
    return parser.OFPFlowMod(
        None, cookie=cookie, cookie_mask=ALL_COOKIE_BITS, table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch())


class GroupMod(parser.OFPGroupMod):  # type: ignore[misc,name-defined]
    """An all-buckets group-mod that serialises by concatenation, as ``FlowAdd`` does.

    ``buckets`` is still the list of Ryu objects, built on first read, for the simulator.
    """

    version, msg_type, type = ofp.OFP_VERSION, ofp.OFPT_GROUP_MOD, ofp.OFPGT_ALL
    datapath = msg_len = xid = buf = None

    def __init__(self, group: Group, command: int) -> None:
        self.group = group
        self.command = command
        self.group_id = group.group_id

    @cached_property
    def buckets(self) -> list[Any]:
        return [parser.OFPBucket(actions=[encode_action(a) for a in bucket]) for bucket in self.group.buckets]

    def serialize(self) -> None:
        body = struct.pack(ofp.OFP_GROUP_MOD_PACK_STR, self.command, self.type, self.group_id)
        for bucket in self.group.buckets:
            actions = b"".join(_action_bytes(a) for a in bucket)
            body += struct.pack(ofp.OFP_BUCKET_PACK_STR, ofp.OFP_BUCKET_SIZE + len(actions), 0, ofp.OFPP_ANY,
                                ofp.OFPG_ANY) + actions
        self.msg_len = ofp.OFP_HEADER_SIZE + len(body)
        self.buf = bytearray(struct.pack(ofp.OFP_HEADER_PACK_STR, ofp.OFP_VERSION, ofp.OFPT_GROUP_MOD,
                                         self.msg_len, self.xid or 0)) + body


def group_delete(gid: int) -> Any:
    return parser.OFPGroupMod(None, ofp.OFPGC_DELETE, ofp.OFPGT_ALL, gid, [])


def decode_group(stats: Any) -> Group | None:
    """Our form of a group read back from a switch (a group-desc entry or a group-mod), or None if
    one of its actions is not one we build."""
    if isinstance(stats, LazyGroupDescStats):
        buckets = [tuple(_action_from_bytes(raw) for raw in actions) for actions in stats.raw_buckets()]
    else:
        buckets = [tuple(decode_action(a) for a in bucket.actions) for bucket in stats.buckets]
    if any(None in actions for actions in buckets):
        return None
    return Group(stats.group_id, tuple(buckets))  # type: ignore[arg-type]


@lru_cache(maxsize=1 << 14)  # the same actions recur in the groups of many switches (a peer's tunnel bucket)
def _action_from_bytes(raw: bytes) -> Action | None:
    try:
        return decode_action(parser.OFPAction.parser(raw, 0))
    except (AssertionError, struct.error):  # an action type Ryu does not know, or a short one
        return None


def meter_mod(meter: Meter, command: int) -> Any:
    band = parser.OFPMeterBandDrop(rate=meter.rate, burst_size=meter.burst)
    return parser.OFPMeterMod(None, command=command, flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST,
                              meter_id=meter.meter_id, bands=[band])


def meter_delete(meter_id: int) -> Any:
    return parser.OFPMeterMod(None, command=ofp.OFPMC_DELETE, flags=0, meter_id=meter_id, bands=[])


def decode_meter(stats: Any) -> Meter | None:
    bands = [b for b in stats.bands if isinstance(b, parser.OFPMeterBandDrop)]
    if len(bands) != len(stats.bands) or len(bands) != 1:
        return None
    return Meter(stats.meter_id, bands[0].rate, bands[0].burst_size)


def packet_out(in_port: int, data: bytes, actions: list[Action]) -> Any:
    return parser.OFPPacketOut(None, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                               actions=[encode_action(a) for a in actions], data=data)


def wire(msg: Any, datapath: Any) -> bytes:
    """The bytes of ``msg``, serialised (and given an xid) only the first time it is sent."""
    if msg.buf is None:
        msg.datapath = datapath
        if msg.xid is None:
            datapath.set_xid(msg)
        msg.serialize()
    return bytes(msg.buf)


def family_counter_request(family: int) -> Any:
    """Ask for the summed packet counters of every flow of one family (the cookie's top byte)."""
    return parser.OFPAggregateStatsRequest(None, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                           family << 56, 0xFF << 56, parser.OFPMatch())


def role_request(master: bool, generation: int) -> Any:
    """Ask to be the switch's MASTER or a SLAVE; ``generation`` must not be lower than any the switch saw."""
    role = ofp.OFPCR_ROLE_MASTER if master else ofp.OFPCR_ROLE_SLAVE
    return parser.OFPRoleRequest(None, role, generation)


def barrier() -> Any:
    return parser.OFPBarrierRequest(None)


def sync_requests() -> list[Any]:
    """What the controller asks a switch that (re)connects: its ports, flows, groups and meters."""
    return [
        parser.OFPPortDescStatsRequest(None, 0),
        parser.OFPFlowStatsRequest(None, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()),
        parser.OFPGroupDescStatsRequest(None, 0),
        parser.OFPMeterConfigStatsRequest(None, 0, ofp.OFPM_ALL),
    ]


class LazyFlowStats(parser.OFPFlowStats):  # type: ignore[misc,name-defined]
    """An entry of a flow-stats reply whose match and instructions are decoded when first read.

    Reading a switch back needs only each flow's cookie, but Ryu's parser decodes every match
    field and action of every flow (into address objects): that was most of the CPU a new master
    spent taking over switches (docs/scale-out.md). Any other reader still sees every attribute.
    """

    HEAD = struct.Struct(ofp.OFP_FLOW_STATS_0_PACK_STR)

    @classmethod
    def parser(cls, buf: bytes, offset: int) -> LazyFlowStats:
        entry = cls.__new__(cls)
        (entry.length, entry.table_id, entry.duration_sec, entry.duration_nsec, entry.priority, entry.idle_timeout,
         entry.hard_timeout, entry.flags, entry.cookie, entry.packet_count,
         entry.byte_count) = cls.HEAD.unpack_from(buf, offset)
        entry._at = (buf, offset)
        return entry

    @cached_property
    def _decoded(self) -> Any:
        return parser.OFPFlowStats.parser(*self._at)

    @property
    def match(self) -> Any:
        return self._decoded.match

    @property
    def instructions(self) -> Any:
        return self._decoded.instructions


class LazyGroupDescStats(parser.OFPGroupDescStats):  # type: ignore[misc,name-defined]
    """A group-desc entry whose buckets are decoded when first read. ``decode_group`` reads its
    actions from the bytes instead, decoding each distinct action once (a new master reads back
    every group of every switch it takes over)."""

    HEAD = struct.Struct(ofp.OFP_GROUP_DESC_STATS_PACK_STR)
    BUCKET = struct.Struct(ofp.OFP_BUCKET_PACK_STR)
    ACTION = struct.Struct(ofp.OFP_ACTION_HEADER_PACK_STR)

    @classmethod
    def parser(cls, buf: bytes, offset: int) -> LazyGroupDescStats:
        entry = cls.__new__(cls)
        entry.length, entry.type, entry.group_id = cls.HEAD.unpack_from(buf, offset)
        entry._at = (buf, offset)
        return entry

    @cached_property
    def buckets(self) -> Any:
        return parser.OFPGroupDescStats.parser(*self._at).buckets

    def raw_buckets(self) -> list[list[bytes]]:
        """Each bucket's actions, as bytes."""
        buf, offset = self._at
        end, at = offset + self.length, offset + self.HEAD.size
        out = []
        while at < end:
            bucket_len = self.BUCKET.unpack_from(buf, at)[0]
            actions, pos, bucket_end = [], at + self.BUCKET.size, at + bucket_len
            while pos < bucket_end:
                action_len = self.ACTION.unpack_from(buf, pos)[1]
                actions.append(bytes(buf[pos:pos + action_len]))
                pos += max(action_len, 8)
            out.append(actions)
            at += max(bucket_len, self.BUCKET.size)
        return out


def install_lazy_stats() -> None:
    """Make Ryu parse flow-stats and group-desc replies into ``LazyFlowStats`` and
    ``LazyGroupDescStats`` (idempotent)."""
    parser.OFPFlowStatsReply.cls_stats_body_cls = LazyFlowStats
    parser.OFPGroupDescStatsReply.cls_stats_body_cls = LazyGroupDescStats


@dataclass
class Changes:
    """One switch's difference between desired and installed state."""

    flow_adds: list[Flow] = field(default_factory=list)
    flow_deletes: list[int] = field(default_factory=list)
    flow_replaces: list[Flow] = field(default_factory=list)  # cookie installed, but for another flow
    group_adds: list[Group] = field(default_factory=list)
    group_mods: list[Group] = field(default_factory=list)
    group_deletes: list[int] = field(default_factory=list)
    meter_adds: list[Meter] = field(default_factory=list)
    meter_mods: list[Meter] = field(default_factory=list)
    meter_deletes: list[int] = field(default_factory=list)

    def batch(self) -> list[Any]:
        """The messages in an order that never exposes a half-applied state (see module doc)."""
        first = [meter_mod(m, ofp.OFPMC_ADD) for m in self.meter_adds]
        first += [meter_mod(m, ofp.OFPMC_MODIFY) for m in self.meter_mods]
        first += [GroupMod(g, ofp.OFPGC_ADD) for g in self.group_adds]
        first += [GroupMod(g, ofp.OFPGC_MODIFY) for g in self.group_mods]
        adds = [FlowAdd(f) for f in self.flow_adds]
        removals = [flow_delete(c) for c in self.flow_deletes]
        removals += [flow_delete(f.cookie) for f in self.flow_replaces]
        removals += [group_delete(g) for g in self.group_deletes]
        removals += [meter_delete(m) for m in self.meter_deletes]
        replacements = [FlowAdd(f) for f in self.flow_replaces]
        msgs: list[Any] = []
        for step in (first, adds, removals, replacements):
            if step:
                msgs += [*step, barrier()]
        return msgs

