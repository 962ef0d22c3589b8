"""Shared test set-up: the integration fixtures (the support modules are in ``ryu_overlay.testing``).
Integration tests need root and Open vSwitch; they fail (never skip) without them, because CI installs both
(`make install`)."""

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ryu_overlay.testing.controller_proc import ControllerProcess
from ryu_overlay.testing.netns_testbed import Testbed


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def requirements() -> None:
    missing = [tool for tool in ("ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "tcpdump", "ethtool")
               if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.fail(f"integration tests need root and {missing or 'Open vSwitch'}: run `make install` as root")


@pytest.fixture
def ctl(tmp_path: Path, requirements: None) -> Iterator[ControllerProcess]:
    """The real ``ryu-overlay`` process on free ports, stopped at the end."""
    proc = ControllerProcess(tmp_path / "overlay.db", tmp_path / "controller.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def make_bed(tmp_path: Path, requirements: None) -> Iterator[Callable[..., Testbed]]:
    """Build testbeds with ``make_bed(hypervisors, controller_port)``; all are torn down at the end."""
    made: list[Testbed] = []

    def make(hypervisors: int, controller_port: int | None = None, **options: Any) -> Testbed:
        bed = Testbed(tmp_path, controller_port, **options)
        made.append(bed)
        return bed.build(hypervisors)

    try:
        yield make
    finally:
        for bed in made:
            bed.close()
