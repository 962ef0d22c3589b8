"""The load generator's fake switches speak correct OpenFlow 1.3 to the real controller process."""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from scapy.layers.l2 import ARP, Ether

from ryu_overlay import ofmsg
from ryu_overlay.compat import ofproto as ofp, ofproto_parser_base, parser
from ryu_overlay.pipeline import TABLE_IDS
from ryu_overlay.testing.controller_proc import HOST, ControllerProcess
from ryu_overlay.testing.loadgen import (
    FakeSwitch,
    Fleet,
    Placement,
    SwitchSpec,
    expected_state,
)

DEADLINE = 30.0  # a bound on waiting, not a performance assertion


class Datapath:
    ofproto = ofp
    ofproto_parser = parser
    id = 1


def decode(raw: bytes) -> Any:
    version, msg_type, length, xid = struct.unpack_from("!BBHI", raw)
    return ofproto_parser_base.msg(Datapath(), version, msg_type, length, xid, raw)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 4 * DEADLINE))


async def connected_fleet(controller: ControllerProcess, placement: Placement) -> Fleet:
    fleet = Fleet(placement.specs(), record=True)
    await fleet.connect(HOST, controller.ofp_port, concurrency=2, timeout=DEADLINE)
    topo = placement.topology()
    expected = placement.expected_states(topo)
    await fleet.wait(expected, DEADLINE)
    return fleet


def run_with_fleet(controller: ControllerProcess, placement: Placement,
                   check: Callable[[Fleet], Awaitable[None]]) -> None:
    """``check`` on a connected fleet holding every expected flow; the fleet is closed after."""
    async def scenario() -> None:
        fleet = await connected_fleet(controller, placement)
        try:
            await check(fleet)
        finally:
            fleet.close()

    run(scenario)


def test_each_switch_receives_exactly_the_flows_computed_for_its_hypervisor(controller, placement):
    async def check(fleet: Fleet) -> None:
        topo = placement.topology()
        for hv in placement.hypervisors:
            sw = fleet.by_dpid[hv.dpid]
            want = expected_state(topo, hv, placement.ofports[hv.name])
            assert len(want.flows) > 20 and want.groups and want.meters
            assert sw.cookies() == want.flows
            assert (sw.flow_count, len(sw.groups), len(sw.meters)) == (
                len(want.flows), len(want.groups), len(want.meters))
            assert sw.errors_sent == 0 and sw.flow_deletes == 0
            mods = [decode(raw) for raw in sw.recorded or () if raw[1] == ofp.OFPT_FLOW_MOD]
            assert sorted(m.cookie for m in mods) == sorted(want.flows)
            entries = {e.cookie: e for e in sw.flow_entries()}
            for m in mods:
                assert m.command == ofp.OFPFC_ADD
                assert (m.table_id, m.priority) == (entries[m.cookie].table_id, entries[m.cookie].priority)
        status, stats = controller.api("GET", "/v1/stats")
        assert status == 200
        assert stats["hypervisors_connected"] == len(placement.hypervisors)
        assert stats["flows_installed"] == sum(sw.flow_count for sw in fleet.switches)
        assert stats["switch_errors"] == 0

    run_with_fleet(controller, placement, check)


def test_reconnect_with_everything_installed_sends_nothing_new(controller, placement):
    async def check(fleet: Fleet) -> None:
        sw = fleet.by_dpid[placement.hypervisors[0].dpid]
        before = sw.stats()
        asked = Counter(sw.multipart_requests)
        await sw.reconnect(HOST, controller.ofp_port, DEADLINE)
        sync = Counter({ofp.OFPMP_PORT_DESC: 2, ofp.OFPMP_FLOW: 1, ofp.OFPMP_GROUP_DESC: 1,
                        ofp.OFPMP_METER_CONFIG: 1})  # Ryu asks for the ports too

        def sync_asked() -> Counter[int]:
            return Counter({t: sw.multipart_requests[t] - asked[t] for t in sync})

        for _ in range(int(DEADLINE / 0.01)):
            if sync_asked() == sync:
                break
            await asyncio.sleep(0.01)
        await sw.sync_point(DEADLINE)
        status, hv = controller.api("GET", f"/v1/hypervisors/{placement.hypervisors[0].name}")
        assert status == 200 and hv["connected"] is True
        after = sw.stats()
        assert sync_asked() == sync
        assert (after.flow_adds, after.flow_deletes, after.group_mods, after.meter_mods, after.barriers) == (
            before.flow_adds, before.flow_deletes, before.group_mods, before.meter_mods, before.barriers)
        assert after.errors_sent == 0

    run_with_fleet(controller, placement, check)


def test_reconnect_after_losing_a_flow_gets_exactly_that_flow_back(controller, placement):
    async def check(fleet: Fleet) -> None:
        sw = fleet.by_dpid[placement.hypervisors[1].dpid]
        key, entry = next(iter(sw.flows.items()))
        del sw.flows[key]
        sw.by_cookie.pop(entry[0])
        adds = sw.flow_adds
        await sw.reconnect(HOST, controller.ofp_port, DEADLINE)
        await asyncio.wait_for(sw.when(lambda s: entry[0] in s.by_cookie), DEADLINE)
        await sw.sync_point(DEADLINE)
        assert sw.flow_adds == adds + 1
        assert sw.flows[key][0] == entry[0]

    run_with_fleet(controller, placement, check)


def test_packet_in_arp_request_is_answered_with_a_packet_out_arp_reply(controller, placement):
    async def check(fleet: Fleet) -> None:
        asker = placement.ports[0]
        target = next(p for p in placement.ports if p.network == asker.network and p.name != asker.name)
        sw = fleet.by_dpid[next(h.dpid for h in placement.hypervisors if h.name == asker.hypervisor)]
        in_port = sw.ports[asker.interface]
        latency = await asyncio.wait_for(
            sw.arp_request(in_port, asker.mac, str(asker.ips[0]), str(target.ips[0])), DEADLINE)
        assert latency > 0
        out = sw.packet_outs[-1]
        assert out.outputs == (in_port,)
        frame = Ether(out.data)
        assert frame[Ether].dst == asker.mac and frame[Ether].src == target.mac
        assert (frame[ARP].op, frame[ARP].hwsrc, frame[ARP].psrc, frame[ARP].hwdst, frame[ARP].pdst) == (
            2, target.mac, str(target.ips[0]), asker.mac, str(asker.ips[0]))
        status, stats = controller.api("GET", "/v1/stats")
        assert status == 200
        assert stats["arp_answered_controller"] == 1

    run_with_fleet(controller, placement, check)


class Transport(asyncio.Transport):
    """Collects what a switch writes, for tests that need no controller."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def messages(chunks: list[bytes]) -> list[bytes]:
    data = b"".join(chunks)
    out = []
    while data:
        length = struct.unpack_from("!H", data, 2)[0]
        out.append(data[:length])
        data = data[length:]
    return out


def serialized(msg: Any, xid: int = 9) -> bytes:
    msg.datapath = Datapath()
    msg.xid = xid
    msg.serialize()
    return bytes(msg.buf)


def test_flow_stats_echo_every_flow_and_split_with_reply_more():
    from ryu_overlay.testing.scenario import build, connect
    c = build()
    flows = [m.flow for m in connect(c, "hv1") if isinstance(m, ofmsg.FlowAdd)]
    sw = FakeSwitch(SwitchSpec(1, (("vxlan0", 100),)))
    transport = Transport()
    sw.connection_made(transport)
    copies = 12  # the same flows at other priorities, enough to need several replies
    flows = [replace(f, priority=f.priority + 1000 * k) for k in range(copies) for f in flows]
    for f in flows:
        sw.data_received(serialized(ofmsg.FlowAdd(f)))
    sw.data_received(serialized(parser.OFPBarrierRequest(None), xid=77))
    assert sw.flow_count == len(flows) and sw.barriers == 1
    transport.written.clear()
    sw.data_received(serialized(ofmsg.sync_requests()[1], xid=5))
    replies = [decode(raw) for raw in messages(transport.written)]
    assert len(replies) > 1
    assert [r.flags for r in replies] == [ofp.OFPMPF_REPLY_MORE] * (len(replies) - 1) + [0]
    assert all(r.xid == 5 and len(r.buf) <= 0xFFFF for r in replies)
    stats = [s for r in replies for s in r.body]
    assert len(stats) == len(flows)
    by_cookie = {f.cookie: f for f in flows}
    for s in stats:
        f = by_cookie[s.cookie]
        assert dict(s.match.items()) == dict(f.match)
        assert [type(i) for i in s.instructions] == [type(i) for i in ofmsg.FlowAdd(f).instructions]


def test_delete_by_cookie_and_strict_delete_remove_only_their_flows():
    from ryu_overlay.testing.scenario import build, connect
    c = build()
    flows = [m.flow for m in connect(c, "hv1") if isinstance(m, ofmsg.FlowAdd)]
    sw = FakeSwitch(SwitchSpec(1, ()))
    sw.connection_made(Transport())
    for f in flows:
        sw.data_received(serialized(ofmsg.FlowAdd(f)))
    sw.data_received(serialized(ofmsg.flow_delete(flows[0].cookie)))
    assert flows[0].cookie not in sw.cookies() and sw.flow_count == len(flows) - 1
    victim = next(f for f in flows[1:] if f.match)
    strict = parser.OFPFlowMod(None, table_id=TABLE_IDS[victim.table], command=ofp.OFPFC_DELETE_STRICT,
                               priority=victim.priority, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                               match=parser.OFPMatch(**dict(victim.match)))
    sw.data_received(serialized(strict))
    assert victim.cookie not in sw.cookies() and sw.flow_count == len(flows) - 2
    sw.data_received(serialized(parser.OFPFlowMod(None, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                                                  out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)))
    assert sw.flow_count == 0 and sw.by_cookie == {}


def test_aggregate_stats_count_the_flows_of_the_requested_cookie_family():
    from ryu_overlay.pipeline import Family, cookie_family
    from ryu_overlay.testing.scenario import build, connect
    c = build()
    flows = [m.flow for m in connect(c, "hv1") if isinstance(m, ofmsg.FlowAdd)]
    sw = FakeSwitch(SwitchSpec(1, ()))
    transport = Transport()
    sw.connection_made(transport)
    for f in flows:
        sw.data_received(serialized(ofmsg.FlowAdd(f)))
    transport.written.clear()
    sw.data_received(serialized(ofmsg.family_counter_request(Family.ARP_RESPONDER), xid=3))
    [reply] = [decode(raw) for raw in messages(transport.written)]
    want = sum(1 for f in flows if cookie_family(f.cookie) == Family.ARP_RESPONDER)
    assert want > 0
    assert (reply.xid, reply.body.flow_count, reply.body.packet_count) == (3, want, 0)


def test_two_connections_share_tables_and_only_the_master_may_change_them():
    from ryu_overlay.testing.scenario import build, connect
    c = build()
    flows = [m.flow for m in connect(c, "hv1") if isinstance(m, ofmsg.FlowAdd)]
    first = FakeSwitch(SwitchSpec(1, ()))
    second = FakeSwitch(SwitchSpec(1, ()), share=first)
    t1, t2 = Transport(), Transport()
    first.connection_made(t1)
    second.connection_made(t2)
    first.data_received(serialized(ofmsg.role_request(True, 5)))
    second.data_received(serialized(ofmsg.role_request(False, 5)))
    second.data_received(serialized(ofmsg.FlowAdd(flows[0])))
    assert second.flow_count == 0 and second.error_log[-1].code == ofp.OFPBRC_IS_SLAVE
    first.data_received(serialized(ofmsg.FlowAdd(flows[0])))
    assert second.flow_count == 1 and first.master() is first
    first.data_received(serialized(ofmsg.role_request(True, 4)))  # an older generation is refused
    assert first.error_log[-1].type == ofp.OFPET_ROLE_REQUEST_FAILED and first.master() is first
    second.data_received(serialized(ofmsg.role_request(True, 6)))  # a newer MASTER demotes the old one
    assert first.master() is second and first.role == ofp.OFPCR_ROLE_SLAVE
    first.data_received(serialized(ofmsg.flow_delete(flows[0].cookie)))
    assert second.flow_count == 1
    roles = [decode(raw) for raw in messages(t2.written) if raw[1] == ofp.OFPT_ROLE_REPLY]
    assert [(r.role, r.generation_id) for r in roles] == [(ofp.OFPCR_ROLE_SLAVE, 5), (ofp.OFPCR_ROLE_MASTER, 6)]
