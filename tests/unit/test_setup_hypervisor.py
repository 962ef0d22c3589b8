"""``ryu-overlay setup-hypervisor``: the commands it runs for each tunnel type and several controllers."""

from __future__ import annotations

import pytest

from ryu_overlay.hypervisor import main


@pytest.mark.parametrize("tunnel_type", ["vxlan", "geneve", "gre"])
def test_the_tunnel_port_takes_the_type_and_its_default_name(capsys, tunnel_type):
    assert main(["--tunnel-ip", "198.18.0.1", "--tunnel-type", tunnel_type, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (f"add-port br-int {tunnel_type}0 -- set interface {tunnel_type}0 type={tunnel_type} "
            "options:remote_ip=flow options:key=flow options:local_ip=198.18.0.1") in out


def test_several_controllers_are_set_in_one_command(capsys):
    main(["--tunnel-ip", "198.18.0.1", "--controller", "tcp:198.19.0.1:6653", "--controller", "tcp:198.19.0.2:6653",
          "--tunnel-port", "tun0", "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == ("ovs-vsctl set bridge br-int 'controller=[@c0,@c1]' -- --id=@c0 create controller "
                         "'target=\"tcp:198.19.0.1:6653\"' max_backoff=1000 -- --id=@c1 create controller "
                         "'target=\"tcp:198.19.0.2:6653\"' max_backoff=1000")
    assert "add-port br-int tun0" in lines[1] and "type=vxlan" in lines[1]


def test_an_unknown_tunnel_type_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--tunnel-ip", "198.18.0.1", "--tunnel-type", "stt", "--dry-run"])
    assert "invalid choice: 'stt'" in capsys.readouterr().err
