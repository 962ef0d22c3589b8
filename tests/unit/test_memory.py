"""Memory follows the placement: ports created and deleted leave no flows or encodings behind."""

from __future__ import annotations

import gc

from ryu_overlay.flows import Flow
from ryu_overlay.testing.scenario import HYPERVISORS, build, connect


def live_flows() -> int:
    gc.collect()
    return sum(isinstance(o, Flow) for o in gc.get_objects())


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
