"""``ryu-overlay ctl`` against the live controller process (run with ``--rest-token``): every command,
chains as one transaction (all or nothing), ``--format json``, errors and exit codes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ryu_overlay import ctl
from ryu_overlay.testing.controller_proc import HOST, LAUNCHER, ControllerProcess
from ryu_overlay.testing.loadgen import TUNNEL_OFPORT, TUNNEL_PORT, FakeSwitch, SwitchSpec

TOKEN = "s3cret"
HV1 = ["hv-add", "hv1", "--dpid", "0000000000000001", "--tunnel-ip", "198.18.0.1"]
BLUE = ["net-add", "blue", "--vni", "5001", "--tenant", "acme", "--subnet", "10.1.0.0/24"]
A1 = ["port-add", "a1", "--network", "blue", "--mac", "02:aa:00:00:00:01", "--ip", "10.1.0.1", "--on", "hv1/tapA1"]
A2 = ["port-add", "a2", "--network", "blue", "--mac", "02:aa:00:00:00:02", "--ip", "10.1.0.2"]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(tmp_path / "overlay.db", tmp_path / "controller.log", extra_args=["--rest-token", TOKEN])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def run(proc: ControllerProcess, *words: str, token: str | None = TOKEN) -> tuple[int, str]:
    out = io.StringIO()
    code = ctl.main(["--url", proc.url, *(["--token", token] if token else []), *words], out)
    return code, out.getvalue()


def chain(*commands: list[str]) -> list[str]:
    words: list[str] = []
    for c in commands:
        words += [*(["--"] if words else []), *c]
    return words


def api(proc: ControllerProcess, path: str) -> Any:
    req = urllib.request.Request(proc.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read().decode()
    return json.loads(body) if path.startswith("/v1/") else body


def requests_to(proc: ControllerProcess, method: str, route: str) -> float:
    labels = rf'code="\d+",method="{method}",route="{re.escape(route)}"'
    pattern = rf"^ryu_overlay_rest_request_duration_seconds_count\{{{labels}\}} (\S+)$"
    return sum(float(m.group(1)) for m in re.finditer(pattern, api(proc, "/metrics"), re.M))


def test_a_chain_is_one_transaction_and_show_draws_the_tree(live):
    code, out = run(live, *chain(HV1, BLUE, A1, A2))
    assert code == 0, out
    assert out.splitlines()[0].split() == ["#", "OP", "KIND", "NAME", "RESULT"]
    assert [line.split()[1:] for line in out.splitlines()[1:]] == [
        ["put", "hypervisors", "hv1", "created"], ["put", "networks", "blue", "created"],
        ["put", "ports", "a1", "created"], ["put", "ports", "a2", "created"]]
    assert requests_to(live, "POST", "/v1/transactions") == 1
    assert requests_to(live, "PUT", "/v1/ports/{name}") == 0

    code, out = run(live, "show")
    assert code == 0
    assert out.splitlines() == [
        "network blue (vni 5001, tenant acme) 10.1.0.0/24",
        "    port a1 02:aa:00:00:00:01 10.1.0.1 on hv1/tapA1",
        "    port a2 02:aa:00:00:00:02 10.1.0.2 on unbound",
        "hypervisor hv1 (dpid 0000000000000001, tunnel 198.18.0.1): not connected"]
    code, out = run(live, "--format", "json", "show")
    tree = json.loads(out)
    assert [p["name"] for p in tree["networks"][0]["ports"]] == ["a1", "a2"]
    assert tree["hypervisors"][0]["connected"] is False and tree["routers"] == []


def test_a_failing_chain_changes_nothing_and_names_the_operation(live, capsys):
    assert run(live, *chain(HV1, BLUE))[0] == 0
    before = api(live, "/v1/networks"), api(live, "/v1/ports")
    bad = ["port-add", "b1", "--network", "nosuch", "--mac", "02:bb:00:00:00:01"]
    red = ["net-add", "red", "--vni", "5002", "--tenant", "globex"]
    code, out = run(live, *chain(red, A1, bad))
    assert code == 1 and out == ""
    err = capsys.readouterr().err
    assert "POST /v1/transactions: 404" in err and "operation 2" in err and "nosuch" in err
    assert (api(live, "/v1/networks"), api(live, "/v1/ports")) == before


def test_move_and_delete_commands(live):
    assert run(live, *chain(HV1, ["hv-add", "hv2", "--dpid", "2", "--tunnel-ip", "198.18.0.2"], BLUE, A1))[0] == 0
    code, out = run(live, "--format", "json", "port-move", "a1", "hv2/tapX")
    assert code == 0
    (result,) = json.loads(out)["results"]
    assert result["status"] == 200 and (result["body"]["hypervisor"], result["body"]["interface"]) == ("hv2", "tapX")
    assert api(live, "/v1/ports/a1")["mobility_seq"] >= 1
    # a port created earlier in the same chain can be moved in it
    code, out = run(live, *chain(A2, ["port-move", "a2", "hv1/tapA2"]))
    assert code == 0, out
    assert (api(live, "/v1/ports/a2")["hypervisor"], api(live, "/v1/ports/a2")["interface"]) == ("hv1", "tapA2")
    code, out = run(live, *chain(["port-del", "a1"], ["port-del", "a2"], ["net-del", "blue"], ["hv-del", "hv2"]))
    assert code == 0
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["deleted"] * 4
    assert api(live, "/v1/networks") == {"networks": []}
    assert [h["name"] for h in api(live, "/v1/hypervisors")["hypervisors"]] == ["hv1"]


def test_wait_sync_and_wait(live, capsys):
    assert run(live, *chain(HV1, BLUE))[0] == 0
    code, _ = run(live, "--timeout", "0.3", "wait-sync")
    assert code == 1 and "not in sync after 0.3 s: hv1" in capsys.readouterr().err

    async def with_switch() -> tuple[tuple[int, str], tuple[int, str]]:
        sw = FakeSwitch(SwitchSpec(1, ((TUNNEL_PORT, TUNNEL_OFPORT), ("tapA1", 2)), "hv1"))
        await sw.connect(HOST, live.ofp_port)
        try:
            synced = await asyncio.to_thread(run, live, "--timeout", "20", "wait-sync")
            waited = await asyncio.to_thread(run, live, "--wait", *A1)
            return synced, waited
        finally:
            sw.close()

    (code, out), (wcode, wout) = asyncio.run(with_switch())
    assert (code, out) == (0, "in sync: hv1\n")
    assert wcode == 0 and wout.splitlines()[-1] == "confirmed by every switch"


def test_events_follows_the_stream(live):
    start = api(live, "/v1/events")["last"]
    assert run(live, *chain(HV1, BLUE))[0] == 0
    code, out = run(live, "events", "--since", str(start), "--for", "0.5")
    assert code == 0
    lines = out.splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["created hypervisors hv1", "created networks blue"]
    assert int(lines[0].split()[0]) == start + 1
    code, out = run(live, "--format", "json", "events", "--since", str(start), "--for", "0")
    assert [(e["type"], e["name"]) for e in map(json.loads, out.splitlines())] == [
        ("created", "hv1"), ("created", "blue")]


def test_trace_through_the_api(live, capsys):
    assert run(live, *chain(HV1, BLUE, A1, A2, ["port-move", "a2", "hv1/tapA2"]))[0] == 0
    code, _ = run(live, "trace", "hv1", "in_port=tapA1,eth_src=02:aa:00:00:00:01,eth_dst=02:aa:00:00:00:02,"
                                        "ip,ipv4_src=10.1.0.1,ipv4_dst=10.1.0.2")
    out = capsys.readouterr().out
    assert code == 0 and "port numbers of hv1 (guessed): vxlan0=1, tapA1=2, tapA2=3" in out
    assert out.splitlines()[-1] == "delivered on hv1 port 3"


def test_errors_print_the_api_message_and_exit_non_zero(live, capsys):
    code, _ = run(live, "show", token="wrong")
    assert code == 1 and "401 missing or wrong bearer token" in capsys.readouterr().err
    code, _ = run(live, "net-del", "nosuch")
    assert code == 1 and "404" in capsys.readouterr().err
    code, _ = run(live, "port-move", "nosuch", "hv1/tap0")
    assert code == 1 and "GET /v1/ports/nosuch: 404" in capsys.readouterr().err
    for words in (["show", "--", "net-del", "x"], ["port-move", "a1", "nowhere"], ["frobnicate"], [],
                  [*BLUE, "--", "show"]):
        with pytest.raises(SystemExit) as exc:
            run(live, *words)
        assert exc.value.code == 2, words
    code = ctl.main(["--url", f"http://{HOST}:1", "show"], io.StringIO())
    assert code == 1 and "cannot reach" in capsys.readouterr().err


def test_the_launcher_runs_ctl(live):
    env = {**os.environ, "RYU_OVERLAY_URL": live.url, "RYU_OVERLAY_REST_TOKEN": TOKEN}
    done = subprocess.run([str(LAUNCHER), "ctl", *HV1], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(LAUNCHER), "ctl", *HV1[:2]], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    assert done.returncode == 2 and "required" in done.stderr
    done = subprocess.run([str(LAUNCHER), "ctl", "net-del", "nosuch"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert done.returncode == 1 and "DELETE" not in done.stdout and "404" in done.stderr
