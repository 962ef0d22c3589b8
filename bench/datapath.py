"""The real-OVS data path: what the pipeline costs, and how fast the switch answers ARP itself.

Two hypervisors (userspace datapath, one OVS each in its own namespace), the real controller,
VM a1 on hv1 and VM a2 on hv2 in one network.

* Pipeline cost: TCP throughput a1 -> a2 (iperf3) through the controller's pipeline, against
  the same VMs through a hand-written one-rule-per-direction tunnel pipeline (priority 1000 in
  table 0 on both bridges, removed again by cookie). The two runs alternate, ``--rounds`` times
  each, so that the machine's noise hits both; the figure is the ratio of the medians.
* In-switch ARP responder: a1 sends ARP requests for a2's address as fast as one Python raw
  socket can for ``--seconds``; a second process in a1 counts the replies. The answers come
  from the ARP responder flow on hv1 (the controller's packet-in counter is checked unchanged).
* Control-plane isolation: round trips of Neighbor Solicitations from r1 (answered by the
  controller) while quiet, then while a1, on the same hypervisor, floods solicitations.

    .venv/bin/python bench/datapath.py --rounds 3 --seconds 5 --doc
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration"), str(ROOT)]

from scapy.layers.l2 import ARP, Ether

from netns_testbed import TUNNEL_PORT, kill_all
from overlay import PORTS, Overlay, running
from vmtools import (ARP_OP_LOW_BYTE, ARP_REPLY, ETH_ARP, ETH_IPV6, ICMPV6_TYPE, ND_NA, Counter, flood, probe,
                     solicitation)

from bench.common import print_table, provenance, table, update_doc
from ryu_overlay.pipeline import PACKET_IN_RATE

BASELINE_COOKIE = "0xbe0000000000bead"


def iperf(overlay: Overlay, seconds: int) -> float:
    """TCP throughput a1 -> a2 in Gbit/s."""
    bed = overlay.bed
    server = subprocess.Popen(["ip", "netns", "exec", bed.vms["a2"].netns, "iperf3", "-s", "-B", "10.1.0.2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not bed.vm_exec("a2", ["ss", "-Hltn", "sport = :5201"]).stdout.strip():
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not start")
            time.sleep(0.05)
        out = bed.vm_exec("a1", ["iperf3", "-c", "10.1.0.2", "-t", str(seconds), "-J"], timeout=seconds + 30)
        if out.returncode != 0:
            raise RuntimeError(f"iperf3 failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        kill_all([server])


def one_rule_pipeline(overlay: Overlay, on: bool) -> None:
    """Install (or remove) the hand-written tunnel: one rule per direction on each bridge."""
    bed = overlay.bed
    vms = {"hv1": ("a1", "198.18.0.2"), "hv2": ("a2", "198.18.0.1")}
    for hv, (vm, remote) in vms.items():
        ovs = bed.hvs[hv].ovs
        if not on:
            ovs.ofctl("del-flows", f"cookie={BASELINE_COOKIE}/-1")
            continue
        vm_port, tunnel = bed.ofport(hv, bed.vms[vm].interface), bed.ofport(hv, TUNNEL_PORT)
        ovs.ofctl("add-flow", f"cookie={BASELINE_COOKIE},table=0,priority=1000,in_port={vm_port},"
                              f"actions=set_field:5001->tun_id,set_field:{remote}->tun_dst,output:{tunnel}")
        ovs.ofctl("add-flow", f"cookie={BASELINE_COOKIE},table=0,priority=1000,in_port={tunnel},tun_id=5001,"
                              f"actions=output:{vm_port}")


def arp_responder(overlay: Overlay, seconds: float) -> tuple[int, int, float, int]:
    """(requests sent, replies received, seconds between first and last reply, controller packet-ins)."""
    bed, vm = overlay.bed, overlay.bed.vms["a1"]
    request = bytes(Ether(src=vm.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=vm.mac, psrc=vm.ips[0], pdst="10.1.0.2"))
    before = overlay.ctl.api("GET", "/v1/stats")[1]["packet_in"]
    counter = Counter(bed, "a1", ETH_ARP, ARP_OP_LOW_BYTE, ARP_REPLY, seconds)
    sent = flood(bed, "a1", request, seconds)
    received, span = counter.result()
    return sent, received, span, overlay.ctl.api("GET", "/v1/stats")[1]["packet_in"] - before


def nd_under_flood(overlay: Overlay, seconds: float, rounds: int) -> tuple[list[float | None], list[float | None], int]:
    """Round trips of r1's solicitations (answered by the controller) without, then during, a
    solicitation flood from a1 on the same hypervisor; and how many frames a1 sent."""
    bed = overlay.bed
    a1, r1 = bed.vms["a1"], bed.vms["r1"]
    noise = solicitation(a1.mac, "fd00:1::1", "fd00:1::2")
    question = solicitation(r1.mac, "fd00:1::1", "fd00:1::2")
    quiet = probe(bed, "r1", question, ETH_IPV6, ICMPV6_TYPE, ND_NA, rounds)
    sent: list[int] = []
    flooder = threading.Thread(target=lambda: sent.append(flood(bed, "a1", noise, seconds)))
    flooder.start()
    try:
        loud = probe(bed, "r1", question, ETH_IPV6, ICMPV6_TYPE, ND_NA, rounds)
    finally:
        flooder.join(seconds + 60)
    return quiet, loud, sent[0] if sent else 0


def _ms(samples: list[float | None]) -> str:
    got = sorted(x for x in samples if x is not None)
    if not got:
        return "all lost"
    p99 = got[min(len(got) - 1, int(0.99 * len(got)))]
    return f"p50 {statistics.median(got):.2f} ms, p99 {p99:.2f} ms, {len(samples) - len(got)} lost of {len(samples)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="iperf3 runs per pipeline")
    ap.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run and of the ARP run")
    ap.add_argument("--doc", action="store_true", help="write the result into docs/performance.md")
    args = ap.parse_args()
    ours: list[float] = []
    baseline: list[float] = []
    with running(2, {k: v for k, v in PORTS.items() if k in ("a1", "a2", "r1", "r2")}) as overlay:
        for _ in range(args.rounds):
            ours.append(iperf(overlay, args.seconds))
            one_rule_pipeline(overlay, True)
            try:
                baseline.append(iperf(overlay, args.seconds))
            finally:
                one_rule_pipeline(overlay, False)
        overlay.wait_in_sync()
        sent, received, span, packet_ins = arp_responder(overlay, args.seconds)
        quiet, loud, flooded = nd_under_flood(overlay, args.seconds, rounds=100)
    ratio = statistics.median(ours) / statistics.median(baseline)
    rows = [
        ("TCP a1 -> a2 through the controller's pipeline (median)", f"{statistics.median(ours):.2f} Gbit/s",
         ", ".join(f"{x:.2f}" for x in ours)),
        ("TCP a1 -> a2 through one hand-written rule per direction (median)",
         f"{statistics.median(baseline):.2f} Gbit/s", ", ".join(f"{x:.2f}" for x in baseline)),
        ("pipeline throughput / one-rule throughput", f"{ratio:.1%}", f">= 95 %: {'met' if ratio >= 0.95 else '**missed**'}"),
        ("ARP requests sent by a1 (one Python raw socket)", f"{sent:,} in {args.seconds} s ({sent / args.seconds:,.0f}/s)", ""),
        ("ARP replies from the in-switch responder", f"{received:,} ({received / max(span, 1e-9):,.0f}/s)",
         f"{received / sent:.1%} of requests answered"),
        ("controller packet-ins during the ARP run", f"{packet_ins}", "0 = answered in the switch"),
        ("r1's solicitations answered by the controller, quiet", _ms(quiet), ""),
        ("the same while a1 (same hypervisor) floods solicitations", _ms(loud),
         f"a1 sent {flooded:,} in {args.seconds} s; its meter passes {PACKET_IN_RATE}/s"),
    ]
    print_table("real OVS data path (2 hypervisors, userspace datapath)", ["", "measured", "detail / target"], rows)
    if args.doc:
        update_doc("real_ovs", "datapath", [
            "### Data path: pipeline cost and in-switch ARP answers", "", *provenance(), "",
            "Two hypervisors with their own OVS (userspace datapath) in namespaces, VM a1 on hv1 and a2 "
            "on hv2 in one network. Throughput: iperf3 TCP a1 -> a2 through the controller's pipeline and "
            "through a hand-written pipeline of one rule per direction on each bridge (priority 1000 "
            f"in table 0), alternating, {args.rounds} runs of {args.seconds} s each. ARP: a1 sends "
            "requests for a2's address from one raw socket as fast as Python can; a second process in a1 "
            "counts the replies. ND: 100 solicitations from r1 (another tenant, same hypervisor), 20 ms "
            "apart, timed to the controller's answer, without and then during a solicitation flood from a1.", "",
            *table(["", "measured", "detail / target"], rows)])
    return 0 if ratio > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
