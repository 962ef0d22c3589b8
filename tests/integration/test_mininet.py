"""The Mininet experiments (mininet/experiments.py) on a small routed topology: 2 pods of 2
hypervisors behind leaf routers and spines, 2 tenants reusing the same addresses, a routed tenant,
the real controller. Everything the topology starts is removed afterwards (checked by name and pid)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

from ryu_overlay.testing.mininet_topo import UPLINK, OverlayNet, Spec

# mininet/experiments.py is a script, not a module of a package: loaded from its file.
_spec = importlib.util.spec_from_file_location("experiments",
                                               Path(__file__).resolve().parents[2] / "mininet" / "experiments.py")
assert _spec is not None and _spec.loader is not None
experiments = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(experiments)

SPEC = Spec(pods=2, hv_per_pod=2, tenants=2, vms=2, spines=2, seed=1)


def _namespaces() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True).stdout.split())


def test_connectivity_matrix_and_flooding_below_flood_and_learn_and_flood_to_all(tmp_path: Path, requirements: None):
    before = _namespaces()
    on = OverlayNet(SPEC, tmp_path / "work")
    on.start()
    try:
        prefix = on.prefix
        ovs_pids = [pid for hv in on.hvinfo for pid in on.hv(hv).ovs.pids()]
        assert len(ovs_pids) == 2 * 4
        # every tunnel between pods crosses the routed fabric
        hops = on.hv("p1h1").run("ip", "route", "get", on.hvinfo["p2h1"].tunnel_ip).stdout
        assert "via 198.18.1.254" in hops
        # the routed tenant: across subnets, to another pod and on the same hypervisor, routed once (TTL 63)
        for dst in ("rgreen1", "rgreen2"):
            out = on.vm("rblue1").run("ping", "-c", "2", "-i", "0.2", "-W", "2", on.routedinfo[dst].ips[0],
                                      check=False).stdout
            assert re.findall(r"ttl=(\d+)", out) == ["63", "63"], out
        assert on.hvinfo[on.routedinfo["rgreen1"].hv].pod != on.hvinfo[on.routedinfo["rblue1"].hv].pod
        assert UPLINK in on.hv(on.gateway_hv).ovs.vsctl("list-ports", "br-int").split()

        conn = experiments.connectivity(on, tmp_path)
        assert conn["errors"] == []
        assert conn["same_tenant_reachable"] == conn["same_tenant"] == 8   # 2 tenants x 2 ordered pairs x 2 families
        assert conn["cross_tenant_reachable"] == 0 and conn["cross_tenant"] == 16
        assert (tmp_path / "connectivity.csv").exists() and (tmp_path / "connectivity.png").stat().st_size > 0

        flood = experiments.flooding(on, tmp_path)
        assert flood["controller_ok"] == flood["flood_learn_ok"] == flood["flood_all_ok"] == flood["pings"] == 8
        # flood-and-learn learned where the VMs are (every hypervisor has heard of some), so its unicast
        # reached only the hypervisor hosting the destination; flood-everything delivered unicast everywhere
        assert all(flood["flood_learn_learned"].values())
        assert sum(flood["flood_learn_misdirected"].values()) == 0 < sum(flood["flood_all_misdirected"].values())
        assert sum(flood["controller_misdirected"].values()) == 0
        total = {k: sum(flood[k].values()) for k in ("controller", "flood_learn", "flood_all")}
        assert total["controller"] < total["flood_learn"] < total["flood_all"]
        assert all(flood["controller"][hv] <= flood["flood_all"][hv] for hv in flood["controller"])
        assert (tmp_path / "flooding.png").stat().st_size > 0
    finally:
        on.close()
    assert not [ns for ns in _namespaces() - before if ns.startswith(prefix)]
    assert not [link for link in os.listdir("/sys/class/net") if link.startswith(prefix)]
    assert not [pid for pid in ovs_pids if os.path.exists(f"/proc/{pid}")]


def test_failover_experiment_refuses_a_single_instance(tmp_path: Path):
    with pytest.raises(SystemExit) as exc:
        experiments.main(["failover", "--out", str(tmp_path)])
    assert exc.value.code == 2 and not (tmp_path / "failover.csv").exists()
