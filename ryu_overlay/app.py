"""The Ryu application: a thin adapter between Ryu's events and ``Controller``.

It decodes OpenFlow events into plain values, calls the controller, and sends what comes
back. ``OverlayApp.send`` is the only place in ryu_overlay that sends OpenFlow messages. It
also serves the REST API from an eventlet WSGI server in the same process.

Everything that touches the controller runs on the app's own event loop: OpenFlow events
arrive there, and REST requests and the counter poll post a ``Call`` event to it
(``worker.StatePath``). The store is written behind that loop (docs/architecture.md).
"""

from __future__ import annotations

import gc
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import eventlet
import eventlet.wsgi

from . import tls
from .auth import REQUEST_RATE, RequestLimiter, rest_tokens
from .cluster import Mastership
from .compat import app_base, framework_module, ofproto as ofp, parser
from .controller import Batches, Controller
from .etcdstore import EtcdStore, Event, is_etcd
from .metrics import Metrics
from .ofmsg import decode_group, decode_meter, family_counter_request, install_lazy_stats, role_request, wire
from .ovsdb import OvsdbManager, Provisioning
from .pipeline import Family
from .rest import RestApp
from .store import SqliteStore, Store, change_key
from .worker import StatePath, WriteBehindStore

ofp_event = framework_module("controller.ofp_event")
handler = framework_module("controller.handler")
hub = framework_module("lib.hub")
event = framework_module("controller.event")
cfg = framework_module("cfg")

COUNTER_POLL = 5.0  # seconds between reads of the in-switch ARP and ND responders' counters, and gateway next-hop ARPs
RESETTLE = 1.0  # seconds before an instance settles again a switch another instance took from it (_let_go)
COUNTED = {Family.ARP_RESPONDER: "arp", Family.ND_RESPONDER: "nd"}  # responder family -> protocol
MAIN, CONFIG, DEAD = handler.MAIN_DISPATCHER, handler.CONFIG_DISPATCHER, handler.DEAD_DISPATCHER
F = TypeVar("F", bound=Callable[..., Any])


def set_ev_cls(ev_cls: Any, dispatchers: Any = None) -> Callable[[F], F]:
    """Ryu's ``set_ev_cls``, typed: it registers a handler and returns it unchanged."""
    register: Callable[[F], F] = handler.set_ev_cls(ev_cls, dispatchers)
    return register

CLI_OPTS = [
    cfg.StrOpt("rest-host", default="127.0.0.1", help="address the REST API listens on (default 127.0.0.1)"),
    cfg.IntOpt("rest-port", default=8080, help="TCP port of the REST API (default 8080)"),
    cfg.StrOpt("db", default="./ryu-overlay.db",
               help="SQLite file holding the placement state, or etcd://HOST:PORT[,HOST:PORT...][/PREFIX] "
                    "for an etcd v3 cluster shared by several instances (docs/scale-out.md)"),
    cfg.StrOpt("instance-id", default=None,
               help="name of this controller instance (default: host name:OpenFlow port)"),
    cfg.IntOpt("lease-ttl", default=10,
               help="etcd only: seconds after an instance stops renewing its lease until its switches are "
                    "taken over (default 10)"),
    cfg.StrOpt("rest-token", default=None,
               help="bearer token every REST request must carry (default: $RYU_OVERLAY_REST_TOKEN, else none)"),
    cfg.StrOpt("ovsdb-listen", default=None,
               help="where hypervisors declared with \"ovsdb\": \"passive\" connect, e.g. ptcp:6640:0.0.0.0"),
    cfg.StrOpt("ovsdb-datapath-type", default=None, help="datapath type of the bridges it creates (netdev: userspace)"),
    cfg.StrOpt("rest-tokens", default=None,
               help='JSON file: token (or "sha256:<hex>" of it) -> {"role": "admin"} or {"tenant": NAME}'),
    cfg.FloatOpt("rest-rate", default=REQUEST_RATE,
                 help=f"REST requests per second per token, then 429 (default {REQUEST_RATE:g}; 0: no limit)"),
    cfg.StrOpt("rest-cert", default=None, help="serve REST over HTTPS with this certificate (PEM)"),
    cfg.StrOpt("rest-key", default=None, help="the private key of --rest-cert (PEM)"),
]

# The ryu-overlay launcher registers these as command-line options before Ryu parses its
# arguments. Plain ryu-manager has parsed them before it imports us, so there they are
# registered here as options of the configuration (--config-file, [DEFAULT] rest_port = ...)
# and of the environment (OS_DEFAULT__REST_PORT=...); registering one twice is a no-op.
cfg.CONF.register_opts(CLI_OPTS)


def _more(ev: Any) -> bool:
    return bool(ev.msg.flags & ofp.OFPMPF_REPLY_MORE)


class Call(event.EventBase):  # type: ignore[misc,name-defined]
    """A closure to run on the app's event loop, the one path that touches the controller."""

    def __init__(self, fn: Callable[[], None]) -> None:
        super().__init__()
        self.fn = fn


class OverlayApp(app_base()):  # type: ignore[misc]
    OFP_VERSIONS: ClassVar[list[int]] = [ofp.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tls.install()  # before Ryu's OpenFlow listener starts (every app is built before any starts)
        install_lazy_stats()
        port = getattr(cfg.CONF, "ofp_tcp_listen_port", None) or 6653
        self.instance_id: str = cfg.CONF.instance_id or f"{socket.gethostname()}:{port}"
        self.etcd = EtcdStore(cfg.CONF.db) if is_etcd(cfg.CONF.db) else None
        backing: Store = self.etcd if self.etcd is not None else SqliteStore(cfg.CONF.db)
        self.metrics = Metrics()
        self.store = WriteBehindStore(backing, on_commit=self.metrics.store_commit.observe)
        self.controller = Controller(self.store)
        self.datapaths: dict[int, Any] = {}
        self.mastership = Mastership(self.instance_id)
        self.roles: dict[int, bool] = {}  # dpid -> the role last requested (True: MASTER), several instances only
        self._claimed: dict[int, int] = {}  # dpid -> xid of the last MASTER role request sent
        self._confirmed: set[int] = set()  # the dpids whose switch has answered that request (ROLE_REPLY)
        self._unsettled: set[int] = set()  # switches let go to another instance, to settle again (_let_go)
        self._counter_requests: dict[tuple[int, int], str] = {}  # (dpid, xid) of the last poll -> protocol
        self._connected_at: dict[int, float] = {}
        self._recheck = False  # a _reassign is scheduled for the end of a grace period
        self.grace = float(max(1, cfg.CONF.lease_ttl))  # see _waiting
        self._assigned_over: frozenset[int] = frozenset()  # the declared switches of the last assignment
        if self.etcd is None:
            self.controller.master_of = lambda dpid: self.instance_id if dpid in self.controller.switches else None
            self.controller.instances = lambda: [self.instance_id]
        else:
            self.controller.master_of = self.mastership.master_of
            self.controller.instances = lambda: sorted(self.mastership.instances)
        self.path = StatePath(self.controller, self._post, self.send)
        tokens = rest_tokens(cfg.CONF.rest_token or os.environ.get("RYU_OVERLAY_REST_TOKEN") or None,
                             cfg.CONF.rest_tokens)
        limiter = RequestLimiter(cfg.CONF.rest_rate) if tokens is not None and cfg.CONF.rest_rate > 0 else None
        self.rest = RestApp(self.controller, self.send, run=self.path.call, metrics=self.metrics, tokens=tokens,
                            limiter=limiter)
        self.rest_address = (cfg.CONF.rest_host, cfg.CONF.rest_port)
        self.ovsdb = OvsdbManager(self._post, lambda *state: self.send(self.controller.ovsdb_state(*state)),
                                  Provisioning(datapath_type=cfg.CONF.ovsdb_datapath_type,
                                               of_port=getattr(cfg.CONF, "ofp_tcp_listen_port", None) or 6653),
                                  cfg.CONF.ovsdb_listen)
        self.controller.on_hypervisors = self.ovsdb.wanted
        self.controller.on_bfd_peers = self.ovsdb.bfd_peers
        self.controller.tell_hypervisors()
        # The controller holds millions of long-lived objects (flows, encoded messages); full
        # garbage collections over them stalled it for up to 0.8 s (docs/performance.md). What
        # was loaded is frozen out of collection, and collections run less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)

    def start(self) -> Any:
        thread = super().start()
        self.store.start()
        sock = eventlet.listen(self.rest_address)
        scheme = "http"
        if cfg.CONF.rest_cert or cfg.CONF.rest_key:
            sock = eventlet.wrap_ssl(sock, certfile=cfg.CONF.rest_cert, keyfile=cfg.CONF.rest_key, server_side=True)
            scheme = "https"
        self.logger.info("REST API on %s://%s:%d/v1/", scheme, *sock.getsockname()[:2])
        self.threads.append(hub.spawn(eventlet.wsgi.server, sock, self.rest, log_output=False))
        self.threads.append(hub.spawn(self._poll_counters))
        if self.etcd is not None:
            self.threads.append(hub.spawn(self.etcd.watch, self.etcd.revision + 1, self._watched,
                                          lambda: self._post(self._resync)))
            self.threads.append(hub.spawn(self._lease_loop))
            self._post(lambda: self._reassign(self.etcd.revision if self.etcd else 0))
        self.threads.append(hub.spawn(self.ovsdb.run, hub.sleep))
        return thread

    # --- several instances on etcd (docs/scale-out.md) -----------------------------------------

    def _watched(self, events: list[Event]) -> None:
        """From the watch's green thread: apply what another instance changed, on the state path."""
        self._post(lambda: self._remote(events))

    def _remote(self, events: list[Event]) -> None:
        assert self.etcd is not None
        changes, members = self.etcd.observe(events)
        self.send(self.controller.apply_remote(changes))
        if members or any(change_key(c)[0] == "hypervisors" for c in changes):
            self._reassign(events[-1].revision)

    def _resync(self) -> None:
        """The watch missed changes (etcd compacted them): reload everything and reconcile."""
        self.send(self.controller.reload())
        self._reassign(self.etcd.revision if self.etcd else 0)

    def _reassign(self, revision: int) -> None:
        """Take the role each connected switch should have in the current view: program the switches
        this instance masters (reconciled without a flush, as after a reconnection), leave the rest."""
        if self.etcd is None:
            return
        switches = [hv.dpid for hv in self.controller.topo.hypervisors.values()]
        self._assigned_over = frozenset(switches)
        self.mastership.update(self.etcd.instances, switches, revision, time.monotonic())
        mine = self.mastership.mine()
        for dpid in sorted(self.datapaths):
            self._settle(dpid, dpid in mine)

    def _settle(self, dpid: int, want: bool) -> None:
        """Take the role this instance's view gives it for one connected switch."""
        generation = self.mastership.generation
        if want and dpid not in self.controller.switches:
            if not self._waiting(dpid):
                self._take(dpid, generation)
        elif not want and self.roles.get(dpid) is not False:
            if self.roles.get(dpid):
                self.logger.info("leaving switch %016x to %s", dpid, self.mastership.master_of(dpid))
            self.roles[dpid] = False
            self.controller.switch_disconnected(dpid)
            self._send_one(dpid, [role_request(False, generation)])

    def _waiting(self, dpid: int) -> bool:
        """Whether to leave a switch this instance was given alone for now, because its planned master
        (another live instance) has not reported it yet: in a cold start every switch connects to
        every instance, and taking it first only to hand it over moments later doubles the work. The
        wait lasts until a lease TTL after the later of the switch's connection and the planned
        master's last report of a change: an instance busy connecting a fleet may take seconds to
        report, but while its reports keep changing it is still connecting. A switch whose bridge
        does not list its planned master is therefore taken one TTL after that one went quiet."""
        since = self._connected_at.get(dpid)
        awaited = self.mastership.awaited(dpid)
        if since is None or awaited is None:
            return False
        if time.monotonic() - max(since, self.mastership.changed_at.get(awaited, since)) >= self.grace:
            return False
        if not self._recheck:
            self._recheck = True
            hub.spawn_after(self.grace, self._post, self._recheck_grace)
        return True

    def _check_declared(self) -> None:
        """Hypervisors declared or removed through this instance's REST API change the assignment too
        (their echoes from the watch are skipped): reassign when the declared switches changed."""
        if frozenset(hv.dpid for hv in self.controller.topo.hypervisors.values()) != self._assigned_over:
            self._reassign(self.mastership.generation)

    def _recheck_grace(self) -> None:
        self._recheck = False
        self._reassign(self.mastership.generation)

    def _take(self, dpid: int, generation: int) -> None:
        """Claim MASTER and read the switch back (reconciled without a flush, as after a reconnection)."""
        self.logger.info("taking switch %016x as MASTER (generation %d)", dpid, generation)
        self.roles[dpid] = True
        self._confirmed.discard(dpid)
        claim = role_request(True, generation)
        self._send_one(dpid, [claim, *self.controller.switch_connected(dpid)])
        if claim.xid is not None:
            self._claimed[dpid] = claim.xid

    def _lease_loop(self) -> None:
        """Keep this instance alive in etcd (the lease is renewed by a ``LeaseKeeper`` thread) and publish
        the switches connected to it."""
        assert self.etcd is not None
        ttl = max(1, cfg.CONF.lease_ttl)
        keeper = self.etcd.lease_keeper(ttl).start()
        lease, published = None, None
        while True:
            try:
                if lease is not None and keeper.expired == lease:
                    self.logger.warning("the lease of instance %s had expired; registering again", self.instance_id)
                    lease = None
                if lease is None:
                    lease, published = self.etcd.grant(ttl), None
                    keeper.lease = lease
                connected = sorted(self.datapaths)  # once a round, not at each connection (O(S² log S) in a cold start)
                if connected != published:
                    record = {"id": self.instance_id, "switches": connected,
                              "rest": "http://{}:{}".format(*self.rest_address)}
                    try:
                        self.etcd.register(self.instance_id, record, lease)
                    except Exception:
                        lease = None  # perhaps expired while etcd was away: take a new one
                        raise
                    published = connected
                self._post(self._check_declared)
            except Exception as exc:  # etcd unreachable or without quorum: keep trying; the lease may survive
                self.logger.warning("could not renew instance %s in etcd: %s", self.instance_id, exc)
                hub.sleep(min(1.0, ttl / 3))
            hub.sleep(0.1)

    def _poll_counters(self) -> None:
        while True:
            hub.sleep(COUNTER_POLL)
            self._post(self._request_counters)
            self._post(self._resolve_next_hops)

    def _request_counters(self) -> None:
        """Ask each switch for its responders' packet counts; a reply is matched to its family by xid."""
        batches = {dpid: [family_counter_request(f) for f in COUNTED] for dpid in self.datapaths}
        self.send(batches)
        self._counter_requests = {(dpid, msg.xid): COUNTED[Family(msg.cookie >> 56)]
                                  for dpid, msgs in batches.items() for msg in msgs if msg.xid is not None}

    def _resolve_next_hops(self) -> None:
        self.send(self.controller.resolve_next_hops())

    def _post(self, fn: Callable[[], None]) -> None:
        self._send_event(Call(fn), None)

    @set_ev_cls(Call)
    def _call(self, ev: Call) -> None:
        ev.fn()

    def send(self, batches: Batches) -> None:
        """Send each switch its batch as one buffer; called only on the event loop, so batches never interleave.
        Switches the controller refused (their certificate names another hypervisor) are disconnected first."""
        for dpid in self.controller.take_refused():
            dp = self.datapaths.pop(dpid, None)
            if dp is not None:
                dp.close()
        for dpid, msgs in batches.items():
            dp = self.datapaths.get(dpid)
            if dp is None:
                continue
            if msgs:
                dp.send(b"".join(wire(msg, dp) for msg in msgs))
                last = None
                for msg in msgs:
                    if isinstance(msg, parser.OFPBarrierRequest):
                        self.controller.barrier_sent(dpid, msg.xid)
                        last = msg.xid
                if last is not None:
                    self.metrics.batch_sent(dpid, last)

    def _send_one(self, dpid: int, msgs: Iterable[Any]) -> None:
        self.send({dpid: list(msgs)})

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG)
    def _features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        if not self.controller.admit(dp.id, tls.common_name(dp.socket)):
            dp.close()
            return
        self.datapaths[dp.id] = dp
        if self.etcd is None:
            self._send_one(dp.id, self.controller.switch_connected(dp.id))
            return
        self.roles.pop(dp.id, None)
        self.controller.switch_disconnected(dp.id)
        self._connected_at[dp.id] = time.monotonic()
        self._settle(dp.id, self.mastership.master_of(dp.id) == self.instance_id)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD)
    def _gone(self, ev: Any) -> None:
        dp, dpid = ev.datapath, ev.datapath.id
        if dpid is not None and self.datapaths.get(dpid) is dp:
            del self.datapaths[dpid]
            self._connected_at.pop(dpid, None)
            self.roles.pop(dpid, None)
            self._claimed.pop(dpid, None)
            self._confirmed.discard(dpid)
            self.controller.switch_disconnected(dpid)
            self.metrics.switch_gone(dpid)

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN)
    def _aggregate(self, ev: Any) -> None:
        dpid = ev.msg.datapath.id
        protocol = self._counter_requests.pop((dpid, ev.msg.xid), None)
        if protocol is not None:
            self.controller.responder_hits(dpid, ev.msg.body.packet_count, protocol)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN)
    def _barrier_reply(self, ev: Any) -> None:
        self.controller.barrier_replied(ev.msg.datapath.id, ev.msg.xid)
        self.metrics.barrier_replied(ev.msg.datapath.id, ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN)
    def _port_desc(self, ev: Any) -> None:
        ports = {p.name.decode(errors="replace"): p.port_no for p in ev.msg.body if p.port_no <= ofp.OFPP_MAX}
        self.send(self.controller.ports_reply(ev.msg.datapath.id, ports, _more(ev)))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN)
    def _flow_stats(self, ev: Any) -> None:
        cookies = [s.cookie for s in ev.msg.body]
        self.send(self.controller.flows_reply(ev.msg.datapath.id, cookies, _more(ev)))

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN)
    def _group_desc(self, ev: Any) -> None:
        groups = [(s.group_id, decode_group(s)) for s in ev.msg.body]
        self.send(self.controller.groups_reply(ev.msg.datapath.id, groups, _more(ev)))

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN)
    def _meter_config(self, ev: Any) -> None:
        meters = [(s.meter_id, decode_meter(s)) for s in ev.msg.body]
        self.send(self.controller.meters_reply(ev.msg.datapath.id, meters, _more(ev)))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN)
    def _packet_in(self, ev: Any) -> None:
        msg = ev.msg
        self.send(self.controller.packet_in(msg.datapath.id, msg.match["in_port"], bytes(msg.data)))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN)
    def _port_status(self, ev: Any) -> None:
        desc = ev.msg.desc
        gone = ev.msg.reason == ofp.OFPPR_DELETE or desc.port_no > ofp.OFPP_MAX
        name = desc.name.decode(errors="replace")
        self.send(self.controller.port_status(ev.msg.datapath.id, name, None if gone else desc.port_no))

    def _refused_as_slave(self, dpid: int) -> None:
        """The switch refused a change because another instance is its MASTER. A switch answers in
        order, so an error that comes before the switch confirmed this instance's last claim (its
        ROLE_REPLY) is about a message sent before that claim: old news, one per refused message
        (flow-adds all carry xid 0, so xids cannot tell). One that comes after means another instance
        claimed MASTER since: stop programming the switch and settle it again a moment later."""
        if not self.roles.get(dpid) or dpid not in self._confirmed:
            return
        self._let_go(dpid)

    def _let_go(self, dpid: int) -> None:
        """Stop programming a switch another instance has claimed, and settle it again ``RESETTLE`` later.

        The other instance acted on a view at least as new as this one's. By then this instance has
        that view too, or a newer one, and takes the role it gives; claiming back at once instead
        made two instances whose views differed for a moment take the switch from each other, each
        time reading it back and programming it again (hundreds of thousands of refused messages in
        a 10,000-switch cold start)."""
        self._confirmed.discard(dpid)
        self.roles[dpid] = False
        self.controller.switch_disconnected(dpid)
        self._unsettled.add(dpid)
        if len(self._unsettled) == 1:
            hub.spawn_after(RESETTLE, self._post, self._settle_unsettled)

    def _settle_unsettled(self) -> None:
        dpids, self._unsettled = self._unsettled, set()
        for dpid in sorted(dpids):
            if dpid in self.datapaths and not self.roles.get(dpid):
                self._settle(dpid, self.mastership.master_of(dpid) == self.instance_id)

    @set_ev_cls(ofp_event.EventOFPRoleReply, [CONFIG, MAIN])
    def _role_reply(self, ev: Any) -> None:
        dpid = ev.msg.datapath.id
        if ev.msg.xid == self._claimed.get(dpid) and ev.msg.role == ofp.OFPCR_ROLE_MASTER:
            self._confirmed.add(dpid)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN)
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        text = f"type={msg.type} code={msg.code} data={bytes(msg.data)[:64].hex()}"
        if msg.type == ofp.OFPET_ROLE_REQUEST_FAILED:
            # Another instance acted on a newer view first (or its SLAVE request carried a newer one).
            self.logger.warning("switch %016x refused our role request (%s)", msg.datapath.id, text)
            self._let_go(msg.datapath.id)
            return
        if msg.type == ofp.OFPET_BAD_REQUEST and msg.code == ofp.OFPBRC_IS_SLAVE and self.etcd is not None:
            self._refused_as_slave(msg.datapath.id)
            return
        self._send_one(msg.datapath.id, self.controller.switch_error(msg.datapath.id, text))
