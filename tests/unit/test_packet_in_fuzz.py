"""Packet-in fuzzing: whatever bytes a VM sends up, the controller counts, drops or answers, and never
raises; frames that are not the port's own change no placement."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, IPv6
from scapy.layers.l2 import ARP, Ether

from ryu_overlay.testing.scenario import HYPERVISORS, build, connect

MACS = st.sampled_from(["02:aa:00:00:00:01", "02:aa:00:00:00:03", "02:bb:00:00:00:01", "ff:ff:ff:ff:ff:ff",
                        "33:33:ff:00:00:03", "00:00:00:00:00:00"])
IPS4 = st.sampled_from(["10.1.0.1", "10.1.0.3", "10.1.0.50", "0.0.0.0", "255.255.255.255", "10.9.9.9"])
IPS6 = st.sampled_from(["fd00:1::1", "fd00:1::3", "::", "fe80::aa:ff:fe00:1", "ff02::1"])
FRAMES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda s, d, op, sp, tp, cut: bytes(Ether(src=s, dst=d) / ARP(op=op, hwsrc=s, psrc=sp, pdst=tp))[:cut],
              MACS, MACS, st.integers(0, 5), IPS4, IPS4, st.integers(0, 80)),
    st.builds(lambda s, d, src, tgt, cut: bytes(Ether(src=s, dst=d) / IPv6(src=src) / ICMPv6ND_NS(tgt=tgt))[:cut],
              MACS, MACS, IPS6, IPS6, st.integers(0, 120)),
    st.builds(lambda s, src, tgt: bytes(Ether(src=s, dst="33:33:00:00:00:01") / IPv6(src=src) / ICMPv6ND_NA(tgt=tgt)),
              MACS, IPS6, IPS6),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.tuples(st.sampled_from([1, 2, 3, 9]), FRAMES), min_size=1, max_size=5))
def test_any_frame_sequence_is_handled_and_only_moves_a_port_to_an_unbound_interface(frames):
    c = build()
    for hv in HYPERVISORS:
        connect(c, hv)
    c.port_status(1, "tapX", 9)
    before = {name: (p.hypervisor, p.interface) for name, p in c.topo.ports.items()}
    for in_port, data in frames:
        c.packet_in(1, in_port, data)
    assert c.stats["packet_in"] == len(frames)
    after = {name: (p.hypervisor, p.interface) for name, p in c.topo.ports.items()}
    moved = {name for name in before if after[name] != before[name]}
    # Ports bound to hv1's ports 1-3 (a1, a2, r1) never move: frames from a bound port only talk.
    # Mobility may bring one port to the unbound tapX, and only one whose MAC came from it.
    assert len(moved) <= 1 and not moved & {"a1", "a2", "r1"}
    for name in moved:
        assert after[name] == ("hv1", "tapX")
        assert any(in_port == 9 and c.topo.ports[name].mac.replace(":", "") in data.hex() for in_port, data in frames)
