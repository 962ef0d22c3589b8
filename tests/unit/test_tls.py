"""OpenFlow over TLS bound to hypervisors (issue #16): a switch whose certificate does not name the
hypervisor owning its datapath id is refused, counted and never programmed. The real handshake
with Open vSwitch is in tests/integration/test_openflow_tls.py."""

from __future__ import annotations

from typing import Any

import pytest

from ryu_overlay import tls
from ryu_overlay.hypervisor import main as setup_hypervisor
from ryu_overlay.model import BadRequest, parse_hypervisor
from ryu_overlay.testing.scenario import build, connect


@pytest.mark.parametrize(("cn", "expected", "ok"), [
    ("hv1", "hv1", True),
    ("hv1 id:0f2c6a3e-0000-4000-8000-000000000001", "hv1", True),  # as ovs-pki names it
    ("hv10 id:0f2c6a3e-0000-4000-8000-000000000001", "hv1", False),
    ("hv1x", "hv1", False),
    ("xhv1", "hv1", False),
    ("hv2 id:0f2c6a3e", "hv1", False),
])
def test_a_certificate_names_a_hypervisor(cn: str, expected: str, ok: bool) -> None:
    assert tls.names(cn, expected) is ok


class FakeSocket:
    def __init__(self, cert: Any) -> None:
        self.cert = cert

    def getpeercert(self) -> Any:
        if isinstance(self.cert, Exception):
            raise self.cert
        return self.cert


def test_the_common_name_is_read_from_the_peer_certificate() -> None:
    subject = ((("countryName", "US"),), (("commonName", "hv1 id:abc"),))
    assert tls.common_name(FakeSocket({"subject": subject})) == "hv1 id:abc"
    assert tls.common_name(FakeSocket({})) is None
    assert tls.common_name(FakeSocket(None)) is None
    assert tls.common_name(FakeSocket(ValueError("no handshake"))) is None
    assert tls.common_name(object()) is None  # plain TCP


def test_a_switch_with_another_hypervisors_certificate_is_refused_and_the_connected_one_kept() -> None:
    c = build()
    assert c.admit(1, "hv1 id:1")
    connect(c, "hv1")
    assert not c.admit(1, "hv2 id:2")
    assert c.stats["switches_refused_certificate"] == 1
    assert 1 in c.switches and c.peer_names[1] == "hv1 id:1"  # the genuine switch is untouched
    assert c.admit(9, "anything")  # a datapath id no hypervisor owns: nothing to program yet
    assert c.admit(2, None)  # without TLS there is no certificate to check


def test_declaring_a_hypervisor_over_a_switch_that_names_another_refuses_the_switch() -> None:
    c = build()
    assert c.admit(9, "hv2 id:2")
    connect_dpid = c.switch_connected(9)
    assert connect_dpid  # the sync requests: reading a switch is not programming it
    c.ports_reply(9, {"vxlan0": 100}, False)
    _, _, batches = c.put_hypervisor("hv9", {"dpid": 9, "tunnel_ip": "198.18.0.9"})
    assert batches.get(9, []) == []
    assert c.take_refused() == [9] and c.take_refused() == []
    assert 9 not in c.switches and c.stats["switches_refused_certificate"] == 1


def test_cert_cn_names_the_certificate_and_changing_it_refuses_the_connected_switch() -> None:
    c = build()
    c.put_hypervisor("hv1", {"dpid": 1, "tunnel_ip": "198.18.0.1", "cert_cn": "rack4-node7"})
    assert not c.admit(1, "hv1 id:1")
    assert c.admit(1, "rack4-node7 id:1")
    connect(c, "hv1")
    _, hv, _ = c.put_hypervisor("hv1", {"dpid": 1, "tunnel_ip": "198.18.0.1"})
    assert hv.to_json()["cert_cn"] == "hv1"
    assert c.take_refused() == [1] and 1 not in c.switches


@pytest.mark.parametrize("value", ["", 7, "x" * 65, "tab\there"])
def test_a_bad_cert_cn_is_refused(value: Any) -> None:
    with pytest.raises(BadRequest, match="cert_cn"):
        parse_hypervisor("hv1", {"dpid": 1, "tunnel_ip": "198.18.0.1", "cert_cn": value})


def test_setup_hypervisor_gives_open_vswitch_its_certificate(capsys: pytest.CaptureFixture[str]) -> None:
    assert setup_hypervisor(["--tunnel-ip", "198.18.0.1", "--controller", "ssl:198.19.0.1:6653", "--ssl-key", "k.pem",
                             "--ssl-cert", "c.pem", "--ssl-ca", "ca.pem", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ovs-vsctl set-ssl k.pem c.pem ca.pem"
    assert lines[-1] == ("ovs-vsctl set bridge br-int 'controller=[@c0]' -- --id=@c0 create controller "
                         "'target=\"ssl:198.19.0.1:6653\"' max_backoff=1000")
    with pytest.raises(SystemExit):
        setup_hypervisor(["--tunnel-ip", "198.18.0.1", "--controller", "ssl:198.19.0.1:6653", "--dry-run"])
    with pytest.raises(SystemExit):
        setup_hypervisor(["--tunnel-ip", "198.18.0.1", "--ssl-key", "k.pem", "--dry-run"])
