"""Hypervisors managed over OVSDB on real Open vSwitch: provisioning, iface-id binding as libvirt plugs VMs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import ICMP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Ether
from scapy.layers.vxlan import VXLAN

from ryu_overlay.testing.controller_proc import ControllerProcess, free_port

if TYPE_CHECKING:
    from ryu_overlay.testing.netns_testbed import Testbed


@pytest.fixture
def managed_ctl(tmp_path: Path, requirements: None) -> Iterator[ControllerProcess]:
    """The controller as OVSDB manager: passive connections on a free port, netdev bridges."""
    port = free_port("0.0.0.0")
    proc = ControllerProcess(tmp_path / "overlay.db", tmp_path / "controller.log",
                             extra_args=["--ovsdb-listen", f"ptcp:{port}", "--ovsdb-datapath-type", "netdev"])
    proc.ovsdb_port = port  # type: ignore[attr-defined]
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def declare_managed(ctl: ControllerProcess, bed: Testbed, ovsdb: Callable[[str], str], **extra: Any) -> None:
    for name, hv in bed.hvs.items():
        status, body = ctl.api("PUT", f"/v1/hypervisors/{name}",
                               {"dpid": hv.dpid, "tunnel_ip": hv.tunnel_ip, "ovsdb": ovsdb(name), **extra})
        assert status == 201, body

    def ready() -> bool:
        hvs = ctl.api("GET", "/v1/hypervisors")[1]["hypervisors"]
        return all(h["ovsdb"] == "connected" and h["connected"] for h in hvs)

    until(ready, "managed hypervisors connected over OVSDB and OpenFlow")
    bed.warm_underlay()


def located(ctl: ControllerProcess, port: str, hv: str, iface: str) -> Callable[[], bool]:
    def check() -> bool:
        body = ctl.api("GET", f"/v1/ports/{port}")[1]
        return (body["hypervisor"], body["interface"], body["location_source"]) == (hv, iface, "ovsdb")
    return check


def versions(bed: Testbed, hv: str, table: str) -> str:
    """Every row's ``_version``: it changes with each write to the row."""
    ovs = bed.hvs[hv].ovs
    query = json.dumps(["Open_vSwitch", {"op": "select", "table": table, "where": [], "columns": ["_version"]}])
    return ovs.run(["ovsdb-client", "transact", f"unix:{ovs.db_sock}", query])


def test_passive_hypervisors_are_provisioned_and_vms_plugged_as_libvirt_does_are_bound_by_iface_id(
        managed_ctl: ControllerProcess, make_bed: Callable[..., Testbed]) -> None:
    ctl = managed_ctl
    bed = make_bed(3, ctl.ofp_port, managed="passive", ovsdb_port=ctl.ovsdb_port)  # type: ignore[attr-defined]
    ovs1 = bed.hvs["hv1"].ovs
    ovs1.vsctl("add-br", "br-mine", "--", "set", "bridge", "br-mine", "datapath_type=netdev")
    declare_managed(ctl, bed, lambda _: "passive")
    # Provisioned: the bridge as the contract says, the tunnel port; what it did not create is untouched.
    assert ovs1.vsctl("get", "bridge", "br-int", "fail_mode").strip() == "secure"
    assert ovs1.vsctl("get", "bridge", "br-int", "protocols").strip() == '[OpenFlow13]'
    assert ovs1.vsctl("get", "bridge", "br-int", "other_config:datapath-id").strip() == '"0000000000000001"'
    assert ovs1.vsctl("get", "interface", "vxlan0", "type").strip() == "vxlan"
    assert ovs1.vsctl("list-ports", "br-mine").strip() == ""
    ovs1.vsctl("add-port", "br-int", "extra0", "--", "set", "interface", "extra0", "type=internal")
    before = [versions(bed, "hv1", t) for t in ("Bridge", "Port")]
    time.sleep(2)  # idempotent: nothing rewritten while nothing changes
    assert [versions(bed, "hv1", t) for t in ("Bridge", "Port")] == before
    assert "extra0" in ovs1.vsctl("list-ports", "br-int")

    for net, vni in (("blue", 5001),):
        assert ctl.api("PUT", f"/v1/networks/{net}", {"vni": vni, "tenant": "acme",
                                                       "subnets": ["10.1.0.0/24"]})[0] == 201
    for port, mac, ip in (("a", "02:aa:00:00:00:0a", "10.1.0.10"), ("b", "02:aa:00:00:00:0b", "10.1.0.11")):
        assert ctl.api("PUT", f"/v1/ports/{port}", {"network": "blue", "mac": mac, "ips": [ip]})[0] == 201
    bed.plug_vm("a", "hv1", "vnet7", "a", "02:aa:00:00:00:0a", ["10.1.0.10"])
    bed.plug_vm("b", "hv2", "tap1a2b3c4d-5e", "b", "02:aa:00:00:00:0b", ["10.1.0.11"])
    until(located(ctl, "a", "hv1", "vnet7"), "a bound by iface-id")
    until(located(ctl, "b", "hv2", "tap1a2b3c4d-5e"), "b bound by iface-id")
    seq = ctl.api("GET", "/v1/ports/a")[1]["mobility_seq"]
    until(lambda: bed.ping("a", "10.1.0.11"), "a reaching b", timeout=20)
    # Live migration: the tap goes from hv1 and comes up on hv3 with the same iface-id.
    bed.move_vm("a", "hv3")
    until(located(ctl, "a", "hv3", "vnet7"), "a moved to hv3 by iface-id")
    assert ctl.api("GET", "/v1/ports/a")[1]["mobility_seq"] == seq + 1
    until(lambda: bed.ping("b", "10.1.0.10"), "b reaching a on hv3", timeout=20)
    stats = ctl.api("GET", "/v1/stats")[1]
    assert stats["learned"] == 0 and stats["ovsdb_bound"] >= 3 and stats["ovsdb_unbound"] == 1
    # A restarted controller finds everything in place and rewrites nothing (the BFD ports included).
    until(lambda: tunnels(ctl, "hv2") == {"hv3": "up"}, "BFD between hv2 and hv3")
    before = [versions(bed, hv, t) for hv in ("hv2", "hv3") for t in ("Bridge", "Port")]
    ctl.stop()
    again = ControllerProcess(ctl.db, ctl.log.with_name("restarted.log"), ofp_port=ctl.ofp_port,
                              extra_args=ctl.extra_args)
    again.start()
    try:
        until(lambda: all(h["ovsdb"] == "connected" and h["connected"]
                          for h in again.api("GET", "/v1/hypervisors")[1]["hypervisors"]), "reconnections")
        time.sleep(2)
        assert [versions(bed, hv, t) for hv in ("hv2", "hv3") for t in ("Bridge", "Port")] == before
        assert bed.ping("b", "10.1.0.10")
    finally:
        again.stop()


def encapsulated(packets: list[Any], tunnel_type: str) -> set[int]:
    """The VNIs of the ICMP echo requests seen inside ``tunnel_type`` tunnels."""
    vnis = set()
    for p in packets:
        if tunnel_type == "geneve" and UDP in p and p[UDP].dport == 6081:
            geneve = GENEVE(bytes(p[UDP].payload))
            if ICMP in geneve:
                vnis.add(geneve.vni)
        elif tunnel_type == "gre" and GRE in p and p[GRE].key_present and ICMP in Ether(bytes(p[GRE].payload)):
            vnis.add(p[GRE].key)
    return vnis


@pytest.mark.parametrize("tunnel_type", ["geneve", "gre"])
def test_connect_out_hypervisors_tunnel_with_geneve_or_gre_carrying_the_vni(
        managed_ctl: ControllerProcess, make_bed: Callable[..., Testbed], tunnel_type: str) -> None:
    ctl = managed_ctl
    bed = make_bed(2, ctl.ofp_port, managed="active")
    declare_managed(ctl, bed, lambda name: f"tcp:{bed.hvs[name].mgmt_ip}:6640", tunnel_type=tunnel_type)
    ovs1 = bed.hvs["hv1"].ovs
    assert ovs1.vsctl("get", "interface", f"{tunnel_type}0", "type").strip() == tunnel_type
    assert ctl.api("PUT", "/v1/networks/blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24"]})[0] == 201
    for port, mac, ip, hv in (("a", "02:aa:00:00:00:0a", "10.1.0.10", "hv1"),
                              ("b", "02:aa:00:00:00:0b", "10.1.0.11", "hv2")):
        assert ctl.api("PUT", f"/v1/ports/{port}", {"network": "blue", "mac": mac, "ips": [ip]})[0] == 201
        bed.plug_vm(port, hv, f"vnet{port}", port, mac, [ip])
        until(located(ctl, port, hv, f"vnet{port}"), f"{port} bound by iface-id")
    until(lambda: bed.ping("a", "10.1.0.11"), "a reaching b", timeout=20)
    bpf = "udp port 6081" if tunnel_type == "geneve" else "proto gre"
    cap = bed.capture(bed.fabric, f"u{bed.hvs['hv2'].index}", bpf)
    assert bed.ping("a", "10.1.0.11", count=3)
    assert encapsulated(cap.stop(), tunnel_type) == {5001}


def tunnels(ctl: ControllerProcess, hv: str) -> dict[str, str]:
    return ctl.api("GET", f"/v1/hypervisors/{hv}")[1].get("tunnels", {})


def flood_targets(bed: Testbed, hv: str) -> set[str]:
    """The tunnel destinations in ``hv``'s flood groups."""
    out = bed.hvs[hv].ovs.ofctl("dump-groups")
    return {part.split("->")[0].split(":")[-1] for part in out.replace(",", " ").split() if "->tun_dst" in part}


def test_bfd_takes_a_dead_hypervisor_out_of_flooding_and_unicast_and_brings_it_back(
        managed_ctl: ControllerProcess, make_bed: Callable[..., Testbed]) -> None:
    ctl = managed_ctl
    bed = make_bed(3, ctl.ofp_port, managed="passive", ovsdb_port=ctl.ovsdb_port)  # type: ignore[attr-defined]
    declare_managed(ctl, bed, lambda _: "passive")
    assert ctl.api("PUT", "/v1/networks/blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24"]})[0] == 201
    for i, hv in enumerate(("hv1", "hv2", "hv3"), start=1):
        mac, ip = f"02:aa:00:00:00:0{i}", f"10.1.0.{i}"
        assert ctl.api("PUT", f"/v1/ports/v{i}", {"network": "blue", "mac": mac, "ips": [ip]})[0] == 201
        bed.plug_vm(f"v{i}", hv, f"vnet{i}", f"v{i}", mac, [ip])
    until(lambda: tunnels(ctl, "hv1") == {"hv2": "up", "hv3": "up"}, "BFD up from hv1")
    until(lambda: flood_targets(bed, "hv1") == {"198.18.0.2", "198.18.0.3"}, "hv1 flooding to both peers")
    until(lambda: bed.ping("v1", "10.1.0.3"), "v1 reaching v3")
    # BFD ports carry no VM flows: the pipeline on hv1 still matches only its VM port and the flow-based tunnel.
    assert ctl.api("GET", "/v1/stats")[1]["dropped_unknown_source"] == 0
    bed.hvs["hv3"].ovs.kill()
    until(lambda: tunnels(ctl, "hv1").get("hv3") == "down", "hv1 seeing hv3 down", timeout=10)
    until(lambda: flood_targets(bed, "hv1") == {"198.18.0.2"}, "hv3 out of hv1's flood group", timeout=10)
    assert not any("198.18.0.3" in line for line in bed.dump_flows("hv1"))  # no unicast towards it either
    assert bed.ping("v1", "10.1.0.2")
    bed.hvs["hv3"].ovs.start()
    until(lambda: tunnels(ctl, "hv1").get("hv3") == "up", "hv3 back up from hv1", timeout=30)
    until(lambda: flood_targets(bed, "hv1") == {"198.18.0.2", "198.18.0.3"}, "hv3 back in hv1's flood group")
    until(lambda: bed.ping("v1", "10.1.0.3"), "v1 reaching v3 again", timeout=30)


def test_an_ipv6_underlay_carries_the_overlay_with_tun_ipv6_dst(
        managed_ctl: ControllerProcess, make_bed: Callable[..., Testbed]) -> None:
    ctl = managed_ctl
    bed = make_bed(2, ctl.ofp_port, managed="passive", ovsdb_port=ctl.ovsdb_port,  # type: ignore[attr-defined]
                   underlay6=True)
    declare_managed(ctl, bed, lambda _: "passive")
    assert bed.hvs["hv2"].ovs.vsctl("get", "interface", "vxlan0", "options:local_ip").strip() == '"2001:2::2"'
    # VXLAN over IPv6 takes 70 bytes: the network's MTU leaves room for them on a 1500-byte underlay.
    assert ctl.api("PUT", "/v1/networks/blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24"],
                                                "mtu": 1430})[0] == 201
    for port, mac, ip, hv in (("a", "02:aa:00:00:00:0a", "10.1.0.10", "hv1"),
                              ("b", "02:aa:00:00:00:0b", "10.1.0.11", "hv2")):
        assert ctl.api("PUT", f"/v1/ports/{port}", {"network": "blue", "mac": mac, "ips": [ip]})[0] == 201
        bed.plug_vm(port, hv, f"vnet{port}", port, mac, [ip], mtu=1430)
        until(located(ctl, port, hv, f"vnet{port}"), f"{port} bound by iface-id")
    until(lambda: bed.ping("a", "10.1.0.11"), "a reaching b over the IPv6 underlay", timeout=20)
    assert any("tun_ipv6_dst" in line or "ipv6_dst=2001:2::2" in line for line in bed.dump_flows("hv1"))
    cap = bed.capture(bed.fabric, f"u{bed.hvs['hv2'].index}", "ip6 and udp port 4789")
    assert bed.vm_exec("a", ["ping", "-c", "3", "-i", "0.2", "-s", "1402", "-M", "do", "10.1.0.11"]).returncode == 0
    vnis = {p[VXLAN].vni for p in cap.stop() if IPv6 in p and VXLAN in p and ICMP in p[VXLAN]}
    assert vnis == {5001}
