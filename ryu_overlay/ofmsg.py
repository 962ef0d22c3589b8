"""Turn flows and groups into OpenFlow 1.3 messages (built without a datapath) and back.

Also orders a change into one batch: groups first, then new flows, then deletions, with
barriers between, so that a flow never points at a missing group and a replaced flow is
removed only after its successor is in place (make before break).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from .compat import ofproto as ofp, parser
from .flows import Action, Flow, Group, Meter, Move, Output, SetField, ToGroup
from .pipeline import TABLE_IDS

ALL_COOKIE_BITS = 0xFFFFFFFFFFFFFFFF


def encode_action(action: Action) -> Any:
    if isinstance(action, Output):
        return parser.OFPActionOutput(action.port, ofp.OFPCML_NO_BUFFER)
    if isinstance(action, SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, Move):
        return parser.NXActionRegMove(src_field=action.src, dst_field=action.dst, n_bits=action.n_bits)
    if isinstance(action, ToGroup):
        return parser.OFPActionGroup(action.group_id)
    raise TypeError(f"cannot encode {action!r}")


def decode_action(action: Any) -> Action | None:
    """Our form of an action read back from a switch, or None if it is not one we build."""
    if isinstance(action, parser.OFPActionOutput):
        return Output(action.port)
    if isinstance(action, parser.OFPActionSetField):
        return SetField(action.key, action.value)
    if isinstance(action, parser.OFPActionGroup):
        return ToGroup(action.group_id)
    return None


class FlowAdd(parser.OFPFlowMod):  # type: ignore[misc,name-defined]
    """An OFPFC_ADD flow-mod for one ``Flow`` that serialises without Ryu's match machinery.

    Building an ``OFPMatch`` costs Ryu about 100 µs, which would cap a cold start near 10k
    flows/s. This message encodes each distinct match field and action once (through Ryu,
    so the bytes are Ryu's) and then only concatenates. ``match`` and ``instructions`` are
    still real Ryu objects, built on first read, for the simulator and the tests; a unit
    test checks the bytes equal those of the plain Ryu message.
    """

    def __init__(self, f: Flow) -> None:
        parser.MsgBase.__init__(self, None)
        self.flow = f
        self.cookie = f.cookie
        self.cookie_mask = 0
        self.table_id = TABLE_IDS[f.table]
        self.command = ofp.OFPFC_ADD
        self.idle_timeout = self.hard_timeout = 0
        self.priority = f.priority
        self.buffer_id = ofp.OFP_NO_BUFFER
        self.out_port = self.out_group = 0
        self.flags = 0

    @cached_property
    def match(self) -> Any:
        return parser.OFPMatch(**dict(self.flow.match))

    @cached_property
    def instructions(self) -> list[Any]:
        return _ryu_instructions(self.flow)

    def serialize(self) -> None:
        body = _flow_body(self.flow)
        self.msg_len = ofp.OFP_HEADER_SIZE + len(body)
        self.buf = bytearray(struct.pack(ofp.OFP_HEADER_PACK_STR, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD,
                                         self.msg_len, self.xid or 0)) + body


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


ENCODE_CACHE = 1 << 20  # distinct match fields / flows kept encoded: a 3,000-hypervisor fleet has ~300k flows


@lru_cache(maxsize=ENCODE_CACHE)
def _oxm(name: str, value: Any) -> tuple[int, bytes]:
    """One match field as (Ryu's sort key, its OXM TLV bytes)."""
    match = parser.OFPMatch(**{name: value})
    buf = bytearray()
    match.serialize(buf, 0)
    num = ofp.oxm_from_user(name, value)[0]
    return (num[0] if isinstance(num, tuple) else num), bytes(buf[4:match.length])


@lru_cache(maxsize=1 << 16)
def _action_bytes(action: Action) -> bytes:
    buf = bytearray()
    encode_action(action).serialize(buf, 0)
    return bytes(buf)


def _flow_body(f: Flow) -> bytes:
    """Encoded once per ``FlowAdd``: the cached message keeps its serialised bytes."""
    fields = sorted((_oxm(name, value) for name, value in f.match), key=lambda kv: kv[0])
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
    head = struct.pack("!" + ofp._OFP_FLOW_MOD_PACK_STR0, f.cookie, 0, TABLE_IDS[f.table], ofp.OFPFC_ADD, 0, 0,
                       f.priority, ofp.OFP_NO_BUFFER, 0, 0, 0)
    return head + match + instructions


@lru_cache(maxsize=ENCODE_CACHE)
def flow_add(f: Flow) -> FlowAdd:
    """The ADD message for ``f``, shared by every switch that needs the same flow (read-only)."""
    return FlowAdd(f)


def flow_delete(cookie: int) -> Any:
    """Delete exactly the flow(s) carrying ``cookie``, in every table."""
    return parser.OFPFlowMod(
        None, cookie=cookie, cookie_mask=ALL_COOKIE_BITS, table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch())


@lru_cache(maxsize=1 << 16)
def group_mod(group: Group, command: int) -> Any:
    """Shared by every switch that needs the same group (read-only, serialised once)."""
    buckets = [parser.OFPBucket(actions=[encode_action(a) for a in bucket]) for bucket in group.buckets]
    return parser.OFPGroupMod(None, command, ofp.OFPGT_ALL, group.group_id, buckets)


def group_delete(gid: int) -> Any:
    return parser.OFPGroupMod(None, ofp.OFPGC_DELETE, ofp.OFPGT_ALL, gid, [])


def decode_group(stats: Any) -> Group | None:
    buckets = []
    for bucket in stats.buckets:
        actions = tuple(decode_action(a) for a in bucket.actions)
        if None in actions:
            return None
        buckets.append(actions)
    return Group(stats.group_id, tuple(buckets))  # type: ignore[arg-type]


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
    """The bytes of ``msg``. A shared (cached) message is serialised only the first time."""
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


@dataclass
class Changes:
    """One switch's difference between desired and installed state."""

    flow_adds: list[Flow] = field(default_factory=list)
    flow_deletes: list[int] = field(default_factory=list)
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
        first += [group_mod(g, ofp.OFPGC_ADD) for g in self.group_adds]
        first += [group_mod(g, ofp.OFPGC_MODIFY) for g in self.group_mods]
        adds = [flow_add(f) for f in self.flow_adds]
        removals = [flow_delete(c) for c in self.flow_deletes]
        removals += [group_delete(g) for g in self.group_deletes]
        removals += [meter_delete(m) for m in self.meter_deletes]
        msgs: list[Any] = []
        for step in (first, adds, removals):
            if step:
                msgs += step + [barrier()]
        return msgs

