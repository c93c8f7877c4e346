"""Fuzz `labbuilder validate`: mutate the shipped labs and count how each mutant ends.

    .venv/bin/python bench/fuzz.py                     # 10,000 mutants
    .venv/bin/python bench/fuzz.py --count 500 --seed 7

Each mutant goes through what `validate` runs (load, then build_model) and, when it is valid,
through compile_plan. It must end in `ok` or in located problems (SpecError: exit 1, every
message `file:line:col: …` on one line). A crash is any other exception; an unlocated or
multi-line message and a spec that takes longer than --max-seconds are failures too.
Exits 1 if there was any.

The mutation generator (`mutate`) is shared with tests/unit/test_fuzz.py, which runs a short,
bounded slice of it under Hypothesis on every test run.
"""

from __future__ import annotations

import argparse
import copy
import random
import signal
import sys
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
LABS = sorted((ROOT / "labs").glob("*.yaml"))

# Values that broke or could break validation: wrong types, edge numbers, odd text, odd ranges.
VALUES: list[Any] = [
    *(0, -1, 1, 2, 24, 80, 1500, 65535, 65536, 30000, 2**31, 2**63, 2**64, 10**30),
    *(80.0, 1500.0, 24.0, 2.0, 0.5, -0.0, float("inf"), float("nan"), 1e308),
    *(True, False, None, [], {}, [1, "a"], {"a": 1}, {"name": "x"}),
    *("", " ", "router", "node", "pod", "a" * 300, "wörker", "名前", "😀", "\u202e", "a\nb", "x\t", "-x-"),
    *("10.0.0.1:8a", "10.0.0.1:0", "10.0.0.1:99999", "10.0.0.1:icmp", ":icmp", "node/router", "pod/", "svc/x.y"),
    *("255.255.255.255", "255.255.255.255/32", "0.0.0.0/0", "0.0.0.0", "1.2.3.4", "999.1.1.1", "10.240.0.1"),
    *("10.32.0.0/32", "10.32.0.0/31", "10.32.0.0/30", "10.32.0.0/29", "100.64.0.0/20", "10.240.0.0/33"),
    *("10.200.0.0/24", "10.200.0.0/16", "10.240.0.0/24", "10.32.0.10", "10.32.0.1", "10.0.0.0/8", "1.2.3.4/0"),
    *("controller", "worker", "NodePort", "ClusterIP", "ClientIP", "TCP", "udp", "icmp", "ptp", "vxlan", "2018"),
]

# YAML text spliced in where a value was: tags, odd scalars, aliases, nesting, huge numbers.
RAW: list[str] = [
    *("!!binary AAAA", "!!int x", "!!int 80", "!!float y", "!!float 80", "!!str 80", "!!bool maybe", "!!null x"),
    *("!!timestamp 2020-13-45", "!!timestamp 2020-01-01", "!!python/object:os.system x", "!custom x", "!<tag:x> y"),
    *("!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1]", "!!seq x", "!!map x", "!!str [a]", "! 12"),
    *("9999-99-99", "2024-01-01", "2001-12-14t21:59:43.10-05:00", "2002-12-14 21:59:43 +5", "12:30:00"),
    *("1" * 5000, "-" + "9" * 4400, "0x" + "f" * 200, "1:2:3:4:5", "0b1010", "0o777", "017", "1_000", "+80"),
    *(".inf", "-.inf", ".nan", "1e999", "80.0", "24.0", "1500.0", "2.0", "=", "<<", "~", "null", "yes", "on"),
    *("*undefined", "&a [*a]", "&b {b: *b}", "&c x", "{[a]: 1}", "{? [a, b] : c}", "{{a: 1}: 2}", "{a: 1, a: 2}"),
    *('"\\ud800"', '"\\0"', '"\\e[31m"', '"a\\nb"', '"\\u2028"', "'a''b'", '"\\x85"', '"\\U0001F600"'),
    *("[" * 70 + "]" * 70, "[" * 2000 + "]" * 2000, "{a: " * 100 + "b" + "}" * 100, "- - - - - - - x"),
]

# Bytes spliced into the text: NUL, invalid UTF-8, a surrogate in UTF-8, BOMs, controls, separators.
BYTES: list[bytes] = [
    *(b"\x00", b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xf4\x90\x80\x80", b"\x80"),
    *(b"\x01", b"\x1b", b"\x7f", b"\t", b"\r", b"\r\n", b"\xc2\x85", b"\xe2\x80\xa8", b"\xef\xbf\xbe", b"\x0b"),
    *(b":", b": ", b"- ", b"&x ", b"*x", b"!!str ", b"!!binary ", b"? ", b"{", b"}", b"[", b"]", b"#", b"|", b">"),
    *(b"'", b'"', b"%YAML 1.1\n", b"%TAG ! tag:x,2000:\n", b"---\n", b"...\n", b"\n", b"  ", b",", b"@", b"`"),
]


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The billion laughs in YAML: `width ** levels` strings from a few hundred bytes."""
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\nname: bomb\nnodes: [{name: a}]\n"


def _parse(text: str) -> Any:
    """A shipped lab as labbuilder reads it: `on:` is a key named "on", where yaml.safe_load makes it True."""
    from labbuilder.spec.load import load_text

    return copy.deepcopy(load_text(text, "base.yaml", base=ROOT / "labs").data)  # manifests beside the shipped labs


def _paths(data: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the parsed lab that holds a value (a mapping key or a list index)."""
    found = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found.append((*here, key))
        found.extend(_paths(value, (*here, key)))
    return found


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


# Values of the same shape as the lab's own, so the mutant passes the schema and reaches resolve.
SIMILAR: dict[str, list[Any]] = {
    "cidr": [v for v in VALUES if isinstance(v, str) and "/" in v and v[0].isdigit()],
    "ip": [v for v in VALUES if isinstance(v, str) and v.count(".") == 3 and "/" not in v and ":" not in v],
    "int": [v for v in VALUES if isinstance(v, int) and not isinstance(v, bool)],
    "name": ["router", "a", "worker-0", "controller-0", "nginx", "kubernetes", "kube-dns", "default", "kube-system"],
    "ref": ["router", "node/router", "pod/nginx", "service/nginx", "10.0.0.1:8a", "10.240.0.20:0", "x:icmp"],
}


def shape(value: Any) -> str:
    """What a value looks like, so a replacement can look the same."""
    if isinstance(value, bool) or value is None:
        return "flag"
    if isinstance(value, int | float):
        return "int"
    if not isinstance(value, str):
        return "collection"
    if " " in value:
        return "text"
    if value[:1].isdigit() and value.count(".") == 3:
        return "cidr" if "/" in value else "ip"
    return "ref" if "/" in value or ":" in value else "name"


def similar(value: Any) -> list[Any]:
    """Replacements that keep the value's shape: another address for an address, another number for a number."""
    if shape(value) == "flag":
        return [not value]
    return SIMILAR.get(shape(value), VALUES)


def _leaves(data: Any) -> list[Any]:
    if isinstance(data, dict):
        return [leaf for v in data.values() for leaf in _leaves(v)]
    if isinstance(data, list):
        return [leaf for v in data for leaf in _leaves(v)]
    return [data]


def structural(rng: random.Random, text: str) -> str:
    """Parse the lab, change one place (or a few), dump it again; raw YAML goes in through placeholders."""
    data = _parse(text)
    raw: dict[str, str] = {}
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = rng.choice(paths)
        parent, key = _parent(data, path), path[-1]
        op = rng.randrange(11)
        if op >= 9:
            parent[key] = copy.deepcopy(rng.choice(similar(parent[key])))
        elif op == 0:
            parent[key] = copy.deepcopy(rng.choice(VALUES))
        elif op == 1:
            placeholder = f"__raw{len(raw)}__"
            raw[placeholder] = rng.choice(RAW)
            parent[key] = placeholder
        elif op == 2:
            del parent[key]
        elif op == 3 and isinstance(parent, dict):  # an unknown key: a typo of a sibling, or a new one
            name = str(key)
            parent[rng.choice([name[:-1], name + "s", name.upper(), "colour", "<<", "1"])] = parent[key]
        elif op == 3:
            parent.append(copy.deepcopy(parent[key]))  # a duplicate item: two nodes with one name
        elif op == 4:  # another value of the same lab: a node's name or address given twice
            parent[key] = copy.deepcopy(rng.choice(_leaves(data)))
        elif op == 5:
            value = parent[key]
            for _ in range(rng.choice((2, 10, 70, 300))):
                value = [value]
            parent[key] = value
        elif op == 6 and isinstance(parent[key], int) and not isinstance(parent[key], bool):
            parent[key] = float(parent[key])  # replicas: 2.0, mtu: 1500.0
        elif op == 7 and isinstance(parent[key], list):
            parent[key] = parent[key] * rng.choice((2, 50))
        else:
            parent[key] = {"name": rng.choice(VALUES)} if rng.random() < 0.5 else [rng.choice(VALUES)]
    out = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000)
    for placeholder, snippet in raw.items():
        out = out.replace(placeholder, snippet)
    return out


def semantic(rng: random.Random, text: str) -> str:
    """Changes the schema accepts, for the resolver: another address, range, number or name; an item twice."""
    data = _parse(text)
    for _ in range(rng.choice((1, 1, 2, 3))):
        path = rng.choice(_paths(data))
        parent, key = _parent(data, path), path[-1]
        value = parent[key]
        if isinstance(value, list) and value and rng.random() < 0.3:
            value.append(copy.deepcopy(rng.choice(value)))  # two nodes, workloads, services or ports alike
        elif isinstance(value, dict) and value and rng.random() < 0.2:
            del value[rng.choice(list(value))]  # an optional key left out: its default applies
        elif not isinstance(value, (dict, list)):
            same_kind = [leaf for leaf in _leaves(data) if shape(leaf) == shape(value)]
            parent[key] = copy.deepcopy(rng.choice(similar(value) + same_kind))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000)


def textual(rng: random.Random, data: bytes) -> bytes:
    """Byte-level damage: flips, insertions, deletions, truncation, moved lines, numbers made floats."""
    op = rng.randrange(8)
    at = rng.randrange(len(data) + 1)
    if op == 0 and data:
        at = min(at, len(data) - 1)
        return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    if op == 1:
        return data[:at] + rng.choice(BYTES) + data[at:]
    if op == 2:
        return data[:at] + data[at + rng.randint(1, 40) :]
    if op == 3:
        return data[:at]
    lines = data.split(b"\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    if op == 4:
        lines.insert(j, lines[i])  # duplicate keys, duplicate items
    elif op == 5:
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 6:
        lines[i] = rng.choice((b"  ", b"\t", b"")) + lines[i][rng.choice((0, 0, 2)) :]
    else:
        words = lines[i].split(b" ")
        k = rng.randrange(len(words))
        if words[k][:1].isdigit():
            words[k] = rng.choice((words[k] + b".0", b"9" * 4400, b"0x" + words[k], words[k] + b"e3"))
        else:
            words[k] = rng.choice(VALUES_BYTES)
        lines[i] = b" ".join(words)
    return b"\n".join(lines)


VALUES_BYTES = [str(v).encode() for v in VALUES if isinstance(v, str) and "\n" not in v]


def bombs(rng: random.Random, data: bytes) -> bytes:
    """Inputs built to exhaust: alias bombs, deep nesting, self-reference, huge files and numbers."""
    choice = rng.randrange(7)
    if choice == 0:
        return alias_bomb(rng.randint(3, 12), rng.randint(2, 12)).encode()
    if choice == 1:
        depth = rng.choice((65, 1000, 100_000))
        return b"name: deep\nnodes: " + b"[" * depth + b"]" * depth + b"\n"
    if choice == 2:
        return b"name: deep\nnodes:\n" + b"".join(b"  " * i + b"- \n" for i in range(rng.choice((70, 500))))
    if choice == 3:
        return data + b"\nextra: &s [*s, *s]\n"
    if choice == 4:
        return data + b"\n# padding\n" * rng.choice((10, 120_000))  # past the 1 MiB cap
    if choice == 5:
        return data.replace(b"24", b"9" * rng.choice((4300, 4301, 100_000)), 1)
    return b"name: keys\nnodes: [{name: a}]\n" + b"".join(b"k%d: %d\n" % (i, i) for i in range(rng.choice((10, 5000))))


MUTATORS: list[tuple[str, Callable[[random.Random, bytes], bytes]]] = [
    ("structural", lambda rng, data: structural(rng, data.decode()).encode()),
    ("semantic", lambda rng, data: semantic(rng, data.decode()).encode()),
    ("textual", textual),
    ("bombs", bombs),
]


def mutate(rng: random.Random, data: bytes, kind: str = "") -> tuple[str, bytes]:
    """One mutant of a lab file (`kind`, else any): a structural or semantic change, byte damage, or a bomb."""
    if not kind:
        kind = rng.choices([name for name, _ in MUTATORS], weights=(5, 4, 5, 1))[0]
    mutator = dict(MUTATORS)[kind]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # PyYAML's dumper recurses on the deep lists made here; the loader must not
    try:
        data = mutator(rng, data)
    finally:
        sys.setrecursionlimit(limit)
    if kind == "textual":
        for _ in range(rng.choice((0, 0, 1, 2))):
            data = textual(rng, data)
    return kind, data


# -- running --------------------------------------------------------------------------------------


class Hang(BaseException):
    """A spec still running after --timeout seconds."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ok", "user error", "crash", "unlocated"
    detail: str = ""  # a crash's cause (type and innermost frame), the first bad message, or a user error's stage
    seconds: float = 0.0
    example: str = ""  # for a crash: its message


def run_one(data: bytes, file: str = "fuzz.yaml", timeout: float = 0) -> Outcome:
    """Load, resolve and plan one mutant as `validate` and `plan` would; a hang past `timeout` is a crash."""
    from labbuilder.compile.plan import compile_plan
    from labbuilder.errors import LabError, SpecError
    from labbuilder.spec.load import load_bytes
    from labbuilder.spec.resolve import build_model

    start = time.perf_counter()
    if timeout:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    stage = "load"
    try:
        spec = load_bytes(data, file, base=ROOT / "labs")  # a mutant of a shipped lab reads its manifests there
        stage = "resolve"
        compile_plan(build_model(spec).lab)
        outcome = Outcome("ok")
    except SpecError as err:
        bad = [str(p) for p in err.problems if not located(str(p), file)]
        unlocated = (bad or ["SpecError without problems"])[0][:150]
        outcome = Outcome("unlocated", unlocated) if bad or not err.problems else Outcome("user error", stage)
    except LabError as err:
        outcome = Outcome("unlocated", f"LabError without a location: {err}")
    except Exception as err:  # what the CLI reports as a bug, exit 70
        outcome = Outcome("crash", cause(err), example=str(err).splitlines()[0][:120] if str(err) else "")
    except Hang:
        outcome = Outcome("crash", f"no answer within {timeout} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return Outcome(outcome.kind, outcome.detail, time.perf_counter() - start, outcome.example)


def located(message: str, file: str) -> bool:
    """`file:line:col: …` with line and col from 1, all on one line."""
    if "\n" in message or "\r" in message or not message.startswith(f"{file}:"):
        return False
    line, col, *_ = [*message[len(file) + 1 :].split(":", 2), "", ""]
    return line.isdigit() and col.isdigit() and int(line) > 0 and int(col) > 0


def cause(err: BaseException) -> str:
    """What tells crashes apart: the exception type and the innermost labbuilder line it passed."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if "labbuilder" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(err).__name__} at {where}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=1.0, help="a spec slower than this is a failure")
    parser.add_argument("--timeout", type=float, default=10.0, help="give up on a spec after this many seconds")
    parser.add_argument(
        "--trace-memory", action="store_true", help="also trace each spec's peak memory (about 4 times slower)"
    )
    parser.add_argument("--save", type=Path, help="write each failing mutant into this directory")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    bases = [path.read_bytes() for path in LABS]
    rng = random.Random(args.seed)
    counts: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    examples: dict[str, str] = {}
    worst, peak_bytes, slow = 0.0, 0, 0
    if args.trace_memory:
        tracemalloc.start()
    for n in range(args.count):
        kind, data = mutate(rng, rng.choice(bases))
        if args.trace_memory:
            tracemalloc.reset_peak()
        outcome = run_one(data, timeout=args.timeout)
        if args.trace_memory:
            peak_bytes = max(peak_bytes, tracemalloc.get_traced_memory()[1])
        counts[outcome.kind] += 1
        counts[f"{outcome.kind} {outcome.detail}"] += 1
        worst = max(worst, outcome.seconds)
        slow += outcome.seconds > args.max_seconds
        if outcome.kind in ("crash", "unlocated"):
            causes[f"{outcome.kind}: {outcome.detail}"] += 1
            examples.setdefault(f"{outcome.kind}: {outcome.detail}", outcome.example)
        if args.save and (outcome.kind in ("crash", "unlocated") or outcome.seconds > args.max_seconds):
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / f"{n:05d}-{kind}.yaml").write_bytes(data)
    if args.trace_memory:
        tracemalloc.stop()
    import resource

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total      {args.count}")
    print(f"ok         {counts['ok']}")
    stages = f"{counts['user error load']} in load, {counts['user error resolve']} in resolve"
    print(f"user error {counts['user error']} ({stages})")
    print(f"crashes    {counts['crash']}")
    print(f"unlocated  {counts['unlocated']}")
    print(f"slow       {slow} (over {args.max_seconds} s)")
    print(f"max time   {worst * 1000:.0f} ms")
    traced = f"{peak_bytes / 2**20:.1f} MiB traced per spec, " if args.trace_memory else ""
    print(f"max memory {traced}{rss_mib:.0f} MiB process max RSS")
    print(f"distinct causes: {len(causes)}")
    for text, number in causes.most_common(40):
        print(f"  {number:5d}  {text}" + (f" ({examples[text]})" if examples[text] else ""))
    return 1 if counts["crash"] or counts["unlocated"] or slow else 0


if __name__ == "__main__":
    sys.exit(main())
