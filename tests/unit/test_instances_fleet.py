"""Several controller instances on a real 3-member etcd cluster against fake switches that connect to
every instance and honour OpenFlow roles (ryu_overlay/testing/loadgen.py): one master per switch,
shared evenly, every switch programmed; a lease that survives a long connection storm; and the
switches of a killed instance taken over without a flush; a master overtaken at the switch claims it
back once."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from ryu_overlay.compat import ofproto as ofp
from ryu_overlay.etcdstore import EtcdStore
from ryu_overlay.testing.controller_proc import HOST, ControllerProcess
from ryu_overlay.testing.etcd import EtcdCluster
from ryu_overlay.testing.loadgen import Expected, Fleet, Placement, make_placement, port_body

DEADLINE = 60.0  # a bound on waiting, not a performance assertion


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path / "etcd") as cluster:
        yield cluster


def start(stack: ExitStack, url: str, tmp: Path, count: int, ttl: int) -> list[ControllerProcess]:
    ctls = []
    for i in range(count):
        ctl = ControllerProcess(url, tmp / f"c{i}.log", ofp_host=HOST,
                                extra_args=["--instance-id", f"c{i}", "--lease-ttl", str(ttl)])
        stack.callback(ctl.stop)
        ctls.append(ctl.start())
    return ctls


def seeded(etcd: EtcdCluster, placement: Placement) -> dict[int, Expected]:
    """Write ``placement`` into etcd; what each fake switch should then hold."""
    placement.write_to(EtcdStore(etcd.url()))
    return placement.expected_states(placement.topology())


def masters(fleet: Fleet) -> list[int | None]:
    """For each switch, the index of the instance whose connection is MASTER (None: no master)."""
    out = []
    for i in range(len(fleet.switches)):
        roles = [k for k, channel in enumerate(fleet.channels) if channel[i].role == ofp.OFPCR_ROLE_MASTER]
        assert len(roles) <= 1
        out.append(roles[0] if roles else None)
    return out


def in_sync(ctl: ControllerProcess) -> bool:
    """Instance c1 masters every hypervisor and reports it read back, reconciled and confirmed by a barrier."""
    status, body = ctl.api("GET", "/v1/hypervisors")
    return status == 200 and all(h["in_sync"] and h["master"] == "c1" for h in body["hypervisors"])


def test_the_lease_is_renewed_while_switches_keep_connecting_for_longer_than_its_ttl(etcd, tmp_path):
    placement = make_placement(30, 2, 4)
    url = etcd.url()
    expected = seeded(etcd, placement)

    async def scenario(ctl: ControllerProcess) -> None:
        fleet = Fleet(placement.specs())
        try:
            for sw in fleet.switches:  # one every 0.1 s: the published record changes every round for 3 s
                await sw.connect(HOST, ctl.ofp_port, DEADLINE)
                await asyncio.sleep(0.1)
                status, body = ctl.api("GET", "/v1/instances")
                assert status == 200 and [i["id"] for i in body["instances"]] == ["c0"]
            await fleet.wait(expected, DEADLINE)
            assert masters(fleet) == [0] * len(fleet.switches)
        finally:
            fleet.close()

    with ExitStack() as stack:
        [ctl] = start(stack, url, tmp_path, 1, ttl=1)
        asyncio.run(scenario(ctl))
        assert "had expired" not in ctl.log_tail(10_000)


def test_two_instances_share_the_switches_and_the_survivor_takes_over_without_a_flush(etcd, tmp_path):
    placement = make_placement(8, 2, 4)
    url = etcd.url()
    expected = seeded(etcd, placement)

    async def scenario(ctls: list[ControllerProcess]) -> None:
        fleet = Fleet(placement.specs(), controllers=2)
        try:
            await fleet.connect(HOST, [c.ofp_port for c in ctls], 4, timeout=DEADLINE)
            await fleet.wait(expected, DEADLINE)
            while None in masters(fleet):
                await asyncio.sleep(0.05)
            before = masters(fleet)
            assert sorted(before.count(i) for i in (0, 1)) == [4, 4]
            deletes = fleet.totals()["flow_deletes"]
            ctls[0].stop(signal.SIGKILL)

            async def taken_over() -> None:
                while masters(fleet) != [1] * len(fleet.switches) or not await asyncio.to_thread(in_sync, ctls[1]):
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(taken_over(), DEADLINE)
            assert all(sw.holds(expected[sw.dpid]) for sw in fleet.switches)
            assert fleet.totals()["flow_deletes"] == deletes
        finally:
            fleet.close()

    with ExitStack() as stack:
        ctls = start(stack, url, tmp_path, 2, ttl=1)
        asyncio.run(scenario(ctls))


def test_a_master_overtaken_at_the_switch_claims_it_back_once_not_once_per_refused_flow(etcd, tmp_path):
    """The switch makes another connection MASTER behind the instance's back; the instance then adds
    flows (new ports), which come back as OFPBRC_IS_SLAVE errors, all with xid 0 like every flow-add.
    It must claim the switch back once and install the flows, not claim again for every error."""
    full = make_placement(12, ports_per_hv=2, ports_per_network=4)
    first = dataclasses.replace(full, ports=tuple(p for p in full.ports if p.interface == "tap0"))
    later = [p for p in full.ports if p.interface != "tap0"]
    expected = seeded(etcd, first)

    async def scenario(ctls: list[ControllerProcess]) -> dict[int, int]:
        fleet = Fleet(first.specs(), controllers=2)
        try:
            await fleet.connect(HOST, [c.ofp_port for c in ctls], timeout=DEADLINE)
            await fleet.wait(expected, DEADLINE)
            overtaken = {}
            for sw in fleet.switches:
                master = sw.master()
                assert master is not None
                other = next(c for c in sw.connections if c is not master)
                master.role, other.role = ofp.OFPCR_ROLE_SLAVE, ofp.OFPCR_ROLE_MASTER
                overtaken[sw.dpid] = master
            claims = {d: m.received[ofp.OFPT_ROLE_REQUEST] for d, m in overtaken.items()}
            for port in later:
                await asyncio.to_thread(ctls[0].ok, "PUT", f"/v1/ports/{port.name}", port_body(port))
            await fleet.wait(full.expected_states(full.topology()), DEADLINE)
            assert all(sw.master() is overtaken[sw.dpid] for sw in fleet.switches)
            await asyncio.sleep(1)  # any further claims would come now
            return {d: m.received[ofp.OFPT_ROLE_REQUEST] - claims[d] for d, m in overtaken.items()}
        finally:
            fleet.close()

    with ExitStack() as stack:
        more_claims = asyncio.run(scenario(start(stack, etcd.url(), tmp_path, 2, ttl=2)))
    assert max(more_claims.values()) <= 2, more_claims  # once, or twice if two batches were refused
