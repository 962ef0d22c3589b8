"""The mapping system on real Open vSwitch: ARP/ND answered locally, learning, VM mobility."""

from __future__ import annotations

import time

from scapy.layers.inet6 import ICMPv6ND_NS
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

from ryu_overlay.testing.overlay import PORTS, deploy, put

GARP = ("Ether(src='{mac}', dst='ff:ff:ff:ff:ff:ff')/"
        "ARP(op=1, hwsrc='{mac}', psrc='{ip}', hwdst='00:00:00:00:00:00', pdst='{ip}')")


def inner_broadcasts(packets: list) -> list:
    """Frames inside VXLAN that are ARP requests or solicited-node multicast NS."""
    out = []
    for p in packets:
        if VXLAN not in p:
            continue
        inner = p[VXLAN].payload
        if ARP in inner and inner[ARP].op == 1:
            out.append(inner)
        if ICMPv6ND_NS in inner and inner[Ether].dst.startswith("33:33:ff"):
            out.append(inner)
    return out


def test_first_ping_succeeds_with_no_arp_or_ns_crossing_a_tunnel(ctl, make_bed):
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port))
    bed = overlay.bed
    for vm in bed.vms:
        bed.flush_neighbours(vm)
    caps = [bed.underlay_capture(hv) for hv in bed.hvs]
    assert bed.ping("a1", "10.1.0.2", count=1)
    assert bed.ping("a1", "fd00:1::3", count=1)
    assert bed.ping("r2", "10.1.0.1", count=1)
    time.sleep(0.3)
    tunnelled = [p for cap in caps for p in cap.stop()]
    assert any(VXLAN in p for p in tunnelled)  # the echoes did cross: the capture works
    assert inner_broadcasts(tunnelled) == []
    stats = ctl.api("GET", "/v1/stats")[1]
    assert stats["nd_answered"] == 0  # a1's solicitation for fd00:1::3 was answered by its switch, not the controller
    deadline = time.monotonic() + 12  # the app reads the responders' counters every 5 s
    while ctl.api("GET", "/v1/stats")[1]["arp_answered_in_switch"] < 2:
        assert time.monotonic() < deadline, "the in-switch ARP answers were never counted"
        time.sleep(0.2)


def test_port_declared_without_location_is_learned_from_its_first_frames(ctl, make_bed):
    """The VM sends a GARP; its kernel may already have announced its IPv6 addresses (DAD, MLD),
    which teach the controller the location just as well: either way it is learned once."""
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port), ports={k: v for k, v in PORTS.items() if k in ("a1", "a2")})
    bed = overlay.bed
    put(ctl, "/v1/ports/l5", {"network": "blue", "mac": "02:aa:00:00:00:05", "ips": ["10.1.0.5", "fd00:1::5"]})
    assert ctl.api("GET", "/v1/ports/l5")[1]["hypervisor"] is None
    bed.add_vm("l5", "hv3", "tapL5", "02:aa:00:00:00:05", ["10.1.0.5", "fd00:1::5"])
    overlay.send_frame("l5", GARP.format(mac="02:aa:00:00:00:05", ip="10.1.0.5"))
    overlay.wait_in_sync()
    port = ctl.api("GET", "/v1/ports/l5")[1]
    assert (port["hypervisor"], port["interface"], port["location_source"]) == ("hv3", "tapL5", "learned")
    assert bed.ping("a1", "10.1.0.5", count=1)
    assert bed.ping("l5", "fd00:1::2", count=1)
    assert ctl.api("GET", "/v1/stats")[1]["learned"] == 1


def test_an_undeclared_mac_is_not_learned(ctl, make_bed):
    overlay = deploy(ctl, make_bed(2, ctl.ofp_port), ports={k: v for k, v in PORTS.items() if k in ("a1", "a2")})
    bed = overlay.bed
    bed.add_vm("x9", "hv2", "tapX9", "02:ee:00:00:00:09", ["10.1.0.9"])
    overlay.send_frame("x9", GARP.format(mac="02:ee:00:00:00:09", ip="10.1.0.9"))
    deadline = time.monotonic() + 5
    while ctl.api("GET", "/v1/stats")[1]["dropped_unknown_source"] < 1:
        assert time.monotonic() < deadline, "the controller never saw the frame"
        time.sleep(0.05)
    assert not bed.ping("x9", "10.1.0.1", count=1, wait=1)
    assert ctl.api("GET", "/v1/ports")[1]["ports"] == [ctl.api("GET", f"/v1/ports/{n}")[1] for n in ("a1", "a2")]


def test_a_vm_moved_to_another_hypervisor_is_reachable_after_one_garp(ctl, make_bed):
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port), ports={k: v for k, v in PORTS.items() if k in ("a1", "a2", "a3")})
    bed = overlay.bed
    assert bed.ping("a1", "10.1.0.2")
    net, mac, ips, hv, iface = PORTS["a2"]  # a declared location makes a port "declared": let it roam
    put(ctl, "/v1/ports/a2", {"network": net, "mac": mac, "ips": ips, "hypervisor": hv, "interface": iface,
                              "mobility": "learn"})
    bed.move_vm("a2", "hv3")
    overlay.send_frame("a2", GARP.format(mac="02:aa:00:00:00:02", ip="10.1.0.2"))
    overlay.wait_in_sync()
    port = ctl.api("GET", "/v1/ports/a2")[1]
    assert (port["hypervisor"], port["location_source"], port["mobility_seq"]) == ("hv3", "learned", 1)
    assert bed.ping("a1", "10.1.0.2", count=1)
    assert bed.ping("a2", "fd00:1::1", count=1)
    # hv2 no longer hosts blue: its flows for it are gone
    assert not any("0x1389" in line.split(",")[0] for line in bed.dump_flows("hv2"))
