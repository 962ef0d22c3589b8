"""A hostile VM on real Open vSwitch (issue #16 item 2).

VM x1 (tenant acme, network blue, on hv1) sends every attack below in one burst. Each frame
carries a marker of its own (in its payload, an ARP trailer, an unknown ND option or a BOOTP
field) and tcpdump watches the other VMs (a2 and a3 of its own network, r1 and r2 of tenant
globex, which reuse blue's MAC and IP addresses, r1 on x1's own hypervisor) and every
hypervisor's underlay link. Each case then says where its marker may be seen:

* ``DROP``: nowhere (port security stops it on hv1);
* ``TENANT``: only in x1's own network (blue VMs, VXLAN with blue's VNI), never at globex.

Afterwards no neighbour cache (VMs, the mapping, the router's neighbour flows) holds x1's MAC
for an address that is not x1's, no rogue router or prefix was accepted, and the packet-ins
that a MAC flood caused stayed within the port's meter.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.vxlan import VXLAN

from ryu_overlay.pipeline import PACKET_IN_BURST, TABLE_IDS
from ryu_overlay.testing import netns_testbed
from ryu_overlay.testing.controller_proc import ControllerProcess
from ryu_overlay.testing.overlay import PORTS, Overlay, deploy, put

X_MAC, X_IP, X_IP6, X_LL = "02:ee:00:00:00:66", "10.1.0.66", "fd00:1::66", "fe80::ee:ff:fe00:66"
A2_MAC, A3_MAC = PORTS["a2"][1], PORTS["a3"][1]
ROUTER_IP, ROUTER_IP6 = "10.1.0.254", "fd00:1::fe"
BLUE_VNI = 5001
DROP, TENANT = "drop", "tenant"
VICTIMS = ("a2", "a3", "r1", "r2")
OTHER_TENANT = ("r1", "r2")
FLOOD_FRAMES = 400
MAC_FLOOD_FRAMES = 1000

E = f"Ether(src='{X_MAC}', dst='ff:ff:ff:ff:ff:ff')"
E6 = f"Ether(src='{X_MAC}', dst='33:33:00:00:00:01')"
E_A2 = f"Ether(src='{X_MAC}', dst='{A2_MAC}')"
NA_ALL = f"IPv6(src='{X_LL}', dst='ff02::1', hlim=255)"
RA = "ICMPv6ND_RA(routerlifetime=1800)/ICMPv6NDOptPrefixInfo(prefix='fd66::', prefixlen=64)"


def option(marker: str) -> str:
    """An ND option of an unassigned type carrying the marker: receivers skip it (RFC 4861 4.6)."""
    return f"ICMPv6NDOptUnknown(type=253, len=2, data=b'{marker}')"


@dataclass(frozen=True)
class Case:
    name: str
    expect: str
    frames: str  # a scapy expression for one frame or a list of frames; MARK is replaced by the marker


CASES = (
    Case("spoofed source MAC (a VM of this and of the other tenant)", DROP,
         f"[Ether(src='{A2_MAC}', dst='ff:ff:ff:ff:ff:ff')/IP(src='{X_IP}', dst='10.1.0.255')/UDP()/Raw(b'MARK'),"
         f" Ether(src='{PORTS['r1'][1]}', dst='{A2_MAC}')/IP(src='{X_IP}', dst='10.1.0.2')/UDP()/Raw(b'MARK')]"),
    Case("spoofed source IPv4 and IPv6", DROP,
         f"[{E_A2}/IP(src='10.1.0.3', dst='10.1.0.2')/UDP()/Raw(b'MARK'),"
         f" {E_A2}/IPv6(src='fd00:1::3', dst='fd00:1::2')/UDP()/Raw(b'MARK')]"),
    Case("ARP replies claiming another VM's and the router's address", DROP,
         f"[{E}/ARP(op=2, hwsrc='{X_MAC}', psrc='10.1.0.3', pdst='10.1.0.3')/Raw(b'MARK'),"
         f" {E_A2}/ARP(op=2, hwsrc='{X_MAC}', psrc='{ROUTER_IP}', hwdst='{A2_MAC}', pdst='10.1.0.2')/Raw(b'MARK'),"
         f" {E}/ARP(op=1, hwsrc='{X_MAC}', psrc='{ROUTER_IP}', pdst='{ROUTER_IP}')/Raw(b'MARK'),"
         f" {E_A2}/ARP(op=2, hwsrc='{A3_MAC}', psrc='{X_IP}', hwdst='{A2_MAC}', pdst='10.1.0.2')/Raw(b'MARK')]"),
    Case("Neighbor Advertisements claiming another VM's and the router's address", DROP,
         f"[{E6}/{NA_ALL}/ICMPv6ND_NA(tgt='fd00:1::3', R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr='{X_MAC}')/"
         f"{option('MARK')},"
         f" {E6}/{NA_ALL}/ICMPv6ND_NA(tgt='{ROUTER_IP6}', R=1, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr='{X_MAC}')/"
         f"{option('MARK')}]"),
    Case("Neighbor Advertisement for its own address naming another VM's MAC", DROP,
         f"{E_A2}/IPv6(src='{X_IP6}', dst='fd00:1::2', hlim=255)/ICMPv6ND_NA(tgt='{X_IP6}', R=0, S=1, O=1)/"
         f"ICMPv6NDOptDstLLAddr(lladdr='{A3_MAC}')/{option('MARK')}"),
    Case("Neighbor Solicitation from its own address naming another VM's MAC", DROP,
         f"{E_A2}/IPv6(src='{X_IP6}', dst='fd00:1::2', hlim=255)/ICMPv6ND_NS(tgt='fd00:1::2')/"
         f"ICMPv6NDOptSrcLLAddr(lladdr='{A3_MAC}')/{option('MARK')}"),
    Case("Router Advertisement", DROP, f"{E6}/{NA_ALL}/{RA}/{option('MARK')}"),
    Case("Router Advertisement and NA behind hop-by-hop and destination options headers", DROP,
         f"[{E6}/{NA_ALL}/IPv6ExtHdrHopByHop()/{RA}/{option('MARK')},"
         f" {E6}/{NA_ALL}/IPv6ExtHdrDestOpt()/{RA}/{option('MARK')},"
         f" {E6}/{NA_ALL}/IPv6ExtHdrHopByHop()/IPv6ExtHdrDestOpt()/ICMPv6ND_NA(tgt='{ROUTER_IP6}', R=1, O=1)/"
         f"ICMPv6NDOptDstLLAddr(lladdr='{X_MAC}')/{option('MARK')}]"),
    # Open vSwitch reads no ICMPv6 type from a fragment, so this passes port security; Linux drops
    # fragmented Neighbor Discovery (RFC 6980), which the poisoning test checks.
    Case("first fragment of a Router Advertisement", TENANT,
         f"{E6}/{NA_ALL}/IPv6ExtHdrFragment(id=7, m=1, offset=0)/{RA}/{option('MARK')}"),
    # Not cross-tenant, and harmless inside: a later fragment has no ICMPv6 header to match, and Linux
    # discards fragmented Neighbor Discovery (RFC 6980) and fragments it cannot reassemble.
    Case("later fragments (IPv6, IPv4) from the VM's own address", TENANT,
         f"[{E6}/{NA_ALL}/IPv6ExtHdrFragment(id=7, m=0, offset=8, nh=58)/Raw(b'MARK'),"
         f" {E}/IP(src='{X_IP}', dst='10.1.0.255', proto=17, frag=8)/Raw(b'MARK')]"),
    Case("fragments with a spoofed source", DROP,
         f"[{E_A2}/IPv6(src='fd00:1::3', dst='fd00:1::2')/IPv6ExtHdrFragment(id=8, m=1)/UDP()/Raw(b'MARK'),"
         f" {E_A2}/IP(src='10.1.0.3', dst='10.1.0.2', flags='MF')/UDP()/Raw(b'MARK')]"),
    Case("DHCP offers (from the server port and from any other port)", DROP,
         f"[{E}/IP(src='{X_IP}', dst='255.255.255.255')/UDP(sport=67, dport=68)/"
         f"BOOTP(op=2, yiaddr='10.1.0.99', sname=b'MARK')/DHCP(options=[('message-type', 'offer'), "
         f"('server_id', '{X_IP}'), ('router', '{X_IP}'), 'end']),"
         f" {E}/IP(src='{X_IP}', dst='255.255.255.255')/UDP(sport=4067, dport=68)/"
         f"BOOTP(op=2, yiaddr='10.1.0.99', sname=b'MARK')/DHCP(options=[('message-type', 'offer'), "
         f"('server_id', '{X_IP}'), ('router', '{X_IP}'), 'end'])]"),
    Case("DHCPv6 advertise", DROP,
         f"[Ether(src='{X_MAC}', dst='33:33:00:01:00:02')/IPv6(src='{X_LL}', dst='ff02::1:2')/"
         f"UDP(sport=547, dport=546)/Raw(b'MARK'),"
         f" Ether(src='{X_MAC}', dst='33:33:00:00:00:01')/IPv6(src='{X_LL}', dst='ff02::1')/"
         f"UDP(sport=4547, dport=546)/Raw(b'MARK')]"),
    Case("VLAN-tagged frames", DROP,
         f"[{E_A2}/Dot1Q(vlan=5)/IP(src='{X_IP}', dst='10.1.0.2')/UDP()/Raw(b'MARK'),"
         f" {E}/Dot1Q(vlan=0)/ARP(op=1, hwsrc='{X_MAC}', psrc='{X_IP}', pdst='10.1.0.77')/Raw(b'MARK')]"),
    Case("QinQ frames (802.1ad and double 802.1Q)", DROP,
         f"[Ether(src='{X_MAC}', dst='{A2_MAC}', type=0x88a8)/Dot1Q(vlan=5)/Dot1Q(vlan=6)/"
         f"IP(src='{X_IP}', dst='10.1.0.2')/UDP()/Raw(b'MARK'),"
         f" {E_A2}/Dot1Q(vlan=5)/Dot1Q(vlan=6)/IP(src='{X_IP}', dst='10.1.0.2')/UDP()/Raw(b'MARK')]"),
    Case("LLDP and STP", DROP,
         f"[Ether(src='{X_MAC}', dst='01:80:c2:00:00:0e', type=0x88cc)/Raw(b'MARK'),"
         f" Ether(src='{X_MAC}', dst='01:80:c2:00:00:00')/LLC()/STP()/Raw(b'MARK')]"),
    Case("a flood of unknown unicast", TENANT,
         f"[Ether(src='{X_MAC}', dst='02:77:00:00:%02x:%02x' % (i >> 8, i & 255))/IP(src='{X_IP}', dst='10.1.0.77')/"
         f"UDP()/Raw(b'MARK') for i in range({FLOOD_FRAMES})]"),
    Case("a flood of frames from unknown MACs", DROP,
         f"[Ether(src='02:99:00:00:%02x:%02x' % (i >> 8, i & 255), dst='ff:ff:ff:ff:ff:ff')/"
         f"IP(src='{X_IP}', dst='10.1.0.255')/UDP()/Raw(b'MARK') for i in range({MAC_FLOOD_FRAMES})]"),
)


HIJACK = "HOSTILE-hijack"


def marker(i: int) -> str:
    return f"HOSTILE-{i:02d}-xyz"  # 14 bytes: with its 2-byte header, one 16-byte ND option


@dataclass
class Burst:
    overlay: Overlay
    seen_at: dict[str, list[bytes]]  # VM name or "underlay:<hv>:<vni>" -> raw frames seen there
    neighbours: dict[str, str]  # VM -> `ip neigh` and `ip -6 route` after the attack
    ports_before: Any
    ports_after: Any
    neighbour_flows_before: dict[str, set[str]]
    neighbour_flows_after: dict[str, set[str]]
    meter_before: tuple[int, int]
    meter_after: tuple[int, int]
    packet_in_before: int
    packet_in_after: int
    router_mac: str
    stats: dict[str, int]


def neighbour_flows(overlay: Overlay) -> dict[str, set[str]]:
    table = TABLE_IDS["l3_neighbour"]
    return {hv: {re.sub(r"duration=[^,]+, |n_packets=\d+, |n_bytes=\d+, |idle_age=\d+, ", "", f)
                 for f in overlay.bed.dump_flows(hv) if f"table={table}," in f} for hv in overlay.bed.hvs}


def meter_counts(overlay: Overlay, ofport: int) -> tuple[int, int]:
    """(packets that entered the port's packet-in meter, packets its band dropped)."""
    out = overlay.bed.hvs["hv1"].ovs.ofctl("meter-stats", f"meter={ofport}")
    entered = int(re.search(r"packet_in_count:(\d+)", out).group(1))  # type: ignore[union-attr]
    dropped = int(re.search(r"0: packet_count:(\d+)", out).group(1))  # type: ignore[union-attr]
    return entered, dropped


def send_all(overlay: Overlay) -> None:
    exprs = ",\n".join(f"*as_list({case.frames.replace('MARK', marker(i))})" for i, case in enumerate(CASES))
    code = ("import logging; logging.getLogger('scapy').setLevel(logging.ERROR)\n"
            "from scapy.all import *\n"
            "from scapy.layers.l2 import Dot1AD\n"
            "def as_list(f): return f if isinstance(f, list) else [f]\n"
            f"sendp([{exprs}], iface='eth0', verbose=False)")
    out = overlay.bed.vm_exec("x1", [sys.executable, "-c", code], timeout=120)
    assert out.returncode == 0, out.stderr


def warm_neighbours(overlay: Overlay) -> None:
    """Fill the victims' caches with the true entries, so that a poisoning update would show."""
    bed = overlay.bed
    for vm, targets in (("a2", ("10.1.0.3", "fd00:1::3", "10.1.0.1", X_IP, X_IP6)),
                        ("a3", ("10.1.0.2", "fd00:1::2")), ("r2", ("10.1.0.1", "fd00:1::1")),
                        ("r1", ("10.1.0.2", "fd00:1::2"))):
        for target in targets:
            assert bed.ping(vm, target, count=1, wait=3), (vm, target)
    for target in (ROUTER_IP, ROUTER_IP6):  # the router answers no ping, but its address is resolved
        bed.ping("a2", target, count=1, wait=1)


@pytest.fixture(scope="module")
def burst() -> Iterator[Burst]:
    with tempfile.TemporaryDirectory(prefix="ryu-overlay-hostile-") as tmp_name:
        tmp = Path(tmp_name)
        ctl = ControllerProcess(tmp / "overlay.db", tmp / "controller.log")
        ctl.start()
        bed = netns_testbed.Testbed(tmp, ctl.ofp_port)
        try:
            bed.build(3)
            ports = {**PORTS, "x1": ("blue", X_MAC, [X_IP, X_IP6], "hv1", "tapX1")}
            overlay = deploy(ctl, bed, ports)
            bed.add_vm("z1", "hv1", "tapZ1", "02:ee:00:00:00:77", [])  # an interface no port is bound to
            interfaces = [{"network": "blue", "ip": f"{ROUTER_IP}/24"}, {"network": "blue", "ip": f"{ROUTER_IP6}/64"}]
            router_mac = put(ctl, "/v1/routers/gw", {"tenant": "acme", "interfaces": interfaces})["mac"]
            overlay.wait_in_sync()
            warm_neighbours(overlay)
            yield run_burst(overlay, router_mac)
        finally:
            bed.close()
            ctl.stop()


def run_burst(overlay: Overlay, router_mac: str) -> Burst:
    bed, ctl = overlay.bed, overlay.ctl
    x1_port = bed.ofport("hv1", "tapX1")
    ports_before = ctl.ok("GET", "/v1/ports")
    flows_before = neighbour_flows(overlay)
    meter_before = meter_counts(overlay, x1_port)
    packet_in_before = ctl.ok("GET", "/v1/stats")["packet_in"]
    caps = {vm: bed.capture(bed.vms[vm].netns, "eth0", "-Q in") for vm in VICTIMS}
    underlay = {hv: bed.underlay_capture(hv) for hv in bed.hvs}
    send_all(overlay)
    # From the unbound interface: a3's MAC and address (a3 has no twin in globex, so the frame names
    # one port), as a VM taking over a3's location would send.
    overlay.send_frame("z1", f"Ether(src='{A3_MAC}', dst='ff:ff:ff:ff:ff:ff')/ARP(op=1, hwsrc='{A3_MAC}', "
                             f"psrc='10.1.0.3', pdst='10.1.0.3')/Raw(b'{HIJACK}')")
    time.sleep(1.0)
    seen_at: dict[str, list[bytes]] = {vm: [bytes(p) for p in cap.stop()] for vm, cap in caps.items()}
    for hv, cap in underlay.items():
        for p in cap.stop():
            if VXLAN in p:
                seen_at.setdefault(f"underlay:{hv}:{p[VXLAN].vni}", []).append(bytes(p[VXLAN].payload))
    state = (["ip", "neigh"], ["ip", "-6", "neigh"], ["ip", "-6", "route"], ["ip", "-4", "addr"])
    neighbours = {vm: "".join(bed.vm_exec(vm, cmd).stdout for cmd in state) for vm in VICTIMS}
    return Burst(overlay, seen_at, neighbours, ports_before, ctl.ok("GET", "/v1/ports"), flows_before,
                 neighbour_flows(overlay), meter_before, meter_counts(overlay, x1_port), packet_in_before,
                 ctl.ok("GET", "/v1/stats")["packet_in"], router_mac, ctl.ok("GET", "/v1/stats"))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.name for c in CASES])
def test_each_attack_reaches_no_other_tenant_and_dropped_ones_reach_nobody(burst: Burst, index: int) -> None:
    case, mark = CASES[index], marker(index).encode()
    where = sorted(place for place, frames in burst.seen_at.items() if any(mark in f for f in frames))
    if case.expect == DROP:
        assert where == [], f"{case.name} reached {where}"
    else:
        allowed = {"a2", "a3", *(f"underlay:{hv}:{BLUE_VNI}" for hv in burst.overlay.bed.hvs)}
        assert set(where) <= allowed, f"{case.name} reached {sorted(set(where) - allowed)}"
    assert not any(mark in f for vm in OTHER_TENANT for f in burst.seen_at[vm])


def test_a_declared_ports_mac_from_an_unbound_interface_moves_nothing_and_reaches_nobody(burst: Burst) -> None:
    assert burst.stats["moves_refused_declared"] >= 1 and burst.stats["moves"] == 0
    assert burst.ports_after == burst.ports_before  # a3 is still on hv3
    assert not [place for place, frames in burst.seen_at.items() if any(HIJACK.encode() in f for f in frames)]


def test_the_attacks_can_be_seen_where_they_are_allowed(burst: Burst) -> None:
    """The captures work: the unknown-unicast flood does reach x1's own network's hypervisors (which
    drop it: unicast from a tunnel to a MAC they do not host)."""
    mark = marker(next(i for i, c in enumerate(CASES) if c.name == "a flood of unknown unicast")).encode()
    for place in (f"underlay:hv{i}:{BLUE_VNI}" for i in (1, 2, 3)):
        assert sum(mark in f for f in burst.seen_at.get(place, [])) >= FLOOD_FRAMES // 2, place


def test_no_neighbour_cache_route_or_address_is_poisoned(burst: Burst) -> None:
    # Both tenants use the same addresses and MACs; only acme has x1 and the router.
    owners = {X_IP: X_MAC, X_IP6: X_MAC, X_LL: X_MAC, ROUTER_IP: burst.router_mac, ROUTER_IP6: burst.router_mac,
              **{ip: mac for name, (_, mac, ips, _, _) in PORTS.items() for ip in ips}}
    assert "lladdr " + burst.router_mac in burst.neighbours["a2"]  # the router's entry is there to poison
    for vm, text in burst.neighbours.items():
        for line in text.splitlines():
            fields = line.split()
            if "lladdr" in fields and fields[0] in owners:
                assert fields[fields.index("lladdr") + 1] == owners[fields[0]], (vm, line)
            if X_MAC in line:
                assert fields[0] in (X_IP, X_IP6, X_LL), (vm, line)
            assert "fd66" not in line, (vm, line)  # the rogue prefix
            assert not (" via " in line and X_LL in line), (vm, line)  # the rogue router
        assert "10.1.0.99" not in text, vm  # no rogue DHCP lease
    # The mapping (the controller's neighbour cache) and the router's neighbour flows did not change.
    assert burst.ports_after == burst.ports_before
    assert burst.neighbour_flows_after == burst.neighbour_flows_before


def test_packet_ins_from_the_mac_flood_stay_within_the_ports_meter(burst: Burst) -> None:
    entered = burst.meter_after[0] - burst.meter_before[0]
    dropped = burst.meter_after[1] - burst.meter_before[1]
    passed = entered - dropped
    assert entered >= MAC_FLOOD_FRAMES  # every frame of an unknown MAC went to the meter
    assert dropped > 0 and passed < MAC_FLOOD_FRAMES // 2
    assert burst.packet_in_after - burst.packet_in_before <= passed + PACKET_IN_BURST

