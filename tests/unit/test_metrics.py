"""``GET /metrics``: the Prometheus text parses, its labels name the right things, and its counters
and histograms move with real requests and real OpenFlow traffic (the controller process with
fake switches)."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ryu_overlay.metrics import Metrics
from ryu_overlay.openapi import openapi_document
from ryu_overlay.pipeline import Family
from ryu_overlay.rest import route_template
from ryu_overlay.testing.controller_proc import HOST, ControllerProcess
from ryu_overlay.testing.loadgen import Fleet, Placement

DEADLINE = 30.0  # a bound on waiting, not a performance assertion
DOCS = Path(__file__).resolve().parents[2] / "docs"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample by (name, sorted labels), through prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(resp.read().decode())


# --- in process ---------------------------------------------------------------------------------

def test_metrics_parse_and_the_rest_histogram_counts_requests_by_route_template(env):
    api = env.api
    api.put("/v1/hypervisors/hv1", {"dpid": "0000000000000001", "tunnel_ip": "198.18.0.1"})
    api.put("/v1/networks/blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24"]})
    for _ in range(2):
        api.get("/v1/networks/blue")
    api.get("/v1/ports/nosuch")
    api.get("/v1/no/such/thing")
    samples = parse(api.get("/metrics").text)
    hist = "ryu_overlay_rest_request_duration_seconds"
    assert value(samples, hist + "_count", method="GET", route="/v1/networks/{name}", code="200") == 2
    assert value(samples, hist + "_count", method="PUT", route="/v1/hypervisors/{name}", code="201") == 1
    assert value(samples, hist + "_count", method="GET", route="/v1/ports/{name}", code="404") == 1
    assert value(samples, hist + "_count", method="GET", route="other", code="404") == 1
    routes = {dict(labels).get("route") for name, labels in samples if name.startswith(hist)}
    assert not any(r and ("blue" in r or "nosuch" in r) for r in routes), routes
    bucket = value(samples, hist + "_bucket", method="GET", route="/v1/networks/{name}", code="200", le="+Inf")
    assert bucket == 2
    assert value(samples, "ryu_overlay_hypervisors") == 1
    assert value(samples, "ryu_overlay_switch_connected", hypervisor="hv1") == 0
    assert value(samples, "ryu_overlay_switches_connected") == 0


def test_each_app_has_its_own_registry(make_env, tmp_path):
    one, two = make_env(), make_env(db=tmp_path / "two.sqlite")
    for _ in range(3):
        one.api.get("/v1/stats")
    two.api.get("/v1/stats")
    hist = "ryu_overlay_rest_request_duration_seconds_count"
    assert value(parse(one.api.get("/metrics").text), hist, method="GET", route="/v1/stats", code="200") == 3
    assert value(parse(two.api.get("/metrics").text), hist, method="GET", route="/v1/stats", code="200") == 1


def test_metrics_need_the_token(make_env):
    env = make_env(token="s3cret")
    assert env.api.get("/metrics", auth=False).status_int == 401
    resp = env.api.get("/metrics")
    assert resp.status_int == 200 and "ryu_overlay_hypervisors" in resp.text
    assert env.api.post("/metrics").status_int == 405


def test_route_templates():
    assert route_template("/v1/ports/a1") == "/v1/ports/{name}"
    assert route_template("/v1/ports") == "/v1/ports"
    assert route_template("/metrics") == "/metrics"
    assert route_template("/console/console.js") == "/console/{file}"
    assert route_template("/") == "/"
    assert route_template("/v1/ports/a1/extra") == "other"


def test_flow_programming_is_timed_from_the_batch_to_its_barrier_reply():
    now = [10.0]
    m = Metrics(clock=lambda: now[0])
    m.batch_sent(1, 7)
    m.batch_sent(2, 8)
    now[0] = 10.25
    m.barrier_replied(1, 6)  # an earlier barrier of the batch: not the one that confirms it all
    m.barrier_replied(1, 7)
    m.switch_gone(2)
    m.barrier_replied(2, 8)  # gone before its reply: never observed
    samples = parse(m.render_histograms())
    assert value(samples, "ryu_overlay_flow_programming_seconds_count") == 1
    assert value(samples, "ryu_overlay_flow_programming_seconds_sum") == 0.25


def test_the_store_commit_histogram_is_fed_by_the_writer(tmp_path):
    from ryu_overlay.model import parse_network
    from ryu_overlay.store import Put, SqliteStore
    from ryu_overlay.worker import WriteBehindStore

    m = Metrics()
    store = WriteBehindStore(SqliteStore(str(tmp_path / "db.sqlite")), on_commit=m.store_commit.observe)
    store.start()
    try:
        store.apply([Put(parse_network("blue", {"vni": 5001, "tenant": "acme"}))])
        store.wait(store.ticket())
    finally:
        store.close()
    assert value(parse(m.render_histograms()), "ryu_overlay_store_commit_seconds_count") == 1


def test_operations_doc_lists_every_metric(env):
    text = (DOCS / "operations.md").read_text()
    names = {f.name for f in text_string_to_metric_families(env.api.get("/metrics").text)
             if not f.name.endswith("_created")}  # each histogram's creation time, which prometheus_client adds
    assert names
    for name in names:
        assert re.search(rf"`{name}(_total)?`", text), name
    assert "/metrics" in openapi_document()["paths"]


# --- the controller process with fake switches ------------------------------------------------

def test_counters_move_with_real_traffic(controller: ControllerProcess, placement: Placement):
    hvs = {hv.name: hv for hv in placement.hypervisors}
    before = scrape(controller.url)
    objects = len(list(placement.rest_objects()))
    assert value(before, "ryu_overlay_rest_request_duration_seconds_count", method="PUT",
                 route="/v1/ports/{name}", code="201") == len(placement.ports)
    assert value(before, "ryu_overlay_store_commit_seconds_count") >= 1
    assert value(before, "ryu_overlay_store_commit_seconds_count") <= objects
    assert value(before, "ryu_overlay_switches_connected") == 0

    async def scenario() -> None:
        fleet = Fleet(placement.specs())
        await fleet.connect(HOST, controller.ofp_port, concurrency=2, timeout=DEADLINE)
        try:
            topo = placement.topology()
            expected = placement.expected_states(topo)
            await fleet.wait(expected, DEADLINE)
            await asyncio.to_thread(controller.wait_in_sync, len(hvs))
            synced = await asyncio.to_thread(scrape, controller.url)
            assert value(synced, "ryu_overlay_switches_connected") == len(hvs)
            assert value(synced, "ryu_overlay_switches_in_sync") == len(hvs)
            for name, hv in hvs.items():
                sw = fleet.by_dpid[hv.dpid]
                assert value(synced, "ryu_overlay_switch_in_sync", hypervisor=name) == 1
                assert value(synced, "ryu_overlay_switch_flows", hypervisor=name) == sw.flow_count
                assert value(synced, "ryu_overlay_switch_groups", hypervisor=name) == len(sw.groups)
                assert value(synced, "ryu_overlay_switch_meters", hypervisor=name) == len(sw.meters)
            assert value(synced, "ryu_overlay_flow_programming_seconds_count") >= len(hvs)

            # an ARP request the switch sent up: answered by the controller
            asker = placement.ports[0]
            target = next(p for p in placement.ports if p.network == asker.network and p.name != asker.name)
            sw = fleet.by_dpid[hvs[str(asker.hypervisor)].dpid]
            await asyncio.wait_for(sw.arp_request(sw.ports[str(asker.interface)], asker.mac, str(asker.ips[0]),
                                                  str(target.ips[0])), DEADLINE)
            # the port, declared where it is but allowed to move, shows up on another hypervisor: a move
            body = {"network": asker.network, "mac": asker.mac, "ips": [str(ip) for ip in asker.ips],
                    "hypervisor": asker.hypervisor, "interface": asker.interface, "mobility": "learn"}
            assert controller.api("PUT", f"/v1/ports/{asker.name}", body)[0] == 200
            other = next(h for h in placement.hypervisors if h.name != asker.hypervisor)
            there = fleet.by_dpid[other.dpid]
            there.add_port("tapmoved", 99)
            there.gratuitous_arp(99, asker.mac, str(asker.ips[0]))
            deadline = time.monotonic() + DEADLINE
            while True:
                after = await asyncio.to_thread(scrape, controller.url)
                if value(after, "ryu_overlay_port_moves_total") == 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert value(after, "ryu_overlay_port_moves_total") == 1
            assert value(after, "ryu_overlay_packet_ins_total", reason="arp") == 1
            assert value(after, "ryu_overlay_packet_ins_total", reason="learn") == 1
            assert value(after, "ryu_overlay_answered_by_controller_total", protocol="arp") == 1
            assert value(after, "ryu_overlay_flow_programming_seconds_count") > value(
                synced, "ryu_overlay_flow_programming_seconds_count")
            assert value(after, "ryu_overlay_store_commit_seconds_count") > value(
                synced, "ryu_overlay_store_commit_seconds_count")

            # the in-switch responders' packet counters, polled every 5 s, by hypervisor and protocol
            for i, hv in enumerate(placement.hypervisors):
                fleet.by_dpid[hv.dpid].family_packets = {Family.ARP_RESPONDER: 10 + i, Family.ND_RESPONDER: 20 + i,
                                                         Family.UNKNOWN_ARP_DROP: 1000}
            want = {(hv.name, proto): base + i for i, hv in enumerate(placement.hypervisors)
                    for proto, base in (("arp", 10), ("nd", 20))}
            deadline = time.monotonic() + DEADLINE
            while True:
                after = await asyncio.to_thread(scrape, controller.url)
                polled = {(dict(labels)["hypervisor"], dict(labels)["protocol"]): v for (n, labels), v in after.items()
                          if n == "ryu_overlay_answered_in_switch_total"}
                if polled == want or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert polled == want
        finally:
            fleet.close()

    asyncio.run(asyncio.wait_for(scenario(), 4 * DEADLINE))


def test_packet_ins_are_counted_by_what_the_controller_did_with_them():
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6ND_RS, IPv6
    from scapy.layers.l2 import ARP, Ether

    from ryu_overlay.testing.scenario import build, connect

    c = build()
    connect(c, "hv1")
    a1 = "02:aa:00:00:00:01"
    frames = {
        "arp": Ether(src=a1, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=a1, psrc="10.1.0.1", pdst="10.1.0.2"),
        "nd": Ether(src=a1, dst="33:33:ff:00:00:02") / IPv6(src="fd00:1::1", dst="ff02::1:ff00:2")
        / ICMPv6ND_NS(tgt="fd00:1::2"),
        "dhcp": Ether(src=a1, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67) / BOOTP(chaddr=bytes.fromhex("02aa00000001"), xid=1)
        / DHCP(options=[("message-type", "discover"), "end"]),
        "spoofed": Ether(src="02:ee:00:00:00:09", dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc="02:ee:00:00:00:09", psrc="10.1.0.9", pdst="10.1.0.2"),
        "oversize": Ether(src=a1, dst="02:aa:00:00:00:02") / IP(src="10.1.0.1", dst="10.1.0.2", flags="DF")
        / UDP() / (b"x" * 2000),
        "malformed": Ether(src=a1, dst="02:aa:00:00:00:02", type=0x0800) / b"\x45",
    }
    for frame in frames.values():
        c.packet_in(1, 1, bytes(frame))  # tapA1, a1's interface
    c.packet_in(1, 77, bytes(frames["arp"]))  # a port the switch has not announced yet
    c.packet_in(1, 1000, bytes(Ether(src=a1) / IPv6() / ICMPv6ND_RS()))  # another unannounced port: kept too
    c.packet_in(9, 1, bytes(frames["arp"]))  # no such switch
    assert dict(c.packet_ins) == {"arp": 1, "nd": 1, "dhcp": 1, "spoofed": 1, "oversize": 1, "malformed": 1,
                                  "early": 2, "ignored": 1}
