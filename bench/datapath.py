"""The real-OVS data path: what the pipeline costs, and how fast the switch answers ARP itself.

Two hypervisors (userspace datapath, one OVS each in its own namespace), the real controller,
VMs a1 and b1 on hv1 and a2 on hv2 in one network, r1 on hv1 and r2 on hv2 in another.

* Pipeline cost: TCP throughput a1 -> a2 (iperf3) through the controller's pipeline, against
  the same VMs through a hand-written pipeline of one rule per direction on each bridge (the
  bridges disconnected from the controller and emptied first). The runs alternate in ABBA
  order, ``--rounds`` times each, so that the machine's noise hits both; the figure is the
  ratio of the medians.
* In-switch ARP responder: a1 sends ARP requests for a2's address as fast as one Python raw
  socket can for ``--seconds``; a second process in a1 counts the replies. The answers come
  from the ARP responder flow on hv1 (the controller's packet-in counter is read before and
  after). For comparison, the same for UDP frames of the same size from a1 to b1, which the
  switch only forwards.
* Control-plane isolation: round trips of Neighbor Solicitations from r1 without the source
  link-layer option (so answered by the controller, not by the switch's ND responder) while
  quiet, then while a1, on the same hypervisor, floods such solicitations.

    .venv/bin/python bench/datapath.py --rounds 7 --seconds 5 --doc
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter

from common import publish
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from ryu_overlay.pipeline import PACKET_IN_RATE
from ryu_overlay.testing.netns_testbed import TUNNEL_PORT, kill_all
from ryu_overlay.testing.overlay import PORTS, Overlay, running
from ryu_overlay.testing.report import percentile
from ryu_overlay.testing.vmtools import (
    ARP_OP_LOW_BYTE,
    ARP_REPLY,
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ICMPV6_TYPE,
    IP_PROTO,
    ND_NA,
    UDP_PROTO,
    FrameCounter,
    flood,
    probe,
    solicitation,
)

BASELINE_COOKIE = "0xbe0000000000bead"


DATAPATH_COUNTERS = ("emc hits", "megaflow hits", "miss with success upcall")


def datapath_counters(overlay: Overlay, clear: bool = False) -> Counter[str]:
    """How both hypervisors' userspace datapaths classified packets since the last clear."""
    total: Counter[str] = Counter()
    for hv in overlay.bed.hvs.values():
        if clear:
            hv.ovs.appctl("dpif-netdev/pmd-stats-clear")
            continue
        for line in hv.ovs.appctl("dpif-netdev/pmd-stats-show").splitlines():
            name, _, value = line.strip().partition(":")
            if name in DATAPATH_COUNTERS:
                total[name] += int(value.split()[0])
    return total


def stream_flows(overlay: Overlay) -> frozenset[str]:
    """The datapath flows (match and actions, without statistics) that carried more than 10,000
    packets on either hypervisor: those of the TCP stream just measured."""
    out = set()
    for name, hv in overlay.bed.hvs.items():
        for line in hv.ovs.appctl("dpctl/dump-flows").splitlines():
            packets = re.search(r", packets:(\d+), bytes:\d+, used:[^,]+(, flags:[^,]+)?", line)
            if packets and int(packets.group(1)) > 10_000:
                out.add(f"{name}: {line.replace(packets.group(0), '')}")
    return frozenset(out)


def iperf(overlay: Overlay, seconds: int, counters: Counter[str], flows: set[frozenset[str]],
          client: str = "a1", server: str = "a2") -> float:
    """TCP throughput ``client`` -> ``server`` (its first address) in Gbit/s; adds the datapaths'
    classification counters to ``counters`` and the datapath flows that carried the stream to ``flows``."""
    bed = overlay.bed
    address = bed.vms[server].ips[0]
    datapath_counters(overlay, clear=True)
    listener = subprocess.Popen(["ip", "netns", "exec", bed.vms[server].netns, "iperf3", "-s", "-B", address],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not bed.vm_exec(server, ["ss", "-Hltn", "sport = :5201"]).stdout.strip():
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not start")
            time.sleep(0.05)
        out = bed.vm_exec(client, ["iperf3", "-c", address, "-t", str(seconds), "-J"], timeout=seconds + 30)
        if out.returncode != 0:
            raise RuntimeError(f"iperf3 failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        counters.update(datapath_counters(overlay))
        flows.add(stream_flows(overlay))
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        kill_all([listener])


def one_rule_pipeline(overlay: Overlay, on: bool) -> None:
    """Swap each bridge's pipeline for a hand-written tunnel of one rule per direction, or back.

    On: the bridges lose their controller (Open vSwitch flushes a bridge's flows when its
    controller is removed), are emptied and get the two rules, so nothing of the overlay's
    pipeline shapes the datapath flows. Off: the rules go, the controller is set again, and it
    reinstalls everything on reconnect (the baseline's cookie belongs to no partition it wants).
    """
    bed = overlay.bed
    vms = {"hv1": ("a1", "198.18.0.2"), "hv2": ("a2", "198.18.0.1")}
    for hv, (vm, remote) in vms.items():
        ovs = bed.hvs[hv].ovs
        if not on:
            ovs.ofctl("del-flows")
            ovs.vsctl("set-controller", "br-int", f"tcp:{bed.hvs[hv].mgmt_root_ip}:{overlay.ctl.ofp_port}")
            continue
        vm_port, tunnel = bed.ofport(hv, bed.vms[vm].interface), bed.ofport(hv, TUNNEL_PORT)
        ovs.vsctl("del-controller", "br-int")
        ovs.ofctl("del-flows")
        ovs.ofctl("add-flow", f"cookie={BASELINE_COOKIE},table=0,priority=1000,in_port={vm_port},"
                              f"actions=set_field:5001->tun_id,set_field:{remote}->tun_dst,output:{tunnel}")
        ovs.ofctl("add-flow", f"cookie={BASELINE_COOKIE},table=0,priority=1000,in_port={tunnel},tun_id=5001,"
                              f"actions=output:{vm_port}")
    if not on:
        overlay.wait_in_sync()


def in_switch(overlay: Overlay, seconds: float) -> tuple[tuple[int, int, float], tuple[int, int, float], int]:
    """The in-switch ARP responder against plain forwarding of frames of the same size.

    For each: (frames a1 sent, frames that came back to a1 / arrived at b1, seconds between the
    first and the last); and the controller's packet-ins during the ARP run.
    """
    bed, a1, b1 = overlay.bed, overlay.bed.vms["a1"], overlay.bed.vms["b1"]
    request = bytes(Ether(src=a1.mac, dst="ff:ff:ff:ff:ff:ff")
                    / ARP(op=1, hwsrc=a1.mac, psrc=a1.ips[0], pdst="10.1.0.2"))
    before = overlay.ctl.api("GET", "/v1/stats")[1]["packet_in"]
    counter = FrameCounter(bed, "a1", ETH_ARP, ARP_OP_LOW_BYTE, ARP_REPLY, seconds)
    arp = (flood(bed, "a1", request, seconds), *counter.result())
    packet_ins = overlay.ctl.api("GET", "/v1/stats")[1]["packet_in"] - before
    datagram = bytes(Ether(src=a1.mac, dst=b1.mac) / IP(src=a1.ips[0], dst=b1.ips[0]) / UDP(sport=9, dport=9))
    datagram += bytes(max(0, len(request) - len(datagram)))
    counter = FrameCounter(bed, "b1", ETH_IPV4, IP_PROTO, UDP_PROTO, seconds)
    forwarded = (flood(bed, "a1", datagram, seconds), *counter.result())
    return arp, forwarded, packet_ins


def arp_answer_path(overlay: Overlay) -> str:
    """How hv1's Open vSwitch executes the ARP responder (``ofproto/trace``): in the datapath, or
    in its userspace slow path and why."""
    bed, a1 = overlay.bed, overlay.bed.vms["a1"]
    flow = (f"in_port={bed.ofport('hv1', a1.interface)},arp,arp_op=1,dl_src={a1.mac},dl_dst=ff:ff:ff:ff:ff:ff,"
            f"arp_spa={a1.ips[0]},arp_tpa=10.1.0.2,arp_sha={a1.mac}")
    lines = bed.hvs["hv1"].ovs.appctl("ofproto/trace", "br-int", flow).splitlines()
    if not any("slow path" in line for line in lines):
        return "datapath"
    return "userspace slow path: " + "; ".join(line.strip().lstrip("- ") for line in lines if line.startswith("  - "))


def nd_under_flood(overlay: Overlay, seconds: float, rounds: int) -> tuple[list[float | None], list[float | None], int]:
    """Round trips of r1's solicitations (answered by the controller) without, then during, a
    solicitation flood from a1 on the same hypervisor; and how many frames a1 sent."""
    bed = overlay.bed
    a1, r1 = bed.vms["a1"], bed.vms["r1"]
    # Without the source link-layer option: the switch answers the others itself (see arp_nd).
    noise = solicitation(a1.mac, "fd00:1::1", "fd00:1::2", source_lla=False)
    question = solicitation(r1.mac, "fd00:1::1", "fd00:1::2", source_lla=False)
    quiet = probe(bed, "r1", question, ETH_IPV6, ICMPV6_TYPE, ND_NA, rounds)
    sent: list[int] = []
    flooder = threading.Thread(target=lambda: sent.append(flood(bed, "a1", noise, seconds)))
    flooder.start()
    try:
        loud = probe(bed, "r1", question, ETH_IPV6, ICMPV6_TYPE, ND_NA, rounds)
    finally:
        flooder.join(seconds + 60)
    return quiet, loud, sent[0] if sent else 0


def classified(c: Counter[str]) -> str:
    emc, mega, upcalls = (c[k] for k in DATAPATH_COUNTERS)
    return f"{emc / max(1, emc + mega + upcalls):.2%} / {mega:,} / {upcalls:,}"


def _rate(result: tuple[int, int, float], seconds: float) -> str:
    sent, got, span = result
    return f"{sent / seconds:,.0f}/s -> {got / max(span, 1e-9):,.0f}/s ({got / max(sent, 1):.0%} of {sent:,})"


def _ms(samples: list[float | None]) -> str:
    got = [x for x in samples if x is not None]
    if not got:
        return "all lost"
    return (f"p50 {percentile(got, 50):.2f} ms, p99 {percentile(got, 99):.2f} ms, "
            f"{len(samples) - len(got)} lost of {len(samples)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="iperf3 runs per pipeline")
    ap.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run and of the ARP run")
    ap.add_argument("--doc", action="store_true", help="write the result into docs/performance.md")
    args = ap.parse_args()
    ours: list[float] = []
    baseline: list[float] = []
    ours_dp: Counter[str] = Counter()
    baseline_dp: Counter[str] = Counter()
    ours_flows: set[frozenset[str]] = set()
    baseline_flows: set[frozenset[str]] = set()
    ports = {k: v for k, v in PORTS.items() if k in ("a1", "a2", "r1", "r2")}
    ports["b1"] = ("blue", "02:aa:00:00:00:0b", ["10.1.0.11"], "hv1", "tapB1")  # a1's neighbour on hv1
    with running(2, ports) as overlay:
        for i in range(args.rounds):  # ABBA order: neither pipeline always runs first
            for baseline_turn in ((False, True) if i % 2 == 0 else (True, False)):
                if not baseline_turn:
                    ours.append(iperf(overlay, args.seconds, ours_dp, ours_flows))
                    continue
                one_rule_pipeline(overlay, True)
                try:
                    baseline.append(iperf(overlay, args.seconds, baseline_dp, baseline_flows))
                finally:
                    one_rule_pipeline(overlay, False)
        arp, forwarded, packet_ins = in_switch(overlay, args.seconds)
        arp_path = arp_answer_path(overlay)
        quiet, loud, flooded = nd_under_flood(overlay, args.seconds, rounds=100)
    ratio = percentile(ours, 50) / percentile(baseline, 50)
    rows = [
        ("TCP a1 -> a2 through the controller's pipeline (median)", f"{percentile(ours, 50):.2f} Gbit/s",
         ", ".join(f"{x:.2f}" for x in ours)),
        ("TCP a1 -> a2 through one hand-written rule per direction (median)",
         f"{percentile(baseline, 50):.2f} Gbit/s", ", ".join(f"{x:.2f}" for x in baseline)),
        ("packets classified by the exact-match cache / by megaflow / upcalls, controller's pipeline",
         classified(ours_dp), "both bridges, all runs"),
        ("the same, one-rule pipeline", classified(baseline_dp), ""),
        ("datapath flows that carried the stream (match and actions)",
         "identical in every run of both pipelines" if len(ours_flows | baseline_flows) == 1 else
         f"{len(ours_flows | baseline_flows)} different sets over the runs",
         f"{len(next(iter(ours_flows)))} flows on the two hypervisors"),
        ("pipeline throughput / one-rule throughput", f"{ratio:.1%}",
         f">= 95 %: {'met' if ratio >= 0.95 else '**missed**'}"),
        ("ARP requests for a2 from a1 -> replies from hv1's responder", _rate(arp, args.seconds), ""),
        ("UDP frames of the same size a1 -> b1 (same hypervisor): sent -> delivered", _rate(forwarded, args.seconds),
         "plain forwarding on the same switch, for comparison"),
        ("controller packet-ins during the ARP run", f"{packet_ins}", "0 = answered in the switch"),
        ("where hv1's Open vSwitch executes the ARP answer (ofproto/trace)", arp_path, ""),
        ("r1's solicitations answered by the controller, quiet", _ms(quiet), ""),
        ("the same while a1 (same hypervisor) floods solicitations", _ms(loud),
         f"a1 sent {flooded:,} in {args.seconds} s; its meter passes {PACKET_IN_RATE}/s"),
    ]
    publish("real OVS data path (2 hypervisors, userspace datapath)", ["", "measured", "detail / target"], rows,
            args.doc, "real_ovs", "datapath", "### Data path: pipeline cost and in-switch ARP answers",
            "Two hypervisors with their own OVS (userspace datapath) in namespaces, VM a1 on hv1 and a2 "
            "on hv2 in one network. Throughput: iperf3 TCP a1 -> a2 through the controller's pipeline and "
            "through a hand-written pipeline of one rule per direction on each bridge (the bridges "
            f"disconnected from the controller and emptied first), in ABBA order, {args.rounds} runs of "
            f"{args.seconds} s each. ARP: a1 sends "
            "requests for a2's address from one raw socket as fast as Python can; a second process in a1 "
            "counts the replies; then the same with UDP frames of the same size to b1 (same hypervisor), "
            "counted in b1. ND: 100 solicitations from r1 (another tenant, same hypervisor) without the "
            "source link-layer option (which the switch would answer itself), 20 ms apart, timed to the "
            "controller's answer, without and then during a flood of such solicitations from a1.")
    return 0 if ratio > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
