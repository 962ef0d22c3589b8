"""Path MTU on real Open vSwitch: VMs whose interface MTU (1500) exceeds their network's (1450).

Without the ``mtu_check`` tables such a VM's full-size packets are encapsulated into underlay
packets 50 bytes too big and vanish; the last test shows exactly that by declaring an MTU the
underlay cannot carry.
"""

from __future__ import annotations

import subprocess
import sys
import time

from scapy.layers.inet import IP

from ryu_overlay.testing.overlay import PORTS, Overlay, deploy, put

TWO_VMS = {k: v for k, v in PORTS.items() if k in ("a1", "a2")}
SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5201)); s.listen(1); print('listening', flush=True)
conn, _ = s.accept(); conn.settimeout(20); total = 0
while True:
    chunk = conn.recv(65536)
    if not chunk:
        break
    total += len(chunk)
print(total, flush=True)
"""
CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 5201), timeout=20)
s.sendall(b'x' * int(sys.argv[2])); s.close()
"""


def overlay_with_mtu_1500_vms(ctl, make_bed) -> Overlay:
    overlay = deploy(ctl, make_bed(2, ctl.ofp_port), ports=TWO_VMS)
    for vm in ("a1", "a2"):
        overlay.bed.vm_exec(vm, ["ip", "link", "set", "eth0", "mtu", "1500"], check=True)
    assert overlay.bed.ping("a1", "10.1.0.2", count=2) and overlay.bed.ping("a1", "fd00:1::2", count=2)
    return overlay


def ping(overlay: Overlay, *args: str) -> str:
    out = overlay.bed.vm_exec("a1", ["ping", "-c", "1", "-W", "2", *args])
    return out.stdout + out.stderr


def forget_pmtu(overlay: Overlay) -> None:
    overlay.bed.vm_exec("a1", ["ip", "route", "flush", "cache"], check=True)
    overlay.bed.vm_exec("a1", ["ip", "-6", "route", "flush", "cache"], check=True)


def test_ipv4_df_gets_fragmentation_needed_with_the_mtu_and_the_length_rule_is_the_ip_mtu(ctl, make_bed):
    overlay = overlay_with_mtu_1500_vms(ctl, make_bed)
    # OVS decodes the action our encoder packs (Ryu 4.34 has none).
    assert any("check_pkt_larger(1464)->NXM_NX_REG0[0]" in f for f in overlay.bed.dump_flows("hv1"))
    # An IP packet of exactly 1450 bytes (a 1464-byte frame) passes the check ...
    assert " 0% packet loss" in ping(overlay, "-M", "do", "-s", "1422", "10.1.0.2")
    # ... 1500 bytes is answered by "fragmentation needed", mtu 1450 ...
    out = ping(overlay, "-M", "do", "-s", "1472", "10.1.0.2")
    assert "Frag needed and DF set (mtu = 1450)" in out, out
    # ... and so is 1451: check_pkt_larger counts the 14-byte Ethernet header, so its limit is mtu + 14.
    forget_pmtu(overlay)
    out = ping(overlay, "-M", "do", "-s", "1423", "10.1.0.2")
    assert "Frag needed and DF set (mtu = 1450)" in out, out
    assert overlay.ctl.api("GET", "/v1/stats")[1]["pmtu_frag_needed"] >= 2


def test_ipv4_without_df_is_delivered_in_fragments(ctl, make_bed):
    overlay = overlay_with_mtu_1500_vms(ctl, make_bed)
    bed = overlay.bed
    seen = bed.capture(bed.vms["a2"].netns, "eth0", "-Q in icmp")
    out = overlay.bed.vm_exec("a1", ["ping", "-c", "3", "-W", "2", "-i", "0.2", "-M", "dont", "-s", "1472",
                                     "10.1.0.2"])
    time.sleep(0.5)
    frames = seen.stop()
    assert " 0% packet loss" in out.stdout, out.stdout
    fragments = [p[IP] for p in frames if IP in p and (p[IP].flags.MF or p[IP].frag)]
    assert len(fragments) >= 6 and all(p.len <= 1450 for p in fragments)  # two per request, cut by the controller
    # Linux's default (path MTU discovery on) gets an error for the first packet, then fragments itself.
    forget_pmtu(overlay)
    out = overlay.bed.vm_exec("a1", ["ping", "-c", "3", "-W", "2", "-i", "0.3", "-s", "1472", "10.1.0.2"])
    assert "Frag needed and DF set (mtu = 1450)" in out.stdout and "2 received" in out.stdout, out.stdout


def test_ipv6_gets_packet_too_big_and_then_fragments_at_the_source(ctl, make_bed):
    overlay = overlay_with_mtu_1500_vms(ctl, make_bed)
    out = ping(overlay, "-6", "-M", "do", "-s", "1452", "fd00:1::2")
    assert "Packet too big: mtu=1450" in out, out
    # a1 fragments now; a2's first reply is too big in turn (it gets its own "packet too big"), later ones fragmented.
    res = overlay.bed.vm_exec("a1", ["ping", "-6", "-c", "4", "-W", "2", "-i", "0.2", "-s", "1452", "fd00:1::2"])
    assert "3 received" in res.stdout, res.stdout
    res = overlay.bed.vm_exec("a1", ["ping", "-6", "-c", "3", "-W", "2", "-i", "0.2", "-s", "1452", "fd00:1::2"])
    assert " 0% packet loss" in res.stdout, res.stdout
    assert overlay.ctl.api("GET", "/v1/stats")[1]["pmtu_packet_too_big"] == 2


def tcp_transfer(overlay: Overlay, dst: str, size: int) -> int | None:
    """Bytes a2 received from a1 over one TCP connection, or None if it did not finish."""
    bed = overlay.bed
    server = subprocess.Popen(["ip", "netns", "exec", bed.vms["a2"].netns, sys.executable, "-c", SERVER, dst],
                              stdout=subprocess.PIPE, text=True)
    bed.procs.append(server)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        bed.vm_exec("a1", [sys.executable, "-c", CLIENT, dst, str(size)], timeout=30)
        line = server.stdout.readline().strip()
        return int(line) if line else None
    finally:
        server.kill()
        server.wait()


def test_tcp_with_full_size_segments_completes_over_ipv4_and_ipv6(ctl, make_bed):
    overlay = overlay_with_mtu_1500_vms(ctl, make_bed)
    for dst in ("10.1.0.2", "fd00:1::2"):
        assert tcp_transfer(overlay, dst, 4_000_000) == 4_000_000, dst


def test_without_a_truthful_mtu_full_size_packets_vanish(ctl, make_bed):
    """The negative control: declare an MTU the 1500-byte underlay cannot carry, and the big packets
    are lost silently, as they were before the check existed."""
    overlay = overlay_with_mtu_1500_vms(ctl, make_bed)
    put(overlay.ctl, "/v1/networks/blue", {"vni": 5001, "tenant": "acme", "mtu": 9000,
                                           "subnets": ["10.1.0.0/24", "fd00:1::/64"]})
    overlay.wait_in_sync()
    out = ping(overlay, "-M", "do", "-s", "1472", "10.1.0.2")
    assert "100% packet loss" in out and "Frag needed" not in out, out
    assert " 0% packet loss" in ping(overlay, "-M", "do", "-s", "1422", "10.1.0.2")
