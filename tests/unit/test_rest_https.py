"""The real controller serving REST over HTTPS (--rest-cert, --rest-key) with a tokens file
(--rest-tokens); the certificates come from Open vSwitch's ovs-pki, as in docs/security.md."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ryu_overlay.testing.controller_proc import HOST, ControllerProcess


def ovs_pki(pki: Path, *args: str) -> None:
    subprocess.run(["ovs-pki", f"--dir={pki}", f"--log={pki.parent / 'ovs-pki.log'}", "--force", *args],
                   check=True, capture_output=True, cwd=pki.parent)


class HttpsController(ControllerProcess):
    context: ssl.SSLContext

    def api(self, method: str, path: str, body: Any = None, token: str = "admin-secret") -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(HOST, self.rest_port, timeout=10, context=self.context)
        try:
            conn.request(method, path, None if body is None else json.dumps(body),
                         {"Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()


def test_rest_over_https_with_scoped_tokens(tmp_path: Path) -> None:
    if shutil.which("ovs-pki") is None:
        pytest.fail("ovs-pki is missing: run `make install` (openvswitch-common)")
    pki = tmp_path / "pki"
    ovs_pki(pki, "init")
    ovs_pki(pki, "req+sign", "rest", "controller")  # rest-privkey.pem, rest-cert.pem beside pki/
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"admin-secret": {"role": "admin"}, "acme-secret": {"tenant": "acme"}}))
    ctl = HttpsController(tmp_path / "db", tmp_path / "log", extra_args=[
        "--rest-tokens", str(tokens), "--rest-cert", str(tmp_path / "rest-cert.pem"),
        "--rest-key", str(tmp_path / "rest-privkey.pem")])
    ctl.context = ssl.create_default_context(cafile=str(pki / "controllerca" / "cacert.pem"))
    ctl.context.check_hostname = False  # ovs-pki names a certificate, not a host
    try:
        ctl.start()
        assert ctl.api("PUT", "/v1/networks/blue", {"vni": 5001, "tenant": "acme"})[0] == 201
        assert ctl.api("PUT", "/v1/networks/red", {"vni": 5002, "tenant": "globex"})[0] == 201
        status, body = ctl.api("GET", "/v1/networks", token="acme-secret")
        assert (status, [n["name"] for n in body["networks"]]) == (200, ["blue"])
        assert ctl.api("GET", "/v1/networks/red", token="acme-secret")[0] == 404
        assert ctl.api("GET", "/v1/networks", token="wrong")[0] == 401
        plain = http.client.HTTPConnection(HOST, ctl.rest_port, timeout=5)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            plain.request("GET", "/v1/networks")
            plain.getresponse().read()
        plain.close()
    finally:
        ctl.stop()
