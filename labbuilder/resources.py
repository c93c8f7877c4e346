"""Where the shipped data files live: beside the package when installed, at the repo top in a checkout."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a template is first used: most commands never render one
    import jinja2

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"labbuilder data folder {name!r} not found near {_PACKAGE}")


def templates_dir() -> Path:
    return _find("templates")


def schemas_dir() -> Path:
    return _find("schemas")


def labs_dir() -> Path:
    return _find("labs")


@cache
def template(name: str) -> jinja2.Template:
    """A shipped jinja2 template; HTML templates autoescape, text ones (iptables) keep quotes as written."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=name.endswith(".html.j2"),
    )
    return env.get_template(name)
