"""The test harness itself: two hypervisors, hand-written tunnel flows, no controller."""

from __future__ import annotations

import subprocess

from ryu_overlay import hypervisor as ovs


def test_hand_written_tunnel_carries_ipv4_ipv6_and_tcp(make_bed):
    bed = make_bed(2)
    bed.add_vm("v1", "hv1", "tap1", "02:aa:00:00:00:01", ["10.1.0.1", "fd00:1::1"])
    bed.add_vm("v2", "hv2", "tap2", "02:aa:00:00:00:02", ["10.1.0.2", "fd00:1::2"])
    for hv, vm, peer in (("hv1", "tap1", "hv2"), ("hv2", "tap2", "hv1")):
        o = bed.hvs[hv].ovs
        tun, port = bed.ofport(hv, "vxlan0"), bed.ofport(hv, vm)
        o.ofctl("add-flow", f"in_port={port},actions=set_field:5001->tun_id,"
                            f"set_field:{bed.hvs[peer].tunnel_ip}->tun_dst,output:{tun}")
        o.ofctl("add-flow", f"in_port={tun},tun_id=5001,actions=output:{port}")
    cap = bed.underlay_capture("hv2")
    assert bed.ping("v1", "10.1.0.2", count=2)
    assert bed.ping("v1", "fd00:1::2", count=2)
    # TCP proves checksum offload is handled (ICMP works even with partial checksums).
    server = subprocess.Popen(["ip", "netns", "exec", bed.vms["v2"].netns, "python3", "-c",
                               "import socket;s=socket.socket();s.bind(('10.1.0.2',5001));s.listen(1);"
                               "c,_=s.accept();n=0\nwhile True:\n d=c.recv(65536)\n if not d: break\n n+=len(d)\n"
                               "print(n)"], stdout=subprocess.PIPE, text=True)
    bed.procs.append(server)
    client = bed.vm_exec("v1", ["python3", "-c",
                                "import socket,time\nfor _ in range(50):\n try:\n"
                                "  s=socket.create_connection(('10.1.0.2',5001),1);break\n"
                                " except OSError: time.sleep(0.1)\ns.sendall(b'x'*4000000);s.close()"], timeout=30)
    assert client.returncode == 0, client.stderr
    out, _ = server.communicate(timeout=30)
    assert int(out) == 4000000
    assert len(cap.stop()) > 0


def test_teardown_leaves_nothing_behind(tmp_path):
    from ryu_overlay.testing.netns_testbed import Testbed
    bed = Testbed(tmp_path).build(2)
    bed.add_vm("v1", "hv1", "tap1", "02:aa:00:00:00:01", ["10.1.0.1"])
    pids = [p for hv in bed.hvs.values() for p in hv.ovs.pids()]
    names = list(bed.namespaces)
    bed.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not any(n in listed for n in names)
    assert bed.prefix not in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    for pid in pids:
        try:
            import os
            os.kill(pid, 0)
            raise AssertionError(f"ovs pid {pid} still alive")
        except ProcessLookupError:
            pass


def test_setup_hypervisor_commands_are_idempotent_and_secure_from_creation(capsys):
    cmds = ovs.prepare_hypervisor_commands("br-int", "vxlan0", "198.18.0.1", ["tcp:198.19.0.1:6653"], "netdev", 1)
    assert cmds[0][:3] == ["--may-exist", "add-br", "br-int"] and "fail_mode=secure" in cmds[0]
    assert "other-config:datapath-id=0000000000000001" in cmds[0]
    assert cmds[1][:2] == ["--may-exist", "add-port"] and "options:remote_ip=flow" in cmds[1]
    assert ovs.main(["--tunnel-ip", "198.18.0.1", "--controller", "tcp:198.19.0.1:6653", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("ovs-vsctl --may-exist add-br br-int")
