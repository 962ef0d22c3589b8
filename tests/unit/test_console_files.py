"""The web console's files: served at ``/`` and ``/console/<file>`` without the token, nothing else on disk
reachable through them, and shipped in the wheel (no build step at install). The console itself runs in a
real browser in tests/integration/test_console_browser.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from webob import Request

from ryu_overlay.rest import CONSOLE_DIR

ROOT = Path(__file__).resolve().parents[2]
TYPES = {"index.html": "text/html", "console.js": "text/javascript", "console.css": "text/css",
         "cytoscape.min.js": "text/javascript", "cytoscape.LICENSE": "text/plain"}


def fetch(env, path: str, method: str = "GET", **headers: str):
    return Request.blank(path, method=method, headers=headers).get_response(env.api.app)


def test_the_page_and_every_file_it_loads_are_served_with_their_type_and_without_the_token(make_env):
    env = make_env(token="s3cret")
    page = fetch(env, "/")
    assert (page.status_int, page.content_type) == (200, "text/html")
    assert page.body == (CONSOLE_DIR / "index.html").read_bytes()
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    loaded = re.findall(r'(?:src|href)="(/console/[^"]+)"', page.text)
    assert sorted(loaded) == ["/console/console.css", "/console/console.js", "/console/cytoscape.min.js"]
    for name, ctype in TYPES.items():
        resp = fetch(env, f"/console/{name}")
        assert (resp.status_int, resp.content_type) == (200, ctype), name
        assert resp.body == (CONSOLE_DIR / name).read_bytes()
    assert sorted(p.name for p in CONSOLE_DIR.iterdir()) == sorted(TYPES)  # a new file gets a test of its type


def test_the_data_routes_keep_their_token(make_env):
    env = make_env(token="s3cret")
    assert env.api.get("/v1/ports", auth=False).status_int == 401
    assert env.api.get("/v1/ports").status_int == 200


@pytest.mark.parametrize("path", [
    "/console/../rest.py", "/console/%2e%2e/rest.py", "/console/..%2frest.py", "/console/..%2f..%2fsetup.cfg",
    "/console/%2e%2e%2f%2e%2e%2fsetup.cfg", "/console//etc/passwd", "/console/%2fetc%2fpasswd",
    "/console/..\\rest.py", "/console/./index.html", "/console/index.html/", "/console/", "/console/nope.js",
    "/console/index.html%00.js", "/console/__init__.py", "/console/../../../../etc/passwd",
    "/console/cytoscape.min.js/../../rest.py", "/console/INDEX.HTML",
])
def test_no_other_file_is_reachable(make_env, path):
    env = make_env(token="s3cret")
    resp = env.api.get(path, auth=False)  # checked against the OpenAPI document: a JSON error
    assert resp.status_int == 404, path
    assert b"import" not in resp.body and b"root:" not in resp.body and b"[metadata]" not in resp.body


def test_only_get_and_head_are_allowed_on_the_console(env):
    for method in ("PUT", "POST", "DELETE"):
        resp = env.api.call(method, "/console/console.js")
        assert (resp.status_int, resp.headers["Allow"]) == (405, "GET, HEAD")
    head = fetch(env, "/", "HEAD")
    assert (head.status_int, head.body, head.content_type) == (200, b"", "text/html")


def test_the_wheel_carries_the_console(tmp_path):
    src = tmp_path / "src"  # a copy: the build leaves build/ and *.egg-info behind
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "ryu_overlay_shim.py"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ryu_overlay", src / "ryu_overlay", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("ryu_overlay-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"ryu_overlay/console/{name}" for name in TYPES} <= names
