"""Plain ``ryu-manager ryu_overlay.app`` (Ryu 4.34, not our launcher) serves REST and programs switches.

It works because the install's ``ryu_overlay_shim.pth`` lets ``ryu.cmd.manager`` import on this
Python, and because the app registers its options with Ryu's configuration, so a config file or
the environment chooses the REST port and the database. os-ken 4.x ships no ``osken-manager``
(README); tests/unit/test_compat.py runs the controller on os-ken through ``ryu-overlay``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from ryu_overlay.testing.controller_proc import ControllerProcess
from ryu_overlay.testing.loadgen import Fleet, Placement

MANAGER = Path(sys.executable).parent / "ryu-manager"
DEADLINE = 30.0  # a bound on waiting, not a performance assertion


class ManagerProcess(ControllerProcess):
    """``ryu-manager [extra args] ryu_overlay.app``; ``db`` and ``rest_port`` must reach it through
    ``extra_args`` (a config file) or ``env``."""

    def argv(self) -> list[str]:
        return [str(MANAGER), "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(self.ofp_port),
                *self.extra_args, "ryu_overlay.app"]


def connect_fleet_and_check(ctl: ControllerProcess, placement: Placement) -> None:
    """Declare ``placement`` through REST, connect its fake switches, wait until each holds its flows,
    and check that REST reports every hypervisor connected and in sync while they are connected."""
    for kind, name, body in placement.rest_objects():
        status, answer = ctl.api("PUT", f"/v1/{kind}/{name}", body)
        assert status == 201, (kind, name, answer)
    topo = placement.topology()
    expected = placement.expected_states(topo)

    async def scenario() -> None:
        fleet = Fleet(placement.specs())
        try:
            await fleet.connect("127.0.0.1", ctl.ofp_port, concurrency=2, timeout=DEADLINE)
            await fleet.wait(expected, DEADLINE)
            states = await asyncio.to_thread(hypervisor_states, ctl, True)
            assert states == {hv.name: (True, True) for hv in placement.hypervisors}
            stats = ctl.api("GET", "/v1/stats")[1]
            assert stats["hypervisors_connected"] == len(placement.hypervisors)
            assert stats["flows_installed"] == sum(sw.flow_count for sw in fleet.switches) > 0
            assert stats["switch_errors"] == 0
        finally:
            fleet.close()

    asyncio.run(scenario())


def hypervisor_states(ctl: ControllerProcess, until_in_sync: bool = False) -> dict[str, tuple[bool, bool]]:
    """(connected, in_sync) of each hypervisor, as REST reports it; polled until all are in sync if asked
    (the switches hold their flows before the controller has read their barrier replies)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        status, answer = ctl.api("GET", "/v1/hypervisors")
        assert status == 200, answer
        states = {hv["name"]: (hv["connected"], hv["in_sync"]) for hv in answer["hypervisors"]}
        if not until_in_sync or all(in_sync for _, in_sync in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.05)


def test_ryu_manager_takes_rest_port_and_db_from_a_config_file_and_programs_switches(tmp_path, placement):
    db = tmp_path / "chosen.db"
    conf = tmp_path / "overlay.conf"
    ctl = ManagerProcess(db, tmp_path / "manager.log", extra_args=("--config-file", str(conf)))
    conf.write_text(f"[DEFAULT]\nrest_port = {ctl.rest_port}\ndb = {db}\n")
    ctl.start()
    try:
        assert ctl.api("GET", "/v1/stats")[0] == 200
        connect_fleet_and_check(ctl, placement)
        assert db.exists()
    finally:
        ctl.stop()


def test_ryu_manager_takes_rest_port_and_db_from_the_environment(tmp_path):
    db = tmp_path / "from-env.db"
    ctl = ManagerProcess(db, tmp_path / "manager.log")
    ctl.env = {"OS_DEFAULT__REST_PORT": str(ctl.rest_port), "OS_DEFAULT__DB": str(db)}
    ctl.start()
    try:
        status, _ = ctl.api("PUT", "/v1/networks/blue", {"vni": 5001, "tenant": "acme"})
        assert status == 201
        assert ctl.api("GET", "/v1/stats")[1]["networks"] == 1
        assert db.exists()
    finally:
        ctl.stop()
