"""Placement latency on real Open vSwitch: from a REST port create until its flows are confirmed on
every hypervisor of its network.

Three hypervisors (userspace datapath, one OVS each in its own namespace) with VMs already in
one network, the real controller. Each measurement PUTs a port (declared on a hypervisor,
its interface already on the bridge) and polls ``GET /v1/hypervisors`` over a keep-alive
connection until every hypervisor is ``in_sync`` again, which the controller reports once
the barrier after the port's flow-mods has been answered by each switch. A batch variant
PUTs 50 ports back to back and waits once. The transaction variant binds 50 ports with one
``POST /v1/transactions`` and ``"wait": "hv"``, whose answer comes once every switch has
confirmed them; it is repeated ``--rounds`` times (each round's ports are deleted in another
transaction, not timed, before the next).

    .venv/bin/python bench/placement.py --ports 30 --doc
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

from common import publish

from ryu_overlay.testing.controller_proc import wait_in_sync as wait_until_in_sync
from ryu_overlay.testing.overlay import PORTS, running
from ryu_overlay.testing.report import percentile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=30, help="single-port measurements")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=10, help="50-port transactions with wait=hv")
    ap.add_argument("--doc", action="store_true", help="write the result into docs/performance.md")
    args = ap.parse_args()
    with running(3, {k: v for k, v in PORTS.items() if k in ("a1", "a2", "a3")}) as overlay:
        bed = overlay.bed
        tx_first = args.ports + args.batch
        for i in range(tx_first + args.batch):  # the interfaces exist before the ports are declared
            bed.hvs[f"hv{i % 3 + 1}"].ovs.vsctl("add-port", "br-int", f"p{i}", "--", "set", "interface",
                                                 f"p{i}", "type=internal")
        rest = overlay.ctl.rest()
        # polled back to back: the figure is the latency until the controller reports the barrier replies
        wait_in_sync = partial(wait_until_in_sync, rest, timeout=10.0, poll=0.0)
        wait_in_sync()

        def body(i: int) -> dict:
            return {"network": "blue", "mac": f"02:bb:00:00:{i // 256:02x}:{i % 256:02x}",
                    "ips": [f"10.1.0.{100 + i}"], "hypervisor": f"hv{i % 3 + 1}", "interface": f"p{i}"}

        singles = []
        for i in range(args.ports):
            t0 = time.perf_counter()
            rest.ok("PUT", f"/v1/ports/p{i}", body(i))
            wait_in_sync()
            singles.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        for i in range(args.ports, args.ports + args.batch):
            rest.ok("PUT", f"/v1/ports/p{i}", body(i))
        wait_in_sync()
        batch = time.perf_counter() - t0
        tx_ports = range(tx_first, tx_first + args.batch)
        bind = [{"op": "put", "kind": "ports", "name": f"p{i}", "body": body(i)} for i in tx_ports]
        unbind = [{"op": "delete", "kind": "ports", "name": f"p{i}"} for i in tx_ports]
        transactions = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            answer = rest.ok("POST", "/v1/transactions", {"operations": bind, "wait": "hv", "timeout": 10})
            transactions.append(time.perf_counter() - t0)
            assert answer["unconfirmed"] == [], answer["unconfirmed"]
            rest.ok("POST", "/v1/transactions", {"operations": unbind, "wait": "hv", "timeout": 10})
    rows = [("single port: p50", f"{percentile(singles, 50):.1f} ms", "< 10 ms (OVN here: 31-36 ms)"),
            ("single port: p90", f"{percentile(singles, 90):.1f} ms", ""),
            ("single port: max", f"{max(singles):.1f} ms", ""),
            (f"{args.batch} ports back to back", f"{batch:.3f} s", "< 0.15 s (OVN here: 0.15 s)"),
            (f"{args.batch} ports in one transaction, wait=hv: p50", f"{percentile(transactions, 50):.3f} s",
             "< 0.08 s (OVN here: 0.164 s median)"),
            (f"{args.batch} ports in one transaction, wait=hv: max", f"{max(transactions):.3f} s", "")]
    publish("REST port create -> flows confirmed on every hypervisor of the network (3 hypervisors)",
            ["", "measured", "target"], rows, args.doc, "real_ovs", "placement", "### Placement latency",
            "Three hypervisors with their own OVS (userspace datapath) in namespaces; a REST PUT of a "
            "port whose interface is already on its bridge, until `GET /v1/hypervisors` shows every "
            "hypervisor `in_sync` (the barrier after the port's flow-mods answered by each switch); "
            f"{args.ports} single ports, then {args.batch} back to back; then {args.rounds} times {args.batch} "
            "ports bound by one `POST /v1/transactions` with `\"wait\": \"hv\"`, until its answer (which "
            "comes once every switch has answered the barrier after the transaction's flow-mods), each "
            "round's ports unbound again by another transaction.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
