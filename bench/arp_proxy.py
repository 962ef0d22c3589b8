"""ARP proxy: PACKET_IN ARP requests answered by the controller with a PACKET_OUT ARP reply.

    .venv/bin/python bench/arp_proxy.py --hypervisors 1000 --requests 20000 --window 64 --seed 1

After a cold start, raises ARP requests from bound VM ports for addresses of the same network
(which the controller answers from its mapping), at most ``--window`` outstanding, first from
one switch and then spread over all switches. Latency is from writing the PACKET_IN until the
PACKET_OUT with the matching ARP reply has been read.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    add_profile_arguments,
    bench_main,
    placement_parser,
    profiler_for,
    provenance,
    start_connected,
    stopping,
    verdict,
    workdir,
)

from ryu_overlay.compat import ofproto, parser
from ryu_overlay.controller import Controller
from ryu_overlay.ofmsg import wire
from ryu_overlay.store import SqliteStore
from ryu_overlay.testing.loadgen import (
    FakeSwitch,
    Fleet,
    Placement,
    arp_frame,
    make_placement,
    quiet_gc,
)
from ryu_overlay.testing.report import percentile, print_table, table
from ryu_overlay.testing.scenario import connect

RATE_TARGET = 10_000
P99_TARGET_MS = 5.0
PROFILE_NEEDLES = ("Datapath._recv_loop", "RyuApp._event_loop", "Datapath._send_loop", "Controller.packet_in",
                   "parse_frame", "arp_reply", "packet_out (ryu_overlay", "OverlayApp.send", "OFPPacketIn.parser",
                   "OFPPacketOut", "send_event_to_observers", "Datapath.send (", "sendall", "recv (")


@dataclass(frozen=True)
class Asker:
    switch: FakeSwitch
    in_port: int
    mac: str
    ip: str
    target_ip: str


@dataclass(frozen=True)
class Phase:
    switches: int
    sent: int
    answered: int
    lost: int
    seconds: float
    latencies_ms: tuple[float, ...]

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


def askers(placement: Placement, fleet: Fleet, hypervisors: set[str]) -> list[Asker]:
    topo = placement.topology()
    by_name = {hv.name: hv for hv in placement.hypervisors}
    out = []
    for port in placement.ports:
        if port.hypervisor not in hypervisors or port.interface is None or not port.ips:
            continue
        others = [p for p in topo.ports_of(port.network) if p.name != port.name and p.ips]
        if not others:
            continue
        sw = fleet.by_dpid[by_name[port.hypervisor].dpid]
        for other in others:
            out.append(Asker(sw, sw.ports[port.interface], port.mac, str(port.ips[0]), str(other.ips[0])))
    return out


async def phase(pool: list[Asker], requests: int, window: int, duration: float, timeout: float,
                rng: random.Random) -> Phase:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(window)
    latencies: list[float] = []
    lost = 0
    pending: set[asyncio.Future[float]] = set()

    def finished(fut: asyncio.Future[float]) -> None:
        nonlocal lost
        pending.discard(fut)
        gate.release()
        if fut.cancelled():
            lost += 1
        else:
            latencies.append(fut.result() * 1000)

    t0 = time.monotonic()
    deadline = t0 + duration
    sent = 0
    while sent < requests and time.monotonic() < deadline:
        await gate.acquire()
        a = pool[rng.randrange(len(pool))]
        fut = a.switch.arp_request(a.in_port, a.mac, a.ip, a.target_ip)
        sent += 1
        pending.add(fut)
        fut.add_done_callback(finished)
        loop.call_later(timeout, fut.cancel)
    drain_until = time.monotonic() + timeout + 1
    while pending and time.monotonic() < drain_until:
        await asyncio.sleep(0.005)
    for fut in list(pending):
        fut.cancel()
    seconds = time.monotonic() - t0
    return Phase(len({id(a.switch) for a in pool}), sent, len(latencies), lost, seconds, tuple(latencies))


def add_request_timeout(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--request-timeout", type=float, default=5.0, help="a request unanswered by then is lost")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = placement_parser(__doc__, "switches connected (the 'many' phase uses all)")
    ap.add_argument("--requests", type=int, default=20000, help="ARP requests per phase (at most)")
    ap.add_argument("--warmup", type=int, default=500, help="unmeasured requests before each phase")
    ap.add_argument("--window", type=int, default=64, help="requests outstanding at once")
    ap.add_argument("--repeat", type=int, default=3, help="measure each phase this many times (median rate shown)")
    ap.add_argument("--duration", type=float, default=60.0, help="stop sending after this many seconds per phase")
    add_request_timeout(ap)
    add_profile_arguments(ap, "the many-switch phase")
    return ap.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    placement = make_placement(args.hypervisors, args.ports_per_hv, args.ports_per_network, args.seed)
    rng = random.Random(args.seed)
    result: dict[str, Any] = {"phases": []}
    with workdir("arp") as tmpname:
        tmp = Path(tmpname)
        ctl, fleet = await start_connected(placement, tmp, args.concurrency, args.timeout)
        profiler = profiler_for(args, ctl.pid, tmp)
        with stopping(ctl, fleet, profiler):
            single = askers(placement, fleet, {placement.hypervisors[0].name})
            many = askers(placement, fleet, {hv.name for hv in placement.hypervisors})
            for pool in (single, many) if args.hypervisors > 1 else (single,):
                if args.warmup:
                    await phase(pool, args.warmup, args.window, args.duration, args.request_timeout, rng)
                runs = []
                for attempt in range(max(1, args.repeat)):
                    profiling = profiler if pool is many and attempt == 0 else None
                    if profiling is not None:
                        profiling.start()
                    with quiet_gc():
                        cpu0, own0 = ctl.cpu_seconds(), time.process_time()
                        measured = await phase(pool, args.requests, args.window, args.duration,
                                               args.request_timeout, rng)
                        runs.append((measured, ctl.cpu_seconds() - cpu0, time.process_time() - own0))
                    if profiling is not None:
                        result.update(profiling.finish(PROFILE_NEEDLES))
                result["phases"].append(runs)
            result["stats"] = ctl.ok("GET", "/v1/stats")
            result["errors"] = fleet.totals()["errors_sent"]
    with workdir("arp-own") as owndir:
        result["own_us"] = own_cost_us(make_placement(args.hypervisors, args.ports_per_hv, args.ports_per_network,
                                                      args.seed), Path(owndir) / "overlay.db")
    last = sorted(result["phases"][-1], key=lambda run: run[0].rate)
    result["last_rate"] = last[len(last) // 2][0].rate
    return result


class _Datapath:
    ofproto, ofproto_parser, xid = ofproto, parser, 0

    def set_xid(self, msg: Any) -> None:
        msg.xid = 1


def own_cost_us(placement: Placement, db: Path, requests: int = 20_000) -> float:
    """The controller's own work per answer, in this process, without Ryu or sockets: the
    packet-in handler and the encoding of the packet-out, for the benchmark's kind of request."""
    placement.seed_store(str(db))
    c = Controller(SqliteStore(str(db)))
    hv = placement.hypervisors[0]
    connect(c, hv.name, ports=dict(placement.ofports[hv.name]))
    port = next(p for p in placement.ports if p.hypervisor == hv.name and p.ips)
    other = next(p for p in placement.ports if p.network == port.network and p.name != port.name and p.ips)
    frame = arp_frame(1, port.mac, str(port.ips[0]), str(other.ips[0]))
    in_port = placement.ofports[hv.name][port.interface]  # type: ignore[index]
    dp = _Datapath()
    t0 = time.perf_counter()
    for _ in range(requests):
        for msg in c.packet_in(hv.dpid, in_port, frame)[hv.dpid]:
            wire(msg, dp)
    return (time.perf_counter() - t0) / requests * 1e6


def report(args: argparse.Namespace, r: dict[str, Any]) -> list[str]:
    rows = []
    for runs in r["phases"]:
        ordered = sorted(runs, key=lambda run: run[0].rate)
        median, cpu, own = ordered[len(ordered) // 2]
        latencies = [x for run in runs for x in run[0].latencies_ms]
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        spread = f" ({ordered[0][0].rate:,.0f}-{ordered[-1][0].rate:,.0f})" if len(runs) > 1 else ""
        answered = sum(run[0].answered for run in runs)
        sent = sum(run[0].sent for run in runs)
        lost = sum(run[0].lost for run in runs)
        rows.append((f"{median.switches:,}", f"{answered:,} / {sent:,}", lost, f"{median.rate:,.0f}{spread}",
                     f"{p50:.2f}", f"{p99:.2f}", f"{max(latencies, default=float('nan')):.2f}",
                     f"{100 * cpu / median.seconds:.0f} % / {100 * own / median.seconds:.0f} %",
                     f"{verdict(median.rate >= RATE_TARGET)} / {verdict(p99 < P99_TARGET_MS)}"))
    headers = ("switches sending", "answered / sent", "lost", "answers/s median (range)", "p50 ms", "p99 ms",
               "max ms", "CPU controller / load generator",
               f"target >= {RATE_TARGET:,}/s / p99 < {P99_TARGET_MS:g} ms")
    title = f"ARP proxy, {args.hypervisors} hypervisors connected, window {args.window}, {args.repeat} runs per phase"
    print_table(headers, rows, title)
    lines = [f"### {args.hypervisors:,} hypervisors connected, window {args.window}", "", *provenance(), "",
            f"{args.repeat} runs of {args.requests:,} requests per phase; latency percentiles over all runs.", "",
            *table(headers, rows), "",
            (f"Controller counters afterwards: arp_answered_controller {r['stats']['arp_answered_controller']:,}, "
             f"packet_in {r['stats']['packet_in']:,}, packet_in_ignored {r['stats']['packet_in_ignored']:,}; "
             f"errors from switches {r['errors']}."), "",
            (f"The controller's own work per answer, measured in the benchmark's process without Ryu or sockets "
             f"(packet-in handler and packet-out encoding): {r['own_us']:.1f} µs, against "
             f"{1e6 / max(1.0, r['last_rate']):.0f} µs per answer at the last phase's median rate; the rest is "
             "Ryu's and eventlet's per-message work.")]
    print(lines[-1])
    return lines


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, report, "arp_proxy", lambda a: f"hv{a.hypervisors:06d}-w{a.window:03d}",
                      lambda r: all(run[0].answered for runs in r["phases"] for run in runs),
                      lambda a: f"### During the ARP proxy run, {a.hypervisors:,} switches sending")


if __name__ == "__main__":
    sys.exit(main())
