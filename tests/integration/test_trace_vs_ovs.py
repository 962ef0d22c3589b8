"""``ryu-overlay trace`` against Open vSwitch's own ``ofproto/trace``, frame by frame.

A deployed overlay (real controller, three hypervisors with their own OVS) gets a few hundred
random frames, each traced twice on the hypervisor bridge where it enters: by the simulator,
fed with the placement and port numbers read from the live controller's REST API (what
``ryu-overlay trace --url`` does), and by ``ovs-appctl ofproto/trace`` on the real bridge. Both
must give the same verdict: dropped, or the multiset of outputs (local OpenFlow port, tunnel
with destination and VNI, controller).

The VMs are added in reverse name order, so that OVS numbers their ports differently from
the guess ``trace`` makes without a controller; a control run with the guessed numbers, and one
with a flow family left out of the simulation, must disagree with OVS.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrHopByHop,
    RouterAlert,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet as ScapyPacket, Raw

from ryu_overlay.model import link_local
from ryu_overlay.pipeline import Family, cookie_family
from ryu_overlay.testing.overlay import NETWORKS, PORTS as OVERLAY_PORTS, Overlay, deploy
from ryu_overlay.trace import SimNet, assumed_ofports, controller_from_rest, format_fabric, port_numbers

if TYPE_CHECKING:
    from ryu_overlay.testing.netns_testbed import Testbed

SEED = 20261129
FRAMES = 240
# The deployed overlay's ports and one more, in reverse name order (see the module docstring).
# r3's MAC and addresses are red's alone: to a blue VM they are another tenant's.
PORTS: dict[str, tuple[str, str, list[str], str, str]] = {
    "r3": ("red", "02:bb:00:00:00:04", ["10.1.0.4", "fd00:1::4"], "hv2", "tapR3"),
    **dict(sorted(OVERLAY_PORTS.items(), reverse=True)),
}
VNIS = NETWORKS
BROADCAST = "ff:ff:ff:ff:ff:ff"
Verdict = tuple[tuple[Any, ...], ...]  # sorted: ("port", ofport) | ("tunnel", ip, vni) | ("controller",)


@dataclass(frozen=True)
class Case:
    kind: str
    hv: str
    in_port: str  # interface name
    frame: ScapyPacket
    tun_src: str | None = None
    tun_id: int | None = None


# --- frames -------------------------------------------------------------------------------------


def solicited_node(ip: str) -> tuple[str, str]:
    low = int(ipaddress.IPv6Address(ip)) & 0xFFFFFF
    group = str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("ff02::1:ff00:0")) | low))
    return group, f"33:33:ff:{low >> 16:02x}:{(low >> 8) & 0xFF:02x}:{low & 0xFF:02x}"


def random_mac(rng: random.Random) -> str:
    return "02:cc:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(4))


def make_cases(rng: random.Random, bed: Testbed, count: int) -> list[Case]:
    vms = sorted(PORTS)
    hvs = sorted(bed.hvs)
    all_macs = sorted({p[1] for p in PORTS.values()})
    all_v4 = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.99"]
    all_v6 = ["fd00:1::1", "fd00:1::2", "fd00:1::3", "fd00:1::4", "fd00:1::99"]

    def vm_case(kind: str, make: Callable[[str, str, str, str], ScapyPacket]) -> Callable[[], Case]:
        def build() -> Case:
            name = rng.choice(vms)
            net, mac, ips, hv, iface = PORTS[name]
            return Case(kind, hv, iface, make(mac, ips[0], ips[1], net))
        return build

    def peer_mac(mac: str) -> str:
        return rng.choice([m for m in all_macs if m != mac])

    def unicast_v4(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        return Ether(src=mac, dst=peer_mac(mac)) / IP(src=v4, dst=rng.choice(all_v4)) / ICMP()

    def unicast_v6(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        src = rng.choice([v6, str(link_local(mac))])
        return Ether(src=mac, dst=peer_mac(mac)) / IPv6(src=src, dst=rng.choice(all_v6)) / ICMPv6EchoRequest()

    def cross_tenant(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        ours = {q[1] for q in PORTS.values() if q[0] == net}
        theirs = [p for p in PORTS.values() if p[0] != net and p[1] not in ours]
        other = rng.choice(theirs)
        return Ether(src=mac, dst=other[1]) / IP(src=v4, dst=other[2][0]) / ICMP()

    def unknown_dst(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        return Ether(src=mac, dst=random_mac(rng)) / IP(src=v4, dst="10.1.0.99") / UDP(dport=rng.randrange(1, 65536))

    def broadcast_ip(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        dst = rng.choice([BROADCAST, "01:00:5e:00:00:fb", "33:33:00:00:00:01"])
        return Ether(src=mac, dst=dst) / IP(src=v4, dst="10.1.0.255") / UDP(dport=5353)

    def arp_request(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        tpa = rng.choice(all_v4)  # known in this network, known in another tenant only, or nobody's
        return Ether(src=mac, dst=BROADCAST) / ARP(op=1, hwsrc=mac, psrc=v4, pdst=tpa)

    def arp_gratuitous(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        op = rng.choice([1, 2])
        return Ether(src=mac, dst=BROADCAST) / ARP(op=op, hwsrc=mac, psrc=v4, pdst=v4,
                                                   hwdst="00:00:00:00:00:00" if op == 1 else BROADCAST)

    def arp_reply(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        dst = peer_mac(mac)
        return Ether(src=mac, dst=dst) / ARP(op=2, hwsrc=mac, psrc=v4, hwdst=dst, pdst=rng.choice(all_v4))

    def nd_ns(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        target = rng.choice([*all_v6, str(link_local(peer_mac(mac)))])
        group, gmac = solicited_node(target)
        src = rng.choice([v6, "::"])
        ns = ICMPv6ND_NS(tgt=target, code=rng.choice([0, 0, 0, 1]))
        if src != "::":
            ns = ns / ICMPv6NDOptSrcLLAddr(lladdr=mac)
        return Ether(src=mac, dst=gmac) / IPv6(src=src, dst=group, hlim=255) / ns

    def nd_na(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        target = rng.choice([v6, v6, str(link_local(mac)), *all_v6])
        code = rng.choice([0, 0, 1])  # OVS reads no target from an NA whose code is not 0
        if rng.random() < 0.5:
            return (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=v6, dst="ff02::1", hlim=255)
                    / ICMPv6ND_NA(tgt=target, R=0, S=0, O=1, code=code) / ICMPv6NDOptDstLLAddr(lladdr=mac))
        dst = peer_mac(mac)
        return (Ether(src=mac, dst=dst) / IPv6(src=v6, dst=rng.choice(all_v6), hlim=255)
                / ICMPv6ND_NA(tgt=target, R=0, S=1, O=1, code=code) / ICMPv6NDOptDstLLAddr(lladdr=mac))

    def nd_na_code(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        target = rng.choice([v6, str(link_local(mac))])  # its own address: allowed only with code 0
        return (Ether(src=mac, dst=peer_mac(mac)) / IPv6(src=v6, dst=rng.choice(all_v6), hlim=255)
                / ICMPv6ND_NA(tgt=target, R=0, S=1, O=1, code=rng.choice([0, 1, 2, 255]))
                / ICMPv6NDOptDstLLAddr(lladdr=mac))

    def mld_report(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        # As Linux sends while its address is tentative: from ::, behind a hop-by-hop header.
        src = rng.choice(["::", str(link_local(mac)), v6])
        return (Ether(src=mac, dst="33:33:00:00:00:16") / IPv6(src=src, dst="ff02::16", hlim=1)
                / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLReport2())

    def spoofed(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        way = rng.randrange(5)
        if way == 0:  # another port's MAC
            return Ether(src=peer_mac(mac), dst=BROADCAST) / ARP(op=1, hwsrc=peer_mac(mac), psrc=v4, pdst="10.1.0.2")
        if way == 1:  # a MAC nobody has
            return Ether(src=random_mac(rng), dst=peer_mac(mac)) / IP(src=v4, dst="10.1.0.2") / ICMP()
        if way == 2:  # its MAC, another's IPv4
            other = rng.choice([a for a in all_v4 if a != v4])
            return Ether(src=mac, dst=peer_mac(mac)) / IP(src=other, dst="10.1.0.2") / ICMP()
        if way == 3:  # ARP claiming another address or hardware address
            other = rng.choice([a for a in all_v4 if a != v4])
            return Ether(src=mac, dst=BROADCAST) / ARP(op=rng.choice([1, 2]), hwsrc=rng.choice([mac, random_mac(rng)]),
                                                       psrc=rng.choice([v4, other]), pdst="10.1.0.2")
        other6 = rng.choice([a for a in all_v6 if a != v6])
        return Ether(src=mac, dst=peer_mac(mac)) / IPv6(src=other6, dst="fd00:1::2") / ICMPv6EchoRequest()

    def other_ethertype(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        etype = rng.choice([0x88CC, 0x8035, 0x88B5, 0x0842])
        return Ether(src=mac, dst=rng.choice([BROADCAST, peer_mac(mac)]), type=etype) / Raw(b"\x00" * 46)

    def tagged(mac: str, v4: str, v6: str, net: str) -> ScapyPacket:
        inner = rng.choice([arp_request, unicast_v4, arp_gratuitous])(mac, v4, v6, net)
        return Ether(src=inner[Ether].src, dst=inner[Ether].dst) / Dot1Q(vlan=rng.choice([0, 7, 100])) / inner.payload

    def from_tunnel() -> Case:
        hv = rng.choice(hvs)
        me = bed.hvs[hv].tunnel_ip
        peers = [h.tunnel_ip for h in bed.hvs.values() if h.tunnel_ip != me]
        if rng.random() < 0.6:  # a plausible frame: a network's VNI, towards one of its ports here or broadcast
            net = rng.choice(sorted(VNIS))
            tun_src, tun_id = rng.choice(peers), VNIS[net]
            here = [p[1] for p in PORTS.values() if p[0] == net and p[3] == hv]
            dst = rng.choice([*here, BROADCAST, "33:33:ff:00:00:02"] if here else [BROADCAST])
            src = rng.choice([p[1] for p in PORTS.values() if p[0] == net and p[3] != hv] or [random_mac(rng)])
        else:  # unknown sender, unhosted or unknown VNI, unknown or remote destination
            tun_src = rng.choice([*peers, "198.18.0.77"])
            tun_id = rng.choice([5001, 5002, 5099])
            src = rng.choice([*all_macs, random_mac(rng)])
            dst = rng.choice([*all_macs, BROADCAST, random_mac(rng)])
        inner = rng.choice([
            lambda: IP(src="10.1.0.9", dst=rng.choice(all_v4)) / ICMP(),
            lambda: ARP(op=1, hwsrc=src, psrc="10.1.0.9", pdst=rng.choice(all_v4)),
            lambda: IPv6(src="fd00:1::9", dst=solicited_node("fd00:1::2")[0], hlim=255) / ICMPv6ND_NS(tgt="fd00:1::2"),
        ])()
        return Case("from tunnel", hv, "vxlan0", Ether(src=src, dst=dst) / inner, tun_src, tun_id)

    builders: list[tuple[int, Callable[[], Case]]] = [
        (3, vm_case("unicast IPv4", unicast_v4)),
        (2, vm_case("unicast IPv6", unicast_v6)),
        (2, vm_case("unknown destination", unknown_dst)),
        (1, vm_case("cross-tenant destination", cross_tenant)),
        (1, vm_case("broadcast/multicast", broadcast_ip)),
        (3, vm_case("ARP request", arp_request)),
        (2, vm_case("gratuitous ARP", arp_gratuitous)),
        (1, vm_case("ARP reply", arp_reply)),
        (2, vm_case("ND NS", nd_ns)),
        (2, vm_case("ND NA", nd_na)),
        (1, vm_case("ND NA with a code", nd_na_code)),
        (1, vm_case("MLD report", mld_report)),
        (3, vm_case("spoofed source", spoofed)),
        (1, vm_case("other ethertype", other_ethertype)),
        (1, vm_case("VLAN-tagged", tagged)),
        (6, from_tunnel),
    ]
    weights = [w for w, _ in builders]
    return [rng.choices(builders, weights)[0][1]() for _ in range(count)]


def sim_packet(case: Case, ofports: dict[str, int]) -> dict[str, Any]:
    """The frame as the simulator's field mapping (OXM names, as OVS would extract them)."""
    f = case.frame
    pkt: dict[str, Any] = {"in_port": ofports[case.in_port], "eth_src": f[Ether].src, "eth_dst": f[Ether].dst,
                           "eth_type": f[Ether].type, "frame_len": len(raw(f))}
    if Dot1Q in f:  # OpenFlow's eth_type is the type after the tag
        pkt.update(eth_type=f[Dot1Q].type, vlan_vid=0x1000 | f[Dot1Q].vlan)
    if case.tun_id is not None:
        pkt.update(tunnel_id=case.tun_id, tun_ipv4_src=case.tun_src)
    if ARP in f:
        a = f[ARP]
        pkt.update(arp_op=a.op, arp_spa=a.psrc, arp_tpa=a.pdst, arp_sha=a.hwsrc, arp_tha=a.hwdst)
    elif IP in f:
        pkt.update(ipv4_src=f[IP].src, ipv4_dst=f[IP].dst, ip_proto=f[IP].proto)
    elif IPv6 in f:
        upper = f[IPv6].payload
        while isinstance(upper, IPv6ExtHdrHopByHop):  # OVS's ip_proto is the header after the extensions
            upper = upper.payload
        pkt.update(ipv6_src=f[IPv6].src, ipv6_dst=f[IPv6].dst, ip_proto=upper.underlayer.nh)
        if pkt["ip_proto"] == 58:
            icmp_type, icmp_code = raw(upper)[:2]
            pkt.update(icmpv6_type=icmp_type, icmpv6_code=icmp_code)
            if icmp_type in (135, 136):
                pkt["ipv6_nd_target"] = upper.tgt
                for option, name in ((ICMPv6NDOptSrcLLAddr, "ipv6_nd_sll"), (ICMPv6NDOptDstLLAddr, "ipv6_nd_tll")):
                    if option in upper:
                        pkt[name] = upper[option].lladdr
    return pkt


# --- verdicts -----------------------------------------------------------------------------------


def sim_verdict(net: SimNet, case: Case, ofports: dict[str, int], tunnel_ofport: int) -> tuple[Verdict, str]:
    result = net.send(case.hv, sim_packet(case, ofports))
    first = result.hops[0].result
    out: list[tuple[Any, ...]] = [("controller",)] * len(first.packet_ins)
    for o in first.outputs:
        if o.port == tunnel_ofport:
            out.append(("tunnel", str(o.packet.get("tun_ipv4_dst")), int(o.packet.get("tunnel_id", 0))))
        else:
            out.append(("port", o.port))
    return tuple(sorted(out, key=repr)), format_fabric(result)


def split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    if cur:
        parts.append(cur)
    return parts


def odp_to_ofport(dpif_show: str) -> dict[int, int]:
    """br-int's ports in ``dpif/show``: datapath port number -> OpenFlow port number."""
    out: dict[int, int] = {}
    section = None
    for line in dpif_show.splitlines():
        m = re.match(r"^\s+(\S+):$", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^\s+\S+ (\d+)/(\d+):", line)
        if m and section == "br-int" and int(m.group(1)) != 65534:
            out[int(m.group(2))] = int(m.group(1))
    return out


def ovs_verdict(trace: str, odp: dict[int, int], frame_len: int) -> Verdict:
    m = re.search(r"^Datapath actions: (.*)$", trace, re.MULTILINE)
    assert m, trace
    out: list[tuple[Any, ...]] = []

    def walk(actions: str) -> None:
        for part in split_top(actions):
            act = part.strip()
            if act.isdigit():
                if int(act) in odp:  # otherwise br-phy's uplink, carrying a tunnel packet pushed before
                    out.append(("port", odp[int(act)]))
            elif act.startswith("clone("):
                walk(act[len("clone("):-1])
            elif act.startswith("sample("):  # the controller meter wraps a packet-in: sample(...,actions(...))
                walk(next(p for p in split_top(act[len("sample("):-1]) if p.startswith("actions("))[len("actions("):-1])
            elif act.startswith("check_pkt_len("):  # check_pkt_len(size=N,gt(...),le(...)): the frame's branch
                size, greater, smaller = split_top(act[len("check_pkt_len("):-1])
                branch = greater if frame_len > int(size.removeprefix("size=")) else smaller
                walk(branch[3:-1])
            elif act.startswith("tnl_push("):
                dst = re.search(r"ipv4\(src=[^,]+,dst=([^,]+),", act)
                vni = re.search(r"vxlan\(flags=[^,]+,vni=(0x[0-9a-f]+)\)", act)
                assert dst and vni, act
                out.append(("tunnel", dst.group(1), int(vni.group(1), 16)))
            elif act.startswith("userspace(") and "controller(" in act:
                out.append(("controller",))
            elif act == "drop" or act.startswith(("set(", "meter(", "masked_set(")):
                pass
            else:
                raise AssertionError(f"datapath action not understood: {act}\n{trace}")

    walk(m.group(1))
    return tuple(sorted(out, key=repr))


def ovs_trace(overlay: Overlay, case: Case, ofports: dict[str, int]) -> str:
    flow = f"in_port={ofports[case.in_port]}"
    if case.tun_id is not None:
        flow += f",tun_id={case.tun_id:#x},tun_src={case.tun_src},tun_dst={overlay.bed.hvs[case.hv].tunnel_ip}"
    return overlay.bed.hvs[case.hv].ovs.appctl("ofproto/trace", "br-int", flow, raw(case.frame).hex())


def kind_of(verdict: Verdict) -> str:
    if not verdict:
        return "dropped"
    return "+".join(sorted({v[0] for v in verdict}))


def compare(net: SimNet, cases: list[Case], traces: list[str], ofports: dict[str, dict[str, int]],
            odp: dict[str, dict[int, int]]) -> tuple[Counter[str], list[str]]:
    """Counts per (case kind, OVS's verdict kind), and a report of every mismatch.

    ``ofports`` are the port numbers the simulator was given: a frame enters its interface's
    number there, as ``in_port=tapA1`` does in ``ryu-overlay trace``.
    """
    counts: Counter[str] = Counter()
    mismatches: list[str] = []
    for case, trace in zip(cases, traces, strict=False):
        sim, sim_text = sim_verdict(net, case, ofports[case.hv], ofports[case.hv]["vxlan0"])
        ovs = ovs_verdict(trace, odp[case.hv], len(raw(case.frame)))
        counts[f"{case.kind}: {kind_of(ovs)}"] += 1
        if sim != ovs:
            mismatches.append(f"--- {case.kind} on {case.hv} from {case.in_port} "
                              f"(tun_id={case.tun_id}, tun_src={case.tun_src})\n{case.frame.summary()}\n"
                              f"hex {raw(case.frame).hex()}\nsimulator: {sim}\nOVS:       {ovs}\n"
                              f"simulator trace:\n{sim_text}\nOVS trace:\n{trace}")
    return counts, mismatches


def test_trace_agrees_with_ovs_ofproto_trace_on_random_frames(ctl, make_bed):
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port), ports=PORTS)
    bed = overlay.bed
    controller, live = controller_from_rest(ctl.url)
    real, sources = port_numbers(controller, live, {})
    assert set(sources.values()) == {"switch"}
    assert real == {hv: {i: bed.ofport(hv, i) for i in (*(p[4] for p in PORTS.values() if p[3] == hv), "vxlan0")}
                    for hv in bed.hvs}
    odp = {hv: odp_to_ofport(bed.hvs[hv].ovs.appctl("dpif/show")) for hv in bed.hvs}

    cases = make_cases(random.Random(SEED), bed, FRAMES)
    traces = [ovs_trace(overlay, case, real[case.hv]) for case in cases]

    counts, mismatches = compare(SimNet(controller, real), cases, traces, real, odp)
    print(f"\n{len(cases)} frames, seed {SEED}; per kind of frame and OVS's verdict:")
    for key, n in sorted(counts.items()):
        print(f"  {n:4d}  {key}")
    verdicts = Counter(key.split(": ")[1] for key in counts.elements())
    print("verdicts: " + ", ".join(f"{k} {n}" for k, n in sorted(verdicts.items())))
    assert not mismatches, f"{len(mismatches)} of {len(cases)} frames disagree:\n" + "\n".join(mismatches[:5])
    assert {"dropped", "port", "tunnel", "controller"} <= {k for v in verdicts for k in v.split("+")}

    # Control runs: the comparison notices wrong port numbers, and a missing flow family.
    guessed = assumed_ofports(controller, {})
    assert guessed != real
    _, wrong = compare(SimNet(controller, guessed), cases, traces, guessed, odp)
    print(f"with guessed port numbers: {len(wrong)} frames disagree")
    assert wrong
    for family, what in ((Family.ARP_RESPONDER, "ARP"), (Family.ND_RESPONDER, "ND")):
        net = SimNet(controller, real)
        for sw in net.switches.values():
            sw.entries = [e for e in sw.entries if cookie_family(e.cookie) != family]
        _, wrong = compare(net, cases, traces, real, odp)
        print(f"without the {what} responder flows: {len(wrong)} frames disagree")
        assert wrong
