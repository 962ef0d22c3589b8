"""GET /v1/events: what is announced, long poll (backlog, wake-up, timeout), resync, server-sent events
in-process and over a real HTTP connection to the controller process, resumed after a reconnect."""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any

import eventlet
import pytest
from scapy.layers.l2 import ARP, Ether

from ryu_overlay.controller import Controller
from ryu_overlay.events import EventLog
from ryu_overlay.testing.controller_proc import ControllerProcess

HV1 = {"dpid": "0000000000000001", "tunnel_ip": "198.18.0.1"}
HV2 = {"dpid": 2, "tunnel_ip": "198.18.0.2"}
BLUE = {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24"]}
A1 = {"network": "blue", "mac": "02:aa:00:00:00:01", "ips": ["10.1.0.1"], "hypervisor": "hv1", "interface": "tapA1"}
A2_MAC = "02:aa:00:00:00:02"
A2 = {"network": "blue", "mac": A2_MAC, "ips": ["10.1.0.2"]}


def connect(c: Controller, dpid: int, ofports: dict[str, int]) -> None:
    c.switch_connected(dpid)
    c.ports_reply(dpid, ofports, False)
    c.flows_reply(dpid, [], False)
    c.groups_reply(dpid, [], False)
    c.meters_reply(dpid, [], False)


def garp(mac: str, ip: str) -> bytes:
    return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=ip))


def events(api: Any, since: int, **query: Any) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in {"since": since, **query}.items())
    resp = api.get(f"/v1/events?{params}")
    assert resp.status_int == 200 and resp.json["resync"] is False
    return list(resp.json["events"])


def kinds(evs: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    return [(e["type"], e["kind"], e["name"]) for e in evs]


@pytest.fixture
def start(env: Any) -> int:
    return int(env.api.get("/v1/events").json["last"])


def test_object_changes_are_announced_with_the_object_as_get_shows_it(env, start):
    api = env.api
    api.put("/v1/hypervisors/hv1", HV1)
    api.put("/v1/networks/blue", BLUE)
    api.put("/v1/networks/blue", {**BLUE, "mtu": 1400})
    api.put("/v1/ports/a1", A1)
    api.delete("/v1/ports/a1")
    evs = events(api, start)
    assert kinds(evs) == [("created", "hypervisors", "hv1"), ("created", "networks", "blue"),
                          ("changed", "networks", "blue"), ("created", "ports", "a1"), ("deleted", "ports", "a1")]
    assert [e["seq"] for e in evs] == list(range(start + 1, start + 6))
    assert evs[0]["object"] == api.get("/v1/hypervisors/hv1").json
    assert evs[2]["object"] == api.get("/v1/networks/blue").json
    assert evs[4]["object"] is None
    assert events(api, evs[2]["seq"]) == evs[3:]


def test_a_refused_request_announces_nothing(env, start):
    assert env.api.put("/v1/ports/a1", A1).status_int == 404
    assert events(env.api, start) == []


def test_switch_and_mobility_events(env, start):
    api, c = env.api, env.controller
    for path, body in (("/v1/hypervisors/hv1", HV1), ("/v1/hypervisors/hv2", HV2), ("/v1/networks/blue", BLUE),
                       ("/v1/ports/a2", A2)):
        api.put(path, body)
    mark = api.get("/v1/events").json["last"]
    connect(c, 1, {"vxlan0": 100, "tapM": 9})
    connect(c, 2, {"vxlan0": 100, "tapM": 9})
    c.switch_connected(3)  # a bridge no hypervisor declares
    c.packet_in(1, 9, garp(A2_MAC, "10.1.0.2"))
    c.packet_in(2, 9, garp(A2_MAC, "10.1.0.2"))
    c.packet_in(1, 9, garp(A2_MAC, "10.1.0.2"))  # talking from both: a duplicate
    for xid in (7, 8):  # what the app does as it sends a batch, then the switch's replies
        c.barrier_sent(2, xid)
    c.barrier_replied(2, 7)
    c.barrier_replied(2, 8)
    c.switch_disconnected(1)
    evs = events(api, mark)
    assert kinds(evs) == [("switch_connected", "hypervisors", "hv1"), ("switch_connected", "hypervisors", "hv2"),
                          ("switch_connected", "hypervisors", None), ("port_learned", "ports", "a2"),
                          ("port_moved", "ports", "a2"), ("duplicate_address", "ports", "a2"),
                          ("switch_in_sync", "hypervisors", "hv2"), ("switch_disconnected", "hypervisors", "hv1")]
    assert [e.get("dpid") for e in evs if e["type"].startswith("switch_")] == [
        "0000000000000001", "0000000000000002", "0000000000000003", "0000000000000002", "0000000000000001"]
    assert evs[2]["object"] is None
    assert evs[4]["object"]["hypervisor"] == "hv2" and evs[5]["object"]["duplicate"]["hypervisor"] == "hv1"
    assert evs[6]["object"]["in_sync"] is True and evs[7]["object"]["connected"] is False


def test_a_switch_that_already_has_its_flows_is_in_sync_once_read_back(env, start):
    env.api.put("/v1/hypervisors/hv1", HV1)
    c = env.controller
    connect(c, 1, {"vxlan0": 100})
    cookies = [cookie for flows in c.switches[1].flows.values() for cookie in flows]
    meters = list(c.switches[1].meters.items())
    c.switch_disconnected(1)
    c.switch_connected(1)
    c.ports_reply(1, {"vxlan0": 100}, False)
    c.groups_reply(1, [], False)
    c.meters_reply(1, meters, False)
    assert kinds(events(env.api, start))[-1] == ("switch_connected", "hypervisors", "hv1")
    assert c.flows_reply(1, cookies, False) == {}
    assert kinds(events(env.api, start))[-1] == ("switch_in_sync", "hypervisors", "hv1")


def test_a_port_that_moves_too_often_is_announced_frozen(env, start):
    api, c = env.api, env.controller
    for path, body in (("/v1/hypervisors/hv1", HV1), ("/v1/hypervisors/hv2", HV2), ("/v1/networks/blue", BLUE),
                       ("/v1/ports/a2", A2)):
        api.put(path, body)
    connect(c, 1, {"vxlan0": 100, "tapM": 9})
    connect(c, 2, {"vxlan0": 100, "tapM": 9})
    for hop in range(8):
        dpid = 1 + hop % 2
        c.port_status(3 - dpid, "tapM", None)  # the interface left behind is gone: real moves
        c.port_status(dpid, "tapM", 9)
        c.packet_in(dpid, 9, garp(A2_MAC, "10.1.0.2"))
    types = [e["type"] for e in events(api, start) if e["kind"] == "ports"]
    assert "port_frozen" in types and types.count("port_moved") == 5


def test_a_reload_is_announced(env, start):
    env.controller.reload()
    assert kinds(events(env.api, start)) == [("reloaded", None, None)]


def test_long_poll_returns_the_backlog_at_once(env, start):
    env.api.put("/v1/networks/blue", BLUE)
    assert kinds(events(env.api, start, timeout=300)) == [("created", "networks", "blue")]


def test_long_poll_waits_and_wakes_up_on_a_change(env, start):
    eventlet.spawn(env.api.put, "/v1/networks/blue", BLUE)  # runs only once the poll waits
    assert kinds(events(env.api, start, timeout=60)) == [("created", "networks", "blue")]


def test_long_poll_without_since_waits_for_what_comes_next(env, start):
    env.api.put("/v1/networks/blue", BLUE)
    eventlet.spawn(env.api.put, "/v1/hypervisors/hv1", HV1)
    resp = env.api.get("/v1/events?timeout=60")
    assert kinds(resp.json["events"]) == [("created", "hypervisors", "hv1")]


def test_long_poll_times_out_with_no_events(env, start):
    env.api.put("/v1/networks/blue", BLUE)
    last = start + 1
    resp = env.api.get(f"/v1/events?since={last}&timeout=0.05")
    assert resp.json == {"events": [], "last": last, "resync": False}


def test_a_since_no_longer_kept_or_never_given_answers_resync_with_every_kept_event(env, start):
    env.controller.events = log = EventLog(retained=3)
    first = log.last
    for i in range(5):
        env.api.put("/v1/networks/blue", {**BLUE, "mtu": 1300 + i})
    for since in (first, first + 1, first + 99, 0):
        resp = env.api.get(f"/v1/events?since={since}")
        assert resp.json["resync"] is True and [e["seq"] for e in resp.json["events"]] == [
            first + 3, first + 4, first + 5]
    assert events(env.api, first + 2) == resp.json["events"]


def test_sequence_numbers_keep_growing_across_restarts():
    clock = iter([1000.0, 1000.5])
    before = EventLog(wall_clock=lambda: next(clock))
    before.append("created", "networks", "blue", {})
    after = EventLog(wall_clock=lambda: 1001.0)
    assert after.last > before.last
    assert after.after(before.last).resync is True


@pytest.mark.parametrize("query", ["since=-1", "since=x", "since=9007199254740992", "timeout=301", "timeout=-1",
                                   "timeout=nan", "timeout=x"])
def test_bad_query_is_refused_with_400(env, query):
    assert env.api.get(f"/v1/events?{query}").status_int == 400


def test_only_get_is_allowed(env):
    assert env.api.call("POST", "/v1/events", {}).status_int == 405


# --- server-sent events ------------------------------------------------------------------------------


def parse_sse(text: str) -> list[dict[str, str]]:
    messages = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
        if fields:
            messages.append(fields)
    return messages


def test_server_sent_events_in_process_with_resume_by_last_event_id(env, start):
    env.api.put("/v1/networks/blue", BLUE)
    env.api.put("/v1/hypervisors/hv1", HV1)
    sse = {"Accept": "text/event-stream"}
    resp = env.api.get(f"/v1/events?since={start}&timeout=0", headers=sse)
    assert resp.content_type == "text/event-stream" and resp.headers["Cache-Control"] == "no-cache"
    msgs = parse_sse(resp.text)
    assert msgs[0] == {"retry": "1000"}
    assert [(m["id"], json.loads(m["data"])["name"]) for m in msgs[1:]] == [(str(start + 1), "blue"),
                                                                          (str(start + 2), "hv1")]
    resumed = env.api.get(f"/v1/events?since={start}&timeout=0", headers={**sse, "Last-Event-ID": str(start + 1)})
    assert [m["id"] for m in parse_sse(resumed.text)[1:]] == [str(start + 2)]
    lost = env.api.get("/v1/events?since=1&timeout=0", headers=sse)
    assert json.loads(parse_sse(lost.text)[1]["data"]) == {"type": "resync", "last": start + 2}


def test_a_quiet_stream_gets_keep_alive_comments(env, start):
    chunks = list(env.controller.events.stream(start, timeout=0.05, keepalive=0.01))
    assert chunks[0] == b"retry: 1000\n\n" and b": keep-alive\n\n" in chunks


def read_sse(conn: http.client.HTTPResponse, count: int) -> list[dict[str, Any]]:
    """Read ``count`` events (messages with an id) from a live stream."""
    out: list[dict[str, Any]] = []
    fields: dict[str, str] = {}
    while len(out) < count:
        line = conn.fp.readline().decode().rstrip("\n")
        if line == "":
            if "id" in fields:
                out.append({"id": int(fields["id"]), **json.loads(fields["data"])})
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = value
    return out


def open_stream(ctl: ControllerProcess, path: str, headers: dict[str, str]) -> tuple[Any, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", ctl.rest_port, timeout=30)
    conn.request("GET", path, headers={"Accept": "text/event-stream", **headers})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
    return conn, resp


def test_server_sent_events_from_the_controller_process_resume_after_a_reconnect(tmp_path):
    ctl = ControllerProcess(tmp_path / "overlay.db", tmp_path / "controller.log")
    ctl.start()
    try:
        last = ctl.api("GET", "/v1/events")[1]["last"]
        conn, stream = open_stream(ctl, f"/v1/events?since={last}", {})
        assert ctl.api("PUT", "/v1/networks/blue", BLUE)[0] == 201  # while the stream is open
        assert ctl.api("PUT", "/v1/hypervisors/hv1", HV1)[0] == 201
        got = read_sse(stream, 2)
        assert [(e["type"], e["name"]) for e in got] == [("created", "blue"), ("created", "hv1")]
        assert [e["id"] for e in got] == [e["seq"] for e in got] == [last + 1, last + 2]
        conn.close()
        assert ctl.api("PUT", "/v1/ports/a2", A2)[0] == 201  # while nobody listens
        conn, stream = open_stream(ctl, f"/v1/events?since={last}", {"Last-Event-ID": str(got[0]["id"])})
        resumed = read_sse(stream, 2)
        assert [(e["type"], e["name"]) for e in resumed] == [("created", "hv1"), ("created", "a2")]
        conn.close()
        status, page = ctl.api("GET", f"/v1/events?since={resumed[-1]['id']}&timeout=0.1")
        assert (status, page["events"], page["resync"]) == (200, [], False)
        assert ctl.api("GET", "/v1/stats")[0] == 200  # the controller served on while streams came and went
    finally:
        ctl.stop()


def test_a_long_poll_on_the_controller_process_holds_no_other_request(tmp_path):
    ctl = ControllerProcess(tmp_path / "overlay.db", tmp_path / "controller.log")
    ctl.start()
    try:
        last = ctl.api("GET", "/v1/events")[1]["last"]
        poll = threading.Thread
        result: dict[str, Any] = {}
        thread = poll(target=lambda: result.update(page=ctl.api("GET", f"/v1/events?since={last}&timeout=60")))
        thread.start()
        assert ctl.api("PUT", "/v1/networks/blue", BLUE)[0] == 201  # served while the poll waits
        thread.join(60)
        status, page = result["page"]
        assert status == 200 and [(e["type"], e["name"]) for e in page["events"]] == [("created", "blue")]
    finally:
        ctl.stop()
