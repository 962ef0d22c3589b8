"""``arp_answered_in_switch`` counts answers only, not requests dropped for unknown addresses."""

from __future__ import annotations

from ryu_overlay.ofmsg import family_counter_request
from ryu_overlay.pipeline import Family
from ryu_overlay.testing.scenario import HYPERVISORS, PORTS, build, ofports
from ryu_overlay.trace import SimNet, SimSwitch


def arp_request(src: str, target: str) -> dict:
    _, mac, ips, _, _, no = PORTS[src]
    return {"in_port": no, "eth_src": mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0806, "arp_op": 1,
            "arp_sha": mac, "arp_spa": ips[0], "arp_tha": "00:00:00:00:00:00", "arp_tpa": target}


def polled(sw: SimSwitch, family: Family) -> int:
    """What the app's aggregate request for ``family`` would read from the switch."""
    req = family_counter_request(family)
    return sum(e.packets for e in sw.flows() if e.cookie & req.cookie_mask == req.cookie & req.cookie_mask)


def test_arp_requests_dropped_for_unknown_addresses_are_not_counted_as_answered():
    c = build()
    c.put_network("blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"],
                           "unknown_arp": "drop"})
    net = SimNet(c, {hv: ofports(hv) for hv in HYPERVISORS})
    for _ in range(3):
        r = net.send("hv1", arp_request("a1", "10.1.0.99"))
        assert r.deliveries == () and r.tunnelled == ()
    (answer,) = net.send("hv1", arp_request("a1", "10.1.0.3")).deliveries
    assert answer.packet["arp_sha"] == PORTS["a3"][1]
    sw = net.switches["hv1"]
    assert polled(sw, Family.ARP_RESPONDER) == 1
    assert polled(sw, Family.UNKNOWN_ARP_DROP) == 3
    c.responder_hits(c.topo.hypervisors["hv1"].dpid, polled(sw, Family.ARP_RESPONDER))
    assert c.stats_json()["arp_answered_in_switch"] == 1
