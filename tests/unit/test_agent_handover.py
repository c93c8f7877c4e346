"""How a build tells a starting node from a node without an agent: the shell test, run by `sh`
against a process directory laid out as the kernel shows a node's init in each moment of its start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labbuilder.compile.kubelet import AGENT, runs_no_agent

RUNC_INIT = ("runc:[2:INIT]\n", b"runc\0init\0")


@pytest.mark.parametrize(
    ("moment", "comm", "cmdline", "without_agent"),
    [
        ("runc init, before its exec", *RUNC_INIT, False),
        ("memory swapped, name and command line not yet", "runc:[2:INIT]\n", b"", False),
        ("renamed, command line not yet written", "docker-init\n", b"", False),
        ("docker-init running the agent", "docker-init\n", f"/sbin/docker-init\0--\0{AGENT}\0".encode(), False),
        ("the agent itself", "labbuilder-agen\n", f"/bin/sh\0{AGENT}\0".encode(), False),
        ("an older labbuilder's node", "docker-init\n", b"/sbin/docker-init\0--\0sleep\0infinity\0", True),
    ],
)
def test_only_a_written_command_line_without_the_agent_means_no_agent(
    tmp_path: Path, moment: str, comm: str, cmdline: bytes, without_agent: bool
) -> None:
    (tmp_path / "comm").write_text(comm)
    (tmp_path / "cmdline").write_bytes(cmdline)
    holds = subprocess.run(["sh", "-c", runs_no_agent(str(tmp_path))]).returncode == 0
    assert holds is without_agent, moment
