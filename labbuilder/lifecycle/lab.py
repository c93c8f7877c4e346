"""`down`, `status`, `ls`: a lab's containers found by their label, removed or listed.

Light on purpose: no netlink, no lab file — these work after a crash, without the file, fast.
"""

from __future__ import annotations

from collections.abc import Callable

from labbuilder.engine.runtime import ContainerInfo, Engine
from labbuilder.lifecycle.lock import lab_lock
from labbuilder.spec.keys import ROUTER

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def down(name: str, engine: Engine | None = None, progress: Progress = _quiet) -> list[str]:
    """Remove everything the lab owns, found by its label; works after a crash and without the file."""
    with lab_lock(name, "down", progress=progress):
        handle = (engine or Engine()).lab(name)
        handle.refresh(inspect=False)  # their ids are all it takes
        return handle.remove()


def status(name: str | None = None, engine: Engine | None = None) -> dict[str, list[ContainerInfo]]:
    labs: dict[str, list[ContainerInfo]] = {}
    for info in (engine or Engine()).containers(name):
        labs.setdefault(info.lab, []).append(info)
    for entries in labs.values():
        entries.sort(key=lambda s: (s.key != ROUTER, s.name))
    return labs
