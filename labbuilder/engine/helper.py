"""The helper's side of the host-work protocol: one JSON request in, one JSON answer out.

For an engine that is not on this host (tcp, ssh), the work that needs the engine host's
`/proc` — nsenter into a container, the host's `ip` naming a container's netns by pid, netlink
sockets opened by namespace path — runs in a short-lived helper container beside the engine
(`engine/hostexec.py` starts it). There, `python3 -S -m labbuilder.engine.helper` reads one
request on stdin and prints one answer; this module is all it runs, so it imports neither
docker nor anything outside the standard library but pyroute2 (shipped into the helper).

Requests:  {"run": [argv...], "stdin": base64 | null}
           {"netlink": [step...], "paths": [[container, netns | null, path]...]}
Answers:   {"code": int, "output": str}          the command's status and stdout+stderr
           {"repaired": [ifname...]}             the netlink steps ran
           {"error": str, "hint": str}           a LabError, said as it would be here
           {"error": str, "bug": true}           anything else (a bug): the caller re-raises it
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from labbuilder.errors import LabError

if TYPE_CHECKING:
    from labbuilder.compile.ops import Ns

RUN_TIMEOUT = 300  # seconds, as for a local nsenter


def encode_step(step: Any) -> dict[str, Any]:
    """An operation (frozen dataclass) as JSON: its class name and fields, an Ns as [container, netns]."""
    from dataclasses import fields

    from labbuilder.compile.ops import Ns

    data: dict[str, Any] = {"op": type(step).__name__}
    for f in fields(step):
        value = getattr(step, f.name)
        data[f.name] = [value.container, value.netns] if isinstance(value, Ns) else value
    return data


def decode_step(data: dict[str, Any]) -> Any:
    # Imported here: a helper answering a plain command starts without them (40 ms less).
    from labbuilder.compile.ops import Ns
    from labbuilder.engine.netlink import NETLINK_OPS, RestoreLinkLocal

    kinds: dict[str, Any] = {cls.__name__: cls for cls in (*NETLINK_OPS, RestoreLinkLocal)}
    cls = kinds.get(data.get("op", ""))
    if cls is None:
        raise ValueError(f"unknown netlink step {data.get('op')!r}")
    values: dict[str, Any] = {k: Ns(*v) if k in ("ns", "peer_ns") else v for k, v in data.items() if k != "op"}
    return cls(**values)


def run_request(argv: Sequence[str], stdin: bytes | None = None) -> bytes:
    return json.dumps({"run": list(argv), "stdin": base64.b64encode(stdin).decode() if stdin else None}).encode()


def netlink_request(steps: Sequence[Any], paths: dict[Ns, str]) -> bytes:
    return json.dumps(
        {
            "netlink": [encode_step(s) for s in steps],
            "paths": [[ns.container, ns.netns, path] for ns, path in paths.items()],
        }
    ).encode()


def run_here(argv: Sequence[str], stdin: bytes | None) -> tuple[int, str]:
    """The command here, its status and its stdout+stderr: what `LabHandle.enter` returns."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=RUN_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LabError(f"cannot run {argv[0]}: {err}") from None
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def _netlink(steps: list[Any], paths: dict[Ns, str]) -> list[str]:
    from labbuilder.engine.netlink import Netlink, run_steps

    def path(ns: Ns) -> str:
        if ns not in paths:
            raise LabError(f"the helper was not told where {ns.container}/{ns.netns or '-'} is")
        return paths[ns]

    with Netlink(path) as nl:
        return run_steps(nl, steps)


def serve(request: bytes, run: Callable[[Sequence[str], bytes | None], tuple[int, str]] = run_here) -> bytes:
    """One request, one answer; never raises (a failure is an answer too)."""
    try:
        work = json.loads(request)
        if "run" in work:
            stdin = base64.b64decode(work["stdin"]) if work.get("stdin") else None
            code, output = run(work["run"], stdin)
            answer: dict[str, Any] = {"code": code, "output": output}
        elif "netlink" in work:
            from labbuilder.compile.ops import Ns

            paths = {Ns(c, n): p for c, n, p in work.get("paths", [])}
            answer = {"repaired": _netlink([decode_step(s) for s in work["netlink"]], paths)}
        else:
            answer = {"error": f"unknown request {sorted(work)}", "bug": True}
    except LabError as err:
        answer = {"error": err.message, "hint": err.hint}
    except Exception as err:
        answer = {"error": f"{type(err).__name__}: {err}", "bug": True}
    return json.dumps(answer).encode()


def read_answer(raw: bytes, stderr: bytes = b"") -> dict[str, Any]:
    """The helper's answer, or its failure raised here as it was raised there."""
    try:
        answer = json.loads(raw)
        assert isinstance(answer, dict)
    except (ValueError, AssertionError):
        said = (stderr or raw).decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"the helper container gave no answer: {said or 'nothing'}") from None
    if "error" in answer:
        if answer.get("bug"):
            raise RuntimeError(f"in the helper container: {answer['error']}")
        raise LabError(str(answer["error"]), str(answer.get("hint") or ""))
    return answer


def main() -> None:
    sys.stdout.buffer.write(serve(sys.stdin.buffer.read()))


if __name__ == "__main__":
    main()
