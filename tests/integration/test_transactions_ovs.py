"""A transaction with ``"wait": "hv"`` on real Open vSwitch: when it answers, every port it bound
already has its flows on its bridge, and the VMs reach each other at once."""

from __future__ import annotations

from ryu_overlay.testing.overlay import PORTS, Overlay, deploy

NEW = {"b1": ("hv1", "02:bb:00:00:00:01", "10.1.0.21"), "b2": ("hv2", "02:bb:00:00:00:02", "10.1.0.22"),
       "b3": ("hv3", "02:bb:00:00:00:03", "10.1.0.23")}


def test_a_transaction_with_wait_hv_answers_once_its_flows_are_on_every_bridge(ctl, make_bed):
    overlay: Overlay = deploy(ctl, make_bed(3, ctl.ofp_port), ports={k: v for k, v in PORTS.items()
                                                                     if k in ("a1", "a2", "a3")})
    bed = overlay.bed
    for name, (hv, mac, ip) in NEW.items():  # the VMs exist before the controller knows their ports
        bed.add_vm(name, hv, f"tap{name}", mac, [ip])
    ops = [{"op": "put", "kind": "ports", "name": name,
            "body": {"network": "blue", "mac": mac, "ips": [ip], "hypervisor": hv, "interface": f"tap{name}"}}
           for name, (hv, mac, ip) in NEW.items()]
    status, answer = ctl.api("POST", "/v1/transactions", {"operations": ops, "wait": "hv", "timeout": 20})
    assert status == 200 and answer["unconfirmed"] == [], answer
    for name, (hv, _, _) in NEW.items():  # read once, right after the answer: no polling
        ofport = bed.ofport(hv, f"tap{name}")
        assert any(f"in_port={ofport}," in line for line in bed.dump_flows(hv)), (name, hv)
    assert bed.ping("b1", "10.1.0.22", count=1)
    assert bed.ping("b3", "10.1.0.21", count=1)
