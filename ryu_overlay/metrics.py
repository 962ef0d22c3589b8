"""``GET /metrics``: the controller's state and latencies in the Prometheus text format.

Two sources, kept apart by the one-state-path rule (docs/architecture.md):

* What the controller holds (switches connected and in sync, flows, groups and meters per switch,
  packet-ins by reason, answers, moves) is copied into a ``Snapshot`` by a step on the state
  path, like any GET, and rendered from that copy on the REST green thread.
* The latency histograms (REST requests by route, flow programming, store commits) are
  ``prometheus_client`` histograms, which take their own lock on every update and read. They are
  observed where the time is measured: the REST green thread, the state path (barrier replies),
  the store writer. Reading them needs no step.

Each app has its own ``CollectorRegistry``, so several controllers (or tests) in one process do
not share or collide on metrics. Metric names and labels are listed in docs/operations.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .controller import PACKET_IN_REASONS, Controller

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "ryu_overlay_"
# From half a millisecond (a cached GET, a small commit) to half a minute (a long wait=hv).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# (metric, help, stat counters of Controller.stats summed into it)
CONTROLLER_COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("port_moves", "ports moved to where their traffic was seen (EVPN-style mobility)", ("moves",)),
    ("ports_learned", "ports given their first location from their traffic", ("learned",)),
    ("ports_frozen", "ports frozen for moving too often", ("ports_frozen",)),
    ("duplicate_addresses", "ports seen active in two places at once", ("duplicates_detected",)),
    ("flow_mods", "flow modifications sent to switches", ("flow_mods",)),
    ("group_mods", "group modifications sent to switches", ("group_mods",)),
    ("switch_errors", "OpenFlow errors reported by switches", ("switch_errors",)),
)
ANSWERED_BY_CONTROLLER = {"arp": ("arp_answered_controller",),
                          "nd": ("nd_answered", "nd_dad_defended", "router_nd_answered")}
MOVES_REFUSED = {"stale": "moves_refused_stale", "frozen": "moves_refused_frozen",
                 "duplicate": "moves_refused_duplicate"}


@dataclass(frozen=True)
class SwitchSample:
    """One declared hypervisor as the controller sees it; the counts are those of a connected switch."""

    hypervisor: str
    connected: bool
    in_sync: bool
    flows: int | None
    groups: int | None
    meters: int | None
    arp_in_switch: int
    nd_in_switch: int


@dataclass(frozen=True)
class Snapshot:
    switches: tuple[SwitchSample, ...]
    stats: dict[str, int]
    packet_ins: dict[str, int]

    @classmethod
    def of(cls, c: Controller) -> Snapshot:
        """Copy what /metrics shows of the controller; only on the state path."""
        samples = []
        for hv in sorted(c.topo.hypervisors.values(), key=lambda h: h.name):
            sw = c.switches.get(hv.dpid)
            samples.append(SwitchSample(
                hv.name, c.connected(hv), c.in_sync(hv),
                None if sw is None else sum(len(f) for f in sw.flows.values()),
                None if sw is None else sum(len(g) for g in sw.groups.values()),
                None if sw is None else len(sw.meters),
                c.answered_in_switch(hv.dpid, "arp"), c.answered_in_switch(hv.dpid, "nd")))
        return cls(tuple(samples), dict(c.stats), dict(c.packet_ins))


class Metrics:
    """One controller's metrics: its registry of histograms, and the barriers whose replies it times."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        self.rest = Histogram(
            PREFIX + "rest_request_duration_seconds",
            "REST requests by method, route template and status, from the request read to the answer "
            "(an event stream: to its first byte; a long poll: including the wait)",
            ["method", "route", "code"], buckets=BUCKETS, registry=self.registry)
        self.programming = Histogram(
            PREFIX + "flow_programming_seconds",
            "from a batch of changes handed to a switch to the barrier reply confirming all of it",
            buckets=BUCKETS, registry=self.registry)
        self.store_commit = Histogram(
            PREFIX + "store_commit_seconds",
            "one store commit (a group of queued writes) in the store writer, fsync included",
            buckets=BUCKETS, registry=self.registry)
        self._sent: dict[tuple[int, int], float] = {}  # (dpid, barrier xid) -> when; state path only

    # --- flow programming: on the state path --------------------------------------------------

    def batch_sent(self, dpid: int, barrier_xid: int) -> None:
        """A batch ending with this barrier was handed to the switch."""
        self._sent[(dpid, barrier_xid)] = self.clock()

    def barrier_replied(self, dpid: int, xid: int) -> None:
        sent = self._sent.pop((dpid, xid), None)
        if sent is not None:
            self.programming.observe(self.clock() - sent)

    def switch_gone(self, dpid: int) -> None:
        for key in [k for k in self._sent if k[0] == dpid]:
            del self._sent[key]

    # --- rendering: on the REST green thread ----------------------------------------------------

    def render(self, snapshot: Snapshot) -> bytes:
        return generate_latest(_Both(self.registry, snapshot))

    def render_histograms(self) -> str:
        return generate_latest(self.registry).decode()


class _Both:
    """The registry's histograms and a snapshot's metrics, as one registry for ``generate_latest``."""

    def __init__(self, registry: CollectorRegistry, snapshot: Snapshot) -> None:
        self.registry = registry
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from state_metrics(self.snapshot)
        yield from self.registry.collect()


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _counter(name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> Metric:
    family = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def _per_switch(name: str, doc: str, samples: Iterable[tuple[str, float | None]]) -> Metric:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=["hypervisor"])
    for hv, value in samples:
        if value is not None:
            family.add_metric([hv], value)
    return family


def state_metrics(s: Snapshot) -> Iterator[Metric]:
    sw = s.switches
    yield _gauge("hypervisors", "hypervisors declared", len(sw))
    yield _gauge("switches_connected", "declared hypervisors whose switch is connected and reconciled",
                 sum(x.connected for x in sw))
    yield _gauge("switches_in_sync", "connected switches with every change confirmed by a barrier reply",
                 sum(x.in_sync for x in sw))
    yield _per_switch("switch_connected", "1 if the hypervisor's switch is connected and reconciled",
                      ((x.hypervisor, int(x.connected)) for x in sw))
    yield _per_switch("switch_in_sync", "1 if the hypervisor's switch has confirmed every change",
                      ((x.hypervisor, int(x.in_sync)) for x in sw))
    yield _per_switch("switch_flows", "flows the controller holds installed on the switch",
                      ((x.hypervisor, x.flows) for x in sw))
    yield _per_switch("switch_groups", "groups the controller holds installed on the switch",
                      ((x.hypervisor, x.groups) for x in sw))
    yield _per_switch("switch_meters", "meters the controller holds installed on the switch",
                      ((x.hypervisor, x.meters) for x in sw))
    yield _counter("packet_ins", "frames sent up by switches, by what the controller did with them",
                   ["reason"], (([r], s.packet_ins.get(r, 0)) for r in PACKET_IN_REASONS))
    yield _counter("answered_in_switch",
                   "ARP requests and Neighbor Solicitations for VM addresses answered by the switch's own "
                   "responder flows (their packet counters, polled every 5 s; lower after the flows are replaced)",
                   ["hypervisor", "protocol"],
                   (([x.hypervisor, proto], n) for x in sw if x.connected
                    for proto, n in (("arp", x.arp_in_switch), ("nd", x.nd_in_switch))))
    yield _counter("answered_by_controller", "ARP requests and ND solicitations answered by the controller",
                   ["protocol"], (([proto], _sum(s.stats, keys)) for proto, keys in ANSWERED_BY_CONTROLLER.items()))
    yield _counter("moves_refused", "port moves refused, by why", ["why"],
                   (([why], s.stats.get(key, 0)) for why, key in MOVES_REFUSED.items()))
    for name, doc, keys in CONTROLLER_COUNTERS:
        yield _counter(name, doc, [], [([], _sum(s.stats, keys))])


def _sum(stats: dict[str, Any], keys: Iterable[str]) -> int:
    return sum(int(stats.get(k, 0)) for k in keys)
