"""Shared pieces of the command line: consoles, user-error handling, progress lines."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
import docker.errors
from rich.console import Console

from labbuilder.errors import LabError, SpecError

console = Console(width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn the errors a user can act on into readable lines and an exit status, no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpecError as err:
            for problem in err.problems:
                click.echo(str(problem), err=True)
            sys.exit(1)
        except (LabError, OSError) as err:  # OSError: a file or socket the user pointed us at
            click.echo(f"error: {err}", err=True)
            sys.exit(1)
        except docker.errors.DockerException as err:
            click.echo(f"error: docker: {err}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            errors.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def progress_printer(quiet: bool = False) -> Callable[[str], None]:
    def show(line: str) -> None:
        if not quiet:
            errors.print(f"[dim]»[/dim] {line}", highlight=False)

    return show
