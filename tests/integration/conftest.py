"""Real Open vSwitch in network namespaces. These tests need root and Open vSwitch; they fail
(never skip) without them, because CI installs both (`make install`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest

from controller_proc import ControllerProcess
from testbed import Testbed


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _requirements() -> None:
    missing = [tool for tool in ("ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "tcpdump", "ethtool")
               if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.fail(f"integration tests need root and {missing or 'Open vSwitch'}: run `make install` as root")


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(tmp_path / "overlay.db", tmp_path / "controller.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def testbed(tmp_path: Path) -> Iterator[Callable[..., Testbed]]:
    """Build testbeds with ``testbed(hypervisors, controller_port)``; all are torn down at the end."""
    made: list[Testbed] = []

    def make(hypervisors: int, controller_port: int | None = None) -> Testbed:
        bed = Testbed(tmp_path, controller_port)
        made.append(bed)
        return bed.build(hypervisors)

    try:
        yield make
    finally:
        for bed in made:
            bed.close()
