"""``ryu-overlay ctl``: an operator's client over the REST API, after ``ovn-nbctl``.

    ryu-overlay ctl [--url URL] [--token T] [--format table|json] COMMAND [ARGS] [-- COMMAND [ARGS]]...

The changing commands (``net-add``, ``port-add``, ``hv-del`` ...) chained with ``--`` become ONE
``POST /v1/transactions``: all of them or none. ``--wait`` makes it answer once every affected
switch has confirmed (``"wait": "hv"``). The other commands (``show``, ``wait-sync``, ``events``,
``trace``) run alone. Errors print the API's message and exit 1 (2 for a wrong command line).
Uses only the standard library. docs/operations.md has examples.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TextIO

DEFAULT_URL = "http://127.0.0.1:8080"
CHANGES = ("net-add", "net-del", "port-add", "port-del", "port-move", "hv-add", "hv-del")
ALONE = ("show", "wait-sync", "events", "trace")


class CtlError(Exception):
    """What the API (or the network) answered instead of success; printed, exit status 1."""


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None, accept: str = "application/json",
                 timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": accept, **({"Content-Type": "application/json"} if data is not None else {}),
                   **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout if timeout is None else timeout)
        except urllib.error.HTTPError as err:
            raise CtlError(f"{method} {path}: {err.code} {_message(err.read())}") from None
        except (urllib.error.URLError, OSError) as err:
            raise CtlError(f"cannot reach {self.url}: {getattr(err, 'reason', err)}") from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        with self._request(method, path, body) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def stream(self, path: str, timeout: float | None) -> Iterator[dict[str, Any]]:
        """The server-sent events of ``path``, decoded, until the server ends the stream."""
        wait = None if timeout is None else timeout + 30
        with self._request("GET", path, accept="text/event-stream", timeout=wait) as resp:
            data: list[str] = []
            for raw in resp:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []


def _message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()[:200]
    if isinstance(body, dict) and "error" in body:
        at = f" (operation {body['index']})" if "index" in body and f"operation {body['index']}" not in body["error"] \
            else ""
        return str(body["error"]) + at
    return json.dumps(body)


# --- the command line ----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _global_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="ryu-overlay ctl", description=__doc__.split("\n\n")[0] if __doc__ else None,
                 epilog="commands: " + ", ".join((*ALONE, *CHANGES)) + "; 'ryu-overlay ctl COMMAND --help' for one",
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("RYU_OVERLAY_URL", DEFAULT_URL),
                    help=f"the controller's REST API (default: $RYU_OVERLAY_URL, else {DEFAULT_URL})")
    ap.add_argument("--token", default=os.environ.get("RYU_OVERLAY_REST_TOKEN"),
                    help="bearer token (default: $RYU_OVERLAY_REST_TOKEN)")
    ap.add_argument("--format", choices=("table", "json"), default="table", help="output (default: table)")
    ap.add_argument("--wait", action="store_true",
                    help="changes: answer once every affected switch has confirmed them (wait=hv)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds --wait and wait-sync wait at most (default 30)")
    return ap


def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    def parser(name: str, help_: str) -> argparse.ArgumentParser:
        return _Parser(prog=f"ryu-overlay ctl {name}", description=help_)

    p: dict[str, argparse.ArgumentParser] = {}
    p["show"] = parser("show", "networks with their ports and where they are, routers, hypervisors with their "
                               "switch's state")
    p["wait-sync"] = parser("wait-sync", "wait until every hypervisor's switch is connected and in sync")
    p["events"] = parser("events", "follow the event stream (server-sent events), one line per event")
    p["events"].add_argument("--since", type=int, help="start after this seq (default: from now on)")
    p["events"].add_argument("--for", dest="duration", type=float, metavar="SECONDS",
                             help="stop after this many seconds (default: until interrupted)")
    p["net-add"] = parser("net-add", "declare a network (or change it: every field is given again)")
    p["net-add"].add_argument("name")
    p["net-add"].add_argument("--vni", type=int, required=True)
    p["net-add"].add_argument("--tenant", required=True)
    p["net-add"].add_argument("--subnet", action="append", default=[], metavar="CIDR", help="repeatable")
    p["net-add"].add_argument("--mtu", type=int)
    p["net-del"] = parser("net-del", "delete a network (it must have no ports)")
    p["net-del"].add_argument("name")
    p["port-add"] = parser("port-add", "declare a VM port, optionally with its location")
    p["port-add"].add_argument("name")
    p["port-add"].add_argument("--network", required=True)
    p["port-add"].add_argument("--mac", required=True)
    p["port-add"].add_argument("--ip", action="append", default=[], metavar="ADDRESS", help="repeatable")
    p["port-add"].add_argument("--on", metavar="HYPERVISOR/INTERFACE", help="where the port is")
    p["port-del"] = parser("port-del", "delete a port")
    p["port-del"].add_argument("name")
    p["port-move"] = parser("port-move", "move a port to another hypervisor and interface (a migration)")
    p["port-move"].add_argument("name")
    p["port-move"].add_argument("to", metavar="HYPERVISOR/INTERFACE")
    p["hv-add"] = parser("hv-add", "declare a hypervisor")
    p["hv-add"].add_argument("name")
    p["hv-add"].add_argument("--dpid", required=True, help="its bridge's datapath id (hex)")
    p["hv-add"].add_argument("--tunnel-ip", required=True)
    p["hv-add"].add_argument("--tunnel-port", help="its VXLAN port's name (default vxlan0)")
    p["hv-del"] = parser("hv-del", "delete a hypervisor (it must host no ports)")
    p["hv-del"].add_argument("name")
    return p


def _split(words: list[str]) -> list[list[str]]:
    chain: list[list[str]] = [[]]
    for word in words:
        if word == "--":
            chain.append([])
        else:
            chain[-1].append(word)
    return chain


def _location(text: str, ap: argparse.ArgumentParser) -> tuple[str, str]:
    hv, sep, iface = text.partition("/")
    if not sep or not hv or not iface:
        ap.error(f"a location is HYPERVISOR/INTERFACE, not {text!r}")
    return hv, iface


# --- the commands --------------------------------------------------------------------------------

def _operation(client: Client, name: str, args: argparse.Namespace, ap: argparse.ArgumentParser,
               planned: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """One transaction operation; ``planned`` holds the bodies put by earlier commands of the chain."""
    if name == "net-add":
        body: dict[str, Any] = {"vni": args.vni, "tenant": args.tenant, "subnets": args.subnet}
        if args.mtu is not None:
            body["mtu"] = args.mtu
        return _put("networks", args.name, body, planned)
    if name == "port-add":
        body = {"network": args.network, "mac": args.mac, "ips": args.ip}
        if args.on:
            body["hypervisor"], body["interface"] = _location(args.on, ap)
        return _put("ports", args.name, body, planned)
    if name == "port-move":
        hv, iface = _location(args.to, ap)
        current = planned.get(("ports", args.name)) or client.call("GET", f"/v1/ports/{_quote(args.name)}")
        body = {k: current[k] for k in ("network", "mac", "ips")}
        return _put("ports", args.name, {**body, "hypervisor": hv, "interface": iface}, planned)
    if name == "hv-add":
        body = {"dpid": args.dpid, "tunnel_ip": args.tunnel_ip}
        if args.tunnel_port:
            body["tunnel_port"] = args.tunnel_port
        return _put("hypervisors", args.name, body, planned)
    kind = {"net-del": "networks", "port-del": "ports", "hv-del": "hypervisors"}[name]
    planned.pop((kind, args.name), None)
    return {"op": "delete", "kind": kind, "name": args.name}


def _put(kind: str, name: str, body: dict[str, Any], planned: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    planned[(kind, name)] = body
    return {"op": "put", "kind": kind, "name": name, "body": body}


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _transaction(client: Client, ops: list[dict[str, Any]], wait: bool, timeout: float) -> dict[str, Any]:
    body: dict[str, Any] = {"operations": ops}
    if wait:
        body.update(wait="hv", timeout=timeout)
    answer: dict[str, Any] = client.call("POST", "/v1/transactions", body)
    return answer


def _show(client: Client) -> dict[str, Any]:
    hvs = client.call("GET", "/v1/hypervisors")["hypervisors"]
    nets = client.call("GET", "/v1/networks")["networks"]
    ports = client.call("GET", "/v1/ports")["ports"]
    try:
        routers = client.call("GET", "/v1/routers")["routers"]
    except CtlError:
        routers = []  # a controller without routers
    by_net: dict[str, list[dict[str, Any]]] = {}
    for p in ports:
        by_net.setdefault(p["network"], []).append(p)
    return {"networks": [{**n, "ports": by_net.get(n["name"], [])} for n in nets], "routers": routers,
            "hypervisors": hvs}


def _wait_sync(client: Client, timeout: float, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    deadline = clock() + timeout
    while True:
        hvs = client.call("GET", "/v1/hypervisors")["hypervisors"]
        behind = [h["name"] for h in hvs if not h["in_sync"]]
        if not behind:
            return {"in_sync": [h["name"] for h in hvs]}
        if clock() >= deadline:
            raise CtlError(f"not in sync after {timeout:g} s: {', '.join(behind)}")
        time.sleep(0.1)


# --- output --------------------------------------------------------------------------------------

def _format_show(tree: dict[str, Any]) -> str:
    lines = []
    for n in tree["networks"]:
        subnets = " ".join(n.get("subnets", []))
        lines.append(f"network {n['name']} (vni {n['vni']}, tenant {n['tenant']})" + (f" {subnets}" if subnets else ""))
        for p in sorted(n["ports"], key=lambda p: p["name"]):
            where = f"{p['hypervisor']}/{p['interface']}" if p.get("hypervisor") else "unbound"
            flags = [f for f, on in (("frozen", p.get("frozen")), ("duplicate", p.get("duplicate"))) if on]
            lines.append(f"    port {p['name']} {p['mac']} {' '.join(p.get('ips', [])) or '-'} on {where}"
                         + (f" [{', '.join(flags)}]" if flags else ""))
    for r in tree["routers"]:
        lines.append(f"router {r['name']} (tenant {r['tenant']}, mac {r['mac']})")
        for i in r.get("interfaces", []):
            lines.append(f"    interface {i['network']} {i['ip']}")
        gw = r.get("gateway")
        if gw:
            lines.append(f"    gateway {gw['hypervisor']}/{gw['interface']} {gw['ip']} via {gw['next_hop']}")
    for h in tree["hypervisors"]:
        state = "in sync" if h["in_sync"] else "connected, syncing" if h["connected"] else "not connected"
        lines.append(f"hypervisor {h['name']} (dpid {h['dpid']}, tunnel {h['tunnel_ip']}): {state}")
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _format_results(answer: dict[str, Any]) -> str:
    done = {200: "changed", 201: "created", 204: "deleted"}
    rows = [["#", "OP", "KIND", "NAME", "RESULT"]]
    rows += [[str(i), r["op"], r["kind"], r["name"], done.get(r["status"], str(r["status"]))]
             for i, r in enumerate(answer["results"])]
    out = _table(rows)
    unconfirmed = answer.get("unconfirmed")
    if unconfirmed:
        out += "\nnot confirmed in time by: " + ", ".join(unconfirmed)
    elif unconfirmed is not None:
        out += "\nconfirmed by every switch"
    return out


def _format_event(event: dict[str, Any]) -> str:
    if event.get("type") == "resync":
        return f"resync (events lost; last {event.get('last')})"
    at = time.strftime("%H:%M:%S", time.localtime(event["at"]))
    what = " ".join(str(x) for x in (event.get("kind"), event.get("name")) if x)
    return f"{event['seq']} {at} {event['type']} {what}".rstrip()


def _print(out: TextIO, fmt: str, value: Any, table: Callable[[Any], str]) -> None:
    print(json.dumps(value, indent=2, sort_keys=True) if fmt == "json" else table(value), file=out)


def main(argv: list[str], out: TextIO = sys.stdout) -> int:
    ap = _global_parser()
    words = list(argv)
    first = next((i for i, w in enumerate(words) if w in (*ALONE, *CHANGES, "--")), len(words))
    opts = ap.parse_args(words[:first])
    chain = _split(words[first:])
    if not chain[0]:
        ap.error("no command")
    client = Client(opts.url, opts.token)
    name = chain[0][0]
    try:
        if name == "trace":
            from . import trace
            return trace.main(["--url", opts.url, *(["--token", opts.token] if opts.token else []), *chain[0][1:]])
        if name in ALONE:
            if len(chain) > 1:
                ap.error(f"{name} cannot be chained with '--'; only {', '.join(CHANGES)} can")
            args = _command_parsers()[name].parse_args(chain[0][1:])
            if name == "show":
                _print(out, opts.format, _show(client), _format_show)
            elif name == "wait-sync":
                _print(out, opts.format, _wait_sync(client, opts.timeout),
                       lambda v: f"in sync: {', '.join(v['in_sync']) or 'no hypervisors'}")
            else:
                _events(client, args, opts.format, out)
            return 0
        parsers = _command_parsers()
        planned: dict[tuple[str, str], dict[str, Any]] = {}
        ops = []
        for words_ in chain:
            if not words_ or words_[0] not in CHANGES:
                ap.error(f"unknown or unchainable command {' '.join(words_[:1]) or '(empty)'!r}; "
                         f"chain only {', '.join(CHANGES)}")
            parser = parsers[words_[0]]
            ops.append(_operation(client, words_[0], parser.parse_args(words_[1:]), parser, planned))
        _print(out, opts.format, _transaction(client, ops, opts.wait, opts.timeout), _format_results)
        return 0
    except CtlError as exc:
        print(f"ryu-overlay ctl: {exc}", file=sys.stderr)
        return 1


def _events(client: Client, args: argparse.Namespace, fmt: str, out: TextIO) -> None:
    query = [f"since={args.since}"] if args.since is not None else []
    if args.duration is not None:
        query.append(f"timeout={args.duration:g}")
    path = "/v1/events" + ("?" + "&".join(query) if query else "")
    try:
        for event in client.stream(path, args.duration):
            print(json.dumps(event, sort_keys=True) if fmt == "json" else _format_event(event), file=out, flush=True)
    except KeyboardInterrupt:
        pass
