"""Shared pieces of the command line: consoles, user-error handling, progress lines, the lab door.

The consoles never interpret markup, emoji or highlighting in what they print: names, MACs
(`e6:ab:75:…` holds `:ab:`), addresses and commands reach the terminal exactly as they are.
Styling is applied only through explicit `rich.text.Text` styles.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from labbuilder.errors import LabError, SpecError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.text import Text

    from labbuilder.engine.runtime import LabHandle
    from labbuilder.lifecycle.progress import Count, Counts


class _Console:
    """A rich Console made on first use: `--version` and `--help` never pay for importing rich."""

    def __init__(self, stderr: bool):
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)

    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            width = None if self._stderr or sys.stdout.isatty() else 200  # never cut names when piped
            self._console = Console(stderr=self._stderr, width=width, markup=False, emoji=False, highlight=False)
        return self._console


console: Console = _Console(stderr=False)  # type: ignore[assignment]
_errors = _Console(stderr=True)
errors: Console = _errors  # type: ignore[assignment]
F = TypeVar("F", bound=Callable[..., Any])
EXIT_USER, EXIT_BUG, EXIT_INTERRUPTED = 1, 70, 130  # 70: EX_SOFTWARE, an internal error


def debug_enabled() -> bool:
    return os.environ.get("LABBUILDER_DEBUG", "") not in ("", "0")


def lab_handle(name: str) -> LabHandle:
    """The running lab NAME on the Docker engine (imported late: the CLI starts fast without docker)."""
    from labbuilder.engine.runtime import Engine

    return Engine().lab(name)


def user_errors(func: F) -> F:
    """Errors a user can act on become readable lines and exit 1; a bug is reported as one, exit 70."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpecError as err:
            for problem in err.problems:
                click.echo(str(problem), err=True)
            sys.exit(EXIT_USER)
        except LabError as err:
            click.echo(f"error: {err}", err=True)
            detail = getattr(err, "detail", "")
            if detail and debug_enabled():
                click.echo(f"debug: {detail}", err=True)
            sys.exit(EXIT_USER)
        except OSError as err:  # a file or socket the user pointed us at
            click.echo(f"error: {err.strerror or err}" + (f": {err.filename}" if err.filename else ""), err=True)
            sys.exit(EXIT_USER)
        except KeyboardInterrupt:
            errors.print("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as err:  # a bug: say so, and where to look
            if debug_enabled():
                traceback.print_exc()
            click.echo(
                f"internal error: {type(err).__name__}: {err}\n"
                "This is a bug in labbuilder. Run again with --debug (or LABBUILDER_DEBUG=1) for the traceback, "
                "and report it with the lab file.",
                err=True,
            )
            sys.exit(EXIT_BUG)

    return wrapper  # type: ignore[return-value]


def progress_printer(quiet: bool = False) -> Callable[[str], None]:
    def show(line: str) -> None:
        if not quiet:
            from rich.text import Text

            errors.print(Text.assemble(("» ", "dim"), line))

    return show


# What each count's bar is called.
BAR_LABELS = {
    "containers": "containers created",
    "nodes": "nodes configured",
    "rules": "iptables rules",
    "pods": "pods serving",
}


def draws_bars() -> bool:
    """Whether progress is drawn as bars: stderr is an interactive terminal, and not CI's."""
    if os.environ.get("CI") or os.environ.get("TERM") == "dumb" or not sys.stderr.isatty():
        return False
    return bool(errors.is_terminal)


class _Bars:
    """Counts drawn as rich progress bars on stderr; lines printed above them."""

    def __init__(self, bars: Progress):
        self.bars = bars
        self.tasks: dict[str, TaskID] = {}

    def line(self, text: str) -> None:
        from rich.text import Text

        self.bars.console.print(Text.assemble(("» ", "dim"), text))

    def count(self, count: Count) -> None:
        if count.what not in self.tasks:
            self.tasks[count.what] = self.bars.add_task(BAR_LABELS[count.what], total=count.total)
        self.bars.update(self.tasks[count.what], completed=count.done, total=count.total)


@contextmanager
def live_progress(quiet: bool = False) -> Iterator[tuple[Callable[[str], None], Counts | None]]:
    """(lines, counts) for a long command: bars and lines on a terminal; in a pipe or CI the plain
    lines of `progress_printer` and no counts; with `quiet`, nothing."""
    if quiet or not draws_bars():
        yield progress_printer(quiet), None
        return
    with progress_bars(_errors.real()) as bars:
        drawn = _Bars(bars)
        yield drawn.line, drawn.count


def progress_bars(console: Console, **kwargs: Any) -> Progress:
    """`containers created ━━━━━━━━━━━━━╺━━━━━━━━ 32/51 0:00:04`, one bar per count; they stay on
    the screen when done (the totals are worth reading)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:>18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=False, refresh_per_second=8, **kwargs)


def bold(text: str) -> Text:
    from rich.text import Text

    return Text(text, style="bold")
