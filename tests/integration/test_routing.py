"""The distributed router on real Open vSwitch with real Linux VMs (issue #12 item 1)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import IPv6
from scapy.layers.vxlan import VXLAN

from ryu_overlay.pipeline import TABLE_IDS
from ryu_overlay.testing.overlay import PORTS, Overlay, deploy, put

GREEN_VNI = 5003
GREEN_PORTS = {"g2": ("green", "02:bb:00:00:00:02", ["10.2.0.2", "fd00:2::2"], "hv2", "tapG2"),
               "g3": ("green", "02:bb:00:00:00:03", ["10.2.0.3", "fd00:2::3"], "hv3", "tapG3")}
ROUTER = {"tenant": "acme", "interfaces": [{"network": "blue", "ip": "10.1.0.254/24"},
                                           {"network": "blue", "ip": "fd00:1::fe/64"},
                                           {"network": "green", "ip": "10.2.0.254/24"},
                                           {"network": "green", "ip": "fd00:2::fe/64"}]}
GATEWAYS = {"blue": ("10.1.0.254", "fd00:1::fe"), "green": ("10.2.0.254", "fd00:2::fe")}


def routed(ctl: Any, make_bed: Any) -> Overlay:
    """a1 (blue) on hv1; g2 and g3 (green) on hv2 and hv3; one router between blue and green."""
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port), ports={"a1": PORTS["a1"]})
    bed = overlay.bed
    put(ctl, "/v1/networks/green", {"vni": GREEN_VNI, "tenant": "acme", "subnets": ["10.2.0.0/24", "fd00:2::/64"]})
    for name, (net, mac, ips, hv, iface) in GREEN_PORTS.items():
        put(ctl, f"/v1/ports/{name}", {"network": net, "mac": mac, "ips": ips, "hypervisor": hv, "interface": iface})
        bed.add_vm(name, hv, iface, mac, ips)
    put(ctl, "/v1/routers/r1", ROUTER)
    for vm, net in (("a1", "blue"), ("g2", "green"), ("g3", "green")):
        v4, v6 = GATEWAYS[net]
        bed.vm_exec(vm, ["ip", "route", "replace", "default", "via", v4], check=True)
        # the router's Router Advertisement may already have given a default route via its link-local address
        bed.vm_exec(vm, ["ip", "-6", "route", "replace", "default", "via", v6], check=True)
    overlay.wait_in_sync()
    return overlay


def ping_ttls(overlay: Overlay, vm: str, dst: str) -> list[int]:
    out = overlay.bed.vm_exec(vm, ["ping", "-c", "3", "-i", "0.2", "-W", "2", dst]).stdout
    return [int(t) for t in re.findall(r"(?:ttl|hlim)=(\d+)", out)]


def test_ping_across_subnets_and_hypervisors_with_ttl_one_less_straight_to_the_targets_hypervisor(ctl, make_bed):
    overlay = routed(ctl, make_bed)
    bed = overlay.bed
    assert bed.ping("a1", "10.2.0.2", count=2)  # resolves the gateway (in-switch ARP) and warms the path
    assert bed.ping("a1", "fd00:2::2", count=2, wait=3)  # the router's NA comes from the controller
    caps = {hv: bed.underlay_capture(hv) for hv in ("hv1", "hv2", "hv3")}
    at_g2 = bed.capture(bed.vms["g2"].netns, "eth0", "-Q in icmp or icmp6")
    # Linux sends with TTL / hop limit 64: the reply, routed once on hv2, arrives with 63
    assert ping_ttls(overlay, "a1", "10.2.0.2") == [63, 63, 63]
    assert ping_ttls(overlay, "a1", "fd00:2::2") == [63, 63, 63]
    time.sleep(0.5)
    seen = {hv: [p for p in cap.stop() if VXLAN in p] for hv, cap in caps.items()}
    arrived = at_g2.stop()
    requests4 = [p for p in arrived if IP in p and ICMP in p and p[ICMP].type == 8]
    requests6 = [p for p in arrived if IPv6 in p and p[IPv6].nh == 58 and bytes(p[IPv6].payload)[:1] == b"\x80"]
    assert [p[IP].ttl for p in requests4] == [63] * 3
    assert [p[IPv6].hlim for p in requests6] == [63] * 3
    hv1_ip, hv2_ip = bed.hvs["hv1"].tunnel_ip, bed.hvs["hv2"].tunnel_ip
    out_of_hv1 = [p for p in seen["hv1"] if p[IP].src == hv1_ip and (IP in p[VXLAN] or IPv6 in p[VXLAN])]
    # the routed requests left hv1 for hv2 itself, with green's VNI, already routed (TTL 63)
    assert {(p[IP].dst, p[VXLAN].vni) for p in out_of_hv1} == {(hv2_ip, GREEN_VNI)}
    inner = [p[VXLAN].payload for p in out_of_hv1]
    assert sorted(p[IP].ttl if IP in p else p[IPv6].hlim for p in inner) == [63] * 6
    # and back from hv2 with blue's VNI; hv3, which hosts green too, saw none of it
    back = [p for p in seen["hv2"] if p[IP].src == hv2_ip and p[VXLAN].vni == 5001]
    assert len(back) == 6 and all(p[IP].dst == hv1_ip for p in back)
    assert [p for p in seen["hv3"] if is_echo(p[VXLAN].payload)] == []


def is_echo(frame: Any) -> bool:
    if IP in frame:
        return ICMP in frame and frame[ICMP].type in (0, 8)
    return IPv6 in frame and frame[IPv6].nh == 58 and bytes(frame[IPv6].payload)[:1] in (b"\x80", b"\x81")


def test_the_same_path_to_a_third_hypervisor_and_between_two_hypervisors_of_the_target_network(ctl, make_bed):
    overlay = routed(ctl, make_bed)
    bed = overlay.bed
    assert bed.ping("a1", "10.2.0.3", count=2)
    assert ping_ttls(overlay, "a1", "10.2.0.3") == [63, 63, 63]
    assert ping_ttls(overlay, "g3", "10.1.0.1") == [63, 63, 63]
    assert ping_ttls(overlay, "g2", "10.2.0.3") == [64, 64, 64]  # same subnet: switched, not routed


@pytest.mark.parametrize("family", ["4", "6"])
def test_ttl_expiry_and_unknown_destinations_get_icmp_errors_from_the_router(ctl, make_bed, family):
    overlay = routed(ctl, make_bed)
    bed = overlay.bed
    target, unknown, router = ("10.2.0.2", "10.2.0.77", "10.1.0.254") if family == "4" else \
        ("fd00:2::2", "fd00:2::77", "fd00:1::fe")
    assert bed.ping("a1", target, count=2, wait=3)
    expired = bed.vm_exec("a1", ["ping", "-c", "1", "-t", "1", "-W", "2", target]).stdout
    assert re.search(rf"From {re.escape(router)}.*(Time to live exceeded|Time exceeded: Hop limit)", expired), expired
    lost = bed.vm_exec("a1", ["ping", "-c", "1", "-W", "2", unknown]).stdout
    assert re.search(rf"From {re.escape(router)}.*(Destination Host Unreachable|Destination unreachable: "
                     rf"Address unreachable)", lost), lost
    _, stats = ctl.api("GET", "/v1/stats")
    assert stats["icmp_time_exceeded"] >= 1 and stats["icmp_unreachable"] >= 1


def test_ovs_decodes_the_router_flows_it_was_sent(ctl, make_bed):
    overlay = routed(ctl, make_bed)
    flows = "\n".join(overlay.bed.dump_flows("hv1"))
    mac = ctl.api("GET", "/v1/routers/r1")[1]["mac"]
    assert re.search(rf"dl_dst={mac},nw_ttl=1 actions=meter:65534,CONTROLLER", flows), flows
    assert re.search(rf"dl_dst={mac},nw_dst=10\.2\.0\.0/24 actions=dec_ttl,set_field:{mac}->eth_src,"
                     rf"write_metadata:0x138b/0x1ffffff,goto_table:{TABLE_IDS['l3_neighbour']}", flows), flows
