"""Several controller instances on etcd (docs/scale-out.md) against fake switches, side by side in one run.

    .venv/bin/python bench/scale_out.py cold --hypervisors 3000 --repeat 2 --doc
    .venv/bin/python bench/scale_out.py failover --hypervisors 1000 --lease-ttl 3 --doc
    .venv/bin/python bench/scale_out.py moonshot --hypervisors 10000 --instances 2 --doc
    .venv/bin/python bench/scale_out.py writes --ports 2000 --doc
    .venv/bin/python bench/scale_out.py memory --hypervisors 10000 --instances 2 --doc

Each run starts its own 3-member etcd cluster (``ryu_overlay.testing.etcd.EtcdCluster``) on
loopback, writes the placement into it in bulk (transactions of 128 keys) or into a SQLite file,
starts the instances, and connects every fake switch to every instance (one connection each;
the switch honours OpenFlow roles like Open vSwitch: only the MASTER may change it).

- ``cold``: the time from the first connection until every switch holds every flow, with
  SQLite (1 instance), etcd with 1 instance and etcd with 2 instances, in alternating order,
  ``--repeat`` times; the ratios are taken within each repetition.
- ``failover``: 2 instances in sync; kill -9 of the one mastering more switches; the time until
  every switch it mastered has a new MASTER that has read it back and confirmed it with a barrier.
- ``moonshot``: the largest fleet, all instances at once; time and memory per hypervisor.
- ``writes``: ports/s through ``PUT /v1/ports/N`` (one at a time) and ``POST /v1/transactions``
  (batches), etcd against SQLite.
- ``memory``: what one instance's memory per hypervisor is made of, piece by piece: the process
  with nothing declared, the topology and the flows of its share (``cluster.plan`` over
  ``--instances``) built in this process, and a switch connection (Ryu's two green threads).

The machine is shared: each figure is printed with the 1-minute load average when it was taken.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import networkx as nx
from common import controller, provenance, update_doc, verdict, workdir
from networkx.algorithms.community import kernighan_lin_bisection

from ryu_overlay.cluster import plan
from ryu_overlay.controller import Controller
from ryu_overlay.etcdstore import EtcdStore
from ryu_overlay.flows import SwitchView, desired_partition, hosted_vnis
from ryu_overlay.model import Hypervisor, Network, Port
from ryu_overlay.ofmsg import FlowAdd
from ryu_overlay.store import Put, SqliteStore
from ryu_overlay.testing.controller_proc import HOST, ControllerProcess
from ryu_overlay.testing.etcd import EtcdCluster
from ryu_overlay.testing.loadgen import (
    Expected,
    Fleet,
    Placement,
    make_placement,
    port_body,
    quiet_gc,
)
from ryu_overlay.testing.report import print_table, table
from ryu_overlay.testing.scenario import handshake

SECTION = "scale_out"
KIB_PER_HV_TARGET = 150
CORES = os.cpu_count() or 1


def load() -> float:
    return os.getloadavg()[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("cold", "failover", "moonshot", "writes", "memory", "fleet-part"),
                    help="fleet-part: internal, the second fake-switch process of a moonshot")
    ap.add_argument("--hypervisors", type=int, default=None,
                    help="default: 3000 (cold), 1000 (failover), 10000 (moonshot), 100 (writes)")
    ap.add_argument("--ports-per-hv", type=int, default=10)
    ap.add_argument("--ports-per-network", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instances", type=int, default=2, help="instances for failover and moonshot")
    ap.add_argument("--lease-ttl", type=int, default=3, help="the instances' --lease-ttl (seconds)")
    ap.add_argument("--repeat", type=int, default=1, help="cold: how many times to measure the three set-ups")
    ap.add_argument("--ports", type=int, default=2000, help="writes: ports written per route and store")
    ap.add_argument("--batch", type=int, default=100, help="writes: ports per transaction")
    ap.add_argument("--concurrency", type=int, default=32, help="connections opened at once (per instance)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--doc", action="store_true", help="write the result into docs/performance.md")
    ap.add_argument("--first", type=int, default=0, help="fleet-part: the index of its first switch")
    ap.add_argument("--keep-logs", type=Path, help="copy the instances' logs into this directory")
    args = ap.parse_args(argv)
    if args.hypervisors is None:
        defaults = {"cold": 3000, "failover": 1000, "moonshot": 10000, "writes": 100, "memory": 10000,
                    "fleet-part": 0}
        args.hypervisors = defaults[args.mode]
    return args


def seed_etcd(placement: Placement, url: str) -> float:
    t0 = time.perf_counter()
    store = EtcdStore(url, timeout=30.0)
    try:
        objects: list[Hypervisor | Network | Port] = [*placement.hypervisors, *placement.networks, *placement.ports]
        store.apply([Put(o) for o in objects])
    finally:
        store.close()
    return time.perf_counter() - t0


def forget_instances(url: str) -> None:
    """Delete the instance records a stopped instance left behind (its lease would expire later)."""
    store = EtcdStore(url)
    try:
        key = store.key("instances", "")
        from ryu_overlay.etcdstore import _b64, _range_end
        store.client.post("/kv/deleterange", {"key": _b64(key), "range_end": _b64(_range_end(key))})
    finally:
        store.close()


def instances(db: str | Path, tmp: Path, count: int, ttl: int) -> list[ControllerProcess]:
    if count == 1 and not str(db).startswith("etcd://"):
        return [controller(tmp, db=Path(db))]
    return [controller(tmp, db=db, extra_args=["--instance-id", f"c{i}", "--lease-ttl", str(ttl)])  # type: ignore[arg-type]
            for i in range(count)]


def _log_named(ctl: ControllerProcess, tmp: Path, name: str) -> ControllerProcess:
    ctl.log = tmp / f"{name}.log"
    return ctl


async def drive(fleet: Fleet, expected: Mapping[int, Expected], ports: list[int], concurrency: int,
                timeout: float) -> dict[str, Any]:
    """Connect ``fleet`` to every instance's OpenFlow port and wait until each switch holds what ``expected``
    says: when it started, when the last switch was connected and done, its CPU, and what the switches saw."""
    fleet0 = time.process_time()
    report = await fleet.connect(HOST, ports, concurrency, timeout=timeout)
    done = await fleet.wait(expected, timeout)
    totals = fleet.totals()
    kinds = Counter(f"{e.type}/{e.code}" for channel in fleet.channels for sw in channel for e in sw.error_log)
    return {"started_at": report.started_at, "connected_at": report.all_connected_at, "done_at": max(done.values()),
            "fleet_cpu": time.process_time() - fleet0, "errors": totals["errors_sent"], "error_kinds": dict(kinds),
            "flow_mods": totals["flow_adds"],
            "masters": [sum(1 for sw in fleet.switches
                            if (m := sw.master()) is not None and m.connections.index(m) == i)
                        for i in range(len(ports))]}


async def drive_part(args: argparse.Namespace, first: int, ports: list[int], concurrency: int,
                     ready: asyncio.Event, go: asyncio.Event) -> dict[str, Any]:
    """The switches from index ``first`` on, driven by another process (``fleet-part`` mode): one
    process may hold only so many connections (RLIMIT_NOFILE), and 10,000 switches times 2 instances
    is more than this machine allows. Sets ``ready`` once that process has computed what its switches
    should hold; after ``go``, hands it ``ports`` (filled by then) and returns what its ``drive`` returned."""
    cmd = [sys.executable, __file__, "fleet-part", "--hypervisors", str(args.hypervisors), "--ports-per-hv",
           str(args.ports_per_hv), "--ports-per-network", str(args.ports_per_network), "--seed", str(args.seed),
           "--first", str(first), "--concurrency", str(concurrency), "--timeout", str(args.timeout)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if (await proc.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the second fleet process did not start")
        ready.set()
        await go.wait()
        proc.stdin.write((" ".join(map(str, ports)) + "\n").encode())
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError("the second fleet process ended without a result")
        result: dict[str, Any] = json.loads(line)
        return result
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def run_fleet_part(args: argparse.Namespace) -> None:
    """``fleet-part`` mode: prepare the switches from ``--first`` on, say "ready", read the instances'
    OpenFlow ports from stdin, drive the switches, print the result as one JSON line."""
    _raise_open_files(2 * (args.hypervisors - args.first) + 1000)
    placement = make_placement(args.hypervisors, args.ports_per_hv, args.ports_per_network, args.seed)
    expected = placement.expected_states(placement.topology(), args.first)
    specs = placement.specs()[args.first:]
    print("ready", flush=True)
    ports = [int(p) for p in (await asyncio.to_thread(sys.stdin.readline)).split()]
    fleet = Fleet(specs, controllers=len(ports))
    try:
        with quiet_gc():
            result = await drive(fleet, expected, ports, args.concurrency, args.timeout)
    finally:
        fleet.close()
    print(json.dumps(result), flush=True)


def _raise_open_files(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


async def cold_once(placement: Placement, expected: dict[int, Expected], db: str | Path, tmp: Path, count: int,
                    args: argparse.Namespace, label: str, split: int | None = None) -> dict[str, Any]:
    """Start ``count`` instances on ``db``, connect the fleet to all, time until every switch holds its flows.
    With ``split``, the switches from that index on are driven by a second process (``drive_part``), and
    ``expected`` covers only those before it."""
    ready, go = asyncio.Event(), asyncio.Event()
    concurrency = args.concurrency * count // (1 if split is None else 2)
    specs = placement.specs()[:split]
    ctls = [_log_named(c, tmp, f"{label}-c{i}") for i, c in enumerate(instances(db, tmp, count, args.lease_ttl))]
    fleet = Fleet(specs, controllers=count)
    part: asyncio.Task[dict[str, Any]] | None = None
    with ExitStack() as stack:
        for ctl in ctls:
            stack.callback(ctl.stop)
        stack.callback(fleet.close)
        ports: list[int] = []
        if split is not None:
            part = asyncio.create_task(drive_part(args, split, ports, concurrency, ready, go))
            await ready.wait()
        t0 = time.perf_counter()
        for ctl in ctls:
            ctl.start(timeout=args.timeout)
            ports.append(ctl.ofp_port)
        started = time.perf_counter() - t0
        avg0 = load()
        with quiet_gc():
            cpu0 = [c.cpu_seconds() for c in ctls]
            go.set()
            parts = [await drive(fleet, expected, ports, concurrency, args.timeout)]
            if part is not None:
                parts.append(await part)
            cpu = [c.cpu_seconds() - c0 for c, c0 in zip(ctls, cpu0, strict=True)]
        mem = [c.memory_kib() for c in ctls]
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for c in ctls:
                shutil.copy(c.log, args.keep_logs / c.log.name)
        started_at = min(p["started_at"] for p in parts)
        return {"error_kinds": dict(sum((Counter(p["error_kinds"]) for p in parts), Counter())), "label": label,
                "instances": count, "fleet_processes": len(parts),
                "total": max(p["done_at"] for p in parts) - started_at,
                "connect": max(p["connected_at"] for p in parts) - started_at, "start": started, "cpu": cpu,
                "fleet_cpu": sum(p["fleet_cpu"] for p in parts), "rss_kib": sum(m["VmRSS"] for m in mem),
                "hwm_kib": sum(m["VmHWM"] for m in mem), "load": (avg0 + load()) / 2,
                "masters": [sum(p["masters"][i] for p in parts) for i in range(count)],
                "errors": sum(p["errors"] for p in parts), "flow_mods": sum(p["flow_mods"] for p in parts)}


def program_cpu(placement: Placement, dpids: set[int]) -> float:
    """CPU seconds one process spends computing and encoding every flow the switches ``dpids`` need,
    from a topology of its own (nothing memoised from before)."""
    topo = placement.topology()
    t0 = time.process_time()
    for hv in placement.hypervisors:
        if hv.dpid in dpids:
            view = SwitchView(hv, placement.ofports[hv.name])
            for vni in {0} | hosted_vnis(topo, hv.name):
                for f in desired_partition(topo, view, vni).flows.values():
                    FlowAdd(f).serialize()
    return time.process_time() - t0


def shared_work(placement: Placement) -> dict[str, float]:
    """How much of the work is per network rather than per switch: CPU for one instance's share of the
    switches (two instances, as ``cluster.plan`` shares them) against CPU for all, in one process; and
    how many networks have hosts in both shares, under the plan and under a Kernighan-Lin bisection of
    the hypervisors (weighted by the networks they share), the best a network-aware sharing could do."""
    dpids = {hv.dpid for hv in placement.hypervisors}
    share = {d for d, inst in plan(dpids, ["c0", "c1"]).items() if inst == "c0"}
    full, half = program_cpu(placement, dpids), program_cpu(placement, share)
    hosts: dict[str, set[str]] = {}
    for p in placement.ports:
        if p.hypervisor is not None:
            hosts.setdefault(p.network, set()).add(p.hypervisor)
    graph = nx.Graph()
    graph.add_nodes_from(hv.name for hv in placement.hypervisors)
    for members in hosts.values():
        for a, b in itertools.combinations(sorted(members), 2):
            graph.add_edge(a, b, weight=graph.get_edge_data(a, b, {"weight": 0})["weight"] + 1)
    side, _ = kernighan_lin_bisection(graph, weight="weight", seed=1)
    mine = {hv.name for hv in placement.hypervisors if hv.dpid in share}

    def split(names: set[str]) -> float:
        return sum(1 for m in hosts.values() if m & names and m - names) / len(hosts)

    return {"half_over_all": half / full, "all_cpu": full, "split_plan": split(mine), "split_kl": split(set(side))}


def setups(args: argparse.Namespace) -> list[tuple[str, int]]:
    return [("sqlite-1", 1), ("etcd-1", 1), ("etcd-2", 2)]


async def run_cold(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float]]:
    placement = make_placement(args.hypervisors, args.ports_per_hv, args.ports_per_network, args.seed)
    shared = shared_work(placement)
    print(f"one instance's share / all switches, CPU to compute and encode: {shared['half_over_all']:.2f}; "
          f"networks on both shares: {shared['split_plan']:.0%} (plan), {shared['split_kl']:.0%} (KL)", flush=True)
    topo = placement.topology()
    expected = placement.expected_states(topo)
    runs: list[dict[str, Any]] = []
    with workdir("scale-cold") as name, EtcdCluster(Path(name) / "etcd") as etcd:
        tmp = Path(name)
        placement.seed_store(str(tmp / "overlay.db"))
        url = etcd.url()
        seeded = seed_etcd(placement, url)
        print(f"etcd seeded in {seeded:.1f} s", flush=True)
        for rep in range(args.repeat):
            order = setups(args) if rep % 2 == 0 else list(reversed(setups(args)))
            for label, count in order:
                forget_instances(url)
                db: str | Path = tmp / "overlay.db" if label.startswith("sqlite") else url
                r = await cold_once(placement, expected, db, tmp, count, args, label)
                r["repeat"] = rep
                runs.append(r)
                print(f"[{rep}] {label}: {r['total']:.2f} s (load {r['load']:.1f}), masters {r['masters']}, "
                      f"errors {r['errors']} {r['error_kinds']}, RSS {r['rss_kib'] / 1024:.0f} MiB", flush=True)
    return runs, shared


def report_cold(args: argparse.Namespace, result: tuple[list[dict[str, Any]], dict[str, float]]) -> list[str]:
    runs, shared = result
    by = {(r["repeat"], r["label"]): r for r in runs}
    rows = []
    ratios2, ratios_db = [], []
    for rep in range(args.repeat):
        s, e1, e2 = by[(rep, "sqlite-1")], by[(rep, "etcd-1")], by[(rep, "etcd-2")]
        ratios2.append(e2["total"] / e1["total"])
        ratios_db.append(e1["total"] / s["total"])
        for r in (s, e1, e2):
            rows.append((f"#{rep + 1} {r['label']}", f"{r['total']:.2f} s", f"{r['connect']:.2f} s",
                         " / ".join(f"{c:.1f}" for c in r["cpu"]), f"{r['fleet_cpu']:.1f}",
                         f"{(sum(r['cpu']) + r['fleet_cpu']) / CORES:.2f} s", f"{r['rss_kib'] / 1024:.0f} MiB",
                         "/".join(map(str, r["masters"])) if r["instances"] > 1 else "-", f"{r['load']:.1f}"))
    r2, rdb = statistics.median(ratios2), statistics.median(ratios_db)
    headers = ("run", "cold start", "connecting", "CPU s per instance", "CPU s of the fake switches",
               f"all CPU / {CORES} cores", "RSS (sum)", "switches mastered", "load avg")
    print_table(headers, rows, f"cold start, {args.hypervisors} hypervisors, 1 and 2 instances")
    summary = [("2 instances / 1 instance on etcd (median of the per-run ratios)",
                f"{r2:.2f} ({', '.join(f'{x:.2f}' for x in ratios2)})", f"<= 0.6: {verdict(r2 <= 0.6)}"),
               ("1 instance: etcd / SQLite", f"{rdb:.2f} ({', '.join(f'{x:.2f}' for x in ratios_db)})",
                f"<= 1.2: {verdict(rdb <= 1.2)}"),
               ("CPU to compute and encode the flows of one instance's share (of 2) / of all switches, one process",
                f"{shared['half_over_all']:.2f} ({shared['all_cpu']:.1f} s for all)", ""),
               ("networks with hosts in both shares: as shared / best bisection found (Kernighan-Lin)",
                f"{shared['split_plan']:.0%} / {shared['split_kl']:.0%}", "")]
    print_table(("measure", "value", "target"), summary, "ratios")
    n = args.hypervisors
    return [f"### Cold start, {n:,} hypervisors / {n * args.ports_per_hv:,} ports: 1 and 2 instances", "",
            *provenance(), "",
            "Each row is one cold start (first connection until every switch holds every flow); the set-ups "
            "alternate order between repetitions, all on the same 3-member etcd cluster (or SQLite file).", "",
            *table(headers, rows), "", *table(("measure", "value", "target"), summary)]


def _all_in_sync(ctl: ControllerProcess, switches: int) -> bool:
    """Every hypervisor has a master, and the ones ``ctl`` masters it reports in sync."""
    try:
        status, body = ctl.api("GET", "/v1/hypervisors")
    except OSError:  # busy taking over: ask again
        return False
    if status != 200 or len(body["hypervisors"]) != switches:
        return False
    return all(h["master"] is not None and (h["in_sync"] or h["master"] != ctl.extra_args[1])
               for h in body["hypervisors"])


async def run_failover(args: argparse.Namespace) -> dict[str, Any]:
    placement = make_placement(args.hypervisors, args.ports_per_hv, args.ports_per_network, args.seed)
    topo = placement.topology()
    expected = placement.expected_states(topo)
    with workdir("scale-failover") as name, EtcdCluster(Path(name) / "etcd") as etcd:
        tmp = Path(name)
        url = etcd.url()
        seed_etcd(placement, url)
        ctls = [_log_named(c, tmp, f"c{i}") for i, c in enumerate(instances(url, tmp, args.instances, args.lease_ttl))]
        fleet = Fleet(placement.specs(), controllers=len(ctls))
        with ExitStack() as stack:
            for ctl in ctls:
                stack.callback(ctl.stop)
            stack.callback(fleet.close)
            for ctl in ctls:
                ctl.start(timeout=args.timeout)
            with quiet_gc():
                await fleet.connect(HOST, [c.ofp_port for c in ctls], args.concurrency * len(ctls),
                                    timeout=args.timeout)
                await fleet.wait(expected, args.timeout)
                index = {sw.dpid: i for i, sw in enumerate(fleet.switches)}
                deadline = time.monotonic() + args.timeout
                while any(sw.master() is None for sw in fleet.switches):
                    if time.monotonic() > deadline:
                        raise RuntimeError("some switches have no master")
                    await asyncio.sleep(0.05)
                before = [sum(1 for sw in fleet.switches if fleet.channels[i][index[sw.dpid]].role == 2)
                          for i in range(len(ctls))]
                victim = max(range(len(ctls)), key=lambda i: before[i])
                orphans = [sw for sw in fleet.switches if fleet.channels[victim][index[sw.dpid]].role == 2]
                deletes0 = fleet.totals()["flow_deletes"]
                avg0 = load()
                await asyncio.sleep(args.lease_ttl / 2)  # a lease renewal in between: a kill at a random phase
                t0 = time.monotonic()
                os.kill(ctls[victim].pid, signal.SIGKILL)

                survivors = [c for i, c in enumerate(ctls) if i != victim]
                mastered: dict[int, float] = {}
                synced_at = None
                while synced_at is None:
                    now = time.monotonic()
                    if now - t0 > args.timeout:
                        raise RuntimeError(f"not taken over after {args.timeout} s")
                    for sw in orphans:
                        m = sw.master()
                        if sw.dpid not in mastered and m is not None and (m.mastered_at or 0) > t0:
                            mastered[sw.dpid] = (m.mastered_at or now) - t0
                    if len(mastered) == len(orphans) and all([
                            await asyncio.to_thread(_all_in_sync, c, len(fleet.switches)) for c in survivors]):
                        synced_at = time.monotonic() - t0
                    else:
                        await asyncio.sleep(0.02)
                holding = sum(1 for sw in orphans if sw.holds(expected[sw.dpid]))
                avg1 = load()
            ctls[victim].proc = None
            survivor = ctls[1 - victim] if len(ctls) == 2 else next(c for c in ctls if c.proc is not None)
            hvs = survivor.ok("GET", "/v1/hypervisors")["hypervisors"]
            return {"switches": len(fleet.switches), "before": before, "orphans": len(orphans),
                    "first_master": min(mastered.values()), "last_master": max(mastered.values()),
                    "last_sync": synced_at, "holding": holding, "ttl": args.lease_ttl,
                    "flow_deletes": fleet.totals()["flow_deletes"] - deletes0, "load": (avg0 + avg1) / 2,
                    "survivor_in_sync": sum(1 for h in hvs if h["in_sync"]), "hypervisors": len(hvs)}


def report_failover(args: argparse.Namespace, r: dict[str, Any]) -> list[str]:
    target = r["ttl"] + 2
    rows = [("switches; mastered before the kill", f"{r['switches']:,}; {' / '.join(map(str, r['before']))}", ""),
            ("orphaned switches (mastered by the killed instance)", f"{r['orphans']:,}", ""),
            ("kill -9 -> first orphan gets MASTER from the survivor", f"{r['first_master']:.2f} s", ""),
            ("kill -9 -> last orphan gets MASTER", f"{r['last_master']:.2f} s", ""),
            ("kill -9 -> the survivor reports every switch in sync (read back, reconciled, confirmed)",
             f"{r['last_sync']:.2f} s",
             f"< TTL + 2 s = {target} s: {verdict(r['last_sync'] < target)}"),
            ("flow deletes sent during the failover", f"{r['flow_deletes']}", "0 (no flush)"),
            ("orphans holding exactly their expected flows after", f"{r['holding']:,} / {r['orphans']:,}", ""),
            ("survivor reports in sync", f"{r['survivor_in_sync']:,} / {r['hypervisors']:,}", ""),
            ("load average", f"{r['load']:.1f}", "")]
    print_table(("measure", "value", "target"), rows, "failover")
    return [f"### Failover, {r['switches']:,} switches, 2 instances, lease TTL {r['ttl']} s", "", *provenance(), "",
            *table(("measure", "value", "target"), rows)]


async def run_moonshot(args: argparse.Namespace) -> dict[str, Any]:
    want = args.hypervisors * args.instances + 1000
    _raise_open_files(want)
    split = None if want <= resource.getrlimit(resource.RLIMIT_NOFILE)[0] else args.hypervisors // 2
    t0 = time.perf_counter()
    placement = make_placement(args.hypervisors, args.ports_per_hv, args.ports_per_network, args.seed)
    expected = placement.expected_states(placement.topology(), 0, split)  # cookie sets; the topology is freed
    print(f"placement computed in {time.perf_counter() - t0:.1f} s", flush=True)
    with workdir("scale-moon") as name, EtcdCluster(Path(name) / "etcd") as etcd:
        tmp = Path(name)
        url = etcd.url()
        seeded = seed_etcd(placement, url)
        print(f"etcd seeded in {seeded:.1f} s", flush=True)
        r = await cold_once(placement, expected, url, tmp, args.instances, args, "moonshot", split)
        r.update(seeded=seeded, hypervisors=args.hypervisors, ports=len(placement.ports))
        return r


def report_moonshot(args: argparse.Namespace, r: dict[str, Any]) -> list[str]:
    per_hv = r["rss_kib"] / r["hypervisors"]
    rows = [("hypervisors / ports", f"{r['hypervisors']:,} / {r['ports']:,}", ""),
            ("instances (each connected to every switch); switches mastered",
             f"{r['instances']}; {'/'.join(map(str, r['masters']))}", ""),
            ("cold start: first connection -> every switch has every flow", f"{r['total']:.1f} s",
             f"< 60 s: {verdict(r['total'] < 60)}"),
            ("  of which connecting", f"{r['connect']:.1f} s", ""),
            ("instances' start (etcd read, until they listen)", f"{r['start']:.1f} s", ""),
            ("controller RSS, all instances, per hypervisor", f"{per_hv:.0f} KiB ({r['rss_kib'] / 1024:.0f} MiB)",
             f"< {KIB_PER_HV_TARGET} KiB: {verdict(per_hv < KIB_PER_HV_TARGET)}"),
            ("CPU s per instance during the cold start", " / ".join(f"{c:.1f}" for c in r["cpu"]), ""),
            ("CPU s of the fake switches (processes)", f"{r['fleet_cpu']:.1f} ({r['fleet_processes']})", ""),
            (f"all CPU / {CORES} cores: the least the cold start could take here",
             f"{(sum(r['cpu']) + r['fleet_cpu']) / CORES:.1f} s", ""),
            ("errors from switches", str(r["errors"]), ""),
            ("etcd bulk seeding (128 keys a transaction)", f"{r['seeded']:.1f} s", ""),
            ("load average", f"{r['load']:.1f}", "")]
    print_table(("measure", "value", "target"), rows, "moonshot")
    return [f"### Moonshot: {r['hypervisors']:,} hypervisors / {r['ports']:,} ports, {r['instances']} instances",
            "", *provenance(), "", *table(("measure", "value", "target"), rows)]


def _write_ports(ctl: ControllerProcess, placement: Placement, args: argparse.Namespace) -> dict[str, float]:
    """Ports/s: one PUT at a time, then the same number in transactions of ``args.batch``."""
    ports = placement.ports[:2 * args.ports]
    single, batched = ports[:args.ports], ports[args.ports:]
    with closing(ctl.rest()) as rest:
        for hv in placement.hypervisors:
            rest.ok("PUT", f"/v1/hypervisors/{hv.name}", {"dpid": hv.dpid, "tunnel_ip": str(hv.tunnel_ip)})
        for net in placement.networks:
            rest.ok("PUT", f"/v1/networks/{net.name}",
                    {"vni": net.vni, "tenant": net.tenant, "subnets": [str(s) for s in net.subnets]})
        t0 = time.perf_counter()
        for p in single:
            rest.ok("PUT", f"/v1/ports/{p.name}", port_body(p))
        t1 = time.perf_counter()
        for i in range(0, len(batched), args.batch):
            ops = [{"op": "put", "kind": "ports", "name": p.name, "body": port_body(p)}
                   for p in batched[i:i + args.batch]]
            rest.ok("POST", "/v1/transactions", {"operations": ops})
        t2 = time.perf_counter()
    return {"rest": len(single) / (t1 - t0), "txn": len(batched) / (t2 - t1)}


async def run_writes(args: argparse.Namespace) -> dict[str, Any]:
    hvs = max(1, 2 * args.ports // args.ports_per_hv)
    placement = make_placement(hvs, args.ports_per_hv, args.ports_per_network, args.seed)
    out: dict[str, Any] = {}
    with workdir("scale-writes") as name, EtcdCluster(Path(name) / "etcd") as etcd:
        tmp = Path(name)
        for rep in range(args.repeat):
            for label in ("sqlite", "etcd"):
                db: str | Path = tmp / f"w{rep}.db" if label == "sqlite" else etcd.url(f"/w{rep}")
                [ctl] = instances(db, tmp, 1, args.lease_ttl)
                with ctl:
                    avg0 = load()
                    r = _write_ports(ctl, placement, args)
                r["load"] = (avg0 + load()) / 2
                out.setdefault(label, []).append(r)
                print(f"[{rep}] {label}: {r['rest']:.0f} ports/s REST, {r['txn']:.0f} ports/s in transactions "
                      f"(load {r['load']:.1f})", flush=True)
    return out


def report_writes(args: argparse.Namespace, r: dict[str, Any]) -> list[str]:
    rows = []
    for route, label in (("rest", "PUT /v1/ports/N, one at a time"),
                         ("txn", f"POST /v1/transactions, {args.batch} ports each")):
        s = statistics.median(x[route] for x in r["sqlite"])
        e = statistics.median(x[route] for x in r["etcd"])
        loads = ", ".join(f"{x['load']:.1f}" for x in (*r["sqlite"], *r["etcd"]))
        rows.append((label, f"{s:,.0f}", f"{e:,.0f}", f"{e / s:.2f}", loads))
    headers = ("ports/s", "SQLite", "etcd (3 members)", "etcd / SQLite", "load avg")
    print_table(headers, rows, "write throughput")
    return [f"### Write throughput, {args.ports:,} ports per route and store", "", *provenance(), "",
            f"One instance, no switch connected; a REST answer comes once its write is durable. Median of "
            f"{args.repeat} run(s).", "", *table(headers, rows)]


# Ryu serves each switch connection from two green threads: one receives, one sends (its echo
# thread returns at once unless --maximum-unreplied-echo-requests is set). Here, one green thread
# waits on each end of each socket pair, as those two wait on a quiet connection.
GREEN_THREADS = """
import eventlet, socket, sys
eventlet.monkey_patch()
from ryu.lib import hub
pairs = [socket.socketpair() for _ in range({pairs})]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 1024
def wait(s):
    while s.recv(8):
        pass
r0 = rss()
threads = [hub.spawn(wait, s) for pair in pairs for s in pair]
hub.sleep(0.5)
print(rss() - r0)
"""


def rss_kib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 1024


async def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"hypervisors": args.hypervisors, "instances": args.instances}
    with workdir("scale-memory") as name:
        tmp = Path(name)
        with controller(tmp, db=tmp / "empty.db") as ctl:
            out["process_kib"] = ctl.memory_kib()["VmRSS"]
        placement = make_placement(args.hypervisors, args.ports_per_hv, args.ports_per_network, args.seed)
        placement.seed_store(str(tmp / "placement.db"))
        masters = plan((hv.dpid for hv in placement.hypervisors), [f"c{i}" for i in range(args.instances)])
        share = [hv for hv in placement.hypervisors if masters[hv.dpid] == "c0"]
        gc.collect()
        before = rss_kib()
        c = Controller(SqliteStore(str(tmp / "placement.db")))
        gc.collect()
        loaded = rss_kib()
        for hv in share:
            for msg in handshake(c, hv.dpid, dict(placement.ofports[hv.name])):
                if isinstance(msg, FlowAdd):
                    msg.buf  # noqa: B018 -- encoded once per flow, as the instance does when it sends it
        gc.collect()
        out.update(topology_kib=loaded - before, flows_kib=rss_kib() - loaded, mastered=len(share))
    pairs = min(args.hypervisors, 5000)
    code = GREEN_THREADS.format(pairs=pairs)
    grown = subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, capture_output=True, text=True)
    out.update(pairs=pairs, connection_kib=float(grown.stdout.split()[-1]) / pairs, load=load())
    return out


def report_memory(args: argparse.Namespace, r: dict[str, Any]) -> list[str]:
    n, k = r["hypervisors"], r["instances"]
    topo, flows, conn = r["topology_kib"] / n, r["flows_kib"] / n, r["connection_kib"]
    process = r["process_kib"] / n
    total = k * (process + topo + flows + conn)
    rows = [("the process alone, nothing declared (RSS)", f"{r['process_kib'] / 1024:.0f} MiB",
             f"{process:.1f} KiB per hypervisor"),
            ("the topology, loaded from the store", f"{r['topology_kib'] / 1024:.0f} MiB", f"{topo:.1f}"),
            (f"the flows of its share ({r['mastered']:,} switches), built and encoded",
             f"{r['flows_kib'] / 1024:.0f} MiB", f"{flows:.1f}"),
            (f"a switch connection: two green threads waiting on a socket ({r['pairs']:,} measured)",
             f"{conn:.1f} KiB", f"{conn:.1f}"),
            (f"the sum for {k} instances, each connected to every switch", "",
             f"{total:.0f} (target < {KIB_PER_HV_TARGET})"),
            ("load average", f"{r['load']:.1f}", "")]
    headers = ("one instance of " + str(k), "measured", "KiB per hypervisor")
    print_table(headers, rows, "memory")
    return [f"### Memory of an instance, piece by piece: {n:,} hypervisors, {k} instances", "", *provenance(), "",
            "The topology and flows are measured in the benchmark's own process (RSS before and after), "
            "the connection in a process of its own; neither includes the heap that a real instance "
            "leaves behind after a cold start's messages.", "", *table(headers, rows)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "fleet-part":
        asyncio.run(run_fleet_part(args))
        return 0
    modes = {"cold": (run_cold, report_cold), "failover": (run_failover, report_failover),
             "moonshot": (run_moonshot, report_moonshot), "writes": (run_writes, report_writes),
             "memory": (run_memory, report_memory)}
    run, report = modes[args.mode]
    result = asyncio.run(run(args))
    lines = report(args, result)  # type: ignore[operator]
    if args.doc:
        update_doc(SECTION, f"{args.mode}-{args.hypervisors}", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
