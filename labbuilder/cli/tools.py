"""Shared pieces of the command line: consoles, user-error handling, progress lines, the lab door.

The consoles never interpret markup, emoji or highlighting in what they print: names, MACs
(`e6:ab:75:…` holds `:ab:`), addresses and commands reach the terminal exactly as they are.
Styling is applied only through explicit `rich.text.Text` styles.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from labbuilder.errors import LabError, SpecError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from labbuilder.engine.runtime import LabHandle


class _Console:
    """A rich Console made on first use: `--version` and `--help` never pay for importing rich."""

    def __init__(self, stderr: bool):
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            width = None if self._stderr or sys.stdout.isatty() else 200  # never cut names when piped
            self._console = Console(stderr=self._stderr, width=width, markup=False, emoji=False, highlight=False)
        return getattr(self._console, name)


console: Console = _Console(stderr=False)  # type: ignore[assignment]
errors: Console = _Console(stderr=True)  # type: ignore[assignment]
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


def bold(text: str) -> Text:
    from rich.text import Text

    return Text(text, style="bold")
