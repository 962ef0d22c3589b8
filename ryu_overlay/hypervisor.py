"""Open vSwitch on a hypervisor: prepare its bridges (``ryu-overlay setup-hypervisor``). The private
``ovsdb-server``/``ovs-vswitchd`` pairs of the tests run from ``ryu_overlay.testing.netns_testbed``.

Where Open vSwitch has no kernel datapath (as on this project's test machines), bridges use the
userspace datapath (``datapath_type=netdev``). Userspace tunnelling then needs the hypervisor's
tunnel address on a ``br-phy`` bridge that holds the underlay interface: OVS routes and
resolves the outer packets itself, from the routes of its own namespace. That is also why each
hypervisor needs its own daemons in its own namespace.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from collections.abc import Sequence

from .model import TUNNEL_TYPES


def prepare_hypervisor_commands(bridge: str, tunnel_port: str, tunnel_ip: str, controllers: Sequence[str],
                                datapath_type: str | None = None, dpid: int | None = None,
                                tunnel_ofport: int | None = None, tunnel_type: str = "vxlan") -> list[list[str]]:
    """The ``ovs-vsctl`` invocations that prepare ``bridge``; running them again changes nothing.

    ``fail_mode=secure`` is set in the transaction that creates the bridge: set later, it wipes
    the flows, and a bridge in standalone mode turns into a learning switch when the controller is
    away, which would mix tenants.
    """
    create = ["--may-exist", "add-br", bridge, "--", "set", "bridge", bridge, "fail_mode=secure",
              "protocols=OpenFlow13"]
    if datapath_type:
        create.append(f"datapath_type={datapath_type}")
    if dpid is not None:
        create.append(f"other-config:datapath-id={dpid:016x}")
    port = ["--may-exist", "add-port", bridge, tunnel_port, "--", "set", "interface", tunnel_port,
            f"type={tunnel_type}", "options:remote_ip=flow", "options:key=flow", f"options:local_ip={tunnel_ip}"]
    if tunnel_ofport is not None:
        port.append(f"ofport_request={tunnel_ofport}")
    cmds = [create, port]
    if controllers:
        cmds.append(controller_command(bridge, controllers))
    return cmds


def controller_command(bridge: str, controllers: Sequence[str], max_backoff_ms: int = 1000) -> list[str]:
    """Point ``bridge`` at every controller instance in one transaction (the switch then connects to
    all of them and each instance takes its OpenFlow role), each reconnecting within ``max_backoff_ms``."""
    ids = [f"@c{i}" for i in range(len(controllers))]
    cmd = ["set", "bridge", bridge, "controller=[" + ",".join(ids) + "]"]
    for ref, target in zip(ids, controllers, strict=True):
        cmd += ["--", f"--id={ref}", "create", "controller", f"target=\"{target}\"", f"max_backoff={max_backoff_ms}"]
    return cmd


def ssl_commands(key: str, cert: str, ca_cert: str) -> list[str]:
    """The ``ovs-vsctl`` arguments that give Open vSwitch its TLS key, certificate and CA (for ``ssl:`` controllers)."""
    return ["set-ssl", key, cert, ca_cert]


def prepare_underlay_commands(br_phy: str, interface: str) -> list[list[str]]:
    """A ``br-phy`` netdev bridge holding the underlay interface (it keeps its NORMAL flow)."""
    return [["--may-exist", "add-br", br_phy, "--", "set", "bridge", br_phy, "datapath_type=netdev"],
            ["--may-exist", "add-port", br_phy, interface]]


def _run(cmd: Sequence[str]) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="ryu-overlay setup-hypervisor",
        description="Prepare a hypervisor's Open vSwitch integration bridge for ryu_overlay (idempotent).")
    ap.add_argument("--bridge", default="br-int")
    ap.add_argument("--tunnel-type", default="vxlan", choices=TUNNEL_TYPES,
                    help="as the hypervisor's tunnel_type (default vxlan; gre carries the VNI in the key)")
    ap.add_argument("--tunnel-port", help="name of the flow-based tunnel port (default: the type and 0, e.g. vxlan0)")
    ap.add_argument("--tunnel-ip", required=True, help="this hypervisor's VTEP address")
    ap.add_argument("--controller", action="append", default=[],
                    help="e.g. tcp:198.19.0.1:6653 or ssl:198.19.0.1:6653; repeat it for each controller instance "
                         "(all set in one transaction; docs/scale-out.md)")
    ap.add_argument("--ssl-key", help="this switch's private key (PEM), for ssl: controllers")
    ap.add_argument("--ssl-cert", help="this switch's certificate (PEM), naming its hypervisor")
    ap.add_argument("--ssl-ca", help="the CA certificate that signed the controller's (PEM)")
    ap.add_argument("--datapath-type", help="netdev for the userspace datapath")
    ap.add_argument("--dpid", help="datapath id, 16 hex digits")
    ap.add_argument("--tunnel-ofport", type=int, help="ask OVS for this OpenFlow port number for the tunnel")
    ap.add_argument("--underlay-interface", help="also create --br-phy holding this interface and put the "
                                                 "tunnel address on it (userspace tunnelling)")
    ap.add_argument("--br-phy", default="br-phy")
    ap.add_argument("--tunnel-prefix", type=int, default=24, help="prefix length of the tunnel address")
    ap.add_argument("--db", help="ovsdb socket, e.g. unix:/run/openvswitch/db.sock")
    ap.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    args = ap.parse_args(argv)
    tls = (args.ssl_key, args.ssl_cert, args.ssl_ca)
    if any(c.startswith("ssl:") for c in args.controller) and not all(tls):
        ap.error("an ssl: controller needs --ssl-key, --ssl-cert and --ssl-ca")
    if any(tls) and not all(tls):
        ap.error("--ssl-key, --ssl-cert and --ssl-ca go together")
    dpid = None if args.dpid is None else int(args.dpid, 16)
    vsctl = ["ovs-vsctl"] + ([f"--db={args.db}"] if args.db else [])
    cmds: list[list[str]] = [vsctl + ssl_commands(*tls)] if all(tls) else []
    if args.underlay_interface:
        cmds += [vsctl + c for c in prepare_underlay_commands(args.br_phy, args.underlay_interface)]
        cmds += [["ip", "addr", "replace", f"{args.tunnel_ip}/{args.tunnel_prefix}", "dev", args.br_phy],
                 ["ip", "link", "set", args.br_phy, "up"]]
    cmds += [vsctl + c for c in prepare_hypervisor_commands(args.bridge, args.tunnel_port or f"{args.tunnel_type}0",
                                                             args.tunnel_ip, args.controller, args.datapath_type,
                                                             dpid, args.tunnel_ofport, args.tunnel_type)]
    for cmd in cmds:
        if args.dry_run:
            print(shlex.join(cmd))
        else:
            _run(cmd)
    return 0
