"""A lab on another engine: a second dockerd on this machine (scripts/second-engine.sh), reached
over tcp with TLS through the Docker context `labbuilder-second`, so labbuilder takes it for
another host and does its host work through a helper container beside it. The lab comes up,
passes its checks, is pristine, is repaired by reset, and goes away leaving that engine empty,
this host's engine without a trace of it and this host's own namespace unchanged."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LABBUILDER, ROOT, host_state, labbuilder, sh

pytestmark = pytest.mark.docker

SECOND = "labbuilder-second"
LAB = "re-remote"
LAB_FILE = str(ROOT / "tests" / "integration" / "labs" / "remote.yaml")
SCRIPT = str(ROOT / "scripts" / "second-engine.sh")


def on_second(*argv: str, check: bool = True) -> str:
    return sh("docker", "--context", SECOND, *argv, check=check).stdout


def orphans() -> list[str]:
    """Helpers whose starting process (label `labbuilder.helper=<host>:<pid>`) has exited: what a
    command that did not remove its helper leaves. Helpers of live processes (another test
    session's `serve`, say) are theirs."""
    out = on_second(
        "ps", "-a", "--filter", "label=labbuilder.helper", "--format", '{{.Names}} {{.Label "labbuilder.helper"}}'
    )
    left = []
    for line in out.splitlines():
        name, owner = line.split()
        host, _, pid = owner.rpartition(":")
        if host != socket.gethostname() or not Path(f"/proc/{pid}").exists():
            left.append(name)
    return left


def labelled(label: str, context: str = SECOND) -> list[str]:
    out = sh("docker", "--context", context, "ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}")
    return sorted(out.stdout.split())


@pytest.fixture(scope="session")
def second_engine() -> Iterator[str]:
    """The second engine, started if it is not running, and stopped at the end only then."""
    running = subprocess.run(["bash", SCRIPT, "status"], capture_output=True).returncode == 0
    sh("bash", SCRIPT, "start", timeout=300)
    yield SECOND
    if not running:
        sh("bash", SCRIPT, "stop", timeout=120)


@pytest.fixture(scope="module")
def remote_lab(host_before: dict[str, str], second_engine: str) -> Iterator[str]:
    if labelled(f"labbuilder.lab={LAB}"):
        pytest.fail(f"a lab named {LAB} is already on {SECOND}: `labbuilder --context {SECOND} down {LAB}` first")
    up = labbuilder("--context", SECOND, "--debug", "up", LAB_FILE, "--name", LAB, "-q")
    try:
        yield up.stderr
    finally:
        labbuilder("--context", SECOND, "down", LAB, check=False)


def test_up_took_the_helper_path_and_the_helper_went_away(remote_lab):
    assert f"debug: engine {SECOND}: host work runs in helper container labbuilder-helper-" in remote_lab
    deadline = time.monotonic() + 10
    while orphans() and time.monotonic() < deadline:
        time.sleep(0.2)  # removed when the command exits; Docker may take a moment
    assert orphans() == []


def test_the_lab_lives_on_the_second_engine_only(remote_lab):
    names = [f"{LAB}-{key}" for key in ("controller-0", "router", "worker-0", "worker-1")]
    assert labelled(f"labbuilder.lab={LAB}") == names
    assert labelled(f"labbuilder.lab={LAB}", context="default") == []  # this host's engine never saw it
    listed = labbuilder("--context", SECOND, "ls").stdout
    assert LAB in listed and LAB not in labbuilder("ls").stdout


def test_checks_pass_and_the_lab_is_pristine(remote_lab):
    checked = labbuilder("--context", SECOND, "check", LAB)
    assert "4 passed, 0 failed" in checked.stdout
    assert labbuilder("--context", SECOND, "diff", LAB).stdout.strip() == f"lab {LAB}: pristine"


def test_reset_repairs_a_sabotaged_lab_through_the_helper(remote_lab):
    worker, router = f"{LAB}-worker-0", f"{LAB}-router"
    on_second("exec", worker, "ip", "route", "del", "default")
    on_second("exec", worker, "ip", "addr", "flush", "dev", "cnio0")
    on_second("exec", router, "ip", "link", "set", "lab0", "down")
    on_second("exec", worker, "ip", "link", "add", "stray0", "type", "bridge")
    broken = labbuilder("--context", SECOND, "diff", LAB, check=False)
    assert broken.returncode == 1
    for said in (
        "worker-0: route default via 10.240.0.1 missing",
        "worker-0: address 10.200.0.1/24 on cnio0 missing",
        "router: link lab0 down",
        "worker-0: link stray0 added",
    ):
        assert said in broken.stdout
    reset = labbuilder("--context", SECOND, "reset", LAB)
    assert "repaired" in reset.stdout
    assert labbuilder("--context", SECOND, "diff", LAB).stdout.strip() == f"lab {LAB}: pristine"
    assert "4 passed, 0 failed" in labbuilder("--context", SECOND, "check", LAB).stdout
    assert "stray0" not in on_second("exec", worker, "ip", "-o", "link")


def test_down_leaves_the_engine_clean_and_this_host_unchanged(remote_lab, host_before):
    done = subprocess.run(
        [*LABBUILDER, "--context", SECOND, "exec", LAB, "worker-1/busybox", "--", "ip", "-o", "addr", "show", "eth0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "10.200.1.3/24" in done.stdout  # exec reaches the same engine
    labbuilder("--context", SECOND, "down", LAB)
    assert labelled(f"labbuilder.lab={LAB}") == []
    assert orphans() == []  # exec too removed its helper before handing over to docker exec
    assert host_state() == host_before
