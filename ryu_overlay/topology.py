"""The in-memory mapping: hypervisors, networks and ports, related in a networkx graph.

The graph answers the overlay's two questions, "which hypervisors host network X" (the
replication set and tunnel peers) and "where is MAC M in VNI V" (the unicast tunnel
target). Checks that relate objects to each other (uniqueness, references, subnets) are
here too, so a change is validated against the whole state before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import networkx as nx

from .model import BadRequest, Conflict, Hypervisor, IPAddress, Network, NotFound, Port, Router

ROUTER_MAC_PREFIX = "0e:52:00"  # locally administered; the controller numbers routers' MACs below it


def _hv(name: str) -> str:
    return "hv:" + name


def _net(name: str) -> str:
    return "net:" + name


def _port(name: str) -> str:
    return "port:" + name


class Topology:
    def __init__(self) -> None:
        self.hypervisors: dict[str, Hypervisor] = {}
        self.networks: dict[str, Network] = {}
        self.ports: dict[str, Port] = {}
        self.routers: dict[str, Router] = {}
        self._router_of_net: dict[str, str] = {}
        self.graph = nx.Graph()
        self._net_by_vni: dict[int, str] = {}
        self._hv_by_dpid: dict[int, str] = {}
        self._hv_by_ip: dict[str, str] = {}
        self._port_by_mac: dict[tuple[str, str], str] = {}
        self._port_by_ip: dict[tuple[str, IPAddress], str] = {}
        self._port_by_interface: dict[tuple[str, str], str] = {}
        self._derived: dict[str, dict[Any, Any]] = {}

    # --- queries ------------------------------------------------------------------------------

    def network_by_vni(self, vni: int) -> Network | None:
        name = self._net_by_vni.get(vni)
        return None if name is None else self.networks[name]

    def hypervisor_by_dpid(self, dpid: int) -> Hypervisor | None:
        name = self._hv_by_dpid.get(dpid)
        return None if name is None else self.hypervisors[name]

    def ports_of(self, network: str) -> list[Port]:
        node = _net(network)
        if node not in self.graph:
            return []
        return [self.ports[n[5:]] for n in self.graph.neighbors(node)]

    def ports_on(self, hypervisor: str) -> list[Port]:
        node = _hv(hypervisor)
        if node not in self.graph:
            return []
        return [self.ports[n[5:]] for n in self.graph.neighbors(node)]

    def hosts(self, network: str) -> set[str]:
        """Hypervisors with at least one port of ``network``: its replication set."""
        return {p.hypervisor for p in self.ports_of(network) if p.hypervisor is not None}

    def networks_on(self, hypervisor: str) -> set[str]:
        return {p.network for p in self.ports_on(hypervisor)}

    def locate(self, vni: int, mac: str) -> Port | None:
        """The port that owns ``mac`` in the network with ``vni``, located or not."""
        net = self._net_by_vni.get(vni)
        name = None if net is None else self._port_by_mac.get((net, mac))
        return None if name is None else self.ports[name]

    def port_by_ip(self, network: str, ip: IPAddress) -> Port | None:
        name = self._port_by_ip.get((network, ip))
        return None if name is None else self.ports[name]

    def port_at(self, hypervisor: str, interface: str) -> Port | None:
        name = self._port_by_interface.get((hypervisor, interface))
        return None if name is None else self.ports[name]

    def router_of(self, network: str) -> Router | None:
        """The router attached to ``network``, if any (a network has at most one)."""
        name = self._router_of_net.get(network)
        return None if name is None else self.routers[name]

    def routed_networks(self, network: str) -> tuple[str, ...]:
        """Every network of ``network``'s router, itself included; just itself without a router."""
        router = self.router_of(network)
        return (network,) if router is None else router.networks

    def interested(self, network: str) -> set[str]:
        """Hypervisors that need flows of ``network``: its hosts, the hosts of every network
        routed with it (a distributed router routes into it from there), and its router's gateway
        hypervisor (which routes replies from the outside into it)."""
        hvs = set().union(*(self.hosts(n) for n in self.routed_networks(network)))
        router = self.router_of(network)
        if router is not None and router.gateway is not None:
            hvs.add(router.gateway.hypervisor)
        return hvs

    def gateways_on(self, hypervisor: str, interface: str | None = None) -> list[Router]:
        """The routers whose gateway (uplink) is on ``hypervisor`` (on its ``interface``), by name."""
        return [r for _, r in sorted(self.routers.items()) if r.gateway is not None
                and r.gateway.hypervisor == hypervisor and interface in (None, r.gateway.interface)]

    def router_address(self, network: str, ip: IPAddress) -> Router | None:
        """The router owning address ``ip`` in ``network``."""
        router = self.router_of(network)
        if router is not None and any(i.ip.ip == ip for i in router.interfaces_of(network)):
            return router
        return None

    def allocate_router_mac(self, name: str) -> str:
        """The MAC of router ``name``: the one it has, else the lowest free one under ``ROUTER_MAC_PREFIX``."""
        old = self.routers.get(name)
        if old is not None:
            return old.mac
        taken = {r.mac for r in self.routers.values()} | {mac for _, mac in self._port_by_mac}
        n = 1
        while (mac := f"{ROUTER_MAC_PREFIX}:{n >> 16 & 0xFF:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}") in taken:
            n += 1
        return mac

    def derived(self, network: str) -> dict[Any, Any]:
        """A place for values computed from ``network``'s current state, emptied by every change to it.

        A change to the network, to one of its ports, or to a hypervisor hosting one of its
        ports empties it, and so does such a change to a network routed with it: which
        hypervisors route into a network (``interested``) depends on where its router's other
        networks are. The flow builders keep there what all hosts of the network share.
        """
        return self._derived.setdefault(network, {})

    def _changed(self, *networks: str) -> None:
        for name in networks:
            for routed in self.routed_networks(name):
                self._derived.pop(routed, None)

    def node_link(self) -> dict[str, Any]:
        data: dict[str, Any] = nx.node_link_data(self.graph, edges="links")
        return data

    # --- checks: raise before anything changes --------------------------------------------------

    def check_hypervisor(self, hv: Hypervisor) -> None:
        _refuse_taken(self._hv_by_dpid.get(hv.dpid), hv.name, f"dpid {hv.dpid:016x} is already used by hypervisor")
        _refuse_taken(self._hv_by_ip.get(str(hv.tunnel_ip)), hv.name,
                      f"tunnel_ip {hv.tunnel_ip} is already used by hypervisor")

    def check_delete_hypervisor(self, name: str) -> Hypervisor:
        hv = self.get_hypervisor(name)
        _refuse_while_used(f"hypervisor {name} still hosts", self.ports_on(name))
        for router in self.gateways_on(name):
            raise Conflict(f"hypervisor {name} is the gateway of router {router.name}")
        return hv

    def check_network(self, net: Network) -> None:
        _refuse_taken(self._net_by_vni.get(net.vni), net.name, f"vni {net.vni} is already used by network")
        self._check_network_router(net)
        for port in self.ports_of(net.name):
            for ip in port.ips:
                if not _in_subnets(ip, net):
                    raise Conflict(f"port {port.name} has address {ip} outside the new subnets")

    def check_delete_network(self, name: str) -> Network:
        net = self.get_network(name)
        _refuse_while_used(f"network {name} still has", self.ports_of(name))
        router = self.router_of(name)
        if router is not None:
            raise Conflict(f"network {name} is still attached to router {router.name}")
        return net

    def _check_network_router(self, net: Network) -> None:
        router = self.router_of(net.name)
        if router is None:
            return
        if router.tenant != net.tenant:
            raise Conflict(f"network {net.name} is attached to router {router.name} of tenant {router.tenant}")
        for iface in router.interfaces_of(net.name):
            if iface.ip.network not in net.subnets:
                raise Conflict(f"router {router.name} has interface {iface.ip} outside the new subnets")

    def check_router(self, router: Router) -> None:
        """400, then 404, then 409: a body wrong in itself, then references, then conflicts."""
        for iface in router.interfaces:
            net = self.get_network(iface.network)
            if iface.ip.network not in net.subnets:
                raise BadRequest(f"interface ip {iface.ip} is not an address of a subnet of network {net.name} "
                                 f"({', '.join(map(str, net.subnets)) or 'none'})")
        gw = router.gateway
        if gw is not None:
            self.get_hypervisor(gw.hypervisor)
        for _, port_name in router.floating_ips:
            self.get_port(port_name)
        for iface in router.interfaces:
            net = self.networks[iface.network]
            if net.tenant != router.tenant:
                raise Conflict(f"network {net.name} belongs to tenant {net.tenant}, not {router.tenant}")
            other = self._router_of_net.get(net.name)
            if other not in (None, router.name):
                raise Conflict(f"network {net.name} already has router {other}")
            owner = self._port_by_ip.get((net.name, iface.ip.ip))
            if owner is not None:
                raise Conflict(f"ip {iface.ip.ip} is already used by port {owner} in network {net.name}")
            owner = self._port_by_mac.get((net.name, router.mac))
            if owner is not None:
                raise Conflict(f"mac {router.mac} is already used by port {owner} in network {net.name}")
        public: dict[IPAddress, str] = {}
        for rival in self.routers.values():
            if rival.name != router.name:
                public.update({ip: rival.name for ip, _ in rival.floating_ips})
                if rival.gateway is not None:
                    public[rival.gateway.ip.ip] = rival.name
        if gw is not None and gw.ip.ip in public:
            raise Conflict(f"gateway ip {gw.ip.ip} is already used by router {public[gw.ip.ip]}")
        targets: set[str] = set()
        for ip, port_name in router.floating_ips:
            if gw is None or ip not in gw.ip.network or ip in (gw.ip.ip, gw.next_hop):
                raise Conflict(f"floating ip {ip} is outside the gateway's subnet "
                               f"{'(no gateway)' if gw is None else gw.ip.network} or is its own address")
            if ip in public:
                raise Conflict(f"floating ip {ip} is already used by router {public[ip]}")
            port = self.get_port(port_name)
            if port.network not in router.networks:
                raise Conflict(f"port {port_name} of floating ip {ip} is not in a network of router {router.name}")
            if port_name in targets:
                raise Conflict(f"port {port_name} is given two floating ips")
            targets.add(port_name)

    def check_delete_port(self, name: str) -> Port:
        port = self.get_port(name)
        self._check_floating_target(port.name, None)
        return port

    def _check_floating_target(self, name: str, network: str | None) -> None:
        for router in self.routers.values():
            for ip, target in router.floating_ips:
                if target == name and network not in router.networks:
                    raise Conflict(f"port {name} is the target of floating ip {ip} of router {router.name}")

    def get_router(self, name: str) -> Router:
        try:
            return self.routers[name]
        except KeyError:
            raise NotFound(f"router {name} does not exist") from None

    def check_port(self, port: Port) -> None:
        net = self.networks.get(port.network)
        if net is None:
            raise NotFound(f"network {port.network} does not exist")
        if port.hypervisor is not None and port.hypervisor not in self.hypervisors:
            raise NotFound(f"hypervisor {port.hypervisor} does not exist")
        for ip in port.ips:
            if not _in_subnets(ip, net):
                raise BadRequest(f"ip {ip} is outside the subnets of network {net.name}")
        other = self._port_by_mac.get((port.network, port.mac))
        if other not in (None, port.name):
            raise Conflict(f"mac {port.mac} is already used by port {other} in network {port.network}")
        for ip in port.ips:
            other = self._port_by_ip.get((port.network, ip))
            if other not in (None, port.name):
                raise Conflict(f"ip {ip} is already used by port {other} in network {port.network}")
        if port.hypervisor is not None and port.interface is not None:
            other = self._port_by_interface.get((port.hypervisor, port.interface))
            if other not in (None, port.name):
                raise Conflict(f"interface {port.interface} on {port.hypervisor} is already bound to port {other}")
        router = self.router_of(port.network)
        if router is not None:
            if port.mac == router.mac:
                raise Conflict(f"mac {port.mac} is router {router.name}'s in network {port.network}")
            for ip in port.ips:
                if self.router_address(port.network, ip) is not None:
                    raise Conflict(f"ip {ip} is router {router.name}'s in network {port.network}")
        self._check_floating_target(port.name, port.network)

    def get_hypervisor(self, name: str) -> Hypervisor:
        try:
            return self.hypervisors[name]
        except KeyError:
            raise NotFound(f"hypervisor {name} does not exist") from None

    def get_network(self, name: str) -> Network:
        try:
            return self.networks[name]
        except KeyError:
            raise NotFound(f"network {name} does not exist") from None

    def get_port(self, name: str) -> Port:
        try:
            return self.ports[name]
        except KeyError:
            raise NotFound(f"port {name} does not exist") from None

    # --- changes: unchecked, call the checks first -------------------------------------------

    def put_hypervisor(self, hv: Hypervisor) -> Hypervisor | None:
        old = self.hypervisors.get(hv.name)
        if old is not None:
            del self._hv_by_dpid[old.dpid]
            del self._hv_by_ip[str(old.tunnel_ip)]
            self._changed(*self.networks_on(hv.name))
        self.hypervisors[hv.name] = hv
        self._hv_by_dpid[hv.dpid] = hv.name
        self._hv_by_ip[str(hv.tunnel_ip)] = hv.name
        self.graph.add_node(_hv(hv.name), kind="hypervisor", **hv.to_json())
        return old

    def delete_hypervisor(self, name: str) -> Hypervisor:
        hv = self.hypervisors.pop(name)
        del self._hv_by_dpid[hv.dpid]
        del self._hv_by_ip[str(hv.tunnel_ip)]
        self.graph.remove_node(_hv(name))
        return hv

    def put_network(self, net: Network) -> Network | None:
        old = self.networks.get(net.name)
        if old is not None:
            del self._net_by_vni[old.vni]
        self._changed(net.name)
        self.networks[net.name] = net
        self._net_by_vni[net.vni] = net.name
        self.graph.add_node(_net(net.name), kind="network", **net.to_json())
        return old

    def delete_network(self, name: str) -> Network:
        net = self.networks.pop(name)
        del self._net_by_vni[net.vni]
        self._changed(name)
        self.graph.remove_node(_net(name))
        return net

    def put_port(self, port: Port) -> Port | None:
        old = self.ports.get(port.name)
        if old is not None:
            self._unindex(old)
            self._changed(old.network)
        self._changed(port.network)
        self.ports[port.name] = port
        node = _port(port.name)
        self.graph.add_node(node, kind="port", **port.to_json())
        self.graph.add_edge(node, _net(port.network), kind="member")
        if port.hypervisor is not None:
            self.graph.add_edge(node, _hv(port.hypervisor), kind="located", interface=port.interface)
        self._port_by_mac[(port.network, port.mac)] = port.name
        for ip in port.ips:
            self._port_by_ip[(port.network, ip)] = port.name
        if port.hypervisor is not None and port.interface is not None:
            self._port_by_interface[(port.hypervisor, port.interface)] = port.name
        return old

    def delete_port(self, name: str) -> Port:
        port = self.ports.pop(name)
        self._unindex(port)
        self._changed(port.network)
        self.graph.remove_node(_port(name))
        return port

    def _unindex(self, port: Port) -> None:
        node = _port(port.name)
        self.graph.remove_edges_from(list(self.graph.edges(node)))
        del self._port_by_mac[(port.network, port.mac)]
        for ip in port.ips:
            del self._port_by_ip[(port.network, ip)]
        if port.hypervisor is not None and port.interface is not None:
            del self._port_by_interface[(port.hypervisor, port.interface)]

    def put_router(self, router: Router) -> Router | None:
        old = self.routers.get(router.name)
        if old is not None:
            self.delete_router(router.name)
        self.routers[router.name] = router
        for net in router.networks:
            self._router_of_net[net] = router.name
        self._changed(*router.networks)
        return old

    def delete_router(self, name: str) -> Router:
        router = self.routers.pop(name)
        for net in router.networks:
            del self._router_of_net[net]
        self._changed(*router.networks)
        return router

    def load(self, hypervisors: Iterable[Hypervisor], networks: Iterable[Network],
             ports: Iterable[Port], routers: Iterable[Router] = ()) -> None:
        for hv in hypervisors:
            self.put_hypervisor(hv)
        for net in networks:
            self.put_network(net)
        for port in ports:
            self.put_port(port)
        for router in routers:
            self.put_router(router)


def _in_subnets(ip: IPAddress, net: Network) -> bool:
    return not net.subnets or any(ip in subnet for subnet in net.subnets)


def _refuse_taken(owner: str | None, name: str, what: str) -> None:
    """Conflict when a unique value (``what``) already belongs to ``owner``, another object than ``name``."""
    if owner not in (None, name):
        raise Conflict(f"{what} {owner}")


def _refuse_while_used(what: str, ports: Iterable[Port]) -> None:
    """Conflict naming the first five ``ports`` (by name) that keep an object from being deleted."""
    names = sorted(p.name for p in ports)
    if names:
        raise Conflict(f"{what} port(s) {', '.join(names[:5])}")
