"""Limits of our own (issue #16 item 3): the hypervisor-wide packet-in meter, and memory that no
client (switch, VM, API client) can grow without bound."""

from __future__ import annotations

from ryu_overlay.auth import RequestLimiter, Tokens
from ryu_overlay.controller import MAX_UNKNOWN_SWITCHES
from ryu_overlay.flows import Meter, SwitchView, base_partition
from ryu_overlay.pipeline import CONTROLLER_METER, HYPERVISOR_PACKET_IN_BURST, HYPERVISOR_PACKET_IN_RATE
from ryu_overlay.rest import RestApp
from ryu_overlay.testing.rest_client import Api
from ryu_overlay.testing.scenario import build, connect


def test_every_hypervisor_has_the_controller_meter_on_top_of_the_per_port_ones() -> None:
    c = build()
    view = SwitchView(c.topo.hypervisors["hv1"], {"vxlan0": 100, "tapA1": 1})
    meters = base_partition(view).meters
    assert meters[CONTROLLER_METER] == Meter(CONTROLLER_METER, HYPERVISOR_PACKET_IN_RATE, HYPERVISOR_PACKET_IN_BURST)
    assert 1 in meters  # the port's own
    assert CONTROLLER_METER == 0xFFFFFFFE  # OFPM_CONTROLLER: Open vSwitch applies it to every packet-in


def test_switches_no_hypervisor_owns_are_capped() -> None:
    c = build()
    admitted = []
    for dpid in range(1000, 1000 + 2 * MAX_UNKNOWN_SWITCHES):
        if c.admit(dpid, None):
            c.switch_connected(dpid)
            admitted.append(dpid)
    assert len(admitted) == MAX_UNKNOWN_SWITCHES
    assert not c.admit(5000, None) and c.stats["switches_refused_unknown"] == MAX_UNKNOWN_SWITCHES + 1
    assert c.admit(admitted[0], None)  # one already connected may reconnect
    assert c.admit(1, None)  # a declared hypervisor's switch always may connect
    for dpid in admitted:
        c.switch_disconnected(dpid)
    assert c.admit(5000, None)


def test_nothing_is_kept_per_switch_after_it_disconnects() -> None:
    c = build()
    for _ in range(50):
        assert c.admit(1, "hv1 id:x")
        connect(c, "hv1")
        c.switch_error(1, "refused")
        c.responder_hits(1, 3)
        c.switch_disconnected(1)
    assert (c.switches, c._last_resync, c._responder_hits, c.peer_names) == ({}, {}, {}, {})


def test_wrong_tokens_do_not_grow_the_rate_limiter() -> None:
    c = build()
    limiter = RequestLimiter(100)
    app = RestApp(c, lambda b: None, tokens=Tokens.parse({"good": {"role": "admin"}}), limiter=limiter)
    api = Api(app)
    for i in range(200):
        assert api.get("/v1/networks", headers={"Authorization": f"Bearer guess{i}"}, auth=False).status_int == 401
    assert api.get("/v1/networks", headers={"Authorization": "Bearer good"}, auth=False).status_int == 200
    assert len(limiter._bucket._buckets) == 1
