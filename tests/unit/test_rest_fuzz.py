"""Property-based fuzzing of every route: never a 5xx, always the documented answer, and a refused
request changes nothing (every response is also checked against the OpenAPI document)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings, strategies as st

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False), st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                    max_leaves=12)
NAMES = st.one_of(st.sampled_from(["hv1", "hv2", "blue", "red", "a1", "a2"]), st.text(min_size=1, max_size=70))
FIELD_VALUES: dict[str, Any] = {
    "dpid": st.one_of(st.integers(min_value=-1, max_value=2**64), st.sampled_from(["0000000000000002", "0x1", "zz"])),
    "tunnel_ip": st.sampled_from(["198.18.0.2", "198.18.0.1", "::1", "224.0.0.1", "999.1.1.1", ""]),
    "tunnel_port": st.sampled_from(["vxlan0", "x" * 16, "bad name"]),
    "vni": st.integers(min_value=-1, max_value=2**24 + 1),
    "tenant": st.sampled_from(["acme", "", "ünï"]),
    "subnets": st.lists(st.sampled_from(["10.1.0.0/24", "fd00:1::/64", "10.1.0.1/24", "10.0.0.0/8", "x"]), max_size=3),
    "mtu": st.one_of(st.none(), st.integers(min_value=0, max_value=10000)),
    "unknown_arp": st.sampled_from(["replicate", "drop", "flood"]),
    "network": st.sampled_from(["blue", "red", "nope"]),
    "mac": st.sampled_from(["02:aa:00:00:00:01", "02:aa:00:00:00:09", "01:00:5e:00:00:01", "00:00:00:00:00:00", "zz"]),
    "ips": st.lists(st.sampled_from(["10.1.0.1", "10.1.0.9", "fd00:1::9", "10.9.9.9", "ff02::1", "nope"]), max_size=3),
    "hypervisor": st.sampled_from(["hv1", "hv2", "nope"]),
    "interface": st.sampled_from(["tapA1", "tapA9", "x" * 20]),
}
BODIES = st.one_of(JSON, st.fixed_dictionaries({}, optional=dict(FIELD_VALUES)))


def seed(env) -> None:
    env.api.put("/v1/hypervisors/hv1", {"dpid": 1, "tunnel_ip": "198.18.0.1"})
    env.api.put("/v1/networks/blue", {"vni": 5001, "tenant": "acme", "subnets": ["10.1.0.0/24", "fd00:1::/64"]})
    env.api.put("/v1/ports/a1", {"network": "blue", "mac": "02:aa:00:00:00:01", "ips": ["10.1.0.1"],
                                 "hypervisor": "hv1", "interface": "tapA1"})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "POST", "PATCH"]),
       kind=st.sampled_from(["hypervisors", "networks", "ports"]), name=NAMES, body=BODIES,
       raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_any_request_gets_a_documented_answer_and_a_refusal_changes_nothing(make_env, method, kind, name, body, raw):
    env = make_env()
    seed(env)
    before = env.snapshot()
    sent = len(env.emitted)
    resp = env.api.call(method, f"/v1/{kind}/{quote(name, safe='')}", None if method != "PUT" else body,
                        raw=raw if method == "PUT" else None)
    assert resp.status_int < 500, resp.text
    if resp.status_int >= 400:
        assert isinstance(resp.json.get("error"), str) and resp.json["error"]
        assert env.snapshot() == before
        assert len(env.emitted) == sent
    env.close()
