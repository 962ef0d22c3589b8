"""What the controller tells a VM about its network: DHCPv4 answers and Router Advertisements.

Pure: the topology, a network, a port and what the VM asked in; the frame to send back out.
``Controller`` rate-limits and sends them (``Controller._host_config``); ``flows.host_config_traps``
brings the questions to it.

**Who answers.** When the network has a router (``router_on``), the answers speak for it: the
DHCP server identifier is the router's address in the port's subnet, and the RA comes from
the router's MAC and its EUI-64 link-local address, with a non-zero router lifetime. Without
one, they come from the network's own service MAC (``service_mac``: ``CONTROLLER_MAC`` with
the VNI in its low 24 bits) and its link-local address, with a router lifetime of 0 (hosts
learn the prefix and MTU but take no default route). An RA must come from a link-local
address (RFC 4861 section 6.1.2), and one per network keeps the tenants' link-local
addresses apart; no port of a network ever sends from that MAC (``ingress`` only admits a
port's own). The DHCP server identifier without a router is the last host address of the
port's subnet (10.1.0.254 in 10.1.0.0/24): a client unicasts its renewals there, and the
trap flow takes them to the controller whatever their destination. While nothing answers
ARP for that address the renewal is not sent, and the client renews by broadcast once half
of the rest of the lease has passed (rebinding, RFC 2131 section 4.4.5), which is answered.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .model import Network, Port, link_local
from .packets import ALL_NODES, ALL_NODES_MAC, DhcpRequest, DhcpType, PrefixInfo, dhcp_reply, router_advert
from .topology import Topology

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

LEASE_TIME = 86400  # seconds (one day): the address is the port's for as long as it is declared
ROUTER_LIFETIME = 1800  # seconds; RFC 4861's default (3 x MaxRtrAdvInterval)
PREFIX_VALID_LIFETIME = 2592000  # seconds (30 days); RFC 4861's default AdvValidLifetime
PREFIX_PREFERRED_LIFETIME = 604800  # seconds (7 days); RFC 4861's default AdvPreferredLifetime
# A locally administered unicast MAC (second bit of the first octet set) for the networks
# without a router; its low 24 bits carry the VNI (``service_mac``).
CONTROLLER_MAC = "0a:00:00:00:00:00"
ANSWER_RATE = 5.0  # DHCP answers and RAs per second per port
ANSWER_BURST = 10


@dataclass(frozen=True)
class AttachedRouter:
    """A router's MAC and its interface addresses on one network."""

    mac: str
    interfaces: tuple[IPInterface, ...]


def router_on(topo: Topology, network: Network) -> AttachedRouter | None:
    """The router attached to ``network``, if any, with its addresses on it: the one place DHCP
    (the router option) and RA (a non-zero router lifetime, the router's MAC) learn of routers."""
    router = topo.router_of(network.name)
    if router is None:
        return None
    return AttachedRouter(router.mac, tuple(i.ip for i in router.interfaces_of(network.name)))


def service_mac(network: Network) -> str:
    raw = f"{int(CONTROLLER_MAC.replace(':', ''), 16) | network.vni:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def dhcp_address(network: Network, port: Port) -> ipaddress.IPv4Interface | None:
    """The address (with its subnet's mask) DHCP gives ``port``: its first IPv4 address that lies
    in a subnet of the network. None when the network has DHCP off or the port no such address."""
    if not network.dhcp:
        return None
    for ip in port.ipv4():
        for subnet in network.subnets:
            if ip in subnet:
                return ipaddress.IPv4Interface(f"{ip}/{subnet.prefixlen}")
    return None


def dhcp_answer(topo: Topology, network: Network, port: Port, request: DhcpRequest) -> bytes | None:
    """The answer to ``port``'s DHCP message: DISCOVER -> OFFER; REQUEST -> ACK for the port's
    address, NAK for any other. None for what needs no answer (RELEASE, DECLINE, INFORM, a
    REQUEST to another server, a message about another MAC) and for ports DHCP does not serve."""
    address = dhcp_address(network, port)
    if address is None or request.chaddr != port.mac:
        return None
    router = router_on(topo, network)
    gateway = None if router is None else next(
        (i.ip for i in router.interfaces if isinstance(i, ipaddress.IPv4Interface) and address.ip in i.network), None)
    server_mac = service_mac(network) if router is None else router.mac
    server_ip = gateway if gateway is not None else _last_host(address.network)
    if request.msg_type == DhcpType.REQUEST:
        if request.server_id is not None and request.server_id != server_ip:
            return None
        wanted = request.requested if request.requested is not None else request.ciaddr
        if wanted != address.ip:
            return dhcp_reply(request, DhcpType.NAK, server_mac, server_ip)
        kind = DhcpType.ACK
    elif request.msg_type == DhcpType.DISCOVER:
        kind = DhcpType.OFFER
    else:
        return None
    return dhcp_reply(request, kind, server_mac, server_ip, address, gateway, network.announced_mtu, LEASE_TIME)


def _last_host(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return subnet.broadcast_address - 1 if subnet.num_addresses > 2 else subnet.network_address


def ra_prefixes(network: Network, port: Port) -> tuple[PrefixInfo, ...]:
    """The network's IPv6 prefixes, each on-link; autonomous (SLAAC) only where the address the
    port would form from its MAC is one it owns, since port security drops any other source."""
    own = set(port.ipv6())
    return tuple(PrefixInfo(p, p.prefixlen == 64 and _slaac(p, port.mac) in own,
                            PREFIX_VALID_LIFETIME, PREFIX_PREFERRED_LIFETIME)
                 for p in network.subnets if isinstance(p, ipaddress.IPv6Network))


def _slaac(prefix: ipaddress.IPv6Network, mac: str) -> ipaddress.IPv6Address:
    interface_id = int(link_local(mac)) & ((1 << 64) - 1)
    return ipaddress.IPv6Address(int(prefix.network_address) | interface_id)


def router_advert_for(topo: Topology, network: Network, port: Port) -> bytes | None:
    """The Router Advertisement for ``port`` (to all nodes, out of its interface only), or None
    when the network has DHCP off or no IPv6 prefix."""
    prefixes = ra_prefixes(network, port)
    if not network.dhcp or not prefixes:
        return None
    router = router_on(topo, network)
    src, lifetime = (service_mac(network), 0) if router is None else (router.mac, ROUTER_LIFETIME)
    return router_advert(src, ALL_NODES_MAC, ALL_NODES, lifetime, network.announced_mtu, prefixes)


def announces_prefixes(network: Network) -> bool:
    return network.dhcp and any(isinstance(p, ipaddress.IPv6Network) for p in network.subnets)

