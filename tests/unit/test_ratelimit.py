from __future__ import annotations

from ryu_overlay.ratelimit import TokenBucket


def test_a_burst_then_the_rate_per_key():
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.allow("a") for _ in range(4)] == [True, True, True, False]
    assert bucket.allow("b")
    now[0] = 0.5
    assert [bucket.allow("a") for _ in range(2)] == [True, False]
    now[0] = 100.0
    assert sum(bucket.allow("a") for _ in range(10)) == 3
    bucket.forget("a")
    assert bucket.allow("a")
