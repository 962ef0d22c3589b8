"""The mapping system's objects: hypervisors, virtual networks and ports.

Every object is a frozen dataclass. The ``parse_*`` functions are the only way REST input
becomes an object, so every check on a single object lives here; checks that involve other
objects (a VNI used twice, a MAC taken in the same network) live in ``topology.Topology``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
LocationSource = Literal["declared", "learned", "ovsdb"]

VNI_MIN, VNI_MAX = 1, (1 << 24) - 1
MTU_MIN, MTU_MAX = 1280, 9000  # 1280: every network may carry IPv6 (RFC 8200)
MAX_NAME = 64
MOBILITY_SEQ_MAX = (1 << 32) - 1  # a 4-octet field in EVPN's MAC Mobility extended community
UNKNOWN_ARP_MODES = ("replicate", "drop")
MAX_CERT_CN = 64  # X.509 ub-common-name
MOBILITY_MODES = ("learn", "declared")  # moves learned from frames, or only declared (REST, iface-id binding)
# What DHCP option 26 and the RA MTU option announce for a network with no ``mtu``: a 1500-byte
# underlay less VXLAN over IPv4's 50 bytes (outer IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14),
# so that a full-size frame still fits once encapsulated. An underlay with jumbo frames, or
# IPv6 tunnels (70 bytes), is stated per network with ``mtu``.
UNDERLAY_MTU = 1500
VXLAN_IPV4_OVERHEAD = 50
DEFAULT_MTU = UNDERLAY_MTU - VXLAN_IPV4_OVERHEAD

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_HEX_DPID_RE = re.compile(r"^(0x)?[0-9a-fA-F]{1,16}$")
_OVSDB_TCP_RE = re.compile(r"^tcp:(\[[0-9a-fA-F:.]+\]|[0-9.]+):([0-9]{1,5})$")
TUNNEL_TYPES = ("vxlan", "geneve", "gre")
OVSDB_PASSIVE = "passive"


class OverlayError(Exception):
    """A request the mapping system refuses; ``status`` is the HTTP status that says why."""

    status = 400


class BadRequest(OverlayError):
    status = 400


class Forbidden(OverlayError):
    status = 403


class NotFound(OverlayError):
    status = 404


class Conflict(OverlayError):
    status = 409


@dataclass(frozen=True)
class Hypervisor:
    """A server whose Open vSwitch bridge terminates tunnels (an NVE in NVO3 terms)."""

    name: str
    dpid: int
    tunnel_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    tunnel_port: str = "vxlan0"
    ovsdb: str | None = None
    """``tcp:IP:PORT`` (the controller connects out), ``passive`` (the hypervisor connects to the
    controller's manager port) or None (an unmanaged hypervisor, prepared by ``setup-hypervisor``)."""
    tunnel_type: str = "vxlan"
    cert_cn: str | None = None  # the name its switch's TLS certificate gives; None: the hypervisor's name

    @property
    def managed(self) -> bool:
        return self.ovsdb is not None

    @property
    def certificate_name(self) -> str:
        return self.name if self.cert_cn is None else self.cert_cn

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dpid": format_dpid(self.dpid),
            "tunnel_ip": str(self.tunnel_ip),
            "tunnel_port": self.tunnel_port,
            "ovsdb": self.ovsdb,
            "tunnel_type": self.tunnel_type,
            "cert_cn": self.certificate_name,
        }


@dataclass(frozen=True)
class Network:
    """A virtual network: one L2 segment of one tenant, identified on the wire by its VNI."""

    name: str
    vni: int
    tenant: str
    subnets: tuple[IPNetwork, ...] = ()
    mtu: int | None = None
    unknown_arp: str = "replicate"
    dhcp: bool = True
    mobility: str | None = None  # the default of its ports that state none (None: by their location)

    @property
    def announced_mtu(self) -> int:
        """The MTU DHCP and Router Advertisements give the network's hosts."""
        return DEFAULT_MTU if self.mtu is None else self.mtu

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vni": self.vni,
            "tenant": self.tenant,
            "subnets": [str(s) for s in self.subnets],
            "mtu": self.mtu,
            "unknown_arp": self.unknown_arp,
            "dhcp": self.dhcp,
            "mobility": self.mobility,
        }


class _Record:
    """A record whose JSON form is its fields, in order."""

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class Move(_Record):
    """A port leaving a location (``hypervisor``/``interface``) at wall-clock time ``at`` (Unix seconds)."""

    at: float
    hypervisor: str
    interface: str


@dataclass(frozen=True)
class Duplicate(_Record):
    """The port's MAC seen active at another present location than its own, at ``detected_at``."""

    hypervisor: str
    interface: str
    detected_at: float


@dataclass(frozen=True)
class Port:
    """A VM interface (MAC and addresses) in a network, and where it currently is.

    ``hypervisor``/``interface`` are the location; ``location_source`` says whether an operator
    declared it or the controller learned it from traffic. ``mobility_seq`` is the location's
    sequence number, as EVPN's MAC Mobility sequence number (RFC 7432 section 15): it goes up
    by one each time the port leaves a location. ``recent_moves`` (the moves of the mobility
    window), ``frozen`` and ``duplicate`` are kept with the port so they survive a restart.
    """

    name: str
    network: str
    mac: str
    ips: tuple[IPAddress, ...] = ()
    hypervisor: str | None = None
    interface: str | None = None
    location_source: LocationSource | None = None
    mobility_seq: int = 0
    frozen: bool = False
    recent_moves: tuple[Move, ...] = ()
    duplicate: Duplicate | None = None
    mobility: str | None = None  # as declared; ``mobility_of`` gives the policy in force

    @property
    def located(self) -> bool:
        return self.hypervisor is not None and self.interface is not None

    def ipv4(self) -> tuple[ipaddress.IPv4Address, ...]:
        return tuple(ip for ip in self.ips if ip.version == 4)

    def ipv6(self) -> tuple[ipaddress.IPv6Address, ...]:
        return tuple(ip for ip in self.ips if ip.version == 6)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "network": self.network,
            "mac": self.mac,
            "ips": [str(ip) for ip in self.ips],
            "hypervisor": self.hypervisor,
            "interface": self.interface,
            "location_source": self.location_source,
            "mobility_seq": self.mobility_seq,
            "frozen": self.frozen,
            "recent_moves": [m.to_json() for m in self.recent_moves],
            "duplicate": None if self.duplicate is None else self.duplicate.to_json(),
            "mobility": self.mobility,
        }

    def with_location(self, hypervisor: str | None, interface: str | None,
                      source: LocationSource | None) -> Port:
        return replace(self, hypervisor=hypervisor, interface=interface, location_source=source)


def mobility_of(port: Port, network: Network) -> str:
    """The port's mobility policy: its own, else its network's, else ``declared`` for a port whose
    location was declared and ``learn`` for one without (issue #16's contract)."""
    if port.mobility is not None:
        return port.mobility
    if network.mobility is not None:
        return network.mobility
    return "declared" if port.location_source == "declared" else "learn"


def _mobility(body: Mapping[str, Any]) -> str | None:
    value = body.get("mobility")
    if value is not None and value not in MOBILITY_MODES:
        raise BadRequest(f"mobility must be one of {', '.join(MOBILITY_MODES)} (or null)")
    return value


@dataclass(frozen=True)
class RouterInterface:
    """The router's address ``ip`` (with its prefix, one of the network's subnets) in ``network``."""

    network: str
    ip: IPInterface

    def to_json(self) -> dict[str, Any]:
        return {"network": self.network, "ip": str(self.ip)}


@dataclass(frozen=True)
class Gateway:
    """The router's way out: ``interface`` on ``hypervisor``'s bridge, with ``ip``, towards ``next_hop``."""

    hypervisor: str
    interface: str
    ip: ipaddress.IPv4Interface
    next_hop: ipaddress.IPv4Address

    def to_json(self) -> dict[str, Any]:
        return {"hypervisor": self.hypervisor, "interface": self.interface, "ip": str(self.ip),
                "next_hop": str(self.next_hop)}


@dataclass(frozen=True)
class Router:
    """A tenant's logical router between its networks, distributed over every hypervisor hosting one.

    ``mac`` is allocated by the controller (``Topology.allocate_router_mac``) and kept for the
    router's life, so a restart or a re-declaration never changes it. ``floating_ips`` pairs a
    public address with a port name.
    """

    name: str
    tenant: str
    interfaces: tuple[RouterInterface, ...]
    gateway: Gateway | None = None
    snat: bool = False
    floating_ips: tuple[tuple[ipaddress.IPv4Address, str], ...] = ()
    mac: str = ""

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i.network for i in self.interfaces))

    def interfaces_of(self, network: str) -> tuple[RouterInterface, ...]:
        return tuple(i for i in self.interfaces if i.network == network)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tenant": self.tenant,
            "interfaces": [i.to_json() for i in self.interfaces],
            "gateway": None if self.gateway is None else self.gateway.to_json(),
            "snat": self.snat,
            "floating_ips": {str(ip): port for ip, port in self.floating_ips},
            "mac": self.mac,
        }


def format_dpid(dpid: int) -> str:
    return f"{dpid:016x}"


def link_local(mac: str) -> ipaddress.IPv6Address:
    """The EUI-64 link-local address a host derives from ``mac`` (RFC 4291 appendix A)."""
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 255, 254, *octets[3:]]
    return ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui))


# --- parsing ---------------------------------------------------------------------------------


def _body(body: Any, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    missing = sorted(required - set(body))
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    return body


def parse_name(value: Any, what: str = "name") -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a non-empty string")
    if len(value) > MAX_NAME or not _NAME_RE.fullmatch(value) or not value.isascii():
        raise BadRequest(
            f"{what} {value!r} is not valid: up to {MAX_NAME} ASCII letters, digits, '_', '.', ':' or '-'"
        )
    return value


def parse_interface(value: Any, what: str = "interface") -> str:
    if not isinstance(value, str) or not _IFNAME_RE.fullmatch(value) or not value.isascii():
        raise BadRequest(f"{what} must be an interface name of 1 to 15 characters from [A-Za-z0-9_.:-]")
    return value


def parse_dpid(value: Any) -> int:
    if isinstance(value, bool):
        raise BadRequest("dpid must be 16 hex digits or an integer")
    if isinstance(value, int):
        dpid = value
    elif isinstance(value, str) and _HEX_DPID_RE.fullmatch(value):
        dpid = int(value, 16)
    else:
        raise BadRequest("dpid must be 16 hex digits or an integer")
    if not 0 < dpid < (1 << 64):
        raise BadRequest("dpid must be between 1 and 2^64-1")
    return dpid


def parse_mac(value: Any) -> str:
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value.lower()):
        raise BadRequest("mac must look like 02:aa:00:00:00:01")
    mac = value.lower()
    if int(mac[:2], 16) & 1:
        raise BadRequest(f"mac {mac} is a multicast address")
    if mac == "00:00:00:00:00:00":
        raise BadRequest("mac must not be all zeros")
    return mac


def _unicast_ip(value: Any, what: str) -> IPAddress:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise BadRequest(f"{what} {value!r} is not an IP address") from None
    if getattr(ip, "scope_id", None) is not None:
        raise BadRequest(f"{what} {value!r} must not have a scope id")
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise BadRequest(f"{what} {value} is not a unicast host address")
    return ip


def parse_tunnel_ip(value: Any) -> IPAddress:
    """An IPv4 or IPv6 underlay address; not IPv6 link-local, which tunnels cannot be routed from."""
    ip = _unicast_ip(value, "tunnel_ip")
    if ip.version == 6 and ip.is_link_local:
        raise BadRequest(f"tunnel_ip {ip} is link-local")
    return ip


def parse_ovsdb(value: Any) -> str | None:
    """``passive``, or ``tcp:IP:PORT`` (an IPv6 address in brackets, as Open vSwitch writes it)."""
    if value is None or value == OVSDB_PASSIVE:
        return value  # type: ignore[no-any-return]
    match = _OVSDB_TCP_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise BadRequest('ovsdb must be "passive" or "tcp:IP:PORT"')
    _unicast_ip(match.group(1).strip("[]"), "ovsdb address")
    if not 0 < int(match.group(2)) < 65536:
        raise BadRequest("ovsdb port must be between 1 and 65535")
    return value  # type: ignore[no-any-return]


def parse_hypervisor(name: str, body: Any) -> Hypervisor:
    body = _body(body, {"dpid", "tunnel_ip", "tunnel_port", "ovsdb", "tunnel_type", "cert_cn"}, {"dpid", "tunnel_ip"})
    tunnel_type = body.get("tunnel_type", "vxlan")
    if tunnel_type not in TUNNEL_TYPES:
        raise BadRequest(f"tunnel_type must be one of {', '.join(TUNNEL_TYPES)}")
    name = parse_name(name)
    cert_cn = body.get("cert_cn")
    if cert_cn is not None and (not isinstance(cert_cn, str) or not 0 < len(cert_cn) <= MAX_CERT_CN
                                or not cert_cn.isprintable()):
        raise BadRequest(f"cert_cn must be a certificate's common name: 1 to {MAX_CERT_CN} printable characters")
    return Hypervisor(
        name=name,
        dpid=parse_dpid(body["dpid"]),
        tunnel_ip=parse_tunnel_ip(body["tunnel_ip"]),
        tunnel_port=parse_interface(body.get("tunnel_port", f"{tunnel_type}0"), "tunnel_port"),
        ovsdb=parse_ovsdb(body.get("ovsdb")),
        tunnel_type=tunnel_type,
        cert_cn=None if cert_cn == name else cert_cn,
    )


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{what} must be an integer")
    if not lo <= value <= hi:
        raise BadRequest(f"{what} must be between {lo} and {hi}")
    return value


def parse_network(name: str, body: Any) -> Network:
    body = _body(body, {"vni", "tenant", "subnets", "mtu", "unknown_arp", "dhcp", "mobility"}, {"vni", "tenant"})
    subnets_raw = body.get("subnets", [])
    if not isinstance(subnets_raw, list):
        raise BadRequest("subnets must be a list of CIDR strings")
    subnets: list[IPNetwork] = []
    for raw in subnets_raw:
        if not isinstance(raw, str):
            raise BadRequest("subnets must be a list of CIDR strings")
        try:
            subnet = ipaddress.ip_network(raw, strict=True)
        except ValueError as exc:
            raise BadRequest(f"subnet {raw!r} is not valid: {exc}") from None
        if getattr(subnet.network_address, "scope_id", None) is not None:
            raise BadRequest(f"subnet {raw!r} must not have a scope id")
        if any(subnet.overlaps(other) for other in subnets):
            raise BadRequest(f"subnet {subnet} overlaps another subnet of the network")
        subnets.append(subnet)
    mtu = body.get("mtu")
    if mtu is not None:
        mtu = _int(mtu, "mtu", MTU_MIN, MTU_MAX)
    unknown_arp = body.get("unknown_arp", "replicate")
    if unknown_arp not in UNKNOWN_ARP_MODES:
        raise BadRequest(f"unknown_arp must be one of {', '.join(UNKNOWN_ARP_MODES)}")
    dhcp = body.get("dhcp", True)
    if not isinstance(dhcp, bool):
        raise BadRequest("dhcp must be true or false")
    return Network(
        name=parse_name(name),
        vni=_int(body["vni"], "vni", VNI_MIN, VNI_MAX),
        tenant=parse_name(body["tenant"], "tenant"),
        subnets=tuple(subnets),
        mtu=mtu,
        unknown_arp=unknown_arp,
        dhcp=dhcp,
        mobility=_mobility(body),
    )


def parse_port(name: str, body: Any) -> Port:
    """Parse a port declaration. Subnet membership is checked against the network elsewhere.

    An optional ``mobility_seq`` is the sequence number the declaring client last read; the
    controller refuses the declaration if the port has moved since (``Controller.put_port``).
    """
    body = _body(body, {"network", "mac", "ips", "hypervisor", "interface", "mobility_seq", "mobility"},
                 {"network", "mac"})
    seq = _int(body["mobility_seq"], "mobility_seq", 0, MOBILITY_SEQ_MAX) if "mobility_seq" in body else 0
    ips_raw = body.get("ips", [])
    if not isinstance(ips_raw, list):
        raise BadRequest("ips must be a list of IP address strings")
    ips = tuple(_unicast_ip(raw, "ip") for raw in ips_raw)
    if len(set(ips)) != len(ips):
        raise BadRequest("ips must not repeat an address")
    hypervisor = body.get("hypervisor")
    interface = body.get("interface")
    if (hypervisor is None) != (interface is None):
        raise BadRequest("hypervisor and interface go together: give both or neither")
    return Port(
        name=parse_name(name),
        network=parse_name(body["network"], "network"),
        mac=parse_mac(body["mac"]),
        ips=ips,
        hypervisor=None if hypervisor is None else parse_name(hypervisor, "hypervisor"),
        interface=None if interface is None else parse_interface(interface),
        location_source=None if hypervisor is None else "declared",
        mobility_seq=seq,
        mobility=_mobility(body),
    )


def _ip_interface(value: Any, what: str) -> IPInterface:
    if not isinstance(value, str) or "/" not in value:
        raise BadRequest(f"{what} must be an address with its prefix length, e.g. 10.1.0.254/24")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise BadRequest(f"{what} {value!r} is not an address with a prefix length") from None
    _unicast_ip(str(iface.ip), what)
    if iface.ip == iface.network.network_address and iface.network.num_addresses > 2:
        raise BadRequest(f"{what} {value} is the subnet's own address")
    if iface.version == 4 and iface.ip == iface.network.broadcast_address and iface.network.num_addresses > 2:
        raise BadRequest(f"{what} {value} is the subnet's broadcast address")
    return iface


def _parse_gateway(value: Any) -> Gateway:
    body = _body(value, {"hypervisor", "interface", "ip", "next_hop"}, {"hypervisor", "interface", "ip", "next_hop"})
    ip = _ip_interface(body["ip"], "gateway ip")
    if ip.version != 4:
        raise BadRequest("gateway ip must be IPv4")
    next_hop = _unicast_ip(body["next_hop"], "gateway next_hop")
    if next_hop not in ip.network or next_hop == ip.ip:
        raise BadRequest(f"gateway next_hop {next_hop} must be another address of {ip.network}")
    return Gateway(parse_name(body["hypervisor"], "gateway hypervisor"),
                   parse_interface(body["interface"], "gateway interface"), ip,
                   next_hop)  # type: ignore[arg-type]


def parse_router(name: str, body: Any) -> Router:
    """Parse a router declaration. Networks, tenants and floating-IP rules are checked in ``Topology``."""
    body = _body(body, {"tenant", "interfaces", "gateway", "snat", "floating_ips"}, {"tenant", "interfaces"})
    raw = body["interfaces"]
    if not isinstance(raw, list) or not raw:
        raise BadRequest("interfaces must be a non-empty list of {network, ip}")
    interfaces: list[RouterInterface] = []
    for entry in raw:
        item = _body(entry, {"network", "ip"}, {"network", "ip"})
        iface = RouterInterface(parse_name(item["network"], "interface network"),
                                _ip_interface(item["ip"], "interface ip"))
        for other in interfaces:
            if iface.ip.network.overlaps(other.ip.network):
                raise BadRequest(f"interface {iface.ip} overlaps interface {other.ip} of {other.network}")
        interfaces.append(iface)
    gateway = None if body.get("gateway") is None else _parse_gateway(body["gateway"])
    snat = body.get("snat", gateway is not None)
    if not isinstance(snat, bool):
        raise BadRequest("snat must be true or false")
    if snat and gateway is None:
        raise BadRequest("snat needs a gateway")
    fips_raw = body.get("floating_ips", {})
    if not isinstance(fips_raw, dict):
        raise BadRequest("floating_ips must map an IPv4 address to a port name")
    fips: list[tuple[ipaddress.IPv4Address, str]] = []
    for addr, port in fips_raw.items():
        ip = _unicast_ip(addr, "floating ip")
        if ip.version != 4:
            raise BadRequest(f"floating ip {addr} must be IPv4")
        fips.append((ip, parse_name(port, "floating ip port")))
    return Router(parse_name(name), parse_name(body["tenant"], "tenant"), tuple(interfaces), gateway, snat,
                  tuple(sorted(fips)))


# --- persistence form --------------------------------------------------------------------------


def hypervisor_from_record(rec: Mapping[str, Any]) -> Hypervisor:
    cert_cn = rec.get("cert_cn")
    return Hypervisor(rec["name"], int(rec["dpid"], 16), ipaddress.ip_address(rec["tunnel_ip"]),
                      rec["tunnel_port"], rec.get("ovsdb"), rec.get("tunnel_type", "vxlan"),
                      None if cert_cn == rec["name"] else cert_cn)


def network_from_record(rec: Mapping[str, Any]) -> Network:
    return Network(rec["name"], rec["vni"], rec["tenant"],
                   tuple(ipaddress.ip_network(s) for s in rec["subnets"]), rec["mtu"],
                   rec.get("unknown_arp", "replicate"), rec.get("dhcp", True), rec.get("mobility"))


def port_from_record(rec: Mapping[str, Any]) -> Port:
    return Port(rec["name"], rec["network"], rec["mac"],
                tuple(ipaddress.ip_address(ip) for ip in rec["ips"]),
                rec["hypervisor"], rec["interface"], rec["location_source"],
                rec.get("mobility_seq", 0), rec.get("frozen", False),
                tuple(Move(m["at"], m["hypervisor"], m["interface"]) for m in rec.get("recent_moves", ())),
                None if rec.get("duplicate") is None else Duplicate(**rec["duplicate"]), rec.get("mobility"))


def router_from_record(rec: Mapping[str, Any]) -> Router:
    gw = rec.get("gateway")
    return Router(
        rec["name"], rec["tenant"],
        tuple(RouterInterface(i["network"], ipaddress.ip_interface(i["ip"])) for i in rec["interfaces"]),
        None if gw is None else Gateway(gw["hypervisor"], gw["interface"], ipaddress.IPv4Interface(gw["ip"]),
                                        ipaddress.IPv4Address(gw["next_hop"])),
        rec["snat"], tuple(sorted((ipaddress.IPv4Address(ip), port) for ip, port in rec["floating_ips"].items())),
        rec["mac"])
