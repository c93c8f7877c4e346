"""Speed at scale: labbuilder's figures beside the alternatives, in one run, with ratios and targets.

    .venv/bin/python bench/bench_scale.py                 # everything: KTHW, 50 workers x 20 pods, 10 labs at once
    .venv/bin/python bench/bench_scale.py --quick         # smoke run: 5 x 4 pods, 3 labs at once
    .venv/bin/python bench/bench_scale.py --only kthw --runs 5

Every labbuilder figure is whole-process time as a user sees it: `labbuilder ...` run as a
subprocess and timed around it (time.perf_counter); each is the median of --runs runs
(--runs-big for the big lab). Sections (--only): cli, kthw, big, parallel, floor, mininet.

  cli       labbuilder --version, --help, validate labs/kthw.yaml
  kthw      labs/kthw.yaml as lab "benchkthw": up, check, reset (intact), reset after a sabotage
            set, down; and the same lab built by `labbuilder render --format sh` + `sh` ("benchkthwr")
  big       a generated lab, W workers x P pods (50 x 20) pinned per worker, one ClusterIP service
            selecting all pods: plan, validate, up, down, memory per pod, cost per pod beyond the
            container floor; the same pods without the service; the render script at that size
  parallel  N copies of labs/kthw.yaml (benchp0..) brought up by N concurrent `labbuilder up -q`;
            then `labbuilder check` on each, and down
  floor     the container floor: 7 and W+1 sealed containers of the node image, created and
            started with the Docker SDK in 8 threads (label labbuilder.lab=bench-floor), removed
            the same way; each both with `--network none` (the issue's floor) and with Docker's
            networking disabled as labbuilder makes its nodes (the lower floor; the cost per pod is
            counted beyond it); and 7 of them as a whole process (python, the SDK's import)
  mininet   Mininet 2.3 (Debian's, system python): N hosts on one LinuxBridge switch, no controller,
            for N = 7 and N = W x P, inside `unshare --net --mount --pid` so nothing reaches the host's
            network namespace (checked: the host's `ip -o link` before and after); see mininet_part.py

Only the labs this script names (benchkthw, benchkthwr, benchbig, benchbigns, benchbig0, benchbigr, benchpN)
and the bench-floor containers are touched: leftovers of an interrupted run are removed at the
start, and everything is removed again at the end, also on Ctrl-C. Progress goes to stderr, the
report to stdout. Exit 0 when the run completed (targets missed or not), 1 on errors, 130 on Ctrl-C.

Memory is host-wide: MemAvailable before `up` minus MemAvailable 2 s after it. Per pod, the target
figure is what the pods add: (the big lab - the same nodes without pods, "benchbig0") / pods, the
host's growth per pod added; the whole lab over its pods (containers included) is printed beside it.
Other activity on the host shows up in both.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KTHW = ROOT / "labs" / "kthw.yaml"
MININET_PART = Path(__file__).resolve().parent / "mininet_part.py"
SYSTEM_PYTHON = "/usr/bin/python3"
LABEL = "labbuilder.lab"
FLOOR_LAB = "bench-floor"
KTHW_LAB = "benchkthw"
KTHW_RENDER_LAB = "benchkthwr"
BIG_LAB = "benchbig"
BIG_NOSVC_LAB = "benchbigns"
BIG_EMPTY_LAB = "benchbig0"  # the big lab's nodes without pods: what the pods add is measured against it
BIG_RENDER_LAB = "benchbigr"
PARALLEL_PREFIX = "benchp"
# The names this script creates; only these are cleaned up (a lab someone else named bench… is left alone).
OUR_LABS = re.compile(r"^bench(kthw|kthwr|big|bigns|big0|bigr|p\d+|-floor)$")
MININET_NAMES = re.compile(r"^(h\d+-eth\d+|s\d+(-eth\d+)?)$")
SECTIONS = ("cli", "kthw", "big", "parallel", "floor", "mininet")
THREADS = 8
# The issue's sizes; targets for the big lab and the parallel labs are stated for these.
ISSUE_WORKERS, ISSUE_PODS_PER_WORKER, ISSUE_PARALLEL = 50, 20, 10


class BenchError(Exception):
    """A step failed: the run goes on with the next section, and exits 1."""


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def labbuilder_bin() -> str:
    beside = Path(sys.executable).with_name("labbuilder")
    return str(beside if beside.exists() else ROOT / ".venv" / "bin" / "labbuilder")


LB = labbuilder_bin()


# ---------------------------------------------------------------- running and timing


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    stdout: int | None = subprocess.PIPE,
    timeout: float | None = None,
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run cmd (its own process group), return (seconds, result); on timeout kill that group by its pid."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise BenchError(f"`{shlex.join(cmd)}` still running after {timeout:.0f} s: killed") from None
    except BaseException:  # Ctrl-C: end the child's group too, then let the caller clean up
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    elapsed = time.perf_counter() - start
    result = subprocess.CompletedProcess(list(cmd), proc.returncode, out or "", err or "")
    if check and proc.returncode != 0:
        raise BenchError(f"`{shlex.join(cmd)}` exited {proc.returncode}: {tail(result)}")
    return elapsed, result


def tail(result: subprocess.CompletedProcess[str], lines: int = 6) -> str:
    text = ((result.stderr or "") + "\n" + (result.stdout or "")).strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:])


def lb(*args: str, **kwargs: Any) -> float:
    return run([LB, *args], **kwargs)[0]


def docker_exec(container: str, *cmd: str) -> str:
    return run(["docker", "exec", container, *cmd])[1].stdout


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise BenchError("no MemAvailable in /proc/meminfo")


# ---------------------------------------------------------------- the report


@dataclass
class Figure:
    label: str
    samples: list[float]
    unit: str = "s"
    target: float | None = None  # at most this; None: reported only
    note: str = ""

    @property
    def value(self) -> float:
        return statistics.median(self.samples)


@dataclass
class Report:
    figures: dict[str, Figure] = field(default_factory=dict)
    checks: list[tuple[str, str, str, bool]] = field(default_factory=list)  # label, measured, wanted, met
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, label: str, samples: float | list[float], **kwargs: Any) -> Figure:
        figure = Figure(label, samples if isinstance(samples, list) else [samples], **kwargs)
        self.figures[key] = figure
        progress(
            f"  {label}: {fmt(figure.value, figure.unit)}"
            + (f" ({len(figure.samples)} runs)" * (len(figure.samples) > 1))
        )
        return figure

    def check(self, label: str, measured: str, wanted: str, met: bool) -> None:
        self.checks.append((label, measured, wanted, met))
        progress(f"  {label}: {measured} ({'met' if met else 'MISSED'})")

    def get(self, key: str) -> float | None:
        figure = self.figures.get(key)
        return figure.value if figure else None


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "MiB":
        return f"{value:.2f} MiB"
    return f"{value:g} {unit}".strip()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    line = "  ".join("-" * width for width in widths)
    out = ["  ".join(str(cell).ljust(width) for cell, width in zip(headers, widths, strict=False)), line]
    out += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(line.rstrip() for line in out)


# ---------------------------------------------------------------- cleanup (by label, our names only)


def docker_client() -> Any:
    import docker

    return docker.from_env(timeout=300)


def our_labs(client: Any) -> dict[str, int]:
    labs: dict[str, int] = {}
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        name = container.labels.get(LABEL, "")
        if OUR_LABS.match(name):
            labs[name] = labs.get(name, 0) + 1
    return labs


def remove_floor(client: Any) -> float:
    """Remove every bench-floor container (8 threads); return the seconds it took."""
    start = time.perf_counter()
    containers = client.containers.list(all=True, filters={"label": f"{LABEL}={FLOOR_LAB}"})
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda c: c.remove(force=True), containers))
    return time.perf_counter() - start


def cleanup(client: Any, why: str) -> None:
    labs = our_labs(client)
    if not labs:
        return
    progress(f"cleanup ({why}): " + ", ".join(f"{name} ({count} containers)" for name, count in sorted(labs.items())))
    if FLOOR_LAB in labs:
        remove_floor(client)
    for name in sorted(labs):
        if name != FLOOR_LAB:
            run([LB, "down", name], check=False, timeout=600)
    left = our_labs(client)
    if left:
        raise BenchError(f"cleanup left containers behind: {left}")


# ---------------------------------------------------------------- lab files


def big_lab(workers: int, pods_per_worker: int, service: bool, name: str = "") -> dict[str, Any]:
    """W workers, each with one workload of P pods pinned to it (replicas are at most 250 per workload)."""
    lab: dict[str, Any] = {
        "name": name or (BIG_LAB if service else BIG_NOSVC_LAB),
        "description": f"bench_scale: {workers} workers x {pods_per_worker} pods"
        + (", one ClusterIP service selecting all of them" if service else ", no service"),
        "network": {"cidr": "10.240.0.0/22"},
        "cluster": {"podCIDR": "10.200.0.0/16", "nodeMaskSize": 24, "serviceCIDR": "10.32.0.0/24", "dns": False},
        "cni": {"mode": "bridge", "bridge": "cnio0", "ipMasq": True, "routes": "router"},
        "nodes": [{"name": f"worker-{i}", "role": "worker"} for i in range(workers)],
        "workloads": [
            {
                "name": f"app-{i}",
                "replicas": pods_per_worker,
                "labels": {"app": "big"},
                "port": 80,
                "nodes": [f"worker-{i}"],
            }
            for i in range(workers)
            if pods_per_worker
        ],
    }
    if service:
        lab["services"] = [{"name": "big", "type": "ClusterIP", "selector": {"app": "big"}, "ports": [{"port": 80}]}]
    return lab


# ---------------------------------------------------------------- sections


@dataclass
class Options:
    runs: int
    runs_big: int
    workers: int
    pods_per_worker: int
    parallel: int
    skip_render_big: bool
    render_timeout: float
    mininet_timeout: float
    tmp: Path

    @property
    def pods(self) -> int:
        return self.workers * self.pods_per_worker

    @property
    def issue_size(self) -> bool:
        return (self.workers, self.pods_per_worker) == (ISSUE_WORKERS, ISSUE_PODS_PER_WORKER)


def repeat(runs: int, what: str, step: Callable[[], float]) -> list[float]:
    samples = []
    for i in range(runs):
        samples.append(step())
        if runs > 1:
            progress(f"    {what} run {i + 1}/{runs}: {samples[-1]:.3f} s")
    return samples


def section_cli(report: Report, opts: Options) -> None:
    progress("cli: --version, --help, validate")
    run([LB, "--version"])  # warm the bytecode cache; not counted
    report.add(
        "cli.version", "labbuilder --version", repeat(opts.runs, "--version", lambda: lb("--version")), target=0.15
    )
    report.add("cli.help", "labbuilder --help", repeat(opts.runs, "--help", lambda: lb("--help")), target=0.15)
    report.add(
        "cli.validate",
        "labbuilder validate labs/kthw.yaml",
        repeat(opts.runs, "validate", lambda: lb("validate", str(KTHW))),
        target=0.3,
    )


def sabotage(name: str) -> str:
    """The sabotage set, inside the lab's own containers only."""
    worker0 = f"{name}-worker-0"
    veths = [
        line.split(":")[1].strip().split("@")[0]
        for line in docker_exec(worker0, "ip", "-o", "link", "show", "type", "veth").splitlines()
    ]
    victims = [veth for veth in veths if veth != "eth0"]
    if not victims:
        raise BenchError(f"no pod veth on {worker0}: {veths}")
    docker_exec(worker0, "ip", "route", "flush", "table", "main")
    docker_exec(worker0, "ip", "link", "del", victims[0])
    docker_exec(f"{name}-worker-1", "iptables", "-t", "nat", "-F")
    docker_exec(f"{name}-worker-2", "ip", "netns", "add", "stray")
    docker_exec(f"{name}-router", "ip", "route", "del", "10.200.1.0/24")
    return victims[0]


def section_kthw(report: Report, opts: Options) -> None:
    progress("kthw: warm-up up/down (not counted; builds the node image when missing)")
    run([LB, "image", "build"], timeout=1800)
    run([LB, "up", str(KTHW), "--name", KTHW_LAB, "-q"], timeout=600)
    run([LB, "down", KTHW_LAB], timeout=600)
    ups, downs, checks, resets, sabotaged = [], [], [], [], []
    check_ok = pristine_ok = 0
    for i in range(opts.runs):
        progress(f"kthw run {i + 1}/{opts.runs}: up, check, reset, sabotage + reset, down")
        ups.append(lb("up", str(KTHW), "--name", KTHW_LAB, timeout=600))
        seconds, result = run([LB, "check", KTHW_LAB], check=False, timeout=600)
        checks.append(seconds)
        check_ok += result.returncode == 0
        if result.returncode:
            progress(f"    check failed: {tail(result)}")
        resets.append(lb("reset", KTHW_LAB, timeout=600))
        veth = sabotage(KTHW_LAB)
        progress(
            f"    sabotaged: worker-0 routes flushed and {veth} deleted, worker-1 nat flushed, "
            "worker-2 netns stray added, router route to 10.200.1.0/24 deleted"
        )
        seconds, result = run([LB, "reset", KTHW_LAB], timeout=600)
        sabotaged.append(seconds)
        repairs = next((line for line in result.stdout.splitlines() if "repaired" in line and "lab " in line), "")
        _, diff = run([LB, "diff", KTHW_LAB], check=False, timeout=600)
        pristine_ok += diff.returncode == 0
        progress(f"    reset: {repairs.strip()}; diff afterwards: {'pristine' if diff.returncode == 0 else tail(diff)}")
        downs.append(lb("down", KTHW_LAB, timeout=600))
    report.add("kthw.up", "KTHW up", ups, target=1.3)
    report.add("kthw.down", "KTHW down", downs, target=0.4)
    report.add("kthw.reset", "KTHW reset (intact)", resets, target=0.4)
    report.add("kthw.reset_sabotage", "KTHW reset after the sabotage set", sabotaged, target=0.6)
    report.add("kthw.check", "KTHW check", checks, target=1.0)
    report.check("KTHW check passes", f"{check_ok}/{opts.runs} runs", "all", check_ok == opts.runs)
    report.check(
        "KTHW pristine after reset of the sabotage", f"{pristine_ok}/{opts.runs} runs", "all", pristine_ok == opts.runs
    )

    script = opts.tmp / "kthw-render.sh"
    run([LB, "render", str(KTHW), "--format", "sh", "--name", KTHW_RENDER_LAB, "--output", str(script)])
    sh_ups, sh_downs = [], []
    for i in range(opts.runs):
        progress(f"kthw render script run {i + 1}/{opts.runs}: sh, labbuilder down")
        sh_ups.append(run(["sh", str(script)], timeout=600)[0])
        sh_downs.append(lb("down", KTHW_RENDER_LAB, timeout=600))
    report.add("alt.kthw.render.up", "KTHW by `sh` of the render script", sh_ups)
    report.add("alt.kthw.render.down", "KTHW render-built: labbuilder down", sh_downs)


def section_big(report: Report, opts: Options) -> None:
    size = f"{opts.workers}x{opts.pods_per_worker}={opts.pods} pods"
    files = {}
    for service in (True, False):
        path = opts.tmp / ("big.yaml" if service else "big-nosvc.yaml")
        path.write_text(yaml.safe_dump(big_lab(opts.workers, opts.pods_per_worker, service), sort_keys=False))
        files[service] = path
    big = str(files[True])
    empty = opts.tmp / "big-empty.yaml"
    empty.write_text(yaml.safe_dump(big_lab(opts.workers, 0, False, BIG_EMPTY_LAB), sort_keys=False))
    progress(f"big lab ({size}, one ClusterIP service): plan, validate")
    report.add(
        "big.plan",
        f"big lab ({size}): plan > /dev/null",
        repeat(opts.runs, "plan", lambda: lb("plan", big, stdout=subprocess.DEVNULL)),
        target=0.5,
    )
    report.add(
        "big.validate",
        f"big lab ({size}): validate",
        repeat(opts.runs, "validate", lambda: lb("validate", big)),
        target=0.2,
    )

    ups, downs, mems, whole = [], [], [], []
    for i in range(opts.runs_big):
        progress(f"big lab run {i + 1}/{opts.runs_big}: its nodes alone, then up (with the service); memory of each")
        nodes_only = grown_mib(lambda: lb("up", str(empty), timeout=1800))
        lb("down", BIG_EMPTY_LAB, timeout=1800)
        grown = grown_mib(lambda: ups.append(lb("up", big, timeout=1800)))
        mems.append((grown - nodes_only) / opts.pods)
        whole.append(grown / opts.pods)
        downs.append(lb("down", BIG_LAB, timeout=1800))
        if min(grown, nodes_only) <= 0:
            report.notes.append(
                f"MemAvailable grew during an up ({nodes_only:.0f} MiB nodes alone, {grown:.0f} MiB the big lab): it "
                "is host-wide, so other activity on the host (other Docker users, page cache) outweighed the lab"
            )
    report.add("big.up", f"big lab ({size}): up", ups, target=20.0)
    report.add("big.down", f"big lab ({size}): down", downs, target=3.0)
    report.add("big.mem", "  host memory per pod: (lab - its nodes alone) / pods", mems, unit="MiB", target=1.0)
    report.add("big.mem100", "  host memory growth per 100 pods", [m * 100 for m in mems], unit="MiB", target=100.0)
    report.add("big.memall", "  host memory of the whole lab / pods (nodes included)", whole, unit="MiB")

    ups, downs = [], []
    for i in range(opts.runs_big):
        progress(f"big lab without the service, run {i + 1}/{opts.runs_big}: up, down")
        ups.append(lb("up", str(files[False]), timeout=1800))
        downs.append(lb("down", BIG_NOSVC_LAB, timeout=1800))
    report.add("big_nosvc.up", f"big lab ({size}) without the service: up", ups)
    report.add("big_nosvc.down", f"big lab ({size}) without the service: down", downs)

    if opts.skip_render_big:
        report.notes.append("big lab by the render script: skipped (--skip-render-big)")
        return
    progress(f"big lab by the render script (timeout {opts.render_timeout:.0f} s): render, sh, labbuilder down")
    script = opts.tmp / "big-render.sh"
    run([LB, "render", big, "--format", "sh", "--name", BIG_RENDER_LAB, "--output", str(script)])
    try:
        report.add(
            "alt.big.render.up",
            f"big lab ({size}) by `sh` of the render script",
            run(["sh", str(script)], timeout=opts.render_timeout)[0],
        )
    finally:
        report.add(
            "alt.big.render.down", "big lab render-built: labbuilder down", lb("down", BIG_RENDER_LAB, timeout=1800)
        )


def grown_mib(step: Callable[[], object]) -> float:
    """How much MemAvailable shrank over `step`, 2 s after it (host-wide), in MiB."""
    time.sleep(2)  # let the previous steps settle
    before = mem_available_kib()
    step()
    time.sleep(2)
    return (before - mem_available_kib()) / 1024


def section_parallel(report: Report, opts: Options) -> None:
    names = [f"{PARALLEL_PREFIX}{i}" for i in range(opts.parallel)]
    progress(f"parallel: {opts.parallel} concurrent `labbuilder up labs/kthw.yaml --name benchpN -q`")
    logs = [opts.tmp / f"{name}.log" for name in names]
    start = time.perf_counter()
    procs = []
    try:
        for name, log in zip(names, logs, strict=True):
            with log.open("w") as out:
                procs.append(
                    subprocess.Popen(
                        [LB, "up", str(KTHW), "--name", name, "-q"], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
                    )
                )
        codes = [proc.wait(timeout=1800) for proc in procs]
    except BaseException:
        for proc in procs:  # by pid, only the ones started here
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise
    wall = time.perf_counter() - start
    report.add("parallel.up", f"{opts.parallel} KTHW labs up at once (wall)", wall, target=12.0)
    failed = [name for name, code in zip(names, codes, strict=True) if code != 0]
    for name, log in zip(names, logs, strict=True):
        if name in failed:
            progress(f"    up {name} failed: {' | '.join(log.read_text().strip().splitlines()[-4:])}")
    passed = 0
    for name in names:
        if name in failed:
            continue
        _, result = run([LB, "check", name], check=False, timeout=600)
        passed += result.returncode == 0
        if result.returncode:
            progress(f"    check {name}: {tail(result, 3)}")
    report.check(
        f"{opts.parallel} parallel labs pass `check`", f"{passed}/{opts.parallel}", "all", passed == opts.parallel
    )
    progress("parallel: down them all (concurrently)")
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda name: run([LB, "down", name], check=False, timeout=600)[1], names))
    report.add("parallel.down", f"{opts.parallel} KTHW labs down at once (wall)", time.perf_counter() - start)
    if failed:
        raise BenchError(f"`labbuilder up` failed for {', '.join(failed)} (logs above)")
    bad = [result for result in results if result.returncode]
    if bad:
        raise BenchError(f"`labbuilder down` failed: {tail(bad[0])}")


def floor_once(client: Any, image: str, count: int, disabled: bool = False) -> tuple[float, float]:
    """`count` sealed containers; with `disabled`, Docker's networking disabled as labbuilder
    makes its nodes (no libnetwork sandbox), else plain `--network none` as the issue states it."""

    def start_one(i: int) -> None:
        client.containers.run(
            image,
            ["sleep", "infinity"],
            name=f"{FLOOR_LAB}-{i}",
            detach=True,
            network_mode="none",
            network_disabled=disabled,
            cap_add=["NET_ADMIN", "SYS_ADMIN", "NET_RAW"],
            init=True,
            labels={LABEL: FLOOR_LAB},
        )

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(start_one, range(count)))
    up = time.perf_counter() - start
    running = client.containers.list(filters={"label": f"{LABEL}={FLOOR_LAB}", "status": "running"})
    if len(running) != count:
        raise BenchError(f"container floor: {len(running)} of {count} containers running")
    return up, remove_floor(client)


FLOOR_PROGRAM = (
    """
import concurrent.futures, sys, docker
client, image, count = docker.from_env(), sys.argv[1], int(sys.argv[2])
def start_one(i):
    client.containers.run(image, ["sleep", "infinity"], name=f"{FLOOR_LAB}-{i}", detach=True, network_mode="none",
                          cap_add=["NET_ADMIN", "SYS_ADMIN", "NET_RAW"], init=True, labels={"%s": "%s"})
with concurrent.futures.ThreadPoolExecutor(%d) as pool:
    list(pool.map(start_one, range(count)))
""".replace("{FLOOR_LAB}", FLOOR_LAB)
    % (LABEL, FLOOR_LAB, THREADS)
)


def floor_process(client: Any, image: str, count: int) -> float:
    """The floor as a whole process, as labbuilder's figures are: python, the Docker SDK's import,
    `count` containers; then removed (not counted)."""
    seconds, _ = run([sys.executable, "-c", FLOOR_PROGRAM, image, str(count)], timeout=600)
    remove_floor(client)
    return seconds


def section_floor(report: Report, opts: Options, client: Any) -> None:
    from labbuilder.engine.image import image_tag

    image = image_tag()
    run([LB, "image", "build"], timeout=1800)
    sizes = {7: opts.runs, opts.workers + 1: opts.runs_big}
    for count, runs in sizes.items():
        for disabled, key in ((False, f"alt.floor{count}"), (True, f"alt.floor{count}nd")):
            ups, downs = [], []
            for i in range(runs):
                what = "networking disabled" if disabled else "--network none"
                progress(f"floor: {count} sealed containers ({what}) of {image}, {THREADS} threads, run {i + 1}/{runs}")
                up, down = floor_once(client, image, count, disabled)
                ups.append(up)
                downs.append(down)
            report.add(f"{key}.up", f"container floor: {count} containers create+start", ups)
            report.add(f"{key}.down", f"container floor: {count} containers remove", downs)
    progress(f"floor: 7 containers as a whole process (python + Docker SDK), {opts.runs} runs")
    whole = [floor_process(client, image, 7) for _ in range(opts.runs)]
    report.add("alt.floor7.process", "container floor: 7 containers, whole process", whole)


def host_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return [re.sub(r"\s+", " ", line) for line in out.splitlines()]


def link_name(line: str) -> str:
    return line.split(":")[1].strip().split("@")[0]


def ensure_mininet() -> None:
    probe = [SYSTEM_PYTHON, "-c", "import mininet.net, mininet.nodelib"]
    if subprocess.run(probe, capture_output=True).returncode == 0 and Path("/usr/sbin/brctl").exists():
        return
    progress("mininet: not importable by /usr/bin/python3: apt-get install -y mininet bridge-utils")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "mininet", "bridge-utils"]
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env)
        result = subprocess.run(install, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise BenchError(f"apt-get install mininet bridge-utils failed: {result.stderr.strip()[-300:]}")
    if subprocess.run(probe, capture_output=True).returncode != 0:
        raise BenchError("mininet installed but not importable by /usr/bin/python3")


def section_mininet(report: Report, opts: Options) -> None:
    ensure_mininet()
    host_netns = os.readlink("/proc/self/ns/net")
    for hosts in dict.fromkeys((7, opts.pods)):
        before = host_links()
        progress(f"mininet: {hosts} hosts on one LinuxBridge, no controller, in a fresh network namespace")
        cmd = [
            *("unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"),
            *("--propagation", "private", "--", SYSTEM_PYTHON, str(MININET_PART), str(hosts), host_netns),
        ]
        try:
            _, result = run(cmd, check=False, timeout=opts.mininet_timeout)
        finally:
            after = host_links()
            added = sorted({link_name(line) for line in after} - {link_name(line) for line in before})
            removed = sorted({link_name(line) for line in before} - {link_name(line) for line in after})
            ours = [name for name in added if MININET_NAMES.match(name)]
            if before == after:
                verdict = "unchanged"
            elif not added and not removed:
                verdict = "same links (only their state lines changed)"
            else:
                verdict = f"links added {added or '-'}, removed {removed or '-'} (other Docker users?)"
            message = f"host `ip -o link` before/after Mininet {hosts}: {verdict}"
            report.notes.append(message)
            progress(f"  {message}")
            if ours:
                report.errors.append(f"SAFETY: Mininet-like links appeared in the host namespace: {ours}")
        if result.returncode != 0:
            raise BenchError(f"mininet_part.py {hosts} exited {result.returncode}: {tail(result)}")
        data = json.loads(result.stdout.strip().splitlines()[-1])
        warnings = sorted({line.strip() for line in result.stderr.splitlines() if line.strip()})
        report.add(f"alt.mininet{hosts}.up", f"Mininet {hosts} hosts: build+start", data["up"])
        report.add(f"alt.mininet{hosts}.down", f"Mininet {hosts} hosts: stop", data["down"])
        for note in [*data["notes"], *warnings]:
            note = f"mininet {hosts}: {note}" if note.startswith(("bridge s1", "after stop")) else f"mininet: {note}"
            if note not in report.notes:
                report.notes.append(note)


# ---------------------------------------------------------------- the final tables


def print_report(report: Report, opts: Options, header: list[str]) -> None:
    out = sys.stdout
    print("\n".join(header), file=out)
    # The lower floor: containers made as labbuilder makes its nodes (networking disabled)
    floor_up = report.get(f"alt.floor{opts.workers + 1}nd.up") or report.get(f"alt.floor{opts.workers + 1}.up")
    floor_label = f"floor({opts.workers + 1} containers)"

    def cost_row(up_key: str, label: str, target: float | None) -> tuple[str, ...] | None:
        """(up - the container floor of the same node count) / pods: what each pod costs beyond the containers."""
        up = report.get(up_key)
        if up is None or floor_up is None:
            return None
        cost = (up - floor_up) / opts.pods * 1000
        verdict = "(info)" if target is None else ("met" if cost <= target else "MISSED")
        wanted = f"<= {fmt(target, 'ms')}" if target else "-"
        return (
            f"{label}: cost per pod beyond {floor_label}",
            fmt(cost, "ms"),
            wanted,
            verdict,
            f"({fmt(up, 's')} - {fmt(floor_up, 's')}) / {opts.pods}",
        )

    costs = {
        "big.down": ("big.up", "  big lab", 10.0),
        "big_nosvc.down": ("big_nosvc.up", "  without the service", None),
    }
    rows = []
    for key, figure in report.figures.items():
        if key.startswith("alt."):
            continue  # the alternatives: in the second table
        spread = ""
        if len(figure.samples) > 1:
            low, high = fmt(min(figure.samples), figure.unit), fmt(max(figure.samples), figure.unit)
            spread = f"{len(figure.samples)} runs, {low}..{high}"
        if figure.target is None:
            rows.append((figure.label, fmt(figure.value, figure.unit), "-", "(info)", spread))
        else:
            verdict = "met" if figure.value <= figure.target else "MISSED"
            rows.append(
                (figure.label, fmt(figure.value, figure.unit), f"<= {fmt(figure.target, figure.unit)}", verdict, spread)
            )
        if key in costs and (row := cost_row(*costs[key])):
            rows.append(row)
    for label, measured, wanted, met in report.checks:
        rows.append((label, measured, wanted, "met" if met else "MISSED", ""))
    print("\nlabbuilder: figures and targets (whole-process times, median of the runs)", file=out)
    print(table(("figure", "measured", "target", "met?", "runs"), rows), file=out)
    if not opts.issue_size:
        print(
            f"note: the big-lab targets are stated for {ISSUE_WORKERS}x{ISSUE_PODS_PER_WORKER} pods and the parallel "
            f"target for {ISSUE_PARALLEL} labs; this run: {opts.workers}x{opts.pods_per_worker} and {opts.parallel}.",
            file=out,
        )

    size = opts.pods
    floor = f"floor: {opts.workers + 1} containers"
    pairs = [
        ("KTHW up", "kthw.up", "render script (sh)", "alt.kthw.render.up"),
        ("KTHW down", "kthw.down", "down of the render-built lab", "alt.kthw.render.down"),
        ("KTHW up", "kthw.up", "Mininet 7 hosts build+start", "alt.mininet7.up"),
        ("KTHW down", "kthw.down", "Mininet 7 hosts stop", "alt.mininet7.down"),
        ("KTHW up", "kthw.up", "floor: 7 containers start", "alt.floor7.up"),
        ("KTHW up", "kthw.up", "floor: 7, networking disabled", "alt.floor7nd.up"),
        ("KTHW up", "kthw.up", "floor: 7, whole process (+python, SDK)", "alt.floor7.process"),
        ("KTHW down", "kthw.down", "floor: 7 containers remove", "alt.floor7.down"),
        ("KTHW down", "kthw.down", "floor: 7, networking disabled, remove", "alt.floor7nd.down"),
        (f"big up ({size} pods)", "big.up", "render script (sh)", "alt.big.render.up"),
        (f"big down ({size} pods)", "big.down", "down of the render-built lab", "alt.big.render.down"),
        (f"big up ({size} pods)", "big.up", f"Mininet {size} hosts build+start", f"alt.mininet{size}.up"),
        (f"big down ({size} pods)", "big.down", f"Mininet {size} hosts stop", f"alt.mininet{size}.down"),
        (f"big up ({size} pods)", "big.up", f"{floor} start", f"alt.floor{opts.workers + 1}.up"),
        (f"big up ({size} pods)", "big.up", f"{floor}, networking disabled", f"alt.floor{opts.workers + 1}nd.up"),
        (f"big down ({size} pods)", "big.down", f"{floor} remove", f"alt.floor{opts.workers + 1}.down"),
        (
            f"big down ({size} pods)",
            "big.down",
            f"{floor}, net. disabled, remove",
            f"alt.floor{opts.workers + 1}nd.down",
        ),
        ("big up, no service", "big_nosvc.up", f"Mininet {size} hosts build+start", f"alt.mininet{size}.up"),
        ("big up, no service", "big_nosvc.up", f"{floor} start", f"alt.floor{opts.workers + 1}.up"),
    ]
    rows = []
    for lb_label, lb_key, alt_label, alt_key in pairs:
        mine, theirs = report.get(lb_key), report.get(alt_key)
        if mine is None and theirs is None:
            continue
        ratio = f"{mine / theirs:.2f}" if mine is not None and theirs else "-"
        rows.append((lb_label, fmt(mine, "s"), alt_label, fmt(theirs, "s"), ratio))
    print(
        "\nlabbuilder against the alternatives (ratio = labbuilder / alternative; < 1: labbuilder is faster)", file=out
    )
    print(
        table(("labbuilder", "measured", "alternative", "measured", "ratio"), rows) if rows else "(none measured)",
        file=out,
    )
    if report.notes:
        print("\nnotes:", file=out)
        for note in report.notes:
            print(f"  - {note}", file=out)
    if report.errors:
        print("\nERRORS:", file=out)
        for error in report.errors:
            print(f"  - {error}", file=out)


def output_of(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()


def compile_bytecode() -> str:
    """Byte-compile labbuilder, as `pip install` does: a checkout run with PYTHONDONTWRITEBYTECODE
    set (CI, some shells) would otherwise compile every module again in each timed command."""
    import labbuilder

    package = Path(labbuilder.__file__).resolve().parent
    run([sys.executable, "-m", "compileall", "-q", str(package)])
    return f"bytecode: compiled ({package}); PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}"


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f} (nproc {os.cpu_count()})"


def host_header(client: Any) -> list[str]:
    bytecode = compile_bytecode()
    version = output_of(LB, "--version")
    commit = output_of("git", "rev-parse", "--short", "HEAD")
    dirty = output_of("git", "status", "--porcelain", "--untracked-files=no")
    docker_version = client.version().get("Version", "?")
    return [
        "bench_scale: Speed at scale",
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"kernel: {platform.release()}   nproc: {os.cpu_count()}   docker server: {docker_version}",
        f"{version} ({LB}), commit {commit}{' + local changes' if dirty else ''}",
        bytecode,
        f"at the start: {load_line()}",
    ]


@contextlib.contextmanager
def section(report: Report, client: Any, name: str) -> Iterator[None]:
    start = time.perf_counter()
    progress(f"=== section {name}")
    try:
        yield
    except Exception as error:  # BenchError, or a Docker API error: record it, clean up, go on
        text = str(error) if isinstance(error, BenchError) else f"{type(error).__name__}: {error}"
        report.errors.append(f"{name}: {text}")
        progress(f"ERROR in {name}: {text}")
        cleanup(client, f"after the error in {name}")
    progress(f"=== section {name} done in {time.perf_counter() - start:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: 5 workers x 4 pods, 3 parallel labs")
    parser.add_argument("--runs", type=int, default=3, help="runs per small figure (median; default 3)")
    parser.add_argument("--runs-big", type=int, default=1, help="runs per big-lab figure (default 1)")
    parser.add_argument("--workers", type=int, help=f"workers in the big lab (default {ISSUE_WORKERS}; --quick 5)")
    parser.add_argument(
        "--pods-per-worker", type=int, help=f"pods per worker (default {ISSUE_PODS_PER_WORKER}; --quick 4)"
    )
    parser.add_argument(
        "--parallel-labs", type=int, help=f"KTHW labs started at once (default {ISSUE_PARALLEL}; --quick 3)"
    )
    parser.add_argument("--skip-mininet", action="store_true", help="leave out the Mininet comparison")
    parser.add_argument("--skip-render-big", action="store_true", help="leave out the render script at the big size")
    parser.add_argument("--render-timeout", type=float, default=600, help="seconds for the big render script (600)")
    parser.add_argument("--mininet-timeout", type=float, default=1800, help="seconds per Mininet run (1800)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this section (repeatable)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (Docker, nsenter, unshare)")
    workers = args.workers or (5 if args.quick else ISSUE_WORKERS)
    pods_per_worker = args.pods_per_worker or (4 if args.quick else ISSUE_PODS_PER_WORKER)
    if not 1 <= pods_per_worker <= 250 or not 1 <= workers <= 250:
        parser.error("--workers and --pods-per-worker must be 1..250 (a /22 node network, /24 podCIDRs)")
    sections = args.only or [s for s in SECTIONS if not (s == "mininet" and args.skip_mininet)]

    try:
        client = docker_client()
        client.ping()
    except Exception as error:
        print(f"bench_scale: no Docker engine to talk to: {error}", file=sys.stderr)
        return 1
    report = Report()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        opts = Options(
            runs=args.runs,
            runs_big=args.runs_big,
            workers=workers,
            pods_per_worker=pods_per_worker,
            parallel=args.parallel_labs or (3 if args.quick else ISSUE_PARALLEL),
            skip_render_big=args.skip_render_big,
            render_timeout=args.render_timeout,
            mininet_timeout=args.mininet_timeout,
            tmp=Path(tmp),
        )
        header = host_header(client)
        interrupted = False
        progress(
            f"sections: {', '.join(sections)}; runs {opts.runs} (big lab {opts.runs_big}); "
            f"big lab {workers}x{pods_per_worker}; {opts.parallel} labs at once"
        )
        try:
            cleanup(client, "leftovers of an earlier run")
            for name in sections:
                with section(report, client, name):
                    if name == "cli":
                        section_cli(report, opts)
                    elif name == "kthw":
                        section_kthw(report, opts)
                    elif name == "big":
                        section_big(report, opts)
                    elif name == "parallel":
                        section_parallel(report, opts)
                    elif name == "floor":
                        section_floor(report, opts, client)
                    elif name == "mininet":
                        section_mininet(report, opts)
        except KeyboardInterrupt:
            progress("interrupted: cleaning up")
            report.errors.append("interrupted")
            interrupted = True
        finally:
            try:
                cleanup(client, "end of the run")
            except BenchError as error:
                report.errors.append(str(error))
        header.append(f"at the end: {load_line()}")
        print_report(report, opts, header)
    return 130 if interrupted else 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
