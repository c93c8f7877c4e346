"""A fleet on the real engine(s): `fleet up` grows and shrinks, `fleet check` grades every lab
(JSON, JUnit), `fleet reset` repairs a sabotaged lab, `fleet exercise` breaks them all alike,
`serve` shows the board in a real headless chromium whose reset button repairs a lab, `fleet
down` leaves nothing. A small lab (1 controller, 2 workers) keeps it quick.

The two-engine test runs a second dockerd on this machine (scripts/second-engine.sh), reached as
Docker context `labbuilder-second` over tcp: it stands in for a second host."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from tests.integration.conftest import LABBUILDER, ROOT, dexec, host_state, labbuilder, sh

pytestmark = pytest.mark.docker

LAB = str(ROOT / "tests/integration/labs/fleet.yaml")
EXERCISE = str(ROOT / "tests/integration/labs/fleet-exercise.yaml")
PREFIX = "fl"
SECOND = "labbuilder-second"


def labbuilder_fleet(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return labbuilder("fleet", *args, check=check)


def fleet_labs(prefix: str = PREFIX, context: str | None = None) -> dict[str, list[str]]:
    """lab → its containers, found by the fleet's label, as `docker ps` shows them."""
    where = ["--context", context] if context else []
    out = sh(
        "docker", *where, "ps", "-a", "--filter", f"label=labbuilder.fleet={prefix}",
        "--format", '{{.Label "labbuilder.lab"}} {{.Names}}',
    ).stdout  # fmt: skip
    labs: dict[str, list[str]] = {}
    for line in out.splitlines():
        lab, name = line.split()
        labs.setdefault(lab, []).append(name)
    return labs


def labbuilder_containers(context: str | None = None) -> list[str]:
    where = ["--context", context] if context else []
    return sh("docker", *where, "ps", "-a", "--filter", "label=labbuilder.lab", "--format", "{{.Names}}").stdout.split()


def ids(lab: str) -> set[str]:
    return set(sh("docker", "ps", "-aq", "--filter", f"label=labbuilder.lab={lab}").stdout.split())


@pytest.fixture(scope="module")
def fleet() -> Iterator[str]:
    if fleet_labs():
        pytest.fail(f"a fleet named {PREFIX} is already on this host: `labbuilder fleet down --prefix {PREFIX}` first")
    before = host_state()
    up = labbuilder_fleet("up", LAB, "--count", "3", "--prefix", PREFIX)
    try:
        yield up.stdout + up.stderr
    finally:
        labbuilder_fleet("down", "--prefix", PREFIX, check=False)
    assert host_state() == before


def test_up_names_labels_and_converges(fleet: str):
    labs = fleet_labs()
    assert sorted(labs) == ["fl-01", "fl-02", "fl-03"]
    assert all(len(containers) == 4 for containers in labs.values())  # router, controller, 2 workers
    assert fleet.count(" new ") == 3 and "fleet fl: 3 labs up (3 on local)" in fleet
    assert "✓ fl-01 on local: done in" in fleet  # not a terminal: one line per finished lab
    # The lab file is kept as every lab keeps it: in its router (what reset and check start from).
    assert "name: fl-02" in dexec("fl-02-router", "cat", "/etc/labbuilder/lab.yaml")
    # A second run converges: every lab kept, no container made again.
    before = {lab: ids(lab) for lab in labs}
    again = labbuilder_fleet("up", LAB, "--count", "3", "--prefix", PREFIX)
    assert again.stdout.count(" kept ") == 3 and " new " not in again.stdout
    assert {lab: ids(lab) for lab in labs} == before


def test_count_grows_and_shrinks_the_fleet(fleet: str):
    kept = {lab: ids(lab) for lab in ("fl-01", "fl-02")}
    grown = labbuilder_fleet("up", LAB, "-n", "4", "--prefix", PREFIX)
    assert ["fl-04", "local", "new"] in [line.split()[:3] for line in grown.stdout.splitlines()]
    assert sorted(fleet_labs()) == ["fl-01", "fl-02", "fl-03", "fl-04"]
    # Shrinking needs no file: the labs keep theirs (any machine that reaches the engines can do it).
    shrunk = labbuilder_fleet("up", "-n", "2", "--prefix", PREFIX)
    lines = [line.split() for line in shrunk.stdout.splitlines()]
    assert ["fl-04", "local", "remove", "beyond", "--count"] in lines
    assert ["fl-03", "local", "remove", "beyond", "--count"] in lines
    assert sorted(fleet_labs()) == ["fl-01", "fl-02"]  # the highest-numbered went
    assert {lab: ids(lab) for lab in ("fl-01", "fl-02")} == kept
    listed = labbuilder_fleet("ls").stdout
    assert [line.split()[:4] for line in listed.splitlines()[1:]] == [
        ["fl", "fl-01", "local", "running"],
        ["fl", "fl-02", "local", "running"],
    ]


def test_check_reports_in_json_and_junit(fleet: str, tmp_path: Path):
    result = labbuilder_fleet("check", "-o", "json", "--junit", str(tmp_path / "junit"))
    data = json.loads(result.stdout)
    assert data["fleet"] == PREFIX and data["passed"] is True
    assert [(lab["lab"], lab["passed"], len(lab["checks"])) for lab in data["labs"]][:2] == [
        ("fl-01", True, 3),
        ("fl-02", True, 3),
    ]
    files = sorted(p.name for p in (tmp_path / "junit").iterdir())
    assert files[:2] == ["fl-01.xml", "fl-02.xml"]
    suite = ElementTree.parse(tmp_path / "junit" / "fl-01.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("3", "0")
    labbuilder_fleet("check", "--junit", str(tmp_path / "all.xml"))
    whole = ElementTree.parse(tmp_path / "all.xml").getroot()
    assert whole.tag == "testsuites" and whole.get("failures") == "0"


def test_reset_repairs_a_sabotaged_lab(fleet: str):
    dexec("fl-02-router", "ip", "route", "del", "10.200.1.0/24")
    broken = labbuilder_fleet("check", "-o", "json", check=False)
    assert broken.returncode == 1
    passed = {lab["lab"]: lab["passed"] for lab in json.loads(broken.stdout)["labs"]}
    assert passed["fl-01"] is True and passed["fl-02"] is False
    reset = labbuilder_fleet("reset").stdout
    assert "fl-01 on local: nothing repaired" in reset
    assert "fl-02 on local: 1 repaired" in reset and "route 10.200.1.0/24 via 10.240.0.21 restored" in reset
    labbuilder_fleet("check")


def test_exercise_starts_everywhere(fleet: str):
    started = labbuilder_fleet("exercise", EXERCISE).stdout
    assert "fl-01 on local: started" in started and "fl-02 on local: started" in started
    graded = labbuilder_fleet("check", "--exercise", EXERCISE, "-o", "json", check=False)
    assert graded.returncode == 1
    labs = json.loads(graded.stdout)["labs"]
    assert {lab["lab"]: [c["detail"] for c in lab["checks"]] for lab in labs} == {
        "fl-01": ["no answer", "route missing"],
        "fl-02": ["no answer", "route missing"],
    }
    labbuilder_fleet("reset")
    labbuilder_fleet("check", "--exercise", EXERCISE)


# -- the board in a browser -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def board(fleet: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    port, token = free_port(), "fleet-test-token"
    log = tmp_path / "serve.log"  # the board's console: what was asked, what each reset did
    server = subprocess.Popen(
        [*LABBUILDER, "serve", "--fleet", PREFIX, "--port", str(port), "--interval", "2", "--token", token],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/api/labs", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, log.read_text()
                time.sleep(0.1)
        yield url, token, log
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert f"{url}/?token={token}" in log.read_text()


def chrome() -> object:
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing: scripts/test.sh installs them")
        pytest.skip("no chromium/chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def api(url: str) -> dict[str, dict]:
    with urllib.request.urlopen(f"{url}/api/labs", timeout=5) as answer:
        return {lab["lab"]: lab for lab in json.load(answer)["labs"]}


def wait_for(what, timeout: float = 60.0, show=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what.__doc__ or what}: {show()}")


def click_reset(driver: Any, lab: str) -> None:
    """Click the lab's reset button. The page reloads itself every few seconds: a click that meets
    a reload finds its button gone (the browser raises, no POST is sent), so look again."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for _ in range(3):
        try:
            driver.find_element(By.CSS_SELECTOR, f"#lab-{lab} button[name=reset]").click()
            return
        except WebDriverException:  # stale, or not yet in the reloaded page
            driver.get(driver.current_url)
    raise AssertionError(f"the reset button of {lab} went stale three times")


def test_board_in_chromium_resets_a_lab(board: tuple[str, str, Path]):
    from selenium.webdriver.common.by import By

    url, token, log = board
    # Without the token: read-only page, and a POST is refused.
    request = urllib.request.Request(f"{url}/labs/fl-01/reset", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 403
    labs = sorted(fleet_labs())
    state = lambda: json.dumps(api(url), indent=1) + "\nthe board's console:\n" + log.read_text()  # noqa: E731
    wait_for(lambda: sorted(api(url)) == labs and all(lab["passed"] for lab in api(url).values()), show=state)
    dexec("fl-01-router", "ip", "route", "del", "10.200.1.0/24")  # sabotage, then let the board see it
    wait_for(lambda: api(url)["fl-01"]["passed"] is False, show=state)

    driver = chrome()
    try:
        driver.get(f"{url}/?token={token}")  # type: ignore[attr-defined]
        rows = driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")  # type: ignore[attr-defined]
        assert [r.get_attribute("id") for r in rows] == [f"lab-{lab}" for lab in labs]
        row = driver.find_element(By.ID, "lab-fl-01")  # type: ignore[attr-defined]
        assert row.get_attribute("data-passed") == "false"
        assert row.find_element(By.CSS_SELECTOR, "td.engine").text == "local"
        failing = row.find_element(By.CSS_SELECTOR, "td.fail[data-check='VPC route to worker-1 pods']")
        assert "route missing" in failing.text
        other = driver.find_element(By.ID, "lab-fl-02")  # type: ignore[attr-defined]
        assert other.get_attribute("data-passed") == "true"
        assert len(other.find_elements(By.CSS_SELECTOR, "td.pass")) == 3
        click_reset(driver, "fl-01")
        # The click landed: the page it leads to shows the reset on its way (or done).
        cells = driver.find_elements(By.CSS_SELECTOR, "#lab-fl-01 td.state")  # type: ignore[attr-defined]
        shown = driver.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
        assert cells and "reset" in cells[0].text, f"after the click the browser shows:\n{shown}\n{state()}"

        def repaired() -> bool:
            """the board shows fl-01 passing again"""
            driver.get(url)  # type: ignore[attr-defined]
            return driver.find_element(By.ID, "lab-fl-01").get_attribute("data-passed") == "true"  # type: ignore[attr-defined]

        wait_for(repaired, show=state)
    finally:
        driver.quit()  # type: ignore[attr-defined]
    assert "10.200.1.0/24 via 10.240.0.21" in dexec("fl-01-router", "ip", "route")
    assert "fl-01: a reset asked from 127.0.0.1" in log.read_text()
    assert "fl-01: reset: 1 repaired (router: route 10.200.1.0/24" in log.read_text()
    assert api(url)["fl-01"]["checks"][2] == {
        "name": "VPC route to worker-1 pods",
        "passed": True,
        "detail": "10.200.1.0/24 via 10.240.0.21 dev lab0",
    }


def test_down_leaves_nothing(fleet: str):
    down = labbuilder_fleet("down").stdout
    assert "fleet fl: 2 labs removed" in down
    assert fleet_labs() == {}
    assert not [name for name in labbuilder_containers() if name.startswith("fl-")]


# -- two engines ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def second_engine() -> Iterator[str]:
    running = sh("bash", str(ROOT / "scripts/second-engine.sh"), "status", check=False).returncode == 0
    if not running:
        sh("bash", str(ROOT / "scripts/second-engine.sh"), "start", timeout=300)
    try:
        yield SECOND
    finally:
        if not running:  # leave the engine as we found it
            sh("bash", str(ROOT / "scripts/second-engine.sh"), "stop", check=False)


def test_fleet_over_two_engines(second_engine: str):
    prefix = "fl2"
    for context in (None, second_engine):
        if labbuilder_containers(context):
            pytest.fail(f"engine {context or 'local'} holds labs already: this test wants both engines empty")
    before = host_state()
    engines = f"local,{second_engine}"
    try:
        up = labbuilder_fleet("up", LAB, "--count", "6", "--prefix", prefix, "--engines", engines)
        assert f"fleet {prefix}: 6 labs up (3 on local, 3 on {second_engine})" in up.stdout
        assert sorted(fleet_labs(prefix)) == ["fl2-01", "fl2-03", "fl2-05"]
        assert sorted(fleet_labs(prefix, second_engine)) == ["fl2-02", "fl2-04", "fl2-06"]
        listed = labbuilder_fleet("ls", "--engines", engines).stdout
        assert Counter(line.split()[2] for line in listed.splitlines()[1:]) == {"local": 3, second_engine: 3}
        data = json.loads(labbuilder_fleet("check", "--engines", engines, "-o", "json").stdout)
        assert data["passed"] is True and len(data["labs"]) == 6
        assert Counter(lab["engine"] for lab in data["labs"]) == {"local": 3, second_engine: 3}
    finally:
        down = labbuilder_fleet("down", "--prefix", prefix, "--engines", engines, check=False)
    assert down.returncode == 0, down.stderr
    assert labbuilder_containers() == [] and labbuilder_containers(second_engine) == []
    # The helper containers that did the second engine's namespace work are gone with their process.
    helpers = sh("docker", "--context", second_engine, "ps", "-aq", "--filter", "label=labbuilder.helper").stdout
    assert helpers.split() == []
    assert host_state() == before
