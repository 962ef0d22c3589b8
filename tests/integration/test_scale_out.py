"""Several controller instances on a 3-member etcd cluster, real OVS in namespaces: even mastership,
failover without a flow flush or a lost ping, and a port created through the survivor meanwhile;
and, without OVS, two instances racing to write one port."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ryu_overlay.etcdstore import EtcdStore, _b64
from ryu_overlay.testing.controller_proc import ControllerProcess
from ryu_overlay.testing.etcd import EtcdCluster
from ryu_overlay.testing.netns_testbed import Testbed
from ryu_overlay.testing.overlay import Overlay, put

pytestmark = pytest.mark.integration  # etcd-server is installed by `make install`; a missing one fails
TTL = 2
PORTS = {"a1": ("02:aa:00:00:00:01", "10.1.0.1", "hv1", "tapA1"),
         "a2": ("02:aa:00:00:00:02", "10.1.0.2", "hv2", "tapA2"),
         "a3": ("02:aa:00:00:00:03", "10.1.0.3", "hv3", "tapA3")}


@dataclass
class Cluster:
    etcd: EtcdCluster
    ctls: dict[str, ControllerProcess]
    bed: Testbed

    def masters(self) -> dict[str, str | None]:
        ctl = next(c for c in self.ctls.values() if c.proc is not None)
        return {h["name"]: h["master"] for h in ctl.api("GET", "/v1/hypervisors")[1]["hypervisors"]}

    def wait_in_sync(self, timeout: float = 30.0) -> None:
        """Every hypervisor mastered by a live instance, and in sync on that instance."""
        deadline = time.monotonic() + timeout
        while True:
            masters = self.masters()
            live = {name for name, c in self.ctls.items() if c.proc is not None}
            if masters and all(m in live for m in masters.values()) and all(
                    self.ctls[m].api("GET", f"/v1/hypervisors/{hv}")[1]["in_sync"]  # type: ignore[index]
                    for hv, m in masters.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not in sync: {masters}")
            time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    etcd = EtcdCluster(tmp_path / "etcd")
    ctls: dict[str, ControllerProcess] = {}
    bed: Testbed | None = None
    try:
        etcd.start()
        for name in ("c0", "c1"):
            ctls[name] = ControllerProcess(etcd.url(), tmp_path / f"{name}.log",
                                           extra_args=["--instance-id", name, "--lease-ttl", str(TTL)]).start()
        bed = Testbed(tmp_path, ctls["c0"].ofp_port, more_controller_ports=(ctls["c1"].ofp_port,))
        bed.build(3)
        yield Cluster(etcd, ctls, bed)
    finally:
        if bed is not None:
            bed.close()
        for ctl in ctls.values():
            ctl.stop()
        etcd.stop()


def deploy(c: Cluster) -> None:
    ctl = c.ctls["c0"]
    for name, hv in c.bed.hvs.items():
        put(ctl, f"/v1/hypervisors/{name}", {"dpid": hv.dpid, "tunnel_ip": hv.tunnel_ip})
    put(ctl, "/v1/networks/blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24"]})
    deadline = time.monotonic() + 10  # visible on c1 after one watch round trip (longer on a loaded machine)
    while c.ctls["c1"].api("GET", "/v1/networks/blue")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    for name, (mac, ip, hv_name, iface) in PORTS.items():
        put(c.ctls["c1"], f"/v1/ports/{name}", {"network": "blue", "mac": mac, "ips": [ip], "hypervisor": hv_name,
                                                "interface": iface})
        c.bed.add_vm(name, hv_name, iface, mac, [ip])
    c.wait_in_sync()


def test_kill_9_of_a_master_loses_no_ping_and_flushes_no_flow(cluster):
    c = cluster
    deploy(c)
    masters = c.masters()
    assert sorted(Counter(masters.values()).values()) == [1, 2]  # 3 switches over 2 instances: 2 and 1
    assert c.bed.ping("a1", "10.1.0.2") and c.bed.ping("a1", "10.1.0.3")
    victim = Counter(masters.values()).most_common(1)[0][0]
    survivor = next(n for n in c.ctls if n != victim)
    overlay = Overlay(c.ctls[survivor], c.bed)
    before = {hv: overlay.flows(hv) for hv in c.bed.hvs}
    pingers = [subprocess.Popen(["ip", "netns", "exec", c.bed.vms["a1"].netns, "ping", "-i", "0.05", "-w", "8", dst],
                                stdout=subprocess.PIPE, text=True) for dst in ("10.1.0.2", "10.1.0.3")]
    c.bed.procs.extend(pingers)
    time.sleep(1)
    c.ctls[victim].stop(signal.SIGKILL)
    # During the failover, a port created through the surviving instance.
    put(c.ctls[survivor], "/v1/ports/b1", {"network": "blue", "mac": "02:aa:00:00:00:04", "ips": ["10.1.0.4"],
                                           "hypervisor": "hv2", "interface": "tapB1"})
    c.bed.add_vm("b1", "hv2", "tapB1", "02:aa:00:00:00:04", ["10.1.0.4"])
    c.wait_in_sync(timeout=TTL + 20)
    assert set(c.masters().values()) == {survivor}
    for pinger in pingers:
        out, _ = pinger.communicate(timeout=30)
        assert " 0% packet loss" in out, out
    after = {hv: overlay.flows(hv) for hv in c.bed.hvs}
    for hv, flows in before.items():
        for cookie, duration in flows.items():
            assert cookie in after[hv] and after[hv][cookie] >= duration, (hv, cookie)  # never flushed
    assert c.bed.ping("b1", "10.1.0.1", count=2) and c.bed.ping("a3", "10.1.0.4", count=2)
    status, body = c.ctls[survivor].api("GET", "/v1/instances")
    assert status == 200 and body["instances"] == [{"id": survivor, "hypervisors": ["hv1", "hv2", "hv3"]}]


def test_etcd_member_loss_and_quorum_loss_keep_the_data_plane_and_lose_nothing_acknowledged(cluster):
    c = cluster
    deploy(c)
    ctl = c.ctls["c0"]
    c.etcd.kill(0)
    status, _ = ctl.api("PUT", "/v1/ports/b1", {"network": "blue", "mac": "02:aa:00:00:00:04", "ips": ["10.1.0.4"]})
    assert status == 201  # one member down: writes go on
    c.etcd.kill(1)
    status, body = ctl.api("PUT", "/v1/ports/b2", {"network": "blue", "mac": "02:aa:00:00:00:05",
                                                   "ips": ["10.1.0.5"]})
    assert status == 503 and "quorum" in body["error"]
    assert c.bed.ping("a1", "10.1.0.2", count=3)  # the data plane goes on
    deadline = time.monotonic() + 20
    while ctl.api("GET", "/v1/ports/b1")[0] != 200:  # reads go on once the refused write is undone
        assert time.monotonic() < deadline
        time.sleep(0.2)
    c.etcd.start_member(0)
    c.etcd.start_member(1)
    c.etcd.wait_healthy()
    for other in c.ctls.values():  # the acknowledged write is on every instance
        deadline = time.monotonic() + 20
        while other.api("GET", "/v1/ports/b1")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert ctl.api("PUT", "/v1/ports/b3", {"network": "blue", "mac": "02:aa:00:00:00:06", "ips": ["10.1.0.6"]})[0] \
        == 201


def _versions(store: EtcdStore, key: str, since: int) -> list[dict[str, Any]]:
    """Every value ``key`` had in etcd after revision ``since``, oldest first (walking back by revision)."""
    out: list[dict[str, Any]] = []
    revision: int | None = None
    while True:
        body: dict[str, Any] = {"key": _b64(key)} if revision is None else {"key": _b64(key), "revision": revision}
        kvs = store.client.post("/kv/range", body).get("kvs", [])
        if not kvs or int(kvs[0]["mod_revision"]) <= since:
            return out[::-1]
        out.append(json.loads(base64.b64decode(kvs[0]["value"])))
        revision = int(kvs[0]["mod_revision"]) - 1


def test_two_instances_racing_on_one_port_keep_exactly_the_acknowledged_history(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path / "etcd") as etcd:
        ctls = [ControllerProcess(etcd.url(), tmp_path / f"c{i}.log",
                                  extra_args=["--instance-id", f"c{i}", "--lease-ttl", str(TTL)]) for i in range(2)]
        store = EtcdStore(etcd.url())
        try:
            for ctl in ctls:
                ctl.start()
            put(ctls[0], "/v1/networks/blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/16"]})
            body = {"network": "blue", "mac": "02:aa:00:00:00:01", "ips": ["10.1.0.1"]}
            put(ctls[0], "/v1/ports/p", body)
            deadline = time.monotonic() + 10
            while ctls[1].api("GET", "/v1/ports/p")[0] != 200:
                assert time.monotonic() < deadline, "the port never reached the other instance"
                time.sleep(0.05)
            since = int(store.client.post("/kv/range", {"key": _b64(store.key("ports", "p"))})["header"]["revision"])
            answers: dict[str, int] = {}

            def write(i: int) -> None:
                for k in range(1, 41):  # every write a distinct address: none commutes with another
                    ip = f"10.1.{i + 1}.{k}"
                    answers[ip] = ctls[i].api("PUT", "/v1/ports/p", {**body, "ips": [ip]})[0]

            writers = [threading.Thread(target=write, args=(i,)) for i in range(2)]
            for t in writers:
                t.start()
            for t in writers:
                t.join()
            acknowledged = {ip for ip, status in answers.items() if status == 200}
            assert set(answers.values()) <= {200, 409} and acknowledged and len(acknowledged) < len(answers), answers
            history = [v["ips"][0] for v in _versions(store, store.key("ports", "p"), since)]
            assert len(history) == len(set(history)) and set(history) == acknowledged  # nothing lost, nothing extra
            for ctl in ctls:  # every instance ends with the last acknowledged write
                deadline = time.monotonic() + 10
                while ctl.api("GET", "/v1/ports/p")[1]["ips"] != [history[-1]]:
                    assert time.monotonic() < deadline, (ctl.log, history[-1])
                    time.sleep(0.05)
        finally:
            store.close()
            for ctl in ctls:
                ctl.stop()
