"""DHCP and Router Advertisements on real Open vSwitch, with Debian's own clients in the VMs:
``dhclient`` (isc-dhcp-client) and ``rdisc6`` (ndisc6). Rogue servers in VMs reach nobody."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.dhcp import DHCP
from scapy.layers.inet6 import ICMPv6ND_RA

from ryu_overlay.testing import netns_testbed
from ryu_overlay.testing.overlay import Overlay, deploy, put

# The -sf script: apply what the lease says (address, MTU) and record it; never touch resolv.conf.
SCRIPT = """#!/bin/sh
env | sort > "{out}.$reason"
case "$reason" in
BOUND|RENEW|REBIND|REBOOT)
    [ -n "$new_interface_mtu" ] && ip link set dev "$interface" mtu "$new_interface_mtu"
    ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
    ;;
esac
exit 0
"""
CONFIG = "timeout 30;\nretry 5;\nrequest subnet-mask, routers, interface-mtu, dhcp-lease-time;\n"
D1_MAC, G2_MAC = "02:aa:00:00:00:0d", "02:aa:00:00:00:22"


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: run `make install` (APT_PACKAGES)")


@pytest.fixture
def green(ctl, make_bed) -> Overlay:
    """Network green (IPv4 only, so no RA changes the MTU behind DHCP's back): d1 on hv1 with a
    declared address but none configured and MTU 1500; g2 on hv2 configured by hand."""
    overlay = deploy(ctl, make_bed(2, ctl.ofp_port), ports={})
    bed = overlay.bed
    put(ctl, "/v1/networks/green", {"vni": 5003, "tenant": "acme", "subnets": ["10.3.0.0/24"]})
    put(ctl, "/v1/ports/d1", {"network": "green", "mac": D1_MAC, "ips": ["10.3.0.13"], "hypervisor": "hv1",
                              "interface": "tapD1"})
    put(ctl, "/v1/ports/g2", {"network": "green", "mac": G2_MAC, "ips": ["10.3.0.2"], "hypervisor": "hv2",
                              "interface": "tapG2"})
    bed.add_vm("d1", "hv1", "tapD1", D1_MAC, [], mtu=1500)
    bed.add_vm("g2", "hv2", "tapG2", G2_MAC, ["10.3.0.2"])
    overlay.wait_in_sync()
    return overlay


@pytest.fixture
def dhclient(green: Overlay, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Files for one dhclient run in d1, and the client stopped by its pid afterwards."""
    need("dhclient")
    files = {k: tmp_path / f"dhclient.{k}" for k in ("lf", "pf", "cf", "sf", "out")}
    files["lf"].write_text("")  # no recorded lease to fall back on
    files["cf"].write_text(CONFIG)
    files["sf"].write_text(SCRIPT.format(out=files["out"]))
    files["sf"].chmod(0o755)
    try:
        yield files
    finally:
        if files["pf"].exists() and files["pf"].read_text().strip():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(files["pf"].read_text()), signal.SIGTERM)


def run_dhclient(bed: netns_testbed.Testbed, files: dict[str, Path]) -> str:
    out = bed.vm_exec("d1", ["dhclient", "-1", "-v", "-cf", str(files["cf"]), "-lf", str(files["lf"]),
                             "-pf", str(files["pf"]), "-sf", str(files["sf"]), "eth0"], timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stderr


def test_dhclient_gets_the_declared_address_and_mtu_1450_and_nothing_reaches_other_vms(green, dhclient):
    bed = green.bed
    tap = bed.ofport("hv1", "tapD1")
    traps = [f for f in bed.dump_flows("hv1") if f"in_port={tap}," in f and "tp_src=68,tp_dst=67" in f]
    assert len(traps) == 1 and f"meter:{tap},CONTROLLER" in traps[0].replace("controller", "CONTROLLER"), traps
    g2_view = bed.capture(bed.vms["g2"].netns, "eth0", "udp port 67 or udp port 68")
    log = run_dhclient(bed, dhclient)
    assert "DHCPOFFER of 10.3.0.13" in log and "DHCPACK of 10.3.0.13" in log, log
    link = bed.vm_exec("d1", ["ip", "-o", "link", "show", "eth0"], check=True).stdout
    addr = bed.vm_exec("d1", ["ip", "-o", "-4", "addr", "show", "eth0"], check=True).stdout
    assert " mtu 1450 " in link, link
    assert "inet 10.3.0.13/24" in addr, addr
    env = dhclient["out"].with_name(dhclient["out"].name + ".BOUND").read_text()
    assert "new_interface_mtu=1450" in env and "new_dhcp_server_identifier=10.3.0.254" in env, env
    assert "new_dhcp_lease_time=86400" in env, env
    assert "new_routers" not in env  # no router is attached to green
    assert bed.ping("d1", "10.3.0.2", count=2)
    # Full-size frames of the announced MTU cross the tunnel (1450 - 28 bytes of IPv4 and ICMP).
    assert bed.vm_exec("d1", ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", "10.3.0.2"]).returncode == 0
    time.sleep(0.5)
    assert g2_view.stop() == []  # the client's broadcasts reached the controller and nobody else


def test_a_rogue_dhcp_server_in_a_vm_reaches_nobody(green, dhclient):
    bed = green.bed
    d1_view = bed.capture(bed.vms["d1"].netns, "eth0", "udp src port 67")
    green.send_frame("g2", "Ether(src='02:aa:00:00:00:22', dst='ff:ff:ff:ff:ff:ff')/"
                           "IP(src='10.3.0.2', dst='255.255.255.255')/UDP(sport=67, dport=68)/"
                           "BOOTP(op=2, yiaddr='10.3.0.66', chaddr=bytes.fromhex('02aa0000000d'))/"
                           "DHCP(options=[('message-type', 'offer'), ('server_id', '10.3.0.2'), 'end'])")
    time.sleep(0.5)
    assert d1_view.stop() == []
    # The controller's own offer does reach d1 (the capture would have seen a rogue one).
    d1_view = bed.capture(bed.vms["d1"].netns, "eth0", "udp src port 67")
    run_dhclient(bed, dhclient)
    time.sleep(0.5)
    seen = d1_view.stop()
    assert seen and all(p[DHCP].options[1] == ("server_id", "10.3.0.254") for p in seen), seen


def test_rdisc6_gets_the_prefix_and_mtu_and_rogue_router_advertisements_are_dropped(ctl, make_bed):
    need("rdisc6")
    ports = {"a1": ("blue", "02:aa:00:00:00:01", ["10.1.0.1", "fd00:1::1"], "hv1", "tapA1"),
             "a2": ("blue", "02:aa:00:00:00:02", ["10.1.0.2", "fd00:1::2"], "hv2", "tapA2")}
    overlay = deploy(ctl, make_bed(2, ctl.ofp_port), ports=ports)
    bed = overlay.bed
    out = bed.vm_exec("a1", ["rdisc6", "-1", "-w", "2000", "eth0"], timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    assert "Prefix : fd00:1::/64" in text, out.stdout
    assert "MTU : 1450 bytes" in text, out.stdout
    assert "Router lifetime : 0 (0x00000000) seconds" in text, out.stdout  # no router attached
    assert "from fe80::800:ff:fe00:1389" in text, out.stdout  # the service MAC 0a:00:00:00:13:89 of VNI 5001
    a1_view = bed.capture(bed.vms["a1"].netns, "eth0", "icmp6 and ether src 02:aa:00:00:00:02")
    overlay.send_frame("a2", "Ether(src='02:aa:00:00:00:02', dst='33:33:00:00:00:01')/"
                             "IPv6(src='fe80::aa:ff:fe00:2', dst='ff02::1', hlim=255)/ICMPv6ND_RA(routerlifetime=1800)/"
                             "ICMPv6NDOptPrefixInfo(prefix='fd66::', prefixlen=64)")
    time.sleep(0.5)
    assert [p for p in a1_view.stop() if ICMPv6ND_RA in p] == []


def test_a_port_coming_up_gets_a_router_advertisement_and_its_mtu_unasked(ctl, make_bed):
    overlay = deploy(ctl, make_bed(1, ctl.ofp_port), ports={})
    bed = overlay.bed
    put(ctl, "/v1/ports/e1", {"network": "blue", "mac": "02:aa:00:00:00:0e", "ips": ["fd00:1::e"],
                              "hypervisor": "hv1", "interface": "tapE1"})
    bed.add_vm("e1", "hv1", "tapE1", "02:aa:00:00:00:0e", ["fd00:1::e"], mtu=1500)  # sends no solicitation

    def ipv6_mtu() -> str:
        return bed.vm_exec("e1", ["sysctl", "-n", "net.ipv6.conf.eth0.mtu"], check=True).stdout.strip()

    deadline = time.monotonic() + 15
    while ipv6_mtu() != "1450" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ipv6_mtu() == "1450"  # the kernel took the RA's MTU option; the link MTU stays 1500
