"""The flow builders' shared results (per network, per port) never go stale.

After any sequence of placement changes, what the live controller computes for every
hypervisor equals what a fresh topology, loaded from copies of its objects, computes; with a
router too, whose routed partitions (``flows.routed_partition``) are shared per network.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings, strategies as st

from ryu_overlay.controller import Controller
from ryu_overlay.flows import SwitchView, desired_partition
from ryu_overlay.testing.scenario import HYPERVISORS, NETWORKS, PORTS, build
from ryu_overlay.topology import Topology

INTERFACES = [f"tap{i}" for i in range(6)]
VIEW_PORTS = {**{name: no for no, name in enumerate(INTERFACES, start=1)}, "vxlan0": 100}
HV = st.sampled_from(sorted(HYPERVISORS))
GREEN = {"vni": 5003, "tenant": "acme", "subnets": ["10.2.0.0/24", "fd00:2::/64"]}
GREEN_PORTS = {"g1": ("02:bb:00:00:00:01", ["10.2.0.1", "fd00:2::1"]), "g2": ("02:bb:00:00:00:02", ["10.2.0.2"])}
ROUTER = {"tenant": "acme", "interfaces": [{"network": "blue", "ip": "10.1.0.254/24"},
                                           {"network": "blue", "ip": "fd00:1::fe/64"},
                                           {"network": "green", "ip": "10.2.0.254/24"}]}
PORT = st.sampled_from(sorted(PORTS) + sorted(GREEN_PORTS))

move = st.tuples(st.just("move"), PORT, HV, st.sampled_from(INTERFACES))
unlocate = st.tuples(st.just("unlocate"), PORT)
delete = st.tuples(st.just("delete"), PORT)
readdress = st.tuples(st.just("tunnel_ip"), HV, st.integers(10, 250))
arp_mode = st.tuples(st.just("unknown_arp"), st.sampled_from(sorted(NETWORKS)), st.sampled_from(["drop", "replicate"]))


def apply(c, op) -> None:
    kind, name, *rest = op
    if kind == "tunnel_ip":
        dpid = HYPERVISORS[name][0]
        ip = f"198.18.1.{rest[0]}"
        if ip not in {str(h.tunnel_ip) for h in c.topo.hypervisors.values()}:
            c.put_hypervisor(name, {"dpid": dpid, "tunnel_ip": ip})
        return
    if kind == "unknown_arp":
        vni, tenant = NETWORKS[name]
        c.put_network(name, {"vni": vni, "tenant": tenant, "subnets": ["10.1.0.0/24", "fd00:1::/64"],
                             "unknown_arp": rest[0]})
        return
    if name in GREEN_PORTS and "green" not in c.topo.networks:
        return
    net, mac, ips = ("green", *GREEN_PORTS[name]) if name in GREEN_PORTS else PORTS[name][:3]
    body = {"network": net, "mac": mac, "ips": ips}
    if kind == "delete":
        if name in c.topo.ports:
            c.delete_port(name)
        return
    if kind == "move":
        hv, iface = rest
        other = c.topo.port_at(hv, iface)
        if other is not None and other.name != name:
            return
        body |= {"hypervisor": hv, "interface": iface}
    c.put_port(name, body)


def partitions(topo: Topology) -> dict:
    out = {}
    for hv in topo.hypervisors.values():
        view = SwitchView(hv, VIEW_PORTS)
        for net in topo.networks.values():
                out[(hv.name, net.vni)] = desired_partition(topo, view, net.vni)
    return out


def routed() -> Controller:
    c = build()
    c.put_network("green", GREEN)
    mac, ips = GREEN_PORTS["g1"]
    c.put_port("g1", {"network": "green", "mac": mac, "ips": ips, "hypervisor": "hv4", "interface": "tap5"})
    c.put_router("r1", ROUTER)
    return c


@settings(max_examples=60, deadline=None)
@given(st.booleans(), st.lists(st.one_of(move, unlocate, delete, readdress, arp_mode), min_size=1, max_size=12))
def test_memoised_partitions_equal_a_fresh_computation(router, ops):
    c = routed() if router else build()
    partitions(c.topo)  # fill the memos before the changes
    for op in ops:
        apply(c, op)
        live = partitions(c.topo)
        fresh = Topology()
        fresh.load([replace(h) for h in c.topo.hypervisors.values()],  # copies: no memo of the live objects either
                   [replace(n) for n in c.topo.networks.values()], [replace(p) for p in c.topo.ports.values()],
                   [replace(r) for r in c.topo.routers.values()])
        assert live == partitions(fresh), op
