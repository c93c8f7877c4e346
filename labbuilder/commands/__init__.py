"""Commands kept in modules of their own; cli.py registers every one listed here."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
