"""Memory follows the placement: ports created and deleted leave no flows or encodings behind."""

from __future__ import annotations

import gc

from ryu_overlay.flows import Flow, Shared, shared
from ryu_overlay.ofmsg import FlowAdd
from ryu_overlay.testing.scenario import HYPERVISORS, build, connect


def live_flows() -> int:
    gc.collect()
    return sum(isinstance(o, Flow) for o in gc.get_objects())


def installed(c) -> dict[int, Flow]:
    """The distinct flows the controller believes installed on its switches, by ``id``."""
    return {id(f): f for sw in c.switches.values() for part in sw.flows.values() for f in part.values()
            if f is not None}


def churn(c, first: int, count: int) -> None:
    """Create, then delete, ``count`` located ports with addresses, spread over every hypervisor."""
    for i in range(first, first + count):
        name = f"churn{i}"
        c.put_port(name, {"network": "blue" if i % 2 else "red", "mac": f"02:cc:00:00:{i >> 8 & 255:02x}:{i & 255:02x}",
                          "ips": [f"10.1.0.{100 + i % 100}"], "hypervisor": sorted(HYPERVISORS)[i % len(HYPERVISORS)],
                          "interface": f"tap{i}"})
        c.delete_port(name)


def test_ports_created_and_deleted_leave_no_flow_objects_behind():
    c = build()
    for hv in HYPERVISORS:
        connect(c, hv)
    churn(c, 0, 50)  # every network has now been hosted everywhere: its per-hypervisor flows exist
    settled = live_flows()
    churn(c, 50, 200)
    assert live_flows() == settled


def test_installed_flows_keep_their_attributes_inline():
    """A flow's encoding and memoised results are attributes, never a materialised ``__dict__``:
    a dictionary per flow would cost about 400 bytes on each of the ~200 distinct flows per
    hypervisor of a large placement. (``gc.get_referents`` shows the dictionary without creating it.)"""
    c = build()
    sent = [msg for hv in HYPERVISORS for msg in connect(c, hv) if isinstance(msg, FlowAdd)]
    assert all(msg.buf for msg in sent)
    flows = installed(c)
    assert flows and flows.keys() == {id(msg.flow) for msg in sent}
    with_dict = [f for f in flows.values() if any(type(r) is dict for r in gc.get_referents(f))]
    assert with_dict == []


def test_flows_share_one_object_per_distinct_match_field_action_and_list_of_actions():
    c = build()
    for hv in HYPERVISORS:
        connect(c, hv)
    values = [v for f in installed(c).values() for v in (f.actions, *f.match, *f.actions)]
    assert len({id(v) for v in values}) == len(set(values)) < len(values) / 4


def test_the_shared_table_keeps_only_what_flows_still_hold():
    table = Shared(min_limit=4)
    kept = [table(("eth_src", f"02:00:00:00:00:{i:02x}")) for i in range(3)]
    for i in range(100):  # values that no flow keeps: the table drops them as it doubles
        table(("eth_src", f"02:00:00:00:01:{i:02x}"))
    assert len(table.table) < 8 and all(table.table[v] is v for v in kept)
    c = build()
    for hv in HYPERVISORS:
        connect(c, hv)
    churn(c, 0, 50)
    gc.collect()
    shared.sweep()
    settled = len(shared.table)
    churn(c, 50, 200)
    gc.collect()
    shared.sweep()
    assert len(shared.table) <= settled
