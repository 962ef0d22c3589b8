"""Hypervisors with their own Open vSwitch, and VMs, in network namespaces (see shared/TESTBED.md).

Layout of one testbed, every name carrying a unique prefix so that runs never collide:

* a *fabric* namespace with a Linux bridge: the underlay L2 segment, 198.18.0.0/24;
* per hypervisor a namespace with its own ``ovsdb-server``/``ovs-vswitchd`` (userspace
  datapath), ``br-phy`` holding the underlay veth and the tunnel address 198.18.0.<i>, and
  ``br-int`` prepared by ``ryu_overlay.hypervisor.prepare_hypervisor_commands``; a management veth
  to the root namespace (198.19.<k>.<4i+1> here, <4i+2> there) so it reaches a controller
  listening in the root namespace;
* per VM a namespace whose ``eth0`` is a veth into its hypervisor's ``br-int``;
* optionally an *outside* host (``add_outside``): a namespace on the documentation prefixes
  whose ``eth0`` is a veth into a gateway hypervisor's ``br-int``, as a router's uplink.

Everything is removed by process id and by the names it created, also after a failure.
"""

from __future__ import annotations

import atexit
import os
import random
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ryu_overlay.hypervisor import prepare_hypervisor_commands, prepare_underlay_commands

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"

TUNNEL_PORT = "vxlan0"


def netns_prefix(netns: str | None) -> list[str]:
    return [] if netns is None else ["ip", "netns", "exec", netns]


@dataclass
class OvsInstance:
    """A private Open vSwitch (database and switch daemon) in ``netns``, with files under ``base``.

    The daemons run as child processes rather than with ``--detach``, so that stopping them
    also reaps them: a detached daemon belongs to PID 1, which need not reap it, and a zombie
    still answers ``kill -0``.
    """

    base: Path
    netns: str | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def db_sock(self) -> Path:
        return self.base / "db.sock"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "OVS_RUNDIR": str(self.base), "OVS_DBDIR": str(self.base),
                "OVS_LOGDIR": str(self.base)}

    def run(self, cmd: Sequence[str]) -> str:
        full = [*netns_prefix(self.netns), *cmd]
        proc = subprocess.run(full, capture_output=True, text=True, env=self._env(), check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(full)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def _spawn(self, daemon: str, *args: str) -> None:
        cmd = [*netns_prefix(self.netns), daemon, *args, f"--pidfile={self.base}/{daemon}.pid",
                                          f"--unixctl={self.base}/{daemon}.ctl", f"--log-file={self.base}/{daemon}.log"]
        self.procs.append(subprocess.Popen(cmd, env=self._env(), stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _until(self, ready: Callable[[], object], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ready()
                return
            except RuntimeError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"{what} in {self.netns} not ready:\n{self.log_tail()}") from None
                time.sleep(0.02)

    def start(self, timeout: float = 15.0) -> OvsInstance:
        self.base.mkdir(parents=True, exist_ok=True)
        db = self.base / "conf.db"
        if not db.exists():
            self.run(["ovsdb-tool", "create", str(db), SCHEMA])
        self._spawn("ovsdb-server", str(db), f"--remote=punix:{self.db_sock}",
                    "--remote=db:Open_vSwitch,Open_vSwitch,manager_options")
        self._until(lambda: self.vsctl("--no-wait", "init"), "ovsdb-server", timeout)
        self._spawn("ovs-vswitchd", f"unix:{self.db_sock}")
        self._until(lambda: self.appctl("version"), "ovs-vswitchd", timeout)
        return self

    def vsctl(self, *args: str) -> str:
        return self.run(["ovs-vsctl", f"--db=unix:{self.db_sock}", "--timeout=10", *args])

    def ofctl(self, *args: str, bridge: str = "br-int") -> str:
        """``ovs-ofctl -O OpenFlow13 <command> <this bridge> <args...>``."""
        command, *rest = args
        return self.run(["ovs-ofctl", "-O", "OpenFlow13", command, f"unix:{self.base}/{bridge}.mgmt", *rest])

    def appctl(self, *args: str) -> str:
        return self.run(["ovs-appctl", "-t", f"{self.base}/ovs-vswitchd.ctl", *args])

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop both daemons (switch first); the database file stays for a restart."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(sig)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()

    def kill(self) -> None:
        """SIGKILL both daemons (a crash); ``start`` brings them back on the same database."""
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.base / "ovs-vswitchd.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def sh(cmd: Sequence[str], check: bool = True, netns: str | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = [*(["ip", "netns", "exec", netns] if netns else []), *(str(c) for c in cmd)]
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(full)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()} {proc.stdout.strip()}")
    return proc


def wait_listening(tcpdump: subprocess.Popen[bytes], where: str, timeout: float = 5.0) -> None:
    """Return once tcpdump says "listening on" (its socket is open), so that nothing is missed."""
    assert tcpdump.stderr is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline and b"listening on" not in line:
        line = tcpdump.stderr.readline()
        if not line and tcpdump.poll() is not None:
            raise RuntimeError(f"tcpdump on {where} exited")


def kill_all(procs: list[subprocess.Popen[Any]]) -> None:
    """Kill and reap every child process still running, by pid, and forget them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    procs.clear()


def free_mgmt_octet() -> int:
    """A k for which 198.19.<k>.0/24 has no address in the root namespace (management links)."""
    used = sh(["ip", "-4", "-br", "addr"]).stdout
    for _ in range(200):
        k = random.randrange(1, 255)
        if f"198.19.{k}." not in used:
            return k
    raise RuntimeError("no free 198.19.x.0/24 for management links")


@dataclass
class Hv:
    name: str
    index: int
    netns: str
    ovs: OvsInstance
    tunnel_ip: str
    mgmt_root_ip: str
    mgmt_ip: str
    dpid: int


@dataclass
class Vm:
    name: str
    netns: str
    hv: str
    interface: str
    mac: str
    ips: tuple[str, ...]
    mtu: int
    iface_id: str | None = None


@dataclass
class Capture:
    proc: subprocess.Popen[bytes]
    path: Path

    def stop(self) -> list[Any]:
        """Stop tcpdump and return the packets it saw (scapy)."""
        from scapy.utils import rdpcap

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return list(rdpcap(str(self.path))) if self.path.exists() and self.path.stat().st_size > 24 else []


@dataclass
class Testbed:
    """``managed``: hypervisors get no ``br-int`` of their own; an OVSDB manager (the controller)
    provisions it. ``"passive"``: each runs ``set-manager tcp:<controller>:<ovsdb_port>``;
    ``"active"``: each listens on ``ptcp:<ovsdb_port>:<its management address>``. ``underlay6``:
    the underlay is IPv6 (2001:2::/64, RFC 5180's benchmarking prefix), tunnel addresses 2001:2::<i>."""

    workdir: Path
    controller_port: int | None = None
    more_controller_ports: tuple[int, ...] = ()  # further controller instances every bridge connects to
    managed: str | None = None
    ovsdb_port: int = 6640
    underlay6: bool = False
    prefix: str = field(default_factory=lambda: f"ro{random.randrange(0x10000):04x}")
    hvs: dict[str, Hv] = field(default_factory=dict)
    vms: dict[str, Vm] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mgmt_net = free_mgmt_octet()
        self.fabric = f"{self.prefix}fab"
        atexit.register(self.close)

    # --- building -----------------------------------------------------------------------------

    def _netns(self, name: str, ipv6: bool = True) -> str:
        sh(["ip", "netns", "add", name])
        self.namespaces.append(name)
        sh(["ip", "link", "set", "lo", "up"], netns=name)
        if not ipv6:  # the underlay is IPv4: keep its links quiet
            for scope in ("all", "default"):
                sh(["sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1"], netns=name)
        return name

    def _veth(self, a_ns: str | None, a_name: str, b_ns: str | None, b_name: str, up: bool = True) -> None:
        """A veth pair with end ``a_name`` in ``a_ns`` and ``b_name`` in ``b_ns`` (None: root)."""
        tmp_a, tmp_b = f"{self.prefix}t{len(self.root_links)}a", f"{self.prefix}t{len(self.root_links)}b"
        sh(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        self.root_links.append(tmp_a)
        for tmp, ns, name in ((tmp_a, a_ns, a_name), (tmp_b, b_ns, b_name)):
            if ns is not None:
                sh(["ip", "link", "set", tmp, "netns", ns])
            sh(["ip", "link", "set", tmp, "name", name], netns=ns)
            if up:
                sh(["ip", "link", "set", name, "up"], netns=ns)
        if a_ns is None and a_name != tmp_a:
            self.root_links.append(a_name)

    def build(self, hypervisors: int) -> Testbed:
        self._netns(self.fabric, ipv6=self.underlay6)
        sh(["ip", "link", "add", "br0", "type", "bridge"], netns=self.fabric)
        sh(["ip", "link", "set", "br0", "up"], netns=self.fabric)
        for i in range(1, hypervisors + 1):
            self.add_hypervisor(f"hv{i}")
        self.warm_underlay()
        return self

    def warm_underlay(self) -> None:
        """Resolve every hypervisor's underlay neighbours, as on a running fabric.

        OVS's userspace tunnelling drops the packet that makes it resolve a remote VTEP's
        MAC; it learns the answer by snooping ARP on br-phy. One ping between each pair of
        hypervisors fills those caches, so tests see the overlay and not that first loss.

        A hypervisor whose kernel already learned a peer from that peer's own ARP request pings
        it without an ARP exchange, and OVS then has no entry (seen under load); such entries
        are set by hand from the peer's br-phy MAC.
        """
        for hv in self.hvs.values():
            for other in self.hvs.values():
                if other is not hv:
                    sh(["ping", "-c", "1", "-W", "2", other.tunnel_ip], netns=hv.netns)
        macs = {hv.tunnel_ip: sh(["cat", "/sys/class/net/br-phy/address"], netns=hv.netns).stdout.strip()
                for hv in self.hvs.values()}
        for hv in self.hvs.values():
            known = hv.ovs.appctl("tnl/neigh/show")
            for ip, mac in macs.items():
                if ip != hv.tunnel_ip and ip not in known:
                    hv.ovs.appctl("tnl/neigh/set", "br-phy", ip, mac)

    def add_hypervisor(self, name: str) -> Hv:
        i = len(self.hvs) + 1
        ns = self._netns(f"{self.prefix}{name}", ipv6=self.underlay6)
        hv = Hv(name, i, ns, OvsInstance(self.workdir / self.prefix / name, ns),
                f"2001:2::{i}" if self.underlay6 else f"198.18.0.{i}",
                f"198.19.{self.mgmt_net}.{4 * i + 1}", f"198.19.{self.mgmt_net}.{4 * i + 2}", i)
        self.hvs[name] = hv
        self._veth(self.fabric, f"u{i}", ns, "eth0")
        sh(["ip", "link", "set", f"u{i}", "master", "br0"], netns=self.fabric)
        self._veth(None, f"{self.prefix}m{i}", ns, "mgmt")
        sh(["ip", "addr", "add", f"{hv.mgmt_root_ip}/30", "dev", f"{self.prefix}m{i}"])
        sh(["ip", "addr", "add", f"{hv.mgmt_ip}/30", "dev", "mgmt"], netns=ns)
        hv.ovs.start()
        for cmd in prepare_underlay_commands("br-phy", "eth0"):
            hv.ovs.vsctl(*cmd)
        # eth0 is a br-phy port now; without this its kernel side would also answer ARP for the tunnel IP.
        sh(["ip", "link", "set", "eth0", "arp", "off"], netns=ns)
        if self.underlay6:
            sh(["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"], netns=ns)
            sh(["ip", "-6", "addr", "add", f"{hv.tunnel_ip}/64", "dev", "br-phy", "nodad"], netns=ns)
            # Interfaces made from now on (br-int, VM ends) keep quiet, as on an IPv4 underlay.
            sh(["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], netns=ns)
        else:
            sh(["ip", "addr", "add", f"{hv.tunnel_ip}/24", "dev", "br-phy"], netns=ns)
        sh(["ip", "link", "set", "br-phy", "up"], netns=ns)
        if self.managed:
            hv.ovs.vsctl("set", "Open_vSwitch", ".", f"external_ids:system-id={name}")
        if self.managed == "passive":
            hv.ovs.vsctl("set-manager", f"tcp:{hv.mgmt_root_ip}:{self.ovsdb_port}")
        elif self.managed == "active":
            hv.ovs.vsctl("set-manager", f"ptcp:{self.ovsdb_port}:{hv.mgmt_ip}")
        else:
            ports = [] if self.controller_port is None else [self.controller_port]
            controllers = [f"tcp:{hv.mgmt_root_ip}:{p}" for p in [*ports, *self.more_controller_ports]]
            for cmd in prepare_hypervisor_commands("br-int", TUNNEL_PORT, hv.tunnel_ip, controllers, "netdev",
                                                   hv.dpid):
                hv.ovs.vsctl(*cmd)
        return hv

    def plug_vm(self, name: str, hv: str, tap: str, iface_id: str, mac: str, ips: Sequence[str],
                mtu: int = 1450) -> Vm:
        """A VM plugged as libvirt (and os-vif) plug one: a tap of their choosing on ``br-int`` with
        ``external_ids`` ``iface-id``, ``attached-mac`` and ``vm-uuid``."""
        ns = self._netns(f"{self.prefix}{name}")
        vm = Vm(name, ns, hv, tap, mac, tuple(ips), mtu, iface_id)
        self.vms[name] = vm
        self._configure_vm(vm)
        return vm

    def add_vm(self, name: str, hv: str, interface: str, mac: str, ips: Sequence[str], mtu: int = 1450) -> Vm:
        ns = self._netns(f"{self.prefix}{name}")
        vm = Vm(name, ns, hv, interface, mac, tuple(ips), mtu)
        self.vms[name] = vm
        self._configure_vm(vm)
        return vm

    def _configure_vm(self, vm: Vm) -> None:
        hv = self.hvs[vm.hv]
        self._veth(vm.netns, "eth0", hv.netns, vm.interface, up=False)
        # The hypervisor's end is a switch port: no addresses, so its kernel sends nothing (no IPv6 DAD).
        sh(["sysctl", "-qw", f"net.ipv6.conf.{vm.interface}.disable_ipv6=1"], netns=hv.netns)
        sh(["ip", "link", "set", vm.interface, "up"], netns=hv.netns)
        sh(["ip", "link", "set", "eth0", "address", vm.mac, "mtu", str(vm.mtu)], netns=vm.netns)
        sh(["sysctl", "-qw", "net.ipv6.conf.eth0.router_solicitations=0"], netns=vm.netns)
        sh(["ethtool", "-K", "eth0", "tx", "off"], netns=vm.netns)
        sh(["ip", "link", "set", "eth0", "up"], netns=vm.netns)
        for ip in vm.ips:
            if ":" in ip:
                sh(["ip", "-6", "addr", "add", f"{ip}/64", "dev", "eth0", "nodad"], netns=vm.netns)
            else:
                sh(["ip", "addr", "add", f"{ip}/24", "dev", "eth0"], netns=vm.netns)
        if vm.iface_id is None:
            hv.ovs.vsctl("--may-exist", "add-port", "br-int", vm.interface)
            return
        vm_uuid = f"{random.getrandbits(128):032x}"
        hv.ovs.vsctl("--may-exist", "add-port", "br-int", vm.interface, "--", "set", "Interface", vm.interface,
                     f"external_ids:iface-id={vm.iface_id}", f"external_ids:attached-mac={vm.mac}",
                     f"external_ids:vm-uuid={vm_uuid[:8]}-{vm_uuid[8:12]}-{vm_uuid[12:16]}-{vm_uuid[16:20]}-"
                     f"{vm_uuid[20:]}", "external_ids:iface-status=active")

    def add_outside(self, name: str, hv: str, uplink: str, mac: str, ips: Sequence[str]) -> Vm:
        """A host of the non-virtualized world behind ``hv``'s uplink port ``uplink`` (a router's
        gateway interface): a namespace whose ``eth0`` is a veth into ``hv``'s ``br-int``, with
        addresses of 198.51.100.0/24 and 203.0.113.0/24 (each given as a /24) and MTU 1500. It is
        run like a VM (``vm_exec``, ``ping``) but no port is declared for it."""
        if not all(ip.startswith(("198.51.100.", "203.0.113.")) for ip in ips):
            raise ValueError(f"outside addresses must be documentation addresses, not {ips}")
        return self.add_vm(name, hv, uplink, mac, ips, mtu=1500)

    def move_vm(self, name: str, new_hv: str) -> Vm:
        """Live-migrate: the interface leaves the old bridge, the same VM reappears on the new one."""
        vm = self.vms[name]
        old = self.hvs[vm.hv]
        old.ovs.vsctl("--if-exists", "del-port", "br-int", vm.interface)
        sh(["ip", "link", "del", vm.interface], netns=old.netns)
        vm.hv = new_hv
        self._configure_vm(vm)
        return vm

    # --- using --------------------------------------------------------------------------------

    def vm_exec(self, vm: str, cmd: Sequence[str], check: bool = False,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh(cmd, check=check, netns=self.vms[vm].netns, timeout=timeout)

    def hv_exec(self, hv: str, cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(cmd, check=check, netns=self.hvs[hv].netns)

    def ping(self, vm: str, dst: str, count: int = 1, wait: float = 2.0) -> bool:
        return self.vm_exec(vm, ["ping", "-c", str(count), "-W", str(wait), "-i", "0.2", dst]).returncode == 0

    def ofport(self, hv: str, interface: str) -> int:
        return int(self.hvs[hv].ovs.vsctl("get", "interface", interface, "ofport").strip())

    def dump_flows(self, hv: str) -> list[str]:
        out = self.hvs[hv].ovs.ofctl("dump-flows")
        return [line.strip() for line in out.splitlines() if "cookie=" in line]

    def flush_neighbours(self, vm: str) -> None:
        self.vm_exec(vm, ["ip", "neigh", "flush", "all"], check=True)
        self.vm_exec(vm, ["ip", "-6", "neigh", "flush", "all"], check=True)

    def capture(self, netns: str, interface: str, bpf: str = "") -> Capture:
        path = self.workdir / f"{self.prefix}-{netns}-{interface}-{len(self.procs)}.pcap"
        cmd = ["ip", "netns", "exec", netns, "tcpdump", "-i", interface, "--immediate-mode", "-U", "-n",
               "-w", str(path), *shlex.split(bpf)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        wait_listening(proc, f"{netns}/{interface}")
        return Capture(proc, path)

    def underlay_capture(self, hv: str) -> Capture:
        """VXLAN packets on ``hv``'s underlay link, seen from the fabric."""
        return self.capture(self.fabric, f"u{self.hvs[hv].index}", "udp port 4789")

    # --- tearing down -------------------------------------------------------------------------

    def close(self) -> None:
        kill_all(self.procs)
        for hv in self.hvs.values():
            hv.ovs.stop()
        for ns in reversed(self.namespaces):
            sh(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()
        for link in self.root_links:
            if os.path.exists(f"/sys/class/net/{link}"):
                sh(["ip", "link", "del", link], check=False)
        self.root_links.clear()
        atexit.unregister(self.close)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
