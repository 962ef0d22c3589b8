"""Which controller instance masters which switch (several instances on one etcd, docs/scale-out.md).

Every live instance holds a lease in etcd and publishes, under it, the switches connected to
it. From that view (the same on every instance once the watch has delivered it) ``assign``
computes one master per switch, deterministically and evenly: with S switches and k live
instances each instance masters S//k or S//k + 1 of them. The master of a switch sends it an
OpenFlow role request MASTER whose generation id is the etcd revision of the view it acted on,
so a newer view always wins at the switch; the others are SLAVE and never program it.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any


@functools.lru_cache(maxsize=1 << 18)
def _rank(dpid: int, instance: str) -> bytes:
    """Rendezvous hashing: each switch's preference order over instances, stable as others come and go."""
    return hashlib.sha256(f"{dpid:016x}/{instance}".encode()).digest()


def plan(switches: Iterable[int], instances: Iterable[str]) -> dict[int, str]:
    """The master each declared switch should have if it connects to every live instance.

    Switches are taken in dpid order; each goes to its most preferred instance (rendezvous
    hashing) that is still under its quota (S//k, and S//k + 1 for the first S%k instances to
    reach it). It depends only on the declared switches and the live instances, not on which
    connections have been reported yet, so it stays put while a fleet connects.
    """
    names = sorted(instances)
    wanted = sorted(set(switches))
    if not names or not wanted:
        return {}
    base, extra = divmod(len(wanted), len(names))
    load = dict.fromkeys(names, 0)
    out: dict[int, str] = {}
    for dpid in wanted:
        for pick in sorted(names, key=lambda i: _rank(dpid, i)):
            if load[pick] < base or (load[pick] == base and extra > 0):
                break
        if load[pick] == base:
            extra -= 1
        load[pick] += 1
        out[dpid] = pick
    return out


def assign(connected: Mapping[str, Iterable[int]], switches: Iterable[int],
           planned: Mapping[int, str] | None = None) -> dict[int, str]:
    """Master instance of each switch in ``switches`` that some live instance is connected to.

    ``connected`` maps each live instance to the dpids connected to it. A switch connected to
    its planned master (``plan``) gets it; one that is not, but is connected to other instances,
    goes to the least loaded of those. With every switch connected to every instance the shares
    are even: S//k or S//k + 1 each.
    """
    reach = {inst: set(dpids) for inst, dpids in connected.items()}
    if planned is None:
        planned = plan(switches, reach)
    out: dict[int, str] = {}
    stray: list[int] = []
    for dpid in sorted(set(switches)):
        master = planned.get(dpid)
        if master is not None and dpid in reach.get(master, ()):
            out[dpid] = master
        elif any(dpid in r for r in reach.values()):
            stray.append(dpid)
    load = Counter(out.values())
    for dpid in stray:
        pick = min((i for i in reach if dpid in reach[i]), key=lambda i: (load[i], _rank(dpid, i)))
        load[pick] += 1
        out[dpid] = pick
    return out


class Mastership:
    """One instance's view of the cluster: live instances with their switches, and the resulting masters."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.instances: dict[str, set[int]] = {}
        self.generation = 0  # etcd revision of the newest view
        self.masters: dict[int, str] = {}
        self.planned: dict[int, str] = {}
        self.changed_at: dict[str, float] = {}  # instance -> when (the caller's clock) its switches last changed
        self._planned_for: tuple[frozenset[int], frozenset[str]] | None = None

    def update(self, instances: Mapping[str, Mapping[str, Any]], switches: Iterable[int], revision: int,
               now: float = 0.0) -> None:
        old = self.instances
        self.instances = {name: {int(d) for d in rec.get("switches", [])} for name, rec in instances.items()}
        self.changed_at = {name: self.changed_at.get(name, now) if old.get(name) == dpids else now
                           for name, dpids in self.instances.items()}
        wanted = frozenset(switches)
        if self._planned_for != (wanted, frozenset(self.instances)):  # recomputed only when one of them changes
            self._planned_for = (wanted, frozenset(self.instances))
            self.planned = plan(wanted, self.instances)
        # The generation is the revision of the newest view, whether or not this instance's share changed:
        # a SLAVE request also raises the switch's generation, so instances acting on the same view must
        # use the same number, or the one whose share last changed longest ago is refused as stale.
        self.masters = assign(self.instances, wanted, self.planned)
        self.generation = max(self.generation, revision)

    def awaited(self, dpid: int) -> str | None:
        """The live instance the switch is planned for, if it is another one and has not reported the
        switch connected yet (when switches connect to all instances at once, it is about to)."""
        best = self.planned.get(dpid)
        return best if best is not None and best != self.me and dpid not in self.instances.get(best, ()) else None

    def master_of(self, dpid: int) -> str | None:
        return self.masters.get(dpid)

    def mine(self) -> set[int]:
        return {dpid for dpid, inst in self.masters.items() if inst == self.me}
