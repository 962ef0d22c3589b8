"""The simulator's own OpenFlow semantics, and the ``ryu-overlay trace`` command."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from ryu_overlay.compat import ofproto as ofp, parser
from ryu_overlay.pipeline import TABLE_IDS
from ryu_overlay.rest import RestApp
from ryu_overlay.testing.controller_proc import free_port
from ryu_overlay.testing.scenario import build, connect
from ryu_overlay.trace import SimError, SimSwitch, main, parse_packet_spec


def add(table, priority, match, instructions=(), cookie=0):
    return parser.OFPFlowMod(None, cookie=cookie, table_id=table, priority=priority, match=parser.OFPMatch(**match),
                             instructions=list(instructions))


def actions(*acts):
    return parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(acts))


def out(port):
    return parser.OFPActionOutput(port)


def test_highest_priority_wins_and_masks_apply():
    sw = SimSwitch()
    sw.apply([add(0, 1, {}, [actions(out(1))]),
              add(0, 9, {"eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")}, [actions(out(2))])])
    assert sw.process({"in_port": 5, "eth_dst": "ff:ff:ff:ff:ff:ff"}).ports() == {2}
    assert sw.process({"in_port": 5, "eth_dst": "02:00:00:00:00:01"}).ports() == {1}


def test_add_replaces_identical_match_and_priority():
    sw = SimSwitch()
    sw.apply([add(0, 5, {"in_port": 1}, [actions(out(2))], cookie=1),
              add(0, 5, {"in_port": 1}, [actions(out(3))], cookie=2)])
    assert [e.cookie for e in sw.flows()] == [2]
    assert sw.process({"in_port": 1}).ports() == {3}


def test_delete_by_cookie_mask_spans_tables_and_strict_delete_needs_exact_match():
    sw = SimSwitch()
    sw.apply([add(0, 5, {"in_port": 1}, cookie=0x0100), add(1, 5, {"in_port": 1}, cookie=0x0101),
              add(1, 6, {"in_port": 2}, cookie=0x0200)])
    with pytest.raises(SimError):  # Ryu's default out_port=0 would make OVS delete nothing
        sw.apply([parser.OFPFlowMod(None, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL, match=parser.OFPMatch())])
    sw.apply([parser.OFPFlowMod(None, command=ofp.OFPFC_DELETE_STRICT, table_id=1, priority=6,
                                match=parser.OFPMatch(), out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)])
    assert len(sw.flows()) == 3
    sw.apply([parser.OFPFlowMod(None, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL, cookie=0x0100,
                                cookie_mask=0xFF00, match=parser.OFPMatch(), out_port=ofp.OFPP_ANY,
                                out_group=ofp.OFPG_ANY)])
    assert [e.cookie for e in sw.flows()] == [0x0200]


def test_output_to_the_ingress_port_is_dropped_unless_in_port_is_used():
    sw = SimSwitch()
    sw.apply([add(0, 1, {"in_port": 1}, [actions(out(1))]),
              add(0, 1, {"in_port": 2}, [actions(out(ofp.OFPP_IN_PORT))])])
    assert sw.process({"in_port": 1}).dropped
    assert sw.process({"in_port": 2}).ports() == {2}


def test_group_buckets_work_on_independent_copies():
    sw = SimSwitch()
    sw.apply([parser.OFPGroupMod(None, ofp.OFPGC_ADD, ofp.OFPGT_ALL, 7, [
        parser.OFPBucket(actions=[parser.OFPActionSetField(tunnel_id=5), out(9)]),
        parser.OFPBucket(actions=[out(3)])]),
        add(0, 1, {}, [actions(parser.OFPActionGroup(7))])])
    r = sw.process({"in_port": 1})
    assert [(o.port, o.packet.get("tunnel_id")) for o in r.outputs] == [(9, 5), (3, None)]


@pytest.mark.parametrize("match", [{"arp_tpa": "10.0.0.1"}, {"ipv4_src": "10.0.0.1"},
                                   {"eth_type": 0x86DD, "icmpv6_type": 135}])
def test_missing_prerequisites_are_refused_like_ovs_does(match):
    with pytest.raises(SimError):
        SimSwitch().apply([add(0, 1, match)])


def test_flows_pointing_at_missing_groups_or_meters_are_refused():
    with pytest.raises(SimError):
        SimSwitch().apply([add(0, 1, {}, [actions(parser.OFPActionGroup(7))])])
    with pytest.raises(SimError):
        SimSwitch().apply([add(0, 1, {}, [parser.OFPInstructionMeter(1, ofp.OFPIT_METER)])])


def test_goto_backwards_is_refused():
    with pytest.raises(SimError):
        SimSwitch().apply([add(2, 1, {}, [parser.OFPInstructionGotoTable(1)])])


def test_packet_spec_parsing():
    assert parse_packet_spec("in_port=tapA1,arp,arp_op=1,arp_tpa=10.1.0.2,eth_src=02:AA:00:00:00:01",
                             {"tapA1": 4}) == {
        "in_port": 4, "eth_type": 0x0806, "arp_op": 1, "arp_tpa": "10.1.0.2", "eth_src": "02:aa:00:00:00:01"}
    for bad in ("arp,arp_op=1", "in_port=1,colour=red", "in_port=1,arp_tpa=10.1.0.300", "in_port=x"):
        with pytest.raises(ValueError):
            parse_packet_spec(bad)


def test_trace_command_follows_a_frame_through_the_tunnel(tmp_path, capsys):
    db = str(tmp_path / "db")
    build(path=db).store.close()
    assert main(["--db", db, "hv1",
                 "in_port=tapA1,eth_src=02:aa:00:00:00:01,eth_dst=02:aa:00:00:00:03,ip,ipv4_src=10.1.0.1"]) == 0
    text = capsys.readouterr().out
    assert "0 ingress: priority 100" in text and f"{TABLE_IDS['l2_lookup']} l2_lookup: priority 100" in text
    assert "tunnel hv1 -> hv2 (tun_id=5001, tun_dst=198.18.0.2)" in text
    assert text.rstrip().endswith("delivered on hv2 port 2")


def test_nd_fields_are_not_read_from_a_message_whose_code_is_not_zero():
    # Open vSwitch extracts nd_target (and the link-layer options) only when the ICMPv6 code is 0.
    sw = SimSwitch()
    sw.apply([add(0, 20, {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 136, "ipv6_nd_target": "fd00:1::1"},
                  [actions(out(2))])])
    na = {"in_port": 1, "eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 136, "ipv6_nd_target": "fd00:1::1"}
    assert sw.process(na).ports() == {2}
    assert sw.process({**na, "icmpv6_code": 0}).ports() == {2}
    assert sw.process({**na, "icmpv6_code": 1}).dropped


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def live(request):
    """scenario's placement behind a real HTTP server, hv1's switch connected with its own port numbers."""
    token = getattr(request, "param", None)
    c = build()
    connect(c, "hv1", {"vxlan0": 7, "tapA1": 9, "tapA2": 4, "tapR1": 5})
    server = make_server("127.0.0.1", 0, RestApp(c, lambda batches: None, token), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_trace_url_takes_placement_and_the_connected_switches_port_numbers_from_rest(live, capsys):
    packet = "in_port=tapA1,eth_src=02:aa:00:00:00:01,eth_dst=02:aa:00:00:00:02,ip,ipv4_src=10.1.0.1"
    assert main(["--url", live, "hv1", packet]) == 0
    text = capsys.readouterr().out
    assert "port numbers of hv1 (switch): tapA2=4, tapR1=5, vxlan0=7, tapA1=9" in text
    assert "port numbers of hv2 (guessed): vxlan0=1, tapA3=2, tapR2=3" in text
    assert "match   eth_src=02:aa:00:00:00:01,in_port=9" in text
    assert text.rstrip().endswith("delivered on hv1 port 4")
    assert main(["--url", live, "--ofport", "hv1:tapA2=11", "hv1", packet]) == 0
    text = capsys.readouterr().out
    assert "port numbers of hv1 (switch + --ofport)" in text and text.rstrip().endswith("delivered on hv1 port 11")


@pytest.mark.parametrize("live", ["s3cret"], indirect=True)
def test_trace_url_sends_the_token_and_reports_a_refusal(live, capsys):
    packet = "in_port=tapA1,eth_src=02:aa:00:00:00:01,eth_dst=02:aa:00:00:00:02,ip,ipv4_src=10.1.0.1"
    with pytest.raises(SystemExit) as exc:
        main(["--url", live, "hv1", packet])
    assert exc.value.code == 2 and "HTTP 401" in capsys.readouterr().err
    assert main(["--url", live, "--token", "s3cret", "hv1", packet]) == 0


def test_trace_url_says_when_the_controller_cannot_be_reached(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--url", f"http://127.0.0.1:{free_port()}", "hv1", "in_port=1"])
    assert exc.value.code == 2 and "GET http://127.0.0.1:" in capsys.readouterr().err
