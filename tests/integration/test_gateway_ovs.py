"""The external gateway on real Open vSwitch with real Linux hosts (issue #12 item 2): a VM reaches
an outside host through SNAT, the outside reaches a VM through its floating IP, and replies go
straight back to the VM's hypervisor."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from scapy.layers.inet import ICMP, IP
from scapy.layers.vxlan import VXLAN

from ryu_overlay.pipeline import TABLE_IDS
from ryu_overlay.testing.overlay import PORTS, Overlay, deploy, put

OUTSIDE_MAC = "02:ee:00:00:00:01"
NEXT_HOP, OUTSIDE = "198.51.100.1", "203.0.113.5"
GATEWAY_IP, FLOATING = "198.51.100.2", "198.51.100.10"
ROUTER = {"tenant": "acme", "interfaces": [{"network": "blue", "ip": "10.1.0.254/24"}],
          "gateway": {"hypervisor": "hv3", "interface": "uplink0", "ip": f"{GATEWAY_IP}/24", "next_hop": NEXT_HOP},
          "floating_ips": {FLOATING: "a2"}}


def with_gateway(ctl: Any, make_bed: Any) -> Overlay:
    """a1 on hv1, a2 on hv2 (blue); the router's uplink on hv3, towards the outside host, which is
    the next hop (198.51.100.1) and also holds 203.0.113.5."""
    ports = {name: PORTS[name] for name in ("a1", "a2")}
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port), ports=ports)
    bed = overlay.bed
    bed.add_outside("out", "hv3", "uplink0", OUTSIDE_MAC, [NEXT_HOP, OUTSIDE])
    put(ctl, "/v1/routers/r1", ROUTER)
    for vm in ("a1", "a2"):
        bed.vm_exec(vm, ["ip", "route", "add", "default", "via", "10.1.0.254"], check=True)
    overlay.wait_in_sync()
    deadline = time.monotonic() + 20
    while ctl.api("GET", "/v1/stats")[1]["next_hop_learned"] < 1:
        assert time.monotonic() < deadline, "the next hop was never resolved"
        time.sleep(0.2)
    overlay.wait_in_sync()
    return overlay


def tcp_peer(overlay: Overlay, server: str, client: str, address: str) -> str:
    """The address a TCP server in ``server`` sees when ``client`` connects to ``address``."""
    bed = overlay.bed
    code = ("import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            "s.bind(('0.0.0.0', 8080)); s.listen(); s.settimeout(20); c, a = s.accept(); "
            "c.sendall(a[0].encode()); c.close()")
    srv = subprocess.Popen(["ip", "netns", "exec", bed.vms[server].netns, sys.executable, "-c", code])
    bed.procs.append(srv)
    try:
        ask = ("import socket, time\n"
               "for _ in range(50):\n"
               "    try:\n"
               f"        c = socket.create_connection(('{address}', 8080), timeout=2); break\n"
               "    except OSError: time.sleep(0.2)\n"
               "print(c.recv(100).decode())")
        return bed.vm_exec(client, [sys.executable, "-c", ask], check=True, timeout=30).stdout.strip()
    finally:
        srv.wait(25)


def test_a_vm_reaches_the_outside_with_the_gateway_address_and_replies_come_straight_back(ctl, make_bed):
    overlay = with_gateway(ctl, make_bed)
    bed = overlay.bed
    assert bed.ping("a1", OUTSIDE, count=2)  # warms the path (ARP for the gateway, conntrack)
    outside = bed.capture(bed.vms["out"].netns, "eth0", "icmp")
    caps = {hv: bed.underlay_capture(hv) for hv in ("hv1", "hv3")}
    assert bed.ping("a1", OUTSIDE, count=3)
    time.sleep(0.5)
    seen = outside.stop()
    requests = [p for p in seen if ICMP in p and p[ICMP].type == 8]
    assert len(requests) == 3
    assert {(p[IP].src, p[IP].dst, p.src, p[IP].ttl) for p in requests} == \
        {(GATEWAY_IP, OUTSIDE, ctl.api("GET", "/v1/routers/r1")[1]["mac"], 63)}
    hv1_ip, hv3_ip = bed.hvs["hv1"].tunnel_ip, bed.hvs["hv3"].tunnel_ip
    from_hv3 = [p for p in caps["hv3"].stop() if VXLAN in p and p[IP].src == hv3_ip and ICMP in p[VXLAN]]
    # the replies, un-NATed on hv3, went straight to hv1 with blue's VNI, to a1's address
    assert len(from_hv3) == 3
    assert {(p[IP].dst, p[VXLAN].vni, p[VXLAN][IP].dst, p[VXLAN][ICMP].type) for p in from_hv3} == \
        {(hv1_ip, 5001, "10.1.0.1", 0)}
    to_hv3 = [p for p in caps["hv1"].stop() if VXLAN in p and p[IP].src == hv1_ip and ICMP in p[VXLAN]]
    assert {(p[IP].dst, p[VXLAN].vni, p[VXLAN][IP].src) for p in to_hv3} == {(hv3_ip, 5001, "10.1.0.1")}
    assert tcp_peer(overlay, "out", "a1", OUTSIDE) == GATEWAY_IP
    _, stats = ctl.api("GET", "/v1/stats")
    assert stats["next_hop_requests"] >= 1 and stats["next_hop_learned"] == 1


def test_the_outside_reaches_a_vm_by_its_floating_ip_and_the_vm_leaves_with_it(ctl, make_bed):
    overlay = with_gateway(ctl, make_bed)
    bed = overlay.bed
    at_a2 = bed.capture(bed.vms["a2"].netns, "eth0", "icmp")
    assert bed.ping("out", FLOATING, count=3)
    time.sleep(0.3)
    requests = [p for p in at_a2.stop() if ICMP in p and p[ICMP].type == 8]
    assert {(p[IP].src, p[IP].dst) for p in requests} == {(NEXT_HOP, "10.1.0.2")}
    outside = bed.capture(bed.vms["out"].netns, "eth0", "icmp")
    assert bed.ping("a2", OUTSIDE, count=2)
    time.sleep(0.3)
    assert {p[IP].src for p in outside.stop() if ICMP in p and p[ICMP].type == 8} == {FLOATING}
    assert tcp_peer(overlay, "a2", "out", FLOATING) == NEXT_HOP
    neigh = bed.vm_exec("out", ["ip", "neigh", "show", FLOATING], check=True).stdout
    assert ctl.api("GET", "/v1/routers/r1")[1]["mac"] in neigh  # answered on the uplink, in the switch


def test_ovs_decodes_the_gateway_flows_it_was_sent(ctl, make_bed):
    overlay = with_gateway(ctl, make_bed)
    flows = "\n".join(overlay.bed.dump_flows("hv3"))
    assert f"actions=ct(commit,table={TABLE_IDS['uplink_out']},zone=1,nat(src={GATEWAY_IP}))" in flows, flows
    assert f"actions=ct(table={TABLE_IDS['uplink_nat']},zone=1,nat)" in flows, flows
    assert f"set_field:{OUTSIDE_MAC}->eth_dst" in flows, flows
