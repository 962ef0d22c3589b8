"""The framework fallback: without Ryu, ryu_overlay runs on os-ken (same API, maintained fork)."""

from __future__ import annotations

import subprocess
import sys

from ryu_overlay.testing.controller_proc import LAUNCHER, ControllerProcess

OS_KEN = {"RYU_OVERLAY_FRAMEWORK": "os_ken"}


def test_the_package_imports_on_os_ken():
    code = ("import ryu_overlay.app, ryu_overlay.cli, ryu_overlay.trace\n"
            "from ryu_overlay import compat\n"
            "print(compat.FRAMEWORK, compat.app_base().__name__, compat.parser.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         env={**OS_KEN, "PATH": ""})
    assert out.stdout.split() == ["os_ken", "OSKenApp", "os_ken.ofproto.ofproto_v1_3_parser"], out.stderr


def test_the_launcher_documents_our_options_on_both_frameworks():
    for env in ({}, OS_KEN):
        out = subprocess.run([str(LAUNCHER), "--help"], capture_output=True, text=True, timeout=60, check=False,
                             env={**env, "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        for option in ("--rest-host", "--rest-port", "--db", "--ofp-tcp-listen-port"):
            assert option in out.stdout, (env, option)


def test_the_controller_serves_rest_on_os_ken(tmp_path):
    ctl = ControllerProcess(tmp_path / "db", tmp_path / "log", env=OS_KEN)
    ctl.start()
    try:
        assert ctl.api("PUT", "/v1/networks/blue", {"vni": 5001, "tenant": "acme"})[0] == 201
        assert ctl.api("GET", "/v1/stats")[1]["networks"] == 1
        assert "ryu" not in ctl.log_tail(200).replace("ryu_overlay", "").replace("ryu-overlay", "")
    finally:
        ctl.stop()
