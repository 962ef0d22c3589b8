"""The real ``ryu-overlay`` launcher as a child process, and a keep-alive client for its REST API."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

LAUNCHER = Path(sys.executable).parent / "ryu-overlay"
HOST = "127.0.0.1"
NO_GC_LAUNCHER = ("import gc, sys; gc.disable(); sys.argv[0] = 'ryu-overlay'; "
                  "from ryu_overlay.cli import main; sys.exit(main())")


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RestClient:
    """One keep-alive HTTP/1.1 connection to the REST API (loopback only), reopened once if it drops."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path} answered {status}: {answer}")
        return answer

    def close(self) -> None:
        self.conn.close()


def wait_in_sync(rest: RestClient, hypervisors: int | None = None, also: Callable[[], bool] = lambda: True,
                 timeout: float = 20.0, poll: float = 0.05, log: Callable[[], str] = lambda: "") -> None:
    """Until the controller reports every hypervisor (``hypervisors`` of them, if given) in sync,
    that is connected with every change confirmed by a barrier reply, and ``also()`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = rest.call("GET", "/v1/hypervisors")
        ready = (status == 200 and all(h["in_sync"] for h in body["hypervisors"])
                 and (hypervisors is None or len(body["hypervisors"]) == hypervisors))
        if ready and also():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not in sync after {timeout}s: {body}\n{log()}")
        time.sleep(poll)


class ControllerProcess:
    """``ryu-overlay`` on a free OpenFlow port (on ``ofp_host``; all addresses by default, so that
    hypervisors in namespaces reach it) and a free REST port (loopback). ``gc=False`` runs it with
    Python's garbage collector disabled (a benchmark diagnostic)."""

    def __init__(self, db: Path | str, log: Path, ofp_port: int | None = None, rest_port: int | None = None,
                 extra_args: Sequence[str] = (), env: dict[str, str] | None = None, ofp_host: str = "0.0.0.0",
                 gc: bool = True) -> None:
        self.db = db
        self.log = log
        self.ofp_host = ofp_host
        self.ofp_port = ofp_port or free_port(ofp_host)
        self.rest_port = rest_port or free_port()
        self.extra_args = tuple(extra_args)
        self.env = env
        self.gc = gc
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        """The command line; a subclass may start another command with the same wait and stop."""
        launcher = [str(LAUNCHER)] if self.gc else [sys.executable, "-c", NO_GC_LAUNCHER]
        return [*launcher, "--ofp-listen-host", self.ofp_host, "--ofp-tcp-listen-port", str(self.ofp_port),
                "--rest-host", HOST, "--rest-port", str(self.rest_port), "--db", str(self.db), *self.extra_args]

    def start(self, timeout: float = 60.0) -> ControllerProcess:
        """Launch, and return once the REST API answers and the OpenFlow port accepts connections."""
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=None if self.env is None else {**os.environ, **self.env})
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ryu-overlay exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "/v1/stats")
                with socket.create_connection((HOST, self.ofp_port), timeout=1):
                    pass
                self.started_in = time.monotonic() - t0
                return self
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ryu-overlay did not listen within {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        self.proc = None

    def rest(self, timeout: float = 60.0) -> RestClient:
        """A keep-alive client of its own for the caller (who closes it)."""
        return RestClient(self.rest_port, timeout)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request on a connection of its own (safe from any thread): (status, decoded body)."""
        with closing(self.rest(timeout=10)) as client:
            return client.call(method, path, body)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """One request on a connection of its own that must succeed: the decoded body."""
        with closing(self.rest()) as client:
            return client.ok(method, path, body)

    def wait_in_sync(self, hypervisors: int | None = None, also: Callable[[], bool] = lambda: True,
                     timeout: float = 20.0) -> None:
        with closing(self.rest()) as client:
            wait_in_sync(client, hypervisors, also, timeout, log=self.log_tail)

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the controller process, in KiB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> ControllerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
