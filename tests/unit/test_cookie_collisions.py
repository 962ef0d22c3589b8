"""Flows whose fingerprints collide still each get a cookie of their own, on the switch too.

The fingerprint is patched so that collisions, one in four billion per pair in real life,
happen on purpose; the simulator then shows every flow installed and doing its job.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from ryu_overlay import flows, ofmsg
from ryu_overlay.flows import by_cookie, flow
from ryu_overlay.pipeline import TABLE_IDS, Family
from ryu_overlay.testing.scenario import HYPERVISORS, PORTS, build, connect, ofports
from ryu_overlay.trace import SimNet

BCAST = "ff:ff:ff:ff:ff:ff"
REAL_FINGERPRINT = flows.fingerprint


def arp_request(src: str, target: str) -> dict[str, Any]:
    _, mac, ips, _, _, no = PORTS[src]
    return {"in_port": no, "eth_src": mac, "eth_dst": BCAST, "eth_type": 0x0806, "arp_op": 1, "arp_sha": mac,
            "arp_spa": ips[0], "arp_tha": "00:00:00:00:00:00", "arp_tpa": target}


def answered_in_switch_by(net: SimNet, src: str, target: str) -> str | None:
    """The MAC the switch answers ``src``'s ARP request with, or None if it does not answer."""
    r = net.send(PORTS[src][3], arp_request(src, target))
    if r.tunnelled or r.packet_ins() or len(r.deliveries) != 1:
        return None
    (d,) = r.deliveries
    return d.packet["arp_sha"] if d.packet.get("arp_op") == 2 else None


def resync(net: SimNet, hv: str) -> list[Any]:
    """Reconnect ``hv``'s switch without flushing it: what the controller sends on reading it back."""
    sw = net.switches[hv]
    return connect(net.controller, hv, ports=net.ofports[hv], cookies=[e.cookie for e in sw.flows()],
                   groups=[(gid, ofmsg.decode_group(g)) for gid, g in sw.groups.items()],
                   meters=[(mid, ofmsg.decode_meter(m)) for mid, m in sw.meters.items()])


def sim_net() -> SimNet:
    return SimNet(build(), {hv: ofports(hv) for hv in HYPERVISORS})


def installed(net: SimNet) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every switch's flows without their cookies."""
    return {hv: Counter((e.table_id, e.priority, repr(sorted(e.match.items())), repr(e.instructions))
                        for e in sw.flows()) for hv, sw in net.switches.items()}


@pytest.fixture
def responders_of_a3_and_a4_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-switch ARP responders for 10.1.0.3 (a3) and 10.1.0.4 (a4) get one fingerprint."""
    def colliding(content: str, salt: int = 0) -> int:
        if (not salt and "'arp_tpa', '10.1.0.3'" in content) or (not salt and "'arp_tpa', '10.1.0.4'" in content):
            return 0xC0FFEE
        return REAL_FINGERPRINT(content, salt)

    monkeypatch.setattr(flows, "fingerprint", colliding)


def test_two_colliding_flows_are_both_installed_and_both_answer(responders_of_a3_and_a4_collide):
    net = sim_net()
    for hv, sw in net.switches.items():
        cookies = [e.cookie for e in sw.flows()]
        assert len(cookies) == len(set(cookies)), hv
    assert answered_in_switch_by(net, "a1", "10.1.0.3") == PORTS["a3"][1]
    assert answered_in_switch_by(net, "a1", "10.1.0.4") == PORTS["a4"][1]
    assert answered_in_switch_by(net, "a3", "10.1.0.4") == PORTS["a4"][1]


def test_deleting_one_colliding_flow_leaves_the_other(responders_of_a3_and_a4_collide):
    net = sim_net()
    net.apply(net.controller.delete_port("a4"))
    assert answered_in_switch_by(net, "a1", "10.1.0.3") == PORTS["a3"][1]
    assert answered_in_switch_by(net, "a1", "10.1.0.4") is None
    net.apply(net.controller.put_port("a4", {"network": "blue", "mac": PORTS["a4"][1], "ips": ["10.1.0.4"],
                                             "hypervisor": "hv3", "interface": "tapA4"})[2])
    net.apply(net.controller.delete_port("a3"))
    assert answered_in_switch_by(net, "a1", "10.1.0.4") == PORTS["a4"][1]
    assert answered_in_switch_by(net, "a1", "10.1.0.3") is None


def test_a_reconnect_after_collisions_sends_nothing(responders_of_a3_and_a4_collide):
    net = sim_net()
    for hv in HYPERVISORS:
        assert resync(net, hv) == [], hv


def test_a_restarted_controller_gives_the_colliding_flows_the_same_cookies(responders_of_a3_and_a4_collide):
    net = sim_net()
    restarted = SimNet(build(), {hv: ofports(hv) for hv in HYPERVISORS})
    for hv in HYPERVISORS:
        assert sorted(e.cookie for e in restarted.switches[hv].flows()) == sorted(
            e.cookie for e in net.switches[hv].flows())


def test_every_flow_is_installed_when_nearly_all_fingerprints_collide(monkeypatch):
    expected = installed(sim_net())
    monkeypatch.setattr(flows, "fingerprint", lambda content, salt=0: REAL_FINGERPRINT(content, salt) if salt else
                        REAL_FINGERPRINT(content) % 2)
    net = sim_net()
    assert installed(net) == expected
    for hv, sw in net.switches.items():
        cookies = [e.cookie for e in sw.flows()]
        assert len(cookies) == len(set(cookies)), hv
        assert resync(net, hv) == [], hv
    assert answered_in_switch_by(net, "a1", "10.1.0.3") == PORTS["a3"][1]
    r = net.send("hv1", {"in_port": 1, "eth_src": PORTS["a1"][1], "eth_dst": PORTS["a3"][1], "eth_type": 0x0800,
                         "ipv4_src": "10.1.0.1", "ipv4_dst": "10.1.0.3"})
    assert [(d.switch, d.port) for d in r.deliveries] == [("hv2", PORTS["a3"][5])]


def test_resolution_does_not_depend_on_the_order_flows_were_gathered(monkeypatch):
    monkeypatch.setattr(flows, "fingerprint", lambda content, salt=0: REAL_FINGERPRINT(content, salt) if salt else 1)
    some = [flow("arp_nd", 40, Family.TABLE_MISS, {"arp_op": op, "eth_type": 0x0806}) for op in range(1, 6)]
    forward, backward = by_cookie(some), by_cookie(reversed(some))
    assert forward == backward and len(forward) == len(some)
    assert all(f.salt >= 1 and c == f.cookie for c, f in forward.items())


def test_a_cookie_given_to_another_flow_is_deleted_before_the_new_flow_is_added(monkeypatch):
    """Over time one cookie can name two flows (a3 leaves, a4 arrives): the old one must go first."""
    monkeypatch.setattr(flows, "fingerprint", lambda content, salt=0: 0xC0FFEE if not salt and (
        "'arp_tpa', '10.1.0.3'" in content or "'arp_tpa', '10.1.0.9'" in content) else REAL_FINGERPRINT(content, salt))
    net = sim_net()
    net.apply(net.controller.put_port("a3", {"network": "blue", "mac": PORTS["a3"][1], "ips": ["10.1.0.9"],
                                             "hypervisor": "hv2", "interface": "tapA3"})[2])
    assert answered_in_switch_by(net, "a1", "10.1.0.9") == PORTS["a3"][1]
    assert answered_in_switch_by(net, "a1", "10.1.0.3") is None


def test_a_renumbered_table_gives_its_flows_new_cookies(monkeypatch):
    """A switch still holding flows of an older pipeline, whose tables were numbered otherwise,
    must not see them taken for the new ones: the cookie hashes the table numbers."""
    def l2_flow() -> flows.Flow:
        return flows.flow("l2_lookup", 100, Family.L2_LOCAL, {"eth_dst": "02:aa:00:00:00:01"}, 5001,
                          actions=(flows.Output(3),))

    before = l2_flow().cookie
    monkeypatch.setitem(TABLE_IDS, "l2_lookup", TABLE_IDS["l2_lookup"] + 1)  # the dict flows reads
    assert l2_flow().cookie != before
