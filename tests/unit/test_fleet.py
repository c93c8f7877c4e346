"""The fleet's pure parts: names, placement over engines, the report shapes CI servers read, and
the board (page, JSON, and the token guarding its buttons)."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from xml.etree import ElementTree

import pytest

from labbuilder.cli.serve import COOKIE, make_app
from labbuilder.errors import LabError
from labbuilder.lifecycle.fleet import (
    CheckReport,
    EngineLoad,
    check_prefix,
    junit_files,
    junit_one,
    member_index,
    member_name,
    place,
)
from labbuilder.observe.checks import Result
from labbuilder.present.board import Board, Cell, Row, ago, as_json, columns, render_html

with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2; httpx does the job
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

GIB = 1 << 30
LAB = 64 << 20  # what one lab is taken to need


def spread(plan) -> dict[str, int]:
    return dict(Counter(p.engine for p in plan.place))


# -- names ----------------------------------------------------------------------------------
def test_members_are_numbered_from_01_and_read_back():
    assert [member_name("kthw", i) for i in (1, 9, 10, 100)] == ["kthw-01", "kthw-09", "kthw-10", "kthw-100"]
    assert member_index("kthw", "kthw-07") == 7
    assert member_index("kthw", "kthw-100") == 100
    # Not members: another fleet whose name starts alike, no number, a zero, a single digit.
    assert member_index("kthw", "kthw-a-01") is None
    assert member_index("kthw", "kthw") is None
    assert member_index("kthw", "kthw-00") is None
    assert member_index("kthw", "kthw-1") is None
    assert member_index("k.w", "kxw-01") is None  # the prefix is matched literally


def test_a_fleet_name_must_make_valid_lab_names():
    assert check_prefix("class-a") == "class-a"
    for bad in ("Class", "-a", "a b", "a_b", "x" * 40, ""):
        with pytest.raises(LabError):
            check_prefix(bad)


# -- placement ------------------------------------------------------------------------------
def test_equal_engines_take_turns():
    loads = [EngineLoad("local", 20 * GIB, 0), EngineLoad("second", 20 * GIB, 0)]
    plan = place("fl", 6, loads, {}, LAB)
    assert spread(plan) == {"local": 3, "second": 3}
    assert [p.lab for p in plan.place] == [f"fl-0{i}" for i in range(1, 7)]
    assert [p.engine for p in plan.place] == ["local", "second"] * 3
    assert all(p.new and "free" in p.reason for p in plan.place)
    assert plan.remove == ()


def test_an_engine_with_running_labs_takes_fewer():
    loads = [EngineLoad("local", 20 * GIB, 4), EngineLoad("second", 20 * GIB, 0)]
    plan = place("fl", 6, loads, {}, LAB)
    # 4 + 1 on local, 5 on second: the labs end up even over the engines.
    assert spread(plan) == {"second": 5, "local": 1}
    assert plan.place[0].reason == "0 labs running there, 20.0 GiB free: the most memory per lab"


def test_an_engine_with_less_memory_takes_fewer():
    loads = [EngineLoad("big", 30 * GIB, 0), EngineLoad("small", 10 * GIB, 0)]
    counts = spread(place("fl", 8, loads, {}, LAB))
    assert counts["big"] == 6 and counts["small"] == 2  # 3:1, as their memory


def test_an_engine_without_room_takes_none_and_a_full_fleet_is_refused():
    loads = [EngineLoad("local", 20 * GIB, 0), EngineLoad("tiny", LAB // 2, 0)]
    assert spread(place("fl", 3, loads, {}, LAB)) == {"local": 3}
    with pytest.raises(LabError, match="no engine has memory for lab fl-03"):
        place("fl", 3, [EngineLoad("local", 2 * LAB + 1, 0)], {}, LAB)


def test_growing_keeps_every_member_where_it_is():
    loads = [EngineLoad("local", 20 * GIB, 3), EngineLoad("second", 20 * GIB, 0)]
    members = {"fl-01": "local", "fl-02": "local", "fl-03": "local"}
    plan = place("fl", 5, loads, members, LAB)
    assert [(p.lab, p.engine, p.new) for p in plan.place] == [
        ("fl-01", "local", False),
        ("fl-02", "local", False),
        ("fl-03", "local", False),
        ("fl-04", "second", True),
        ("fl-05", "second", True),
    ]


def test_a_second_run_with_the_same_count_changes_nothing():
    loads = [EngineLoad("local", 20 * GIB, 2), EngineLoad("second", 20 * GIB, 1)]
    members = {"fl-01": "local", "fl-02": "second", "fl-03": "local"}
    plan = place("fl", 3, loads, members, LAB)
    assert not any(p.new for p in plan.place) and plan.remove == ()
    assert {p.lab: p.engine for p in plan.place} == members


def test_shrinking_removes_the_highest_numbered_first_and_fills_gaps():
    members = {f"fl-{i:02d}": ("local" if i % 2 else "second") for i in (1, 2, 4, 5, 6)}
    loads = [EngineLoad("local", 20 * GIB, 3), EngineLoad("second", 20 * GIB, 2)]
    plan = place("fl", 3, loads, members, LAB)
    assert plan.remove == (("fl-06", "second"), ("fl-05", "local"), ("fl-04", "second"))
    assert [(p.lab, p.new) for p in plan.place] == [("fl-01", False), ("fl-02", False), ("fl-03", True)]
    # After the removals second holds 1 lab, local 2: the gap goes to second.
    assert plan.place[2].engine == "second"
    assert place("fl", 0, loads, members, LAB).place == ()


# -- what CI servers read -------------------------------------------------------------------
def reports() -> list[CheckReport]:
    ok = Result("pod to pod", "reach", "a → b (icmp) reach", True, "reached")
    bad = Result("VPC route", "route", "router: route 10.200.1.0/24", False, "route missing")
    return [
        CheckReport("fl-01", "local", (ok, ok)),
        CheckReport("fl-02", "second", (ok, bad)),
        CheckReport("fl-03", "local", (), "lab fl-03 is not fully running: fl-03-router is stopped"),
    ]


def test_junit_one_file_per_lab():
    files = junit_files(reports())
    assert sorted(files) == ["fl-01.xml", "fl-02.xml", "fl-03.xml"]
    suites = {name: ElementTree.fromstring(text.split("?>", 1)[1]) for name, text in files.items()}
    assert [(s.get("name"), s.get("tests"), s.get("failures")) for s in suites.values()] == [
        ("labbuilder.fl-01", "2", "0"),
        ("labbuilder.fl-02", "2", "1"),
        ("labbuilder.fl-03", "1", "1"),  # a lab that could not be checked is a failure, never an empty suite
    ]
    failure = suites["fl-02.xml"].find("testcase[@name='VPC route']/failure")
    assert failure is not None and failure.get("message") == "route missing"
    assert "router is stopped" in (suites["fl-03.xml"].find("testcase/failure").get("message") or "")


def test_junit_the_whole_fleet_in_one_file():
    root = ElementTree.fromstring(junit_one("fl", reports()).split("?>", 1)[1])
    assert root.tag == "testsuites" and root.get("tests") == "5" and root.get("failures") == "2"
    assert [s.get("name") for s in root.findall("testsuite")] == [
        "labbuilder.fl-01",
        "labbuilder.fl-02",
        "labbuilder.fl-03",
    ]


def test_json_report_of_a_lab():
    data = [r.as_json() for r in reports()]
    json.dumps(data)  # plain JSON values only
    assert [(d["lab"], d["engine"], d["passed"]) for d in data] == [
        ("fl-01", "local", True),
        ("fl-02", "second", False),
        ("fl-03", "local", False),
    ]
    assert data[1]["checks"][1] == {
        "name": "VPC route",
        "kind": "route",
        "description": "router: route 10.200.1.0/24",
        "passed": False,
        "detail": "route missing",
    }
    assert data[2]["checks"] == [] and "stopped" in data[2]["error"]


# -- the board ------------------------------------------------------------------------------
NOW = 1_800_000_000.0


def board() -> Board:
    ok, bad = Cell("pod to pod", True, "reached"), Cell("VPC route", False, "route <missing>")
    return Board(
        "fl",
        (
            Row(
                "fl-01", "local", "running", (ok, Cell("VPC route", True, "via 10.240.0.21")), None, NOW - 5, NOW - 300
            ),
            Row("fl-02", "second", "running", (ok, bad), None, NOW - 5, NOW - 42, busy="resetting"),
            Row("fl-03", "local", "degraded (3/4 running)", (), "lab fl-03 is not fully running", NOW - 5, NOW - 5),
            Row("fl-04", "second", "running"),  # not checked yet
        ),
    )


def test_board_page_has_one_row_per_lab_with_every_check():
    html = render_html(board(), can_act=True, now=NOW)
    assert columns(board()) == ["pod to pod", "VPC route"]
    for lab, engine in (("fl-01", "local"), ("fl-02", "second"), ("fl-03", "local"), ("fl-04", "second")):
        row = html.split(f'<tr id="lab-{lab}"', 1)[1].split("</tr>", 1)[0]
        assert f'<td class="engine">{engine}</td>' in row
    row2 = html.split('<tr id="lab-fl-02"', 1)[1].split("</tr>", 1)[0]
    assert 'data-passed="false"' in row2 and "resetting…" in row2 and "42 s ago" in row2
    assert '<td class="fail" data-check="VPC route" title="route &lt;missing&gt;">' in row2  # escaped
    assert 'data-passed="true"' in html.split('<tr id="lab-fl-01"', 1)[1].split("</tr>", 1)[0]
    assert 'data-passed="unknown"' in html.split('<tr id="lab-fl-04"', 1)[1].split("</tr>", 1)[0]
    assert "1 of 4 labs pass every check" in html
    assert "5 min ago" in html and "never" in html
    assert 'http-equiv="refresh"' in html
    assert "disabled" not in html
    # No external assets: nothing is fetched from anywhere but this page.
    assert "src=" not in html and "<link" not in html and "http://" not in html and "https://" not in html


def test_board_without_the_token_is_read_only():
    html = render_html(board(), can_act=False, now=NOW)
    assert html.count("disabled") == 8 and "Read-only" in html


def test_board_json_holds_the_same_rows():
    data = as_json(board())
    assert data["fleet"] == "fl"
    assert [(d["lab"], d["passed"], d["busy"]) for d in data["labs"]] == [
        ("fl-01", True, None),
        ("fl-02", False, "resetting"),
        ("fl-03", False, None),
        ("fl-04", None, None),
    ]
    assert data["labs"][1]["checks"][1] == {"name": "VPC route", "passed": False, "detail": "route <missing>"}


def test_ago():
    assert [ago(t, NOW) for t in (None, NOW - 3, NOW - 125, NOW - 7300)] == ["never", "3 s ago", "2 min ago", "2 h ago"]


class FakeWatcher:
    """What the app asks of the watcher: the board, the members, and a place to queue work."""

    def __init__(self) -> None:
        self.members = {"fl-01": object(), "fl-02": object()}
        self.requests: list[tuple[str, str]] = []
        self.fleet = type("F", (), {"prefix": "fl"})()

    def board(self) -> Board:
        return board()

    def request(self, lab: str, what: str, asked_by: str = "") -> bool:
        self.requests.append((lab, what))
        return True


def test_app_buttons_need_the_token():
    watcher = FakeWatcher()
    client = TestClient(make_app(watcher, "s3cret"), follow_redirects=False)  # type: ignore[arg-type]
    assert client.get("/").status_code == 200
    assert "disabled" in client.get("/").text
    assert client.post("/labs/fl-01/reset").status_code == 403
    assert client.post("/labs/fl-01/reset", data={"token": "wrong"}).status_code == 403
    assert client.get("/?token=wrong").status_code == 403
    assert watcher.requests == []
    # The printed address sets the cookie and drops the token from the URL.
    landing = client.get("/?token=s3cret")
    assert landing.status_code == 303 and landing.headers["location"] == "/"
    assert COOKIE in landing.headers["set-cookie"] and "httponly" in landing.headers["set-cookie"].lower()
    assert "disabled" not in client.get("/").text
    assert client.post("/labs/fl-02/reset").status_code == 303
    assert client.post("/labs/fl-01/check").status_code == 303
    assert client.post("/labs/fl-09/check").status_code == 404
    assert watcher.requests == [("fl-02", "resetting"), ("fl-01", "checking")]
    # A form field does as well as the cookie (curl).
    other = TestClient(make_app(watcher, "s3cret"), follow_redirects=False)  # type: ignore[arg-type]
    assert other.post("/labs/fl-01/check", data={"token": "s3cret"}).status_code == 303
    api = other.get("/api/labs").json()
    assert [lab["lab"] for lab in api["labs"]] == ["fl-01", "fl-02", "fl-03", "fl-04"]


def test_a_reset_clicked_while_the_lab_is_checked_runs_after_the_check(monkeypatch):
    """The background round may be checking the very lab whose reset button is clicked: the
    reset waits for that check and then runs; it is never dropped."""
    from labbuilder.cli.serve import Watcher
    from labbuilder.lifecycle import fleet as lifecycle
    from labbuilder.lifecycle.reset import ResetResult
    from labbuilder.present.board import Row

    done: list[str] = []
    monkeypatch.setattr(
        lifecycle, "fleet_reset", lambda fleet, members: done.append("reset") or {"fl-01": (ResetResult([], 1), None)}
    )
    monkeypatch.setattr(
        lifecycle,
        "check_member",
        lambda fleet, member, *_: done.append("check") or lifecycle.CheckReport("fl-01", "local", ()),
    )
    watcher = Watcher(type("F", (), {"prefix": "fl"})(), interval=30, parallel=1)  # type: ignore[arg-type]
    watcher.members = {"fl-01": lifecycle.Member("fl-01", "local", "fl", 3, 3)}
    watcher.rows = {"fl-01": Row("fl-01", "local", "running", busy="checking")}  # a round is checking it
    assert watcher.request("fl-01", "resetting")
    assert watcher.request("fl-01", "checking")  # a later round's check does not push the reset out
    assert watcher.rows["fl-01"].queued == "resetting"
    assert "checking…, then resetting" in render_html(watcher.board(), can_act=True)
    watcher._work(watcher.members["fl-01"], "checking")  # the round's check ends: the reset follows
    watcher.pool.shutdown(wait=True)
    assert done == ["check", "reset", "check"]
    row = watcher.rows["fl-01"]
    assert row.busy is None and row.queued is None and row.reset is not None and row.reset_error is None
    assert not watcher.request("fl-09", "checking")  # an unknown lab


def test_a_failed_reset_stays_on_the_row_until_the_next_reset_and_the_console_says_why(monkeypatch):
    """The background round re-checks every few seconds: a reset's failure must not vanish with
    the next check, and the instructor's console logs who asked for what and how it went."""
    from labbuilder.cli.serve import Watcher
    from labbuilder.lifecycle import fleet as lifecycle
    from labbuilder.lifecycle.diff import Difference
    from labbuilder.lifecycle.reset import ResetResult
    from labbuilder.present.board import Row

    route = Difference("router", "route", "route 10.200.1.0/24 via 10.240.0.21", "missing")
    outcomes = iter([(None, "lab fl-01 is busy: `labbuilder up` (pid 42) holds it"), (ResetResult([route], 1), None)])
    monkeypatch.setattr(lifecycle, "fleet_reset", lambda fleet, members: {"fl-01": next(outcomes)})
    monkeypatch.setattr(lifecycle, "check_member", lambda *_: lifecycle.CheckReport("fl-01", "local", ()))
    said: list[str] = []
    watcher = Watcher(type("F", (), {"prefix": "fl"})(), interval=30, parallel=1, say=said.append)  # type: ignore[arg-type]
    member = lifecycle.Member("fl-01", "local", "fl", 3, 3)
    watcher.members = {"fl-01": member}
    watcher.rows = {"fl-01": Row("fl-01", "local", "running")}

    def run(what: str, asked_by: str = "") -> Row:
        assert watcher.request("fl-01", what, asked_by)
        watcher.pool.submit(lambda: None).result()  # the pool has one worker: the work is done
        return watcher.rows["fl-01"]

    failed = run("resetting", asked_by="from 127.0.0.1")
    assert failed.reset_error is not None and "busy" in failed.reset_error and failed.busy is None
    assert run("checking").reset_error == failed.reset_error  # a later check keeps it
    page = render_html(watcher.board(), can_act=True)
    assert "reset failed: lab fl-01 is busy" in page
    assert said == ["fl-01: a reset asked from 127.0.0.1", f"fl-01: reset failed: {failed.reset_error}"]
    mended = run("resetting")
    assert mended.reset_error is None and mended.reset is not None and mended.reset > failed.reset
    assert said[-1] == f"fl-01: reset: 1 repaired ({route.repair})"
    assert "reset 12 s ago" in render_html(watcher.board(), can_act=True, now=mended.reset + 12)
