"""A multi-hypervisor, multi-tenant placement used by unit and simulator tests.

Two tenants deliberately reuse the same IP addresses and MAC addresses: only the VNI tells
their frames apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from scapy.layers.l2 import ARP, Ether

from ryu_overlay.compat import parser
from ryu_overlay.controller import Batches, Controller
from ryu_overlay.store import SqliteStore

TUNNEL_OFPORT = 100
HYPERVISORS = {"hv1": (1, "198.18.0.1"), "hv2": (2, "198.18.0.2"), "hv3": (3, "198.18.0.3"), "hv4": (4, "198.18.0.4")}
NETWORKS = {"blue": (5001, "acme"), "red": (5002, "globex")}
# port name -> network, mac, ips, hypervisor, interface, ofport
PORTS: dict[str, tuple[str, str, list[str], str, str, int]] = {
    "a1": ("blue", "02:aa:00:00:00:01", ["10.1.0.1", "fd00:1::1"], "hv1", "tapA1", 1),
    "a2": ("blue", "02:aa:00:00:00:02", ["10.1.0.2", "fd00:1::2"], "hv1", "tapA2", 2),
    "a3": ("blue", "02:aa:00:00:00:03", ["10.1.0.3", "fd00:1::3"], "hv2", "tapA3", 1),
    "a4": ("blue", "02:aa:00:00:00:04", ["10.1.0.4", "fd00:1::4"], "hv3", "tapA4", 1),
    # tenant globex reuses acme's addresses
    "r1": ("red", "02:aa:00:00:00:01", ["10.1.0.1", "fd00:1::1"], "hv1", "tapR1", 3),
    "r2": ("red", "02:aa:00:00:00:02", ["10.1.0.2", "fd00:1::2"], "hv2", "tapR2", 2),
}


class Clock:
    """A clock the test moves by hand (``clock.now += 5``), for ``build(clock=...)``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(clock: Callable[[], float] | None = None, path: str = ":memory:") -> Controller:
    c = Controller(SqliteStore(path), **({"clock": clock, "wall_clock": clock} if clock else {}))
    for name, (dpid, ip) in HYPERVISORS.items():
        c.put_hypervisor(name, {"dpid": dpid, "tunnel_ip": ip})
    for name, (vni, tenant) in NETWORKS.items():
        c.put_network(name, {"vni": vni, "tenant": tenant, "subnets": ["10.1.0.0/24", "fd00:1::/64"]})
    for name, (net, mac, ips, hv, iface, _) in PORTS.items():
        c.put_port(name, {"network": net, "mac": mac, "ips": ips, "hypervisor": hv, "interface": iface})
    return c


def ofports(hv: str) -> dict[str, int]:
    ports = {iface: no for (_, _, _, h, iface, no) in PORTS.values() if h == hv}
    return {**ports, "vxlan0": TUNNEL_OFPORT}


def connect(c: Controller, hv: str, ports: dict[str, int] | None = None, cookies: Sequence[int] = (),
            groups: Sequence[tuple[int, Any]] = (), meters: Sequence[tuple[int, Any]] = ()) -> list[Any]:
    """Run the connect handshake of ``hv``'s switch; return what the controller sends it."""
    return handshake(c, c.topo.hypervisors[hv].dpid, ofports(hv) if ports is None else ports, cookies, groups, meters)


def handshake(c: Controller, dpid: int, ports: dict[str, int], cookies: Sequence[int] = (),
              groups: Sequence[tuple[int, Any]] = (), meters: Sequence[tuple[int, Any]] = ()) -> list[Any]:
    """A switch ``dpid`` (known to the controller or not) connects reporting ``ports`` and holding
    ``cookies``, ``groups`` and ``meters``; return what the controller sends it."""
    c.switch_connected(dpid)
    out: Batches = {}
    for step in (c.ports_reply(dpid, ports, False),
                 c.flows_reply(dpid, list(cookies), False),
                 c.groups_reply(dpid, list(groups), False),
                 c.meters_reply(dpid, list(meters), False)):
        for k, v in step.items():
            out.setdefault(k, []).extend(v)
    return out.get(dpid, [])


def kind(msg: Any) -> str:
    """The Ryu message class a message is, or derives from (``FlowAdd`` is an ``OFPFlowMod``)."""
    return next(k.__name__ for k in type(msg).__mro__ if k.__module__ == parser.__name__)


def garp(mac: str, ip: str) -> bytes:
    """A gratuitous ARP request from ``mac`` announcing ``ip``, as a VM sends after it moves."""
    return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00",
                                                           pdst=ip))
