"""The overlay on real Open vSwitch: the controller process, its REST API, tunnels, isolation, restarts."""

from __future__ import annotations

import signal
import subprocess
import time

from scapy.layers.l2 import ARP
from scapy.layers.vxlan import VXLAN

from ryu_overlay.testing.controller_proc import ControllerProcess
from ryu_overlay.testing.overlay import NETWORKS, PORTS, deploy


def test_real_controller_serves_rest_and_programs_connected_bridges(ctl, make_bed):
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port))
    status, body = ctl.api("GET", "/v1/hypervisors")
    assert status == 200 and [h["connected"] for h in body["hypervisors"]] == [True, True, True]
    assert ctl.api("GET", "/v1/ports/a1")[1]["location_source"] == "declared"
    # hv3 hosts blue only: it carries no flow of red's VNI
    vnis = {int(c, 16) >> 32 & 0xFFFFFF for c in overlay.flows("hv3")}
    assert vnis == {0, NETWORKS["blue"]}


def test_ping_across_hypervisors_over_ipv4_and_ipv6(ctl, make_bed):
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port))
    bed = overlay.bed
    for src, dst in (("a1", "10.1.0.2"), ("a1", "fd00:1::2"), ("a2", "10.1.0.3"), ("a3", "fd00:1::1"),
                     ("r1", "10.1.0.2"), ("r2", "fd00:1::1")):
        assert bed.ping(src, dst, count=2), (src, dst)


def test_tenants_with_the_same_addresses_stay_isolated(ctl, make_bed):
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port))
    bed = overlay.bed
    red_view = bed.capture(bed.vms["r2"].netns, "eth0", "-Q in icmp or arp")
    blue_view = bed.capture(bed.vms["a2"].netns, "eth0", "-Q in icmp")
    assert bed.ping("a1", "10.1.0.2", count=3)
    overlay.send_frame("a1", "Ether(src='02:aa:00:00:00:01', dst='ff:ff:ff:ff:ff:ff')/"
                             "ARP(op=1, hwsrc='02:aa:00:00:00:01', psrc='10.1.0.1', pdst='10.1.0.99')")
    time.sleep(0.5)
    assert len(blue_view.stop()) >= 3  # the capture works: a2 saw the echo requests
    assert red_view.stop() == []       # r2, with a2's MAC and address, saw nothing of acme


def test_broadcast_reaches_the_underlay_only_towards_hypervisors_hosting_the_network(ctl, make_bed):
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port))
    bed = overlay.bed
    caps = {hv: bed.underlay_capture(hv) for hv in ("hv2", "hv3")}
    for _ in range(3):  # red lives on hv1 and hv2 only; this ARP is for an address nobody has
        overlay.send_frame("r1", "Ether(src='02:aa:00:00:00:01', dst='ff:ff:ff:ff:ff:ff')/"
                                 "ARP(op=1, hwsrc='02:aa:00:00:00:01', psrc='10.1.0.1', pdst='10.1.0.99')")
    time.sleep(0.5)
    seen = {hv: [p for p in cap.stop() if VXLAN in p] for hv, cap in caps.items()}
    probes = [p for p in seen["hv2"] if ARP in p and p[ARP].pdst == "10.1.0.99"]
    assert [p[VXLAN].vni for p in probes] == [NETWORKS["red"]] * 3  # one copy each to the hypervisor hosting red
    assert [p for p in seen["hv3"] if p[VXLAN].vni == NETWORKS["red"]] == []  # none to hv3, which does not


def test_controller_restart_keeps_traffic_flowing_and_flows_untouched(ctl, make_bed, tmp_path):
    overlay = deploy(ctl, make_bed(2, ctl.ofp_port),
                     ports={k: v for k, v in PORTS.items() if v[3] != "hv3"})
    bed = overlay.bed
    before = {hv: overlay.flows(hv) for hv in bed.hvs}
    pinger = subprocess.Popen(["ip", "netns", "exec", bed.vms["a1"].netns, "ping", "-i", "0.05", "-w", "6",
                               "10.1.0.2"], stdout=subprocess.PIPE, text=True)
    bed.procs.append(pinger)
    time.sleep(1)
    ctl.stop(signal.SIGKILL)
    time.sleep(1)
    restarted = ControllerProcess(ctl.db, tmp_path / "restarted.log", ofp_port=ctl.ofp_port,
                                  rest_port=ctl.rest_port)
    restarted.start()
    try:
        overlay.ctl = restarted
        overlay.wait_in_sync()
        out, _ = pinger.communicate(timeout=20)
        assert " 0% packet loss" in out, out
        after = {hv: overlay.flows(hv) for hv in bed.hvs}
        for hv in bed.hvs:
            assert after[hv].keys() == before[hv].keys()
            assert all(after[hv][c] > before[hv][c] for c in before[hv]), "a flow was re-installed"
        stats = restarted.api("GET", "/v1/stats")[1]
        assert stats["flow_mods"] == 0 and stats["group_mods"] == 0
    finally:
        restarted.stop()


def test_a_restarted_open_vswitch_is_reprogrammed_on_reconnect(ctl, make_bed):
    overlay = deploy(ctl, make_bed(2, ctl.ofp_port), ports={k: v for k, v in PORTS.items() if v[3] != "hv3"})
    bed = overlay.bed
    before = set(overlay.flows("hv2"))
    hv2 = bed.hvs["hv2"]
    hv2.ovs.kill()  # both daemons die; the bridge stays in the database, its flows are gone
    hv2.ovs.start()
    bed.hv_exec("hv2", ["ip", "addr", "replace", f"{hv2.tunnel_ip}/24", "dev", "br-phy"])
    bed.hv_exec("hv2", ["ip", "link", "set", "br-phy", "up"])
    overlay.wait_in_sync()
    assert set(overlay.flows("hv2")) == before
    assert bed.ping("a1", "10.1.0.2", count=3) and bed.ping("r2", "fd00:1::1", count=3)
