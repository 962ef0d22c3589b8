"""Port churn: ports added, moved and deleted through REST while every bridge is connected.

    .venv/bin/python bench/churn.py --hypervisors 1000 --ops 300 --window 1 --seed 1

After a cold start (bulk placement, every fake switch holding its flows), runs ``--ops``
operations (add, move, delete, in random order) with at most ``--window`` of them in flight,
each on a network no other in-flight operation touches. An added or moved-to interface first
appears on its bridge (PORT_STATUS) and the REST call comes after. An operation is complete at
the barrier reply after which every hypervisor hosting the network (before or after) holds
exactly the network's flows and groups that ``ryu_overlay.flows`` computes.
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

from common import bench_main, placement_parser, provenance, start_connected, workdir

from ryu_overlay.model import parse_port
from ryu_overlay.testing.controller_proc import RestClient
from ryu_overlay.testing.loadgen import (
    Fleet,
    Placement,
    expected_state,
    holding,
    mac_of,
    make_placement,
    quiet_gc,
)
from ryu_overlay.testing.report import percentile, print_table, table
from ryu_overlay.topology import Topology

KINDS = ("add", "move", "delete")


@dataclass(frozen=True)
class Op:
    kind: str
    rest_seconds: float
    latency: float
    switches: int


class Churn:
    def __init__(self, placement: Placement, fleet: Fleet, clients: list[RestClient], rng: random.Random) -> None:
        self.placement = placement
        self.fleet = fleet
        self.topo: Topology = placement.topology()
        self.ofports = {name: dict(ports) for name, ports in placement.ofports.items()}
        self.hv_by_name = {hv.name: hv for hv in placement.hypervisors}
        self.clients = clients
        self.rng = rng
        self.busy: set[str] = set()
        self.next_index = len(placement.ports) + 1

    def _free_port(self, hv: str) -> tuple[str, int]:
        used = set(self.ofports[hv].values())
        number = max(used) + 1
        return f"tapc{number}", number

    async def run(self, kind: str, client: RestClient) -> Op:
        nets = [n for n in self.topo.networks.values() if n.name not in self.busy]
        net = self.rng.choice(nets)
        self.busy.add(net.name)
        try:
            return await self._run(kind, net.name, client)
        finally:
            self.busy.discard(net.name)

    async def _run(self, kind: str, network: str, client: RestClient) -> Op:
        members = self.topo.ports_of(network)
        if kind != "add" and not members:
            kind = "add"
        hosts_before = self.topo.hosts(network)
        vni = self.topo.networks[network].vni
        gone: tuple[str, str] | None = None
        if kind == "add":
            index = self.next_index
            self.next_index += 1
            hv = self.rng.choice(self.placement.hypervisors).name
            iface, number = self._free_port(hv)
            await self._plug(hv, iface, number)
            used = {ip for p in members for ip in p.ips}
            ip = next(str(a) for a in self.topo.networks[network].subnets[0].hosts()
                      if a not in used)
            body = {"network": network, "mac": mac_of(index), "ips": [ip], "hypervisor": hv, "interface": iface}
            port = parse_port(f"c{index}", body)
            method, path = "PUT", f"/v1/ports/{port.name}"
            self.topo.put_port(port)
        elif kind == "move":
            old = self.rng.choice(members)
            hv = self.rng.choice([h.name for h in self.placement.hypervisors if h.name != old.hypervisor])
            iface, number = self._free_port(hv)
            await self._plug(hv, iface, number)
            body = {"network": network, "mac": old.mac, "ips": [str(i) for i in old.ips], "hypervisor": hv,
                    "interface": iface}
            method, path = "PUT", f"/v1/ports/{old.name}"
            self.topo.put_port(parse_port(old.name, body))
            gone = (old.hypervisor, old.interface)  # type: ignore[assignment]
        else:
            old = self.rng.choice(members)
            body = None
            method, path = "DELETE", f"/v1/ports/{old.name}"
            self.topo.delete_port(old.name)
            gone = (old.hypervisor, old.interface)  # type: ignore[assignment]
        affected = hosts_before | self.topo.hosts(network)
        waits = []
        for name in sorted(affected):
            hv_obj = self.hv_by_name[name]
            want = expected_state(self.topo, hv_obj, self.ofports[name], vnis=[vni])
            sw = self.fleet.by_dpid[hv_obj.dpid]
            waits.append(sw.when(holding(want, vni)))
        t0 = time.monotonic()
        await asyncio.to_thread(client.ok, method, path, body)
        rest_seconds = time.monotonic() - t0
        done = await asyncio.wait_for(asyncio.gather(*waits), 60)
        latency = max(max(done, default=t0) - t0, 0.0)
        if gone is not None:
            await self._unplug(*gone)
        return Op(kind, rest_seconds, latency, len(waits))

    async def _plug(self, hv: str, iface: str, number: int) -> None:
        self.ofports[hv][iface] = number
        sw = self.fleet.by_dpid[self.hv_by_name[hv].dpid]
        sw.add_port(iface, number)
        await sw.sync_point()

    async def _unplug(self, hv: str, iface: str) -> None:
        self.ofports[hv].pop(iface, None)
        sw = self.fleet.by_dpid[self.hv_by_name[hv].dpid]
        if iface in sw.ports:
            sw.remove_port(iface)
            await sw.sync_point()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = placement_parser(__doc__)
    ap.add_argument("--ops", type=int, default=300, help="operations to run (at most)")
    ap.add_argument("--duration", type=float, default=120.0, help="stop issuing operations after this many seconds")
    ap.add_argument("--window", type=int, default=1, help="operations in flight at once (REST clients)")
    return ap.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    placement = make_placement(args.hypervisors, args.ports_per_hv, args.ports_per_network, args.seed)
    rng = random.Random(args.seed)
    with workdir("churn") as tmpname:
        ctl, fleet = await start_connected(placement, Path(tmpname), args.concurrency, args.timeout)
        clients = [ctl.rest() for _ in range(max(1, args.window))]
        try:
            churn = Churn(placement, fleet, clients, rng)
            kinds = [KINDS[i % 3] for i in range(args.ops)]
            rng.shuffle(kinds)
            ops: list[Op] = []
            before = fleet.totals()
            t_start = time.monotonic()
            deadline = t_start + args.duration

            failures: list[str] = []

            async def worker(client: RestClient) -> None:
                while kinds and time.monotonic() < deadline and len(failures) < 10:
                    kind = kinds.pop()
                    try:
                        ops.append(await churn.run(kind, client))
                    except (TimeoutError, ConnectionError, RuntimeError) as exc:
                        failures.append(f"{kind}: {type(exc).__name__} {exc}")

            with quiet_gc():
                await asyncio.gather(*(worker(c) for c in clients))
            elapsed = time.monotonic() - t_start
            after = fleet.totals()
            stats = clients[0].ok("GET", "/v1/stats")
            memory = ctl.memory_kib()
            disconnects = sum(sw.disconnects for sw in fleet.switches)
            error_kinds = sorted({(e.msg_type, e.type, e.code) for sw in fleet.switches for e in sw.error_log})
            if failures:
                print("failed operations:", *failures, "controller log:", ctl.log_tail(15), sep="\n")
        finally:
            for c in clients:
                c.close()
            fleet.close()
            ctl.stop()
    return {"ops": ops, "failures": failures, "elapsed": elapsed, "disconnects": disconnects,
            "error_kinds": error_kinds, "flow_mods": after["flow_adds"] + after["flow_deletes"]
            - before["flow_adds"] - before["flow_deletes"], "errors": after["errors_sent"],
            "switch_errors": stats["switch_errors"], "memory": memory, "ports": len(placement.ports)}


def report(args: argparse.Namespace, r: dict[str, Any]) -> list[str]:
    ops: list[Op] = r["ops"]
    rows = []
    for kind in (*KINDS, "all"):
        chosen = [o for o in ops if kind in ("all", o.kind)]
        if not chosen:
            continue
        lat = [o.latency * 1000 for o in chosen]
        rest = [o.rest_seconds * 1000 for o in chosen]
        sw = [o.switches for o in chosen]
        rows.append((kind, len(chosen), f"{percentile(rest, 50):.1f}", f"{percentile(lat, 50):.1f}",
                     f"{percentile(lat, 99):.1f}", f"{max(lat):.1f}", f"{sum(sw) / len(sw):.1f}"))
    headers = ("operation", "count", "REST answer p50 ms", "all switches updated p50 ms", "p99 ms", "max ms",
               "switches per op")
    rate = len(ops) / r["elapsed"] if r["elapsed"] else 0.0
    title = (f"churn, {args.hypervisors} hypervisors / {r['ports']} ports, window {args.window}: "
             f"{rate:.1f} operations/s, {r['flow_mods']} flow-mods, {r['errors']} switch errors "
             f"{r['error_kinds']}, {len(r['failures'])} failed operations, {r['disconnects']} disconnections")
    print_table(headers, rows, title)
    return [f"### {args.hypervisors:,} hypervisors, window {args.window}", "", *provenance(), "",
            (f"{len(ops)} operations in {r['elapsed']:.1f} s: **{rate:.1f} operations/s** (at most {args.window} "
             f"in flight), {r['flow_mods']:,} flow-mods, {r['errors']} errors from switches, {len(r['failures'])} "
             f"operations failed (at most 10 are tolerated), {r['disconnects']} disconnections, controller RSS "
             f"{r['memory']['VmRSS'] / 1024:.0f} MiB."), "", *table(headers, rows)]


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, report, "churn", lambda a: f"hv{a.hypervisors:06d}-w{a.window:03d}",
                      lambda r: r["errors"] == 0 and bool(r["ops"]) and not r["failures"])


if __name__ == "__main__":
    sys.exit(main())
