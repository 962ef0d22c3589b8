"""Fake hypervisor bridges that speak OpenFlow 1.3 to the controller, for load tests.

Each ``FakeSwitch`` is one asyncio connection that behaves like an Open vSwitch bridge as far
as the controller can tell: it says HELLO, answers FEATURES, ECHO and BARRIER, reports its
ports, flows, groups and meters in multipart replies, and applies FLOW_MOD, GROUP_MOD and
METER_MOD to a table of its own. It can also raise PACKET_INs (ARP requests, gratuitous ARP)
and time the PACKET_OUT that answers them.

The switch does as little as it can per message, so that a benchmark measures the
controller and not this module: a FLOW_MOD is unpacked only as far as command, cookie,
cookie mask, table and priority, and the match and instructions are kept as raw bytes to be
echoed back in flow statistics. All replies produced by one read are written in one call.

``Placement`` builds a reproducible topology (hypervisors, networks, ports with declared
locations) and ``expected_state`` says, with ``ryu_overlay.flows``, what each bridge should
end up holding, so completion is judged against the controller's own definition of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import random
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..compat import ofproto as ofp
from ..flows import SwitchView, desired_partition, hosted_vnis
from ..model import (
    Hypervisor,
    Network,
    Port,
    parse_hypervisor,
    parse_network,
    parse_port,
)
from ..pipeline import cookie_vni, group_vni
from ..store import Put, SqliteStore, Store
from ..topology import Topology

VERSION = 4
HEADER = struct.Struct("!BBHI")
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")
FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")
FLOW_STATS_REQUEST = struct.Struct("!B3xII4xQQ")
MULTIPART = struct.Struct("!HH4x")
AGGREGATE = struct.Struct("!QQI4x")
PORT_STATS = struct.Struct("!I4x12QII")
FEATURES = struct.Struct("!QIBB2xII")
PORT = struct.Struct("!I4x6s2x16sIIIIIIII")
ENTITY = struct.Struct("!HBxI")
METER_ENTITY = struct.Struct("!HHI")
PACKET_IN = struct.Struct("!IHBBQ")
PACKET_OUT = struct.Struct("!IIH6x")
ERROR = struct.Struct("!HH")
ROLE = struct.Struct("!I4xQ")
U64 = 1 << 64

MAX_MESSAGE = 0xFFFF
MULTIPART_BUDGET = MAX_MESSAGE - HEADER.size - MULTIPART.size
ALL_COOKIE_BITS = (1 << 64) - 1
FLOW_MATCH_OFFSET = HEADER.size + FLOW_MOD.size
RECORD_LIMIT = 4096
PACKET_OUT_LIMIT = 1024

TUNNEL_PORT = "vxlan0"
TUNNEL_OFPORT = 1
ETH_ARP = b"\x08\x06"
BROADCAST_MAC = b"\xff" * 6

FlowKey = tuple[int, int, bytes]
CHANGES = frozenset({ofp.OFPT_FLOW_MOD, ofp.OFPT_GROUP_MOD, ofp.OFPT_METER_MOD, ofp.OFPT_PACKET_OUT})


@dataclass(frozen=True)
class EntityCodes:
    """The OpenFlow numbers of one kind of mod (group or meter): its commands, its "all" id and its errors."""

    add: int
    modify: int
    delete: int
    all: int
    error_type: int
    exists: int
    unknown: int
    bad_command: int


GROUP_MOD = EntityCodes(ofp.OFPGC_ADD, ofp.OFPGC_MODIFY, ofp.OFPGC_DELETE, ofp.OFPG_ALL, ofp.OFPET_GROUP_MOD_FAILED,
                        ofp.OFPGMFC_GROUP_EXISTS, ofp.OFPGMFC_UNKNOWN_GROUP, ofp.OFPGMFC_BAD_COMMAND)
METER_MOD = EntityCodes(ofp.OFPMC_ADD, ofp.OFPMC_MODIFY, ofp.OFPMC_DELETE, ofp.OFPM_ALL, ofp.OFPET_METER_MOD_FAILED,
                        ofp.OFPMMFC_METER_EXISTS, ofp.OFPMMFC_UNKNOWN_METER, ofp.OFPMMFC_BAD_COMMAND)


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchSpec:
    """One simulated bridge: its datapath id and (interface name, OpenFlow port number) pairs."""

    dpid: int
    ports: tuple[tuple[str, int], ...]
    name: str = ""

    @property
    def ofports(self) -> dict[str, int]:
        return dict(self.ports)


@dataclass(frozen=True)
class FlowEntry:
    table_id: int
    priority: int
    cookie: int
    match: bytes
    instructions: bytes


@dataclass(frozen=True)
class PacketOut:
    in_port: int
    outputs: tuple[int, ...]
    data: bytes
    received_at: float


@dataclass(frozen=True)
class SwitchError:
    """An OFPT_ERROR this switch sent, with the whole message that caused it."""

    type: int
    code: int
    msg_type: int
    message: bytes
    sent_at: float


@dataclass(frozen=True)
class SwitchStats:
    dpid: int
    flows: int
    groups: int
    meters: int
    flow_adds: int
    flow_deletes: int
    flow_modifies: int
    group_mods: int
    meter_mods: int
    barriers: int
    errors_sent: int
    packet_ins: int
    packet_outs: int
    connected_at: float | None
    last_barrier_at: float | None


@dataclass(frozen=True)
class Expected:
    """What a bridge should hold: flow cookies, group ids and meter ids."""

    flows: frozenset[int]
    groups: frozenset[int]
    meters: frozenset[int]


@dataclass(frozen=True)
class ConnectReport:
    started_at: float
    all_connected_at: float
    switches: int
    concurrency: int

    @property
    def seconds(self) -> float:
        return self.all_connected_at - self.started_at


# --- the fake switch -------------------------------------------------------------------------


@dataclass
class Election:
    """The largest role-request generation id a bridge has seen (shared by its connections)."""

    generation: int | None = None


class FakeSwitch(asyncio.Protocol):
    """One OpenFlow 1.3 bridge over one TCP connection; its tables survive reconnection.

    ``FakeSwitch(spec, share=other)`` is another connection of ``other``'s bridge (to another
    controller instance): the two share tables, barrier waiters and the role election, and like
    Open vSwitch the bridge refuses changes from a SLAVE connection (``OFPBRC_IS_SLAVE``), a role
    request with an older generation id (``OFPRRFC_STALE``), and demotes the old MASTER when
    another connection becomes MASTER. Packet-ins go to the MASTER connection (or an EQUAL one).
    """

    def __init__(self, spec: SwitchSpec, *, socket_buffer: int = 4 << 20, record: bool = False,
                 share: FakeSwitch | None = None) -> None:
        self.spec = spec
        self.dpid = spec.dpid
        self.ports: dict[str, int] = dict(spec.ports) if share is None else share.ports
        self.socket_buffer = socket_buffer
        self.flows: dict[FlowKey, tuple[int, int, int, int, bytes]] = {} if share is None else share.flows
        self.by_cookie: dict[int, list[FlowKey]] = {} if share is None else share.by_cookie
        self.groups: dict[int, tuple[int, bytes]] = {} if share is None else share.groups
        self.meters: dict[int, tuple[int, bytes]] = {} if share is None else share.meters
        self.election: Election = Election() if share is None else share.election
        self.connections: list[FakeSwitch] = [] if share is None else share.connections
        self.connections.append(self)
        self.role = ofp.OFPCR_ROLE_EQUAL
        self.mastered_at: float | None = None
        self.received: Counter[int] = Counter()
        self.multipart_requests: Counter[int] = Counter()
        # packets an aggregate request for one flow family (cookie's top byte) reports: a switch's
        # responders answer nothing here, so a test says how many they did
        self.family_packets: dict[int, int] = {}
        self.flow_adds = self.flow_deletes = self.flow_modifies = 0
        self.group_mods = self.meter_mods = 0
        self.barriers = self.errors_sent = self.packet_ins = self.packet_out_count = self.disconnects = 0
        self.connected_at: float | None = None
        self.last_barrier_at: float | None = None
        self.packet_outs: deque[PacketOut] = deque(maxlen=PACKET_OUT_LIMIT)
        self.error_log: deque[SwitchError] = deque(maxlen=PACKET_OUT_LIMIT)
        self.recorded: deque[bytes] | None = deque(maxlen=RECORD_LIMIT) if record else None
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._xid = 0x10000000
        self._handshake: asyncio.Future[float] | None = None
        self._echoes: dict[int, asyncio.Future[None]] = {}
        self._waiters: list[tuple[Callable[[FakeSwitch], bool], asyncio.Future[float]]] = (
            [] if share is None else share._waiters)
        self._arp_pending: dict[tuple[bytes, bytes], deque[tuple[float, asyncio.Future[float]]]] = {}

    # --- connection ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self, host: str, port: int, timeout: float = 10.0) -> float:
        """Open the connection and wait for the FEATURES exchange; return when it finished."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.socket_buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self._handshake = loop.create_future()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
            await loop.create_connection(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise
        return await asyncio.wait_for(asyncio.shield(self._handshake), timeout)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def reconnect(self, host: str, port: int, timeout: float = 10.0) -> float:
        """Drop the connection and connect again, keeping every flow, group and meter."""
        transport = self._transport
        self.close()
        deadline = time.monotonic() + timeout
        while transport is not None and self._transport is transport and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return await self.connect(host, port, timeout)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._buf = bytearray()
        transport.write(HEADER.pack(VERSION, ofp.OFPT_HELLO, HEADER.size, self._next_xid()))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.disconnects += 1
        error = ConnectionError(f"switch {self.dpid:016x} lost its connection")
        for fut in self._echoes.values():
            if not fut.done():
                fut.set_exception(error)
        self._echoes.clear()
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(error)

    def _next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        return self._xid

    # --- receiving -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        size = len(buf)
        off = 0
        out = self._out
        while size - off >= 8:
            msg_type = buf[off + 1]
            length = (buf[off + 2] << 8) | buf[off + 3]
            if length < 8:
                self.close()
                return
            end = off + length
            if end > size:
                break
            self.received[msg_type] += 1
            if self.recorded is not None:
                self.recorded.append(bytes(buf[off:end]))
            if msg_type in CHANGES and self.role == ofp.OFPCR_ROLE_SLAVE:
                self._error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE, buf, off, end)
            elif msg_type == ofp.OFPT_FLOW_MOD:
                self._flow_mod(buf, off, end)
            elif msg_type == ofp.OFPT_BARRIER_REQUEST:
                out.append(HEADER.pack(VERSION, ofp.OFPT_BARRIER_REPLY, 8, U32.unpack_from(buf, off + 4)[0]))
                self._barrier_replied()
            else:
                self._other(msg_type, buf, off, end)
            off = end
        if off:
            del buf[:off]
        self._flush()

    def _flush(self) -> None:
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _barrier_replied(self) -> None:
        self._flush()
        now = time.monotonic()
        self.barriers += 1
        self.last_barrier_at = now
        if self._waiters:
            keep = []
            for predicate, fut in self._waiters:
                if fut.done():
                    continue
                if predicate(self):
                    fut.set_result(now)
                else:
                    keep.append((predicate, fut))
            self._waiters[:] = keep

    def _other(self, msg_type: int, buf: bytearray, off: int, end: int) -> None:
        xid = U32.unpack_from(buf, off + 4)[0]
        if msg_type == ofp.OFPT_ECHO_REQUEST:
            self._reply(ofp.OFPT_ECHO_REPLY, xid, bytes(buf[off + 8:end]))
        elif msg_type == ofp.OFPT_ECHO_REPLY:
            fut = self._echoes.pop(xid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif msg_type == ofp.OFPT_FEATURES_REQUEST:
            self._reply(ofp.OFPT_FEATURES_REPLY, xid, FEATURES.pack(self.dpid, 0, 254, 0, 0x4F, 0))
            self.connected_at = time.monotonic()
            if self._handshake is not None and not self._handshake.done():
                self._handshake.set_result(self.connected_at)
        elif msg_type == ofp.OFPT_MULTIPART_REQUEST:
            self._multipart(buf, off, end, xid)
        elif msg_type == ofp.OFPT_GROUP_MOD:
            self._group_mod(buf, off, end)
        elif msg_type == ofp.OFPT_METER_MOD:
            self._meter_mod(buf, off, end)
        elif msg_type == ofp.OFPT_PACKET_OUT:
            self._packet_out(buf, off, end)
        elif msg_type == ofp.OFPT_ROLE_REQUEST:
            self._role_request(buf, off, end, xid)
        elif msg_type == ofp.OFPT_GET_CONFIG_REQUEST:
            self._reply(ofp.OFPT_GET_CONFIG_REPLY, xid, struct.pack("!HH", 0, 0xFFFF))
        elif msg_type in (ofp.OFPT_HELLO, ofp.OFPT_SET_CONFIG, ofp.OFPT_ERROR, ofp.OFPT_SET_ASYNC):
            pass
        else:
            self._error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE, buf, off, end)

    def _role_request(self, buf: bytearray, off: int, end: int, xid: int) -> None:
        role, generation = ROLE.unpack_from(buf, off + HEADER.size)
        if role in (ofp.OFPCR_ROLE_MASTER, ofp.OFPCR_ROLE_SLAVE):
            known = self.election.generation
            if known is not None and (generation - known) % U64 >= U64 // 2:
                self._error(ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE, buf, off, end)
                return
            self.election.generation = generation
        if role == ofp.OFPCR_ROLE_MASTER:
            for other in self.connections:
                if other is not self and other.role == ofp.OFPCR_ROLE_MASTER:
                    other.role = ofp.OFPCR_ROLE_SLAVE
            self.mastered_at = time.monotonic()
        if role != ofp.OFPCR_ROLE_NOCHANGE:
            self.role = role
        self._reply(ofp.OFPT_ROLE_REPLY, xid, ROLE.pack(self.role, generation))

    def master(self) -> FakeSwitch | None:
        """The connection whose role is MASTER, if any."""
        return next((c for c in self.connections if c.role == ofp.OFPCR_ROLE_MASTER and c.connected), None)

    def _reply(self, msg_type: int, xid: int, body: bytes = b"") -> None:
        self._out.append(HEADER.pack(VERSION, msg_type, HEADER.size + len(body), xid) + body)

    def _error(self, err_type: int, code: int, buf: bytearray, off: int, end: int) -> None:
        self.errors_sent += 1
        xid = U32.unpack_from(buf, off + 4)[0]
        self.error_log.append(SwitchError(err_type, code, buf[off + 1], bytes(buf[off:end]), time.monotonic()))
        self._reply(ofp.OFPT_ERROR, xid, ERROR.pack(err_type, code) + bytes(buf[off:min(end, off + 64)]))

    # --- tables --------------------------------------------------------------------------------

    def _flow_mod(self, buf: bytearray, off: int, end: int) -> None:
        (cookie, cookie_mask, table_id, command, idle, hard, priority, _buffer_id, _out_port, _out_group,
         flags) = FLOW_MOD.unpack_from(buf, off + 8)
        match_at = off + FLOW_MATCH_OFFSET
        match_len = (buf[match_at + 2] << 8) | buf[match_at + 3]
        if command == ofp.OFPFC_ADD:
            self.flow_adds += 1
            body = bytes(buf[match_at:end])
            key = (table_id, priority, body[:match_len])
            old = self.flows.get(key)
            if old is not None and old[0] != cookie:
                self._unindex(old[0], key)
            self.flows[key] = (cookie, idle, hard, flags, body)
            if old is None or old[0] != cookie:
                self.by_cookie.setdefault(cookie, []).append(key)
            return
        strict = command in (ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT)
        match = bytes(buf[match_at:match_at + match_len])
        targets = self._select(table_id, cookie, cookie_mask, priority, match, strict)
        if command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
            self.flow_deletes += 1
            for key in targets:
                entry = self.flows.pop(key)
                self._unindex(entry[0], key)
        elif command in (ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
            self.flow_modifies += 1
            instructions = bytes(buf[match_at + _pad8(match_len):end])
            for key in targets:
                c, i, h, f, body = self.flows[key]
                self.flows[key] = (c, i, h, f, body[:_pad8(len(key[2]))] + instructions)
        else:
            self._error(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_COMMAND, buf, off, end)

    def _select(self, table_id: int, cookie: int, mask: int, priority: int, match: bytes,
                strict: bool) -> list[FlowKey]:
        if mask == ALL_COOKIE_BITS:
            candidates: Iterable[FlowKey] = list(self.by_cookie.get(cookie, ()))
        else:
            candidates = [k for k, v in self.flows.items() if (v[0] ^ cookie) & mask == 0]
        if table_id != ofp.OFPTT_ALL:
            candidates = [k for k in candidates if k[0] == table_id]
        if strict:
            return [k for k in candidates if k[1] == priority and k[2] == match]
        wanted = _oxm_fields(match)
        if not wanted:
            return list(candidates)
        return [k for k in candidates if wanted <= _oxm_fields(k[2])]

    def _unindex(self, cookie: int, key: FlowKey) -> None:
        keys = self.by_cookie.get(cookie)
        if keys is None:
            return
        with contextlib.suppress(ValueError):
            keys.remove(key)
        if not keys:
            del self.by_cookie[cookie]

    def _group_mod(self, buf: bytearray, off: int, end: int) -> None:
        self.group_mods += 1
        command, group_type, group_id = ENTITY.unpack_from(buf, off + 8)
        self._entity_mod(self.groups, GROUP_MOD, command, group_id, (group_type, bytes(buf[off + 16:end])),
                         buf, off, end)

    def _meter_mod(self, buf: bytearray, off: int, end: int) -> None:
        self.meter_mods += 1
        command, flags, meter_id = METER_ENTITY.unpack_from(buf, off + 8)
        self._entity_mod(self.meters, METER_MOD, command, meter_id, (flags, bytes(buf[off + 16:end])), buf, off, end)

    def _entity_mod(self, table: dict[int, tuple[int, bytes]], codes: EntityCodes, command: int, entity_id: int,
                    value: tuple[int, bytes], buf: bytearray, off: int, end: int) -> None:
        """A group-mod or meter-mod applied to its table, refused with the error a switch sends."""
        if command == codes.add:
            if entity_id in table:
                self._error(codes.error_type, codes.exists, buf, off, end)
            else:
                table[entity_id] = value
        elif command == codes.modify:
            if entity_id not in table:
                self._error(codes.error_type, codes.unknown, buf, off, end)
            else:
                table[entity_id] = value
        elif command == codes.delete:
            if entity_id == codes.all:
                table.clear()
            else:
                table.pop(entity_id, None)
        else:
            self._error(codes.error_type, codes.bad_command, buf, off, end)

    # --- multipart -----------------------------------------------------------------------------

    def _multipart(self, buf: bytearray, off: int, end: int, xid: int) -> None:
        mp_type = U16.unpack_from(buf, off + 8)[0]
        self.multipart_requests[mp_type] += 1
        body_at = off + HEADER.size + MULTIPART.size
        if mp_type == ofp.OFPMP_PORT_DESC:
            entries: Iterable[bytes] = [_port_desc(self.dpid, name, no) for name, no in self.ports.items()]
        elif mp_type == ofp.OFPMP_FLOW:
            table_id, _out_port, _out_group, cookie, mask = FLOW_STATS_REQUEST.unpack_from(buf, body_at)
            entries = self._flow_stats(table_id, cookie, mask)
        elif mp_type == ofp.OFPMP_AGGREGATE:
            table_id, _out_port, _out_group, cookie, mask = FLOW_STATS_REQUEST.unpack_from(buf, body_at)
            packets = self.family_packets.get(cookie >> 56, 0) if mask == 0xFF << 56 else 0
            entries = [AGGREGATE.pack(packets, 0, sum(1 for _ in self._selected(table_id, cookie, mask)))]
        elif mp_type == ofp.OFPMP_PORT_STATS:
            wanted = U32.unpack_from(buf, body_at)[0]
            entries = [PORT_STATS.pack(no, *([0] * 12), 0, 0) for no in self.ports.values()
                       if wanted in (ofp.OFPP_ANY, no)]
        elif mp_type == ofp.OFPMP_GROUP_DESC:
            entries = [ENTITY.pack(ENTITY.size + len(b), t, gid) + b for gid, (t, b) in self.groups.items()]
        elif mp_type == ofp.OFPMP_METER_CONFIG:
            wanted = U32.unpack_from(buf, body_at)[0]
            entries = [METER_ENTITY.pack(METER_ENTITY.size + len(b), f, mid) + b for mid, (f, b) in self.meters.items()
                       if wanted in (ofp.OFPM_ALL, mid)]
        elif mp_type == ofp.OFPMP_DESC:
            entries = [b"".join(s.encode().ljust(n, b"\0") for s, n in (
                ("ryu_overlay", 256), ("loadgen fake switch", 256), ("0", 256), (f"{self.dpid:016x}", 32),
                (self.spec.name, 256)))]
        else:
            self._error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_MULTIPART, buf, off, end)
            return
        self._multipart_reply(mp_type, xid, entries)

    def _selected(self, table_id: int, cookie: int,
                  mask: int) -> Iterator[tuple[FlowKey, tuple[int, int, int, int, bytes]]]:
        for key, entry in self.flows.items():
            if table_id != ofp.OFPTT_ALL and key[0] != table_id:
                continue
            if mask and (entry[0] ^ cookie) & mask:
                continue
            yield key, entry

    def _flow_stats(self, table_id: int, cookie: int, mask: int) -> Iterator[bytes]:
        pack = FLOW_STATS.pack
        for (tid, priority, _match), (c, idle, hard, flags, body) in self._selected(table_id, cookie, mask):
            yield pack(FLOW_STATS.size + len(body), tid, 0, 0, priority, idle, hard, flags, c, 0, 0) + body

    def _multipart_reply(self, mp_type: int, xid: int, entries: Iterable[bytes]) -> None:
        chunk: list[bytes] = []
        size = 0
        for entry in entries:
            if chunk and size + len(entry) > MULTIPART_BUDGET:
                self._multipart_message(mp_type, xid, ofp.OFPMPF_REPLY_MORE, chunk)
                chunk, size = [], 0
            chunk.append(entry)
            size += len(entry)
        self._multipart_message(mp_type, xid, 0, chunk)

    def _multipart_message(self, mp_type: int, xid: int, flags: int, chunk: list[bytes]) -> None:
        self._reply(ofp.OFPT_MULTIPART_REPLY, xid, MULTIPART.pack(mp_type, flags) + b"".join(chunk))

    # --- packets -------------------------------------------------------------------------------

    def _packet_out(self, buf: bytearray, off: int, end: int) -> None:
        now = time.monotonic()
        self.packet_out_count += 1
        _buffer_id, in_port, actions_len = PACKET_OUT.unpack_from(buf, off + 8)
        at = off + HEADER.size + PACKET_OUT.size
        outputs = []
        stop = at + actions_len
        while at + 4 <= stop:
            a_type, a_len = struct.unpack_from("!HH", buf, at)
            if a_type == ofp.OFPAT_OUTPUT:
                outputs.append(U32.unpack_from(buf, at + 4)[0])
            at += max(a_len, 8)
        data = bytes(buf[stop:end])
        self.packet_outs.append(PacketOut(in_port, tuple(outputs), data, now))
        if len(data) >= 42 and data[12:14] == ETH_ARP and data[20:22] == b"\x00\x02":
            key = (data[38:42], data[28:32])
            pending = self._arp_pending.get(key)
            while pending:
                sent, fut = pending.popleft()
                if not fut.done():
                    fut.set_result(now - sent)
                    break
            if pending is not None and not pending:
                del self._arp_pending[key]

    def send_packet_in(self, in_port: int, frame: bytes, reason: int = ofp.OFPR_ACTION, table_id: int = 0,
                       cookie: int = 0) -> None:
        """Raise a PACKET_IN carrying ``frame`` as if it arrived on ``in_port`` (no buffering)."""
        match = struct.pack("!HHIII", ofp.OFPMT_OXM, 12, 0x80000004, in_port, 0)
        body = PACKET_IN.pack(ofp.OFP_NO_BUFFER, len(frame), reason, table_id, cookie) + match + b"\0\0" + frame
        if self.role == ofp.OFPCR_ROLE_SLAVE:
            raise ConnectionError(f"switch {self.dpid:016x}: a SLAVE connection gets no packet-in")
        if self._transport is None:
            raise ConnectionError(f"switch {self.dpid:016x} is not connected")
        self.packet_ins += 1
        self._transport.write(HEADER.pack(VERSION, ofp.OFPT_PACKET_IN, HEADER.size + len(body), self._next_xid())
                              + body)

    def arp_request(self, in_port: int, src_mac: str, src_ip: str, target_ip: str) -> asyncio.Future[float]:
        """Send "who has ``target_ip``" from ``in_port``; the future gives the seconds until the reply came."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        key = (ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(target_ip).packed)
        self._arp_pending.setdefault(key, deque()).append((time.monotonic(), fut))
        self.send_packet_in(in_port, arp_frame(1, src_mac, src_ip, target_ip))
        return fut

    def gratuitous_arp(self, in_port: int, mac: str, ip: str) -> None:
        self.send_packet_in(in_port, arp_frame(1, mac, ip, ip))

    def add_port(self, name: str, number: int) -> None:
        self.ports[name] = number
        self._port_status(ofp.OFPPR_ADD, name, number)

    def remove_port(self, name: str) -> None:
        number = self.ports.pop(name)
        self._port_status(ofp.OFPPR_DELETE, name, number)

    def _port_status(self, reason: int, name: str, number: int) -> None:
        if self._transport is None:
            return
        body = struct.pack("!B7x", reason) + _port_desc(self.dpid, name, number)
        self._transport.write(HEADER.pack(VERSION, ofp.OFPT_PORT_STATUS, HEADER.size + len(body), self._next_xid())
                              + body)

    # --- observing -----------------------------------------------------------------------------

    @property
    def flow_count(self) -> int:
        return len(self.flows)

    def cookies(self) -> set[int]:
        return set(self.by_cookie)

    def cookies_of(self, vni: int) -> set[int]:
        return {c for c in self.by_cookie if cookie_vni(c) == vni}

    def flow_entries(self) -> list[FlowEntry]:
        return [FlowEntry(t, p, v[0], m, v[4][_pad8(len(m)):]) for (t, p, m), v in self.flows.items()]

    def holds_partition(self, vni: int, expected: Expected) -> bool:
        """Whether the flows and groups of network ``vni`` are exactly ``expected``'s."""
        return (self.cookies_of(vni) == expected.flows
                and {g for g in self.groups if group_vni(g) == vni} == expected.groups)

    def holds(self, expected: Expected) -> bool:
        return (len(self.flows) == len(expected.flows) and len(self.groups) == len(expected.groups)
                and len(self.meters) == len(expected.meters) and self.by_cookie.keys() == expected.flows
                and self.groups.keys() == expected.groups and self.meters.keys() == expected.meters)

    def stats(self) -> SwitchStats:
        return SwitchStats(self.dpid, len(self.flows), len(self.groups), len(self.meters), self.flow_adds,
                           self.flow_deletes, self.flow_modifies, self.group_mods, self.meter_mods,
                           self.barriers, self.errors_sent, self.packet_ins, self.packet_out_count,
                           self.connected_at, self.last_barrier_at)

    def when(self, predicate: Callable[[FakeSwitch], bool]) -> asyncio.Future[float]:
        """A future for the time of the first barrier reply after which ``predicate`` holds.

        If it holds already, the future is already done with the current time.
        """
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if predicate(self):
            fut.set_result(time.monotonic())
        else:
            self._waiters.append((predicate, fut))
        return fut

    async def sync_point(self, timeout: float = 10.0) -> None:
        """Round-trip an ECHO: afterwards the controller has read everything sent before, and
        everything it sent in reaction (through the same connection) has been applied here."""
        if self._transport is None:
            raise ConnectionError(f"switch {self.dpid:016x} is not connected")
        xid = self._next_xid()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._echoes[xid] = fut
        self._transport.write(HEADER.pack(VERSION, ofp.OFPT_ECHO_REQUEST, HEADER.size, xid))
        await asyncio.wait_for(fut, timeout)


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _oxm_fields(match: bytes) -> frozenset[bytes]:
    fields = []
    at = 4
    while at + 4 <= len(match):
        length = 4 + match[at + 3]
        fields.append(match[at:at + length])
        at += length
    return frozenset(fields)


def _port_desc(dpid: int, name: str, number: int) -> bytes:
    mac = bytes([0x02, 0xFE]) + ((dpid * 0x10001 + number) & 0xFFFFFFFF).to_bytes(4, "big")
    return PORT.pack(number, mac, name.encode()[:15], 0, ofp.OFPPS_LIVE, 0, 0, 0, 0, 10_000_000, 10_000_000)


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def arp_frame(op: int, src_mac: str, src_ip: str, target_ip: str, target_mac: str = "00:00:00:00:00:00",
              eth_dst: str = "ff:ff:ff:ff:ff:ff") -> bytes:
    """An Ethernet/ARP frame padded to the 60-byte minimum; src_ip == target_ip makes it gratuitous."""
    sha = _mac_bytes(src_mac)
    frame = (_mac_bytes(eth_dst) + sha + ETH_ARP + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha
             + ipaddress.IPv4Address(src_ip).packed + _mac_bytes(target_mac) + ipaddress.IPv4Address(target_ip).packed)
    return frame.ljust(60, b"\0")


# --- many switches ---------------------------------------------------------------------------


class Fleet:
    """Many fake switches on one event loop, connected in waves so that the controller's listen
    backlog (Ryu's is 50) never overflows."""

    def __init__(self, specs: Sequence[SwitchSpec], *, socket_buffer: int = 4 << 20, record: bool = False,
                 controllers: int = 1) -> None:
        self.switches: list[FakeSwitch] = [FakeSwitch(s, socket_buffer=socket_buffer, record=record) for s in specs]
        self.by_dpid: dict[int, FakeSwitch] = {s.dpid: s for s in self.switches}
        self.channels: list[list[FakeSwitch]] = [self.switches] + [
            [FakeSwitch(sw.spec, socket_buffer=socket_buffer, share=sw) for sw in self.switches]
            for _ in range(controllers - 1)]

    async def connect(self, host: str, port: int | Sequence[int], concurrency: int = 32, timeout: float = 120.0,
                      per_switch_timeout: float = 30.0) -> ConnectReport:
        """Connect every switch (to each of several controllers' ``port``s, one connection each)."""
        ports = [port] if isinstance(port, int) else list(port)
        if len(ports) > len(self.channels):
            raise ValueError(f"{len(ports)} controllers for a fleet built with controllers={len(self.channels)}")
        started = time.monotonic()
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(sw: FakeSwitch, to: int) -> None:
            async with gate:
                await sw.connect(host, to, per_switch_timeout)

        await asyncio.wait_for(asyncio.gather(*(one(channel[i], to) for i in range(len(self.switches))
                                                for channel, to in zip(self.channels, ports, strict=False))), timeout)
        return ConnectReport(started, time.monotonic(), len(self.switches), concurrency)

    async def wait(self, expected: Mapping[int, Expected], timeout: float) -> dict[int, float]:
        """Wait until each switch holds what ``expected`` says; the barrier time at which each did."""
        futures = {dpid: self.by_dpid[dpid].when(holding(exp)) for dpid, exp in expected.items()}
        try:
            await asyncio.wait_for(asyncio.gather(*futures.values()), timeout)
        except TimeoutError:
            for fut in futures.values():
                fut.cancel()
            raise
        return {dpid: fut.result() for dpid, fut in futures.items()}

    def close(self) -> None:
        for channel in self.channels:
            for sw in channel:
                sw.close()

    def totals(self) -> Counter[str]:
        """Tables counted once per bridge; messages summed over all its connections."""
        total: Counter[str] = Counter()
        for channel in self.channels:
            for sw in channel:
                s = sw.stats()
                for name in ("flow_adds", "flow_deletes", "flow_modifies", "group_mods", "meter_mods", "barriers",
                             "errors_sent", "packet_ins", "packet_outs"):
                    total[name] += getattr(s, name)
        for sw in self.switches:
            total["flows"] += len(sw.flows)
            total["groups"] += len(sw.groups)
            total["meters"] += len(sw.meters)
        return total


def holding(expected: Expected, vni: int | None = None) -> Callable[[FakeSwitch], bool]:
    """A predicate for ``FakeSwitch.when``: the switch holds ``expected`` (or its part for ``vni``)."""
    if vni is None:
        return lambda sw: sw.holds(expected)
    return lambda sw: sw.holds_partition(vni, expected)


# --- the placement a benchmark declares ------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Hypervisors, networks and ports (with declared locations) for a load test.

    Hypervisor ``hv{i}`` has dpid ``i``, tunnel IP 198.18.0.0 + i (data only, never contacted),
    the tunnel port ``vxlan0`` (OpenFlow port 1) and VM interfaces ``tap{j}`` (ports 2, 3, ...).
    """

    hypervisors: tuple[Hypervisor, ...]
    networks: tuple[Network, ...]
    ports: tuple[Port, ...]
    seed: int
    ofports: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def rest_objects(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(collection, name, body) in an order the REST API accepts."""
        for hv in self.hypervisors:
            yield "hypervisors", hv.name, {"dpid": f"{hv.dpid:016x}", "tunnel_ip": str(hv.tunnel_ip)}
        for net in self.networks:
            yield "networks", net.name, network_body(net)
        for port in self.ports:
            yield "ports", port.name, port_body(port)

    def expected_states(self, topo: Topology, first: int = 0, end: int | None = None) -> dict[int, Expected]:
        """What each fake switch (by datapath id; those of ``hypervisors[first:end]``) should hold once
        programmed from ``topo`` (this placement's topology)."""
        return {hv.dpid: expected_state(topo, hv, self.ofports[hv.name]) for hv in self.hypervisors[first:end]}

    def topology(self) -> Topology:
        """A topology of copies of this placement's objects.

        The flow builders memoise their results on the objects they are given (see
        ``flows.memoised_on_owner``); on copies, those results are freed with the topology
        instead of living as long as the placement (about 180 KiB per hypervisor).
        """
        topo = Topology()
        topo.load([replace(hv) for hv in self.hypervisors], [replace(net) for net in self.networks],
                  [replace(port) for port in self.ports])
        return topo

    def specs(self) -> list[SwitchSpec]:
        return [SwitchSpec(hv.dpid, tuple(self.ofports[hv.name].items()), hv.name) for hv in self.hypervisors]

    def seed_store(self, path: str) -> None:
        """Write every object into a fresh SQLite store in one transaction (the bulk path)."""
        self.write_to(SqliteStore(path))

    def write_to(self, store: Store) -> None:
        """Write every object into ``store`` in one transaction (the bulk path), then close it."""
        try:
            objects: list[Hypervisor | Network | Port] = [*self.hypervisors, *self.networks, *self.ports]
            store.apply([Put(o) for o in objects])
        finally:
            store.close()


def network_body(net: Network) -> dict[str, Any]:
    return {"vni": net.vni, "tenant": net.tenant, "subnets": [str(s) for s in net.subnets]}


def port_body(port: Port) -> dict[str, Any]:
    body: dict[str, Any] = {"network": port.network, "mac": port.mac, "ips": [str(ip) for ip in port.ips]}
    if port.hypervisor is not None:
        body.update(hypervisor=port.hypervisor, interface=port.interface)
    return body


def mac_of(index: int) -> str:
    return "02:" + ":".join(f"{b:02x}" for b in (index & 0xFFFFFFFFFF).to_bytes(5, "big"))


def make_placement(hypervisors: int, ports_per_hv: int = 10, ports_per_network: int = 10, seed: int = 1,
                   tenants: int = 10) -> Placement:
    """Every hypervisor gets ``ports_per_hv`` VM ports; ports are dealt to networks of
    ``ports_per_network`` at random, so a network spans about that many hypervisors."""
    rng = random.Random(seed)
    subnet = ipaddress.IPv4Network("10.0.0.0/16")
    hvs = tuple(parse_hypervisor(f"hv{i}", {"dpid": i, "tunnel_ip": str(ipaddress.IPv4Address("198.18.0.0") + i)})
                for i in range(1, hypervisors + 1))
    slots = [(hv.name, j) for hv in hvs for j in range(ports_per_hv)]
    rng.shuffle(slots)
    n_networks = max(1, -(-len(slots) // ports_per_network))
    networks = tuple(parse_network(f"net{k}", {"vni": 1000 + k, "tenant": f"tenant{k % tenants}",
                                               "subnets": [str(subnet)]}) for k in range(n_networks))
    ports = []
    for index, (hv_name, j) in enumerate(slots):
        net = networks[index // ports_per_network]
        member = index % ports_per_network
        ports.append(parse_port(f"p{index}", {
            "network": net.name, "mac": mac_of(index + 1), "ips": [str(subnet[member + 1])],
            "hypervisor": hv_name, "interface": f"tap{j}"}))
    ofports = {hv.name: {TUNNEL_PORT: TUNNEL_OFPORT, **{f"tap{j}": j + 2 for j in range(ports_per_hv)}}
               for hv in hvs}
    return Placement(hvs, networks, tuple(ports), seed, ofports)


def expected_state(topo: Topology, hv: Hypervisor, ofports: Mapping[str, int],
                   vnis: Iterable[int] | None = None) -> Expected:
    """The flows, groups and meters ``ryu_overlay.flows`` wants on ``hv``'s bridge (given VNIs,
    by default all it hosts plus partition 0)."""
    view = SwitchView(hv, ofports)
    flows: set[int] = set()
    groups: set[int] = set()
    meters: set[int] = set()
    for vni in ({0} | hosted_vnis(topo, hv.name)) if vnis is None else vnis:
        part = desired_partition(topo, view, vni)
        flows.update(part.flows)
        groups.update(part.groups)
        meters.update(part.meters)
    return Expected(frozenset(flows), frozenset(groups), frozenset(meters))


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """No garbage collection pauses while measuring.

    The fake switches hold hundreds of thousands of objects; a full collection in the middle of
    a measurement stalls every switch for 100 ms or more and shows up as controller latency.
    Everything alive on entry is frozen out of the collector and collection is off until exit.
    """
    gc.collect()
    gc.freeze()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()

