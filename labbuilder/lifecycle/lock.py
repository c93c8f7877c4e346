"""One lock per lab, across processes: `up`, `down`, `reset` and `exercise` on one lab take turns.

An advisory `flock` on a file per lab name: the kernel releases it when its holder exits, however
it exits (SIGKILL, OOM, a closed laptop lid), so a crash never leaves a lab locked. The file also
says who holds it, for the message a second command prints while it waits. Different labs use
different files and never wait for each other.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from labbuilder.engine.runtime import lock_dir
from labbuilder.errors import LabError

WAIT = 120.0  # seconds a command waits for another one on the same lab before it gives up
POLL = 0.2


def _holder(path: Path) -> str:
    """`labbuilder up` pid 123 since 12:01:07 — from the lock file, when it can be read."""
    try:
        info = json.loads(path.read_text() or "{}")
        since = datetime.fromtimestamp(float(info["since"])).strftime("%H:%M:%S")
        return f"`labbuilder {info['command']}` pid {info['pid']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another labbuilder command"


@contextmanager
def lab_lock(
    lab: str, command: str, wait: float = WAIT, progress: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold lab `lab`'s lock for the block; wait up to `wait` seconds for another holder."""
    path = lock_dir() / f"{lab}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline, told = time.monotonic() + wait, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabError(
                        f"lab {lab} is busy: {_holder(path)}",
                        hint="wait for it to finish, then try again",
                    ) from None
                if not told and progress:
                    progress(f"lab {lab} is busy: {_holder(path)}; waiting")
                    told = True
                time.sleep(POLL)
        record = {"command": command, "pid": os.getpid(), "since": time.time(), "argv": sys.argv[1:]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
