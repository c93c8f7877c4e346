"""The helper container's protocol as pure functions: one JSON request in, one JSON answer out;
operations survive the trip exactly; failures come back as they were raised; and the payload
put into a helper runs with nothing but the standard library and what it ships."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import docker.errors
import pytest

from labbuilder.compile.ops import Address, Bridge, Fdb, Hairpin, LinkUp, Master, Neighbour, Ns, Route, Veth, Vxlan
from labbuilder.engine import helper
from labbuilder.engine.hostexec import (
    ARG_LIMIT,
    HELPER_ROOT,
    HelperExec,
    LocalExec,
    helper_command,
    helper_payload,
    step_namespaces,
)
from labbuilder.engine.netlink import NETLINK_OPS, RestoreLinkLocal
from labbuilder.errors import LabError

POD = Ns("worker-0", "cni-0b2e886b-5a09-49f3-9754-e2e15a1853fd")
NODE = Ns("worker-0")
STEPS = [
    Veth(NODE, "veth94702c71", POD, "eth0", mac="0a:58:0a:c8:00:02", peer_mac=None, mtu=1450),
    Bridge(NODE, "cnio0", mac="0a:58:0a:c8:00:01"),
    Vxlan(NODE, "flannel.1", vni=1, local="10.240.0.20", port=8472, dev="eth0", mtu=1450),
    Master(NODE, "veth94702c71", "cnio0"),
    Hairpin(NODE, "veth94702c71"),
    LinkUp(POD, "eth0"),
    Address(POD, "eth0", "10.200.0.2/24"),
    Route(POD, "default", via="10.200.0.1", dev="eth0", onlink=True),
    Route(NODE, "10.200.0.0/24", dev="cnio0", scope="link", src="10.200.0.1", proto="kernel"),
    Neighbour(NODE, "10.200.1.0", "0a:58:0a:c8:01:00", "flannel.1"),
    Fdb(NODE, "0a:58:0a:c8:01:00", "flannel.1", "10.240.0.21"),
    RestoreLinkLocal(POD),
]


def test_every_netlink_step_survives_the_trip():
    assert {type(s) for s in STEPS} == {*NETLINK_OPS, RestoreLinkLocal}
    for step in STEPS:
        wire = json.loads(json.dumps(helper.encode_step(step)))
        assert helper.decode_step(wire) == step


def test_a_netlink_request_names_every_namespace_it_opens():
    paths = {ns: f"/proc/4242/root/run/netns/{ns.netns}" if ns.netns else "/proc/4242/ns/net" for ns in [NODE, POD]}
    assert step_namespaces(STEPS[:1]) == {NODE, POD}  # a veth opens its peer's namespace too
    work = json.loads(helper.netlink_request(STEPS, paths))
    assert [helper.decode_step(s) for s in work["netlink"]] == STEPS
    assert {Ns(c, n): p for c, n, p in work["paths"]} == paths


def test_a_run_request_carries_binary_stdin_and_answers_status_and_output():
    seen = {}

    def fake(argv, stdin):
        seen["argv"], seen["stdin"] = list(argv), stdin
        return 3, "out and err"

    payload = bytes(range(256))
    request = helper.run_request(["nsenter", "-t", "42", "-n", "--", "ip", "-batch", "-"], payload)
    answer = helper.read_answer(helper.serve(request, run=fake))
    assert answer == {"code": 3, "output": "out and err"}
    assert seen == {"argv": ["nsenter", "-t", "42", "-n", "--", "ip", "-batch", "-"], "stdin": payload}
    assert json.loads(helper.run_request(["true"]))["stdin"] is None


def test_serve_runs_real_commands_like_a_local_enter():
    answer = helper.read_answer(helper.serve(helper.run_request(["sh", "-c", "cat; echo err >&2; exit 4"], b"in\n")))
    assert answer == {"code": 4, "output": "in\nerr\n"}
    assert LocalExec().run(["sh", "-c", "cat; exit 4"], b"in\n") == (4, "in\n")


def test_failures_come_back_as_they_were_raised():
    def refused(argv, stdin):
        raise LabError("worker-0: `ip link add` failed", hint="is it running?")

    with pytest.raises(LabError) as user:
        helper.read_answer(helper.serve(helper.run_request(["x"]), run=refused))
    assert str(user.value) == "worker-0: `ip link add` failed (is it running?)"
    with pytest.raises(RuntimeError, match="in the helper container: ValueError: unknown netlink step 'Reboot'"):
        helper.read_answer(helper.serve(json.dumps({"netlink": [{"op": "Reboot"}], "paths": []}).encode()))
    with pytest.raises(RuntimeError, match="unknown request"):
        helper.read_answer(helper.serve(b'{"format": "c:"}'))
    with pytest.raises(RuntimeError, match="gave no answer: python3: No module named labbuilder"):
        helper.read_answer(b"", b"python3: No module named labbuilder\n")
    unknown_path = json.loads(helper.serve(helper.netlink_request([LinkUp(NODE, "eth0")], {})))
    assert unknown_path == {"error": "the helper was not told where worker-0/- is", "hint": ""}


def test_small_requests_travel_in_argv_large_ones_in_a_file():
    request = helper.run_request(["true"])
    small = helper_command(request)
    assert small[:2] == ["sh", "-c"] and "base64 -d" in small[2] and base64.b64decode(small[-1]) == request
    assert "python3 -S -m labbuilder.engine.helper" in small[2]
    large = helper_command(b"x" * (ARG_LIMIT + 1), "/tmp/labbuilder-request-1.json")
    assert large[2].startswith(f"PYTHONPATH={HELPER_ROOT} exec python3 -S -m labbuilder.engine.helper < ")
    assert "rm -f /tmp/labbuilder-request-1.json" in large[2]


def test_the_payload_runs_in_a_bare_python(tmp_path: Path):
    """What goes into a helper: labbuilder and pyroute2 only. `python3 -S` (no site-packages)
    from the unpacked payload must answer a request: the helper needs no docker, yaml, click."""
    with tarfile.open(fileobj=io.BytesIO(helper_payload()), mode="r:gz") as tar:
        names = tar.getnames()
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / HELPER_ROOT.lstrip("/")
    assert all(name.startswith(HELPER_ROOT.lstrip("/") + "/") for name in names)
    assert {"labbuilder", "pyroute2"} == {p.name for p in root.iterdir()}
    done = subprocess.run(
        [sys.executable, "-S", "-m", "labbuilder.engine.helper"],
        input=helper.run_request(["echo", "hello"]),
        capture_output=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=60,
    )
    assert helper.read_answer(done.stdout, done.stderr) == {"code": 0, "output": "hello\n"}
    check = "import labbuilder.engine.helper, labbuilder.engine.netlink, pyroute2, sys, json\n"
    check += "print(json.dumps(list(sys.modules)))"
    modules = subprocess.run(
        [sys.executable, "-S", "-c", check],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root)},
        cwd=tmp_path,
        timeout=60,
    )
    assert modules.returncode == 0, modules.stderr
    assert not {"docker", "yaml", "click", "requests", "jsonschema"} & set(json.loads(modules.stdout))


class FakeContainer:
    """A helper that answers with the real `serve`, or is gone (409) as a helper past its TTL is."""

    def __init__(self, gone: bool = False):
        self.gone = gone
        self.calls = 0
        self.removed = False

    def remove(self, force: bool) -> None:
        self.removed = force

    def exec_run(self, argv, demux):
        self.calls += 1
        if self.gone:
            conflict = SimpleNamespace(status_code=409, reason="Conflict", url="/exec")
            raise docker.errors.APIError("container is not running", response=conflict)  # type: ignore[arg-type]
        request = base64.b64decode(argv[-1])
        return 0, (helper.serve(request), b"")


def test_a_helper_that_went_away_is_replaced_once(monkeypatch):
    started = [FakeContainer(gone=True), FakeContainer()]
    remote = HelperExec(engine=SimpleNamespace(name="second"))  # type: ignore[arg-type]
    monkeypatch.setattr(remote, "_start", lambda: started[len([c for c in started if c.calls])])
    monkeypatch.setattr("atexit.register", lambda f: None)
    assert remote.run(["echo", "again"]) == (0, "again\n")
    assert [c.calls for c in started] == [1, 1]
    assert [c.removed for c in started] == [True, False]  # the gone one is not left behind
    assert remote.run(["true"]) == (0, "")  # the new helper stays
    assert [c.calls for c in started] == [1, 2]
