"""`labbuilder render`: the lab as a shell script — sealed containers, every planned command, nothing on the host."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from labbuilder.cli.main import main
from labbuilder.compile.ops import ROUTER, Iptables, Phase, Process, Veth, WriteFile
from labbuilder.compile.plan import compile_plan
from labbuilder.present.render import render_sh
from labbuilder.spec.load import load
from labbuilder.spec.resolve import build_model
from tests.conftest import LABS

SHIPPED = sorted(p.stem for p in LABS.glob("*.yaml"))
HEREDOC = re.compile(r"<<'(\w+)'\n.*?\n\1\n", re.S)


def script_for(name: str, rename: str | None = None):
    spec = load(str(LABS / f"{name}.yaml"))
    if rename:
        spec.data["name"] = rename
    lab = build_model(spec).lab
    return lab, render_sh(lab, yaml.safe_dump(spec.data, sort_keys=False), "labbuilder/node:test")


def host_commands(script: str) -> list[str]:
    """The commands the script runs on the host itself: everything outside the here-documents."""
    outside = HEREDOC.sub("<<heredoc\n", script)
    return [line for line in outside.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("name", SHIPPED)
def test_script_is_valid_sh(name):
    _, script = script_for(name)
    sh = shutil.which("dash") or shutil.which("sh")
    assert sh
    check = subprocess.run([sh, "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("name", SHIPPED)
def test_containers_are_sealed_labelled_and_never_privileged(name):
    lab, script = script_for(name)
    runs = [c for c in host_commands(script) if c.startswith("docker run")]
    assert len(runs) == len(lab.nodes) + 1
    digest = compile_plan(lab).digest
    for run in runs:
        assert "--network none" in run and "--privileged" not in run
        assert all(f"--cap-add {cap}" in run for cap in ("NET_ADMIN", "SYS_ADMIN", "NET_RAW"))
        assert f"--label labbuilder.lab={lab.name}" in run and f"--label labbuilder.spec-hash={digest}" in run
        assert "--sysctl net.ipv4.ip_forward=1" in run


@pytest.mark.parametrize("name", SHIPPED)
def test_the_host_only_creates_links_inside_lab_namespaces(name):
    lab, script = script_for(name)
    for command in host_commands(script):
        if re.search(r"\bip\b", command) and not command.startswith(("docker exec", "echo ")):
            assert re.fullmatch(r'nsenter -t "\$ROUTER_PID" -n ip link add \S+ .* netns "\$\w+_PID"', command), command
    uplinks = [c for c in host_commands(script) if c.startswith("nsenter")]
    assert len(uplinks) == len(lab.nodes)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_planned_operation_is_in_the_script_in_apply_order(name):
    lab, script = script_for(name)
    plan = compile_plan(lab)
    blocks = re.findall(r"docker exec -i (\S+) sh -es <<'EOS'\n(.*?)\nEOS\n", script, re.S)
    for key, ops in plan.steps.items():
        container = lab.router_name if key == ROUTER else lab.container_name(key)
        mine = "\n".join(body for name, body in blocks if name == container)
        position = 0
        phases = [[o for o in ops if o.phase == phase] for phase in (Phase.NETNS, Phase.LINKS, Phase.ROUTES)]
        for op in (o for phase in phases for o in phase if o.ns.container == key):
            if isinstance(op, Veth) and op.peer_ns.container != key:
                continue  # made from the host with nsenter, checked above
            found = mine.find(op.describe() + "\n", position)
            assert found >= 0, f"{container}: `{op.describe()}` missing or out of order"
            position = found
        for op in ops:
            if isinstance(op, WriteFile):
                assert op.describe() in mine
            if isinstance(op, Iptables):
                assert op.payload.rstrip() in mine and "iptables-restore /run/labbuilder/iptables.rules" in mine
            if isinstance(op, Process):
                assert f"/run/labbuilder/pids/{op.name}.pid" in mine


def test_a_renamed_copy_uses_its_own_names_and_keeps_the_renamed_spec_in_the_router():
    lab, script = script_for("kthw", rename="byhand")
    assert "kthw-" not in script.replace("byhand", "")
    assert "--name byhand-worker-0" in script and "--label labbuilder.lab=byhand" in script
    spec = re.search(r"cat > /etc/labbuilder/lab.yaml' <<'EOF'\n(.*?)\nEOF\n", script, re.S)
    assert spec and yaml.safe_load(spec.group(1))["name"] == "byhand"
    assert all(pod.netns in script for pod in lab.pods)


def test_cli_render_prints_the_script_for_a_shipped_lab_with_an_image_of_choice():
    result = CliRunner().invoke(main, ["render", "kthw", "--name", "copy", "--image", "mine:1"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("#!/bin/sh\n")
    assert 'IMAGE="${IMAGE:-mine:1}"' in result.output and "--name copy-router" in result.output
