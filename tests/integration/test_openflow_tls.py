"""OpenFlow over TLS on real Open vSwitch, with certificates from OVS's own ovs-pki (issue #16).

The controller runs with Ryu's --ctl-privkey/--ctl-cert/--ca-certs; each hypervisor's OVS gets its
key and certificate with ``ovs-vsctl set-ssl`` (what ``setup-hypervisor --ssl-*`` runs) and an
``ssl:`` controller. hv1 presents its own certificate and is programmed; hv2 presents hv1's, is
refused, counted and left without a single flow, until it is given its own.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ryu_overlay.hypervisor import ssl_commands
from ryu_overlay.testing import netns_testbed
from ryu_overlay.testing.controller_proc import ControllerProcess, free_port
from ryu_overlay.testing.overlay import put


def ovs_pki(workdir: Path, *args: str) -> None:
    subprocess.run(["ovs-pki", f"--dir={workdir / 'pki'}", f"--log={workdir / 'ovs-pki.log'}", "--force", *args],
                   check=True, capture_output=True, cwd=workdir)


def until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def use_certificate(bed: netns_testbed.Testbed, hv: str, owner: str, workdir: Path, port: int) -> None:
    ovs = bed.hvs[hv].ovs
    ovs.vsctl(*ssl_commands(str(workdir / f"{owner}-privkey.pem"), str(workdir / f"{owner}-cert.pem"),
                            str(workdir / "pki" / "controllerca" / "cacert.pem")))
    ovs.vsctl("set-controller", "br-int", f"ssl:{bed.hvs[hv].mgmt_root_ip}:{port}", "--",
              "set", "controller", "br-int", "max_backoff=1000")


def test_a_switch_is_programmed_only_with_its_own_hypervisors_certificate(tmp_path: Path, requirements: None) -> None:
    if shutil.which("ovs-pki") is None:
        pytest.fail("ovs-pki is missing: run `make install` (openvswitch-common)")
    ovs_pki(tmp_path, "init")
    for name, kind in (("ctl", "controller"), ("hv1", "switch"), ("hv2", "switch")):
        ovs_pki(tmp_path, "req+sign", name, kind)
    port = free_port("0.0.0.0")
    ctl = ControllerProcess(tmp_path / "db", tmp_path / "controller.log", ofp_port=port, extra_args=[
        "--ctl-privkey", str(tmp_path / "ctl-privkey.pem"), "--ctl-cert", str(tmp_path / "ctl-cert.pem"),
        "--ca-certs", str(tmp_path / "pki" / "switchca" / "cacert.pem"), "--ofp-ssl-listen-port", str(port)])
    bed = netns_testbed.Testbed(tmp_path, None)
    try:
        ctl.start()
        bed.build(2)
        for name, h in bed.hvs.items():
            put(ctl, f"/v1/hypervisors/{name}", {"dpid": h.dpid, "tunnel_ip": h.tunnel_ip})
        put(ctl, "/v1/networks/blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24"]})
        for vm, hv, mac, ip in (("a1", "hv1", "02:aa:00:00:00:01", "10.1.0.1"), ("a2", "hv2", "02:aa:00:00:00:02",
                                                                                   "10.1.0.2")):
            put(ctl, f"/v1/ports/{vm}", {"network": "blue", "mac": mac, "ips": [ip], "hypervisor": hv,
                                         "interface": f"tap{vm.upper()}"})
            bed.add_vm(vm, hv, f"tap{vm.upper()}", mac, [ip])
        use_certificate(bed, "hv1", "hv1", tmp_path, port)
        use_certificate(bed, "hv2", "hv1", tmp_path, port)  # hv2 claims to be... hv1's certificate, dpid 2

        def hv_state(name: str) -> dict[str, Any]:
            state: dict[str, Any] = ctl.ok("GET", f"/v1/hypervisors/{name}")
            return state

        until(lambda: hv_state("hv1")["in_sync"] and ctl.ok("GET", "/v1/stats")["switches_refused_certificate"] >= 2,
              f"hv1 programmed and hv2 refused twice:\n{ctl.log_tail()}")
        assert bed.dump_flows("hv1"), "hv1 has its flows"
        assert bed.dump_flows("hv2") == [], "a refused switch is never programmed"
        assert hv_state("hv2")["connected"] is False
        assert "refused switch 0000000000000002: its certificate names 'hv1 id:" in ctl.log_tail(200)
        assert not bed.ping("a1", "10.1.0.2", count=1, wait=1)
        use_certificate(bed, "hv2", "hv2", tmp_path, port)  # its own: now it is hv2
        until(lambda: hv_state("hv2")["in_sync"], f"hv2 programmed with its own certificate:\n{ctl.log_tail()}")
        assert bed.ping("a1", "10.1.0.2", count=2, wait=3)
    finally:
        bed.close()
        ctl.stop()
