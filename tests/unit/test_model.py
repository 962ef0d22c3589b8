"""Parsing of REST bodies into model objects: every single-object check, and ``link_local``."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from ryu_overlay.model import (
    VNI_MAX,
    BadRequest,
    Duplicate,
    Hypervisor,
    Move,
    Network,
    Port,
    format_dpid,
    hypervisor_from_record,
    link_local,
    network_from_record,
    parse_dpid,
    parse_hypervisor,
    parse_interface,
    parse_mac,
    parse_name,
    parse_network,
    parse_port,
    port_from_record,
)

FAST = settings(max_examples=200, deadline=None)


def refused(fn: Any, *args: Any) -> str:
    with pytest.raises(BadRequest) as exc:
        fn(*args)
    assert exc.value.status == 400
    return str(exc.value)


# --- dpid ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,want", [
    ("0000000000000001", 1), ("1", 1), ("0x1", 1), ("0X1", None), ("00000000000000ff", 255), ("00000000000000FF", 255),
    ("ffffffffffffffff", (1 << 64) - 1), ("0xffffffffffffffff", (1 << 64) - 1), (1, 1), ((1 << 64) - 1, (1 << 64) - 1),
    (0, None), ("0", None), ("0000000000000000", None), (1 << 64, None), (-1, None), ("1" * 17, None),
    ("0x" + "1" * 17, None), ("0x", None), ("", None), ("g", None), ("-1", None), (" 1", None), ("1\n", None),
    ("1_0", None), (True, None), (False, None), (1.0, None), (None, None), ([1], None), ("١", None),
])
def test_dpid_forms_and_bounds(value, want):
    if want is None:
        refused(parse_dpid, value)
    else:
        assert parse_dpid(value) == want


@FAST
@given(st.integers(min_value=1, max_value=(1 << 64) - 1))
def test_dpid_round_trips_through_its_16_digit_form(dpid):
    text = format_dpid(dpid)
    assert len(text) == 16 and text == text.lower()
    assert parse_dpid(text) == parse_dpid(dpid) == parse_dpid("0x" + text.upper()) == dpid


# --- VNI, MTU and booleans --------------------------------------------------------------------------


@pytest.mark.parametrize("vni,ok", [(0, False), (1, True), (VNI_MAX, True), (16777215, True), (16777216, False),
                                    (-1, False), (True, False), (False, False), ("1", False), (1.0, False),
                                    (None, False)])
def test_vni_bounds_and_bool_is_not_an_int(vni, ok):
    body = {"vni": vni, "tenant": "acme"}
    if ok:
        assert parse_network("n", body).vni == vni
    else:
        message = refused(parse_network, "n", body)
        assert message in ("vni must be between 1 and 16777215", "vni must be an integer")
        assert (message == "vni must be an integer") == (not isinstance(vni, int) or isinstance(vni, bool))


@pytest.mark.parametrize("mtu,subnets,ok", [
    (1279, [], False), (1280, [], True), (9000, [], True), (9001, [], False), (True, [], False), (1450.0, [], False),
    (None, ["fd00::/64"], True), (1279, ["fd00::/64"], False), (1280, ["fd00::/64"], True),
    (1279, ["10.0.0.0/8"], False),
])
def test_mtu_bounds(mtu, subnets, ok):
    body = {"vni": 1, "tenant": "t", "subnets": subnets, "mtu": mtu}
    if ok:
        assert parse_network("n", body).mtu == mtu
    else:
        refused(parse_network, "n", body)


def test_network_defaults():
    assert parse_network("blue", {"vni": 5, "tenant": "t"}) == Network("blue", 5, "t", (), None, "replicate")


# --- MAC ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,want", [
    ("02:aa:00:00:00:01", "02:aa:00:00:00:01"), ("02:AA:00:00:0A:bC", "02:aa:00:00:0a:bc"),
    ("00:00:00:00:00:01", "00:00:00:00:00:01"), ("52:54:00:12:34:56", "52:54:00:12:34:56"),
    ("fe:ff:ff:ff:ff:ff", "fe:ff:ff:ff:ff:ff"),
])
def test_mac_is_normalised_to_lower_case(value, want):
    assert parse_mac(value) == want


@pytest.mark.parametrize("value,message", [
    ("01:00:5e:00:00:01", "mac 01:00:5e:00:00:01 is a multicast address"),
    ("33:33:00:00:00:01", "mac 33:33:00:00:00:01 is a multicast address"),
    ("03:aa:00:00:00:01", "mac 03:aa:00:00:00:01 is a multicast address"),
    ("FF:FF:FF:FF:FF:FF", "mac ff:ff:ff:ff:ff:ff is a multicast address"),
    ("00:00:00:00:00:00", "mac must not be all zeros"),
])
def test_multicast_broadcast_and_zero_macs_are_refused(value, message):
    assert refused(parse_mac, value) == message


@pytest.mark.parametrize("value", ["02:aa:00:00:00", "02:aa:00:00:00:01:02", "02-aa-00-00-00-01", "02aa.0000.0001",
                                   "02aa00000001", "2:aa:0:0:0:1", "02:aa:00:00:00:0g", " 02:aa:00:00:00:01",
                                   "02:aa:00:00:00:01\n", "02:aa:00:00:00:01 ", "", "０２:aa:00:00:00:01", 2, None,
                                   b"02:aa:00:00:00:01"])
def test_malformed_macs_are_refused(value):
    assert refused(parse_mac, value) == "mac must look like 02:aa:00:00:00:01"


@FAST
@given(st.binary(min_size=6, max_size=6), st.booleans())
def test_any_unicast_nonzero_mac_is_accepted_in_either_case(raw, upper):
    text = ":".join(f"{b:02x}" for b in raw)
    given_text = text.upper() if upper else text
    if raw[0] & 1 or raw == bytes(6):
        refused(parse_mac, given_text)
    else:
        assert parse_mac(given_text) == text


# --- IP addresses -------------------------------------------------------------------------------


def port(ips: list[Any], **extra: Any) -> Port:
    return parse_port("p", {"network": "n", "mac": "02:00:00:00:00:01", "ips": ips, **extra})


@pytest.mark.parametrize("value,want", [
    ("10.1.0.1", "10.1.0.1"), ("fd00:1::1", "fd00:1::1"), ("FD00:1::1", "fd00:1::1"),
    ("fd00:1:0:0:0:0:0:1", "fd00:1::1"), ("fd00:0001:0000:0000:0000:0000:0000:0001", "fd00:1::1"),
    ("fe80::1", "fe80::1"), ("2001:db8::a:0:0:1", "2001:db8::a:0:0:1"), ("::ffff:10.1.0.1", "::ffff:a01:1"),
    ("169.254.0.1", "169.254.0.1"),
])
def test_ip_forms_are_normalised(value, want):
    assert [str(ip) for ip in port([value]).ips] == [want]


@pytest.mark.parametrize("value", ["10.1.0.256", "10.1.0", "010.1.0.1", "fd00:1::g", "fd00::1::1", "10.1.0.1/32",
                                   "fd00:1::1%eth0", "fe80::1%1", " 10.1.0.1", "", "0.0.0.0", "::", "127.0.0.1", "::1",
                                   "224.0.0.1", "ff02::1", "255.255.255.255", 167837697, None])
def test_bad_or_non_unicast_ips_are_refused(value):
    refused(port, [value])


def test_the_same_ip_written_twice_is_refused():
    assert refused(port, ["fd00:1::1", "FD00:1:0::1"]) == "ips must not repeat an address"
    assert refused(port, ["10.1.0.1", "10.1.0.1"]) == "ips must not repeat an address"


def test_ipv4_and_ipv6_are_split():
    p = port(["10.1.0.1", "fd00:1::1", "10.1.0.2"])
    assert [str(ip) for ip in p.ipv4()] == ["10.1.0.1", "10.1.0.2"]
    assert [str(ip) for ip in p.ipv6()] == ["fd00:1::1"]


@pytest.mark.parametrize("value", ["fe80::1", "ff02::1", "::1", "198.18.0.256", "224.0.0.1", "0.0.0.0", "127.0.0.1",
                                   1, None])
def test_tunnel_ip_must_be_a_routable_unicast_address(value):
    refused(parse_hypervisor, "hv", {"dpid": 1, "tunnel_ip": value})


def test_tunnel_ip_may_be_ipv6():
    assert str(parse_hypervisor("hv", {"dpid": 1, "tunnel_ip": "2001:2::1"}).tunnel_ip) == "2001:2::1"


# --- subnets ------------------------------------------------------------------------------------


def subnets(*values: Any) -> tuple[str, ...]:
    return tuple(str(s) for s in parse_network("n", {"vni": 1, "tenant": "t", "subnets": list(values)}).subnets)


@pytest.mark.parametrize("value", ["10.1.0.1/24", "10.1.0.128/24", "fd00:1::1/64", "fd00:1:0:0:1::/64",
                                   "10.1.0.0/33", "fd00::/129", "10.1.0.0/", "10.1.0.0/x", "fd00::%eth0/64", ""])
def test_subnets_with_host_bits_or_bad_syntax_are_refused(value):
    refused(subnets, value)


def test_subnets_are_normalised_and_keep_their_order():
    assert subnets("FD00:1::/64", "10.1.0.0/24", "10.2.0.1") == ("fd00:1::/64", "10.1.0.0/24", "10.2.0.1/32")


@pytest.mark.parametrize("values", [("10.1.0.0/24", "10.1.0.0/24"), ("10.1.0.0/24", "10.1.0.128/25"),
                                    ("10.1.0.128/25", "10.1.0.0/24"), ("10.0.0.0/8", "10.1.0.0/16"),
                                    ("fd00:1::/64", "fd00::/16"), ("0.0.0.0/0", "192.0.2.0/24")])
def test_overlapping_subnets_are_refused(values):
    assert "overlaps another subnet of the network" in refused(subnets, *values)


def test_disjoint_and_mixed_family_subnets_are_accepted():
    assert subnets("10.1.0.0/25", "10.1.0.128/25", "::/0", "10.1.1.0/24") == (
        "10.1.0.0/25", "10.1.0.128/25", "::/0", "10.1.1.0/24")


# --- names, interfaces, fields -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "A9", "blue", "hv-1", "a_b.c:d", "9", "a" * 64])
def test_valid_names(value):
    assert parse_name(value) == value


@pytest.mark.parametrize("value", ["", "a" * 65, "-a", ".a", "_a", ":a", "a b", "a/b", "a\n", "a\t", "blüe", "ÿ",
                                   "é", "١٢", "Ⅷ", "ａ", "a\u200b", "日本", 5, None, ["a"]])
def test_invalid_names_including_unicode_are_refused(value):
    refused(parse_name, value)


@pytest.mark.parametrize("fn,args", [
    (parse_network, ({"vni": 1, "tenant": "t"},)),
    (parse_hypervisor, ({"dpid": 1, "tunnel_ip": "198.18.0.1"},)),
    (parse_port, ({"network": "n", "mac": "02:00:00:00:00:01"},)),
])
@pytest.mark.parametrize("name", ["blüe", "a/b", "", "x" * 65, "n\n"])
def test_every_parser_refuses_a_bad_path_name(fn, args, name):
    refused(fn, name, *args)


@pytest.mark.parametrize("value,ok", [("tapA1", True), ("a" * 15, True), ("a" * 16, False), ("", False),
                                      ("tap a", False), ("tap/1", False), ("täp", False), ("tap\n", False),
                                      (None, False), (1, False)])
def test_interface_names(value, ok):
    if ok:
        assert parse_interface(value) == value
    else:
        refused(parse_interface, value)


@pytest.mark.parametrize("fn,body,unknown", [
    (parse_network, {"vni": 1, "tenant": "t", "color": "x"}, "color"),
    (parse_network, {"vni": 1, "tenant": "t", "VNI": 2}, "VNI"),
    (parse_hypervisor, {"dpid": 1, "tunnel_ip": "198.18.0.1", "connected": True, "in_sync": True},
     "connected, in_sync"),
    (parse_port, {"network": "n", "mac": "02:00:00:00:00:01", "location_source": "learned"}, "location_source"),
    (parse_port, {"network": "n", "mac": "02:00:00:00:00:01", "frozen": False}, "frozen"),
    (parse_port, {"network": "n", "mac": "02:00:00:00:00:01", "recent_moves": []}, "recent_moves"),
    (parse_port, {"network": "n", "mac": "02:00:00:00:00:01", "duplicate": None}, "duplicate"),
])
def test_unknown_fields_are_refused_and_named(fn, body, unknown):
    assert refused(fn, "x", body) == f"unknown field(s): {unknown}"


@pytest.mark.parametrize("fn,body,missing", [
    (parse_network, {}, "tenant, vni"), (parse_hypervisor, {"dpid": 1}, "tunnel_ip"),
    (parse_port, {"mac": "02:00:00:00:00:01"}, "network"),
])
def test_missing_fields_are_named(fn, body, missing):
    assert refused(fn, "x", body) == f"missing field(s): {missing}"


@pytest.mark.parametrize("body", [None, [], "x", 1, True])
def test_body_must_be_an_object(body):
    for fn in (parse_network, parse_hypervisor, parse_port):
        assert refused(fn, "x", body) == "body must be a JSON object"


def test_the_name_belongs_to_the_path_not_the_body():
    assert refused(parse_network, "n", {"name": "n", "vni": 1, "tenant": "t"}) == "unknown field(s): name"


def test_port_location_needs_both_hypervisor_and_interface():
    base = {"network": "n", "mac": "02:00:00:00:00:01"}
    p = parse_port("p", {**base, "hypervisor": "hv1", "interface": "tap1"})
    assert (p.hypervisor, p.interface, p.location_source, p.located) == ("hv1", "tap1", "declared", True)
    p = parse_port("p", {**base, "hypervisor": None, "interface": None})
    assert (p.hypervisor, p.interface, p.location_source, p.located) == (None, None, None, False)
    for extra in ({"hypervisor": "hv1"}, {"interface": "tap1"}, {"hypervisor": "hv1", "interface": None}):
        refused(parse_port, "p", {**base, **extra})
    refused(parse_port, "p", {**base, "hypervisor": "hv 1", "interface": "tap1"})


def test_tunnel_port_defaults_and_is_checked():
    assert parse_hypervisor("hv", {"dpid": 1, "tunnel_ip": "198.18.0.1"}) == Hypervisor(
        "hv", 1, ipaddress.IPv4Address("198.18.0.1"), "vxlan0")
    refused(parse_hypervisor, "hv", {"dpid": 1, "tunnel_ip": "198.18.0.1", "tunnel_port": "x" * 16})


# --- records and link_local -----------------------------------------------------------------------


def test_objects_round_trip_through_their_records():
    hv = Hypervisor("hv", (1 << 64) - 1, ipaddress.IPv4Address("198.18.0.1"), "vx1")
    net = Network("n", 7, "t", (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/64")), 1500, "drop",
                  False)
    p = Port("p", "n", "02:00:00:00:00:01", (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1")),
             "hv", "tap", "learned", 3, True, (Move(1.5, "hv2", "tap2"), Move(2.25, "hv3", "tap")),
             Duplicate("hv2", "tap2", 3.5))
    assert hypervisor_from_record(hv.to_json()) == hv
    assert network_from_record(net.to_json()) == net
    assert port_from_record(p.to_json()) == p


def test_a_network_record_from_before_dhcp_loads_with_dhcp_on_and_the_default_mtu_is_announced():
    net = Network("n", 7, "t")
    old = {k: v for k, v in net.to_json().items() if k != "dhcp"}
    assert network_from_record(old) == net and net.dhcp
    assert (net.announced_mtu, Network("n", 7, "t", mtu=9000).announced_mtu) == (1450, 9000)


def test_a_port_record_from_before_the_mobility_history_loads_without_it():
    p = Port("p", "n", "02:00:00:00:00:01", (), "hv", "tap", "learned", 3, True)
    old = {k: v for k, v in p.to_json().items() if k not in ("recent_moves", "duplicate")}
    assert port_from_record(old) == p


def test_a_declared_mobility_seq_is_read_and_checked():
    body = {"network": "n", "mac": "02:00:00:00:00:01"}
    assert parse_port("p", {**body, "mobility_seq": 7}).mobility_seq == 7
    assert parse_port("p", body).mobility_seq == 0
    for bad in (-1, 1 << 32, "1", 1.0, True, None):
        assert refused(parse_port, "p", {**body, "mobility_seq": bad}).startswith("mobility_seq must be")


@pytest.mark.parametrize("mac,want", [
    ("52:54:00:12:34:56", "fe80::5054:ff:fe12:3456"),
    ("00:11:22:33:44:55", "fe80::211:22ff:fe33:4455"),
    ("02:aa:00:00:00:01", "fe80::aa:ff:fe00:1"),
    ("fe:ff:ff:ff:ff:ff", "fe80::fcff:ffff:feff:ffff"),
])
def test_link_local_is_the_eui64_address(mac, want):
    assert link_local(mac) == ipaddress.IPv6Address(want)


@FAST
@given(st.binary(min_size=6, max_size=6))
def test_link_local_is_in_fe80_64_and_encodes_the_mac(raw):
    mac = ":".join(f"{b:02x}" for b in raw)
    ip = link_local(mac)
    assert ip in ipaddress.ip_network("fe80::/64") and ip.is_link_local
    iid = ip.packed[8:]
    assert iid[3:5] == b"\xff\xfe"
    assert bytes([iid[0] ^ 0x02]) + iid[1:3] + iid[5:] == raw
