"""The reachability matrix measured with packets: from each pod's namespace to every other pod.

One short process per source pod runs all its probes at once (a TCP connect with `nc -z`, or a
UDP datagram the pod server answers), each bounded by PROBE_TIMEOUT; the sources run in
parallel. What answers is `.`, what does not is `X` — the same truth table the policies imply
(compile/netpol/semantics.py) and the e2e suite prints.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from labbuilder.compile.netpol.semantics import expected_matrix
from labbuilder.spec import truthtable
from labbuilder.spec.model import Lab, MatrixCheck, Pod, Protocol
from labbuilder.spec.refs import Place, pod_place
from labbuilder.spec.truthtable import Group, TruthTable, matrix_pods, namespace_of

# (place, argv) -> (exit code, output), as observe.checks runs probes
Exec = Callable[[Place, tuple[str, ...]], tuple[int, str]]

PROBE_TIMEOUT = 1  # seconds: a rejected connect fails at once, a dropped one waits this long
SOURCES_AT_ONCE = 8
REACHED, BLOCKED = "ok", "no"


def probe_script(targets: dict[str, Pod], port: int, protocol: Protocol) -> str:
    """A shell script that probes every target at once and prints `NAME ok|no` for each."""
    lines = []
    for name, pod in targets.items():
        if protocol == "TCP":
            probe = f"nc -z -w {PROBE_TIMEOUT} {pod.ip} {port} >/dev/null 2>&1"
        else:  # UDP has no handshake: reached means the pod server answered the datagram
            probe = f'[ -n "$(echo probe | nc -u -w {PROBE_TIMEOUT} {pod.ip} {port} 2>/dev/null | head -c 64)" ]'
        quoted = shlex.quote(name)
        lines.append(f"( {probe} && echo {quoted} {REACHED} || echo {quoted} {BLOCKED} ) &")
    return "\n".join([*lines, "wait"]) + "\n"


def parse_probes(output: str) -> dict[str, bool]:
    found = {}
    for line in output.splitlines():
        name, _, verdict = line.rpartition(" ")
        if verdict in (REACHED, BLOCKED):
            found[name] = verdict == REACHED
    return found


def measure(lab: Lab, port: int, protocol: Protocol, exec_in: Exec, groups: Group = "pods") -> TruthTable:
    """Probe every serving pod from every serving pod; a probe that printed nothing is `?`."""
    pods = matrix_pods(lab, port, protocol)
    script = probe_script(pods, port, protocol)

    def from_source(name: str) -> dict[str, bool]:
        _, output = exec_in(pod_place(pods[name]), ("sh", "-c", script))
        return parse_probes(output)

    names = list(pods)
    with ThreadPoolExecutor(max_workers=SOURCES_AT_ONCE) as pool:
        results = dict(zip(names, pool.map(from_source, names), strict=True))
    table = TruthTable.build(names, names, lambda f, t: results[f].get(t))
    return table.grouped(namespace_of(names)) if groups == "namespaces" else table


def expected(lab: Lab, matrix: MatrixCheck) -> TruthTable:
    """The table a matrix check wants: the one it spells out, or the one the policies imply."""
    if matrix.expect is not None:
        return truthtable.parse(matrix.expect)
    return expected_matrix(lab, matrix.port, matrix.protocol, matrix.group)


def judge(measured: TruthTable, wanted: TruthTable) -> tuple[bool, str]:
    wrong = measured.differences(wanted)
    if not wrong:
        return True, f"all {len(measured.froms)} by {len(measured.tos)} cells as expected"
    cells = "; ".join(f"{f} → {t}: {got}, expected {want}" for f, t, got, want in wrong[:6])
    more = f" and {len(wrong) - 6} more" if len(wrong) > 6 else ""
    return False, f"{len(wrong)} cell(s) differ: {cells}{more}"
