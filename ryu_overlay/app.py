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
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import eventlet
import eventlet.wsgi

from . import tls
from .auth import REQUEST_RATE, RequestLimiter, rest_tokens
from .compat import app_base, framework_module, ofproto as ofp, parser
from .controller import Batches, Controller
from .ofmsg import decode_group, decode_meter, family_counter_request, wire
from .pipeline import Family
from .rest import RestApp
from .store import SqliteStore
from .worker import StatePath, WriteBehindStore

ofp_event = framework_module("controller.ofp_event")
handler = framework_module("controller.handler")
hub = framework_module("lib.hub")
event = framework_module("controller.event")
cfg = framework_module("cfg")

COUNTER_POLL = 5.0  # seconds between reads of the in-switch ARP responders' counters
MAIN, CONFIG, DEAD = handler.MAIN_DISPATCHER, handler.CONFIG_DISPATCHER, handler.DEAD_DISPATCHER
F = TypeVar("F", bound=Callable[..., Any])


def set_ev_cls(ev_cls: Any, dispatchers: Any = None) -> Callable[[F], F]:
    """Ryu's ``set_ev_cls``, typed: it registers a handler and returns it unchanged."""
    register: Callable[[F], F] = handler.set_ev_cls(ev_cls, dispatchers)
    return register

CLI_OPTS = [
    cfg.StrOpt("rest-host", default="127.0.0.1", help="address the REST API listens on (default 127.0.0.1)"),
    cfg.IntOpt("rest-port", default=8080, help="TCP port of the REST API (default 8080)"),
    cfg.StrOpt("db", default="./ryu-overlay.db", help="SQLite file holding the placement state"),
    cfg.StrOpt("rest-token", default=None,
               help="bearer token every REST request must carry (default: $RYU_OVERLAY_REST_TOKEN, else none)"),
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
        self.store = WriteBehindStore(SqliteStore(cfg.CONF.db))
        self.controller = Controller(self.store)
        self.datapaths: dict[int, Any] = {}
        self.path = StatePath(self.controller, self._post, self.send)
        tokens = rest_tokens(cfg.CONF.rest_token or os.environ.get("RYU_OVERLAY_REST_TOKEN") or None,
                             cfg.CONF.rest_tokens)
        limiter = RequestLimiter(cfg.CONF.rest_rate) if tokens is not None and cfg.CONF.rest_rate > 0 else None
        self.rest = RestApp(self.controller, self.send, run=self.path.call, tokens=tokens, limiter=limiter)
        self.rest_address = (cfg.CONF.rest_host, cfg.CONF.rest_port)
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
        return thread

    def _poll_counters(self) -> None:
        while True:
            hub.sleep(COUNTER_POLL)
            self._post(self._request_counters)

    def _request_counters(self) -> None:
        self.send({dpid: [family_counter_request(Family.ARP_RESPONDER)] for dpid in self.datapaths})

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
                for msg in msgs:
                    if isinstance(msg, parser.OFPBarrierRequest):
                        self.controller.barrier_sent(dpid, msg.xid)

    def _send_one(self, dpid: int, msgs: Iterable[Any]) -> None:
        self.send({dpid: list(msgs)})

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG)
    def _features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        if not self.controller.admit(dp.id, tls.common_name(dp.socket)):
            dp.close()
            return
        self.datapaths[dp.id] = dp
        self._send_one(dp.id, self.controller.switch_connected(dp.id))

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD)
    def _gone(self, ev: Any) -> None:
        dp, dpid = ev.datapath, ev.datapath.id
        if dpid is not None and self.datapaths.get(dpid) is dp:
            del self.datapaths[dpid]
            self.controller.switch_disconnected(dpid)

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN)
    def _aggregate(self, ev: Any) -> None:
        self.controller.responder_hits(ev.msg.datapath.id, ev.msg.body.packet_count)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN)
    def _barrier_reply(self, ev: Any) -> None:
        self.controller.barrier_replied(ev.msg.datapath.id, ev.msg.xid)

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

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN)
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        text = f"type={msg.type} code={msg.code} data={bytes(msg.data)[:64].hex()}"
        self._send_one(msg.datapath.id, self.controller.switch_error(msg.datapath.id, text))
