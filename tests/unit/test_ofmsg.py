"""The fast flow-mod encoder must produce exactly the bytes Ryu would."""

from __future__ import annotations

from ryu_overlay.compat import ofproto as ofp, parser
from ryu_overlay.ofmsg import FlowAdd, GroupMod, _ryu_instructions, ryu_match
from ryu_overlay.pipeline import TABLE_IDS
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
