"""Integration fixtures: real Docker engine, real kernel. Labs are brought up with the CLI, as a user would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABBUILDER = [sys.executable, "-m", "labbuilder"]


def sh(
    *argv: str, check: bool = True, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def labbuilder(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return sh(*LABBUILDER, *args, check=check, timeout=timeout)


def dexec(container: str, *argv: str, check: bool = True) -> str:
    return sh("docker", "exec", container, *argv, check=check).stdout


def pod_exec(container: str, netns: str, *argv: str, check: bool = True) -> str:
    return dexec(container, "ip", "netns", "exec", netns, *argv, check=check)


def host_state() -> dict[str, str]:
    """What labbuilder must never change in the host's own network namespace."""
    state = {}
    for name, argv in {
        "links": ["ip", "-o", "link", "show"],
        "addresses": ["ip", "-o", "addr", "show"],
        "routes": ["ip", "route", "show", "table", "all"],
        "netns": ["ip", "netns", "list"],
    }.items():
        state[name] = sh(*argv).stdout
    for table in ("nat", "filter"):
        saved = sh("iptables-save", "-t", table, check=False).stdout
        state[f"iptables-{table}"] = "\n".join(
            line.split(" [")[0] if line.startswith(":") else line
            for line in saved.splitlines()
            if not line.startswith("#")
        )
    return state


def lab_containers(lab: str) -> list[str]:
    out = sh("docker", "ps", "-a", "--filter", f"label=labbuilder.lab={lab}", "--format", "{{.Names}}").stdout
    return sorted(out.split())


@pytest.fixture(scope="session", autouse=True)
def docker_engine() -> None:
    if shutil.which("docker") is None or sh("docker", "info", check=False).returncode != 0:
        pytest.fail("no Docker engine: run `bash scripts/ensure-docker.sh` (the README's set-up does)")
    if os.geteuid() != 0:
        pytest.fail("integration tests open lab namespaces with netlink and need root")


@pytest.fixture(scope="session")
def host_before() -> dict[str, str]:
    return host_state()


def bring_up(lab_file: str, name: str) -> Iterator[str]:
    if lab_containers(name):
        pytest.fail(f"a lab named {name} is already on this host: `labbuilder down {name}` first")
    labbuilder("up", lab_file, "--name", name, "-q")
    try:
        yield name
    finally:
        labbuilder("down", name, check=False)


_VOLATILE = [
    (re.compile(r"\[\d+:\d+\]"), "[0:0]"),  # iptables packet counters move with any traffic
    (re.compile(r"\b(\w+_timer)\s+[\d.]+"), r"\1 -"),  # bridge timers tick
    # A recreated link gets a new ifindex; everything else about it (name, MAC, addresses) is fixed.
    (re.compile(r"^\d+: ", re.M), "N: "),
    (re.compile(r"@if\d+"), "@ifN"),
    (re.compile(r"link-netnsid \d+"), "link-netnsid N"),
    (re.compile(r"\b(valid_lft|preferred_lft) \S+"), r"\1 -"),
    (re.compile(r"\(id: \d+\)"), "(id: N)"),
    # Bridge port numbers follow attach order, and nodes attach their uplinks in parallel.
    (re.compile(r"port_id 0x\w+ port_no 0x\w+ designated_port \d+"), "port -"),
]


def _blocks(text: str) -> list[str]:
    """`ip link`/`ip addr` output as one block per link, in name order rather than ifindex order."""
    blocks: list[str] = []
    for line in text.splitlines():
        if re.match(r"\d+: ", line) or not blocks:
            blocks.append(line)
        else:
            blocks[-1] += "\n" + line
    return sorted(blocks, key=lambda block: re.sub(r"^\d+: ", "", block))


def dump(lab: str) -> str:
    """Normalised state of every container and pod of a lab: links, addresses, routes, netns, iptables."""
    parts = []
    for name in lab_containers(lab):
        pods = sorted(line.split()[0] for line in dexec(name, "ip", "netns").splitlines())
        namespaces = [[], *(["ip", "netns", "exec", netns] for netns in pods)]
        for prefix in namespaces:
            for argv in (["ip", "-d", "link"], ["ip", "addr"], ["ip", "route"], ["iptables-save"]):
                out = "\n".join(_blocks(dexec(name, *prefix, *argv)))
                for pattern, replacement in _VOLATILE:
                    out = pattern.sub(replacement, out)
                lines = [line for line in out.splitlines() if not line.startswith("#")]
                parts.append(f"== {name} {' '.join(prefix + argv)}\n" + "\n".join(lines))
    return "\n".join(parts)
