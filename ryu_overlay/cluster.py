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
from collections.abc import Iterable, Mapping
from typing import Any


@functools.lru_cache(maxsize=1 << 18)
def _rank(dpid: int, instance: str) -> bytes:
    """Rendezvous hashing: each switch's preference order over instances, stable as others come and go."""
    return hashlib.sha256(f"{dpid:016x}/{instance}".encode()).digest()


def preferred(dpid: int, instances: Iterable[str]) -> str | None:
    """The instance a switch prefers among ``instances``, connected to it or not."""
    return min(instances, key=lambda i: _rank(dpid, i), default=None)


def assign(connected: Mapping[str, Iterable[int]], switches: Iterable[int]) -> dict[int, str]:
    """Master instance of each switch in ``switches`` that some live instance is connected to.

    ``connected`` maps each live instance to the dpids connected to it. Switches are taken in
    dpid order; each goes to its most preferred connected instance that is still under its
    quota (S//k, and S//k + 1 for the first S%k instances to reach it), else to the least
    loaded instance connected to it.
    """
    reach = {inst: set(dpids) for inst, dpids in connected.items()}
    wanted = sorted({d for d in switches if any(d in r for r in reach.values())})
    if not reach or not wanted:
        return {}
    base, extra = divmod(len(wanted), len(reach))
    load = dict.fromkeys(reach, 0)
    out: dict[int, str] = {}
    for dpid in wanted:
        candidates = sorted((i for i in reach if dpid in reach[i]), key=lambda i: _rank(dpid, i))
        fits = [i for i in candidates if load[i] < base or (load[i] == base and extra > 0)]
        pick = fits[0] if fits else min(candidates, key=lambda i: (load[i], _rank(dpid, i)))
        if fits and load[pick] == base:
            extra -= 1
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

    def update(self, instances: Mapping[str, Mapping[str, Any]], switches: Iterable[int], revision: int) -> None:
        self.instances = {name: {int(d) for d in rec.get("switches", [])} for name, rec in instances.items()}
        # The generation is the revision of the newest view, whether or not this instance's share changed:
        # a SLAVE request also raises the switch's generation, so instances acting on the same view must
        # use the same number, or the one whose share last changed longest ago is refused as stale.
        self.masters = assign(self.instances, switches)
        self.generation = max(self.generation, revision)

    def prefers_another(self, dpid: int) -> bool:
        """Whether the switch prefers another live instance that has not reported it connected yet
        (when switches connect to all instances at once, that one is about to)."""
        best = preferred(dpid, self.instances)
        return best is not None and best != self.me and dpid not in self.instances[best]

    def master_of(self, dpid: int) -> str | None:
        return self.masters.get(dpid)

    def mine(self) -> set[int]:
        return {dpid for dpid, inst in self.masters.items() if inst == self.me}
