"""The overlay controller's logic: placement changes and switch events in, OpenFlow messages out.

``Controller`` never sends anything. Every method that can change a switch returns
``Batches`` (messages per datapath id); the Ryu app (or a test) delivers them. The
controller remembers, per switch, which flows (by cookie) and groups it believes are
installed, so that each change sends only the difference.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from . import ofmsg, tls
from .events import Confirmations, EventLog
from .flows import (
    Flow,
    Group,
    Meter,
    Output,
    SwitchView,
    bfd_port,
    desired_partition,
    hosted_vnis,
    mtu_frame_len,
)
from .hostconfig import ANSWER_BURST, ANSWER_RATE, dhcp_answer, router_advert_for
from .model import (
    Conflict,
    Duplicate,
    Hypervisor,
    LocationSource,
    Move,
    Network,
    Port,
    Router,
    link_local,
    mobility_of,
    parse_hypervisor,
    parse_network,
    parse_port,
    parse_router,
)
from .ovsdb import OvsdbView
from .packets import (
    ALL_NODES,
    ALL_NODES_MAC,
    ARP_REQUEST,
    IPV4_DF,
    ND_NS,
    Frame,
    MalformedFrame,
    arp_reply,
    arp_request,
    fragment_ipv4,
    icmp4_error,
    icmp6_error,
    neighbor_advert,
    parse_dhcp,
    parse_frame,
)
from .pipeline import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    ETH_TYPE_RARP,
    ND_RS,
    OFPP_CONTROLLER,
    OFPP_TABLE,
    cookie_vni,
    group_vni,
)
from .ratelimit import TokenBucket
from .store import KINDS, Change, Delete, Put, Store
from .topology import Topology

Batches = dict[int, list[Any]]
LOG = logging.getLogger("ryu_overlay")
SYNC_REPLIES = frozenset({"ports", "flows", "groups", "meters"})
MOVE_WINDOW = 180.0  # seconds; EVPN's default MAC mobility window (RFC 7432 section 15.1)
MOVE_LIMIT = 5  # moves allowed within the window before the port is frozen
RESYNC_HOLDDOWN = 10.0  # seconds between resynchronisations forced by switch errors
MAX_UNKNOWN_SWITCHES = 64  # connected switches whose datapath id no hypervisor owns (yet)
EARLY_FRAMES = 64  # per switch: frames kept from ports the controller has not heard of yet
ICMP_ERROR_RATE, ICMP_ERROR_BURST = 10.0, 10  # ICMP errors per second each router, and each port's PMTU, may cause
ICMP4_TIME_EXCEEDED, ICMP4_UNREACHABLE, ICMP4_HOST_UNREACHABLE = 11, 3, 1
ICMP6_UNREACHABLE, ICMP6_ADDRESS_UNREACHABLE, ICMP6_TIME_EXCEEDED = 1, 3, 3
# Where ICMP errors come from when the network has no router: a locally administered MAC and an
# IPv4 link-local address (RFC 3927); over IPv6, that MAC's link-local address. A VM accepts an
# error from any source: what it checks is the packet the error quotes.
ICMP_SOURCE_MAC = "02:00:00:00:ff:fe"
ICMP_SOURCE_IPV4 = "169.254.0.254"
ICMP4_ERRORS = frozenset({3, 4, 5, 11, 12})  # never answered with another error (RFC 1122 3.2.2)
E = TypeVar("E")
# What the controller did with a frame sent up to it (Controller.packet_ins; docs/operations.md).
PACKET_IN_REASONS = ("arp", "nd", "dhcp", "learn", "oversize", "router", "uplink", "spoofed", "early", "ignored",
                     "malformed", "other")
STAT_COUNTERS = (
    "flow_mods", "group_mods", "switch_connects", "switch_errors", "packet_in", "packet_in_ignored",
    "packet_in_malformed", "arp_answered_controller", "nd_answered", "nd_dad_defended", "learned", "moves",
    "ports_frozen", "moves_refused_frozen", "moves_refused_stale", "duplicates_detected", "moves_refused_duplicate",
    "dropped_unknown_source", "dropped_spoofed_source", "dhcp_answered", "ra_sent", "host_config_rate_limited",
    "router_nd_answered", "icmp_time_exceeded", "icmp_unreachable", "icmp_rate_limited",
    "pmtu_frag_needed", "pmtu_packet_too_big", "pmtu_fragmented", "pmtu_rate_limited", "pmtu_dropped",
    "ovsdb_bound", "ovsdb_unbound", "moves_refused_tunnel_type",
    "next_hop_requests", "next_hop_learned",
    "moves_refused_declared", "switches_refused_certificate", "switches_refused_unknown",
)


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
    meters: dict[int, Meter | None] = field(default_factory=dict)
    awaiting: set[str] = field(default_factory=lambda: set(SYNC_REPLIES))
    barriers: set[int] = field(default_factory=set)
    early_frames: dict[int, tuple[bytes, dict[str, int]]] = field(default_factory=dict)
    next_hops: dict[tuple[str, str], str] = field(default_factory=dict)  # (uplink, next hop IP) -> its MAC

    def interface(self, ofport: int) -> str | None:
        for name, number in self.ofports.items():
            if number == ofport:
                return name
        return None

    @property
    def synced(self) -> bool:
        return not self.awaiting


@dataclass
class Deferred:
    """What a transaction's operations asked of the store and the switches, done once all of them
    are accepted: it stands in for the store meanwhile, collecting the changes into one write."""

    store: Store
    changes: list[Change] = field(default_factory=list)
    refresh: dict[str, set[int]] = field(default_factory=dict)  # hypervisor -> partitions
    full_sync: set[str] = field(default_factory=set)
    port_up: set[str] = field(default_factory=set)
    resolve: set[str] = field(default_factory=set)  # routers whose next hop to ask for

    def apply(self, changes: Iterable[Change]) -> None:
        self.changes.extend(changes)


class Controller:
    """``clock`` times resynchronisation hold-downs; ``wall_clock`` stamps the mobility history,
    which is persisted and so must mean the same after a restart."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.wall_clock = wall_clock
        self.topo = Topology()
        self.topo.load(*store.load())
        self.switches: dict[int, SwitchState] = {}
        self.stats: Counter[str] = Counter()
        self.packet_ins: Counter[str] = Counter()  # by what was done with the frame: PACKET_IN_REASONS
        self._last_resync: dict[int, float] = {}
        self._responder_hits: dict[int, dict[str, int]] = {}  # dpid -> "arp"/"nd" -> packets answered
        self._host_answers = TokenBucket(ANSWER_RATE, ANSWER_BURST, clock)
        self._icmp_errors = TokenBucket(ICMP_ERROR_RATE, ICMP_ERROR_BURST, clock)
        self.events = EventLog(wall_clock)
        self.confirmations = Confirmations()
        self._deferred: Deferred | None = None
        # The controller instance that masters a switch (by dpid), for GET /v1/hypervisors; the app
        # sets it (several instances: from the etcd view, docs/scale-out.md). Alone, it masters
        # every switch connected to it.
        self.master_of: Callable[[int], str | None] = lambda dpid: None
        self.instances: Callable[[], list[str]] = list  # the live instances' ids
        self.ovsdb_views: dict[str, OvsdbView] = {}
        self.ovsdb_connected: set[str] = set()
        self.on_hypervisors: Callable[[Iterable[Hypervisor]], None] | None = None
        """Told every hypervisor after each change to them (the OVSDB manager keeps its sessions by it)."""
        self.on_bfd_peers: Callable[[str, Iterable[tuple[str, str]]], None] | None = None
        """Told, for a managed hypervisor, the managed peers (name, tunnel IP) it shares networks with."""
        self._bfd_told: dict[str, frozenset[tuple[str, str]]] = {}
        self._bfd_up_once: set[tuple[str, str]] = set()
        self.peer_names: dict[int, str] = {}  # dpid -> its TLS certificate's common name
        self.refused: list[int] = []  # switches to disconnect (``take_refused``)

    # --- placement API ----------------------------------------------------------------------

    def put_hypervisor(self, name: str, body: Any) -> tuple[bool, Hypervisor, Batches]:
        hv = parse_hypervisor(name, body)
        self.topo.check_hypervisor(hv)
        old = self.topo.hypervisors.get(name)
        if old is not None and (old.tunnel_type, old.tunnel_ip.version) != (hv.tunnel_type, hv.tunnel_ip.version):
            peers = set().union(*(self.topo.interested(n) for n in self.topo.networks_on(name))) - {name}
            self._one_tunnel_type(hv, peers, "its networks are")
        self.store.apply([Put(hv)])
        self.topo.put_hypervisor(hv)
        self._note("created" if old is None else "changed", hv)
        self.tell_hypervisors()
        if hv.dpid in self.switches and not self._authentic(hv.dpid, self.peer_names.get(hv.dpid)):
            self._refuse(hv.dpid)
        vnis = hosted_vnis(self.topo, name)
        batches = self._refresh(self._hosts_of(vnis) - {name}, vnis)
        if old is None or old.dpid != hv.dpid:
            self._merge(batches, self._full_sync(hv))
        else:
            self._merge(batches, self._refresh({name}, vnis))
        return old is None, hv, batches

    def delete_hypervisor(self, name: str) -> Batches:
        hv = self.topo.check_delete_hypervisor(name)
        self.store.apply([Delete(Hypervisor, name)])
        self.topo.delete_hypervisor(name)
        self._note_deleted(hv)
        self.ovsdb_views.pop(name, None)
        self.ovsdb_connected.discard(name)
        self.tell_hypervisors()
        return {}

    def put_network(self, name: str, body: Any) -> tuple[bool, Network, Batches]:
        net = parse_network(name, body)
        self.topo.check_network(net)
        old = self.topo.networks.get(name)
        self.store.apply([Put(net)])
        self.topo.put_network(net)
        self._note("created" if old is None else "changed", net)
        vnis = {net.vni} | ({old.vni} if old else set()) | self._vnis(self.topo.routed_networks(name))
        return old is None, net, self._refresh(self.topo.interested(name), vnis)

    def delete_network(self, name: str) -> Batches:
        net = self.topo.check_delete_network(name)
        self.store.apply([Delete(Network, name)])
        self.topo.delete_network(name)
        self._note_deleted(net)
        return {}

    def put_port(self, name: str, body: Any) -> tuple[bool, Port, Batches]:
        port = parse_port(name, body)
        old = self.topo.ports.get(name)
        if old is not None:
            port = self._carry_over(old, port, body.get("mobility_seq"))
        self.topo.check_port(port)
        if port.hypervisor is not None:
            self._one_tunnel_type(self.topo.hypervisors[port.hypervisor], self._hosts_with(port),
                                  f"network {port.network} is")
        batches = self._save_port(old, port)
        self._note("created" if old is None else "changed", port)
        if not port.located:
            self._merge(batches, self._bind_by_iface_id(port))
        return old is None, self.topo.ports[name], batches

    def bind_port(self, name: str, hypervisor: str, interface: str) -> Batches:
        """Locate a port by an authority outside the data plane, as a PUT with that location would.

        This is the hook for a hypervisor managed over OVSDB: an interface whose
        ``external_ids:iface-id`` names the port counts as a declared location, so it moves a port
        whatever its mobility policy (``learn`` or ``declared``).
        """
        old = self.topo.get_port(name)
        port = self._carry_over(old, old.with_location(hypervisor, interface, "declared"), None)
        self.topo.check_port(port)
        return self._save_port(old, port)

    def delete_port(self, name: str) -> Batches:
        port = self.topo.check_delete_port(name)
        nets = self.topo.routed_networks(port.network)
        hosts = self.topo.interested(port.network)
        self.store.apply([Delete(Port, name)])
        self.topo.delete_port(name)
        self._note_deleted(port)
        self._host_answers.forget(name)
        self._icmp_errors.forget(("port", name))
        return self._refresh(hosts, self._vnis(nets))

    def put_router(self, name: str, body: Any, mac: str | None = None) -> tuple[bool, Router, Batches]:
        """Create or replace a router; its MAC is the one it has, else a new one (``mac`` only for
        a copy of another controller's state, as ``ryu-overlay trace --url`` makes)."""
        router = parse_router(name, body)
        router = replace(router, mac=mac or self.topo.allocate_router_mac(name))
        self.topo.check_router(router)
        old = self.topo.routers.get(name)
        nets = set(router.networks) | set(old.networks if old else ())
        hosts = set().union(*(self.topo.interested(n) for n in nets))
        routed_hosts = sorted(set().union(*(self.topo.hosts(n) for n in router.networks)))
        if routed_hosts:
            self._one_tunnel_type(self.topo.hypervisors[routed_hosts[0]], set(routed_hosts),
                                  f"router {name}'s networks are")
        self.store.apply([Put(router)])
        self.topo.put_router(router)
        self._note("created" if old is None else "changed", router)
        hosts |= set().union(*(self.topo.interested(n) for n in nets))
        batches = self._refresh(hosts, self._vnis(nets))
        self._merge(batches, self._refresh(_gateway_hosts(old, router), {0}))
        self._merge(batches, self._resolve(router))
        return old is None, router, self._readvertise(nets, batches)

    def delete_router(self, name: str) -> Batches:
        router = self.topo.get_router(name)
        hosts = set().union(*(self.topo.interested(n) for n in router.networks))
        self.store.apply([Delete(Router, name)])
        self.topo.delete_router(name)
        self._note_deleted(router)
        self._icmp_errors.forget(("router", name))
        batches = self._refresh(hosts, self._vnis(router.networks))
        self._merge(batches, self._refresh(_gateway_hosts(router), {0}))
        return self._readvertise(router.networks, batches)

    def _readvertise(self, networks: Iterable[str], batches: Batches) -> Batches:
        """A router came, changed or went: every located port of its networks gets a fresh Router
        Advertisement (its default router and lifetime changed), after the flows that route."""
        for net in sorted(set(networks)):
            for port in self.topo.ports_of(net):
                self._merge(batches, self._port_up(port))
        return batches

    def _vnis(self, networks: Iterable[str]) -> set[int]:
        return {self.topo.networks[n].vni for n in networks}

    def _carry_over(self, old: Port, new: Port, claimed: int | None) -> Port:
        """Keep what a re-declaration does not state: a learned location and the sequence number.

        A declaration carrying a ``mobility_seq`` below the port's is based on a location the
        port has left since: it is refused, as an older report never overrides a newer one
        (RFC 7432 section 15.1). A higher one is adopted. Otherwise the operator's word stands:
        the port is unfrozen, its duplicate cleared and its move history started again.
        """
        if claimed is not None and claimed < old.mobility_seq:
            raise Conflict(f"port {old.name} is at mobility_seq {old.mobility_seq}: a declaration based on "
                           f"{claimed} is older; read the port again")
        if new.hypervisor is None and old.location_source in ("learned", "ovsdb") and \
                (old.network, old.mac) == (new.network, new.mac):
            new = new.with_location(old.hypervisor, old.interface, old.location_source)
        left = old.located and (old.hypervisor, old.interface) != (new.hypervisor, new.interface)
        seq = max(old.mobility_seq, claimed or 0) + int(left)
        return replace(new, mobility_seq=seq, frozen=False, recent_moves=(), duplicate=None)

    def _save_port(self, old: Port | None, port: Port, event: str | None = None) -> Batches:
        """Store a port and refresh its networks (and those routed with them: a port appearing on a
        hypervisor brings it the routes of its router) wherever they are, before and after."""
        affected_nets = {r for n in {port.network} | ({old.network} if old else set())
                         for r in self.topo.routed_networks(n)}
        hosts = set().union(*(self.topo.interested(n) for n in affected_nets))
        self.store.apply([Put(port)])
        self.topo.put_port(port)
        hosts |= set().union(*(self.topo.interested(n) for n in affected_nets))
        batches = self._refresh(hosts, self._vnis(affected_nets))
        if old is None or (old.hypervisor, old.interface) != (port.hypervisor, port.interface):
            self._merge(batches, self._port_up(port))
        if event is not None:
            self._note(event, port)
        return batches

    def reload(self) -> Batches:
        """A store write failed: take the stored topology as the truth and re-read every switch.

        What the failed write (and any refused after it) changed in memory is dropped; each
        connected switch is reconciled again from what it reports, as after a reconnection.
        """
        topo = Topology()
        topo.load(*self.store.load())
        self.topo = topo
        self.events.append("reloaded", None, None, None)
        self.tell_hypervisors()
        return {dpid: self.switch_connected(dpid) for dpid in list(self.switches)}

    def apply_remote(self, changes: Iterable[Change]) -> Batches:
        """Changes another controller instance made (seen through the store's watch), already validated
        and durable there: apply them to memory and bring the affected switches this instance
        programs to their desired state. A change this topology cannot take (it disagrees with
        the store) makes it reload everything instead."""
        hosts: set[str] = set()
        vnis: set[int] = set()
        resync: list[str] = []
        ups: list[Port] = []
        try:
            for change in changes:
                name = change.obj.name if isinstance(change, Put) else change.name
                kind = type(change.obj) if isinstance(change, Put) else change.kind
                old = self._footprint(kind, name, hosts, vnis)
                if isinstance(change, Put):
                    getattr(self.topo, _PUT[kind])(change.obj)
                else:
                    getattr(self.topo, _DELETE[kind])(name)
                new = self._footprint(kind, name, hosts, vnis)
                if kind is Hypervisor and new is not None and (old is None or old.dpid != new.dpid):
                    resync.append(name)
                if kind is Port and new is not None and (old is None or (old.hypervisor, old.interface) !=
                                                         (new.hypervisor, new.interface)):
                    ups.append(new)
        except (KeyError, ValueError, AttributeError):
            LOG.exception("a change from another instance did not fit the topology; reloading it")
            return self.reload()
        batches = self._refresh(hosts, vnis)
        for name in resync:
            self._merge(batches, self._full_sync(self.topo.hypervisors[name]))
        for port in ups:
            self._merge(batches, self._port_up(port))
        return batches

    def _footprint(self, kind: type, name: str, hosts: set[str], vnis: set[int]) -> Any:
        """Add the hypervisors and partitions an object's flows live on; return the object (or None)."""
        if kind is Port:
            port = self.topo.ports.get(name)
            if port is not None and port.network in self.topo.networks:
                hosts |= self.topo.interested(port.network)
                vnis |= self._vnis(self.topo.routed_networks(port.network))
            return port
        if kind is Router:
            router = self.topo.routers.get(name)
            if router is not None:
                hosts |= set().union(*(self.topo.interested(n) for n in router.networks))
                vnis |= self._vnis(router.networks) | ({0} if router.gateway is not None else set())
            return router
        if kind is Network:
            net = self.topo.networks.get(name)
            if net is not None:
                hosts |= self.topo.hosts(name)
                vnis.add(net.vni)
            return net
        if kind is Hypervisor:
            hv = self.topo.hypervisors.get(name)
            if hv is not None:
                hosted = hosted_vnis(self.topo, name)
                hosts |= {name} | self._hosts_of(hosted)
                vnis |= hosted
            return hv
        hosts |= set(self.topo.hypervisors)  # a kind without a footprint here: every partition of every switch
        vnis |= {0} | {n.vni for n in self.topo.networks.values()}
        return None

    # --- switch events ----------------------------------------------------------------------

    def admit(self, dpid: int, cert_name: str | None) -> bool:
        """Whether a switch that just connected may go on (then ``switch_connected``).

        ``cert_name`` is the common name of its TLS certificate (None without TLS). A switch whose
        certificate does not name the hypervisor owning its datapath id is refused: counted,
        logged, disconnected by the app and never programmed; the switch already connected with
        that datapath id, if any, is left alone. Declaring a hypervisor later with the datapath id
        of a connected switch whose certificate names another refuses that switch then
        (``put_hypervisor``, ``take_refused``).
        """
        if not self._authentic(dpid, cert_name):
            self._count_refusal(dpid, cert_name)
            return False
        if self.topo.hypervisor_by_dpid(dpid) is None and dpid not in self.switches and \
                sum(self.topo.hypervisor_by_dpid(d) is None for d in self.switches) >= MAX_UNKNOWN_SWITCHES:
            self.stats["switches_refused_unknown"] += 1
            LOG.warning("refused switch %016x: no hypervisor owns it and %d such are connected", dpid,
                        MAX_UNKNOWN_SWITCHES)
            return False
        if cert_name is not None:
            self.peer_names[dpid] = cert_name
        return True

    def switch_connected(self, dpid: int) -> list[Any]:
        """A bridge (re)connected: forget what we believed and ask it what it has."""
        known = dpid in self.switches
        self.switches[dpid] = SwitchState(dpid)
        if not known:
            self._note_switch("switch_connected", dpid)
        self.stats["switch_connects"] += 1
        return ofmsg.sync_requests()

    def _authentic(self, dpid: int, cert_name: str | None) -> bool:
        hv = self.topo.hypervisor_by_dpid(dpid)
        return hv is None or cert_name is None or tls.names(cert_name, hv.certificate_name)

    def _count_refusal(self, dpid: int, cert_name: str | None) -> None:
        hv = self.topo.hypervisor_by_dpid(dpid)
        self.stats["switches_refused_certificate"] += 1
        LOG.error("refused switch %016x: its certificate names %r, but the datapath id is hypervisor %s's "
                  "(cert_cn %r)", dpid, cert_name, hv and hv.name, hv and hv.certificate_name)

    def _refuse(self, dpid: int) -> None:
        self._count_refusal(dpid, self.peer_names.pop(dpid, None))
        self.switches.pop(dpid, None)
        self._responder_hits.pop(dpid, None)
        self.refused.append(dpid)

    def take_refused(self) -> list[int]:
        """The switches refused since the last call: the app disconnects them."""
        refused, self.refused = self.refused, []
        return refused

    def switch_disconnected(self, dpid: int) -> None:
        """Forget the switch: nothing kept per switch outlives its connection."""
        known = self.switches.pop(dpid, None) is not None
        self._responder_hits.pop(dpid, None)
        self.peer_names.pop(dpid, None)
        self._last_resync.pop(dpid, None)
        self.confirmations.gone(dpid)
        if known:
            self._note_switch("switch_disconnected", dpid)

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

    def meters_reply(self, dpid: int, meters: Iterable[tuple[int, Meter | None]], more: bool) -> Batches:
        sw = self.switches.get(dpid)
        if sw is None:
            return {}
        sw.meters.update(meters)
        return self._reply_done(sw, "meters", more)

    def _reply_done(self, sw: SwitchState, what: str, more: bool) -> Batches:
        """Once all of ports, flows and groups are read back, reconcile the switch."""
        if more or what not in sw.awaiting:
            return {}
        sw.awaiting.discard(what)
        hv = self.topo.hypervisor_by_dpid(sw.dpid)
        if not sw.synced or hv is None:
            return {}
        batches = self._full_sync(hv)
        if not batches.get(sw.dpid):
            self._note_switch("switch_in_sync", sw.dpid)
        return batches

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
        port = None
        uplinks = self.topo.gateways_on(hv.name, name)
        if name == hv.tunnel_port:
            vnis = hosted_vnis(self.topo, hv.name)
        elif uplinks:
            vnis = self._vnis(n for r in uplinks for n in r.networks)
        else:
            port = self.topo.port_at(hv.name, name)
            vnis = set() if port is None else {self.topo.networks[port.network].vni}
        batches = self._refresh({hv.name}, {0} | vnis)  # partition 0 holds each port's meter
        if port is not None and ofport is not None:
            self._merge(batches, self._port_up(port))
        for router in uplinks:
            self._merge(batches, self._resolve(router))
        early = None if ofport is None else sw.early_frames.pop(ofport, None)
        if early is not None:
            self._merge(batches, self.packet_in(dpid, ofport, *early))  # type: ignore[arg-type]
        return batches

    # --- packet-in: the mapping's eyes ------------------------------------------------------

    def packet_in(self, dpid: int, in_port: int, data: bytes, reports: Mapping[str, int] | None = None) -> Batches:
        """A frame the pipeline sent up: answer ARP/ND from the mapping, learn or move a port.

        ``reports`` gives, for a frame handled after it was observed, the sequence number its
        location report carried then (``_reports``); a frame handled at once reports the current one.
        Each frame is counted in ``packet_ins`` under what was done with it (docs/operations.md).
        """
        self.stats["packet_in"] += 1
        reason, batches = self._packet_in(dpid, in_port, data, reports)
        self.packet_ins[reason] += 1
        return batches

    def _packet_in(self, dpid: int, in_port: int, data: bytes,
                   reports: Mapping[str, int] | None) -> tuple[str, Batches]:
        hv = self.topo.hypervisor_by_dpid(dpid)
        sw = self.switches.get(dpid)
        interface = None if sw is None else sw.interface(in_port)
        if sw is not None and interface is None and len(sw.early_frames) < EARLY_FRAMES:
            # A frame from a port whose port-status has not arrived yet (a VM resumed the moment
            # its interface appeared): keep its latest frame and handle it when the port is known.
            sw.early_frames[in_port] = (data, self._reports(data))
            return "early", {}
        if hv is None or sw is None or interface is None or interface == hv.tunnel_port:
            self.stats["packet_in_ignored"] += 1
            return "ignored", {}
        uplink = self.topo.gateways_on(hv.name, interface)
        if uplink:
            return "uplink", self._from_uplink(hv, interface, uplink, data)
        bound = self.topo.port_at(hv.name, interface)
        if bound is not None and data[6:12].hex(":") == bound.mac and \
                len(data) > mtu_frame_len(self.topo.networks[bound.network]):
            return "oversize", self._oversize(dpid, in_port, bound, data)
        try:
            frame = parse_frame(data)
        except MalformedFrame as exc:
            self.stats["packet_in_malformed"] += 1
            LOG.debug("dropped a malformed frame from %s/%s: %s", hv.name, interface, exc)
            return "malformed", {}
        if bound is not None:
            routed = self._router_error(dpid, in_port, bound, frame, data)
            if routed is not None:
                return "router", routed
        if bound is not None and bound.mac == frame.eth_src:
            return _asked(frame, data), self._answer(dpid, in_port, bound, frame, data)
        if hv.managed and bound is None:
            self.stats["packet_in_ignored"] += 1  # a managed hypervisor's ports are bound by iface-id
            return "ignored", {}
        port = self._claimant(hv.name, interface, bound, frame)
        reason = "learn" if bound is None else "spoofed"
        if port is None:
            return reason, {}
        report = None if reports is None else reports.get(port.name, 0)
        batches = self._relocate(port, hv.name, interface, report)
        port = self.topo.ports[port.name]
        if not (port.hypervisor == hv.name and port.interface == interface):
            return reason, batches
        answer = self._answer(dpid, in_port, port, frame, data)
        consumed = frame.gratuitous or frame.unsolicited_na or frame.eth_type == ETH_TYPE_RARP
        if not answer and not consumed:
            # Now that the port is bound, let the frame take the pipeline it would have taken.
            answer = {dpid: [ofmsg.packet_out(in_port, data, [Output(OFPP_TABLE)])]}
        self._merge(batches, answer)
        return reason, batches

    # --- the external gateway's next hop ---------------------------------------------------------

    def _from_uplink(self, hv: Hypervisor, interface: str, routers: list[Router], data: bytes) -> Batches:
        """A frame from a router's uplink (``uplink_in`` sends up only ARP from next hops): learn the
        next hop's MAC from it and, if it is new or changed, give the routers their way out."""
        try:
            frame = parse_frame(data)
        except MalformedFrame:
            self.stats["packet_in_malformed"] += 1
            return {}
        if frame.eth_type != ETH_TYPE_ARP or frame.src_ip is None:
            self.stats["packet_in_ignored"] += 1
            return {}
        if not any(r.gateway is not None and r.gateway.next_hop == frame.src_ip for r in routers):
            return {}
        return self.learn_next_hop(hv.name, interface, str(frame.src_ip), frame.eth_src)

    def learn_next_hop(self, hypervisor: str, interface: str, ip: str, mac: str) -> Batches:
        """Next hop ``ip`` on uplink ``interface`` of ``hypervisor`` is at ``mac`` (learned from its
        ARP; ``ryu-overlay trace`` assumes one): the routers using it get their way out. Kept per
        switch connection: a reconnected switch asks again."""
        hv = self.topo.hypervisors.get(hypervisor)
        sw = None if hv is None else self.switches.get(hv.dpid)
        if sw is None or sw.next_hops.get((interface, ip)) == mac:
            return {}
        self.stats["next_hop_learned"] += 1
        LOG.info("next hop %s of %s/%s is at %s", ip, hypervisor, interface, mac)
        sw.next_hops[(interface, ip)] = mac
        mine = [r for r in self.topo.gateways_on(hypervisor, interface)
                if r.gateway is not None and str(r.gateway.next_hop) == ip]
        return self._refresh({hypervisor}, self._vnis(n for r in mine for n in r.networks))

    def _resolve(self, router: Router) -> Batches:
        """Ask for the MAC of ``router``'s next hop: an ARP request from the gateway IP out of the
        uplink (if the gateway's switch is connected and the uplink is on it); the answer comes
        back through ``uplink_in``'s trap to ``_from_uplink``."""
        if self._deferred is not None:
            self._deferred.resolve.add(router.name)
            return {}
        gw = router.gateway
        hv = None if gw is None else self.topo.hypervisors.get(gw.hypervisor)
        sw = None if hv is None else self.switches.get(hv.dpid)
        if gw is None or hv is None or sw is None or not sw.synced or gw.interface not in sw.ofports:
            return {}
        self.stats["next_hop_requests"] += 1
        request = arp_request(router.mac, str(gw.ip.ip), str(gw.next_hop))
        return {hv.dpid: [ofmsg.packet_out(OFPP_CONTROLLER, request, [Output(sw.ofports[gw.interface])])]}

    def resolve_next_hops(self) -> Batches:
        """Ask again for every gateway's next hop (the app does so every few seconds): an unanswered
        request is repeated, and a next hop that changed its MAC is learned again."""
        batches: Batches = {}
        for router in self.topo.routers.values():
            self._merge(batches, self._resolve(router))
        return batches

    def _answer(self, dpid: int, in_port: int, asker: Port, frame: Frame, data: bytes) -> Batches:
        """Reply to an ARP request or Neighbor Solicitation for an address of the asker's network,
        to a Router Solicitation, or to a DHCP request.

        The switches answer ARP and most solicitations themselves (``flows.arp_responders``,
        ``flows.nd_responders``); the solicitations that still come here are DAD probes
        (defended with an unsolicited NA, which carries an option the probe has no room for)
        and those without the asker's link-layer address, which the switch cannot turn into an
        answer.
        """
        if frame.arp_op == ARP_REQUEST and not frame.gratuitous and frame.arp_tpa is not None:
            target = self.topo.port_by_ip(asker.network, frame.arp_tpa)
            if target is None or target.name == asker.name:
                return {}
            self.stats["arp_answered_controller"] += 1
            data = arp_reply(frame.eth_src, str(frame.src_ip), target.mac, str(frame.arp_tpa))
        elif frame.icmpv6_type == ND_NS and frame.nd_target is not None:
            target = self._ipv6_owner(asker.network, frame.nd_target)
            if target is None:
                answer = self._router_advert(asker, frame)
                return {} if answer is None else {dpid: [ofmsg.packet_out(OFPP_CONTROLLER, answer, [Output(in_port)])]}
            if target.name == asker.name:
                return {}
            if frame.src_ip is not None and frame.src_ip.is_unspecified:
                self.stats["nd_dad_defended"] += 1
                data = neighbor_advert(target.mac, str(frame.nd_target), ALL_NODES_MAC, ALL_NODES, solicited=False)
            else:
                self.stats["nd_answered"] += 1
                data = neighbor_advert(target.mac, str(frame.nd_target), frame.eth_src, str(frame.src_ip),
                                       solicited=True)
        elif frame.icmpv6_type == ND_RS:
            net = self.topo.networks[asker.network]
            return self._host_config(dpid, in_port, asker, router_advert_for(self.topo, net, asker), "ra_sent")
        elif frame.eth_type == ETH_TYPE_IPV4:
            try:
                request = parse_dhcp(data)
            except MalformedFrame as exc:
                self.stats["packet_in_malformed"] += 1
                LOG.debug("dropped a malformed DHCP message from port %s: %s", asker.name, exc)
                return {}
            if request is None:
                return {}
            answer = dhcp_answer(self.topo, self.topo.networks[asker.network], asker, request)
            return self._host_config(dpid, in_port, asker, answer, "dhcp_answered")
        else:
            return {}
        return {dpid: [ofmsg.packet_out(OFPP_CONTROLLER, data, [Output(in_port)])]}

    def _oversize(self, dpid: int, in_port: int, port: Port, data: bytes) -> Batches:
        """A frame too big for its network once encapsulated (``mtu_oversize``): tell its sender
        the MTU, ICMP "fragmentation needed" (RFC 1191) or "packet too big" (RFC 8201), rate-limited
        per port; or, for IPv4 without DF, forward it in fragments as a router would (RFC 791)."""
        mtu = self.topo.networks[port.network].announced_mtu
        eth_type = int.from_bytes(data[12:14], "big")
        datagram = data[14:]
        if eth_type == ETH_TYPE_IPV4 and len(datagram) >= 20 and not int.from_bytes(datagram[6:8], "big") & IPV4_DF:
            try:
                fragments = fragment_ipv4(data, mtu)
            except MalformedFrame:
                self.stats["packet_in_malformed"] += 1
                return {}
            self.stats["pmtu_fragmented"] += 1
            return {dpid: [ofmsg.packet_out(in_port, f, [Output(OFPP_TABLE)]) for f in fragments]}
        if eth_type == ETH_TYPE_IPV4 and _reportable(data, 4):
            src_ip, src_mac = self.icmp_source(port.network, 4)
            answer = icmp4_error(src_mac, port.mac, src_ip, datagram, 3, 4, mtu=mtu)
            counter = "pmtu_frag_needed"
        elif eth_type == ETH_TYPE_IPV6 and _reportable(data, 6):
            src_ip, src_mac = self.icmp_source(port.network, 6)
            answer = icmp6_error(src_mac, port.mac, src_ip, datagram, 2, 0, mtu=mtu)
            counter = "pmtu_packet_too_big"
        else:
            self.stats["pmtu_dropped"] += 1
            return {}
        if not self._icmp_errors.allow(("port", port.name)):
            self.stats["pmtu_rate_limited"] += 1
            return {}
        self.stats[counter] += 1
        return {dpid: [ofmsg.packet_out(OFPP_CONTROLLER, answer, [Output(in_port)])]}

    def icmp_source(self, network: str, version: int) -> tuple[str, str]:
        """The (IP, MAC) the ICMP errors about a frame of ``network`` come from: the network's
        router address of that IP version, else the controller's own ``ICMP_SOURCE_*`` (the sender
        only needs the error to quote its packet, not to come from a particular address).
        """
        router = self.topo.router_of(network)
        own = None if router is None else next(
            (i.ip.ip for i in router.interfaces_of(network) if i.ip.version == version), None)
        if router is not None and own is not None:
            return str(own), router.mac
        if version == 4:
            return ICMP_SOURCE_IPV4, ICMP_SOURCE_MAC
        return str(link_local(ICMP_SOURCE_MAC)), ICMP_SOURCE_MAC

    def _host_config(self, dpid: int, ofport: int, port: Port, answer: bytes | None, counter: str) -> Batches:
        """Send a DHCP answer or RA out of ``port``'s interface, at most ``hostconfig.ANSWER_RATE``
        per second per port."""
        if answer is None:
            return {}
        if not self._host_answers.allow(port.name):
            self.stats["host_config_rate_limited"] += 1
            return {}
        self.stats[counter] += 1
        return {dpid: [ofmsg.packet_out(OFPP_CONTROLLER, answer, [Output(ofport)])]}

    def _port_up(self, port: Port) -> Batches:
        """An unsolicited Router Advertisement to a port that has just become reachable: its
        interface appeared on a connected switch, or the port was bound to one that has it."""
        if self._deferred is not None:
            self._deferred.port_up.add(port.name)
            return {}
        hv = None if port.hypervisor is None else self.topo.hypervisors.get(port.hypervisor)
        sw = None if hv is None else self.switches.get(hv.dpid)
        if hv is None or sw is None or not sw.synced or port.interface not in sw.ofports:
            return {}
        ra = router_advert_for(self.topo, self.topo.networks[port.network], port)
        return self._host_config(hv.dpid, sw.ofports[port.interface], port, ra, "ra_sent")

    def _router_advert(self, asker: Port, frame: Frame) -> bytes | None:
        """The Neighbor Advertisement (router flag set) for a solicitation of a router's IPv6 address
        or link-local address in the asker's network, or None if the target is no router's."""
        router = self.topo.router_of(asker.network)
        target = frame.nd_target
        if router is None or target is None or (
                target != link_local(router.mac) and self.topo.router_address(asker.network, target) is None):
            return None
        self.stats["router_nd_answered"] += 1
        if frame.src_ip is not None and frame.src_ip.is_unspecified:
            return neighbor_advert(router.mac, str(target), ALL_NODES_MAC, ALL_NODES, solicited=False, router=True)
        return neighbor_advert(router.mac, str(target), frame.eth_src, str(frame.src_ip), solicited=True, router=True)

    def _router_error(self, dpid: int, in_port: int, source: Port, frame: Frame, data: bytes) -> Batches | None:
        """Answer a frame the router sent up with an ICMP error from the router, back to ``source``:
        time exceeded for TTL 1 sent to the router's MAC, unreachable for one it routed to an
        address nobody owns (it then carries the router's MAC as source). None if it is neither.

        At most ``ICMP_ERROR_RATE`` a second per router; never about an ICMP error (``_reportable``).
        """
        router = self.topo.router_of(source.network)
        if router is None or frame.eth_type not in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
            return None
        ttl_at = 14 + (8 if frame.eth_type == ETH_TYPE_IPV4 else 7)
        if frame.eth_dst == router.mac and frame.eth_src == source.mac and len(data) > ttl_at and data[ttl_at] <= 1:
            what = "icmp_time_exceeded"
        elif frame.eth_src == router.mac:
            what = "icmp_unreachable"
        else:
            return None
        version = 4 if frame.eth_type == ETH_TYPE_IPV4 else 6
        own = next((i.ip.ip for i in router.interfaces_of(source.network) if i.ip.version == version), None)
        datagram = data[14:]
        if own is None or not _reportable(data, version):
            return {}
        if not self._icmp_errors.allow(("router", router.name)):
            self.stats["icmp_rate_limited"] += 1
            return {}
        self.stats[what] += 1
        expired = what == "icmp_time_exceeded"
        if version == 4:
            reply = icmp4_error(router.mac, source.mac, str(own), datagram,
                                ICMP4_TIME_EXCEEDED if expired else ICMP4_UNREACHABLE,
                                0 if expired else ICMP4_HOST_UNREACHABLE)
        else:
            reply = icmp6_error(router.mac, source.mac, str(own), datagram,
                                ICMP6_TIME_EXCEEDED if expired else ICMP6_UNREACHABLE,
                                0 if expired else ICMP6_ADDRESS_UNREACHABLE)
        return {dpid: [ofmsg.packet_out(OFPP_CONTROLLER, reply, [Output(in_port)])]}

    def _ipv6_owner(self, network: str, ip: ipaddress.IPv6Address) -> Port | None:
        owner = self.topo.port_by_ip(network, ip)
        if owner is None and ip.is_link_local:
            owner = next((p for p in self.topo.ports_of(network) if link_local(p.mac) == ip), None)
        return owner

    def _claimant(self, hv: str, interface: str, bound: Port | None, frame: Frame) -> Port | None:
        """The one port that may own this frame arriving on this interface, or None (counted)."""
        if bound is not None:
            self.stats["dropped_spoofed_source"] += 1
            LOG.info("%s/%s is bound to port %s; dropped a frame from %s", hv, interface, bound.name, frame.eth_src)
            return None
        candidates = [p for p in (self.topo.locate(n.vni, frame.eth_src) for n in self.topo.networks.values())
                      if p is not None]
        ip = frame.src_ip
        if ip is not None and not ip.is_unspecified and not ip.is_link_local:
            candidates = [p for p in candidates if ip in p.ips]
        if len(candidates) > 1:
            # Tenants may reuse a MAC and address; the interface name (as a tap named after its
            # port) is then what tells which port moved here.
            candidates = [p for p in candidates if p.interface == interface]
        if len(candidates) != 1:
            self.stats["dropped_unknown_source"] += 1
            LOG.info("no single port owns %s (%s) seen on %s/%s", frame.eth_src, ip, hv, interface)
            return None
        return candidates[0]

    def _reports(self, data: bytes) -> dict[str, int]:
        """The sequence number a frame seen now reports for each port with its source MAC."""
        mac = ":".join(f"{b:02x}" for b in data[6:12])
        ports = (self.topo.locate(n.vni, mac) for n in self.topo.networks.values())
        return {p.name: _next_seq(p) for p in ports if p is not None}

    def _present(self, hv_name: str | None, interface: str | None) -> bool:
        """The interface exists on its hypervisor's connected bridge."""
        hv = None if hv_name is None else self.topo.hypervisors.get(hv_name)
        sw = None if hv is None else self.switches.get(hv.dpid)
        return sw is not None and interface in sw.ofports

    def _relocate(self, port: Port, hv: str, interface: str, report: int | None,
                  source: LocationSource = "learned") -> Batches:
        """Bind ``port`` where its traffic was seen, as EVPN's MAC mobility does (RFC 7432 section 15).

        A report older than the port's location is ignored. A port that moves too often is
        frozen where it is. A port whose traffic comes back from a location it left within the
        window while its current interface is still there is active in two places at once: it
        is held where it is and the duplicate recorded. Both wait for an operator's PUT.
        """
        if port.hypervisor == hv and port.interface == interface:
            return {}
        if mobility_of(port, self.topo.networks[port.network]) == "declared":
            self.stats["moves_refused_declared"] += 1
            LOG.warning("port %s (%s) has declared mobility; dropped its frame from %s/%s", port.name, port.mac,
                        hv, interface)
            return {}
        if report is not None and report < _next_seq(port):
            self.stats["moves_refused_stale"] += 1
            LOG.info("ignored a stale report of port %s at %s/%s (seq %d, port at %d)", port.name, hv, interface,
                     report, port.mobility_seq)
            return {}
        if port.frozen:
            self.stats["moves_refused_frozen"] += 1
            return {}
        if port.duplicate is not None:
            self.stats["moves_refused_duplicate"] += 1
            return {}
        try:
            self._one_tunnel_type(self.topo.hypervisors[hv],
                                  self._hosts_with(port.with_location(hv, interface, source)),
                                  f"network {port.network} is")
        except Conflict as exc:
            self.stats["moves_refused_tunnel_type"] += 1
            LOG.warning("port %s not bound at %s/%s: %s", port.name, hv, interface, exc)
            return {}
        if not port.located:
            self.stats["learned" if source == "learned" else "ovsdb_bound"] += 1
            return self._save_port(port, port.with_location(hv, interface, source), "port_learned")
        now = self.wall_clock()
        recent = tuple(m for m in port.recent_moves if now - m.at <= MOVE_WINDOW)
        if (hv, interface) in {(m.hypervisor, m.interface) for m in recent} and \
                self._present(port.hypervisor, port.interface):
            self.stats["duplicates_detected"] += 1
            LOG.warning("port %s (%s) is active at %s/%s and at %s/%s at once; held at %s/%s", port.name, port.mac,
                        port.hypervisor, port.interface, hv, interface, port.hypervisor, port.interface)
            return self._hold(replace(port, recent_moves=recent, duplicate=Duplicate(hv, interface, now)),
                              "duplicate_address")
        if len(recent) >= MOVE_LIMIT:
            self.stats["ports_frozen"] += 1
            LOG.warning("port %s moved %d times in %ds; frozen at %s/%s", port.name, len(recent) + 1,
                        MOVE_WINDOW, port.hypervisor, port.interface)
            return self._hold(replace(port, recent_moves=recent, frozen=True), "port_frozen")
        self.stats["moves"] += 1
        left = Move(now, port.hypervisor, port.interface)  # type: ignore[arg-type]
        new = replace(port.with_location(hv, interface, source), mobility_seq=port.mobility_seq + 1,
                      recent_moves=(*recent, left))
        return self._save_port(port, new, "port_moved")

    def _hold(self, port: Port, event: str) -> Batches:
        """Record a port that stays where it is (frozen or duplicate); its flows do not change."""
        self.store.apply([Put(port)])
        self.topo.put_port(port)
        self._note(event, port)
        return {}

    # --- hypervisors managed over OVSDB (ovsdb.py, docs/hypervisors.md) -----------------------

    def tell_hypervisors(self) -> None:
        """Tell ``on_hypervisors`` every hypervisor, and ``on_bfd_peers`` each managed one's peers
        (at start and after each hypervisor change), so that nothing is provisioned from a guess."""
        if self.on_hypervisors is not None:
            self.on_hypervisors(list(self.topo.hypervisors.values()))
        for hv in self.topo.hypervisors.values():
            if hv.managed:
                self._tell_bfd_peers(hv)

    def ovsdb_status(self, hv: Hypervisor) -> str | None:
        if not hv.managed:
            return None
        return "connected" if hv.name in self.ovsdb_connected else "disconnected"

    def ovsdb_state(self, name: str, view: OvsdbView | None, connected: bool) -> Batches:
        """Hypervisor ``name``'s OVSDB session is up or down, and its database reads ``view`` (None:
        as last read). An interface whose iface-id appeared binds or moves that port; a bound one
        that went away unbinds it, and it binds again wherever else its iface-id is. Moves follow
        the rules of learned moves (``_relocate``); ports declared with a location are left alone.
        """
        if connected:
            self.ovsdb_connected.add(name)
        else:
            self.ovsdb_connected.discard(name)
        hv = self.topo.hypervisors.get(name)
        if view is None or hv is None or not hv.managed:
            return {}
        old = self.ovsdb_views.get(name)
        if old is None:  # first view since start: what is bound here by iface-id is what it had
            old = OvsdbView(iface_ids={p.interface: p.name for p in self.topo.ports_on(name)
                                       if p.location_source == "ovsdb" and p.interface is not None})
        down = self._bfd_down(hv)
        self.ovsdb_views[name] = view
        self._bfd_up_once |= {(name, port) for port, state in view.bfd.items() if state == "up"}
        batches: Batches = {}
        if self._bfd_down(hv) != down:
            LOG.warning("hypervisor %s: BFD reports peers %s down", name, sorted(self._bfd_down(hv)) or "none")
            batches = self._refresh({name}, hosted_vnis(self.topo, name))
        for iface, iface_id in sorted(old.iface_ids.items()):
            port = self.topo.ports.get(iface_id)
            if view.iface_ids.get(iface) != iface_id and port is not None and port.location_source == "ovsdb" \
                    and (port.hypervisor, port.interface) == (name, iface):
                self._merge(batches, self._unbind(port))
                self._merge(batches, self._bind_by_iface_id(self.topo.ports[iface_id]))
        for iface, iface_id in sorted(view.iface_ids.items()):
            port = self.topo.ports.get(iface_id)
            if old.iface_ids.get(iface) != iface_id and port is not None and port.location_source != "declared":
                self._merge(batches, self._relocate(port, name, iface, None, "ovsdb"))
        return batches

    def _tunnel_peers(self, hv: Hypervisor) -> set[str]:
        """The hypervisors ``hv`` exchanges tunnel traffic with."""
        return set().union(*(self.topo.interested(n) for n in self.topo.networks_on(hv.name))) - {hv.name}

    def _tell_bfd_peers(self, hv: Hypervisor) -> None:
        """BFD runs between managed hypervisors that share a network; tell the OVSDB manager when
        ``hv``'s set changes, so that it makes or removes the per-peer BFD ports."""
        peers = frozenset((p, str(self.topo.hypervisors[p].tunnel_ip)) for p in self._tunnel_peers(hv)
                          if self.topo.hypervisors[p].managed)
        if self._bfd_told.get(hv.name) != peers:
            self._bfd_told[hv.name] = peers
            if self.on_bfd_peers is not None:
                self.on_bfd_peers(hv.name, peers)

    def _bfd_down(self, hv: Hypervisor) -> frozenset[str]:
        """The peers whose BFD session from ``hv`` was up and is not any more: nothing is sent to them.
        A session that never came up yet (a new peer) takes no one out."""
        view = self.ovsdb_views.get(hv.name) if hv.managed else None
        if view is None or not view.bfd:
            return frozenset()
        return frozenset(p for p in self._tunnel_peers(hv)
                         if view.bfd.get(bfd_port(p), "up") != "up" and (hv.name, bfd_port(p)) in self._bfd_up_once)

    def tunnels(self, hv: Hypervisor) -> dict[str, str]:
        """The BFD state of each peer that ``hv`` has a BFD port towards: "up" or "down"."""
        view = self.ovsdb_views.get(hv.name)
        if view is None:
            return {}
        return {p: "up" if view.bfd[bfd_port(p)] == "up" else "down" for p in sorted(self._tunnel_peers(hv))
                if bfd_port(p) in view.bfd}

    def _bind_by_iface_id(self, port: Port) -> Batches:
        """Bind an unlocated port to the first managed hypervisor's interface with its name as iface-id."""
        if port.located:
            return {}
        for name, view in sorted(self.ovsdb_views.items()):
            hv = self.topo.hypervisors.get(name)
            iface = next((i for i, p in sorted(view.iface_ids.items()) if p == port.name), None)
            if hv is not None and hv.managed and iface is not None:
                return self._relocate(port, name, iface, None, "ovsdb")
        return {}

    def _unbind(self, port: Port) -> Batches:
        """The interface of a port bound by iface-id went away: the port leaves its location
        (its sequence number goes up, the move is recorded), unless frozen or held as a duplicate."""
        if port.frozen or port.duplicate is not None:
            return {}
        self.stats["ovsdb_unbound"] += 1
        now = self.wall_clock()
        left = Move(now, port.hypervisor, port.interface)  # type: ignore[arg-type]
        recent = (*(m for m in port.recent_moves if now - m.at <= MOVE_WINDOW), left)
        return self._save_port(port, replace(port.with_location(None, None, None),
                                             mobility_seq=port.mobility_seq + 1, recent_moves=recent))

    def _hosts_with(self, port: Port) -> set[str]:
        """The hypervisors exchanging tunnel traffic with ``port``'s, were it where it says."""
        hosts = {p.hypervisor for n in self.topo.routed_networks(port.network) for p in self.topo.ports_of(n)
                 if p.hypervisor is not None and p.name != port.name}
        return hosts | ({port.hypervisor} if port.hypervisor is not None else set())

    def _one_tunnel_type(self, hv: Hypervisor, peers: set[str], what: str) -> None:
        """Refuse to make ``hv`` exchange tunnel traffic with a hypervisor of another tunnel type."""
        def tunnel(h: Hypervisor) -> str:
            return f"{h.tunnel_type} over IPv{h.tunnel_ip.version}"

        others = sorted(n for n in peers if n in self.topo.hypervisors and n != hv.name
                        and tunnel(self.topo.hypervisors[n]) != tunnel(hv))
        if others:
            peer = self.topo.hypervisors[others[0]]
            raise Conflict(f"hypervisor {hv.name} tunnels with {tunnel(hv)} but {what} also on {peer.name}, "
                           f"which tunnels with {tunnel(peer)}: hypervisors sharing a network (or its router) "
                           "must use one tunnel type and one underlay IP version")

    def switch_error(self, dpid: int, description: str) -> list[Any]:
        """The switch refused something: count it and resynchronise it from scratch.

        A switch that keeps refusing the same thing is resynchronised at most once per
        ``RESYNC_HOLDDOWN`` seconds, so an error cannot turn into a message storm.
        """
        self.stats["switch_errors"] += 1
        LOG.error("switch %016x reported an error: %s", dpid, description)
        sw = self.switches.get(dpid)
        now = self.clock()
        if sw is None or now - self._last_resync.get(dpid, -RESYNC_HOLDDOWN) < RESYNC_HOLDDOWN:
            return []
        self._last_resync[dpid] = now
        return self.switch_connected(dpid)

    # --- computing differences --------------------------------------------------------------

    def view(self, hv: Hypervisor) -> SwitchView | None:
        sw = self.switches.get(hv.dpid)
        return None if sw is None else SwitchView(hv, sw.ofports, self._bfd_down(hv), sw.next_hops)

    def connected(self, hv: Hypervisor) -> bool:
        sw = self.switches.get(hv.dpid)
        return sw is not None and sw.synced

    def _full_sync(self, hv: Hypervisor) -> Batches:
        if self._deferred is not None:
            self._deferred.full_sync.add(hv.name)
            return {}
        sw = self.switches.get(hv.dpid)
        if sw is None or not sw.synced:
            return {}
        vnis = {0} | set(sw.flows) | set(sw.groups) | hosted_vnis(self.topo, hv.name)
        batches = self._refresh({hv.name}, vnis)
        for router in self.topo.gateways_on(hv.name):
            self._merge(batches, self._resolve(router))
        return batches

    def _refresh(self, hypervisors: Iterable[str], vnis: Iterable[int]) -> Batches:
        """Bring the given partitions of the given hypervisors' switches to their desired state."""
        vnis = sorted(set(vnis))
        if self._deferred is not None:
            for name in hypervisors:
                self._deferred.refresh.setdefault(name, set()).update(vnis)
            return {}
        batches: Batches = {}
        for name in sorted(set(hypervisors)):
            hv = self.topo.hypervisors.get(name)
            if hv is not None and hv.managed:
                self._tell_bfd_peers(hv)
            sw = None if hv is None else self.switches.get(hv.dpid)
            if hv is None or sw is None or not sw.synced:
                continue
            msgs = self._diff(sw, SwitchView(hv, sw.ofports, self._bfd_down(hv), sw.next_hops), vnis)
            if msgs:
                batches[hv.dpid] = msgs
        return batches

    def _diff(self, sw: SwitchState, view: SwitchView, vnis: list[int]) -> list[Any]:
        ch = ofmsg.Changes()
        for vni in vnis:
            want = desired_partition(self.topo, view, vni)
            have = sw.flows.get(vni, {})
            for c, f in want.flows.items():
                old = have.get(c, f)
                if c not in have:
                    ch.flow_adds.append(f)
                elif old is not f and old is not None and old != f:
                    ch.flow_replaces.append(f)  # another flow under a cookie we gave before
            ch.flow_deletes += [c for c in have if c not in want.flows]
            _set_or_drop(sw.flows, vni, dict(want.flows))
            groups = sw.groups.get(vni, {})
            _entities(want.groups, groups, ch.group_adds, ch.group_mods, ch.group_deletes)
            _set_or_drop(sw.groups, vni, dict(want.groups))
            if vni == 0:
                _entities(want.meters, sw.meters, ch.meter_adds, ch.meter_mods, ch.meter_deletes)
                sw.meters = dict(want.meters)
        self.stats["flow_mods"] += len(ch.flow_adds) + len(ch.flow_deletes) + 2 * len(ch.flow_replaces)
        self.stats["group_mods"] += len(ch.group_adds) + len(ch.group_mods) + len(ch.group_deletes)
        return ch.batch()

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

    # --- transactions: several changes, one store write, one batch per switch ------------------

    def begin(self) -> None:
        """From now on, changes are checked and made in memory only: their store writes, flows and
        events wait for ``end``. The caller undoes the in-memory changes if it does not commit."""
        self._deferred = Deferred(self.store)
        self.store = self._deferred  # type: ignore[assignment]
        self.events.hold()

    @property
    def in_transaction(self) -> bool:
        return self._deferred is not None

    def end(self, commit: bool) -> Batches:
        """Commit what was deferred since ``begin`` as one store write and return the flows of all
        of it, one batch per switch; or drop it (``commit`` false, or the store refused the write)."""
        deferred, self._deferred = self._deferred, None
        assert deferred is not None
        self.store = deferred.store
        try:
            if commit:
                self.store.apply(deferred.changes)
        except BaseException:
            self.events.release(False)
            raise
        self.events.release(commit)
        if not commit:
            return {}
        batches: Batches = {}
        for name in sorted(deferred.refresh.keys() - deferred.full_sync):
            self._merge(batches, self._refresh({name}, deferred.refresh[name]))
        for name in sorted(deferred.full_sync & self.topo.hypervisors.keys()):
            self._merge(batches, self._full_sync(self.topo.hypervisors[name]))
        for name in sorted(deferred.port_up & self.topo.ports.keys()):
            self._merge(batches, self._port_up(self.topo.ports[name]))
        for name in sorted(deferred.resolve & self.topo.routers.keys()):
            self._merge(batches, self._resolve(self.topo.routers[name]))
        return batches

    # --- events -----------------------------------------------------------------------------

    def object_json(self, obj: Any) -> dict[str, Any]:
        """An object as its REST GET shows it."""
        out: dict[str, Any] = self.hypervisor_json(obj) if isinstance(obj, Hypervisor) else obj.to_json()
        return out

    def _note(self, event: str, obj: Any) -> None:
        self.events.append(event, KINDS[type(obj)], obj.name, self.object_json(obj), tenant=self._tenant(obj))

    def _note_deleted(self, obj: Any) -> None:
        self.events.append("deleted", KINDS[type(obj)], obj.name, None, tenant=self._tenant(obj))

    def _tenant(self, obj: Any) -> str | None:
        """The tenant an event about ``obj`` belongs to (None: hypervisors and switches, the
        operator's), so that a tenant's token reads only its own events."""
        if isinstance(obj, (Network, Router)):
            return obj.tenant
        net = self.topo.networks.get(obj.network) if isinstance(obj, Port) else None
        return None if net is None else net.tenant

    def _note_switch(self, event: str, dpid: int) -> None:
        hv = self.topo.hypervisor_by_dpid(dpid)
        self.events.append(event, "hypervisors", None if hv is None else hv.name,
                           None if hv is None else self.hypervisor_json(hv), dpid)

    # --- read side --------------------------------------------------------------------------

    def barrier_sent(self, dpid: int, xid: int) -> None:
        sw = self.switches.get(dpid)
        if sw is not None:
            sw.barriers.add(xid)

    def barrier_replied(self, dpid: int, xid: int) -> None:
        sw = self.switches.get(dpid)
        if sw is not None and xid in sw.barriers:
            sw.barriers.discard(xid)
            if not sw.barriers and sw.synced:
                self._note_switch("switch_in_sync", dpid)
        self.confirmations.replied(dpid, xid)

    def responder_hits(self, dpid: int, packets: int, protocol: str = "arp") -> None:
        """The packet count of a switch's in-switch ARP (or ND: ``protocol`` "nd") responders, polled by the app."""
        self._responder_hits.setdefault(dpid, {})[protocol] = packets

    def answered_in_switch(self, dpid: int, protocol: str) -> int:
        return self._responder_hits.get(dpid, {}).get(protocol, 0)

    def in_sync(self, hv: Hypervisor) -> bool:
        """Connected, reconciled, and every batch sent to it confirmed by its barrier reply."""
        sw = self.switches.get(hv.dpid)
        return sw is not None and sw.synced and not sw.barriers

    def hypervisor_json(self, hv: Hypervisor) -> dict[str, Any]:
        sw = self.switches.get(hv.dpid)
        ofports = None if sw is None or "ports" in sw.awaiting else dict(sorted(sw.ofports.items()))
        out = {**hv.to_json(), "connected": self.connected(hv), "in_sync": self.in_sync(hv), "ofports": ofports,
               "master": self.master_of(hv.dpid), "ovsdb": self.ovsdb_status(hv)}
        if hv.managed:
            out["tunnels"] = self.tunnels(hv)
        return out

    def instances_json(self) -> list[dict[str, Any]]:
        """The live controller instances, each with the hypervisors whose switches it masters."""
        masters: dict[str, list[str]] = {name: [] for name in self.instances()}
        for hv in sorted(self.topo.hypervisors.values(), key=lambda h: h.name):
            master = self.master_of(hv.dpid)
            if master is not None:
                masters.setdefault(master, []).append(hv.name)
        return [{"id": name, "hypervisors": hvs} for name, hvs in sorted(masters.items())]

    def stats_json(self) -> dict[str, Any]:
        return {
            **{k: self.stats.get(k, 0) for k in STAT_COUNTERS},
            "hypervisors": len(self.topo.hypervisors),
            "hypervisors_connected": sum(self.connected(h) for h in self.topo.hypervisors.values()),
            "networks": len(self.topo.networks),
            "ports": len(self.topo.ports),
            "ports_located": sum(p.located for p in self.topo.ports.values()),
            "ports_duplicate": sum(p.duplicate is not None for p in self.topo.ports.values()),
            "flows_installed": sum(len(f) for sw in self.switches.values() for f in sw.flows.values()),
            "arp_answered_in_switch": sum(self.answered_in_switch(d, "arp") for d in self.switches),
        }


def _reportable(frame: bytes, version: int) -> bool:
    """An IP packet an ICMP error may be sent about: long enough to tell, and not itself an ICMP
    error (RFC 1122 section 3.2.2, RFC 4443 section 2.4 e); over IPv4 also not sent to a broadcast
    or multicast address, nor a later fragment. ("Packet too big" may go to IPv6 multicast senders.)"""
    ip = frame[14:]
    if version == 4:
        if len(ip) < 20:
            return False
        ihl = (ip[0] & 0x0F) * 4
        is_error = ip[9] == 1 and (len(ip) <= ihl or ip[ihl] in ICMP4_ERRORS)
        later_fragment = int.from_bytes(ip[6:8], "big") & 0x1FFF
        return not (frame[0] & 1 or ip[16] >= 224 or later_fragment or is_error)
    if len(ip) < 40:
        return False
    return not (ip[6] == 58 and (len(ip) <= 40 or ip[40] < 128))


def _asked(frame: Frame, data: bytes) -> str:
    """The packet-in reason of a frame from a port where it belongs: what it asks the controller."""
    if frame.arp_op is not None:
        return "arp"
    if frame.icmpv6_type is not None:
        return "nd"
    if frame.eth_type == ETH_TYPE_IPV4 and len(data) >= 38 and data[23] == 17:
        udp = 14 + (data[14] & 0x0F) * 4
        if data[udp + 2:udp + 4] == b"\x00\x43":  # to port 67
            return "dhcp"
    return "other"


_PUT = {Hypervisor: "put_hypervisor", Network: "put_network", Port: "put_port", Router: "put_router"}
_DELETE = {Hypervisor: "delete_hypervisor", Network: "delete_network", Port: "delete_port",
           Router: "delete_router"}


def _gateway_hosts(*routers: Router | None) -> set[str]:
    return {r.gateway.hypervisor for r in routers if r is not None and r.gateway is not None}


def _next_seq(port: Port) -> int:
    """The sequence number a report must carry to change the port's location: a located port's
    next location is one above its own; an unlocated port takes its first at its own."""
    return port.mobility_seq + int(port.located)


def _entities(want: Mapping[int, E], have: Mapping[int, E | None], adds: list[E], mods: list[E],
              deletes: list[int]) -> None:
    """Sort groups or meters into added, modified in place, and deleted."""
    for key, entity in want.items():
        if key not in have:
            adds.append(entity)
        elif have[key] != entity:
            mods.append(entity)
    deletes += [key for key in have if key not in want]


def _set_or_drop(table: dict[int, dict[int, Any]], key: int, value: dict[int, Any]) -> None:
    if value:
        table[key] = value
    else:
        table.pop(key, None)
