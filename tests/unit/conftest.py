"""Fixtures for driving ``RestApp`` in-process, with every response checked against the OpenAPI document,
and for running the real controller process with a fleet of fake switches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ryu_overlay.controller import Batches, Controller
from ryu_overlay.rest import RestApp
from ryu_overlay.store import SqliteStore
from ryu_overlay.testing.controller_proc import ControllerProcess
from ryu_overlay.testing.loadgen import Placement, make_placement
from ryu_overlay.testing.rest_client import COMPONENTS, DOC, Api, json_schema, route_of, validate


@dataclass
class Env:
    path: Path
    store: SqliteStore
    controller: Controller
    api: Api
    emitted: list[Batches]

    def snapshot(self) -> dict[str, Any]:
        """Everything a request could change: the store, and the controller's state through GET."""
        out: dict[str, Any] = {"store": self.store.load()}
        for kind in ("hypervisors", "networks", "ports", "routers", "stats"):
            resp = self.api.get(f"/v1/{kind}")
            assert resp.status_int == 200
            out[kind] = resp.json
        out["topology"] = canonical_topology(self.api.get("/v1/topology").json)
        return out

    def close(self) -> None:
        self.store.close()


def canonical_topology(doc: dict[str, Any]) -> dict[str, Any]:
    """Node-link JSON with nodes and links in a fixed order (their order follows insertion)."""
    links = [{**link, "source": min(link["source"], link["target"]), "target": max(link["source"], link["target"])}
             for link in doc["links"]]
    return {**doc, "nodes": sorted(doc["nodes"], key=lambda n: n["id"]),
            "links": sorted(links, key=lambda link: (link["source"], link["target"]))}


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    made: list[Env] = []

    def make(token: str | None = None, db: Path | None = None) -> Env:
        path = db or tmp_path / "db.sqlite"
        store = SqliteStore(str(path))
        controller = Controller(store)
        emitted: list[Batches] = []
        env = Env(path, store, controller, Api(RestApp(controller, emitted.append, token=token), token), emitted)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


class OpenApi:
    """The served document and the helpers that check instances against it, for tests."""

    doc = DOC
    components = COMPONENTS
    json_schema = staticmethod(json_schema)
    validate = staticmethod(validate)
    route_of = staticmethod(route_of)


@pytest.fixture
def openapi() -> type[OpenApi]:
    return OpenApi


@pytest.fixture
def placement() -> Placement:
    """A small fleet for tests that run the real controller process with fake switches."""
    return make_placement(3, ports_per_hv=4, ports_per_network=3, seed=7)


@pytest.fixture
def controller(tmp_path: Path, placement: Placement) -> Iterator[ControllerProcess]:
    """The real ``ryu-overlay`` process on free loopback ports, holding ``placement``; stopped at the end."""
    proc = ControllerProcess(tmp_path / "overlay.db", tmp_path / "controller.log")
    proc.start()
    try:
        for kind, name, body in placement.rest_objects():
            status, answer = proc.api("PUT", f"/v1/{kind}/{name}", body)
            assert status == 201, (kind, name, answer)
        yield proc
    finally:
        proc.stop()
