"""A classroom's fleet: N copies of labs/kthw.yaml on one engine, then on two, timed as a user sees it.

    .venv/bin/python bench/bench_fleet.py                       # 20 KTHW labs: one engine, then two
    .venv/bin/python bench/bench_fleet.py --count 10 --only one
    .venv/bin/python bench/bench_fleet.py --second labbuilder-second --parallel 4

Per layout (one engine: `local`; two: `local,<--second>`), each a whole `labbuilder fleet …`
process timed around it (time.perf_counter):

  up      fleet up labs/kthw.yaml --count N (every lab answers when it returns)
  check   fleet check -o json (every lab's 11 checks; the count of labs passing is printed)
  reset   fleet reset with every lab intact, then after one sabotage per lab (the VPC route to
          worker-1's pods deleted in each router), and fleet check again
  down    fleet down (then both engines are checked to hold none of the fleet's containers)

The second engine is `scripts/second-engine.sh` (a second dockerd on this machine reached over
tcp as Docker context labbuilder-second: it stands in for a second host, sharing these cores);
without it the two-engine layout is skipped with a note. Only the fleets this script names
(benchf1, benchf2) are touched, removed at the start and at the end, also on Ctrl-C. Progress
goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KTHW = ROOT / "labs" / "kthw.yaml"
LABBUILDER = [sys.executable, "-m", "labbuilder"]
SABOTAGE = ("ip", "route", "del", "10.200.1.0/24")  # in each lab's router: worker-1's pods go dark


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    line = "  ".join("-" * width for width in widths)
    out = ["  ".join(str(cell).ljust(width) for cell, width in zip(headers, widths, strict=False)), line]
    out += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(line.rstrip() for line in out)


class BenchError(Exception):
    pass


def run(*args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run([*LABBUILDER, *args], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode not in ok:
        raise BenchError(f"labbuilder {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return seconds, done


@dataclass
class Layout:
    name: str  # "one engine", "two engines"
    prefix: str
    engines: list[str]
    figures: dict[str, float] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)


def sabotage(layout: Layout) -> int:
    """One break per lab, through each engine's Docker API (`docker exec` in the router)."""
    from labbuilder.lifecycle.fleet import Fleet

    fleet = Fleet(layout.prefix, layout.engines)
    members = fleet.members()
    for m in members:
        result = fleet.engines[m.engine].lab(m.lab).exec("router", SABOTAGE)
        if result.code:
            raise BenchError(f"{m.lab}: sabotage failed: {result.output}")
    return len(members)


def leftovers(layout: Layout) -> int:
    from labbuilder.lifecycle.fleet import Fleet

    return len(Fleet(layout.prefix, layout.engines).members())


def measure(layout: Layout, count: int, parallel: int) -> None:
    where = ["--prefix", layout.prefix, "--engines", ",".join(layout.engines), "--parallel", str(parallel)]
    fleet = ["fleet"]
    progress(f"{layout.name}: fleet up --count {count} on {', '.join(layout.engines)}")
    layout.figures["up"], done = run(*fleet, "up", str(KTHW), "--count", str(count), *where)
    spread = [line for line in done.stdout.splitlines() if line.startswith(f"fleet {layout.prefix}:")]
    layout.facts["spread"] = spread[-1].split(": ", 1)[1] if spread else "?"
    progress(f"  up {layout.figures['up']:.1f} s: {layout.facts['spread']}")

    layout.figures["check"], done = run(*fleet, "check", "-o", "json", *where, ok=(0, 1))
    data = json.loads(done.stdout)
    passing = sum(lab["passed"] for lab in data["labs"])
    checks = sum(len(lab["checks"]) for lab in data["labs"])
    layout.facts["check"] = f"{passing}/{len(data['labs'])} labs pass, {checks} checks"
    progress(f"  check {layout.figures['check']:.1f} s: {layout.facts['check']}")

    layout.figures["reset intact"], _ = run(*fleet, "reset", *where)
    progress(f"  reset (intact) {layout.figures['reset intact']:.1f} s")
    broken = sabotage(layout)
    layout.figures["reset sabotaged"], done = run(*fleet, "reset", *where)
    repaired = done.stdout.count(": 1 repaired")
    layout.facts["reset sabotaged"] = f"{repaired}/{broken} labs repaired"
    _, done = run(*fleet, "check", "-o", "json", *where, ok=(0, 1))
    after = sum(lab["passed"] for lab in json.loads(done.stdout)["labs"])
    layout.facts["check after reset"] = f"{after}/{broken} labs pass"
    progress(f"  reset (sabotaged) {layout.figures['reset sabotaged']:.1f} s: {repaired} repaired, {after} pass after")

    layout.figures["down"], _ = run(*fleet, "down", *where)
    left = leftovers(layout)
    layout.facts["down"] = "nothing left" if not left else f"{left} labs LEFT"
    progress(f"  down {layout.figures['down']:.1f} s: {layout.facts['down']}")


def clean(layouts: list[Layout]) -> None:
    for layout in layouts:
        if leftovers(layout):
            progress(f"removing the leftovers of fleet {layout.prefix}")
            run("fleet", "down", "--prefix", layout.prefix, "--engines", ",".join(layout.engines), ok=(0, 1))


def second_engine_running(name: str) -> bool:
    from labbuilder.engine.runtime import Engine
    from labbuilder.errors import LabError

    try:
        Engine(name).version()
        return True
    except LabError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20, help="labs in the fleet (default 20)")
    parser.add_argument("--parallel", type=int, default=4, help="labs started at once per engine (default 4)")
    parser.add_argument("--second", default="labbuilder-second", help="the second engine's Docker context")
    parser.add_argument("--only", choices=("one", "two"), help="only one layout")
    args = parser.parse_args()

    layouts = []
    notes = []
    if args.only != "two":
        layouts.append(Layout("one engine", "benchf1", ["local"]))
    if args.only != "one":
        if second_engine_running(args.second):
            layouts.append(Layout("two engines", "benchf2", ["local", args.second]))
        else:
            notes.append(f"two engines: skipped, {args.second} does not answer (scripts/second-engine.sh start)")
    errors = []
    try:
        clean(layouts)
        for layout in layouts:
            try:
                measure(layout, args.count, args.parallel)
            except BenchError as err:
                errors.append(f"{layout.name}: {err}")
                progress(f"ERROR {err}")
    except KeyboardInterrupt:
        progress("interrupted: cleaning up")
        clean(layouts)
        sys.exit(130)
    clean(layouts)

    from labbuilder.engine.runtime import Engine

    docker = Engine("local").version()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    print(f"bench_fleet: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
          f"{memory:.0f} GiB, kernel {platform.release()}, Docker {docker}")  # fmt: skip
    print(f"fleet of {args.count} x labs/kthw.yaml (7 containers, 6 pods each), --parallel {args.parallel} per engine")
    rows = []
    for figure in ("up", "check", "reset intact", "reset sabotaged", "down"):
        row = [f"fleet {figure}"]
        for layout in layouts:
            value = layout.figures.get(figure)
            per_lab = f" ({value / args.count * 1000:.0f} ms/lab)" if value is not None else ""
            row.append(f"{value:.2f} s{per_lab}" if value is not None else "-")
        rows.append(tuple(row))
    print("\nwhole-process times, one run each")
    print(table(("figure", *(f"{lay.name}" for lay in layouts)), rows))
    print("\nwhat each run found")
    facts = ("spread", "check", "reset sabotaged", "check after reset", "down")
    found = [(fact, *(lay.facts.get(fact, "-") for lay in layouts)) for fact in facts]
    print(table(("", *(lay.name for lay in layouts)), found))
    if len(layouts) == 2:
        one, two = layouts
        ratios = [
            f"{figure} {two.figures[figure] / one.figures[figure]:.2f}"
            for figure in ("up", "check", "reset sabotaged", "down")
            if figure in one.figures and figure in two.figures
        ]
        print("\ntwo engines / one engine: " + ", ".join(ratios) + " (both engines share this machine's cores)")
    for note in notes:
        print(f"note: {note}")
    if errors:
        print("\nERRORS:")
        for error in errors:
            print(f"  - {error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
