"""Malformed OpenFlow from a switch connection cannot stop the controller or disturb other switches.

A raw TCP client on the controller's OpenFlow port sends garbage: random bytes, headers with
impossible lengths, and, after a completed handshake, every message type with a random or
truncated body. After each, the controller must still answer REST and still program the
fake switches that behave.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from ryu_overlay.compat import ofproto as ofp
from ryu_overlay.testing.controller_proc import HOST
from ryu_overlay.testing.loadgen import Fleet

DEADLINE = 30.0  # a bound on waiting, not a performance assertion
IMPOSTOR_DPID = 0xBAD0_0000_0000_0001  # not a hypervisor of the placement
header = st.builds(lambda version, kind, length, xid: struct.pack("!BBHI", version, kind, length, xid),
                   st.sampled_from([ofp.OFP_VERSION, 1, 5, 0, 255]), st.integers(0, 40),
                   st.one_of(st.integers(0, 16), st.integers(0, 0xFFFF)), st.integers(0, 0xFFFFFFFF))
message = st.tuples(header, st.binary(max_size=256)).map(lambda hb: hb[0] + hb[1])
garbage = st.one_of(st.binary(min_size=1, max_size=512), message,
                    st.lists(message, min_size=1, max_size=5).map(b"".join))


def recv_message(sock: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 8:
        chunk = sock.recv(8 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    _, kind, length, _ = struct.unpack("!BBHI", head)
    body = b""
    while len(body) < length - 8:
        body += sock.recv(length - 8 - len(body))
    return kind, body


def send_garbage(port: int, data: bytes, handshake: bool) -> None:
    with socket.create_connection((HOST, port), timeout=DEADLINE) as sock:
        if handshake:
            sock.sendall(struct.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_HELLO, 8, 1))
            while recv_message(sock)[0] != ofp.OFPT_FEATURES_REQUEST:
                pass
            sock.sendall(struct.pack("!BBHIQIBB2xII", ofp.OFP_VERSION, ofp.OFPT_FEATURES_REPLY, 32, 2,
                                     IMPOSTOR_DPID, 0, 254, 0, 0x4F, 0))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(0.2)
            while sock.recv(65536):  # whatever the controller says back, until it closes or goes quiet
                pass
        except OSError:
            pass  # the controller dropped the connection: that is an acceptable answer


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=garbage, handshake=st.booleans())
def test_garbage_on_a_switch_connection_leaves_the_controller_serving(controller, data, handshake):
    send_garbage(controller.ofp_port, data, handshake)
    deadline = time.monotonic() + DEADLINE
    while controller.api("GET", "/v1/stats")[0] != 200:
        assert time.monotonic() < deadline and controller.proc.poll() is None, controller.log_tail()
        time.sleep(0.05)


def test_switches_are_still_programmed_after_garbage_connections(controller, placement):
    for data, handshake in ((b"\x04\x00\x00\x00" * 8, False), (struct.pack("!BBHI", 4, 10, 4, 0), True),
                            (struct.pack("!BBHI", 4, 19, 12, 0) + b"\xff" * 4, True), (b"\xff" * 64, True)):
        send_garbage(controller.ofp_port, data, handshake)

    async def scenario() -> None:
        fleet = Fleet(placement.specs(), record=True)
        try:
            await fleet.connect(HOST, controller.ofp_port, concurrency=2, timeout=DEADLINE)
            topo = placement.topology()
            expected = placement.expected_states(topo)
            await fleet.wait(expected, DEADLINE)
            assert controller.api("GET", "/v1/stats")[1]["hypervisors_connected"] == len(placement.hypervisors)
        finally:
            fleet.close()

    asyncio.run(asyncio.wait_for(scenario(), 4 * DEADLINE))
