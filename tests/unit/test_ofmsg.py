"""The fast flow-mod encoder must produce exactly the bytes Ryu would; replies read back lazily must
decode to what Ryu decodes."""

from __future__ import annotations

import struct
from typing import Any

from ryu_overlay.compat import framework_module, ofproto as ofp, parser
from ryu_overlay.ofmsg import (
    FlowAdd,
    GroupMod,
    LazyFlowStats,
    LazyGroupDescStats,
    _ryu_instructions,
    decode_group,
    install_lazy_stats,
    ryu_match,
)
from ryu_overlay.pipeline import TABLE_IDS
from ryu_overlay.testing.loadgen import FLOW_MATCH_OFFSET, FLOW_STATS, HEADER, MULTIPART
from ryu_overlay.testing.scenario import HYPERVISORS, build, connect


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser


def ryu_bytes(f) -> bytes:
    msg = parser.OFPFlowMod(FakeDatapath(), cookie=f.cookie, table_id=TABLE_IDS[f.table], command=ofp.OFPFC_ADD,
                            priority=f.priority, match=ryu_match(f),
                            instructions=_ryu_instructions(f))
    msg.xid = 0
    msg.serialize()
    return bytes(msg.buf)


def test_every_flow_of_the_scenario_encodes_to_ryus_bytes():
    c = build()
    flows = [m.flow for hv in HYPERVISORS for m in connect(c, hv) if isinstance(m, FlowAdd)]
    assert len(flows) > 100
    families = {f.family for f in flows}
    assert len(families) >= 9  # every kind of match and action is covered
    for f in flows:
        ours = FlowAdd(f)
        ours.serialize()
        assert ours.xid == 0 and bytes(ours.buf) == ryu_bytes(f), f


def test_lazy_match_and_instructions_are_ryus_objects():
    c = build()
    msg = next(m for m in connect(c, "hv1") if isinstance(m, FlowAdd) and m.flow.metadata and m.flow.goto)
    assert isinstance(msg.match, parser.OFPMatch)
    assert dict(msg.match.items()) == dict(msg.flow.match)
    assert [type(i).__name__ for i in msg.instructions] == ["OFPInstructionWriteMetadata", "OFPInstructionGotoTable"]


def test_every_group_of_the_scenario_encodes_to_ryus_bytes():
    c = build()
    groups = [m for hv in HYPERVISORS for m in connect(c, hv) if isinstance(m, GroupMod)]
    assert len(groups) >= 4 and any(len(g.group.buckets) > 1 for g in groups)
    for ours in groups:
        theirs = parser.OFPGroupMod(FakeDatapath(), ours.command, ofp.OFPGT_ALL, ours.group_id, ours.buckets)
        for msg in (ours, theirs):
            msg.xid = 7
            msg.serialize()
        assert ours.buf is not None
        assert bytes(ours.buf) == bytes(theirs.buf), ours.group


def test_a_flow_is_encoded_once_and_kept_with_it():
    c = build()
    f = next(m.flow for m in connect(c, "hv1") if isinstance(m, FlowAdd))
    assert FlowAdd(f).buf is FlowAdd(f).buf is f.__dict__["_ofp13_flow_add"]


def parsed_reply(mp_type: int, entries: list[bytes]) -> tuple[bytes, Any]:
    """A multipart reply of ``entries`` as a switch sends it, and what Ryu makes of it with our lazy entries."""
    payload = MULTIPART.pack(mp_type, 0) + b"".join(entries)
    buf = HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, HEADER.size + len(payload), 9) + payload
    install_lazy_stats()
    return buf, framework_module("ofproto.ofproto_parser").msg(FakeDatapath(), ofp.OFP_VERSION,
                                                               ofp.OFPT_MULTIPART_REPLY, len(buf), 9, buf)


def test_a_flow_stats_reply_reads_cookies_at_once_and_the_rest_as_ryu_does():
    c = build()
    adds = [m for m in connect(c, "hv1") if isinstance(m, FlowAdd)]
    entries = []
    for m in adds:
        m.serialize()
        body = bytes(m.buf)[FLOW_MATCH_OFFSET:]
        entries.append(FLOW_STATS.pack(FLOW_STATS.size + len(body), TABLE_IDS[m.flow.table], 3, 4, m.flow.priority,
                                       0, 0, 0, m.flow.cookie, 5, 6) + body)
    buf, reply = parsed_reply(ofp.OFPMP_FLOW, entries)
    assert [type(e) for e in reply.body] == [LazyFlowStats] * len(adds)
    assert [e.cookie for e in reply.body] == [m.flow.cookie for m in adds]
    offset = HEADER.size + MULTIPART.size
    for entry, raw in zip(reply.body, entries, strict=True):
        full = parser.OFPFlowStats.parser(buf, offset)
        offset += len(raw)
        assert (entry.table_id, entry.priority, entry.packet_count, entry.length) == (
            full.table_id, full.priority, full.packet_count, full.length)
        assert entry.match.to_jsondict() == full.match.to_jsondict()
        assert [i.to_jsondict() for i in entry.instructions] == [i.to_jsondict() for i in full.instructions]


def test_a_group_desc_reply_decodes_to_the_groups_that_were_sent():
    c = build()
    mods = [m for hv in HYPERVISORS for m in connect(c, hv) if isinstance(m, GroupMod)]
    entries = []
    for m in mods:
        msg: Any = m  # Ryu's message: the xid is set before serialising
        msg.xid = 0
        msg.serialize()
        buckets = bytes(msg.buf)[16:]  # after the header, command, type and group id
        entries.append(struct.pack("!HBxI", 8 + len(buckets), ofp.OFPGT_ALL, m.group_id) + buckets)
    pop_vlan = struct.pack("!HH4x", ofp.OFPAT_POP_VLAN, 8)  # an action we never build
    entries.append(struct.pack("!HBxI", 8 + 16 + 8, ofp.OFPGT_ALL, 99) + struct.pack("!HHII4x", 24, 0, 0, 0) + pop_vlan)
    buf, reply = parsed_reply(ofp.OFPMP_GROUP_DESC, entries)
    assert [type(e) for e in reply.body] == [LazyGroupDescStats] * len(entries)
    assert [decode_group(e) for e in reply.body] == [m.group for m in mods] + [None]
    offset = HEADER.size + MULTIPART.size
    for entry, raw in zip(reply.body, entries, strict=True):
        full = parser.OFPGroupDescStats.parser(buf, offset)
        offset += len(raw)
        assert decode_group(full) == decode_group(entry)
        assert [b.to_jsondict() for b in entry.buckets] == [b.to_jsondict() for b in full.buckets]
