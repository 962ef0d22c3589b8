"""Soak: REST writes and ARP packet-ins together for several minutes, loopback only, bounded in time.

    .venv/bin/python bench/soak.py --hypervisors 100 --seconds 300 --doc

A fleet of fake switches (``ryu_overlay.testing.loadgen``) holds its flows; one thread creates and
deletes ports through REST as fast as the controller answers (keeping about 200 of them, so
the state does not grow; each with an address and a location, so its flows are installed on
and removed from every hypervisor of its network), while the switches send ARP requests for
known addresses in 10-second phases. Every 10 s the controller's RSS is sampled.
At the end the ports the API lists must be exactly the ones the clients were told exist (every
2xx answer), and no request may have failed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from arp_proxy import askers, phase
from common import provenance, start_connected, workdir

from ryu_overlay.testing.controller_proc import RestClient
from ryu_overlay.testing.loadgen import make_placement
from ryu_overlay.testing.report import print_table, table

STEADY_PORTS = 200  # the writer keeps about this many extra ports, so memory should stay flat


def writer(port: int, networks: list[str], hypervisors: list[str], stop: threading.Event,
           told: dict[str, dict[str, Any]], failures: Counter[int], seed: int) -> int:
    rest = RestClient(port)
    rng = random.Random(seed)
    ops = 0
    try:
        while not stop.is_set():
            ops += 1
            if len(told) >= STEADY_PORTS or (told and rng.random() < 0.3):
                name = rng.choice(sorted(told))
                status, _ = rest.call("DELETE", f"/v1/ports/{name}")
                if status == 204:
                    del told[name]
                else:
                    failures[status] += 1
                continue
            name = f"soak{ops}"
            ip = f"10.0.{128 + (ops >> 8) % 128}.{ops % 256}"  # above the placement's own addresses
            network = rng.choice(networks)
            if ops % 256 in (0, 255) or (network, ip) in {(b["network"], b["ips"][0]) for b in told.values()}:
                continue
            # Located on a random hypervisor: its flows (remote, ARP responder, tunnel-in) come and go
            # on every hypervisor of the network.
            body = {"network": network, "mac": f"02:5a:{ops >> 16 & 255:02x}:{ops >> 8 & 255:02x}:{ops & 255:02x}:01",
                    "ips": [ip], "hypervisor": rng.choice(hypervisors), "interface": name}
            status, _ = rest.call("PUT", f"/v1/ports/{name}", body)
            if status in (200, 201):
                told[name] = body
            else:
                failures[status] += 1
    finally:
        rest.close()
    return ops


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    placement = make_placement(args.hypervisors, 10, 10, args.seed)
    with workdir("soak") as tmp_name:
        ctl, fleet = await start_connected(placement, Path(tmp_name))
        try:
            pool = askers(placement, fleet, {hv.name for hv in placement.hypervisors})
            told: dict[str, dict[str, Any]] = {}
            failures: Counter[int] = Counter()
            stop = threading.Event()
            result: dict[str, Any] = {}
            thread = threading.Thread(target=lambda: result.update(
                ops=writer(ctl.rest_port, [n.name for n in placement.networks],
                           [h.name for h in placement.hypervisors], stop, told, failures, args.seed)))
            rng = random.Random(args.seed)
            rss: list[tuple[float, int]] = [(0.0, ctl.memory_kib()["VmRSS"])]
            answered = lost = 0
            t0 = time.monotonic()
            thread.start()
            try:
                while time.monotonic() - t0 < args.seconds:
                    ph = await phase(pool, requests=10**6, window=8, duration=10, timeout=2, rng=rng)
                    answered, lost = answered + ph.answered, lost + ph.lost
                    rss.append((time.monotonic() - t0, ctl.memory_kib()["VmRSS"]))
            finally:
                stop.set()
                thread.join(30)
            elapsed = time.monotonic() - t0
            rest = RestClient(ctl.rest_port)
            listed = {p["name"]: p for p in rest.ok("GET", "/v1/ports")["ports"] if p["name"].startswith("soak")}
            rest.close()
            consistent = listed.keys() == told.keys() and all(
                (listed[n]["network"], listed[n]["mac"]) == (b["network"], b["mac"]) for n, b in told.items())
            return {"seconds": elapsed, "ops": result.get("ops", 0), "failures": dict(failures),
                    "answered": answered, "lost": lost, "rss": rss, "consistent": consistent,
                    "ports_at_end": len(told)}
        finally:
            fleet.close()
            ctl.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hypervisors", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--doc", action="store_true", help="write the result into docs/reliability.md")
    args = ap.parse_args()
    r = asyncio.run(soak(args))
    first, last = r["rss"][1][1] if len(r["rss"]) > 1 else r["rss"][0][1], r["rss"][-1][1]
    half = next(kib for t, kib in r["rss"] if t >= r["seconds"] / 2)
    peak = max(kib for _, kib in r["rss"])
    rows = [("duration", f"{r['seconds']:.0f} s"),
            ("REST writes (PUT/DELETE), failed",
             f"{r['ops']:,} ({r['ops'] / r['seconds']:.0f}/s), {r['failures'] or 0}"),
            ("ARP packet-ins answered / lost",
             f"{r['answered']:,} ({r['answered'] / r['seconds']:.0f}/s) / {r['lost']}"),
            ("controller RSS after 10 s / half-way / at the end / peak",
             f"{first // 1024} / {half // 1024} / {last // 1024} / {peak // 1024} MiB"),
            ("ports listed == ports the clients were told exist", f"{r['consistent']} ({r['ports_at_end']} ports)")]
    print_table(["", "value"], rows, f"soak, {args.hypervisors} hypervisors")
    if args.doc:
        doc = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
        text = doc.read_text()
        begin, end = "<!-- soak:begin -->", "<!-- soak:end -->"
        block = "\n".join([begin, "", *provenance(), "", *table(["", "value"], rows), "", end])
        if begin in text:
            text = text.split(begin)[0] + block + text.split(end)[1]
        else:
            text = text.replace("## Known limitation", "## Soak\n\n" + __doc__.split("\n\n")[2].replace("\n", " ")
                                + "\n\n" + block + "\n\n## Known limitation")
        doc.write_text(text)
    return 0 if r["consistent"] and not r["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
