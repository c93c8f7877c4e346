"""Staying power: a crash, two terminals, an engine restart — each ends in a working lab or a
clear message, never a stuck or lost lab. Real engine, real kill signals, real dockerd restart."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import LABBUILDER, ROOT, lab_containers, labbuilder, sh

pytestmark = pytest.mark.docker
KTHW = str(ROOT / "labs/kthw.yaml")


def start_up(name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LABBUILDER, "up", KTHW, "--name", name, "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def passes_its_checks(name: str) -> None:
    result = labbuilder("check", name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


def no_traceback(result: subprocess.CompletedProcess[str] | tuple[str, str]) -> None:
    text = "".join(result) if isinstance(result, tuple) else result.stdout + result.stderr
    assert "Traceback" not in text and "http+docker" not in text and "Client Error" not in text, text


@pytest.fixture
def lab_name(request, host_before):
    name = "sp" + str(abs(hash(request.node.name)) % 10**6)
    yield name
    labbuilder("down", name, check=False)
    assert not lab_containers(name)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_point_of_up_then_up_again_gives_a_working_lab(lab_name, seed):
    delay = random.Random(seed).uniform(0.3, 2.2)
    up = start_up(lab_name)
    time.sleep(delay)
    up.send_signal(signal.SIGKILL)  # a crash, an OOM kill: no clean-up code runs
    up.wait(timeout=30)
    again = labbuilder("up", KTHW, "--name", lab_name, "-q", check=False)
    no_traceback(again)
    assert again.returncode == 0, again.stderr
    passes_its_checks(lab_name)
    assert labbuilder("diff", lab_name, check=False).returncode == 0  # pristine, not just working


def test_after_a_crash_reset_brings_the_lab_back_from_its_copy_or_from_the_file(lab_name):
    up = start_up(lab_name)
    deadline = time.monotonic() + 30
    while len(lab_containers(lab_name)) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    up.send_signal(signal.SIGKILL)  # containers exist, configuration half done
    up.wait(timeout=30)
    reset = labbuilder("reset", lab_name, check=False)
    no_traceback(reset)
    if reset.returncode != 0:  # killed before the router held the copy: the message says what to do
        assert "--file" in reset.stderr, reset.stderr
        reset = labbuilder("reset", lab_name, "--file", KTHW)
    passes_its_checks(lab_name)
    labbuilder("reset", lab_name)  # and the copy is in place for next time, without --file
    sh("docker", "exec", f"{lab_name}-router", "test", "-s", "/etc/labbuilder/lab.yaml")


def test_two_ups_of_one_lab_at_once_make_exactly_one_working_lab(lab_name):
    first, second = start_up(lab_name), start_up(lab_name)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    for output in outputs:
        no_traceback(output)
    assert (first.returncode, second.returncode) == (0, 0), outputs
    assert len(lab_containers(lab_name)) == 7
    passes_its_checks(lab_name)


def test_down_during_up_waits_its_turn_and_leaves_nothing(lab_name):
    up = start_up(lab_name)
    time.sleep(0.5)
    down = labbuilder("down", lab_name, check=False)
    up_out = up.communicate(timeout=300)
    no_traceback(down)
    no_traceback(up_out)
    assert down.returncode == 0 and up.returncode == 0, (down.stderr, up_out)
    assert "busy" in down.stderr  # it said why it waited
    assert not lab_containers(lab_name)


def test_a_busy_lab_names_who_holds_it(lab_name, tmp_path):
    """The lock file says which command holds a lab; a waiting command quotes it."""
    from labbuilder.errors import LabError
    from labbuilder.lifecycle.lock import lab_lock

    holder = subprocess.Popen(
        [
            os.environ.get("PYTHON", LABBUILDER[0]),
            "-c",
            "import sys, time\n"
            "from labbuilder.lifecycle.lock import lab_lock\n"
            f"with lab_lock({lab_name!r}, 'up'):\n"
            "    print('held', flush=True); time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        busy = rf"lab {lab_name} is busy: `labbuilder up` pid {holder.pid} since"
        with pytest.raises(LabError, match=busy), lab_lock(lab_name, "reset", wait=0.5):
            pass
    finally:
        holder.kill()
        holder.wait()
    with lab_lock(lab_name, "reset", wait=2):  # the kernel released it with the dead holder
        pass


def test_docker_errors_are_one_sentence_about_the_lab(lab_name):
    """A container that is not labbuilder's stands where the lab's router must go."""
    from labbuilder.engine.image import image_tag

    sh("docker", "create", "--name", f"{lab_name}-router", "--network", "none", image_tag())
    try:
        result = labbuilder("up", KTHW, "--name", lab_name, "-q", check=False)
        no_traceback(result)
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"{lab_name}-router" in errors[0] and "Conflict" in errors[0], result.stderr
        assert sh("docker", "inspect", f"{lab_name}-router").returncode == 0  # not ours: left alone
        assert lab_containers(lab_name) == []  # and nothing of the lab is left half-built
    finally:
        sh("docker", "rm", "-f", f"{lab_name}-router", check=False)


def _dockerd_pid() -> int:
    return int(Path("/var/run/docker.pid").read_text().strip())


def test_after_the_engine_restarts_up_and_reset_bring_labs_back(host_before):
    """dockerd stops (containers stop with it) and starts again: status says stopped; `up` of one lab
    and `reset` of another bring both back to labs that pass their checks."""
    names = ("sprestart1", "sprestart2")
    for name in names:
        labbuilder("up", KTHW, "--name", name, "-q")
    try:
        pid = _dockerd_pid()
        os.kill(pid, signal.SIGTERM)  # by pid, never by name
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(f"/proc/{pid}").exists(), "dockerd did not stop"
        sh("bash", str(ROOT / "scripts/ensure-docker.sh"), timeout=180)
        status = labbuilder("status", names[0])
        assert "exited" in status.stdout and "running" not in status.stdout, status.stdout
        labbuilder("up", KTHW, "--name", names[0], "-q")
        reset = labbuilder("reset", names[1])
        assert "container started" in reset.stdout, reset.stdout
        for name in names:
            passes_its_checks(name)
            assert labbuilder("diff", name, check=False).returncode == 0
    finally:
        for name in names:
            labbuilder("down", name, check=False)
