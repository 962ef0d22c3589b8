"""Traffic made inside a VM's namespace by small Python programs on a raw socket.

Frames are built by the caller (with scapy) and passed as hex, so the programs stay tiny and
fast: one sends a frame as fast as it can, one counts the replies addressed to the VM, one
times request/reply round trips.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys

from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import Ether

from .netns_testbed import Testbed, kill_all

# Sends one frame as fast as one raw socket can for N seconds; prints how many it sent.
FLOOD = r"""
import socket, sys, time
frame, seconds = bytes.fromhex(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(64):
        try:
            s.send(frame)
            sent += 1
        except OSError:
            pass
print(sent)
"""

# Counts frames to this VM's MAC with a given EtherType and byte at an offset, until none came for
# a second after the first; prints the count and the seconds between the first and the last.
COUNTER = r"""
import socket, sys, time
mac, ethertype, offset, value = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
s.bind(("eth0", 0))
s.settimeout(1.0)
print("ready", flush=True)
count, first, last = 0, None, None
deadline = time.monotonic() + float(sys.argv[5])
while time.monotonic() < deadline:
    try:
        data = s.recv(2048)
    except socket.timeout:
        if count:
            break
        continue
    if data[:6] == mac and len(data) > offset and data[offset] == value:
        count += 1
        last = time.monotonic()
        first = first or last
print(count, (last - first) if count > 1 else 0.0)
"""

# Sends a request N times, 20 ms apart, and times the first matching reply to each; prints one
# round trip in milliseconds per request, or "lost".
PROBE = r"""
import socket, sys, time
frame, mac = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
ethertype, offset, value, rounds = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
s.bind(("eth0", 0))
out = []
for _ in range(rounds):
    t0 = time.monotonic()
    s.send(frame)
    result = "lost"
    while time.monotonic() - t0 < 1.0:
        s.settimeout(max(1e-3, 1.0 - (time.monotonic() - t0)))
        try:
            data = s.recv(2048)
        except socket.timeout:
            break
        if data[:6] == mac and len(data) > offset and data[offset] == value:
            result = "%.3f" % ((time.monotonic() - t0) * 1000)
            break
    out.append(result)
    time.sleep(0.02)
print(" ".join(out))
"""

ETH_IPV4, ETH_ARP, ETH_IPV6 = 0x0800, 0x0806, 0x86DD
ARP_OP_LOW_BYTE, IP_PROTO, ICMPV6_TYPE = 21, 23, 54  # offsets in an untagged frame
ARP_REPLY, UDP_PROTO, ND_NA = 2, 17, 136


def _python(bed: Testbed, vm: str, script: str, *args: object, timeout: float = 60) -> str:
    out = bed.vm_exec(vm, [sys.executable, "-c", script, *map(str, args)], check=True, timeout=timeout)
    return out.stdout


def flood(bed: Testbed, vm: str, frame: bytes, seconds: float) -> int:
    """Send ``frame`` from ``vm`` as fast as possible for ``seconds``; the number sent."""
    return int(_python(bed, vm, FLOOD, frame.hex(), seconds, timeout=seconds + 30))


def probe(bed: Testbed, vm: str, frame: bytes, ethertype: int, offset: int, value: int,
          rounds: int) -> list[float | None]:
    """Round trips (ms) of ``rounds`` requests from ``vm``; None for a request with no reply in 1 s."""
    mac = bed.vms[vm].mac.replace(":", "")
    out = _python(bed, vm, PROBE, frame.hex(), mac, ethertype, offset, value, rounds, timeout=rounds * 2 + 30)
    return [None if r == "lost" else float(r) for r in out.split()]


class FrameCounter:
    """Counts the frames arriving at a VM (to its MAC, with an EtherType and a byte at an offset)."""

    def __init__(self, bed: Testbed, vm: str, ethertype: int, offset: int, value: int, seconds: float) -> None:
        mac = bed.vms[vm].mac.replace(":", "")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", bed.vms[vm].netns, sys.executable, "-c", COUNTER, mac, str(ethertype),
             str(offset), str(value), str(seconds + 5)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.seconds = seconds

    def result(self) -> tuple[int, float]:
        """(frames counted, seconds between the first and the last)."""
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + 30)
        finally:
            kill_all([self.proc])
        count, span = out.split()
        return int(count), float(span)


def solicitation(src_mac: str, src_ip: str, target: str, source_lla: bool = True) -> bytes:
    """A Neighbor Solicitation to ``target``'s solicited-node group.

    With the source link-layer address option (as Linux sends it) the switch answers a known
    target itself; without it the solicitation goes to the controller, through the port's meter.
    """
    low = int(ipaddress.IPv6Address(target)) & 0xFFFFFF
    group_ip = str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("ff02::1:ff00:0")) | low))
    group_mac = f"33:33:ff:{low >> 16:02x}:{low >> 8 & 0xFF:02x}:{low & 0xFF:02x}"
    ns = Ether(src=src_mac, dst=group_mac) / IPv6(src=src_ip, dst=group_ip, hlim=255) / ICMPv6ND_NS(tgt=target)
    return bytes(ns / ICMPv6NDOptSrcLLAddr(lladdr=src_mac) if source_lla else ns)
