"""Flows per port with distributed routers, computed from the flow builders (no switches).

    .venv/bin/python bench/router_flows.py --hypervisors 100

The cold-start placement (10 ports per hypervisor, networks of 10 ports), each network given its
own subnets, the networks paired by tenant, and one router per pair. Prints the mean, over the
hypervisors, of a hypervisor's flows divided by the ports of the networks it hosts (the cold
start's figure), without and with the routers, and divided by the ports of the networks it
hosts or routes to (the neighbour entries it carries). IPv4 only, then IPv4 and IPv6.
"""

from __future__ import annotations

import argparse
import statistics

from ryu_overlay.controller import Controller
from ryu_overlay.flows import SwitchView, desired_partition, hosted_vnis
from ryu_overlay.store import SqliteStore
from ryu_overlay.testing.loadgen import make_placement


def per_port(hypervisors: int, routers: bool, v6: bool) -> tuple[float, float]:
    p = make_placement(hypervisors, ports_per_hv=10, ports_per_network=10, seed=1)
    c = Controller(SqliteStore(":memory:"))
    for hv in p.hypervisors:
        c.put_hypervisor(hv.name, {"dpid": hv.dpid, "tunnel_ip": str(hv.tunnel_ip)})
    index = {net.name: k for k, net in enumerate(p.networks)}

    def addresses(k: int, host: int) -> list[str]:
        return [f"10.{k // 250}.{k % 250}.{host}"] + ([f"fd00:{k:x}::{host:x}"] if v6 else [])

    for net, k in index.items():
        prefixes = [f"10.{k // 250}.{k % 250}.0/24"] + ([f"fd00:{k:x}::/64"] if v6 else [])
        c.put_network(net, {"vni": p.networks[k].vni, "tenant": f"t{k // 2}", "subnets": prefixes})
    members: dict[str, int] = {}
    for port in p.ports:
        members[port.network] = members.get(port.network, 0) + 1
        c.put_port(port.name, {"network": port.network, "mac": port.mac,
                               "ips": addresses(index[port.network], members[port.network]),
                               "hypervisor": port.hypervisor, "interface": port.interface})
    for k in range(0, len(p.networks) - 1, 2) if routers else ():
        interfaces = [{"network": p.networks[j].name, "ip": f"{ip}/{24 if '.' in ip else 64}"}
                      for j in (k, k + 1) for ip in addresses(j, 254)]
        c.put_router(f"r{k}", {"tenant": f"t{k // 2}", "interfaces": interfaces})
    hosted: list[float] = []
    reached: list[float] = []
    for hv in p.hypervisors:
        view = SwitchView(hv, p.ofports[hv.name])
        flows = sum(len(desired_partition(c.topo, view, vni).flows) for vni in {0} | hosted_vnis(c.topo, hv.name))
        mine = c.topo.networks_on(hv.name)
        hosted.append(flows / sum(len(c.topo.ports_of(n)) for n in mine))
        routed = {r for n in mine for r in c.topo.routed_networks(n)}
        reached.append(flows / sum(len(c.topo.ports_of(n)) for n in routed))
    return statistics.fmean(hosted), statistics.fmean(reached)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hypervisors", type=int, default=100)
    args = ap.parse_args()
    print("| addresses | without routers | with routers | with routers, per port hosted or routed to |")
    print("|---|---|---|---|")
    for v6 in (False, True):
        plain, _ = per_port(args.hypervisors, False, v6)
        hosted, reached = per_port(args.hypervisors, True, v6)
        print(f"| {'IPv4 and IPv6' if v6 else 'IPv4'} | {plain:.2f} | {hosted:.2f} | {reached:.2f} |")


if __name__ == "__main__":
    main()
