"""Neighbor Discovery answered by the switch, on real Open vSwitch with Linux neighbours.

The in-switch responder rewrites a solicitation into an advertisement with OVS's Ericsson
extension fields; OVS must recompute the ICMPv6 checksum, and Linux must accept the result.
So the advertisement the VM receives is checked byte by byte (scapy), and the VM's neighbour
cache is the judge.
"""

from __future__ import annotations

import signal
import time

from scapy.compat import raw
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from ryu_overlay.model import link_local
from ryu_overlay.testing.overlay import PORTS, deploy


def checksum_ok(pkt: Ether) -> bool:
    again = Ether(raw(pkt))
    del again[ICMPv6ND_NA].cksum
    return Ether(raw(again))[ICMPv6ND_NA].cksum == pkt[ICMPv6ND_NA].cksum


def neighbour(bed, vm: str, ip: str) -> str:
    return bed.vm_exec(vm, ["ip", "-6", "neigh", "show", ip, "dev", "eth0"], check=True).stdout.strip()


def wait_addresses_usable(bed, vms: tuple[str, ...], timeout: float = 10) -> None:
    """Until the kernel's own DAD of each VM's link-local address is over (a tentative address takes no traffic)."""
    deadline = time.monotonic() + timeout
    for vm in vms:
        while "tentative" in (addr := bed.vm_exec(vm, ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout):
            assert time.monotonic() < deadline, addr
            time.sleep(0.1)


def test_with_the_controller_killed_a_vm_resolves_a_new_ipv6_neighbour_from_its_own_switch(ctl, make_bed):
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port))
    bed = overlay.bed
    flows = "\n".join(bed.dump_flows("hv1"))
    assert "nd_options_type=2 actions=move:NXM_OF_ETH_SRC[]->NXM_NX_ND_TLL[],IN_PORT" in flows
    assert "reported an error" not in ctl.log_tail(400)
    wait_addresses_usable(bed, ("a1", "a3"))
    ctl.stop(signal.SIGKILL)

    _, mac3, ips3, _, _ = PORTS["a3"]
    a3_ll = str(link_local(mac3))
    bed.flush_neighbours("a1")
    assert neighbour(bed, "a1", ips3[1]) == ""
    vm_cap = bed.capture(bed.vms["a1"].netns, "eth0", "icmp6")
    tunnel = {hv: bed.underlay_capture(hv) for hv in ("hv1", "hv3")}
    assert bed.ping("a1", ips3[1], count=3), "no IPv6 ping to a3 with the controller down"
    assert bed.ping("a1", a3_ll + "%eth0", count=1), "no ping to a3's link-local address"
    entry = neighbour(bed, "a1", ips3[1])
    assert f"lladdr {mac3}" in entry and any(s in entry for s in ("REACHABLE", "STALE", "DELAY")), entry

    answers = [p for p in vm_cap.stop() if ICMPv6ND_NA in p and p[Ether].dst == PORTS["a1"][1]]
    assert {p[ICMPv6ND_NA].tgt for p in answers} >= {ips3[1], a3_ll}
    for na in answers:
        adv = na[ICMPv6ND_NA]
        assert checksum_ok(na), na.show2(dump=True)
        assert (adv.R, adv.S, adv.O, adv.res, adv.code) == (0, 1, 1, 0, 0)
        assert na[Ether].src == mac3 and na[IPv6].src == adv.tgt and na[IPv6].hlim == 255
        assert adv[ICMPv6NDOptDstLLAddr].lladdr == mac3
    for hv, cap in tunnel.items():
        inner = [p[VXLAN].payload for p in cap.stop() if VXLAN in p]
        assert inner, f"no VXLAN traffic on {hv}: the ping did not cross the tunnel"
        assert [p for p in inner if ICMPv6ND_NS in p and p[ICMPv6ND_NS].code == 0
                and not p[Ether].dst.startswith("02:")] == [], f"a multicast NS went into the tunnel at {hv}"


def test_dad_for_another_ports_address_is_defended_and_a_solicitation_without_a_link_layer_option_answered(
        ctl, make_bed):
    overlay = deploy(ctl, make_bed(3, ctl.ofp_port))
    bed = overlay.bed
    wait_addresses_usable(bed, ("a1",))
    _, mac3, ips3, _, _ = PORTS["a3"]
    # a1 tries to take a3's address: its DAD probe (source ::) must fail on the controller's defence.
    bed.vm_exec("a1", ["ip", "-6", "addr", "add", f"{ips3[1]}/64", "dev", "eth0"], check=True)
    deadline = time.monotonic() + 10
    while "dadfailed" not in (addr := bed.vm_exec("a1", ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout):
        assert time.monotonic() < deadline, addr
        time.sleep(0.2)
    assert ctl.api("GET", "/v1/stats")[1]["nd_dad_defended"] >= 1

    # A multicast NS without the source link-layer option, from a1's real address: the controller answers.
    vm_cap = bed.capture(bed.vms["a1"].netns, "eth0", "icmp6")
    _, mac1, ips1, _, _ = PORTS["a1"]
    overlay.send_frame("a1", f"Ether(src='{mac1}', dst='33:33:ff:00:00:03')/IPv6(src='{ips1[1]}', "
                             f"dst='ff02::1:ff00:3', hlim=255)/ICMPv6ND_NS(tgt='{ips3[1]}')")
    deadline = time.monotonic() + 5
    while True:
        time.sleep(0.3)
        if ctl.api("GET", "/v1/stats")[1]["nd_answered"] >= 1 or time.monotonic() > deadline:
            break
    answers = [p for p in vm_cap.stop() if ICMPv6ND_NA in p and p[ICMPv6ND_NA].tgt == ips3[1]
               and p[Ether].dst == mac1]
    assert answers and answers[0][ICMPv6NDOptDstLLAddr].lladdr == mac3 and answers[0][ICMPv6ND_NA].S == 1
