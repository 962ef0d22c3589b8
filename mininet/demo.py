"""The main demo: an overlay on real Open vSwitch, end to end, in a couple of minutes.

Three hypervisors, each with its own Open vSwitch (userspace datapath) in a network
namespace, joined by an IP underlay; the real ``ryu-overlay`` controller in the root
namespace; two tenants whose VMs reuse the same MAC and IP addresses. It declares everything
through the REST API, pings across hypervisors, shows that the tenants cannot see each
other, traces a packet through the pipeline, live-migrates a VM (the controller learns its
new place from one gratuitous ARP) and prints the controller's counters. Everything it
starts is stopped at the end, also on failure or Ctrl-C.

    make demo            (or: .venv/bin/python mininet/demo.py)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ryu_overlay.testing.controller_proc import LAUNCHER, ControllerProcess
from ryu_overlay.testing.netns_testbed import Testbed
from ryu_overlay.testing.overlay import PORTS, deploy

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


def main() -> int:
    good = True
    with tempfile.TemporaryDirectory(prefix="ryu-overlay-demo-") as tmp_name:
        tmp = Path(tmp_name)
        ctl = ControllerProcess(tmp / "overlay.db", tmp / "controller.log")
        bed = Testbed(tmp, None)
        try:
            say("starting the controller (ryu-overlay) and three hypervisors with their own Open vSwitch")
            ctl.start()
            bed.controller_port = ctl.ofp_port
            bed.build(3)
            for hv in bed.hvs.values():
                print(f"  {hv.name}: namespace {hv.netns}, VTEP {hv.tunnel_ip}, dpid {hv.dpid:016x}")

            say("declaring hypervisors, networks blue (VNI 5001, acme) and red (VNI 5002, globex), and VMs")
            overlay = deploy(ctl, bed)
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
            db = ctl.db
            trace = subprocess.run([str(LAUNCHER), "trace", "--db", str(db), "hv1",
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
        finally:
            bed.close()
            ctl.stop()
    say("done: everything stopped and removed" + ("" if good else "; SOME CHECKS FAILED"))
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
