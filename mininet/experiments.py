"""Experiments on the Mininet overlay (ryu_overlay/testing/mininet_topo.py), one command each;
each writes a CSV and a PNG.

    python mininet/experiments.py connectivity|flooding|migration|throughput|east-west|north-south|failover|all \\
        --pods 2 --hv-per-pod 2 --tenants 2 --vms 2 --out results/ [--controllers 2 --db etcd]

``--controllers N`` runs N controller instances on etcd; ``--db etcd`` starts a 3-member etcd
cluster for the run (``ryu_overlay.testing.etcd.EtcdCluster``, stopped at the end), ``--db
etcd://HOST:PORT,...`` uses a running one. ``failover`` needs at least 2 instances.

Every experiment builds its own topology (with the real ``ryu-overlay`` controller) and removes
everything it started at the end, also after a failure or Ctrl-C. See docs/experiments.md.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from ryu_overlay.pipeline import FROM_TUNNEL, NETWORK_MASK, TABLE_IDS, VNI_MASK, Priority
from ryu_overlay.testing import mininet_topo as topo_mod
from ryu_overlay.testing.mininet_topo import OverlayNet, Spec, sigterm_as_interrupt
from ryu_overlay.testing.report import percentile, print_table

VXLAN_LIMIT = (1450 - 40) / (1500 - 40)  # TCP payload per full-size packet, overlay vs underlay


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _read_pcap(path: Path) -> list:
    import logging
    logging.getLogger("scapy").setLevel(logging.ERROR)
    import scapy.layers.inet6
    import scapy.layers.vxlan  # noqa: F401
    from scapy.utils import rdpcap
    return list(rdpcap(str(path))) if path.exists() and path.stat().st_size > 24 else []


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --- connectivity -------------------------------------------------------------------------------------

def connectivity(on: OverlayNet, out: Path) -> dict[str, Any]:
    """Every VM pings every other VM's address (IPv4 and IPv6), each ping with its own payload pattern.

    Tenants reuse addresses, so a reply says little: a cell is "reachable" when the destination
    VM itself received that ping's echo request (tcpdump on its eth0) and the source got a reply.
    """
    vms = list(on.vminfo)
    caps = {v: (out / f"conn-{v}.pcap") for v in vms}
    procs = {v: on.capture(on.vm(v), "eth0", "-Q in icmp or icmp6", caps[v]) for v in vms}
    fams = {4: 0, 6: 1}
    def pattern(si: int, di: int, fam: int) -> str:
        return f"abcd{si:04x}{di:04x}{fam:02x}ef"

    runners = []
    for si, src in enumerate(vms):
        lines = []
        for di, dst in enumerate(vms):
            if si == di:
                continue
            for fam, k in fams.items():
                addr = on.vminfo[dst].ips[k]
                lines.append(f"ping -c 1 -W 1 -p {pattern(si, di, fam)} {addr} >/dev/null 2>&1; echo {di} {fam} $?")
        runners.append((si, on.vm(src).spawn("sh", "-c", "\n".join(lines), stdout=subprocess.PIPE, text=True)))
    replied: dict[tuple[int, int, int], bool] = {}
    for si, proc in runners:
        stdout, _ = proc.communicate(timeout=600)
        for di, fam, rc in (ln.split() for ln in stdout.strip().splitlines()):
            replied[(si, int(di), int(fam))] = rc == "0"
    time.sleep(0.3)
    for p in procs.values():
        _stop(p)
    seen: set[tuple[int, int, int]] = set()
    for di, dst in enumerate(vms):
        for pkt in _read_pcap(caps[dst]):
            m = re.search(rb"\xab\xcd(..)(..)(.)\xef", bytes(pkt), re.DOTALL)
            if m:
                si, dj, fam = int.from_bytes(m[1], "big"), int.from_bytes(m[2], "big"), m[3][0]
                if dj == di:
                    seen.add((si, di, fam))
    rows, errors = [], []
    matrix = {fam: [[-1] * len(vms) for _ in vms] for fam in fams}
    for si, src in enumerate(vms):
        for di, dst in enumerate(vms):
            if si == di:
                continue
            for fam in fams:
                ok = (si, di, fam) in seen and replied.get((si, di, fam), False)
                expected = on.vminfo[src].tenant == on.vminfo[dst].tenant
                matrix[fam][si][di] = int(ok)
                rows.append([src, dst, f"IPv{fam}", on.vminfo[dst].ips[fams[fam]], int(expected), int(ok)])
                if ok != expected:
                    errors.append((src, dst, fam))
    write_csv(out / "connectivity.csv", ["src", "dst", "family", "address", "expected", "reachable"], rows)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.9 * len(vms), 2.5 + 0.45 * len(vms)))
    from matplotlib.colors import ListedColormap
    cmap = ListedColormap(["#dddddd", "#d62728", "#2ca02c"])
    for ax, fam in zip(axes, fams, strict=True):
        ax.imshow(matrix[fam], cmap=cmap, vmin=-1, vmax=1)
        ax.set_xticks(range(len(vms)), vms, rotation=90)
        ax.set_yticks(range(len(vms)), vms)
        ax.set_title(f"IPv{fam}: green reachable, red blocked")
        ax.set_xlabel("destination VM")
        ax.set_ylabel("source VM")
    fig.suptitle(f"Ping matrix, {len(vms)} VMs in {on.spec.tenants} tenants (same addresses in every tenant)")
    fig.tight_layout()
    fig.savefig(out / "connectivity.png", dpi=110)
    plt.close(fig)
    same = [r for r in rows if r[4] == 1]
    cross = [r for r in rows if r[4] == 0]
    summary = {"pairs": len(rows), "same_tenant_reachable": sum(r[5] for r in same), "same_tenant": len(same),
               "cross_tenant_reachable": sum(r[5] for r in cross), "cross_tenant": len(cross), "errors": errors}
    def share(rows: list[list[Any]], fam: int) -> str:
        mine = [r for r in rows if r[2] == f"IPv{fam}"]
        return f"{sum(r[5] for r in mine)}/{len(mine)}"

    print_table(["family", "same-tenant reachable", "cross-tenant reachable"],
                [[f"IPv{fam}", share(same, fam), share(cross, fam)] for fam in fams])
    return summary


# --- flooding -------------------------------------------------------------------------------------------

LEARN_TIMEOUT = 300  # seconds a learned MAC location lives (hard timeout), as a VTEP's MAC table ages
FL_INGRESS, FL_MACS = 0, 1  # flood-and-learn tables: VNI of the port and learn; learned MACs, else flood


class FloodRun(NamedTuple):
    """One variant's VXLAN packets per hypervisor underlay link (both directions, at the leaf).

    A NamedTuple, not a dataclass: tests load this script from its file, outside sys.modules,
    where the dataclass decorator cannot resolve the module.
    """

    packets: dict[str, int]
    bcast: dict[str, int]       # of which the inner frame is broadcast/multicast
    misdirected: dict[str, int]  # inner unicast arriving at a hypervisor that hosts no VM with that VNI+MAC
    ok: int
    pings: int


def _resolve_all(on: OverlayNet, out: Path, label: str) -> FloodRun:
    """Flush every VM's neighbour cache, then each VM pings each same-tenant neighbour once (IPv4 and
    IPv6) while tcpdump counts VXLAN packets on every hypervisor's underlay link (at its leaf).

    The VMs take turns: run at once, both VMs of a pair often resolve each other at the same
    moment, and how many requests cross the fabric would depend on that race, not on the variant.
    """
    on.flush_neighbours()
    time.sleep(0.2)
    paths = {hv: out / f"flood-{label}-{hv}.pcap" for hv in on.hvinfo}
    caps = {hv: on.capture(on.leaf_of(hv), hv, "udp port 4789", paths[hv]) for hv in on.hvinfo}
    ok = total = 0
    for name, v in on.vminfo.items():
        peers = [p for p in on.vminfo.values() if p.tenant == v.tenant and p.name != name]
        script = "\n".join(f"ping -c 1 -W 2 {ip} >/dev/null 2>&1; echo $?" for p in peers for ip in p.ips)
        if script:
            proc = on.vm(name).spawn("sh", "-c", script, stdout=subprocess.PIPE, text=True)
            stdout, _ = proc.communicate(timeout=600)
            codes = stdout.split()
            total += len(codes)
            ok += codes.count("0")
    time.sleep(0.5)
    for p in caps.values():
        _stop(p)
    from scapy.layers.inet import IP
    from scapy.layers.vxlan import VXLAN
    counts, bcast, misdirected = {}, {}, {}
    for hv, path in paths.items():
        hosted = {(v.vni, bytes.fromhex(v.mac.replace(":", ""))) for v in on.vminfo.values() if v.hv == hv}
        pkts = [p for p in _read_pcap(path) if VXLAN in p]
        inner = [(p, bytes(p[VXLAN].payload)) for p in pkts]
        counts[hv] = len(pkts)
        bcast[hv] = sum(1 for _, f in inner if f[:1] and f[0] & 1)
        misdirected[hv] = sum(1 for p, f in inner if len(f) >= 6 and not f[0] & 1
                              and p[IP].dst == on.hvinfo[hv].tunnel_ip and (p[VXLAN].vni, f[:6]) not in hosted)
    return FloodRun(counts, bcast, misdirected, ok, total)


def _take_from_controller(on: OverlayNet, name: str) -> topo_mod.Hypervisor:
    hv = on.hv(name)
    hv.ovs.vsctl("del-controller", "br-int")
    hv.ovs.ofctl("del-flows")
    hv.ovs.ofctl("del-groups")
    return hv


def _flush_datapath(on: OverlayNet) -> None:
    """Empty every hypervisor's datapath flow cache once a variant's flows are in place.

    Its megaflows (idle for up to 10 s) keep the previous variant's actions until a revalidator
    catches up with a table change, and a learn action changes the table between two packets
    of one ping.
    """
    for name in on.hvinfo:
        on.hv(name).ovs.appctl("dpctl/del-flows")


def _flood_group(on: OverlayNet, name: str, vni: int, taps: list[int]) -> str:
    """Head-end replication: a bucket per other hypervisor (tun_dst, tunnel port) plus the local taps."""
    tun = on.ofport(name, topo_mod.TUNNEL_PORT)
    buckets = [f"bucket=set_field:{o.tunnel_ip}->tun_dst,output:{tun}" for o in on.hvinfo.values() if o.name != name]
    buckets += [f"bucket=output:{p}" for p in taps]
    return f"group_id={vni},type=all," + ",".join(buckets)


def _tenant_taps(on: OverlayNet, name: str, tenant: int) -> list[int]:
    return [on.ofport(name, v.tap) for v in on.vminfo.values() if v.hv == name and v.tenant == tenant]


def program_flood_baseline(on: OverlayNet) -> None:
    """Take br-int away from the controller and flood every frame to every other hypervisor by hand.

    Per hypervisor and tenant: a group of type ALL with one bucket per other hypervisor (set
    tun_dst, output to the tunnel: head-end replication to all) plus the tenant's local taps;
    frames from the tunnel with the tenant's VNI go to all its local taps. No learning.
    """
    for name in on.hvinfo:
        hv = _take_from_controller(on, name)
        tun = on.ofport(name, topo_mod.TUNNEL_PORT)
        for t in range(1, on.spec.tenants + 1):
            vni = topo_mod.VNI_BASE + t
            taps = _tenant_taps(on, name, t)
            hv.ovs.ofctl("add-group", _flood_group(on, name, vni, taps))
            for p in taps:
                hv.ovs.ofctl("add-flow", f"priority=100,in_port={p},actions=set_field:{vni}->tun_id,group:{vni}")
            local = ",".join(f"output:{p}" for p in taps) or "drop"
            hv.ovs.ofctl("add-flow", f"priority=100,in_port={tun},tun_id={vni},actions={local}")
    _flush_datapath(on)


def flood_learn_flows(tunnel: int, vni: int, taps: list[int]) -> list[str]:
    """A standalone VTEP's flood-and-learn for one VNI, as ``ovs-ofctl add-flows`` lines (group ``vni`` floods).

    FL_INGRESS maps each tap to the VNI (its tun_id) and accepts tunnel frames with that VNI;
    both teach FL_MACS where the source MAC lives in this VNI with OVS's ``learn`` action:
    behind this local port, or behind the sending VTEP (its ``tun_src`` becomes the learned
    flow's ``tun_dst``). FL_MACS sends a known destination to that one place and floods the rest:
    from a tap to every other hypervisor and the VNI's other taps (the group), from the tunnel
    to the local taps only (split horizon).
    """
    learn_local = (f"learn(table={FL_MACS},hard_timeout={LEARN_TIMEOUT},priority=100,NXM_NX_TUN_ID[],"
                   "NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])")
    learn_remote = (f"learn(table={FL_MACS},hard_timeout={LEARN_TIMEOUT},priority=100,NXM_NX_TUN_ID[],"
                    "NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_NX_TUN_IPV4_SRC[]->NXM_NX_TUN_IPV4_DST[],"
                    "output:NXM_OF_IN_PORT[])")
    goto = f"goto_table:{FL_MACS}"
    flows = [f"table={FL_INGRESS},priority=100,in_port={p},actions=set_field:{vni}->tun_id,{learn_local},{goto}"
             for p in taps]
    flows.append(f"table={FL_INGRESS},priority=100,in_port={tunnel},tun_id={vni},actions={learn_remote},{goto}")
    local = ",".join(f"output:{p}" for p in taps) or "drop"
    flows.append(f"table={FL_MACS},priority=20,in_port={tunnel},tun_id={vni},actions={local}")
    flows.append(f"table={FL_MACS},priority=10,tun_id={vni},actions=group:{vni}")
    return flows


def program_flood_learn(on: OverlayNet, workdir: Path) -> None:
    """Take br-int away from the controller and program a flood-and-learn VTEP (flood_learn_flows) per tenant."""
    for name in on.hvinfo:
        hv = _take_from_controller(on, name)
        tun = on.ofport(name, topo_mod.TUNNEL_PORT)
        flows = [f"table={t},priority=0,actions=drop" for t in (FL_INGRESS, FL_MACS)]
        for t in range(1, on.spec.tenants + 1):
            vni = topo_mod.VNI_BASE + t
            taps = _tenant_taps(on, name, t)
            hv.ovs.ofctl("add-group", _flood_group(on, name, vni, taps))
            flows += flood_learn_flows(tun, vni, taps)
        path = workdir / f"flood-learn-{name}.flows"
        path.write_text("\n".join(flows) + "\n")
        hv.ovs.ofctl("add-flows", str(path))
    _flush_datapath(on)


def learned_flows(on: OverlayNet, name: str) -> list[str]:
    """The MAC locations br-int has learned (FL_MACS at the learn actions' priority)."""
    return [f for f in on.hv(name).ovs.ofctl("dump-flows", f"table={FL_MACS}").splitlines() if "priority=100" in f]


VARIANTS = (("controller", "ryu-overlay (ARP/ND answered in switch)", "#1f77b4"),
            ("flood_learn", "flood-and-learn (OVS learn action)", "#ff7f0e"),
            ("flood_all", "flood everything to every hypervisor", "#d62728"))


def flooding(on: OverlayNet, out: Path) -> dict[str, Any]:
    """The same resolve-and-ping workload with this controller, a flood-and-learn VTEP and flood-everything."""
    runs = {"controller": _resolve_all(on, out, "controller")}
    program_flood_learn(on, out)
    runs["flood_learn"] = _resolve_all(on, out, "flood-learn")
    learned = {hv: len(learned_flows(on, hv)) for hv in on.hvinfo}
    program_flood_baseline(on)
    runs["flood_all"] = _resolve_all(on, out, "flood-all")
    hvs = list(on.hvinfo)
    rows = [[hv, *itertools.chain.from_iterable((r.packets[hv], r.bcast[hv], r.misdirected[hv]) for r in runs.values()),
             learned[hv]] for hv in hvs]
    rows.append(["total", *itertools.chain.from_iterable(
        (sum(r.packets.values()), sum(r.bcast.values()), sum(r.misdirected.values())) for r in runs.values()),
        sum(learned.values())])
    header = ["hypervisor", *itertools.chain.from_iterable(
        (f"{k}_vxlan_pkts", f"{k}_bcast_inner", f"{k}_misdirected_unicast") for k in runs), "flood_learn_learned_macs"]
    write_csv(out / "flooding.csv", header, rows)
    total = runs["controller"].pings
    plt = _plt()
    fig, (ax_t, ax_h) = plt.subplots(1, 2, figsize=(4.5 + 1.2 * len(hvs), 4.2),
                                     gridspec_kw={"width_ratios": [1, max(1, len(hvs) // 2)]})
    for k, (key, label, color) in enumerate(VARIANTS):
        r = runs[key]
        tot, b = sum(r.packets.values()), sum(r.bcast.values())
        ax_t.bar(k, tot, 0.7, color=color, label=label)
        ax_t.bar(k, b, 0.7, color="none", edgecolor="black", hatch="//")
        ax_t.text(k, tot, str(tot), ha="center", va="bottom", fontsize=8)
        ax_h.bar([x + (k - 1) * 0.27 for x in range(len(hvs))], [r.packets[h] for h in hvs], 0.27, color=color)
    ax_t.bar(0, 0, color="none", edgecolor="black", hatch="//", label="of which broadcast/multicast inside")
    ax_t.set_xticks(range(len(VARIANTS)), ["ours", "flood+\nlearn", "flood\nall"])
    ax_t.set_ylabel("VXLAN packets on the underlay links (all hypervisors)")
    ax_h.set_xticks(range(len(hvs)), hvs)
    ax_h.set_ylabel("per hypervisor underlay link")
    ax_t.set_ylim(0, 1.12 * max(sum(r.packets.values()) for r in runs.values()))
    ax_h.legend(*ax_t.get_legend_handles_labels(), fontsize=7, loc="upper left")
    fig.suptitle(f"Every VM resolves and pings every same-tenant neighbour once (IPv4+IPv6, {total} pings)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "flooding.png", dpi=110)
    plt.close(fig)
    print_table(header, rows)
    print("pings answered: " + ", ".join(f"{k} {r.ok}/{r.pings}" for k, r in runs.items()))
    result: dict[str, Any] = {k: r.packets for k, r in runs.items()}
    result.update({f"{k}_ok": r.ok for k, r in runs.items()})
    result.update({f"{k}_bcast": r.bcast for k, r in runs.items()})
    result.update({f"{k}_misdirected": r.misdirected for k, r in runs.items()})
    result.update({"pings": total, "flood_learn_learned": learned})
    return result


# --- migration ------------------------------------------------------------------------------------------

def _replies(output: str) -> list[tuple[float, int]]:
    """(timestamp, icmp_seq) of every reply in ``ping -D`` output."""
    return [(float(t), int(q)) for t, q in re.findall(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+)", output, re.MULTILINE)]


def migration(on: OverlayNet, out: Path, moves: int = 4, interval: float = 0.01) -> dict[str, Any]:
    """Move VMs to a hypervisor in another pod while a same-tenant VM pings them every 10 ms.

    The loss window of a move is the time between the last reply before the move and the first
    reply after it (``ping -D`` timestamps), so it includes the move itself (delete the tap,
    recreate the veth in the VM's namespace, configure it, plug it, one GARP).
    """
    if on.spec.pods < 2 or on.spec.vms < 2:
        raise SystemExit("migration needs --pods >= 2 and --vms >= 2")
    movers = [v for v in on.vminfo.values() if v.name.endswith("v1")]
    rows = []
    for k in range(moves):
        vm = movers[k % len(movers)]
        peer = next(p for p in on.vminfo.values() if p.tenant == vm.tenant and p.name != vm.name)
        old = vm.hv
        pod = on.hvinfo[old].pod % on.spec.pods + 1
        target = [h for h in on.hvinfo.values() if h.pod == pod][k // len(movers) % on.spec.hv_per_pod].name
        pinger = on.vm(peer.name).spawn("ping", "-D", "-n", "-i", interval, "-W", "1", vm.ips[0],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)
        t0 = time.monotonic()
        on.move_vm(vm.name, target)
        t_move = time.monotonic() - t0
        time.sleep(2.0)
        _stop(pinger)
        text = pinger.stdout.read()
        replies = sorted(set(_replies(text)), key=lambda r: r[1])
        sent = re.search(r"(\d+) packets transmitted", text)
        n_sent = int(sent[1]) if sent else (replies[-1][1] if replies else 0)
        gaps = [(b[0] - a[0], b[1] - a[1] - 1) for a, b in itertools.pairwise(replies)]
        window, lost = max(gaps) if gaps else (float("nan"), n_sent)
        tail_lost = max(0, n_sent - (replies[-1][1] if replies else 0))
        rows.append([k + 1, vm.name, old, target, peer.name, n_sent, len(replies), lost, round(window * 1000, 1),
                     round(t_move * 1000, 1), tail_lost])
    header = ["move", "vm", "from", "to", "pinger", "sent", "received", "lost_in_window", "loss_window_ms",
              "move_cmds_ms", "lost_at_end"]
    write_csv(out / "migration.csv", header, rows)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(2 + 0.8 * len(rows), 3.6))
    ax.bar([f"{r[0]}: {r[1]}\n{r[2]}→{r[3]}" for r in rows], [r[8] for r in rows], color="#1f77b4")
    ax.set_ylabel(f"loss window (ms), ping every {interval * 1000:.0f} ms")
    ax.set_title("Live migration between pods: interface moved, one GARP", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "migration.png", dpi=110)
    plt.close(fig)
    print_table(header, rows)
    _, port = on.ctl.api("GET", f"/v1/ports/{movers[0].name}")
    return {"windows_ms": [r[8] for r in rows], "port_after": port}


# --- failover -------------------------------------------------------------------------------------------

def _wall_to_rel(t: float, t0: float) -> float:
    return round(t - t0, 3)


def failover(on: OverlayNet, out: Path, interval: float = 0.01, before: float = 2.0, after: float = 3.0,
             timeout: float = 60.0) -> dict[str, Any]:
    """kill -9 the instance that masters the most hypervisors while every tenant's VMs ping each other
    across hypervisors every 10 ms; measure the lost pings, and when the orphaned hypervisors got a
    new master (re-mastering time) and were in sync under it (GET /v1/hypervisors/{name} on it).

    ``ping -D`` timestamps are wall-clock; so are the kill and the observations, all relative to the kill.
    """
    if len(on.live()) < 2:
        raise SystemExit("failover needs --controllers >= 2")
    pairs = []
    for t in range(1, on.spec.tenants + 1):
        vms = [v for v in on.vminfo.values() if v.tenant == t]
        pair = next(((a, b) for a in vms for b in vms if a.hv != b.hv), None)
        if pair is not None:
            pairs.append(pair)
    if not pairs:
        raise SystemExit("failover needs two VMs of a tenant on different hypervisors")
    masters = on.masters()
    counts = {m: sum(1 for x in masters.values() if x == m) for m in set(masters.values()) if m}
    victim_id = max(sorted(counts), key=lambda m: counts[m])
    victim = on.instance(victim_id)
    assert victim is not None
    orphans = sorted(hv for hv, m in masters.items() if m == victim_id)
    flows_before = {hv: len(on.dump_flows(hv)) for hv in on.hvinfo}
    pingers = [(a, b, on.vm(a.name).spawn("ping", "-D", "-n", "-i", interval, "-W", "1", b.ips[0],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
               for a, b in pairs]
    time.sleep(before)
    t_kill = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait(10)
    victim.proc = None
    t_master = t_sync = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and t_sync is None:
        try:
            now = on.masters()
        except OSError:
            now = {}
        if t_master is None and now and all(now.get(hv) not in (None, victim_id) for hv in orphans):
            t_master = time.time()
        if t_master is not None and on.all_in_sync():
            t_sync = time.time()
        time.sleep(0.05)
    time.sleep(after)
    rows, replies_by_pair, lost_total, sent_total = [], {}, 0, 0
    for a, b, proc in pingers:
        _stop(proc)
        text = proc.stdout.read()
        replies = sorted(set(_replies(text)), key=lambda r: r[1])
        sent = re.search(r"(\d+) packets transmitted", text)
        n_sent = int(sent[1]) if sent else (replies[-1][1] if replies else 0)
        lost = n_sent - len(replies)
        lost_total += lost
        sent_total += n_sent
        label = f"{a.name}({a.hv})->{b.name}({b.hv})"
        replies_by_pair[label] = [r[0] - t_kill for r in replies]
        rows.append([label, n_sent, len(replies), lost])
    flows_after = {hv: len(on.dump_flows(hv)) for hv in on.hvinfo}
    remaster = None if t_master is None else t_master - t_kill
    in_sync = None if t_sync is None else t_sync - t_kill
    header = ["pair", "sent", "received", "lost"]
    write_csv(out / "failover.csv", header, rows)
    bins: dict[str, list[int]] = {}
    width = 0.1
    lo, hi = -before, after + (in_sync or timeout)
    nbins = int((hi - lo) / width) + 1
    for label, times in replies_by_pair.items():
        counts_ = [0] * nbins
        for t in times:
            k = int((t - lo) / width)
            if 0 <= k < nbins:
                counts_[k] += 1
        bins[label] = counts_
    write_csv(out / "failover-timeline.csv", ["seconds_after_kill", *bins],
              [[round(lo + k * width, 2), *(bins[lb][k] for lb in bins)] for k in range(nbins)])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    xs = [lo + k * width for k in range(nbins)]
    for label, counts_ in bins.items():
        ax.step(xs, counts_, where="post", label=label, linewidth=1)
    ax.axvline(0, color="#d62728", linestyle="--", label=f"kill -9 {victim_id}")
    if remaster is not None:
        ax.axvline(remaster, color="#ff7f0e", linestyle=":", label=f"re-mastered ({remaster:.2f} s)")
    if in_sync is not None:
        ax.axvline(in_sync, color="#2ca02c", linestyle="-.", label=f"in sync ({in_sync:.2f} s)")
    ax.set_xlabel("seconds after the kill")
    ax.set_ylabel(f"replies per {width * 1000:.0f} ms (ping every {interval * 1000:.0f} ms)")
    ax.set_ylim(0, 1.5 * width / interval)
    ax.set_title(f"Failover: {len(orphans)} of {len(on.hvinfo)} hypervisors lose their master; "
                 f"lease TTL {on.lease_ttl} s; {lost_total} of {sent_total} pings lost", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "failover.png", dpi=110)
    plt.close(fig)
    print_table(header, rows)
    print(f"killed {victim_id} (master of {', '.join(orphans)}); re-mastered after "
          f"{remaster if remaster is None else round(remaster, 2)} s, in sync after "
          f"{in_sync if in_sync is None else round(in_sync, 2)} s; flows per hypervisor before {flows_before}, "
          f"after {flows_after}")
    return {"victim": victim_id, "orphans": orphans, "lost": lost_total, "sent": sent_total,
            "remaster_s": remaster, "in_sync_s": in_sync, "lease_ttl": on.lease_ttl,
            "flows_before": flows_before, "flows_after": flows_after}


# --- throughput -----------------------------------------------------------------------------------------

def _iperf(on: OverlayNet, server, client, addr: str, seconds: int) -> float:
    srv = server.spawn("iperf3", "-s", "-1", "-B", addr, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            ready = client.run("iperf3", "-c", addr, "-t", "0.1", "-n", "1", check=False).returncode == 0
            if ready or srv.poll() is not None:
                break
            time.sleep(0.1)
        # the probe above consumed the one-off server; start the measured one
        if srv.poll() is None:
            srv.kill()
        srv.wait(5)
        srv = server.spawn("iperf3", "-s", "-1", "-B", addr, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        res = client.run("iperf3", "-c", addr, "-t", seconds, "-J", timeout=seconds + 30, check=False)
        data = json.loads(res.stdout or "{}")
        if "error" in data or "end" not in data:
            raise RuntimeError(f"iperf3 {client.name} -> {addr}: {data.get('error', res.stderr)}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait(5)


def _versus_underlay(out: Path, name: str, repeats: int, measure: Callable[[], tuple[float, float]],
                     pairs: tuple[str, str], header: list[str], labels: tuple[str, str], title: str,
                     extra: tuple[Any, ...] = ()) -> tuple[float, float]:
    """``repeats`` runs of ``measure`` (a path's Mbit/s and the underlay's between the same
    hypervisors): ``name``.csv with a mean row, ``name``.png with a bar pair per run, a table; the
    two means. ``title`` may name the mean ratio as ``{ratio}``."""
    rows: list[list[Any]] = []
    for r in range(1, repeats + 1):
        path_mbps, under = measure()
        rows.append([r, *pairs, round(path_mbps, 1), round(under, 1), round(path_mbps / under, 3), *extra])
    means = tuple(sum(row[i] for row in rows) / len(rows) for i in (3, 4))
    rows.append(["mean", *pairs, round(means[0], 1), round(means[1], 1), round(means[0] / means[1], 3), *extra])
    write_csv(out / f"{name}.csv", header, rows)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    runs = rows[:-1]
    xs = range(len(runs))
    ax.bar([x - 0.2 for x in xs], [r[3] for r in runs], 0.4, label=labels[0])
    ax.bar([x + 0.2 for x in xs], [r[4] for r in runs], 0.4, label=labels[1])
    ax.set_xticks(list(xs), [f"run {r[0]}\nratio {r[5]:.2f}" for r in runs])
    ax.set_ylabel("iperf3 TCP Mbit/s")
    ax.set_title(title.format(ratio=means[0] / means[1]), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)
    print_table(header, rows)
    return means[0], means[1]


def throughput(on: OverlayNet, out: Path, seconds: int = 5, repeats: int = 3) -> dict[str, Any]:
    pair = next(((a, b) for a in on.vminfo.values() for b in on.vminfo.values()
                 if a.tenant == b.tenant and on.hvinfo[a.hv].pod != on.hvinfo[b.hv].pod), None)
    if pair is None:
        raise SystemExit("throughput needs two VMs of one tenant in different pods")
    a, b = pair
    ha, hb = on.hvinfo[a.hv], on.hvinfo[b.hv]

    def measure() -> tuple[float, float]:
        return (_iperf(on, on.vm(b.name), on.vm(a.name), b.ips[0], seconds),
                _iperf(on, on.hv(hb.name), on.hv(ha.name), hb.tunnel_ip, seconds))

    over, under = _versus_underlay(
        out, "throughput", repeats, measure, (f"{a.name}->{b.name}", f"{ha.name}->{hb.name}"),
        ["run", "overlay_pair", "underlay_pair", "overlay_mbps", "underlay_mbps", "ratio", "vxlan_limit"],
        (f"overlay {a.name}→{b.name}", f"underlay {ha.name}→{hb.name}"),
        f"Overlay/underlay {{ratio:.2f}} (50-byte VXLAN limit {VXLAN_LIMIT:.3f}), {seconds} s runs",
        (round(VXLAN_LIMIT, 3),))
    return {"overlay_mbps": over, "underlay_mbps": under, "ratio": over / under}


# --- east-west routing: distributed versus one central router ----------------------------------------

CENTRAL_COOKIE = "0xce00000000000001"  # family byte 0xce, above the controller's: the central baseline
CENTRAL_PRIORITY = Priority.ROUTE + 5   # in l3_route: above ROUTE, below TTL_EXPIRED (expiry stays local)
TAKEOVER_PRIORITY = Priority.CLASSIFY + 100  # in ingress: before the controller's tunnel classification
EW_VARIANTS = (("distributed", "ryu-overlay: routed on the ingress hypervisor", "#1f77b4"),
               ("central", "every routed packet through one router hypervisor", "#d62728"))


def central_hypervisor(on: OverlayNet) -> str:
    """The baseline's router hypervisor: one that hosts no routed VM, and not the gateway if there is a choice."""
    hosting = {v.hv for v in on.routedinfo.values()}
    free = [h for h in on.hvinfo if h not in hosting]
    if not free:
        raise SystemExit("east-west needs a hypervisor without routed VMs (>= 3 hypervisors)")
    return next((h for h in free if h != on.gateway_hv), free[0])


def central_router_flows(on: OverlayNet, central: str, router_mac: str) -> dict[str, list[str]]:
    """The hand-programmed baseline, as ``ovs-ofctl add-flows`` lines per hypervisor (cookie CENTRAL_COOKIE).

    On every hypervisor hosting a routed VM, ``l3_route`` sends a frame to the router's MAC for
    another subnet of the router, unrouted and with its own network's VNI, to ``central``
    (instead of routing it there), and ``ingress`` accepts what ``central`` sends back as from a
    peer of that network. On ``central``, which hosts none of the routed networks, ``ingress``
    routes such frames as ``l3_route`` + ``l3_neighbour`` would (``dec_ttl``, the router's MAC as
    source, the target VM's MAC, its network's VNI) and sends them back into the tunnel to the
    target's hypervisor. The controller's own flows stay; it reconciles only when a switch
    connects, so it leaves these alone.
    """
    nets = {n.name: n for n in topo_mod.ROUTED_NETS}
    tun = {h: on.ofport(h, topo_mod.TUNNEL_PORT) for h in on.hvinfo}
    central_ip = on.hvinfo[central].tunnel_ip
    head = f"cookie={CENTRAL_COOKIE},"
    flows: dict[str, list[str]] = {h: [] for h in on.hvinfo}
    for hv in sorted({v.hv for v in on.routedinfo.values()}):
        for src in topo_mod.ROUTED_NETS:
            flows[hv].append(f"{head}table={TABLE_IDS['ingress']},priority={TAKEOVER_PRIORITY},in_port={tun[hv]},"
                             f"tun_src={central_ip},tun_id={src.vni},actions="
                             f"write_metadata:{src.vni | FROM_TUNNEL:#x}/{NETWORK_MASK:#x},"
                             f"goto_table:{TABLE_IDS['l2_lookup']}")
            for dst in topo_mod.ROUTED_NETS:
                if dst is src:
                    continue
                for fam, subnet in zip(("ip", "ipv6"), dst.subnets, strict=True):
                    field = "nw_dst" if fam == "ip" else "ipv6_dst"
                    flows[hv].append(f"{head}table={TABLE_IDS['l3_route']},priority={CENTRAL_PRIORITY},"
                                     f"metadata={src.vni:#x}/{VNI_MASK:#x},dl_dst={router_mac},{fam},"
                                     f"{field}={subnet},actions=set_field:{src.vni}->tun_id,"
                                     f"set_field:{central_ip}->tun_dst,output:{tun[hv]}")
    for v in on.routedinfo.values():
        for src in topo_mod.ROUTED_NETS:
            if src.name == v.network:
                continue
            for fam, ip in zip(("ip", "ipv6"), v.ips, strict=True):
                field = "nw_dst" if fam == "ip" else "ipv6_dst"
                flows[central].append(
                    f"{head}table={TABLE_IDS['ingress']},priority={TAKEOVER_PRIORITY},in_port={tun[central]},"
                    f"tun_id={src.vni},dl_dst={router_mac},{fam},{field}={ip},actions=dec_ttl,"
                    f"set_field:{router_mac}->eth_src,set_field:{v.mac}->eth_dst,"
                    f"set_field:{nets[v.network].vni}->tun_id,set_field:{on.hvinfo[v.hv].tunnel_ip}->tun_dst,in_port")
    return {h: f for h, f in flows.items() if f}


def set_central(on: OverlayNet, flows: dict[str, list[str]] | None, workdir: Path) -> None:
    """Install the central-router baseline (``flows``), or remove it (None); then empty the datapath caches."""
    for hv in on.hvinfo:
        on.hv(hv).ovs.ofctl("del-flows", f"cookie={CENTRAL_COOKIE}/-1")
    for hv, lines in (flows or {}).items():
        path = workdir / f"central-{hv}.flows"
        path.write_text("\n".join(lines) + "\n")
        on.hv(hv).ovs.ofctl("add-flows", str(path))
    _flush_datapath(on)


def _ping_rtts(on: OverlayNet, src: str, dst: str, count: int, interval: float,
               pattern: str = "") -> tuple[list[float], list[int]]:
    """RTTs (ms) and reply TTLs of ``count`` pings from VM ``src`` to ``dst``."""
    cmd: list[Any] = ["ping", "-n", "-c", count, "-i", interval, "-W", "1"]
    if pattern:
        cmd += ["-p", pattern]
    res = on.vm(src).run(*cmd, dst, check=False, timeout=count * (interval + 1) + 30)
    rtts = [float(t) for t in re.findall(r"time=([\d.]+) ms", res.stdout)]
    ttls = [int(t) for t in re.findall(r"ttl=(\d+)", res.stdout)]
    return rtts, ttls


def _underlay_hops(on: OverlayNet, out: Path, label: str, src: str, dst: str, pings: int) -> tuple[float, float]:
    """VXLAN packets sent on the underlay per ping (request and reply), and leaf/spine routers they crossed.

    tcpdump runs on every hypervisor's underlay link at its leaf; a packet counts once, on the
    link of the hypervisor that sent it (outer source), if its inner frame carries this run's
    ping pattern. Inside a pod the leaf bridges (0 routers); between pods a tunnel packet crosses
    leaf, spine, leaf (3).
    """
    pattern = f"e5{sum(map(ord, label)) & 0xff:02x}{len(label):02x}e5"
    paths = {hv: out / f"ew-{label}-{hv}.pcap" for hv in on.hvinfo}
    caps = {hv: on.capture(on.leaf_of(hv), hv, "udp port 4789", paths[hv]) for hv in on.hvinfo}
    try:
        rtts, _ = _ping_rtts(on, src, dst, pings, 0.05, pattern)
    finally:
        time.sleep(0.3)
        for p in caps.values():
            _stop(p)
    from scapy.layers.inet import IP
    from scapy.layers.vxlan import VXLAN
    pod_of = {h.tunnel_ip: h.pod for h in on.hvinfo.values()}
    mark = bytes.fromhex(pattern)
    sent = [p for hv, path in paths.items() for p in _read_pcap(path)
            if VXLAN in p and p[IP].src == on.hvinfo[hv].tunnel_ip and mark in bytes(p[VXLAN].payload)]
    routers = sum(0 if pod_of.get(p[IP].src) == pod_of.get(p[IP].dst) else 3 for p in sent)
    if len(rtts) != pings:
        raise RuntimeError(f"{label}: {len(rtts)}/{pings} pings answered {src} -> {dst}")
    return len(sent) / pings, routers / pings


def east_west(on: OverlayNet, out: Path, count: int = 200, rounds: int = 3, interval: float = 0.02,
              hop_pings: int = 10) -> dict[str, Any]:
    """Routed ping RTT and underlay hops between the routed tenant's subnets: distributed versus central.

    Pairs: ``rblue1`` to ``rgreen1`` (another hypervisor, another pod) and to ``rgreen2`` (the
    same hypervisor). Per round, each variant in turn (the baseline is installed and removed by
    cookie): 5 warm-up pings, then ``count`` pings every ``interval`` s, unobserved (no capture
    competes for the CPUs). Then, once per variant and pair, ``hop_pings`` pings under capture
    count the VXLAN packets. RTT percentiles are over all rounds' pings.
    """
    if not on.routedinfo:
        raise SystemExit("east-west needs the routed tenant (without --no-l3)")
    central = central_hypervisor(on)
    router_mac = on.ctl.api("GET", f"/v1/routers/{topo_mod.ROUTER}")[1]["mac"]
    baseline = central_router_flows(on, central, router_mac)
    src = on.routedinfo["rblue1"]
    pairs = [(src, on.routedinfo[d]) for d in ("rgreen1", "rgreen2")]
    samples: dict[tuple[str, str], list[float]] = {}
    ttls: dict[tuple[str, str], set[int]] = {}
    raw = []
    try:
        for r in range(1, rounds + 1):
            for variant, _, _ in EW_VARIANTS:
                set_central(on, baseline if variant == "central" else None, out)
                for a, b in pairs:
                    _ping_rtts(on, a.name, b.ips[0], 5, 0.05)
                    rtts, tt = _ping_rtts(on, a.name, b.ips[0], count, interval)
                    samples.setdefault((variant, b.name), []).extend(rtts)
                    ttls.setdefault((variant, b.name), set()).update(tt)
                    raw += [[variant, f"{a.name}->{b.name}", r, i, t] for i, t in enumerate(rtts, 1)]
        hops = {}
        for variant, _, _ in EW_VARIANTS:
            set_central(on, baseline if variant == "central" else None, out)
            for a, b in pairs:
                _ping_rtts(on, a.name, b.ips[0], 3, 0.05)
                hops[(variant, b.name)] = _underlay_hops(on, out, f"{variant}-{b.name}", a.name, b.ips[0], hop_pings)
    finally:
        set_central(on, None, out)
    write_csv(out / "east-west-rtts.csv", ["variant", "pair", "round", "n", "rtt_ms"], raw)
    rows = []
    for variant, _, _ in EW_VARIANTS:
        for a, b in pairs:
            rtt = samples[(variant, b.name)]
            vx, routers = hops[(variant, b.name)]
            rows.append([variant, f"{a.name}->{b.name}", a.hv, b.hv, central if variant == "central" else "-",
                         f"{len(rtt)}/{rounds * count}", round(percentile(rtt, 50), 3), round(percentile(rtt, 90), 3),
                         round(vx, 2), round(routers, 2), "/".join(map(str, sorted(ttls[(variant, b.name)])))])
    header = ["variant", "pair", "src_hv", "dst_hv", "router_hv", "answered", "rtt_p50_ms", "rtt_p90_ms",
              "vxlan_pkts_per_ping", "fabric_routers_per_ping", "reply_ttl"]
    write_csv(out / "east-west.csv", header, rows)
    _plot_east_west(out, rows, pairs, central, rounds * count)
    print_table(header, rows)
    return {f"{r[0]}:{r[1]}": {"p50_ms": r[6], "p90_ms": r[7], "vxlan_per_ping": r[8], "routers_per_ping": r[9],
                               "answered": r[5], "reply_ttl": r[10]} for r in rows}


def _plot_east_west(out: Path, rows: list[list[Any]], pairs: list[Any], central: str, n: int) -> None:
    plt = _plt()
    fig, (ax_r, ax_h) = plt.subplots(1, 2, figsize=(9, 3.8))
    labels = [f"{a.name}→{b.name}\n({a.hv}→{b.hv})" for a, b in pairs]
    for k, (variant, label, color) in enumerate(EW_VARIANTS):
        mine = [r for r in rows if r[0] == variant]
        xs = [x + (k - 0.5) * 0.38 for x in range(len(pairs))]
        ax_r.bar(xs, [r[6] for r in mine], 0.38, color=color, label=f"{label} (p50)")
        ax_r.bar(xs, [r[7] - r[6] for r in mine], 0.38, bottom=[r[6] for r in mine], color=color, alpha=0.35)
        ax_h.bar(xs, [r[8] for r in mine], 0.38, color=color, label=label)
        for x, r in zip(xs, mine, strict=True):
            ax_r.text(x, r[7], f"{r[6]:.2f}/{r[7]:.2f}", ha="center", va="bottom", fontsize=7)
            ax_h.text(x, r[8], f"{r[8]:g}", ha="center", va="bottom", fontsize=8)
    for ax in (ax_r, ax_h):
        ax.set_xticks(range(len(pairs)), labels, fontsize=8)
    ax_r.set_ylabel("ping RTT (ms): p50, light to p90")
    ax_r.set_title(f"{n} pings per bar", fontsize=9)
    ax_h.set_ylabel("VXLAN packets on the underlay per ping")
    ax_h.set_title("request + reply", fontsize=9)
    ax_r.set_ylim(0, 1.2 * max(r[7] for r in rows))
    ax_h.set_ylim(0, 1.5 * max(*(r[8] for r in rows), 1))
    ax_h.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"East-west routed ping: distributed router vs one central router hypervisor ({central})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "east-west.png", dpi=110)
    plt.close(fig)


# --- north-south through the gateway --------------------------------------------------------------------

def north_south(on: OverlayNet, out: Path, seconds: int = 5, repeats: int = 3) -> dict[str, Any]:
    """iperf3 TCP from ``rblue1`` to the outside host through the router's external gateway, with SNAT.

    Declares the gateway over REST (``PUT /v1/routers/rt`` with ``gateway`` on the gateway
    hypervisor's ``uplink0``, next hop the outside host, ``snat: true``), checks that the outside
    host sees the SNAT address as the source of the VM's pings, then per run: iperf3 from the VM
    to the outside host, and for reference the underlay between the VM's hypervisor and the
    gateway hypervisor (their ``br-phy`` addresses, the same fabric).

    Needs the gateway's flows (SNAT; issue #12 item 2). Without them the SNAT check stops the
    experiment with an error saying so, before anything is measured.
    """
    if not on.routedinfo:
        raise SystemExit("north-south needs the routed tenant and the outside host (without --no-l3)")
    vm = on.routedinfo["rblue1"]
    gw_hv = on.gateway_hv
    snat_ip = topo_mod.GATEWAY_IP.split("/")[0]
    gateway = {"hypervisor": gw_hv, "interface": topo_mod.UPLINK, "ip": topo_mod.GATEWAY_IP,
               "next_hop": topo_mod.OUTSIDE_IP}
    on.put(f"/v1/routers/{topo_mod.ROUTER}", topo_mod.router_body(gateway, snat=True))
    on.wait_in_sync()
    on.ping(vm.name, topo_mod.OUTSIDE_IP, count=3, wait=2)  # the controller resolves the next hop meanwhile
    path = out / "north-south-outside.pcap"
    cap = on.capture(on.outside, "eth0", "-Q in icmp", path)
    try:
        replied = on.ping(vm.name, topo_mod.OUTSIDE_IP, count=3, wait=2)
    finally:
        time.sleep(0.3)
        _stop(cap)
    from scapy.layers.inet import ICMP, IP
    sources = sorted({p[IP].src for p in _read_pcap(path) if ICMP in p and p[ICMP].type == 8})
    if not replied or sources != [snat_ip]:
        raise RuntimeError(f"{vm.name} -> outside host {topo_mod.OUTSIDE_IP}: replied {replied}, echo requests "
                           f"seen outside from {sources} (expected {snat_ip}); the gateway's SNAT flows "
                           "(issue #12 item 2) must be on this branch")
    src_hv, dst_hv = on.hvinfo[vm.hv], on.hvinfo[gw_hv]

    def measure() -> tuple[float, float]:
        return (_iperf(on, on.outside, on.vm(vm.name), topo_mod.OUTSIDE_IP, seconds),
                _iperf(on, on.hv(gw_hv), on.hv(vm.hv), dst_hv.tunnel_ip, seconds))

    snat, under = _versus_underlay(
        out, "north-south", repeats, measure, (f"{vm.name}->outside", f"{src_hv.name}->{gw_hv}"),
        ["run", "snat_pair", "underlay_pair", "snat_mbps", "underlay_mbps", "ratio"],
        (f"{vm.name} → outside host, SNAT via {gw_hv}", f"underlay {src_hv.name} → {gw_hv}"),
        f"North-south through the gateway with SNAT, {seconds} s runs")
    return {"snat_source_seen": sources, "snat_mbps": snat, "underlay_mbps": under, "ratio": snat / under}


EXPERIMENTS: dict[str, Callable[..., dict[str, Any]]] = {
    "connectivity": connectivity, "throughput": throughput, "migration": migration, "flooding": flooding,
    "east-west": east_west, "north-south": north_south, "failover": failover}
CLUSTER_ONLY = {"failover"}


def run(name: str, spec: Spec, out: Path, controllers: int = 1, db: str | None = None, lease_ttl: int = 3,
        **kw: Any) -> dict[str, Any]:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with OverlayNet(spec, out / "work", controllers=controllers, db=db, lease_ttl=lease_ttl) as on:
        built = time.monotonic() - t0
        where = f"{controllers} instance(s) on etcd" if on.clustered else "1 instance on SQLite"
        print(f"== {name}: {spec.pods} pods x {spec.hv_per_pod} hypervisors, {spec.tenants} tenants x {spec.vms} VMs, "
              f"{where} (built in {built:.1f}s)")
        result = EXPERIMENTS[name](on, out, **kw)
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["build_seconds"] = round(built, 1)
    print(f"== {name} done in {result['seconds']}s; {out / (name + '.csv')}, {out / (name + '.png')}\n")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    Spec.add_arguments(ap)
    ap.add_argument("--out", type=Path, default=Path("results"))
    ap.add_argument("--moves", type=int, default=4, help="migration: number of moves")
    ap.add_argument("--seconds", type=int, default=5, help="throughput, north-south: iperf3 duration")
    ap.add_argument("--repeats", type=int, default=3, help="throughput, north-south: runs")
    ap.add_argument("--count", type=int, default=200, help="east-west: pings per pair, variant and round")
    ap.add_argument("--rounds", type=int, default=3, help="east-west: rounds (variants alternate)")
    ap.add_argument("--controllers", type=int, default=1, help="controller instances (more than 1: on etcd)")
    ap.add_argument("--db", default=None,
                    help="'etcd': start a 3-member etcd cluster for the run; 'etcd://HOST:PORT,...': use that "
                         "cluster; a path: a SQLite file (default: one in the work directory)")
    ap.add_argument("--lease-ttl", type=int, default=3, help="the instances' --lease-ttl with etcd (seconds)")
    args = ap.parse_args(argv)
    if args.controllers < 1:
        ap.error("--controllers must be at least 1")
    sigterm_as_interrupt()
    spec = Spec.from_arguments(args)
    clustered = args.controllers > 1 or (args.db or "").startswith("etcd")
    names = [n for n in EXPERIMENTS if clustered or n not in CLUSTER_ONLY] if args.experiment == "all" \
        else [args.experiment]
    if "failover" in names and args.controllers < 2:
        ap.error("failover needs --controllers 2 or more")
    options: dict[str, dict[str, Any]] = {"migration": {"moves": args.moves},
                                          "throughput": {"seconds": args.seconds, "repeats": args.repeats},
                                          "north-south": {"seconds": args.seconds, "repeats": args.repeats},
                                          "east-west": {"count": args.count, "rounds": args.rounds}}
    results = {}
    for name in names:
        results[name] = run(name, spec, args.out, args.controllers, args.db, args.lease_ttl, **options.get(name, {}))
    (args.out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
