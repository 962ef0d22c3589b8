"""The main demo: an overlay on real Open vSwitch, end to end, in a couple of minutes.

Three hypervisors, each with its own Open vSwitch (userspace datapath) in a network
namespace, joined by an IP underlay; the real ``ryu-overlay`` controller in the root
namespace; two tenants whose VMs reuse the same MAC and IP addresses. It declares everything
through the REST API, pings across hypervisors, shows that the tenants cannot see each
other, traces a packet through the pipeline, live-migrates a VM (the controller learns its
new place from one gratuitous ARP) and prints the controller's counters. Everything it
starts is stopped at the end, also on failure or Ctrl-C.

With ``--controllers N`` (N >= 2) it runs N controller instances on a 3-member etcd cluster it
starts itself (``--db etcd``, the default then; ``--db etcd://HOST:PORT,...`` uses a running
cluster), shows which instance masters which hypervisor, and ends by killing (-9) the instance
that masters the most hypervisors while a VM pings across them: the survivors take over.

    make demo            (or: .venv/bin/python mininet/demo.py [--controllers 2 --db etcd])
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from ryu_overlay.testing.controller_proc import LAUNCHER, ControllerProcess
from ryu_overlay.testing.etcd import EtcdCluster
from ryu_overlay.testing.netns_testbed import Testbed
from ryu_overlay.testing.overlay import PORTS, Overlay, deploy

GARP = ("Ether(src='02:aa:00:00:00:02', dst='ff:ff:ff:ff:ff:ff')/"
        "ARP(op=1, hwsrc='02:aa:00:00:00:02', psrc='10.1.0.2', hwdst='00:00:00:00:00:00', pdst='10.1.0.2')")


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def check(bed: Testbed, vm: str, dst: str, expect: bool) -> bool:
    ok = bed.ping(vm, dst, count=1, wait=1)
    net = PORTS[vm][0]
    print(f"  {vm} ({net}) -> {dst:10} {'reachable' if ok else 'unreachable'}"
          f"{'' if ok == expect else '   <-- UNEXPECTED'}")
    return ok == expect


def failover(ctls: list[ControllerProcess], bed: Testbed, overlay: Overlay) -> bool:
    """kill -9 the instance mastering the most hypervisors while a1 pings a2 every 10 ms."""
    hvs = ctls[0].api("GET", "/v1/hypervisors")[1]["hypervisors"]
    masters = {h["name"]: h["master"] for h in hvs}
    victim_id = max(sorted(set(masters.values())), key=lambda m: list(masters.values()).count(m))
    victim = ctls[int(victim_id[1:])]
    survivors = [c for c in ctls if c is not victim]
    pinger = subprocess.Popen(["ip", "netns", "exec", bed.vms["a1"].netns, "ping", "-n", "-i", "0.01", "-W", "1",
                               "10.1.0.2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    t0 = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait(10)  # type: ignore[union-attr]
    victim.proc = None
    print(f"  killed {victim_id} (master of {', '.join(h for h, m in masters.items() if m == victim_id)}) "
          f"while a1 pings a2 every 10 ms")
    overlay.ctl, overlay.peers = survivors[0], tuple(survivors[1:])
    while True:
        now = {h["name"]: h["master"] for h in survivors[0].api("GET", "/v1/hypervisors")[1]["hypervisors"]}
        if all(m not in (None, victim_id) for m in now.values()):
            break
        time.sleep(0.05)
    print(f"  after {time.monotonic() - t0:.1f} s every hypervisor has a live master: {now}")
    overlay.wait_in_sync()
    time.sleep(1.0)
    pinger.send_signal(signal.SIGINT)
    text = pinger.communicate(timeout=10)[0]
    stats = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    sent, got = (int(stats[1]), int(stats[2])) if stats else (0, 0)
    print(f"  pings a1 -> a2 during the failover: {sent} sent, {sent - got} lost")
    return bool(stats) and sent == got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--controllers", type=int, default=1, help="controller instances (2 or more: on etcd)")
    ap.add_argument("--db", default=None, help="'etcd' (start a 3-member cluster for the demo) or etcd://HOST:PORT,..."
                                               " (a running one); default: a SQLite file, or etcd with 2+ instances")
    args = ap.parse_args(argv)
    if args.controllers < 1:
        ap.error("--controllers must be at least 1")
    clustered = args.controllers > 1 or (args.db or "").startswith("etcd")
    good = True
    with tempfile.TemporaryDirectory(prefix="ryu-overlay-demo-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        db: str | Path = tmp / "overlay.db" if args.db in (None, "etcd") else args.db
        if clustered and not str(db).startswith("etcd://"):
            say("starting a 3-member etcd cluster (Debian's etcd-server) on loopback")
            etcd = EtcdCluster(tmp / "etcd")
            stack.callback(etcd.stop)
            etcd.start()
            db = etcd.url()
            print(f"  --db {db}")
        extra = (lambda i: ["--instance-id", f"c{i}", "--lease-ttl", "3"]) if clustered else (lambda i: [])
        ctls = [ControllerProcess(db, tmp / f"controller{i}.log", extra_args=extra(i)) for i in range(args.controllers)]
        ctl = ctls[0]
        bed = Testbed(tmp, None)
        try:
            say(f"starting {len(ctls)} controller instance(s) (ryu-overlay) and three hypervisors with their own "
                "Open vSwitch")
            for c in ctls:
                c.start()
            bed.controller_port = ctl.ofp_port
            bed.more_controller_ports = tuple(c.ofp_port for c in ctls[1:])
            bed.build(3)
            for hv in bed.hvs.values():
                print(f"  {hv.name}: namespace {hv.netns}, VTEP {hv.tunnel_ip}, dpid {hv.dpid:016x}")

            say("declaring hypervisors, networks blue (VNI 5001, acme) and red (VNI 5002, globex), and VMs")
            overlay = deploy(ctl, bed, peers=tuple(ctls[1:]))
            if clustered:
                for h in ctl.api("GET", "/v1/hypervisors")[1]["hypervisors"]:
                    print(f"  {h['name']} is mastered by instance {h['master']}")
            for port in ctl.api("GET", "/v1/ports")[1]["ports"]:
                print(f"  {port['name']}: {port['network']:4} {port['mac']} {', '.join(port['ips']):22} "
                      f"on {port['hypervisor']}/{port['interface']}")
            print("  (blue and red reuse the same MAC and IP addresses)")

            say("pings inside each tenant, across hypervisors, IPv4 and IPv6")
            for vm, dst in (("a1", "10.1.0.2"), ("a1", "fd00:1::3"), ("r1", "10.1.0.2"), ("r2", "fd00:1::1")):
                good &= check(bed, vm, dst, True)

            say("isolation: 10.1.0.3 exists only in blue, so red cannot reach it")
            good &= check(bed, "r1", "10.1.0.3", False)

            say("ryu-overlay trace: a1 -> a2, table by table, through the tunnel")
            trace = subprocess.run([str(LAUNCHER), "trace", "--url", ctl.url, "hv1",
                                    "in_port=tapA1,eth_src=02:aa:00:00:00:01,eth_dst=02:aa:00:00:00:02,"
                                    "ip,ipv4_src=10.1.0.1,ipv4_dst=10.1.0.2"],
                                   capture_output=True, text=True, check=False)
            print("  " + trace.stdout.rstrip().replace("\n", "\n  "))

            say("live migration: a2 moves from hv2 to hv3 and sends one gratuitous ARP")
            a2 = ctl.api("GET", "/v1/ports/a2")[1]  # declared where it is: it follows its frames only if it may
            ctl.api("PUT", "/v1/ports/a2", {**{k: a2[k] for k in ("network", "mac", "ips", "hypervisor", "interface")},
                                            "mobility": "learn"})
            bed.move_vm("a2", "hv3")
            overlay.send_frame("a2", GARP)
            overlay.wait_in_sync()
            port = ctl.api("GET", "/v1/ports/a2")[1]
            print(f"  a2 is now on {port['hypervisor']} ({port['location_source']}, "
                  f"mobility_seq {port['mobility_seq']}); bench/migration.py times this")
            good &= check(bed, "a1", "10.1.0.2", True)

            say("controller counters (GET /v1/stats)")
            print("  " + json.dumps(ctl.api("GET", "/v1/stats")[1], sort_keys=True))

            if len(ctls) > 1:
                say("failover: kill -9 the instance that masters the most hypervisors")
                good &= failover(ctls, bed, overlay)
        finally:
            bed.close()
            for c in ctls:
                c.stop()
    say("done: everything stopped and removed" + ("" if good else "; SOME CHECKS FAILED"))
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
