"""The overlay controller's logic: placement changes and switch events in, OpenFlow messages out.

``Controller`` never sends anything. Every method that can change a switch returns
``Batches`` (messages per datapath id); the Ryu app (or a test) delivers them. The
controller remembers, per switch, which flows (by cookie) and groups it believes are
installed, so that each change sends only the difference.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from . import ofmsg
from .flows import Flow, Group, SwitchView, desired_partition, hosted_vnis
from .model import Hypervisor, Network, Port, parse_hypervisor, parse_network, parse_port
from .pipeline import cookie_vni, group_vni
from .store import Delete, Put, Store
from .topology import Topology

Batches = dict[int, list[Any]]
LOG = logging.getLogger("ryu_overlay")
SYNC_REPLIES = frozenset({"ports", "flows", "groups"})


@dataclass
class SwitchState:
    """The controller's record of one connected bridge.

    ``flows`` maps VNI (0 for flows of no network) to the cookies believed installed; the
    flow is known after the controller installed it, and None when only its cookie was read
    back from the switch.
    """

    dpid: int
    ofports: dict[str, int] = field(default_factory=dict)
    flows: dict[int, dict[int, Flow | None]] = field(default_factory=dict)
    groups: dict[int, dict[int, Group | None]] = field(default_factory=dict)
    awaiting: set[str] = field(default_factory=lambda: set(SYNC_REPLIES))

    @property
    def synced(self) -> bool:
        return not self.awaiting


class Controller:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.topo = Topology()
        self.topo.load(*store.load())
        self.switches: dict[int, SwitchState] = {}
        self.stats: Counter[str] = Counter()

    # --- placement API ----------------------------------------------------------------------

    def put_hypervisor(self, name: str, body: Any) -> tuple[bool, Hypervisor, Batches]:
        hv = parse_hypervisor(name, body)
        self.topo.check_hypervisor(hv)
        old = self.topo.hypervisors.get(name)
        self.store.apply([Put(hv)])
        self.topo.put_hypervisor(hv)
        vnis = hosted_vnis(self.topo, name)
        batches = self._refresh(self._hosts_of(vnis) - {name}, vnis)
        if old is None or old.dpid != hv.dpid:
            self._merge(batches, self._full_sync(hv))
        else:
            self._merge(batches, self._refresh({name}, vnis))
        return old is None, hv, batches

    def delete_hypervisor(self, name: str) -> Batches:
        self.topo.check_delete_hypervisor(name)
        self.store.apply([Delete(Hypervisor, name)])
        self.topo.delete_hypervisor(name)
        return {}

    def put_network(self, name: str, body: Any) -> tuple[bool, Network, Batches]:
        net = parse_network(name, body)
        self.topo.check_network(net)
        old = self.topo.networks.get(name)
        self.store.apply([Put(net)])
        self.topo.put_network(net)
        vnis = {net.vni} | ({old.vni} if old else set())
        return old is None, net, self._refresh(self.topo.hosts(name), vnis)

    def delete_network(self, name: str) -> Batches:
        self.topo.check_delete_network(name)
        self.store.apply([Delete(Network, name)])
        self.topo.delete_network(name)
        return {}

    def put_port(self, name: str, body: Any) -> tuple[bool, Port, Batches]:
        port = parse_port(name, body)
        old = self.topo.ports.get(name)
        if old is not None:
            port = self._carry_over(old, port)
        self.topo.check_port(port)
        return old is None, port, self._save_port(old, port)

    def delete_port(self, name: str) -> Batches:
        port = self.topo.get_port(name)
        vni = self.topo.networks[port.network].vni
        hosts = self.topo.hosts(port.network)
        self.store.apply([Delete(Port, name)])
        self.topo.delete_port(name)
        return self._refresh(hosts, {vni})

    def _carry_over(self, old: Port, new: Port) -> Port:
        """Keep what a re-declaration does not state: a learned location and the mobility count."""
        if new.hypervisor is None and old.location_source == "learned" and (old.network, old.mac) == (new.network, new.mac):
            new = new.with_location(old.hypervisor, old.interface, "learned")
        moved = old.located and new.located and (old.hypervisor, old.interface) != (new.hypervisor, new.interface)
        return replace(new, mobility_seq=old.mobility_seq + int(moved), frozen=old.frozen)

    def _save_port(self, old: Port | None, port: Port) -> Batches:
        affected_nets = {port.network} | ({old.network} if old else set())
        hosts = set().union(*(self.topo.hosts(n) for n in affected_nets))
        self.store.apply([Put(port)])
        self.topo.put_port(port)
        hosts |= set().union(*(self.topo.hosts(n) for n in affected_nets))
        return self._refresh(hosts, {self.topo.networks[n].vni for n in affected_nets})

    # --- switch events ----------------------------------------------------------------------

    def switch_connected(self, dpid: int) -> list[Any]:
        """A bridge (re)connected: forget what we believed and ask it what it has."""
        self.switches[dpid] = SwitchState(dpid)
        self.stats["switch_connects"] += 1
        return ofmsg.sync_requests()

    def switch_disconnected(self, dpid: int) -> None:
        self.switches.pop(dpid, None)

    def ports_reply(self, dpid: int, ports: dict[str, int], more: bool) -> Batches:
        sw = self.switches.get(dpid)
        if sw is None:
            return {}
        sw.ofports.update(ports)
        return self._reply_done(sw, "ports", more)

    def flows_reply(self, dpid: int, cookies: Iterable[int], more: bool) -> Batches:
        sw = self.switches.get(dpid)
        if sw is None:
            return {}
        for c in cookies:
            sw.flows.setdefault(cookie_vni(c), {})[c] = None
        return self._reply_done(sw, "flows", more)

    def groups_reply(self, dpid: int, groups: Iterable[tuple[int, Group | None]], more: bool) -> Batches:
        sw = self.switches.get(dpid)
        if sw is None:
            return {}
        for gid, group in groups:
            sw.groups.setdefault(group_vni(gid), {})[gid] = group
        return self._reply_done(sw, "groups", more)

    def _reply_done(self, sw: SwitchState, what: str, more: bool) -> Batches:
        """Once all of ports, flows and groups are read back, reconcile the switch."""
        if more or what not in sw.awaiting:
            return {}
        sw.awaiting.discard(what)
        hv = self.topo.hypervisor_by_dpid(sw.dpid)
        return self._full_sync(hv) if sw.synced and hv is not None else {}

    def port_status(self, dpid: int, name: str, ofport: int | None) -> Batches:
        """An interface appeared (``ofport`` set), changed number, or went away (None)."""
        sw = self.switches.get(dpid)
        if sw is None:
            return {}
        if ofport is None:
            sw.ofports.pop(name, None)
        else:
            sw.ofports[name] = ofport
        hv = self.topo.hypervisor_by_dpid(dpid)
        if hv is None or not sw.synced:
            return {}
        if name == hv.tunnel_port:
            vnis = hosted_vnis(self.topo, hv.name)
        else:
            port = self.topo.port_at(hv.name, name)
            vnis = set() if port is None else {self.topo.networks[port.network].vni}
        return self._refresh({hv.name}, vnis)

    def switch_error(self, dpid: int, description: str) -> list[Any]:
        """The switch refused something: count it and resynchronise it from scratch."""
        self.stats["switch_errors"] += 1
        LOG.error("switch %016x reported an error: %s", dpid, description)
        return self.switch_connected(dpid) if dpid in self.switches else []

    # --- computing differences --------------------------------------------------------------

    def view(self, hv: Hypervisor) -> SwitchView | None:
        sw = self.switches.get(hv.dpid)
        return None if sw is None else SwitchView(hv, sw.ofports)

    def connected(self, hv: Hypervisor) -> bool:
        sw = self.switches.get(hv.dpid)
        return sw is not None and sw.synced

    def _full_sync(self, hv: Hypervisor) -> Batches:
        sw = self.switches.get(hv.dpid)
        if sw is None or not sw.synced:
            return {}
        vnis = {0} | set(sw.flows) | set(sw.groups) | hosted_vnis(self.topo, hv.name)
        return self._refresh({hv.name}, vnis)

    def _refresh(self, hypervisors: Iterable[str], vnis: Iterable[int]) -> Batches:
        """Bring the given partitions of the given hypervisors' switches to their desired state."""
        vnis = sorted(set(vnis))
        batches: Batches = {}
        for name in sorted(set(hypervisors)):
            hv = self.topo.hypervisors.get(name)
            sw = None if hv is None else self.switches.get(hv.dpid)
            if hv is None or sw is None or not sw.synced:
                continue
            msgs = self._diff(sw, SwitchView(hv, sw.ofports), vnis)
            if msgs:
                batches[hv.dpid] = msgs
        return batches

    def _diff(self, sw: SwitchState, view: SwitchView, vnis: list[int]) -> list[Any]:
        flow_adds: list[Flow] = []
        flow_deletes: list[int] = []
        group_adds: list[Group] = []
        group_mods: list[Group] = []
        group_deletes: list[int] = []
        for vni in vnis:
            want = desired_partition(self.topo, view, vni)
            have = sw.flows.get(vni, {})
            flow_adds += [f for c, f in want.flows.items() if c not in have]
            flow_deletes += [c for c in have if c not in want.flows]
            have_groups = sw.groups.get(vni, {})
            for gid, group in want.groups.items():
                if gid not in have_groups:
                    group_adds.append(group)
                elif have_groups[gid] != group:
                    group_mods.append(group)
            group_deletes += [gid for gid in have_groups if gid not in want.groups]
            _set_or_drop(sw.flows, vni, dict(want.flows))
            _set_or_drop(sw.groups, vni, dict(want.groups))
        self.stats["flow_mods"] += len(flow_adds) + len(flow_deletes)
        self.stats["group_mods"] += len(group_adds) + len(group_mods) + len(group_deletes)
        return ofmsg.ordered_batch(group_adds, group_mods, flow_adds, flow_deletes, group_deletes)

    def _hosts_of(self, vnis: Iterable[int]) -> set[str]:
        hosts: set[str] = set()
        for vni in vnis:
            net = self.topo.network_by_vni(vni)
            if net is not None:
                hosts |= self.topo.hosts(net.name)
        return hosts

    @staticmethod
    def _merge(into: Batches, more: Batches) -> None:
        for dpid, msgs in more.items():
            into.setdefault(dpid, []).extend(msgs)

    # --- read side --------------------------------------------------------------------------

    def hypervisor_json(self, hv: Hypervisor) -> dict[str, Any]:
        return {**hv.to_json(), "connected": self.connected(hv)}

    def stats_json(self) -> dict[str, Any]:
        return {
            **{k: self.stats.get(k, 0) for k in ("flow_mods", "group_mods", "switch_connects", "switch_errors")},
            "hypervisors": len(self.topo.hypervisors),
            "hypervisors_connected": sum(self.connected(h) for h in self.topo.hypervisors.values()),
            "networks": len(self.topo.networks),
            "ports": len(self.topo.ports),
            "ports_located": sum(p.located for p in self.topo.ports.values()),
            "flows_installed": sum(len(f) for sw in self.switches.values() for f in sw.flows.values()),
        }


def _set_or_drop(table: dict[int, dict], key: int, value: dict) -> None:
    if value:
        table[key] = value
    else:
        table.pop(key, None)
