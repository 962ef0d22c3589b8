"""A VM flooding the control plane on real Open vSwitch: metered per interface, others still answered."""

from __future__ import annotations

import threading

from ryu_overlay.pipeline import PACKET_IN_BURST, PACKET_IN_RATE
from ryu_overlay.testing.overlay import PORTS, deploy
from ryu_overlay.testing.vmtools import ETH_IPV6, ICMPV6_TYPE, ND_NA, flood, probe, solicitation

FLOOD_SECONDS = 4.0


def test_a_solicitation_flood_from_one_vm_is_metered_and_another_vm_is_still_answered(ctl, make_bed):
    overlay = deploy(ctl, make_bed(2, ctl.ofp_port), ports={k: v for k, v in PORTS.items() if k in ("a1", "r1", "r2")})
    bed = overlay.bed
    a1, r1 = bed.vms["a1"], bed.vms["r1"]  # both on hv1, in different tenants; r2 is on hv2
    # Without the source link-layer option, so that they take the controller path (the switch
    # answers the others itself).
    noise = solicitation(a1.mac, "fd00:1::1", "fd00:1::2", source_lla=False)
    question = solicitation(r1.mac, "fd00:1::1", "fd00:1::2", source_lla=False)
    assert probe(bed, "r1", question, ETH_IPV6, ICMPV6_TYPE, ND_NA, rounds=3) != [None] * 3  # answered when quiet

    before = ctl.api("GET", "/v1/stats")[1]["packet_in"]
    sent: list[int] = []
    flooder = threading.Thread(target=lambda: sent.append(flood(bed, "a1", noise, FLOOD_SECONDS)))
    flooder.start()
    try:
        answers = probe(bed, "r1", question, ETH_IPV6, ICMPV6_TYPE, ND_NA, rounds=40)
    finally:
        flooder.join(FLOOD_SECONDS + 60)
    packet_ins = ctl.api("GET", "/v1/stats")[1]["packet_in"] - before

    assert None not in answers, answers
    # Everything a1 sent that reached the controller went through a1's meter; 2 s of slack for
    # the flood's start-up and the stats read, on top of the burst and r1's own questions.
    allowed = PACKET_IN_RATE * (FLOOD_SECONDS + 2) + PACKET_IN_BURST + len(answers)
    assert packet_ins <= allowed, (packet_ins, allowed)
    assert sent and sent[0] > 20 * allowed, sent  # it was a flood: metering, not a slow sender, bounded it
