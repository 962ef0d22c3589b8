"""A routed VXLAN overlay in Mininet: hypervisors with their own Open vSwitch, VMs, leaf/spine routers.

Used by mininet/demo.py, cli.py and experiments.py, and by the Mininet integration test.
Built with Mininet's Python API (``Topo`` + ``Mininet(topo=..., controller=None)``, no Mininet
switches: hosts and links only). See docs/experiments.md.

* **Pods.** Pod ``p`` is the subnet 198.18.<p>.0/24: its hypervisors ``p<p>h<i>`` hold
  198.18.<p>.<i> (on ``br-phy``), its leaf router ``leaf<p>`` bridges its downlinks and routes
  from 198.18.<p>.254.
* **Spines.** One or two spine routers ``spine<s>``; leaf ``p`` reaches spine ``s`` over the /30
  198.18.<200+s>.<4p>; leaves spread the other pods over the spines (ECMP with two), so every
  tunnel between pods crosses three IP hops.
* **Hypervisors** are Mininet hosts whose ``config()`` starts their own ``ovsdb-server`` and
  ``ovs-vswitchd`` (``ryu_overlay.testing.netns_testbed.OvsInstance``) in their namespace, which is given a
  name with ``ip netns attach``. ``br-phy`` holds the underlay link ``eth0``; ``br-int`` holds
  ``vxlan0`` and the VM taps, with the controller reached over a management link ``mgmt`` to
  the root namespace (198.19.<k>.0/24, /30 per hypervisor).
* **VMs** ``t<t>v<v>`` are Mininet hosts linked to their hypervisor (``eth0`` there, ``tapt<t>v<v>``
  on the hypervisor). Every tenant reuses the same MACs and addresses: VM ``v`` is
  02:00:00:00:00:<v>, 10.0.0.<v>/24 and fd00::<v>/64.
* **Layer 3** (``Spec.l3``, on by default): the tenant ``routed`` has two networks, ``rblue``
  (10.1.0.0/24, fd00:1::/64) and ``rgreen`` (10.2.0.0/24, fd00:2::/64), joined by the router
  ``rt``; its VMs (``ROUTED_VMS``: ``rblue1``, ``rgreen1``, ``rgreen2``) have default routes via
  the router. They are kept apart from the flat tenants' VMs (``routedinfo``, not ``vminfo``), so
  the flat-tenant experiments see what they always saw. The ``outside`` host (198.51.100.1/24,
  its own namespace) sits behind the last hypervisor's uplink ``uplink0``, an ordinary port of
  its ``br-int`` (the gateway's ``interface`` in docs/rest.md).

Every name that leaves a namespace (netns names, root-side links) carries a per-run prefix, so
concurrent runs never collide. ``OverlayNet.close()`` stops what it started by process id and
deletes what it created by name, also after a failure or Ctrl-C; it never cleans up by name
patterns across the machine (no ``mn -c``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import itertools
import os
import random
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mininet.net import Mininet
from mininet.node import Host, Node
from mininet.topo import Topo

from ..hypervisor import prepare_hypervisor_commands, prepare_underlay_commands
from .controller_proc import ControllerProcess
from .etcd import EtcdCluster
from .netns_testbed import OvsInstance, free_mgmt_octet, kill_all, sh, wait_listening
from .overlay import put

TUNNEL_PORT = "vxlan0"
VNI_BASE = 5000
VM_MTU = 1450

ROUTED_TENANT = "routed"
ROUTER = "rt"


@dataclass(frozen=True)
class RoutedNet:
    name: str
    vni: int
    subnets: tuple[str, str]
    gateways: tuple[str, str]   # the router's address in each subnet


ROUTED_NETS = (RoutedNet("rblue", 5101, ("10.1.0.0/24", "fd00:1::/64"), ("10.1.0.254", "fd00:1::fe")),
               RoutedNet("rgreen", 5102, ("10.2.0.0/24", "fd00:2::/64"), ("10.2.0.254", "fd00:2::fe")))
# name -> (network, host index in the subnet, where: "first" hypervisor of pod 1, "far" = first of the last pod)
ROUTED_VMS = (("rblue1", "rblue", 1, "first"), ("rgreen1", "rgreen", 1, "far"), ("rgreen2", "rgreen", 2, "first"))
UPLINK = "uplink0"
OUTSIDE_IP = "198.51.100.1"      # the outside host, also the gateway's next hop
GATEWAY_IP = "198.51.100.2/24"   # the router's address on the uplink (the SNAT source)


# --- nodes ---------------------------------------------------------------------------------------

class NsHost(Host):  # type: ignore[misc]  # Mininet is untyped: Host is Any
    """A Mininet host whose namespace also has a name (``ip netns attach``), removed in terminate()."""

    def __init__(self, name: str, nsname: str, **params: Any) -> None:
        self.nsname = nsname
        self.procs: list[subprocess.Popen[Any]] = []
        super().__init__(name, **params)
        sh(["ip", "netns", "attach", nsname, str(self.pid)])

    def run(self, *cmd: Any, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh(cmd, check=check, netns=self.nsname, timeout=timeout)

    def spawn(self, *cmd: Any, **kw: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.nsname, *map(str, cmd)], **kw)
        self.procs.append(proc)
        return proc

    def no_ipv6(self) -> None:
        for scope in ("all", "default"):
            self.run("sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1")

    def stop_procs(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.procs.clear()

    def terminate(self) -> None:
        self.stop_procs()
        sh(["ip", "netns", "delete", self.nsname], check=False)
        super().terminate()


class Router(NsHost):
    """IPv4 forwarding; ``bridge``: a Linux bridge ``br0`` over these downlinks with ``bridge_ip``."""

    def config(self, addrs: dict[str, str] | None = None, routes: Sequence[Sequence[str]] = (),
               bridge: Sequence[str] = (), bridge_ip: str | None = None, **params: Any) -> Any:
        r = super().config(**params)
        self.no_ipv6()
        self.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        for key in ("all", "default"):
            self.run("sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0")
        if bridge:
            self.run("ip", "link", "add", "br0", "type", "bridge")
            for intf in bridge:
                self.run("ip", "link", "set", intf, "master", "br0")
                self.run("ip", "link", "set", intf, "up")
            self.run("ip", "addr", "add", bridge_ip, "dev", "br0")
            self.run("ip", "link", "set", "br0", "up")
        for intf, addr in (addrs or {}).items():
            self.run("ip", "addr", "add", addr, "dev", intf)
            self.run("ip", "link", "set", intf, "up")
        for route in routes:
            self.run("ip", "route", "add", *route)
        return r


class Hypervisor(NsHost):
    """Its own OVS (userspace datapath) with br-phy on the underlay and br-int for the VMs."""

    _ovs: OvsInstance | None = None

    @property
    def ovs(self) -> OvsInstance:
        assert self._ovs is not None, f"{self.name}: config() has not started its Open vSwitch"
        return self._ovs

    def stop_ovs(self) -> None:
        if self._ovs is not None:
            self._ovs.stop()

    def config(self, tunnel_ip: str = "", prefixlen: int = 24, gateway: str = "", mgmt_ip: str = "",
               controllers: Sequence[str] = (), dpid: int = 1, ovs_base: str = "", **params: Any) -> Any:
        r = super().config(**params)
        self.tunnel_ip = tunnel_ip
        self.dpid = dpid
        self.no_ipv6()
        self.run("ip", "addr", "add", mgmt_ip, "dev", "mgmt")
        self.run("ip", "link", "set", "mgmt", "up")
        self.run("ip", "link", "set", "eth0", "up")
        self._ovs = OvsInstance(Path(ovs_base), self.nsname)
        self._ovs.start()
        for cmd in prepare_underlay_commands("br-phy", "eth0"):
            self.ovs.vsctl(*cmd)
        # eth0 is a br-phy port: its kernel side must not answer ARP for the tunnel address too.
        self.run("ip", "link", "set", "eth0", "arp", "off")
        self.run("ip", "addr", "add", f"{tunnel_ip}/{prefixlen}", "dev", "br-phy")
        self.run("ip", "link", "set", "br-phy", "up")
        self.run("ip", "route", "add", "198.18.0.0/15", "via", gateway, "dev", "br-phy")
        for cmd in prepare_hypervisor_commands("br-int", TUNNEL_PORT, tunnel_ip, list(controllers),
                                               "netdev", dpid):
            self.ovs.vsctl(*cmd)
        for intf in self.intfNames():
            if intf.startswith("tap") or intf == UPLINK:
                self.plug(intf)
        return r

    def plug(self, tap: str) -> None:
        """A VM's tap (or the uplink): a switch port only (no IPv6, so its kernel sends nothing), added to br-int."""
        self.run("sysctl", "-qw", f"net.ipv6.conf.{tap}.disable_ipv6=1", check=False)
        self.run("ip", "link", "set", tap, "up")
        self.ovs.vsctl("--may-exist", "add-port", "br-int", tap)

    def unplug(self, tap: str) -> None:
        self.ovs.vsctl("--if-exists", "del-port", "br-int", tap)

    def terminate(self) -> None:
        self.stop_procs()
        self.stop_ovs()
        super().terminate()


class VM(NsHost):
    """A tenant VM: eth0 with a fixed MAC, MTU 1450, TX checksum offload off, IPv4 and IPv6;
    default routes via ``vm_gateways`` (a routed tenant's VMs)."""

    def config(self, vm_mac: str = "", vm_ips: Sequence[str] = (), vm_gateways: Sequence[str] = (),
               **params: Any) -> Any:
        r = super().config(**params)
        self.vm_mac, self.vm_ips, self.vm_gateways = vm_mac, tuple(vm_ips), tuple(vm_gateways)
        self.setup_eth0()
        return r

    def setup_eth0(self) -> None:
        self.run("ip", "link", "set", "eth0", "down")
        self.run("ip", "link", "set", "eth0", "address", self.vm_mac, "mtu", VM_MTU)
        self.run("sysctl", "-qw", "net.ipv6.conf.eth0.router_solicitations=0")
        self.run("ethtool", "-K", "eth0", "tx", "off")
        self.run("ip", "link", "set", "eth0", "up")
        for ip in self.vm_ips:
            if ":" in ip:
                self.run("ip", "-6", "addr", "add", f"{ip}/64", "dev", "eth0", "nodad")
            else:
                self.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        for gw in self.vm_gateways:
            self.run("ip", "-6" if ":" in gw else "-4", "route", "replace", "default", "via", gw, "dev", "eth0")


class Outside(NsHost):
    """A host of the outside world: ``eth0`` with ``addr`` (no IPv6, TX checksum offload off)."""

    def config(self, addr: str = "", **params: Any) -> Any:
        r = super().config(**params)
        self.no_ipv6()
        self.run("ethtool", "-K", "eth0", "tx", "off")
        self.run("ip", "addr", "add", addr, "dev", "eth0")
        self.run("ip", "link", "set", "eth0", "up")
        return r


# --- topology -------------------------------------------------------------------------------------

@dataclass
class Spec:
    pods: int = 2
    hv_per_pod: int = 2
    tenants: int = 2
    vms: int = 2           # per tenant
    spines: int = 2
    seed: int = 1
    l3: bool = True        # the routed tenant and the outside host

    def __post_init__(self) -> None:
        assert 1 <= self.pods <= 60 and 1 <= self.hv_per_pod <= 200 and self.pods * self.hv_per_pod <= 62
        assert 1 <= self.spines <= 2 and 1 <= self.tenants <= 200 and 1 <= self.vms <= 250

    @staticmethod
    def add_arguments(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--pods", type=int, default=2)
        ap.add_argument("--hv-per-pod", type=int, default=2)
        ap.add_argument("--tenants", type=int, default=2)
        ap.add_argument("--vms", type=int, default=2, help="VMs per tenant")
        ap.add_argument("--spines", type=int, default=2)
        ap.add_argument("--seed", type=int, default=1)
        ap.add_argument("--no-l3", dest="l3", action="store_false",
                        help="without the routed tenant and the outside host")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> Spec:
        return cls(args.pods, args.hv_per_pod, args.tenants, args.vms, args.spines, args.seed, args.l3)


@dataclass
class HvInfo:
    name: str
    pod: int
    index: int          # 1.. over the whole fabric: dpid, management /30
    tunnel_ip: str
    mgmt_root_ip: str
    mgmt_ip: str
    root_intf: str


@dataclass
class VmInfo:
    name: str
    tenant: int
    vni: int
    mac: str
    ips: tuple[str, str]
    hv: str
    tap: str
    network: str
    gateways: tuple[str, ...] = ()


class OverlayTopo(Topo):  # type: ignore[misc]  # Mininet is untyped: Topo is Any
    """The routed fabric, hypervisors, VMs and management links, as a Mininet ``Topo``."""

    def build(self, spec: Spec, prefix: str, mgmt_octet: int, ofp_ports: Sequence[int], workdir: Path) -> None:
        self.spec, self.prefix = spec, prefix
        self.hvinfo: dict[str, HvInfo] = {}
        self.vminfo: dict[str, VmInfo] = {}
        self.routedinfo: dict[str, VmInfo] = {}
        self.gateway_hv = ""

        def ns(n: str) -> str:
            return f"{prefix}-{n}"

        self.root = f"{prefix}root"
        self.addHost(self.root, cls=Node, inNamespace=False, ip=None)
        spines = [f"spine{s}" for s in range(1, spec.spines + 1)]
        for s, spine in enumerate(spines, 1):
            routes = [[f"198.18.{q}.0/24", "via", f"198.18.{200 + s}.{4 * q + 1}"] for q in range(1, spec.pods + 1)]
            addrs = {f"p{q}": f"198.18.{200 + s}.{4 * q + 2}/30" for q in range(1, spec.pods + 1)}
            self.addHost(spine, cls=Router, nsname=ns(spine), ip=None, addrs=addrs, routes=routes)
        index = 0
        for p in range(1, spec.pods + 1):
            leaf = f"leaf{p}"
            hvs = [f"p{p}h{i}" for i in range(1, spec.hv_per_pod + 1)]
            routes = []
            for q in range(1, spec.pods + 1):
                if q != p:
                    hops = [["nexthop", "via", f"198.18.{200 + s}.{4 * p + 2}"] for s in range(1, spec.spines + 1)]
                    routes.append([f"198.18.{q}.0/24", *itertools.chain.from_iterable(hops)] if len(hops) > 1
                                  else [f"198.18.{q}.0/24", *hops[0][1:]])
            addrs = {f"s{s}": f"198.18.{200 + s}.{4 * p + 1}/30" for s in range(1, spec.spines + 1)}
            self.addHost(leaf, cls=Router, nsname=ns(leaf), ip=None, addrs=addrs, routes=routes,
                         bridge=hvs, bridge_ip=f"198.18.{p}.254/24")
            for s, spine in enumerate(spines, 1):
                self.addLink(leaf, spine, intfName1=f"s{s}", intfName2=f"p{p}")
            for i, hv in enumerate(hvs, 1):
                index += 1
                info = HvInfo(hv, p, index, f"198.18.{p}.{i}", f"198.19.{mgmt_octet}.{4 * index + 1}",
                              f"198.19.{mgmt_octet}.{4 * index + 2}", f"{prefix}m{index}")
                self.hvinfo[hv] = info
                ctls = [f"tcp:{info.mgmt_root_ip}:{port}" for port in ofp_ports]
                self.addHost(hv, cls=Hypervisor, nsname=ns(hv), ip=None, tunnel_ip=info.tunnel_ip,
                             gateway=f"198.18.{p}.254", mgmt_ip=f"{info.mgmt_ip}/30", controllers=ctls, dpid=index,
                             ovs_base=str(workdir / prefix / hv))
                self.addLink(hv, leaf, intfName1="eth0", intfName2=hv)
                self.addLink(hv, self.root, intfName1="mgmt", intfName2=info.root_intf)
        # VMs: consecutive VMs of a tenant go to hypervisors of different pods, from a seeded offset.
        rng = random.Random(spec.seed)
        by_pod = [[h for h in self.hvinfo.values() if h.pod == p] for p in range(1, spec.pods + 1)]
        interleaved = [by_pod[p][i].name for i in range(spec.hv_per_pod) for p in range(spec.pods)]
        for t in range(1, spec.tenants + 1):
            offset = rng.randrange(len(interleaved))
            for v in range(1, spec.vms + 1):
                name = f"t{t}v{v}"
                vm = VmInfo(name, t, VNI_BASE + t, f"02:00:00:00:00:{v:02x}", (f"10.0.0.{v}", f"fd00::{v:x}"),
                            interleaved[(offset + v - 1) % len(interleaved)], f"tap{name}", f"tenant{t}")
                self.vminfo[name] = vm
                self.addHost(name, cls=VM, nsname=ns(name), ip=None, vm_mac=vm.mac, vm_ips=vm.ips)
                self.addLink(name, vm.hv, intfName1="eth0", intfName2=vm.tap)
        if spec.l3:
            self._build_l3(ns, [by_pod[0][0].name, by_pod[-1][0].name if spec.pods > 1 else interleaved[-1]])

    def _build_l3(self, ns: Any, places: list[str]) -> None:
        """The routed tenant's VMs (``ROUTED_VMS``) and the outside host behind the last hypervisor."""
        nets = {n.name: n for n in ROUTED_NETS}
        for k, (name, netname, host, where) in enumerate(ROUTED_VMS, 1):
            net = nets[netname]
            ips = tuple(str(ipaddress.ip_network(s)[host]) for s in net.subnets)
            vm = VmInfo(name, 0, net.vni, f"02:00:00:01:00:{k:02x}", (ips[0], ips[1]),
                        places[0] if where == "first" else places[1], f"tap{name}", net.name, net.gateways)
            self.routedinfo[name] = vm
            self.addHost(name, cls=VM, nsname=ns(name), ip=None, vm_mac=vm.mac, vm_ips=vm.ips,
                         vm_gateways=vm.gateways)
            self.addLink(name, vm.hv, intfName1="eth0", intfName2=vm.tap)
        self.gateway_hv = list(self.hvinfo)[-1]
        self.addHost("outside", cls=Outside, nsname=ns("outside"), ip=None, addr=f"{OUTSIDE_IP}/24")
        self.addLink("outside", self.gateway_hv, intfName1="eth0", intfName2=UPLINK)


# --- the running overlay ----------------------------------------------------------------------------

@dataclass
class OverlayNet:
    """The topology in Mininet, optionally with the real ``ryu-overlay`` controller and its declarations.

    ``controllers`` > 1 or ``db`` = "etcd" starts that many instances on a 3-member etcd cluster of
    its own (``EtcdCluster``, stopped at close); ``db`` = "etcd://..." uses an existing cluster;
    otherwise one instance on a SQLite file. Every bridge lists every instance; ``ctl`` is the first.
    """

    spec: Spec
    workdir: Path
    with_controller: bool = True
    prefix: str = field(default_factory=lambda: f"mo{random.randrange(0x10000):04x}")
    net: Any = None
    ctl: Any = None
    controllers: int = 1
    db: str | None = None
    lease_ttl: int = 3
    ctls: list[ControllerProcess] = field(default_factory=list)
    etcd: EtcdCluster | None = None
    topo: OverlayTopo | None = None
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def start(self) -> OverlayNet:
        self.workdir = self.workdir.resolve()  # the OVS daemons get absolute socket paths
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)
        try:
            if self.with_controller:
                self.start_controllers()
            self.topo = OverlayTopo(spec=self.spec, prefix=self.prefix, mgmt_octet=free_mgmt_octet(),
                                    ofp_ports=[c.ofp_port for c in self.ctls], workdir=self.workdir)
            # Mininet.init() would raise machine-wide sysctls and limits (fixLimits); only raise ours.
            Mininet.inited = True
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
            self.net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False, cleanup=False)
            self.net.topo = self.topo
            self.net.build()
            for h in self.hvinfo.values():  # the root namespace's end of each management link
                sh(["ip", "addr", "add", f"{h.mgmt_root_ip}/30", "dev", h.root_intf])
                sh(["ip", "link", "set", h.root_intf, "up"])
            self.warm_underlay()
            if self.ctl is not None:
                self.declare()
                self.wait_in_sync()
        except BaseException:
            self.close()
            raise
        return self

    @property
    def clustered(self) -> bool:
        return self.controllers > 1 or (self.db or "").startswith("etcd")

    def start_controllers(self) -> None:
        db: str | Path = self.workdir / f"{self.prefix}.db"
        if self.clustered:
            if self.db is None or not self.db.startswith("etcd://"):
                self.etcd = EtcdCluster(self.workdir / f"{self.prefix}-etcd").start()
                db = self.etcd.url(f"/{self.prefix}")
            else:
                db = self.db
        elif self.db is not None:
            db = self.db
        for i in range(self.controllers):
            extra = ["--instance-id", f"c{i}", "--lease-ttl", str(self.lease_ttl)] if self.clustered else []
            ctl = ControllerProcess(db, self.workdir / f"{self.prefix}-controller{'' if i == 0 else i}.log",
                                    extra_args=extra)
            self.ctls.append(ctl)
            ctl.start()
        self.ctl = self.ctls[0]

    def live(self) -> list[ControllerProcess]:
        return [c for c in self.ctls if c.proc is not None and c.proc.poll() is None]

    def masters(self) -> dict[str, str | None]:
        """Each hypervisor's master instance, as a live instance reports it (one instance: its id or None)."""
        status, body = self.live()[0].api("GET", "/v1/hypervisors")
        return {h["name"]: h.get("master") for h in body["hypervisors"]} if status == 200 else {}

    def instance(self, instance_id: str) -> ControllerProcess | None:
        """The process of instance ``c<i>``."""
        return next((c for i, c in enumerate(self.ctls) if f"c{i}" == instance_id and c in self.live()), None)

    def all_in_sync(self) -> bool:
        """Every hypervisor mastered by a live instance that reports it in sync."""
        if not self.clustered:
            status, body = self.ctl.api("GET", "/v1/hypervisors")
            return status == 200 and len(body["hypervisors"]) == len(self.hvinfo) and all(
                h["in_sync"] for h in body["hypervisors"])
        masters = self.masters()
        if len(masters) != len(self.hvinfo):
            return False
        for hv, master in masters.items():
            ctl = self.instance(master) if master else None
            if ctl is None or not ctl.api("GET", f"/v1/hypervisors/{hv}")[1].get("in_sync"):
                return False
        return True

    # accessors
    def hv(self, name: str) -> Hypervisor:
        node: Hypervisor = self.net[name]
        return node

    def vm(self, name: str) -> VM:
        node: VM = self.net[name]
        return node

    @property
    def hvinfo(self) -> dict[str, HvInfo]:
        assert self.topo is not None, "start() builds the topology"
        return self.topo.hvinfo

    @property
    def vminfo(self) -> dict[str, VmInfo]:
        """The flat tenants' VMs."""
        assert self.topo is not None, "start() builds the topology"
        return self.topo.vminfo

    @property
    def routedinfo(self) -> dict[str, VmInfo]:
        """The routed tenant's VMs (``Spec.l3``)."""
        assert self.topo is not None, "start() builds the topology"
        return self.topo.routedinfo

    @property
    def gateway_hv(self) -> str:
        """The hypervisor whose ``br-int`` holds the uplink to the outside host (``Spec.l3``)."""
        assert self.topo is not None and self.topo.gateway_hv, "start() builds the topology, with l3"
        return self.topo.gateway_hv

    @property
    def outside(self) -> NsHost:
        node: NsHost = self.net["outside"]
        return node

    def all_vms(self) -> dict[str, VmInfo]:
        return {**self.vminfo, **self.routedinfo}

    def warm_underlay(self) -> None:
        """One ping between every pair of hypervisors: OVS drops the packet that resolves a VTEP's next hop."""
        procs = []
        for a in self.hvinfo:
            targets = " ".join(h.tunnel_ip for h in self.hvinfo.values() if h.name != a)
            procs.append(subprocess.Popen(["ip", "netns", "exec", self.hv(a).nsname, "sh", "-c",
                                           (f"for t in {targets}; do ping -c 1 -W 1 $t >/dev/null || "
                                           f"ping -c 1 -W 2 $t >/dev/null; done")]))
        for p in procs:
            p.wait(120)

    def declare(self) -> None:
        for name, h in self.hvinfo.items():
            self.put(f"/v1/hypervisors/{name}", {"dpid": h.index, "tunnel_ip": h.tunnel_ip})
        for t in range(1, self.spec.tenants + 1):
            self.put(f"/v1/networks/tenant{t}", {"vni": VNI_BASE + t, "tenant": f"tenant{t}",
                                                 "subnets": ["10.0.0.0/24", "fd00::/64"], "mtu": VM_MTU,
                                                 "mobility": "learn"})  # the experiments migrate VMs
        for net in ROUTED_NETS if self.spec.l3 else ():
            self.put(f"/v1/networks/{net.name}", {"vni": net.vni, "tenant": ROUTED_TENANT,
                                                  "subnets": list(net.subnets), "mtu": VM_MTU})
        for name, v in self.all_vms().items():
            self.put(f"/v1/ports/{name}", {"network": v.network, "mac": v.mac, "ips": list(v.ips),
                                           "hypervisor": v.hv, "interface": v.tap})
        if self.spec.l3:
            self.put(f"/v1/routers/{ROUTER}", router_body())

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return put(self.ctl, path, body)

    def ofport(self, hv: str, intf: str) -> int:
        return int(self.hv(hv).ovs.vsctl("get", "interface", intf, "ofport").strip())

    def dump_flows(self, hv: str) -> list[str]:
        return [ln.strip() for ln in self.hv(hv).ovs.ofctl("dump-flows").splitlines() if "cookie=" in ln]

    def wait_in_sync(self, timeout: float = 30.0) -> None:
        """Every hypervisor connected and in sync, and every VM tap matched by a flow on its hypervisor."""
        def taps_flowed() -> bool:
            try:
                flows = {hv: "\n".join(self.dump_flows(hv)) for hv in self.hvinfo}
                return all(f"in_port={self.ofport(v.hv, v.tap)}," in flows[v.hv] for v in self.all_vms().values())
            except RuntimeError:
                return False
        if not self.clustered:
            self.ctl.wait_in_sync(len(self.hvinfo), taps_flowed, timeout)
            return
        deadline = time.monotonic() + timeout
        while not (self.all_in_sync() and taps_flowed()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not in sync after {timeout}s: masters {self.masters()}")
            time.sleep(0.1)

    # --- using ---
    def ping(self, vm: str, dst: str, count: int = 1, wait: float = 1.0) -> bool:
        return self.vm(vm).run("ping", "-c", count, "-W", wait, "-i", "0.2", dst, check=False).returncode == 0

    def flush_neighbours(self) -> None:
        for name in self.all_vms():
            self.vm(name).run("ip", "neigh", "flush", "all")
            self.vm(name).run("ip", "-6", "neigh", "flush", "all")

    def capture(self, host: NsHost, intf: str, bpf: str, path: Path) -> subprocess.Popen[Any]:
        """tcpdump (immediate mode) on ``intf`` of ``host``; returns once it listens."""
        proc = host.spawn("tcpdump", "-i", intf, "--immediate-mode", "-U", "-n", "-w", path, *shlex.split(bpf),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_listening(proc, f"{host.name}/{intf}")
        return proc

    def leaf_of(self, hv: str) -> NsHost:
        node: NsHost = self.net[f"leaf{self.hvinfo[hv].pod}"]
        return node

    def move_vm(self, vm: str, new_hv: str, garp: bool = True) -> None:
        """Live-migrate ``vm``: its tap leaves the old br-int, a new veth to ``new_hv`` appears in the
        same VM namespace (same MAC and addresses), then the VM sends one gratuitous ARP."""
        info = self.vminfo[vm]
        old, new, host = self.hv(info.hv), self.hv(new_hv), self.vm(vm)
        old.unplug(info.tap)
        for link in [lk for lk in self.net.links if host in (lk.intf1.node, lk.intf2.node)]:
            self.net.delLink(link)
        self.net.addLink(host, new, intfName1="eth0", intfName2=info.tap)
        host.setup_eth0()
        new.plug(info.tap)
        info.hv = new_hv
        if garp:
            self.garp(vm)

    def garp(self, vm: str) -> None:
        """One gratuitous ARP from ``vm`` (Habets' arping, as Debian's ``arping`` package; scapy without it)."""
        info = self.vminfo[vm]
        if shutil.which("arping"):
            # not waited for: arping -U waits for replies that never come; reaped at close
            self.vm(vm).spawn("arping", "-q", "-U", "-c", "1", "-w", "1", "-i", "eth0", "-S", info.ips[0], info.ips[0],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return
        code = ("import logging; logging.getLogger('scapy').setLevel(logging.ERROR)\n"
                "from scapy.all import Ether, ARP, sendp\n"
                f"sendp(Ether(src='{info.mac}', dst='ff:ff:ff:ff:ff:ff')/ARP(op=1, hwsrc='{info.mac}', "
                f"psrc='{info.ips[0]}', pdst='{info.ips[0]}', hwdst='00:00:00:00:00:00'), iface='eth0', verbose=False)")
        self.vm(vm).run(sys.executable, "-c", code, timeout=30)

    # --- tearing down ---
    def close(self) -> None:
        kill_all(self.procs)
        if self.net is not None:
            hosts = list(self.net.hosts)
            for h in hosts:  # OVS and tracked processes first, so nothing holds the links
                if isinstance(h, NsHost):
                    h.stop_procs()
                if isinstance(h, Hypervisor):
                    h.stop_ovs()
            try:
                self.net.stop()
            except Exception as exc:
                print(f"mininet stop: {exc}", file=sys.stderr)
            for h in hosts:
                if isinstance(h, NsHost):
                    sh(["ip", "netns", "delete", h.nsname], check=False)
            self.net = None
        if self.topo is not None:
            for h in self.topo.hvinfo.values():
                if os.path.exists(f"/sys/class/net/{h.root_intf}"):
                    sh(["ip", "link", "del", h.root_intf], check=False)
            # namespaces attached before a failure half-way through the build
            for name in self.topo.hosts():
                if os.path.exists(f"/run/netns/{self.prefix}-{name}"):
                    sh(["ip", "netns", "delete", f"{self.prefix}-{name}"], check=False)
        for ctl in self.ctls:
            ctl.stop()
        self.ctls, self.ctl = [], None
        if self.etcd is not None:
            self.etcd.stop()
            self.etcd = None
        atexit.unregister(self.close)

    def __enter__(self) -> OverlayNet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def router_body(gateway: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """The routed tenant's router (``PUT /v1/routers/rt``): both addresses in both networks; with
    ``gateway``, its external gateway and ``extra`` (``snat``, ``floating_ips``)."""
    body: dict[str, Any] = {"tenant": ROUTED_TENANT,
                            "interfaces": [{"network": n.name, "ip": f"{gw}/{s.split('/')[1]}"}
                                           for n in ROUTED_NETS for gw, s in zip(n.gateways, n.subnets, strict=True)]}
    if gateway is not None:
        body["gateway"] = gateway
    return {**body, **extra}


def sigterm_as_interrupt() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so ``finally`` blocks clean up."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
