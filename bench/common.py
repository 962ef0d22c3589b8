"""What the benchmarks share beyond ``ryu_overlay.testing``: the controller set up for a benchmark,
the machine description, py-spy profiles, and the writer of docs/performance.md."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ryu_overlay.testing.controller_proc import HOST, ControllerProcess, RestClient
from ryu_overlay.testing.loadgen import Fleet, quiet_gc
from ryu_overlay.testing.report import print_table, table

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
PY_SPY = Path(sys.executable).parent / "py-spy"
GC_ENV = "BENCH_CONTROLLER_GC"



def controller(workdir: Path, db: Path | None = None, **kwargs: Any) -> ControllerProcess:
    """The controller process with its database and log in ``workdir``, OpenFlow on loopback;
    ``BENCH_CONTROLLER_GC=off`` runs it without Python's garbage collector (a diagnostic)."""
    return ControllerProcess(db or workdir / "overlay.db", workdir / "controller.log", ofp_host=HOST,
                             gc=os.environ.get(GC_ENV, "on") != "off", **kwargs)


def placement_parser(description: str | None, hypervisors_help: str | None = None) -> argparse.ArgumentParser:
    """A fake-switch benchmark's argument parser (``description``: its module docstring) with the options
    they all share: the size and shape of the placement, how the switches connect, and whether to write
    the result into docs/performance.md."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hypervisors", type=int, default=100, help=hypervisors_help)
    ap.add_argument("--ports-per-hv", type=int, default=10)
    ap.add_argument("--ports-per-network", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=32, help="switches connecting at once (Ryu's backlog is 50)")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    ap.add_argument("--doc", action="store_true", help="write the result into docs/performance.md")
    return ap


def add_profile_arguments(ap: argparse.ArgumentParser, during: str) -> None:
    ap.add_argument("--profile", action="store_true", help=f"py-spy the controller during {during}")
    ap.add_argument("--profile-out", type=Path, help="keep py-spy's raw (collapsed) stacks in this file")


def workdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"ryu-overlay-{prefix}-")


# --- profiling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HotSpot:
    function: str
    self_pct: float
    total_pct: float


@dataclass(frozen=True)
class Profile:
    samples: int
    seconds: float
    rate: int
    spots: tuple[HotSpot, ...]

    @property
    def busy_pct(self) -> float:
        return 100.0 * self.samples / max(1.0, self.seconds * self.rate)


class Profiler:
    """``py-spy record`` attached to a pid, stopped with SIGINT; summarised by function."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0
        self.seconds = 0.0

    @staticmethod
    def available() -> bool:
        return PY_SPY.exists() or shutil.which("py-spy") is not None

    def start(self) -> Profiler:
        exe = str(PY_SPY) if PY_SPY.exists() else "py-spy"
        self.proc = subprocess.Popen([exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format",
                                      "raw", "--function", "--output", str(self.out), "--duration", "600"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.t0 = time.monotonic()
        time.sleep(0.3)
        return self

    def stop(self) -> Profile | None:
        if self.proc is None:
            return None
        self.seconds = time.monotonic() - self.t0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            return None
        self.proc = None
        if not self.out.exists():
            print("py-spy wrote nothing:", err.decode(errors="replace")[-500:], file=sys.stderr)
            return None
        return summarise(self.out.read_text(), self.seconds, self.rate)

    def finish(self, needles: Iterable[str]) -> dict[str, Any]:
        """Stop; the profile and the inclusive share of each needle, as result entries."""
        profile = self.stop()
        return {"profile": profile,
                "profile_extra": inclusive(self.out.read_text() if self.out.exists() else "", needles)}


def profiler_for(args: argparse.Namespace, pid: int, tmp: Path) -> Profiler | None:
    """A profiler of ``pid`` (not started) when ``--profile`` asks for one and py-spy is installed."""
    if args.profile and Profiler.available():
        return Profiler(pid, args.profile_out or tmp / "profile.txt")
    return None


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def summarise(raw: str, seconds: float, rate: int, top: int = 15) -> Profile:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        samples += n
        self_counts[frames[-1]] += n
        for name in set(frames):
            total_counts[name] += n
    names = [n for n, _ in self_counts.most_common(top)]
    spots = tuple(HotSpot(n, 100.0 * self_counts[n] / max(1, samples), 100.0 * total_counts[n] / max(1, samples))
                  for n in names)
    return Profile(samples, seconds, rate, spots)


def inclusive(raw: str, needles: Iterable[str]) -> dict[str, float]:
    """Share of samples (%) whose stack contains a frame mentioning each needle."""
    hits: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples += int(count)
        for needle in needles:
            if needle in stack:
                hits[needle] += int(count)
    return {n: 100.0 * hits[n] / max(1, samples) for n in needles}


def profile_markdown(profile: Profile, extra: dict[str, float] | None = None) -> list[str]:
    lines = [(f"py-spy, {profile.rate} Hz, {profile.samples} samples with the controller on CPU over "
              f"{profile.seconds:.1f} s (busy {profile.busy_pct:.0f} %). Self = samples with the function "
              "on top of the stack; total = samples with it anywhere on the stack."), "",
             "| function | self % | total % |", "|---|---:|---:|"]
    lines += [f"| `{s.function}` | {s.self_pct:.1f} | {s.total_pct:.1f} |" for s in profile.spots]
    if extra:
        lines += ["", "Inclusive share of chosen functions:", "", "| frame contains | total % |", "|---|---:|"]
        lines += [f"| `{k}` | {v:.1f} |" for k, v in extra.items()]
    return lines


# --- reporting ---------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(ROOT))
    except ValueError:
        script_text = str(script)
    return " ".join([".venv/bin/python", script_text, *map(shlex.quote, sys.argv[1:])])


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


DOC_HEAD = """# Performance

Measured with fake switches (`ryu_overlay/testing/loadgen.py`): asyncio connections that speak
OpenFlow 1.3 to the real `ryu-overlay` process over loopback, apply what it sends to tables of
their own, and answer barriers once everything before them is applied. Each figure below comes
with the machine, the date and the exact command that produced it; the benchmark scripts in
`bench/` rewrite their own block of this file (`--doc`). The fake switches run on the same
machine as the controller and share its CPUs.

"""

SECTIONS = ("cold_start", "churn", "arp_proxy", "real_ovs", "hotspots")
SECTION_TITLES = {
    "cold_start": "## Cold start",
    "churn": "## Port churn",
    "arp_proxy": "## ARP proxy (packet-in to packet-out)",
    "real_ovs": "## Real Open vSwitch",
    "hotspots": "## Controller hot spots (py-spy)",
    "scale_out": "## Several instances on etcd",
}
SECTION_INTRO = {
    "cold_start": ("The controller starts knowing the whole placement; then every fake switch connects (in "
                   "waves, so Ryu's listen backlog of 50 never overflows) and the clock runs until every switch "
                   "holds exactly the flows, groups and meters that `ryu_overlay.flows` computes for its "
                   "hypervisor (checked by cookie after each barrier reply). The headline figure runs from the "
                   "first connection attempt, because the controller already programs the first switches while "
                   "the others are still connecting. Targets: 1,000 hv / 10,000 ports < 5 s; 3,000 hv / 30,000 "
                   "ports < 15 s; >= 50,000 flow-mods/s. Anchors: OVN needed 11.4 s for 1,000 hv / 10,000 ports; "
                   "naive Ryu message building costs about 50 µs a message (20,000 msg/s)."),
    "churn": ("Ports added, moved and deleted through REST while every fake switch is connected; latency is "
              "from the start of the REST call until the barrier reply after which every affected switch "
              "holds exactly the flows `ryu_overlay.flows` computes for that network."),
    "arp_proxy": ("ARP requests from a bound VM port for an address of its own network, raised as PACKET_IN; "
                  "latency is until the PACKET_OUT carrying the ARP reply arrives. Target: >= 10,000 "
                  "answers/s with p99 < 5 ms. The fake switches do not apply the packet-in meters (100/s per "
                  "VM interface) that a real bridge would."),
    "real_ovs": ("Figures on real Open vSwitch 3.1 (userspace datapath), one `ovsdb-server`/`ovs-vswitchd` per "
                 "hypervisor in its own network namespace, VMs as namespaces "
                 "(`ryu_overlay/testing/netns_testbed.py`)."),
    "hotspots": "Where the controller process spends its CPU during the benchmarks, for whoever optimises it.",
    "scale_out": ("`bench/scale_out.py` (docs/scale-out.md): a 3-member etcd cluster on loopback started by the "
                  "benchmark, the placement written into it in bulk, and fake switches that connect to every "
                  "instance and honour OpenFlow roles like Open vSwitch (only the MASTER connection may change "
                  "them). The machine is shared with other test runs: each figure comes with the 1-minute load "
                  "average, and comparisons are ratios measured in the same run."),
}


def update_doc(section: str, key: str, lines: Sequence[str], path: Path = DOC) -> None:
    """Replace (or add) the block ``key`` inside ``section`` of docs/performance.md."""
    text = path.read_text() if path.exists() else DOC_HEAD
    for s in (*SECTIONS, *([] if section in SECTIONS else [section])):
        if f"<!-- section:{s} -->" not in text:
            title = SECTION_TITLES.get(s, "## " + s.replace("_", " ").capitalize())
            intro = f"{SECTION_INTRO[s]}\n\n" if s in SECTION_INTRO else ""
            text += f"\n{title}\n\n{intro}<!-- section:{s} -->\n<!-- /section:{s} -->\n"
    begin, end = f"<!-- begin:{section}:{key} -->", f"<!-- end:{section}:{key} -->"
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        marker = f"<!-- /section:{section} -->"
        head, tail = text.split(marker, 1)
        blocks = re.findall(rf"<!-- begin:{section}:(.*?) -->", head)
        keys = sorted([*blocks, key], key=_natural)
        following = keys[keys.index(key) + 1:] if key in keys else []
        anchor = next((f"<!-- begin:{section}:{k} -->" for k in following if k in blocks), None)
        if anchor is not None:
            before, after = head.split(anchor, 1)
            head = before + block + "\n\n" + anchor + after
            text = head + marker + tail
        else:
            text = head.rstrip("\n") + "\n\n" + block + "\n" + marker + tail
    path.write_text(text)


def _natural(key: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def code_version() -> str:
    """The commit measured, and which files of the package differed from it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "ryu_overlay").splitlines()
             if not line[3:].startswith("ryu_overlay/testing/")]
    return f"commit {commit}" + (f" with uncommitted changes to {', '.join(dirty)}" if dirty else "")


def provenance() -> list[str]:
    m = machine()
    return [f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, {m['date']}; code: {code_version()}.",
            f"Command: `{command_line()}`"
            + (f" with {GC_ENV}=off (controller's garbage collector disabled, a diagnostic)"
               if os.environ.get(GC_ENV) == "off" else "")]


def publish(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], doc: bool, section: str, key: str,
            heading: str, text: str) -> None:
    """Print the table; with ``doc``, also write it, its provenance and ``text`` into block ``key`` of
    ``section`` in docs/performance.md."""
    print_table(headers, rows, title)
    if doc:
        update_doc(section, key, [heading, "", *provenance(), "", text, "", *table(headers, rows)])


def create_via_rest(rest: RestClient,
                    objects: Iterable[tuple[str, str, dict[str, Any]]]) -> dict[str, tuple[int, float]]:
    """PUT every object, one after the other; per collection, (count, seconds spent in its PUTs)."""
    spent: dict[str, list[float]] = {}
    for kind, name, body in objects:
        t0 = time.perf_counter()
        rest.ok("PUT", f"/v1/{kind}/{name}", body)
        spent.setdefault(kind, []).append(time.perf_counter() - t0)
    return {k: (len(v), sum(v)) for k, v in spent.items()}


@contextmanager
def stopping(ctl: ControllerProcess, fleet: Fleet, profiler: Profiler | None = None) -> Iterator[None]:
    """Stop the profiler (if still running), close the fleet and stop the controller on the way out."""
    try:
        yield
    finally:
        if profiler is not None:
            profiler.stop()
        fleet.close()
        ctl.stop()


async def start_connected(placement: Any, tmp: Path, concurrency: int = 32,
                          timeout: float = 900.0) -> tuple[ControllerProcess, Any]:
    """Seed the store in bulk, start the controller, connect a fleet and wait until every switch
    holds its expected flows. The caller stops both (``fleet.close()``, ``ctl.stop()``)."""
    topo = placement.topology()
    expected = placement.expected_states(topo)
    placement.seed_store(str(tmp / "overlay.db"))
    ctl = controller(tmp).start(timeout=timeout)
    fleet = Fleet(placement.specs())
    try:
        with quiet_gc():
            await fleet.connect(HOST, ctl.ofp_port, concurrency, timeout=timeout)
            await fleet.wait(expected, timeout)
    except BaseException:
        fleet.close()
        ctl.stop()
        raise
    return ctl, fleet


Result = dict[str, Any]


def bench_main(argv: list[str] | None, parse_args: Callable[[list[str] | None], argparse.Namespace],
               run: Callable[[argparse.Namespace], Coroutine[Any, Any, Result]],
               report: Callable[[argparse.Namespace, Result], list[str]], section: str,
               key: Callable[[argparse.Namespace], str], ok: Callable[[Result], bool],
               profile_heading: Callable[[argparse.Namespace], str] | None = None) -> int:
    """A fake-switch benchmark from its parts: parse, run, ``report`` (which prints), show the py-spy
    profile if one was taken, and with ``--doc`` write the block ``key(args)`` of ``section`` (and the
    profile into "hotspots"). Exit status 0 when ``ok(result)``."""
    args = parse_args(argv)
    if getattr(args, "profile", False) and not Profiler.available():
        print("py-spy is not installed (.venv/bin/pip install py-spy): --profile is ignored", file=sys.stderr)
    result = asyncio.run(run(args))
    lines = report(args, result)
    profile = result.get("profile")
    if profile is not None and profile_heading is not None:
        plines = profile_markdown(profile, result.get("profile_extra"))
        print("\n".join(plines))
        if args.doc:
            update_doc("hotspots", f"{section}-{args.hypervisors}", [profile_heading(args), "", *provenance(), "",
                                                                    *plines])
    if args.doc:
        update_doc(section, key(args), lines)
    return 0 if ok(result) else 1
