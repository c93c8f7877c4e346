"""Soak: up → check → sabotage → reset → check → diff → down, many times, in this one process,
watching the host and this process for leaks.

    .venv/bin/python bench/soak.py                         # 200 cycles of labs/kthw.yaml as lab `soak`
    .venv/bin/python bench/soak.py --cycles 3 --every 1 --name soaktest

Everything runs in-process through labbuilder's Python API, so this process's own file
descriptors, RSS and threads are what a long-lived caller of labbuilder would see. Sabotage
happens only inside the lab's containers (the same breakage a learner causes); traffic only
inside the lab (the lab's checks). The host is only read: its links, netns, mounts (PID 1's
mountinfo), conntrack count and processes.

A "start" line is printed before anything ran; then one warm-up cycle (cycle 0: it fills what a
first cycle fills once and keeps, such as docker-py's connection pools, one per URL, up to 25),
then the baseline; then, every --every cycles, one line of metrics taken between cycles with the
lab down. At the end a verdict, metric by metric, baseline vs last (after the final down):

    links, netns, mounts, containers   exactly the baseline
    fds                                at most baseline + 5
    rss                                grown by less than 20 MiB
    processes                          at most baseline + 10 (zombies are shown: an init that is
                                       slow to reap exited containerd shims shows up here)
    threads                            at most baseline + 2
    conntrack                          shown only (any traffic on the host moves it)

A cycle fails when any step raises, a check fails (after up or after reset), a sabotage command
fails, reset does not report one of the breaks, or diff is not empty after reset. A failed check
is run once more a second later, and the line says whether it then passed (a workload that was
not listening yet) — it counts as a failure either way.

Other people may use the same Docker engine meanwhile: their containers bring mounts (overlay,
/run/docker/netns) and processes (shims, their nodes' processes) and take them away again. When
the set of other containers changed between the baseline and the end, mounts are judged on
what no existing container accounts for (the "free" figure), containers on this lab's own, and
processes on those in this process's group ("mine": its children and whatever they left
behind). Exit status 0 when every cycle passed and every metric is
flat, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labbuilder.compile.labels import LABEL_LAB
from labbuilder.compile.paths import pidfile
from labbuilder.compile.plan import compile_plan
from labbuilder.engine.runtime import Engine, LabHandle
from labbuilder.errors import LabError
from labbuilder.lifecycle import lab as lab_lifecycle
from labbuilder.lifecycle import up as up_lifecycle
from labbuilder.lifecycle.diff import Difference, diff
from labbuilder.lifecycle.reset import reset_lab, target
from labbuilder.observe.checks import exec_in, run_checks
from labbuilder.observe.state import observe
from labbuilder.spec.lab_file import resolve_file
from labbuilder.spec.model import ROUTER, Lab

MIB = 1024 * 1024
CONNTRACK = Path("/proc/sys/net/netfilter/nf_conntrack_count")
CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def say(text: str) -> None:
    print(text, flush=True)


# -- metrics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    links: int
    netns: int
    mounts: int
    mounts_free: int  # mounts no existing container accounts for (its overlay, its /run/docker/netns)
    conntrack: int | None
    procs: int
    procs_free: int  # processes outside every existing container, shims of existing containers left out
    procs_mine: int  # in this process's group (its children, and any they left behind), itself left out
    zombies: int  # of all processes: exited, not yet reaped
    containers: int  # labelled labbuilder.lab, every lab
    own: int  # of this lab
    others: frozenset[str]  # ids of every other container on the engine
    fds: int
    rss: int  # bytes
    threads: int


def _lines(argv: list[str]) -> int:
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return len([line for line in done.stdout.splitlines() if line.strip()])


def _status(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise LookupError(field_name)


@dataclass(frozen=True)
class _Container:
    id: str
    lab: str
    merged: str
    sandbox: str


def _docker_containers() -> list[_Container]:
    """Every container on the engine, read with the docker CLI (another process: measuring must not
    move this process's own fds and memory). One that vanishes meanwhile is simply left out."""
    ids = subprocess.run(["docker", "ps", "-aq", "--no-trunc"], capture_output=True, text=True, check=True)
    if not ids.stdout.split():
        return []
    fmt = '{{.Id}}|{{index .Config.Labels "' + LABEL_LAB + '"}}|{{.GraphDriver.Data.MergedDir}}|'
    fmt += "{{.NetworkSettings.SandboxKey}}"
    done = subprocess.run(["docker", "inspect", "--format", fmt, *ids.stdout.split()], capture_output=True, text=True)
    found = []
    for line in done.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            found.append(_Container(*parts))
    return found


@dataclass(frozen=True)
class _Process:
    cgroup: str
    argv: tuple[str, ...]
    state: str
    group: int  # process group


def _read_processes() -> list[_Process]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cgroup = Path(entry.path, "cgroup").read_text()
            argv = Path(entry.path, "cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        found.append(_Process(cgroup, tuple(argv), stat[0], int(stat[2])))
    return found


def _free_processes(processes: list[_Process], containers: list[_Container]) -> int:
    """Processes outside every existing container, the containers' shims left out too."""
    ids = {c.id for c in containers}
    free = 0
    for p in processes:
        argv = list(p.argv)
        shim = argv[argv.index("-id") + 1] if "-id" in argv[:-1] else ""  # containerd-shim-runc-v2 -id ID
        free += not ids & {*CONTAINER_ID.findall(p.cgroup), shim}
    return free


def _free_mounts(points: list[str], containers: list[_Container]) -> int:
    """Mounts no existing container accounts for (its overlay root, its /run/docker/netns file)."""
    owned = {c.merged for c in containers if c.merged and c.merged != "<no value>"}
    owned |= {"/run/docker/netns/" + os.path.basename(c.sandbox) for c in containers if c.sandbox}
    return sum(1 for point in points if point not in owned)


def sample(name: str) -> Sample:
    """The metrics now. The containers are listed before and after the host is read, and both
    lists account for mounts and processes: another user's container made meanwhile is not
    counted as free."""
    before = _docker_containers()
    points = [line.split()[4] for line in Path("/proc/1/mountinfo").read_text().splitlines() if line.strip()]
    processes = _read_processes()
    after = _docker_containers()
    either = before + after
    group = os.getpgrp()
    return Sample(
        links=_lines(["ip", "-o", "link"]),
        netns=_lines(["ip", "netns", "list"]),
        mounts=len(points),
        mounts_free=_free_mounts(points, either),
        conntrack=int(CONNTRACK.read_text()) if CONNTRACK.exists() else None,
        procs=len(processes),
        procs_free=_free_processes(processes, either),
        procs_mine=sum(1 for p in processes if p.group == group) - 1,  # this process left out
        zombies=sum(1 for p in processes if p.state == "Z"),
        containers=sum(1 for c in after if c.lab and c.lab != "<no value>"),
        own=sum(1 for c in after if c.lab == name),
        others=frozenset(c.id for c in after if c.lab != name),
        fds=len(os.listdir("/proc/self/fd")),
        rss=_status("VmRSS") * 1024,
        threads=_status("Threads"),
    )


def show(s: Sample) -> str:
    conntrack = "n/a" if s.conntrack is None else str(s.conntrack)
    return (
        f"links {s.links}  netns {s.netns}  mounts {s.mounts} (free {s.mounts_free})  conntrack {conntrack}  "
        f"procs {s.procs} (free {s.procs_free}, mine {s.procs_mine}, zombies {s.zombies})  "
        f"containers {s.containers} (own {s.own})  "
        f"fds {s.fds}  rss {s.rss / MIB:.1f} MiB  threads {s.threads}"
    )


@dataclass(frozen=True)
class Judgement:
    metric: str
    base: str
    last: str
    flat: bool | None  # None: shown only
    rule: str


def judge(base: Sample, last: Sample) -> list[Judgement]:
    """Each metric, baseline vs last; mounts, containers and processes on their free / own / mine
    figures when other engine users' containers came or went meanwhile."""
    perturbed = base.others != last.others
    out = [
        Judgement("links", str(base.links), str(last.links), last.links == base.links, "== baseline"),
        Judgement("netns", str(base.netns), str(last.netns), last.netns == base.netns, "== baseline"),
    ]
    if perturbed:
        out += [
            Judgement(
                "mounts",
                f"{base.mounts} (free {base.mounts_free})",
                f"{last.mounts} (free {last.mounts_free})",
                last.mounts_free == base.mounts_free,
                "free == baseline (other containers changed)",
            ),
            Judgement(
                "containers",
                f"{base.containers} (own {base.own})",
                f"{last.containers} (own {last.own})",
                last.own == base.own == 0,
                "own == 0 (other containers changed)",
            ),
            Judgement(
                "processes",
                f"{base.procs} (mine {base.procs_mine})",
                f"{last.procs} (mine {last.procs_mine})",
                last.procs_mine <= base.procs_mine + 10,
                "mine <= baseline + 10 (other containers changed)",
            ),
        ]
    else:
        out += [
            Judgement("mounts", str(base.mounts), str(last.mounts), last.mounts == base.mounts, "== baseline"),
            Judgement(
                "containers",
                f"{base.containers} (own {base.own})",
                f"{last.containers} (own {last.own})",
                last.containers == base.containers and last.own == 0,
                "== baseline",
            ),
            Judgement("processes", str(base.procs), str(last.procs), last.procs <= base.procs + 10, "<= baseline + 10"),
        ]
    out += [
        Judgement("fds", str(base.fds), str(last.fds), last.fds <= base.fds + 5, "<= baseline + 5"),
        Judgement(
            "rss",
            f"{base.rss / MIB:.1f} MiB",
            f"{last.rss / MIB:.1f} MiB",
            last.rss - base.rss < 20 * MIB,
            "growth < 20 MiB",
        ),
        Judgement("threads", str(base.threads), str(last.threads), last.threads <= base.threads + 2, "<= baseline + 2"),
        Judgement(
            "conntrack",
            "n/a" if base.conntrack is None else str(base.conntrack),
            "n/a" if last.conntrack is None else str(last.conntrack),
            None,
            "shown only",
        ),
    ]
    return out


# -- one cycle --------------------------------------------------------------------------------
@dataclass
class Cycle:
    seconds: float = 0.0
    repairs: int = 0
    failures: list[str] = field(default_factory=list)


Expectation = tuple[str, Callable[[Difference], bool]]


def sabotage(handle: LabHandle, model: Lab) -> tuple[list[str], list[Expectation]]:
    """Break the lab the way a learner would, inside its containers only. Returns the commands that
    did not work, and what reset must report for each break."""
    worker0, worker1, worker2 = "worker-0", "worker-1", "worker-2"
    pod = next(p for p in model.pods if p.node == worker0)
    podserver = pidfile(f"{worker1}.podserver")
    breaks: list[tuple[str, list[str], Expectation]] = [
        (
            worker0,
            ["ip", "route", "flush", "table", "main"],
            ("worker-0 routes missing", lambda d: d.key == worker0 and d.kind == "route" and d.change == "missing"),
        ),
        (
            worker0,
            ["ip", "link", "del", pod.host_veth],
            (
                f"worker-0 veth {pod.host_veth} missing",
                lambda d: d.key == worker0 and d.kind == "link" and pod.host_veth in d.what,
            ),
        ),
        (
            worker1,
            ["iptables", "-t", "nat", "-F"],
            ("worker-1 iptables changed", lambda d: d.key == worker1 and d.kind == "iptables"),
        ),
        (
            worker1,
            ["sh", "-c", f"kill $(cat {podserver})"],
            ("worker-1 podserver dead", lambda d: d.key == worker1 and d.kind == "process"),
        ),
        (
            worker2,
            ["ip", "netns", "add", "stray"],
            ("worker-2 stray netns", lambda d: d.key == worker2 and d.kind == "netns" and d.change == "added"),
        ),
        (
            ROUTER,
            ["ip", "route", "del", "10.200.1.0/24"],
            (
                "router route 10.200.1.0/24 missing",
                lambda d: d.key == ROUTER and d.kind == "route" and "10.200.1.0/24" in d.what,
            ),
        ),
        (
            ROUTER,
            ["ip", "addr", "add", "10.240.0.250/24", "dev", "lab0"],
            (
                "router stray address 10.240.0.250/24",
                lambda d: d.key == ROUTER and d.kind == "address" and "10.240.0.250/24" in d.what,
            ),
        ),
    ]
    failed = []
    for key, argv, _ in breaks:
        result = handle.enter(key, argv)
        if result.code != 0:
            failed.append(f"sabotage {key}: `{' '.join(argv)}` failed ({result.code}): {result.output.strip()}")
    return failed, [expect for _, _, expect in breaks]


RETRY_AFTER = 1.0  # seconds: a failed check is run once more, to tell a slow start from a broken lab


def checks(engine: Engine, name: str, when: str) -> list[str]:
    """The lab's checks; each failure says whether it still failed RETRY_AFTER seconds later (a
    workload that was not listening yet) — it counts as a failure either way."""
    handle = engine.lab(name)
    model = handle.model()
    results = run_checks(model, model.checks, exec_in(handle))
    if not results:
        return [f"{when}: the lab has no checks"]
    failed = [r for r in results if not r.passed]
    if not failed:
        return []
    time.sleep(RETRY_AFTER)
    names = {r.name for r in failed}
    again = {r.name: r for r in run_checks(model, [c for c in model.checks if c.name in names], exec_in(handle))}
    return [
        f"{when}: check '{r.name}' failed: {r.detail} "
        + (f"(passed {RETRY_AFTER:g} s later)" if again[r.name].passed else f"(still failing {RETRY_AFTER:g} s later)")
        for r in failed
    ]


def cycle(engine: Engine, lab_file: str, name: str) -> Cycle:
    """One cycle; the lab is always down at its end. Failures are collected, not raised."""
    out = Cycle()
    start = time.perf_counter()
    try:
        up_lifecycle.up(lab_file, name, engine=engine)
        out.failures += checks(engine, name, "after up")
        handle = engine.lab(name)
        broken, expected = sabotage(handle, handle.model())
        out.failures += broken
        result = reset_lab(name, engine=engine)
        out.repairs = len(result.repairs)
        for what, seen in expected:
            if not any(seen(d) for d in result.differences):
                out.failures.append(f"reset did not report: {what}")
        out.failures += checks(engine, name, "after reset")
        handle, plan, _ = target(engine, name, wake=False)
        left = diff(plan, observe(handle, plan))
        out.failures += [f"after reset, diff: {d}" for d in left]
    except LabError as err:
        problems = "".join(f" | {problem}" for problem in err.problems[:5])  # a SpecError's located problems
        out.failures.append(f"{type(err).__name__}: {err}{problems}")
    except Exception:
        out.failures.append("crash: " + traceback.format_exc().strip().replace("\n", " | "))
    finally:
        try:
            lab_lifecycle.down(name, engine)
            left_over = [c.name for c in engine.containers(name)]
            if left_over:
                out.failures.append(f"after down, containers left: {', '.join(left_over)}")
        except LabError as err:
            out.failures.append(f"down: {err}")
    out.seconds = time.perf_counter() - start
    return out


# -- the run ----------------------------------------------------------------------------------
def warm_up(engine: Engine, lab_file: str, name: str) -> None:
    """What the first cycle would load once anyway, loaded before the baseline: the image, the
    engine connection, the modules labbuilder imports only when needed, one spec resolved."""
    engine.ensure_image(lambda _: None)
    engine.version()
    for module in ("jsonschema", "pyroute2"):
        importlib.import_module(module)
    _, resolved = resolve_file(lab_file, name)
    compile_plan(resolved.lab)


def run_cycle(engine: Engine, args: argparse.Namespace, number: int, failed: list[int]) -> Cycle:
    result = cycle(engine, args.lab, args.name)
    if result.failures:
        failed.append(number)
        for line in result.failures:
            say(f"cycle {number} FAILED: {line}")
    return result


OWNER = os.getpid()


def _interrupt(signum: int, _frame: object) -> None:
    """Ctrl-C or SIGTERM: unwind through the cleanup — in this process only. pyroute2 forks
    short-lived children (to open a socket inside a namespace) and ends them with SIGTERM; a child
    that inherited this handler must die as by default, not unwind a copy of the soak."""
    if os.getpid() != OWNER:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    # Ctrl-C and `kill PID` both end the run through the cleanup below, also when this was started
    # in the background (where a shell hands SIGINT over ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--name", default="soak", help="the lab's name (default: soak); a lab of that name is downed")
    parser.add_argument("--every", type=int, default=10, help="print metrics every N cycles (default: 10)")
    parser.add_argument("--lab", default="labs/kthw.yaml", help="lab file (default: labs/kthw.yaml)")
    args = parser.parse_args()
    every = max(1, args.every)

    engine = Engine()
    if engine.containers(args.name):
        say(f"lab {args.name} exists: downing it first")
        lab_lifecycle.down(args.name, engine)
    warm_up(engine, args.lab, args.name)
    start = sample(args.name)
    say(f"start     {show(start)}")
    base: Sample | None = None

    times: list[float] = []
    failed: list[int] = []
    done = 0
    interrupted = False
    try:
        # Cycle 0 fills what a first cycle fills once and keeps (docker-py's connection pools: up to
        # 25, one per URL; caches): the baseline is taken after it. Its failures count.
        result = run_cycle(engine, args, 0, failed)
        base = sample(args.name)
        say(f"baseline  {show(base)}  (after warm-up cycle 0: {result.seconds:.2f} s, repairs {result.repairs})")
        for number in range(1, args.cycles + 1):
            result = run_cycle(engine, args, number, failed)
            done = number
            times.append(result.seconds)
            if number % every == 0 or number == args.cycles:
                say(
                    f"cycle {number}  {statistics.median(times[-every:]):.2f} s/cycle  repairs {result.repairs}  "
                    f"failed {len(failed)}  {show(sample(args.name))}"
                )
    except KeyboardInterrupt:
        interrupted = True
        say(f"interrupted during cycle {done + 1 if base else 0}")
    finally:
        # A second Ctrl-C must not stop the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lab_lifecycle.down(args.name, engine)

    last = sample(args.name)
    verdict = judge(base or start, last)
    say(f"verdict after {done} cycles + warm-up" + (" (interrupted)" if interrupted else "") + ":")
    passed = done + (base is not None) - len(failed)
    say(f"  {'cycles':<11} {passed} passed, {len(failed)} failed" + (f" (cycles {failed})" if failed else ""))
    for j in verdict:
        mark = "shown only" if j.flat is None else ("flat" if j.flat else "NOT FLAT")
        say(f"  {j.metric:<11} {j.base:>18} -> {j.last:<18} {mark:<10} [{j.rule}]")
    ok = done > 0 and not failed and not interrupted and all(j.flat is not False for j in verdict)
    say("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
