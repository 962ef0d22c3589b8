"""A schema-driven fuzzer (schemathesis) against the live ``ryu-overlay`` process finds no 5xx and no
answer that contradicts the OpenAPI document (loopback only, bounded examples).

Every check runs but ``positive_data_acceptance``: OpenAPI 3.0 cannot state that an address must
be unicast and inside the network's subnets, and the API answers 400 for those by contract.

``GET /v1/events`` is fuzzed with ``timeout=0``: any other valid value is a long poll that may
rightly wait up to 300 s (tests/unit/test_events.py covers the wait)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ryu_overlay.testing.controller_proc import ControllerProcess

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = """
[[operations]]
include-path = "/v1/events"
parameters = { "query.timeout" = 0 }
"""


def test_schemathesis_finds_nothing_against_the_live_server(tmp_path):
    ctl = ControllerProcess(tmp_path / "overlay.db", tmp_path / "controller.log")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    ctl.start()
    try:
        run = subprocess.run([str(SCHEMATHESIS), "--config-file", str(config), "run", f"{ctl.url}/v1/openapi.json",
                              "--checks", "all",
                              "--exclude-checks", "positive_data_acceptance",
                              "--max-examples", "25", "--seed", "1", "--no-color"],
                             capture_output=True, text=True, timeout=600, check=False)
    finally:
        ctl.stop()
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
