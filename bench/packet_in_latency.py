"""Packet-in latency while the REST API writes: does a store write stall the switches?

    .venv/bin/python bench/packet_in_latency.py --hypervisors 50 --writes 1000 --clients 4 --doc

After a cold start, raises ARP requests (answered by the controller from its mapping, as in
bench/arp_proxy.py) at a steady pace from random switches, first with the REST API idle, then
while ``--clients`` REST clients create ``--writes`` ports between them (each a durable store
write). Latency is from writing the PACKET_IN until the PACKET_OUT with the ARP reply is read.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from arp_proxy import Asker, add_request_timeout, askers
from common import bench_main, placement_parser, provenance, start_connected, workdir

from ryu_overlay.testing.loadgen import mac_of, quiet_gc
from ryu_overlay.testing.report import percentile, print_table, table


async def probe(pool: list[Asker], interval: float, timeout: float, rng: random.Random,
                until: asyncio.Event | None, count: int) -> tuple[list[float], int]:
    """ARP requests every ``interval`` s: ``count`` of them, or until ``until`` is set."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    pending: list[asyncio.Future[float]] = []
    sent = 0
    next_at = time.monotonic()
    while (sent < count) if until is None else not until.is_set():
        a = pool[rng.randrange(len(pool))]
        fut = a.switch.arp_request(a.in_port, a.mac, a.ip, a.target_ip)
        loop.call_later(timeout, fut.cancel)
        pending.append(fut)
        sent += 1
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    lost = 0
    for fut in pending:
        try:
            latencies.append(await fut * 1000)
        except asyncio.CancelledError:
            lost += 1
    return latencies, lost


def burst(ctl: Any, networks: list[str], writes: int, clients: int) -> tuple[list[float], float, int]:
    """``writes`` port creations over ``clients`` keep-alive connections; (latencies ms, seconds, refused)."""
    latencies: list[float] = []
    refused = 0
    lock = threading.Lock()

    def client(k: int) -> None:
        nonlocal refused
        rest = ctl.rest()
        try:
            for i in range(k, writes, clients):
                body = {"network": networks[i % len(networks)], "mac": mac_of(10_000_000 + i), "ips": []}
                t0 = time.perf_counter()
                status, _ = rest.call("PUT", f"/v1/ports/bench{i}", body)
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    refused += status >= 300
        finally:
            rest.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.monotonic() - t0, refused


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = placement_parser(__doc__, "switches connected")
    ap.add_argument("--writes", type=int, default=1000, help="ports created through REST during the burst")
    ap.add_argument("--clients", type=int, default=4, help="REST clients writing at once")
    ap.add_argument("--interval", type=float, default=0.002, help="seconds between ARP requests")
    ap.add_argument("--quiet", type=int, default=2000, help="ARP requests measured with the REST API idle")
    add_request_timeout(ap)
    ap.add_argument("--label", default="", help="names this run's block in docs/performance.md")
    return ap.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from ryu_overlay.testing.loadgen import make_placement
    placement = make_placement(args.hypervisors, args.ports_per_hv, args.ports_per_network, args.seed)
    rng = random.Random(args.seed)
    networks = [n.name for n in placement.networks]
    with workdir("pin-latency") as tmpname:
        ctl, fleet = await start_connected(placement, Path(tmpname), timeout=args.timeout)
        try:
            pool = askers(placement, fleet, {hv.name for hv in placement.hypervisors})
            with quiet_gc():
                await probe(pool, args.interval, args.request_timeout, rng, None, 200)  # warm-up
                quiet = await probe(pool, args.interval, args.request_timeout, rng, None, args.quiet)
                done = asyncio.Event()
                prober = asyncio.ensure_future(probe(pool, args.interval, args.request_timeout, rng, done, 0))
                rest = await asyncio.to_thread(burst, ctl, networks, args.writes, args.clients)
                done.set()
                during = await prober
        finally:
            fleet.close()
            ctl.stop()
    return {"quiet": quiet, "during": during, "rest": rest}


def report(args: argparse.Namespace, r: dict[str, Any]) -> list[str]:
    def stats(ms: list[float]) -> list[str]:
        return [f"{percentile(ms, 50):.2f}", f"{percentile(ms, 99):.2f}", f"{max(ms, default=float('nan')):.2f}"]

    rest_ms, rest_s, refused = r["rest"]
    rows = [("REST idle", f"{len(r['quiet'][0]):,}", r["quiet"][1], *stats(r["quiet"][0])),
            (f"during {args.writes:,} REST port writes ({args.clients} clients)", f"{len(r['during'][0]):,}",
             r["during"][1], *stats(r["during"][0]))]
    headers = ("packet-ins", "answered", "lost", "p50 ms", "p99 ms", "max ms")
    title = f"Packet-in latency, {args.hypervisors} hypervisors, one ARP request every {args.interval * 1000:g} ms"
    print_table(headers, rows, title)
    rest_line = (f"REST writes: {len(rest_ms):,} in {rest_s:.1f} s ({len(rest_ms) / rest_s:,.0f}/s), "
                 f"p50 {percentile(rest_ms, 50):.1f} ms, p99 {percentile(rest_ms, 99):.1f} ms, "
                 f"max {max(rest_ms):.1f} ms, refused {refused}.")
    print(rest_line)
    label = f" ({args.label})" if args.label else ""
    return [f"### {args.hypervisors:,} hypervisors, {args.writes:,} REST writes{label}", "", *provenance(), "",
            *table(headers, rows), "", rest_line]


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, report, "packet_in_latency",
                      lambda a: f"hv{a.hypervisors:06d}-w{a.writes:06d}-{a.label}",
                      lambda r: bool(r["quiet"][0] and r["during"][0]))


if __name__ == "__main__":
    sys.exit(main())
