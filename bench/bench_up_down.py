"""Time `up` and `down` of a lab over several runs and print min/median (seconds).

    .venv/bin/python bench/bench_up_down.py            # the KTHW lab, 5 runs
    .venv/bin/python bench/bench_up_down.py labs/kthw.yaml --runs 3

The node image is built (or found) once before timing. Uses a lab name of its own so a lab
you have up is left alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

from labbuilder.engine import image
from labbuilder.engine.runtime import Engine
from labbuilder.lifecycle import lab, up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lab_file", nargs="?", default="labs/kthw.yaml")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--name", default="bench-lab")
    args = parser.parse_args()
    engine = Engine()
    image.ensure_image(engine.client)
    lab.down(args.name, engine)
    ups, downs = [], []
    for run in range(args.runs):
        start = time.perf_counter()
        result = up.up(args.lab_file, args.name, engine=engine)
        ups.append(time.perf_counter() - start)
        start = time.perf_counter()
        lab.down(args.name, engine)
        downs.append(time.perf_counter() - start)
        print(
            f"run {run + 1}: up {ups[-1]:.2f} s, down {downs[-1]:.2f} s "
            f"({len(result.lab.nodes)} nodes, {len(result.lab.pods)} pods)"
        )
    for what, times in (("up", ups), ("down", downs)):
        print(f"{what:5} min {min(times):.2f} s  median {statistics.median(times):.2f} s  ({len(times)} runs)")


if __name__ == "__main__":
    main()
