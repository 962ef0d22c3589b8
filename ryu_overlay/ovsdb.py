"""Hypervisors managed over OVSDB, with Open vSwitch's own Python IDL (the ``ovs`` package).

One green thread (``OvsdbManager.run``) owns every OVSDB session: it connects out to the
hypervisors declared with ``"ovsdb": "tcp:IP:PORT"``, accepts the manager connections of those
declared ``"passive"`` (``ovs-vsctl set-manager tcp:CONTROLLER:6640``) and identifies each by a
bridge's datapath id or the ``system-id`` in ``external_ids``. It never touches the controller:
what it reads of a database (``OvsdbView``) is posted to the app's event loop, the one state
path (docs/architecture.md), and ``Controller.ovsdb_state`` does the rest.

It also provisions each hypervisor (``provision``): the integration bridge with
``fail_mode=secure``, OpenFlow 1.3, the datapath id and the controller targets, and the tunnel
port. Every row it creates carries ``external_ids:ryu-overlay=owned``; it changes or removes
only those, plus the integration bridge's four settings. docs/hypervisors.md has the rules.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .flows import BFD_PORT_RE, bfd_port
from .model import OVSDB_PASSIVE, Hypervisor

LOG = logging.getLogger("ryu_overlay.ovsdb")
VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
OWNER_KEY, OWNER_VALUE = "ryu-overlay", "owned"
POLL = 0.05  # seconds between rounds over the sessions
MAX_BACKOFF = 1000  # ms: a bridge reconnects to the controller within a second
# BFD every 100 ms each way, down after 3 missed (OVS's default multiplier): about 0.3 s to detect.
BFD_OPTIONS = {"enable": "true", "min_rx": "100", "min_tx": "100"}
COLUMNS: dict[str, list[str]] = {
    "Open_vSwitch": ["bridges", "external_ids"],
    "Bridge": ["name", "ports", "controller", "fail_mode", "protocols", "datapath_type", "other_config",
               "external_ids", "datapath_id"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "options", "external_ids", "ofport", "bfd", "bfd_status"],
    "Controller": ["target", "max_backoff", "external_ids"],
}


@dataclass(frozen=True)
class OvsdbView:
    """What the controller needs of one hypervisor's database.

    ``iface_ids`` maps each interface of the integration bridge that has an
    ``external_ids:iface-id`` to it, as libvirt, os-vif and OVN plug a VM. ``bfd`` maps each
    BFD port it made (``flows.bfd_port``) to its session state (``up``, ``down``, ``init``...).
    """

    system_id: str | None = None
    dpids: frozenset[int] = frozenset()
    iface_ids: Mapping[str, str] = field(default_factory=dict)
    bfd: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Provisioning:
    """How managed bridges are built: their name, datapath type and OpenFlow controller port."""

    bridge: str = "br-int"
    datapath_type: str | None = None
    of_port: int = 6653
    controllers: tuple[str, ...] = ()
    """Targets to give every bridge; empty: ``tcp:<our address on its OVSDB connection>:<of_port>``."""


def _opt(value: Any) -> Any:
    """An optional OVSDB column's value as the IDL gives it (a list of at most one), or None."""
    return value[0] if isinstance(value, list) and value else (None if isinstance(value, list) else value)


def _owned(row: Any) -> bool:
    return bool(row.external_ids.get(OWNER_KEY) == OWNER_VALUE)


def _root(idl: Any) -> Any:
    return next(iter(idl.tables["Open_vSwitch"].rows.values()), None)


def _bridge(idl: Any, name: str) -> Any:
    return next((b for b in idl.tables["Bridge"].rows.values() if b.name == name), None)


def view_of(idl: Any, bridge: str) -> OvsdbView:
    root = _root(idl)
    system_id = None if root is None else root.external_ids.get("system-id")
    dpids = set()
    for br in idl.tables["Bridge"].rows.values():
        dpid = _opt(br.datapath_id)
        if dpid:
            dpids.add(int(dpid, 16))
    iface_ids: dict[str, str] = {}
    bfd: dict[str, str] = {}
    br = _bridge(idl, bridge)
    for port in [] if br is None else br.ports:
        for iface in port.interfaces:
            iface_id = iface.external_ids.get("iface-id")
            if iface_id:
                iface_ids[iface.name] = iface_id
            if BFD_PORT_RE.fullmatch(iface.name) and _owned(iface):
                bfd[iface.name] = iface.bfd_status.get("state", "down")
    return OvsdbView(system_id, frozenset(dpids), iface_ids, bfd)


def tunnel_options(hv: Hypervisor) -> dict[str, str]:
    """A flow-based tunnel port: the VNI is the flow's ``tun_id`` (VXLAN/Geneve VNI, the GRE key)."""
    return {"remote_ip": "flow", "key": "flow", "local_ip": str(hv.tunnel_ip)}


def provision(idl: Any, txn: Any, hv: Hypervisor, prov: Provisioning, targets: Iterable[str],
              peers: Iterable[tuple[str, str]] = ()) -> bool:
    """Add to ``txn`` whatever ``hv``'s database lacks; False if it lacks nothing.

    Idempotent: run against a database that has it all, it changes nothing. Rows it creates
    carry ``OWNER_KEY``; only those are ever changed or removed (a tunnel port no longer wanted,
    a controller target no longer given), plus the integration bridge's settings.
    """
    root = _root(idl)
    if root is None:
        return False
    owner = {OWNER_KEY: OWNER_VALUE}
    br = _bridge(idl, prov.bridge)
    new = changed = br is None
    if br is None:
        iface = txn.insert(idl.tables["Interface"])
        iface.name, iface.type, iface.external_ids = prov.bridge, "internal", owner
        port = txn.insert(idl.tables["Port"])
        port.name, port.interfaces, port.external_ids = prov.bridge, [iface], owner
        br = txn.insert(idl.tables["Bridge"])
        br.name, br.ports, br.external_ids = prov.bridge, [port], owner
        root.addvalue("bridges", br.uuid)
    settings: dict[str, Any] = {"fail_mode": ["secure"], "protocols": ["OpenFlow13"]}
    if prov.datapath_type:
        settings["datapath_type"] = prov.datapath_type
    for column, value in settings.items():
        if changed or getattr(br, column) != value:
            setattr(br, column, value)
            changed = True
    dpid = f"{hv.dpid:016x}"
    other = {} if new else dict(br.other_config)
    if other.get("datapath-id") != dpid:
        br.other_config = {**other, "datapath-id": dpid}
        changed = True
    changed |= _controllers(idl, txn, br, list(targets), new)
    changed |= _tunnel_ports(idl, txn, br, hv, tunnel_ports(hv, peers))
    return changed


def _controllers(idl: Any, txn: Any, br: Any, targets: list[str], fresh: bool) -> bool:
    existing = [] if fresh else list(br.controller)
    keep = [c for c in existing if not _owned(c) or c.target in targets]
    have = {c.target for c in keep}
    new = []
    for target in targets:
        if target not in have:
            row = txn.insert(idl.tables["Controller"])
            row.target, row.max_backoff, row.external_ids = target, [MAX_BACKOFF], {OWNER_KEY: OWNER_VALUE}
            new.append(row)
    if new or len(keep) != len(existing):
        br.controller = keep + new
        return True
    return False


@dataclass(frozen=True)
class TunnelPort:
    name: str
    type: str
    options: Mapping[str, str]
    bfd: Mapping[str, str] = field(default_factory=dict)


def tunnel_ports(hv: Hypervisor, peers: Iterable[tuple[str, str]]) -> list[TunnelPort]:
    """The flow-based port that carries the traffic, and one BFD port per peer (name, tunnel IP).

    A BFD port has the peer's address and key 0; traffic carries a VNI (never 0) as its key, so
    Open vSwitch hands it to the flow-based port and only BFD reaches these: the pipeline is the
    same with or without them.
    """
    ports = [TunnelPort(hv.tunnel_port, hv.tunnel_type, tunnel_options(hv))]
    for peer, ip in sorted(peers):
        ports.append(TunnelPort(bfd_port(peer), hv.tunnel_type, {"remote_ip": ip, "local_ip": str(hv.tunnel_ip)},
                                BFD_OPTIONS))
    return ports


def _tunnel_ports(idl: Any, txn: Any, br: Any, hv: Hypervisor, wanted: list[TunnelPort]) -> bool:
    """Make ``wanted`` on ``br``; owned tunnel ports no longer wanted go; others' ports are left alone."""
    names = {w.name for w in wanted}
    ports = list(br.ports)
    stale = [p for p in ports if _owned(p) and p.name != br.name and p.name not in names]
    changed = bool(stale)
    ports = [p for p in ports if p not in stale]
    for want in wanted:
        port = next((p for p in ports if p.name == want.name), None)
        if port is None:
            iface = txn.insert(idl.tables["Interface"])
            iface.name, iface.type, iface.options = want.name, want.type, dict(want.options)
            iface.bfd, iface.external_ids = dict(want.bfd), {OWNER_KEY: OWNER_VALUE}
            port = txn.insert(idl.tables["Port"])
            port.name, port.interfaces, port.external_ids = want.name, [iface], {OWNER_KEY: OWNER_VALUE}
            ports.append(port)
            changed = True
        elif _owned(port):
            for iface in port.interfaces:
                if (iface.type, dict(iface.options), dict(iface.bfd)) != (want.type, dict(want.options),
                                                                          dict(want.bfd)):
                    iface.type, iface.options, iface.bfd = want.type, dict(want.options), dict(want.bfd)
                    changed = True
        else:
            LOG.warning("port %s on %s was not made by ryu_overlay; left as it is", want.name, hv.name)
    if changed:
        br.ports = ports
    return changed


class Session:
    """One hypervisor's OVSDB connection, through an ``ovs.db.idl.Idl``.

    ``hypervisor`` is None for a passive connection not identified yet.
    """

    def __init__(self, idl: Any, hypervisor: str | None, peer: str) -> None:
        self.idl = idl
        self.hypervisor = hypervisor
        self.peer = peer
        self.view: OvsdbView | None = None
        self.txn: Any = None
        self.connected = False
        self.bridge = "br-int"

    @classmethod
    def connect(cls, remote: str, hypervisor: str) -> Session:
        import ovs.db.idl

        return cls(ovs.db.idl.Idl(remote, _schema()), hypervisor, remote)

    @classmethod
    def accepted(cls, stream: Any) -> Session:
        """A connection the hypervisor opened to our manager port; it is not re-opened if it drops."""
        import ovs.db.idl
        import ovs.jsonrpc
        import ovs.reconnect
        import ovs.timeval

        idl = ovs.db.idl.Idl(stream.name, _schema())
        idl._session.close()
        now = ovs.timeval.msec()
        fsm = ovs.reconnect.Reconnect(now)
        fsm.set_name(stream.name)
        fsm.enable(now)
        fsm.set_passive(True, now)
        fsm.set_max_tries(0)
        fsm.connected(now)
        # The IDL opens its own sessions; an accepted stream is handed to it the way
        # ovs.jsonrpc.Session wraps one (its open_unreliably leaves out the connection).
        idl._session = ovs.jsonrpc.Session(fsm, ovs.jsonrpc.Connection(stream), [stream.name])
        return cls(idl, None, stream.name)

    @property
    def alive(self) -> bool:
        return bool(self.idl._session.is_alive())

    def local_address(self) -> str | None:
        rpc = self.idl._session.rpc
        sock = None if rpc is None else getattr(rpc.stream, "socket", None)
        try:
            host = None if sock is None else sock.getsockname()[0]
        except OSError:
            return None
        return None if host is None else (f"[{host}]" if ":" in host else host)

    def run(self) -> bool:
        """Process what the database sent; True if the view or the connection state changed."""
        self.idl.run()
        self.run_txn()
        ready = bool(self.idl._session.is_connected()) and _root(self.idl) is not None
        changed = ready != self.connected
        self.connected = ready
        if ready:
            view = view_of(self.idl, self.bridge)
            changed |= view != self.view
            self.view = view
        return changed

    def provision(self, hv: Hypervisor, prov: Provisioning, peers: Iterable[tuple[str, str]] = ()) -> None:
        """Start a transaction that brings the database to what ``hv`` needs, unless one is under way."""
        import ovs.db.idl

        if self.txn is not None or not self.connected or _root(self.idl) is None:
            return
        address = self.local_address()
        targets = prov.controllers or ((f"tcp:{address}:{prov.of_port}",) if address else ())
        txn = ovs.db.idl.Transaction(self.idl)
        if provision(self.idl, txn, hv, prov, targets, peers):
            txn.add_comment(f"ryu_overlay: provision {hv.name}")
            self.txn = txn
            self.run_txn()
        else:
            txn.abort()

    def run_txn(self) -> None:
        import ovs.db.idl

        Txn = ovs.db.idl.Transaction
        if self.txn is None:
            return
        status = self.txn.commit()
        if status == Txn.INCOMPLETE:
            return
        if status == Txn.TRY_AGAIN:
            LOG.debug("provisioning %s: the database changed meanwhile; trying again", self.hypervisor)
        elif status not in (Txn.SUCCESS, Txn.UNCHANGED):
            LOG.warning("provisioning %s: %s %s", self.hypervisor, status, self.txn.get_error())
        self.txn = None

    def close(self) -> None:
        self.idl.close()


def _schema() -> Any:
    import ovs.db.idl

    helper = ovs.db.idl.SchemaHelper(location=VSWITCH_SCHEMA)
    for table, columns in COLUMNS.items():
        helper.register_columns(table, columns)
    return helper


def listener(spec: str) -> socket.socket:
    """A non-blocking listening socket for ``ptcp:PORT[:IP]``, Open vSwitch's syntax (IP: all of IPv4 if left out)."""
    match = re.fullmatch(r"ptcp:([0-9]{1,5})(?::(\[[0-9a-fA-F:.]+\]|[0-9.]+))?", spec)
    if match is None:
        raise ValueError(f"OVSDB listen address {spec!r} is not ptcp:PORT[:IP]")
    host = (match.group(2) or "0.0.0.0").strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(match.group(1))))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def identify(view: OvsdbView, candidates: Iterable[Hypervisor]) -> Hypervisor | None:
    """The passive hypervisor a manager connection belongs to: by a bridge's datapath id, else by
    ``system-id`` equal to the hypervisor's name."""
    candidates = [hv for hv in candidates if hv.ovsdb == OVSDB_PASSIVE]
    by_dpid = [hv for hv in candidates if hv.dpid in view.dpids]
    if by_dpid:
        return by_dpid[0]
    return next((hv for hv in candidates if view.system_id is not None and hv.name == view.system_id), None)


class OvsdbManager:
    """Owns the OVSDB sessions; posts what they read to the state path (``post``).

    ``report(name, view, connected)`` runs on the state path and returns what to send; the
    controller calls ``wanted`` there (``Controller.on_hypervisors``) with every hypervisor,
    so the manager knows which to manage without reading the controller from its own thread.
    """

    def __init__(self, post: Callable[[Callable[[], None]], None],
                 report: Callable[[str, OvsdbView | None, bool], None], prov: Provisioning,
                 listen: str | None = None) -> None:
        self.post = post
        self.report = report
        self.prov = prov
        self.listen = listen
        self.hypervisors: dict[str, Hypervisor] = {}
        self.peers: dict[str, tuple[tuple[str, str], ...]] = {}
        self.sessions: dict[str, Session] = {}
        self.pending: list[Session] = []
        self._listener: socket.socket | None = None

    def wanted(self, hypervisors: Iterable[Hypervisor]) -> None:
        self.hypervisors = {hv.name: hv for hv in hypervisors if hv.managed}

    def bfd_peers(self, hypervisor: str, peers: Iterable[tuple[str, str]]) -> None:
        """The peers (name, tunnel IP) ``hypervisor`` runs BFD with (``Controller.on_bfd_peers``)."""
        self.peers = {**self.peers, hypervisor: tuple(sorted(peers))}

    def run(self, sleep: Callable[[float], None]) -> None:
        if self.listen:
            self._listener = listener(self.listen)
            LOG.info("OVSDB manager connections on %s", self.listen)
        while True:
            try:
                self.step()
            except Exception:  # one bad session or database must not stop the others
                LOG.exception("OVSDB manager step failed")
            sleep(POLL)

    def step(self) -> None:
        self._accept()
        hvs = self.hypervisors
        for name, session in list(self.sessions.items()):
            hv = hvs.get(name)
            if hv is None or (hv.ovsdb != OVSDB_PASSIVE and hv.ovsdb != session.peer):
                self._drop(name, session)
        for name, hv in hvs.items():
            if name not in self.sessions and hv.ovsdb not in (None, OVSDB_PASSIVE):
                self.sessions[name] = Session.connect(hv.ovsdb, name)
        for session in list(self.pending):
            session.bridge = self.prov.bridge
            self._identify(session)
        for name, session in list(self.sessions.items()):
            if not session.alive:
                self._drop(name, session)
                continue
            session.bridge = self.prov.bridge
            if session.run():
                self._report(name, session)
            if session.connected and name in hvs and name in self.peers:
                session.provision(hvs[name], self.prov, self.peers[name])

    def _report(self, name: str, session: Session) -> None:
        view, connected = session.view, session.connected
        self.post(lambda: self.report(name, view, connected))

    def _drop(self, name: str, session: Session) -> None:
        del self.sessions[name]
        session.close()
        self.post(lambda: self.report(name, None, False))

    def _accept(self) -> None:
        if self._listener is None:
            return
        import ovs.stream

        while True:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            host = f"[{address[0]}]" if ":" in address[0] else address[0]
            stream = ovs.stream.Stream(sock, f"tcp:{host}:{address[1]}", 0)
            LOG.info("OVSDB manager connection from %s", stream.name)
            self.pending.append(Session.accepted(stream))

    def _identify(self, session: Session) -> None:
        session.run()
        if not session.alive:
            self.pending.remove(session)
            session.close()
            return
        if session.view is None:
            return
        hv = identify(session.view, self.hypervisors.values())
        if hv is None:
            return
        self.pending.remove(session)
        old = self.sessions.pop(hv.name, None)
        if old is not None:
            old.close()
        session.hypervisor = hv.name
        self.sessions[hv.name] = session
        LOG.info("OVSDB manager connection %s is hypervisor %s", session.peer, hv.name)
        self._report(hv.name, session)
