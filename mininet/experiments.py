"""Experiments on the Mininet overlay (ryu_overlay/testing/mininet_topo.py), one command each;
each writes a CSV and a PNG.

    python mininet/experiments.py connectivity|flooding|migration|throughput|failover|all \\
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

from ryu_overlay.testing import mininet_topo as topo_mod
from ryu_overlay.testing.mininet_topo import OverlayNet, Spec, sigterm_as_interrupt
from ryu_overlay.testing.report import print_table

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


def throughput(on: OverlayNet, out: Path, seconds: int = 5, repeats: int = 3) -> dict[str, Any]:
    pair = next(((a, b) for a in on.vminfo.values() for b in on.vminfo.values()
                 if a.tenant == b.tenant and on.hvinfo[a.hv].pod != on.hvinfo[b.hv].pod), None)
    if pair is None:
        raise SystemExit("throughput needs two VMs of one tenant in different pods")
    a, b = pair
    ha, hb = on.hvinfo[a.hv], on.hvinfo[b.hv]
    rows = []
    for r in range(1, repeats + 1):
        over = _iperf(on, on.vm(b.name), on.vm(a.name), b.ips[0], seconds)
        under = _iperf(on, on.hv(hb.name), on.hv(ha.name), hb.tunnel_ip, seconds)
        rows.append([r, f"{a.name}->{b.name}", f"{ha.name}->{hb.name}", round(over, 1), round(under, 1),
                     round(over / under, 3), round(VXLAN_LIMIT, 3)])
    def mean(i: int) -> float:
        return sum(r[i] for r in rows) / len(rows)

    rows.append(["mean", rows[0][1], rows[0][2], round(mean(3), 1), round(mean(4), 1), round(mean(3) / mean(4), 3),
                 round(VXLAN_LIMIT, 3)])
    header = ["run", "overlay_pair", "underlay_pair", "overlay_mbps", "underlay_mbps", "ratio", "vxlan_limit"]
    write_csv(out / "throughput.csv", header, rows)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    runs = rows[:-1]
    xs = range(len(runs))
    ax.bar([x - 0.2 for x in xs], [r[3] for r in runs], 0.4, label=f"overlay {a.name}→{b.name}")
    ax.bar([x + 0.2 for x in xs], [r[4] for r in runs], 0.4, label=f"underlay {ha.name}→{hb.name}")
    ax.set_xticks(list(xs), [f"run {r[0]}\nratio {r[5]:.2f}" for r in runs])
    ax.set_ylabel("iperf3 TCP Mbit/s")
    ax.set_title(f"Overlay/underlay {mean(3) / mean(4):.2f} (50-byte VXLAN limit {VXLAN_LIMIT:.3f}), "
                 f"{seconds} s runs", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    print_table(header, rows)
    return {"overlay_mbps": mean(3), "underlay_mbps": mean(4), "ratio": mean(3) / mean(4)}


EXPERIMENTS: dict[str, Callable[..., dict[str, Any]]] = {
    "connectivity": connectivity, "throughput": throughput, "migration": migration, "flooding": flooding,
    "failover": failover}
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
    ap.add_argument("--seconds", type=int, default=5, help="throughput: iperf3 duration")
    ap.add_argument("--repeats", type=int, default=3, help="throughput: runs")
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
    results = {}
    for name in names:
        kw = {"moves": args.moves} if name == "migration" else \
             {"seconds": args.seconds, "repeats": args.repeats} if name == "throughput" else {}
        results[name] = run(name, spec, args.out, args.controllers, args.db, args.lease_ttl, **kw)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
