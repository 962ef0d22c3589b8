"""Packet-in limits on real Open vSwitch (issue #16 item 3): every VM interface has its own meter,
and the whole hypervisor has the OpenFlow controller meter on top. Six VMs flood frames from
unknown MACs at once; each VM's meter passes its share, the hypervisor's meter cuts the sum,
and the controller receives no more than that."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from ryu_overlay.pipeline import HYPERVISOR_PACKET_IN_BURST, HYPERVISOR_PACKET_IN_RATE
from ryu_overlay.testing.netns_testbed import OvsInstance, netns_prefix
from ryu_overlay.testing.overlay import deploy

VMS = 6
FRAMES = 3000
# Each sender builds its frames, then waits for a common start, so that the floods overlap.
FLOOD = ("import logging, time; logging.getLogger('scapy').setLevel(logging.ERROR)\n"
         "from scapy.all import Ether, IP, UDP, sendp\n"
         "mac = '02:98:%02x:00:%02x:%02x'\n"
         "frames = [Ether(src=mac % ({vm}, i >> 8, i & 255), dst='ff:ff:ff:ff:ff:ff')/IP(src='10.9.0.{vm}')/UDP()"
         " for i in range({frames})]\n"
         "time.sleep(max(0.0, {start} - time.time()))\n"
         "sendp(frames, iface='eth0', verbose=False)")


def meter(ovs: OvsInstance, meter_id: str) -> tuple[int, int]:
    out = ovs.ofctl("meter-stats", f"meter={meter_id}")
    entered = int(re.search(r"packet_in_count:(\d+)", out).group(1))  # type: ignore[union-attr]
    dropped = int(re.search(r"0: packet_count:(\d+)", out).group(1))  # type: ignore[union-attr]
    return entered, dropped


def test_the_hypervisor_meter_caps_what_all_its_vms_send_up_together(ctl, make_bed):
    overlay = deploy(ctl, make_bed(1, ctl.ofp_port), ports={})
    bed = overlay.bed
    ovs = bed.hvs["hv1"].ovs
    for i in range(1, VMS + 1):
        bed.add_vm(f"f{i}", "hv1", f"tapF{i}", f"02:98:{i:02x}:00:00:00", [])
    deadline = time.monotonic() + 20
    while not all(re.search(rf"in_port={bed.ofport('hv1', f'tapF{i}')}[ ,]", " ".join(bed.dump_flows("hv1")))
                  for i in range(1, VMS + 1)):
        assert time.monotonic() < deadline, "every interface gets its packet-in meter"
        time.sleep(0.1)
    config = ovs.ofctl("dump-meters")
    assert re.search(rf"meter=controller pktps burst.*\n?\s*type=drop rate={HYPERVISOR_PACKET_IN_RATE} "
                     rf"burst_size={HYPERVISOR_PACKET_IN_BURST}", config), config
    # The controller's count is read after the meter's at the start and before it at the end, with time for
    # packet-ins in flight to arrive: frames the VMs' stacks send on their own then count on the meter's side.
    hv_before = meter(ovs, "controller")
    time.sleep(1.0)
    before = ctl.ok("GET", "/v1/stats")["packet_in"]
    start = time.time() + 5
    senders = [subprocess.Popen([*netns_prefix(bed.vms[f"f{i}"].netns), sys.executable, "-c",
                                 FLOOD.format(vm=i, frames=FRAMES, start=start)], stderr=subprocess.PIPE)
               for i in range(1, VMS + 1)]
    for proc in senders:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    time.sleep(1.0)
    received = ctl.ok("GET", "/v1/stats")["packet_in"] - before
    per_vm = [meter(ovs, str(bed.ofport("hv1", f"tapF{i}"))) for i in range(1, VMS + 1)]
    passed_vms = sum(entered - dropped for entered, dropped in per_vm)
    entered, dropped = (after - b for after, b in zip(meter(ovs, "controller"), hv_before, strict=True))
    assert all(e >= FRAMES // 2 and d > 0 for e, d in per_vm), per_vm  # each VM's own meter took its share
    # What the VMs' meters passed together, the hypervisor's meter cut.
    assert dropped > 0 and entered - dropped < passed_vms, (entered, dropped, per_vm)
    assert received <= entered - dropped
