"""A deployed overlay for integration tests: the real controller process, real OVS, real VMs."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controller_proc import ControllerProcess
from .netns_testbed import Testbed

# name -> network, mac, ips, hypervisor, interface. Tenants acme (blue) and globex (red) reuse
# the same MAC and IP addresses; hv3 hosts blue only.
PORTS: dict[str, tuple[str, str, list[str], str, str]] = {
    "a1": ("blue", "02:aa:00:00:00:01", ["10.1.0.1", "fd00:1::1"], "hv1", "tapA1"),
    "a2": ("blue", "02:aa:00:00:00:02", ["10.1.0.2", "fd00:1::2"], "hv2", "tapA2"),
    "a3": ("blue", "02:aa:00:00:00:03", ["10.1.0.3", "fd00:1::3"], "hv3", "tapA3"),
    "r1": ("red", "02:aa:00:00:00:01", ["10.1.0.1", "fd00:1::1"], "hv1", "tapR1"),
    "r2": ("red", "02:aa:00:00:00:02", ["10.1.0.2", "fd00:1::2"], "hv2", "tapR2"),
}
NETWORKS = {"blue": 5001, "red": 5002}


def put(ctl: ControllerProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, out = ctl.api("PUT", path, body)
    assert status in (200, 201) and isinstance(out, dict), (path, status, out)
    return out


@dataclass
class Overlay:
    ctl: ControllerProcess
    bed: Testbed
    peers: tuple[ControllerProcess, ...] = ()  # further instances on the same etcd

    def wait_in_sync(self, timeout: float = 20.0) -> None:
        """Until every hypervisor is connected and confirmed all changes, and every VM port is in a flow.
        With several instances, a hypervisor is in sync when a live instance (its master) says so."""
        if self.peers:
            self._wait_cluster_in_sync(timeout)
            return
        self.ctl.wait_in_sync(also=lambda: all(self._port_flowed(vm.hv, vm.interface) for vm in self.bed.vms.values()
                                               if self._declared_at(vm.name, vm.hv)), timeout=timeout)

    def _wait_cluster_in_sync(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            live = [c for c in (self.ctl, *self.peers) if c.proc is not None and c.proc.poll() is None]
            synced: set[str] = set()
            names: set[str] = set()
            for ctl in live:
                status, body = ctl.api("GET", "/v1/hypervisors")
                if status == 200:
                    names |= {h["name"] for h in body["hypervisors"]}
                    synced |= {h["name"] for h in body["hypervisors"] if h["in_sync"]}
            if names and synced == names and all(self._port_flowed(vm.hv, vm.interface)
                                                 for vm in self.bed.vms.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not in sync after {timeout}s: {sorted(names - synced)}")
            time.sleep(0.1)

    def _declared_at(self, port: str, hv: str) -> bool:
        status, body = self.ctl.api("GET", f"/v1/ports/{port}")
        return status == 200 and body["hypervisor"] == hv

    def _port_flowed(self, hv: str, interface: str) -> bool:
        try:
            ofport = self.bed.ofport(hv, interface)
        except RuntimeError:
            return False
        return any(f"in_port={ofport}," in line for line in self.bed.dump_flows(hv))

    def send_frame(self, vm: str, scapy_expr: str) -> None:
        """Send one frame from ``vm``'s eth0, given as a scapy expression (``Ether()/ARP(...)``)."""
        code = ("import logging; logging.getLogger('scapy').setLevel(logging.ERROR)\n"
                "from scapy.all import *\n"
                f"sendp({scapy_expr}, iface='eth0', verbose=False)")
        out = self.bed.vm_exec(vm, [sys.executable, "-c", code], timeout=30)
        assert out.returncode == 0, out.stderr

    def flows(self, hv: str) -> dict[str, float]:
        """cookie -> duration of every flow on ``hv``'s br-int."""
        out = {}
        for line in self.bed.dump_flows(hv):
            fields = dict(part.split("=", 1) for part in line.replace(",", " ").split() if "=" in part)
            out[fields["cookie"]] = float(fields["duration"].rstrip("s"))
        return out


def deploy(ctl: ControllerProcess, bed: Testbed, ports: dict[str, tuple[str, str, list[str], str, str]] = PORTS,
           declare_location: bool = True, peers: tuple[ControllerProcess, ...] = ()) -> Overlay:
    for name, hv in bed.hvs.items():
        put(ctl, f"/v1/hypervisors/{name}", {"dpid": hv.dpid, "tunnel_ip": hv.tunnel_ip})
    for name, vni in NETWORKS.items():
        put(ctl, f"/v1/networks/{name}", {"vni": vni, "tenant": "acme" if name == "blue" else "globex",
                                          "subnets": ["10.1.0.0/24", "fd00:1::/64"]})
    for name, (net, mac, ips, hv_name, iface) in ports.items():
        body: dict[str, Any] = {"network": net, "mac": mac, "ips": ips}
        if declare_location:
            body.update(hypervisor=hv_name, interface=iface)
        put(ctl, f"/v1/ports/{name}", body)
        bed.add_vm(name, hv_name, iface, mac, ips)
    overlay = Overlay(ctl, bed, peers)
    overlay.wait_in_sync()
    return overlay


@contextmanager
def running(hypervisors: int, ports: dict[str, tuple[str, str, list[str], str, str]] = PORTS) -> Iterator[Overlay]:
    """A controller process and a namespace testbed with ``ports`` deployed; all stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="ryu-overlay-") as tmp_name:
        tmp = Path(tmp_name)
        ctl = ControllerProcess(tmp / "overlay.db", tmp / "controller.log")
        ctl.start()
        bed = Testbed(tmp, ctl.ofp_port)
        try:
            bed.build(hypervisors)
            yield deploy(ctl, bed, ports)
        finally:
            bed.close()
            ctl.stop()
