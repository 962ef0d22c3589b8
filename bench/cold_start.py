"""Cold start: N hypervisors' bridges connect to a controller that knows the whole placement.

    .venv/bin/python bench/cold_start.py --hypervisors 1000 --ports-per-hv 10 --ports-per-network 10 --seed 1

Declares N hypervisors, ~N*P/10 networks and N*P ports with declared locations (by default
written straight into the controller's SQLite store, the bulk path; ``--create rest`` PUTs them
one by one), starts the real controller, connects N fake switches in waves, and measures the
time until every switch holds exactly what ``ryu_overlay.flows`` computes for it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from common import (
    add_profile_arguments,
    bench_main,
    controller,
    create_via_rest,
    placement_parser,
    profiler_for,
    provenance,
    stopping,
    verdict,
    workdir,
)

from ryu_overlay.testing.controller_proc import HOST
from ryu_overlay.testing.loadgen import (
    Expected,
    Fleet,
    Placement,
    make_placement,
    quiet_gc,
)
from ryu_overlay.testing.report import print_table, table

TARGETS = {1000: 5.0, 3000: 15.0}
FLOW_MOD_TARGET = 50_000
PROFILE_NEEDLES = ("Datapath._recv_loop", "RyuApp._event_loop", "Datapath._send_loop", "Controller._full_sync",
                   "Controller._diff", "desired_partition", "Changes.batch", "OverlayApp.send", "wire (",
                   "serialize (", "Datapath.send (", "msg (ryu/ofproto/ofproto_parser.py", "send_event_to_observers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = placement_parser(__doc__)
    ap.add_argument("--create", choices=("bulk", "rest"), default="bulk",
                    help="bulk: write the store before the controller starts; rest: PUT every object")
    ap.add_argument("--rest-sample", type=int, default=1000,
                    help="with --create bulk, also time REST creation of this many ports (with their networks "
                         "and a tenth as many extra hypervisors) on a throwaway controller; 0 skips it")
    add_profile_arguments(ap, "the cold start")
    return ap.parse_args(argv)


def rest_sample(placement: Placement, count: int, tmp: Path) -> dict[str, tuple[int, float]]:
    """REST creation timed against a controller that already holds the rest of the placement."""
    per_net = max(1, len(placement.ports) // max(1, len(placement.networks)))
    n_nets = max(1, min(len(placement.networks), count // per_net))
    sample_nets = {n.name for n in placement.networks[:n_nets]}
    rest_part = Placement(placement.hypervisors, tuple(n for n in placement.networks if n.name not in sample_nets),
                          tuple(p for p in placement.ports if p.network not in sample_nets), placement.seed,
                          placement.ofports)
    db = tmp / "sample.db"
    rest_part.seed_store(str(db))
    extra = max(1, n_nets)
    base = len(placement.hypervisors)
    objects = [("hypervisors", f"extra{i}", {"dpid": base + 1 + i, "tunnel_ip": f"198.19.{i // 250}.{i % 250 + 1}"})
               for i in range(extra)]
    objects += [(k, n, b) for k, n, b in placement.rest_objects() if
                (k == "networks" and n in sample_nets) or (k == "ports" and b["network"] in sample_nets)]
    with controller(tmp, db=db) as ctl, closing(ctl.rest()) as rest:
        return create_via_rest(rest, objects)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    placement = make_placement(args.hypervisors, args.ports_per_hv, args.ports_per_network, args.seed)
    topo = placement.topology()
    expected: dict[int, Expected] = placement.expected_states(topo)
    print(f"placement and expected flows computed in {time.perf_counter() - t0:.1f} s", flush=True)
    result: dict[str, Any] = {}
    with workdir("cold") as tmpname:
        tmp = Path(tmpname)
        if args.create == "bulk":
            t = time.perf_counter()
            placement.seed_store(str(tmp / "overlay.db"))
            result["bulk_seconds"] = time.perf_counter() - t
            if args.rest_sample:
                (tmp / "sample").mkdir()
                result["rest"] = rest_sample(placement, args.rest_sample, tmp / "sample")
        ctl = controller(tmp).start(timeout=args.timeout)
        result["controller_start"] = ctl.started_in
        profiler = profiler_for(args, ctl.pid, tmp)
        fleet = Fleet(placement.specs())
        with stopping(ctl, fleet, profiler):
            if args.create == "rest":
                with closing(ctl.rest()) as rest:
                    result["rest"] = create_via_rest(rest, placement.rest_objects())
            if profiler is not None:
                profiler.start()
            deadline = time.monotonic() + args.timeout
            with quiet_gc():
                cpu0, own0 = ctl.cpu_seconds(), time.process_time()
                report = await fleet.connect(HOST, ctl.ofp_port, args.concurrency, timeout=args.timeout)
                done = await fleet.wait(expected, max(1.0, deadline - time.monotonic()))
                result["controller_cpu"] = ctl.cpu_seconds() - cpu0
                result["loadgen_cpu"] = time.process_time() - own0
            if profiler is not None:
                result.update(profiler.finish(PROFILE_NEEDLES))
            stats = ctl.ok("GET", "/v1/stats")
            result["memory"] = ctl.memory_kib()
            totals = fleet.totals()
            flows = [sw.flow_count for sw in fleet.switches]
            known = {hv.dpid: sum(len(topo.ports_of(n)) for n in topo.networks_on(hv.name))
                     for hv in placement.hypervisors}
            per_port = [sw.flow_count / known[sw.dpid] for sw in fleet.switches if known[sw.dpid]]
            first_barrier = min(sw.connected_at or report.started_at for sw in fleet.switches)
            result.update(
                hypervisors=args.hypervisors, ports=len(placement.ports), networks=len(placement.networks),
                connect=report.seconds, settle=max(done.values()) - report.all_connected_at,
                total=max(done.values()) - report.started_at, first_connected=first_barrier - report.started_at,
                flow_mods=totals["flow_adds"] + totals["flow_deletes"] + totals["flow_modifies"],
                group_mods=totals["group_mods"], meter_mods=totals["meter_mods"], errors=totals["errors_sent"],
                flows_min=min(flows), flows_mean=statistics.fmean(flows), flows_max=max(flows), flows_total=sum(flows),
                flows_per_port=statistics.fmean(per_port),
                controller_flows_installed=stats["flows_installed"], controller_flow_mods=stats["flow_mods"],
                connected=stats["hypervisors_connected"], switch_errors=stats["switch_errors"])
    return result


def report(args: argparse.Namespace, r: dict[str, object]) -> list[str]:
    n = int(r["hypervisors"])  # type: ignore[call-overload]
    total = float(r["total"])  # type: ignore[arg-type]
    settle = float(r["settle"])  # type: ignore[arg-type]
    rate = float(r["flow_mods"]) / total  # type: ignore[arg-type]
    target = TARGETS.get(n)
    target_text = f"< {target:g} s: {verdict(total < target)}" if target else "none at this size"
    mem = r["memory"]
    rows = [
        ("hypervisors / networks / ports", f"{n:,} / {r['networks']:,} / {r['ports']:,}", ""),
        ("cold start: first switch connects -> every switch has every flow", f"{total:.2f} s", target_text),
        ("  of which connecting all switches (FEATURES done)", f"{float(r['connect']):.2f} s",  # type: ignore[arg-type]
         f"waves of {args.concurrency}"),
        ("  all switches connected -> every switch has every flow", f"{settle:.2f} s", ""),
        ("flow-mods sent / received", f"{r['controller_flow_mods']:,} / {r['flow_mods']:,}", ""),
        ("flow-mods/s (over the whole cold start)", f"{rate:,.0f}",
         f">= {FLOW_MOD_TARGET:,}: {verdict(rate >= FLOW_MOD_TARGET)}"),
        ("group-mods / meter-mods", f"{r['group_mods']:,} / {r['meter_mods']:,}", ""),
        ("flows per hypervisor min / mean / max",
         f"{r['flows_min']} / {float(r['flows_mean']):.0f} / {r['flows_max']}", ""),  # type: ignore[arg-type]
        ("flows per hypervisor, per port of the networks it hosts (mean)", f"{float(r['flows_per_port']):.2f}",  # type: ignore[arg-type]
         f"< 7 (OVN): {verdict(float(r['flows_per_port']) < 7)}"),  # type: ignore[arg-type]
        ("flows held by switches / controller's flows_installed",
         f"{r['flows_total']:,} / {r['controller_flows_installed']:,}", ""),
        ("switches connected per /v1/stats; errors from switches", f"{r['connected']}; {r['errors']}", ""),
        ("controller RSS after / peak", f"{mem['VmRSS'] / 1024:.0f} MiB / {mem['VmHWM'] / 1024:.0f} MiB", ""),  # type: ignore[index]
        ("CPU during cold start: controller / load generator",
         f"{float(r['controller_cpu']):.1f} s / {float(r['loadgen_cpu']):.1f} s", ""),  # type: ignore[arg-type]
        ("controller start (store load, until it listens)", f"{float(r['controller_start']):.2f} s", ""),  # type: ignore[arg-type]
    ]
    if "bulk_seconds" in r:
        rows.append(("bulk creation (one SQLite transaction)", f"{float(r['bulk_seconds']):.2f} s", ""))  # type: ignore[arg-type]
    rest = r.get("rest")
    if isinstance(rest, dict):
        full = 0.0
        counts = {"hypervisors": n, "networks": int(r["networks"]), "ports": int(r["ports"])}  # type: ignore[call-overload]
        for kind, (count, seconds) in rest.items():
            rows.append((f"REST PUT {kind}", f"{count / seconds:,.0f}/s ({count:,} in {seconds:.1f} s)", ""))
            full += counts[kind] * seconds / count
        label = "REST creation of the whole placement" + (" (extrapolated)" if args.create == "bulk" else "")
        rows.append((label, f"{full:.1f} s", ""))
    print_table(("measure", "value", "target"), rows, f"cold start, {n} hypervisors")
    lines = [f"### {n:,} hypervisors, {r['ports']:,} ports", "", *provenance(), "",
             *table(("measure", "value", "target"), rows)]
    return lines


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, report, "cold_start", lambda a: f"hv{a.hypervisors:06d}-{a.create}",
                      lambda r: r["errors"] == 0 and r["connected"] == r["hypervisors"],
                      lambda a: f"### During the cold start of {a.hypervisors:,} hypervisors")


if __name__ == "__main__":
    sys.exit(main())
