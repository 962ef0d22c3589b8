"""Turn flows and groups into OpenFlow 1.3 messages (built without a datapath) and back.

Also orders a change into one batch: groups first, then new flows, then deletions, with
barriers between, so that a flow never points at a missing group and a replaced flow is
removed only after its successor is in place (make before break).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .compat import ofproto as ofp, parser
from .flows import Action, Flow, Group, Move, Output, SetField, ToGroup
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


def flow_add(f: Flow) -> Any:
    instructions: list[Any] = []
    if f.actions:
        instructions.append(parser.OFPInstructionActions(
            ofp.OFPIT_APPLY_ACTIONS, [encode_action(a) for a in f.actions]))
    if f.metadata is not None:
        instructions.append(parser.OFPInstructionWriteMetadata(*f.metadata))
    if f.goto is not None:
        instructions.append(parser.OFPInstructionGotoTable(TABLE_IDS[f.goto]))
    return parser.OFPFlowMod(
        None, cookie=f.cookie, table_id=TABLE_IDS[f.table], command=ofp.OFPFC_ADD,
        priority=f.priority, match=parser.OFPMatch(**dict(f.match)), instructions=instructions)


def flow_delete(cookie: int) -> Any:
    """Delete exactly the flow(s) carrying ``cookie``, in every table."""
    return parser.OFPFlowMod(
        None, cookie=cookie, cookie_mask=ALL_COOKIE_BITS, table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch())


def group_mod(group: Group, command: int) -> Any:
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


def barrier() -> Any:
    return parser.OFPBarrierRequest(None)


def sync_requests() -> list[Any]:
    """What the controller asks a switch that (re)connects: its ports, flows and groups."""
    return [
        parser.OFPPortDescStatsRequest(None, 0),
        parser.OFPFlowStatsRequest(None, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()),
        parser.OFPGroupDescStatsRequest(None, 0),
    ]


def ordered_batch(group_adds: Sequence[Group], group_mods: Sequence[Group], flow_adds: Iterable[Flow],
                  flow_deletes: Iterable[int], group_deletes: Iterable[int]) -> list[Any]:
    msgs: list[Any] = [group_mod(g, ofp.OFPGC_ADD) for g in group_adds]
    msgs += [group_mod(g, ofp.OFPGC_MODIFY) for g in group_mods]
    if msgs:
        msgs.append(barrier())
    adds = [flow_add(f) for f in flow_adds]
    if adds:
        msgs += adds + [barrier()]
    removals = [flow_delete(c) for c in flow_deletes] + [group_delete(g) for g in group_deletes]
    if removals:
        msgs += removals + [barrier()]
    return msgs

