"""Commands kept in modules of their own; cli.py registers every one listed here."""

from __future__ import annotations

import click

from labbuilder.commands import instructor, kubectl, see

COMMANDS: list[click.Command] = []
COMMANDS += kubectl.COMMANDS  # get, exec
COMMANDS += instructor.COMMANDS  # check, exercise
COMMANDS += [see.graph, see.trace, see.render]  # see a lab: picture, packet path, script
