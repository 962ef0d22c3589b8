"""A token bucket for what the controller generates on its own: ICMP errors, DHCP and RA answers.

Meters limit what a VM may send to the controller; this limits what the controller sends back,
per key (a port, a router), so that one misbehaving VM cannot make it flood the network.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable


class TokenBucket:
    """At most ``rate`` events per second per key, with bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def allow(self, key: Hashable) -> bool:
        """Take one token for ``key`` if there is one."""
        now = self.clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def forget(self, key: Hashable) -> None:
        self._buckets.pop(key, None)
