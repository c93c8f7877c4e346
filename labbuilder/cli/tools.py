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
from rich.console import Console
from rich.text import Text

from labbuilder.errors import LabError, SpecError

if TYPE_CHECKING:
    from labbuilder.engine.runtime import LabHandle

console = Console(width=None if sys.stdout.isatty() else 200, markup=False, emoji=False, highlight=False)
errors = Console(stderr=True, markup=False, emoji=False, highlight=False)
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
            errors.print(Text.assemble(("» ", "dim"), line))

    return show


def bold(text: str) -> Text:
    return Text(text, style="bold")
