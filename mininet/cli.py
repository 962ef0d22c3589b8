"""Start the default overlay topology (ryu_overlay/testing/mininet_topo.py) with the real controller, then
Mininet's CLI.

    python mininet/cli.py [--pods 2 --hv-per-pod 2 --tenants 2 --vms 2 --spines 2 --seed 1 --no-l3]
                          [--workdir results/cli]

In the CLI, nodes are the hypervisors (p<pod>h<i>), the VMs (t<tenant>v<i>; the routed tenant's
rblue1, rgreen1, rgreen2), the outside host (outside), the routers (leaf<pod>, spine<s>): e.g.
``t1v1 ping -c1 10.0.0.2``, ``t1v1 ping -c1 fd00::2``, ``rblue1 ping -c1 10.2.0.1``,
``p1h1 ovs-ofctl -O OpenFlow13 dump-flows unix:<workdir>/<run>/p1h1/br-int.mgmt`` (printed at start).
Everything is removed when the CLI exits (``exit`` or Ctrl-D), also after an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ryu_overlay.testing.mininet_topo import (
    OUTSIDE_IP,
    ROUTED_NETS,
    ROUTER,
    UPLINK,
    OverlayNet,
    Spec,
    sigterm_as_interrupt,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    Spec.add_arguments(ap)
    ap.add_argument("--workdir", type=Path, default=Path("results/cli"))
    ap.add_argument("--no-cli", action="store_true", help="build, print the summary, tear down (a smoke test)")
    args = ap.parse_args(argv)
    from mininet.log import setLogLevel

    from mininet.cli import CLI

    setLogLevel("info")
    sigterm_as_interrupt()
    spec = Spec.from_arguments(args)
    with OverlayNet(spec, args.workdir) as on:
        print(f"\ncontroller REST: {on.ctl.url}/v1/ (log {on.ctl.log})")
        for name, h in on.hvinfo.items():
            print(f"{name}: pod {h.pod}, tunnel {h.tunnel_ip}, mgmt {h.mgmt_ip}, netns {on.hv(name).nsname}, "
                  f"br-int unix:{on.hv(name).ovs.base}/br-int.mgmt")
        for name, v in on.all_vms().items():
            print(f"{name}: {v.network} (VNI {v.vni}) {v.mac} {' '.join(v.ips)} on {v.hv}/{v.tap}")
        if on.routedinfo:
            print(f"router {ROUTER} joins {', '.join(n.name for n in ROUTED_NETS)}; outside {OUTSIDE_IP} "
                  f"behind {on.gateway_hv}/{UPLINK}")
        if not args.no_cli:
            CLI(on.net)
    return 0


if __name__ == "__main__":
    sys.exit(main())
