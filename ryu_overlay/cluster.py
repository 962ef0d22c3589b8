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


def assign(connected: Mapping[str, Iterable[int]], switches: Iterable[int]) -> dict[int, str]:
    """Master instance of each switch in ``switches`` that some live instance is connected to.

    ``connected`` maps each live instance to the dpids connected to it. Each switch first goes to
    its most preferred connected instance (rendezvous hashing); then instances above their quota
    (S//k, or S//k + 1 for the most loaded S%k of them) hand switches to connected instances under
    theirs, the switches that prefer the receiver most first. A switch thus moves only when its own
    preference or the balance requires it, not because of other switches' assignments: as
    instances report their connections one by one (a cold start), few switches change hands.
    """
    reach = {inst: set(dpids) for inst, dpids in connected.items()}
    wanted = sorted({d for d in switches if any(d in r for r in reach.values())})
    if not reach or not wanted:
        return {}
    out = {dpid: min((i for i in reach if dpid in reach[i]), key=lambda i: _rank(dpid, i)) for dpid in wanted}
    held: dict[str, list[int]] = {i: [] for i in reach}
    for dpid, inst in out.items():
        held[inst].append(dpid)
    base, extra = divmod(len(wanted), len(reach))
    by_load = sorted(reach, key=lambda i: (-len(held[i]), i))
    quota = {inst: base + (1 if n < extra else 0) for n, inst in enumerate(by_load)}
    for giver in by_load:
        if len(held[giver]) <= quota[giver]:
            continue
        moves = sorted((_rank(dpid, taker), dpid, taker) for dpid in held[giver] for taker in reach
                       if taker != giver and dpid in reach[taker] and len(held[taker]) < quota[taker])
        for _r, dpid, taker in moves:
            if len(held[giver]) <= quota[giver]:
                break
            if out[dpid] != giver or len(held[taker]) >= quota[taker]:
                continue
            out[dpid] = taker
            held[giver].remove(dpid)
            held[taker].append(dpid)
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

    def unreported_elsewhere(self, dpid: int) -> bool:
        """Whether another live instance has not reported the switch connected yet (when switches
        connect to every instance at once, it is about to, and the assignment will change)."""
        return any(dpid not in dpids for name, dpids in self.instances.items() if name != self.me)

    def master_of(self, dpid: int) -> str | None:
        return self.masters.get(dpid)

    def mine(self) -> set[int]:
        return {dpid for dpid, inst in self.masters.items() if inst == self.me}
