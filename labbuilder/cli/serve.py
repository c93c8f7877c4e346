"""`labbuilder serve`: the fleet's board in a browser — a Starlette app served by uvicorn.

Checks run in the background (a round every `interval` seconds, `parallel` labs at a time), never
on a page load: a page or `/api/labs` only reads the last results. Resetting a lab and re-running
its checks are POSTs guarded by a token printed at start (a cookie once the printed address has
been opened, or a `token` form field); anyone who can load the page without it sees it read-only.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import click

from labbuilder.cli.fleet import engines_option, open_fleet, parallel_option
from labbuilder.cli.tools import console, user_errors

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from labbuilder.lifecycle.fleet import CheckReport, Fleet, Member
    from labbuilder.lifecycle.reset import ResetResult
    from labbuilder.present.board import Board, Row

COOKIE = "labbuilder_token"
ASKED = {"resetting": "a reset", "checking": "a check"}


class Watcher:
    """The board's rows, kept fresh by a background thread; actions queue work on a bounded pool."""

    def __init__(self, fleet: Fleet, interval: float, parallel: int, say: Callable[[str], None] = lambda _: None):
        from labbuilder.present.board import Row

        self.fleet = fleet
        self.interval = interval
        self.say = say  # a line for the console: what was asked, what a reset did
        self.lock = threading.Lock()
        self.rows: dict[str, Row] = {}
        self.members: dict[str, Member] = {}
        self.pool = ThreadPoolExecutor(max(1, parallel), thread_name_prefix="board")
        self.stop = threading.Event()
        self._row = Row
        self.thread = threading.Thread(target=self._loop, name="board-watch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def board(self) -> Board:
        from labbuilder.present.board import Board

        with self.lock:
            rows = tuple(self.rows[lab] for lab in sorted(self.rows, key=self._order))
        assert self.fleet.prefix is not None
        return Board(self.fleet.prefix, rows)

    def _order(self, lab: str) -> tuple[int, str]:
        from labbuilder.lifecycle.fleet import member_index

        assert self.fleet.prefix is not None
        return member_index(self.fleet.prefix, lab) or 0, lab

    # -- the background round ----------------------------------------------------------------
    def _loop(self) -> None:
        last_round = 0.0
        while not self.stop.is_set():
            self._list()
            if time.monotonic() - last_round >= self.interval:
                last_round = time.monotonic()
                for lab in list(self.members):
                    self.request(lab, "checking")
            self.stop.wait(min(2.0, self.interval))

    def _list(self) -> None:
        """Who is in the fleet and in what state: one container listing per engine (cheap)."""
        from labbuilder.errors import LabError

        try:
            members = {m.lab: m for m in self.fleet.members()}
        except LabError:
            return  # an engine went away for a moment: keep what we know
        now = time.time()
        with self.lock:
            self.members = members
            for lab, m in members.items():
                row = self.rows.get(lab) or self._row(lab, m.engine, m.state, changed=now)
                if row.state != m.state:
                    row = replace(row, state=m.state, changed=now)
                self.rows[lab] = row
            for lab in set(self.rows) - set(members):
                if self.rows[lab].state != "gone":
                    self.rows[lab] = replace(self.rows[lab], state="gone", changed=now, busy=None, queued=None)

    # -- work --------------------------------------------------------------------------------
    def request(self, lab: str, what: str, asked_by: str = "") -> bool:
        """Queue a check ("checking") or a reset then a check ("resetting"); False when the lab is
        unknown. A lab already busy takes the request after its current work (a reset clicked
        while the background round checks that lab must not be lost); one queued request per
        lab, a reset outranking a check. `asked_by`: say so on the console (a person asked)."""
        with self.lock:
            row, member = self.rows.get(lab), self.members.get(lab)
            if row is None or member is None:
                return False
            start = not row.busy
            if start:
                self.rows[lab] = replace(row, busy=what)
            elif row.queued != "resetting":
                self.rows[lab] = replace(row, queued=what)
        if asked_by:
            self.say(f"{lab}: {ASKED[what]} asked {asked_by}")
        if start:
            self.pool.submit(self._work, member, what)
        return True

    def _work(self, member: Member, what: str) -> None:
        from labbuilder.lifecycle import fleet as lifecycle

        reset_ended, reset_error, report, error = None, None, None, None
        try:
            if what == "resetting":
                result, reset_error = lifecycle.fleet_reset(self.fleet, [member])[member.lab]
                reset_ended = time.time()
                self.say(f"{member.lab}: reset failed: {reset_error}" if reset_error else _repaired(member.lab, result))
            report = lifecycle.check_member(self.fleet, member)
        except Exception as err:  # a bug must not kill the board: show it on the lab's row
            error = f"{type(err).__name__}: {err}"
            self.say(f"{member.lab}: {error}")
        with self.lock:
            row = self.rows[member.lab]
            row = self._checked(row, report) if report is not None else replace(row, error=error)
            if reset_ended is not None:
                row = replace(row, reset=reset_ended, reset_error=reset_error)
            after = row.queued
            self.rows[member.lab] = replace(row, busy=after, queued=None)
        if after is not None:
            self.pool.submit(self._work, member, after)

    @staticmethod
    def _checked(row: Row, report: CheckReport) -> Row:
        """The row with a check's results; `changed` moves only when pass/fail (or the error) did."""
        from labbuilder.present.board import Cell

        cells = tuple(Cell(r.name, r.passed, r.detail) for r in report.results)
        now, error = time.time(), report.error
        moved = [(c.name, c.passed) for c in cells] != [(c.name, c.passed) for c in row.checks] or error != row.error
        return replace(row, checks=cells, checked=now, changed=now if moved else row.changed, error=error)


def _repaired(lab: str, result: ResetResult | None) -> str:
    repairs = result.repairs if result else []
    return f"{lab}: reset: " + (f"{len(repairs)} repaired ({'; '.join(repairs)})" if repairs else "nothing to repair")


def log_line(line: str) -> None:
    """One line of the board's log on the console, timed."""
    console.print(f"{time.strftime('%H:%M:%S')} {line}", highlight=False, markup=False, soft_wrap=True)


def make_app(watcher: Watcher, token: str) -> Starlette:
    """The web app: the page, its JSON, and the two guarded actions."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
    from starlette.routing import Route

    from labbuilder.present import board as page

    def holds_token(request: Request, form: dict[str, list[str]] | None = None) -> bool:
        given = request.cookies.get(COOKIE) or ((form or {}).get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), token.encode())

    async def index(request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:  # the printed address: keep the token in a cookie, drop it from the URL
            if not hmac.compare_digest(given.encode(), token.encode()):
                return PlainTextResponse("wrong token", status_code=403)
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        return HTMLResponse(page.render_html(watcher.board(), can_act=holds_token(request)))

    async def api(request: Request) -> Response:
        return JSONResponse(page.as_json(watcher.board()))

    async def act(request: Request) -> Response:
        form = parse_qs((await request.body()).decode(errors="replace"))
        if not holds_token(request, form):
            return PlainTextResponse("a reset or a check needs the token `labbuilder serve` printed", status_code=403)
        lab, action = request.path_params["lab"], request.path_params["action"]
        if lab not in watcher.members:
            return PlainTextResponse(f"no lab {lab} in fleet {watcher.fleet.prefix}", status_code=404)
        watcher.request(
            lab,
            "resetting" if action == "reset" else "checking",
            asked_by=f"from {request.client.host if request.client else 'the board'}",
        )
        return RedirectResponse("/", status_code=303)

    routes = [
        Route("/", index),
        Route("/api/labs", api),
        Route("/labs/{lab}/{action:str}", act, methods=["POST"]),
    ]
    return Starlette(routes=routes)


@click.command()
@click.option("--fleet", "--prefix", "prefix", metavar="NAME", help="the fleet to show (default: the only one)")
@engines_option
@parallel_option
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--interval", default=30.0, show_default=True, help="seconds between two rounds of checks")
@click.option("--token", envvar="LABBUILDER_TOKEN", help="the token for the buttons (default: a random one)")
@user_errors
def serve(
    prefix: str | None, engines: str | None, parallel: int, host: str, port: int, interval: float, token: str | None
) -> None:
    """Serve a live board of a fleet: one row per lab with its engine, state and every check.

    The page reloads itself; checks run in the background every --interval seconds. Its reset
    and check buttons need the token printed at start (open the printed address once). The same
    data as JSON at /api/labs.

    \b
    Examples:
      labbuilder serve
      labbuilder serve --fleet class --engines local,server2 --port 8080
      curl -s http://127.0.0.1:8080/api/labs | jq '.labs[] | select(.passed == false) | .lab'
    """
    import uvicorn

    fleet = open_fleet(prefix, engines, parallel)
    fleet.require_members()
    token = token or secrets.token_urlsafe(16)
    watcher = Watcher(fleet, max(1.0, interval), parallel, say=log_line)
    watcher.start()
    shown = f"[{host}]" if ":" in host else host
    console.print(f"board of fleet {fleet.prefix}: http://{shown}:{port}/?token={token}")
    console.print("(the address holds the token for the reset and check buttons; without it the page is read-only)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"note: listening on {host} over plain HTTP: the token travels in clear; prefer an SSH tunnel")
    try:
        uvicorn.run(make_app(watcher, token), host=host, port=port, log_level="warning")
    finally:
        watcher.close()


COMMANDS: list[click.Command] = [serve]
