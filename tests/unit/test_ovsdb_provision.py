"""``ovsdb.provision`` against an in-memory stand-in for the IDL: what it adds, changes and leaves alone."""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from ryu_overlay.flows import bfd_port
from ryu_overlay.model import Hypervisor
from ryu_overlay.ovsdb import BFD_OPTIONS, OWNER_KEY, OvsdbView, Provisioning, provision, view_of

_uuids = itertools.count(1)
DEFAULTS: dict[str, dict[str, Any]] = {
    "Bridge": {"ports": [], "controller": [], "fail_mode": [], "protocols": [], "datapath_type": "",
               "other_config": {}, "external_ids": {}, "datapath_id": []},
    "Port": {"interfaces": [], "external_ids": {}},
    "Interface": {"type": "", "options": {}, "external_ids": {}, "bfd": {}, "bfd_status": {}},
    "Controller": {"target": "", "max_backoff": [], "external_ids": {}},
}


class Row:
    """An IDL row: its columns are attributes; ``writes`` counts assignments after creation."""

    def __getattr__(self, name: str) -> Any:  # columns the stand-in was not given
        raise AttributeError(name)

    def __init__(self, table: str, **values: Any) -> None:
        self.uuid = next(_uuids)
        self.__dict__.update({k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                              for k, v in DEFAULTS.get(table, {}).items()})
        self.__dict__.update(values)
        self.writes = 0

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in ("uuid", "writes") and hasattr(self, "writes"):
            self.__dict__["writes"] += 1
        super().__setattr__(name, value)

    def addvalue(self, column: str, value: Any) -> None:
        self.added = value


class Table:
    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}


class Idl:
    def __init__(self) -> None:
        self.tables = {name: Table() for name in ("Open_vSwitch", "Bridge", "Port", "Interface", "Controller")}
        self.add("Open_vSwitch", bridges=[], external_ids={"system-id": "hv1"})

    def add(self, table: str, **values: Any) -> Row:
        row = Row(table, **values)
        self.tables[table].rows[row.uuid] = row
        return row


class Txn:
    def __init__(self, idl: Idl) -> None:
        self.idl = idl
        self.inserted: list[tuple[str, Row]] = []

    def insert(self, table: Table) -> Row:
        name = next(n for n, t in self.idl.tables.items() if t is table)
        row = self.idl.add(name)
        self.inserted.append((name, row))
        return row


HV = Hypervisor("hv1", 1, ipaddress.IPv4Address("198.18.0.1"), ovsdb="passive")
PROV = Provisioning(datapath_type="netdev")
TARGETS = ["tcp:198.19.0.1:6653"]


def provisioned(idl: Idl, peers: Any = ()) -> Txn:
    txn = Txn(idl)
    provision(idl, txn, HV, PROV, TARGETS, peers)
    return txn


def bridge(idl: Idl) -> Row:
    return next(b for b in idl.tables["Bridge"].rows.values() if b.name == "br-int")


def test_an_empty_database_gets_the_bridge_its_settings_the_controller_and_the_tunnel_port():
    idl = Idl()
    txn = provisioned(idl)
    br = bridge(idl)
    assert (br.fail_mode, br.protocols, br.datapath_type) == (["secure"], ["OpenFlow13"], "netdev")
    assert br.other_config == {"datapath-id": "0000000000000001"}
    assert [(c.target, c.max_backoff) for c in br.controller] == [("tcp:198.19.0.1:6653", [1000])]
    tunnel = next(p for p in br.ports if p.name == "vxlan0").interfaces[0]
    assert (tunnel.type, tunnel.options) == ("vxlan", {"remote_ip": "flow", "key": "flow", "local_ip": "198.18.0.1"})
    assert all(row.external_ids.get(OWNER_KEY) == "owned" for _, row in txn.inserted)


def test_provisioning_again_changes_nothing():
    idl = Idl()
    provisioned(idl, [("hv2", "198.18.0.2")])
    for table in idl.tables.values():
        for row in table.rows.values():
            row.__dict__["writes"] = 0
    txn = Txn(idl)
    assert provision(idl, txn, HV, PROV, TARGETS, [("hv2", "198.18.0.2")]) is False
    assert txn.inserted == [] and all(r.writes == 0 for t in idl.tables.values() for r in t.rows.values())


def test_what_it_did_not_create_is_left_alone_and_what_it_no_longer_needs_goes():
    idl = Idl()
    foreign_ctl = idl.add("Controller", target="tcp:203.0.113.1:6653")
    tap = idl.add("Port", name="vnet7", interfaces=[idl.add("Interface", name="vnet7")])
    mine_ctl = idl.add("Controller", target="tcp:198.19.9.9:6653", external_ids={OWNER_KEY: "owned"})
    stale = idl.add("Port", name="bfd-00000000", external_ids={OWNER_KEY: "owned"})
    squatter = idl.add("Port", name="vxlan0", interfaces=[idl.add("Interface", name="vxlan0", type="internal")])
    idl.add("Bridge", name="br-int", ports=[tap, stale, squatter], controller=[foreign_ctl, mine_ctl],
            fail_mode=["standalone"], other_config={"keep": "me"})
    provisioned(idl)
    br = bridge(idl)
    assert [p.name for p in br.ports] == ["vnet7", "vxlan0"] and squatter in br.ports
    assert squatter.interfaces[0].type == "internal"  # a port of that name it did not make: untouched
    assert [c.target for c in br.controller] == ["tcp:203.0.113.1:6653", "tcp:198.19.0.1:6653"]
    assert br.fail_mode == ["secure"] and br.other_config == {"keep": "me", "datapath-id": "0000000000000001"}


def test_bfd_ports_per_peer_and_their_state_in_the_view():
    idl = Idl()
    provisioned(idl, [("hv2", "198.18.0.2"), ("hv3", "198.18.0.3")])
    br = bridge(idl)
    bfd = {p.name: p.interfaces[0] for p in br.ports if p.name.startswith("bfd-")}
    assert sorted(bfd) == sorted([bfd_port("hv2"), bfd_port("hv3")])
    iface = bfd[bfd_port("hv2")]
    assert (iface.options, iface.bfd) == ({"remote_ip": "198.18.0.2", "local_ip": "198.18.0.1"}, BFD_OPTIONS)
    iface.bfd_status = {"state": "up"}
    assert view_of(idl, "br-int") == OvsdbView("hv1", frozenset(), {},
                                               {bfd_port("hv2"): "up", bfd_port("hv3"): "down"})
    provisioned(idl, [("hv3", "198.18.0.3")])  # hv2 no longer shares a network: its port goes
    assert sorted(p.name for p in bridge(idl).ports if p.name.startswith("bfd-")) == [bfd_port("hv3")]
