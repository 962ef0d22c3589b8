"""Routed against switched on real OVS: throughput and latency between the same two hypervisors.

Two hypervisors (userspace datapath, one OVS each in its own namespace) and the real controller.
VM a1 (network blue) on hv1; a2 (blue) and g2 (network green) on hv2; one router between blue and
green. Switched: a1 -> a2, same subnet. Routed: a1 -> g2, through the distributed router (routed
on hv1, tunnelled straight to hv2 with green's VNI; the replies routed on hv2). Every VM has MTU
1450 and TX checksum offload off (docs/shared testbed rules), and the networks their default MTU.

* Throughput: iperf3 TCP, switched and routed alternating in ABBA order, ``--rounds`` runs each of
  ``--seconds``; the figure is the ratio of the medians. After each run, the datapath flows that
  carried the stream (``ovs-appctl dpctl/dump-flows``, match and actions) and how the datapaths
  classified its packets (exact-match cache, megaflow, upcall), and the CPU time both ovs-vswitchd
  used per such packet (``/proc/<pid>/stat``): a cost that other load on the machine changes
  less than it changes throughput.
* Latency: ``--pings`` ICMP echoes a1 -> a2 and a1 -> g2, 10 ms apart, in alternating blocks
  (ABBA), after a warm-up; round-trip p50 and p99 of each.

    .venv/bin/python bench/routed.py --rounds 7 --seconds 5 --pings 1000 --doc
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from pathlib import Path

from common import provenance, update_doc
from datapath import classified, iperf

from ryu_overlay.testing.overlay import PORTS, Overlay, put, running
from ryu_overlay.testing.report import percentile, print_table, table

GREEN = {"vni": 5003, "tenant": "acme", "subnets": ["10.2.0.0/24", "fd00:2::/64"]}
G2 = ("green", "02:bb:00:00:00:02", ["10.2.0.2", "fd00:2::2"], "hv2", "tapG2")
ROUTER = {"tenant": "acme", "interfaces": [{"network": "blue", "ip": "10.1.0.254/24"},
                                           {"network": "blue", "ip": "fd00:1::fe/64"},
                                           {"network": "green", "ip": "10.2.0.254/24"},
                                           {"network": "green", "ip": "fd00:2::fe/64"}]}
GATEWAYS = {"a1": "10.1.0.254", "a2": "10.1.0.254", "g2": "10.2.0.254"}
KINDS = {"switched": "a2", "routed": "g2"}
BLOCK = 100  # pings per block
CONTINUATION = re.compile(r"(controller\([^)]*?)recirc_id=\d+")


def add_router(overlay: Overlay) -> None:
    """Green with g2 on hv2, the router, and every VM's default route through it."""
    ctl, bed = overlay.ctl, overlay.bed
    put(ctl, "/v1/networks/green", GREEN)
    net, mac, ips, hv, iface = G2
    put(ctl, "/v1/ports/g2", {"network": net, "mac": mac, "ips": ips, "hypervisor": hv, "interface": iface})
    bed.add_vm("g2", hv, iface, mac, ips)
    put(ctl, "/v1/routers/r1", ROUTER)
    for vm, gateway in GATEWAYS.items():
        bed.vm_exec(vm, ["ip", "route", "replace", "default", "via", gateway], check=True)
    overlay.wait_in_sync()


def datapath_flows(overlay: Overlay) -> dict[str, int]:
    """Every datapath flow of both hypervisors (match and actions) -> packets it has carried."""
    out = {}
    for name, hv in overlay.bed.hvs.items():
        for line in hv.ovs.appctl("dpctl/dump-flows").splitlines():
            stats = re.search(r", packets:(\d+), bytes:\d+, used:[^,]+(, flags:[^,]+)?", line)
            if stats:
                # The continuation's recirculation id is allocated anew each time the flow is set up.
                match = CONTINUATION.sub(r"\1recirc_id=*", line.replace(stats.group(0), ""))
                out[f"{name}: {match}"] = int(stats.group(1))
    return out


def vswitchd_cpu(overlay: Overlay) -> float:
    """CPU seconds (user and system, all threads) the two hypervisors' ovs-vswitchd have used."""
    ticks = 0
    for hv in overlay.bed.hvs.values():
        pid = int((hv.ovs.base / "ovs-vswitchd.pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(overlay: Overlay, seconds: int, counters: Counter[str], flows: set[frozenset[str]], server: str,
            cost: list[float]) -> float:
    """``datapath.iperf`` a1 -> ``server``, keeping the datapath flows that carried more than 10,000
    packets during this run (earlier runs' flows stay in the datapath with their counts) and adding
    to ``cost`` the run's ovs-vswitchd CPU per packet the datapaths classified, in µs."""
    before = datapath_flows(overlay)
    run: Counter[str] = Counter()
    cpu = vswitchd_cpu(overlay)
    gbps = iperf(overlay, seconds, run, set(), "a1", server)
    cost.append((vswitchd_cpu(overlay) - cpu) / max(1, sum(run.values())) * 1e6)
    counters.update(run)
    flows.add(frozenset(f for f, n in datapath_flows(overlay).items() if n - before.get(f, 0) > 10_000))
    return gbps


def pings(overlay: Overlay, dst: str, count: int) -> tuple[list[float], set[int]]:
    """Round trips (ms) of ``count`` echoes a1 -> ``dst``, 10 ms apart, and the TTLs of the replies."""
    out = overlay.bed.vm_exec("a1", ["ping", "-n", "-c", str(count), "-i", "0.01", "-W", "1", dst],
                              timeout=count * 0.05 + 30).stdout
    return ([float(t) for t in re.findall(r"time=([\d.]+) ms", out)],
            {int(t) for t in re.findall(r"ttl=(\d+)", out)})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="iperf3 runs of each kind")
    ap.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run")
    ap.add_argument("--pings", type=int, default=1000, help="echoes of each kind")
    ap.add_argument("--doc", action="store_true", help="write the result into docs/performance.md")
    args = ap.parse_args()
    gbps: dict[str, list[float]] = {k: [] for k in KINDS}
    dp: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    flows: dict[str, set[frozenset[str]]] = {k: set() for k in KINDS}
    rtt: dict[str, list[float]] = {k: [] for k in KINDS}
    ttls: dict[str, set[int]] = {k: set() for k in KINDS}
    sent = dict.fromkeys(KINDS, 0)
    cost: dict[str, list[float]] = {k: [] for k in KINDS}
    ports = {k: PORTS[k] for k in ("a1", "a2")}
    with running(2, ports) as overlay:
        add_router(overlay)
        addresses = {k: overlay.bed.vms[vm].ips[0] for k, vm in KINDS.items()}
        for kind in KINDS:  # warm up: neighbour resolution, datapath flows
            if not overlay.bed.ping("a1", addresses[kind], count=3):
                raise RuntimeError(f"a1 cannot reach {addresses[kind]} ({kind})")
        for i in range(args.rounds):  # ABBA: neither kind always runs first
            for kind in (("switched", "routed") if i % 2 == 0 else ("routed", "switched")):
                gbps[kind].append(measure(overlay, args.seconds, dp[kind], flows[kind], KINDS[kind], cost[kind]))
        blocks = max(1, -(-args.pings // BLOCK))
        for i in range(blocks):
            for kind in (("switched", "routed") if i % 2 == 0 else ("routed", "switched")):
                got, seen = pings(overlay, addresses[kind], BLOCK)
                rtt[kind] += got
                ttls[kind] |= seen
                sent[kind] += BLOCK
    median = {k: percentile(v, 50) for k, v in gbps.items()}
    ratio = median["routed"] / median["switched"]
    p50 = {k: percentile(v, 50) for k, v in rtt.items()}
    p99 = {k: percentile(v, 99) for k, v in rtt.items()}
    rows = [
        ("TCP a1 -> a2, switched (median)", f"{median['switched']:.2f} Gbit/s",
         ", ".join(f"{x:.2f}" for x in gbps["switched"])),
        ("TCP a1 -> g2, routed (median)", f"{median['routed']:.2f} Gbit/s",
         ", ".join(f"{x:.2f}" for x in gbps["routed"])),
        ("routed / switched throughput", f"{ratio:.1%}", f">= 95 %: {'met' if ratio >= 0.95 else '**missed**'}"),
        ("packets classified by the exact-match cache / by megaflow / upcalls, switched", classified(dp["switched"]),
         "both bridges, all runs"),
        ("the same, routed", classified(dp["routed"]), ""),
        ("datapath flows that carried the stream", *_flow_sets(flows)),
        *((f"ovs-vswitchd CPU per packet, {k} (median; both hypervisors)", f"{percentile(v, 50):.2f} µs",
           ", ".join(f"{x:.2f}" for x in v)) for k, v in cost.items()),
        ("ping a1 -> a2, switched: RTT p50 / p99", f"{p50['switched']:.3f} / {p99['switched']:.3f} ms",
         f"{len(rtt['switched'])} of {sent['switched']} answered; reply TTL {_ttls(ttls['switched'])}"),
        ("ping a1 -> g2, routed: RTT p50 / p99", f"{p50['routed']:.3f} / {p99['routed']:.3f} ms",
         f"{len(rtt['routed'])} of {sent['routed']} answered; reply TTL {_ttls(ttls['routed'])}"),
        ("routed - switched RTT, p50 / p99", f"{p50['routed'] - p50['switched']:+.3f} / "
         f"{p99['routed'] - p99['switched']:+.3f} ms", "target: routed matches switched"),
    ]
    headers = ["", "measured", "detail / target"]
    print_table(headers, rows, "real OVS: routed against switched (2 hypervisors, userspace datapath)")
    listing = _listing(flows)
    print("\n".join(listing))
    if args.doc:
        update_doc("real_ovs", "routed", [
            "### Routed against switched: throughput and latency", "", *provenance(), "",
            f"Two hypervisors with their own OVS (userspace datapath) in namespaces. VM a1 (network blue) on "
            f"hv1; a2 (blue) and g2 (network green, 10.2.0.0/24) on hv2; one router between blue and green, "
            f"every VM's default route through it. Switched: a1 -> a2 (same subnet); routed: a1 -> g2 (routed "
            f"on hv1 and tunnelled straight to hv2 with green's VNI; the replies routed on hv2). VMs with MTU "
            f"1450 and TX checksum offload off. Throughput: iperf3 TCP, {args.rounds} runs of {args.seconds} s "
            f"of each kind in ABBA order; per run, the datapath flows that carried more than 10,000 packets, "
            f"how the datapaths classified the packets, and the CPU time of both ovs-vswitchd per packet "
            f"(less sensitive to other load than throughput). Latency: {sent['switched']} echoes of each kind, "
            f"10 ms apart, in "
            f"blocks of {BLOCK} alternating ABBA, after a warm-up.", "",
            *table(headers, rows), "", *listing])
    return 0 if ratio > 0 else 1


def _ttls(seen: set[int]) -> str:
    return ", ".join(str(t) for t in sorted(seen)) or "none"


def _flow_sets(flows: dict[str, set[frozenset[str]]]) -> tuple[str, str]:
    union = {k: frozenset().union(*v) for k, v in flows.items()}
    return (", ".join(f"{k}: {len(union[k])} distinct over all runs" for k in flows),
            "on the two hypervisors, listed below (a run lists those that carried more than 10,000 of its "
            "packets: " + "; ".join(f"{k} {', '.join(str(len(s)) for s in sorted(v, key=len))}"
                                     for k, v in flows.items()) + ")")


def _listing(flows: dict[str, set[frozenset[str]]]) -> list[str]:
    """The datapath flows that carried each kind's streams, over all runs, without statistics."""
    lines = []
    for kind, sets in flows.items():
        lines += [f"Datapath flows that carried the {kind} streams (`ovs-appctl dpctl/dump-flows`, more than "
                  "10,000 packets in a run; statistics and the controller continuation's recirculation id "
                  "removed):", "", "```", *sorted(frozenset().union(*sets)), "```", ""]
    return lines[:-1]


if __name__ == "__main__":
    sys.exit(main())
