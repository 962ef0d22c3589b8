"""A 3-member etcd cluster of Debian's ``etcd-server`` on free loopback ports, for tests and experiments.

Each member has its own ``--data-dir`` under ``workdir``; members are started and stopped by
pid. ``kill(i)`` / ``start_member(i)`` take one member down and bring it back (same data
directory, rejoining as an existing member) for fault tests.

    with EtcdCluster(tmp_path) as cluster:
        url = cluster.url("/ryu-overlay")   # etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/ryu-overlay
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .controller_proc import HOST, free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


class EtcdCluster:
    """``size`` members on loopback; ``heartbeat_ms``/``election_ms`` short so that a lost leader is
    replaced within about a second (etcd's defaults are 100 and 1000)."""

    def __init__(self, workdir: Path, size: int = 3, heartbeat_ms: int = 50, election_ms: int = 500) -> None:
        self.workdir = Path(workdir)
        self.size = size
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.client_ports = [free_port() for _ in range(size)]
        self.peer_ports = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self.token = f"ryu-overlay-{os.getpid()}-{time.monotonic_ns()}"

    def name(self, i: int) -> str:
        return f"m{i}"

    def endpoints(self) -> list[str]:
        return [f"{HOST}:{p}" for p in self.client_ports]

    def url(self, prefix: str = "/ryu-overlay") -> str:
        """The ``--db`` value that selects this cluster."""
        return "etcd://" + ",".join(self.endpoints()) + prefix

    def _argv(self, i: int, state: str) -> list[str]:
        peers = ",".join(f"{self.name(j)}=http://{HOST}:{p}" for j, p in enumerate(self.peer_ports))
        client = f"http://{HOST}:{self.client_ports[i]}"
        peer = f"http://{HOST}:{self.peer_ports[i]}"
        return [ETCD, "--name", self.name(i), "--data-dir", str(self.workdir / f"etcd-{self.name(i)}"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", peers, "--initial-cluster-state", state,
                "--initial-cluster-token", self.token,
                "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
                "--logger", "zap", "--log-level", "warn"]

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(self.size):
                self._spawn(i, "new")
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, i: int, state: str) -> None:
        with open(self.workdir / f"etcd-{self.name(i)}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(self._argv(i, state), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Stop member ``i`` by pid (SIGKILL by default: a crash)."""
        proc = self.procs[i]
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(15)
        self.procs[i] = None

    def start_member(self, i: int, timeout: float = 30.0) -> None:
        """Bring member ``i`` back with its data directory (it rejoins the cluster)."""
        if self.procs[i] is None:
            self._spawn(i, "existing")
        self._wait(lambda: self.member_health(i), timeout, f"etcd member {i} did not come back")

    def alive(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]

    def member_health(self, i: int) -> bool:
        """The member answers and the cluster it sees has a leader (a quorum)."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.client_ports[i]}/health", timeout=2) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        self._wait(lambda: all(self.member_health(i) for i in self.alive()), timeout, "etcd cluster not healthy")

    def _wait(self, ready: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 10) -> str:
        out = []
        for i in range(self.size):
            path = self.workdir / f"etcd-{self.name(i)}.log"
            if path.exists():
                out += [f"{self.name(i)}: {line}" for line in path.read_text(errors="replace").splitlines()[-lines:]]
        return "\n".join(out)

    def stop(self) -> None:
        for i in range(self.size):
            self.kill(i, signal.SIGTERM)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
