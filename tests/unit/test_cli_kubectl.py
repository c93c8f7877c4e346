"""The kubectl-shaped commands' pure parts (cli.kubectl): exec's arguments and argv, get's help."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from labbuilder.cli import kubectl
from labbuilder.errors import LabError


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["worker-0", "--", "ip", "route"], ("worker-0", ["ip", "route"], set())),
        (["worker-0", "ip", "route"], ("worker-0", ["ip", "route"], set())),
        (["-it", "worker-0/nginx"], ("worker-0/nginx", [], {"i", "t"})),
        (["worker-0/nginx", "-it", "--", "sh"], ("worker-0/nginx", ["sh"], {"i", "t"})),
        (["worker-0", "iptables", "-t", "nat", "-S"], ("worker-0", ["iptables", "-t", "nat", "-S"], set())),
        (["worker-0", "--", "-i"], ("worker-0", ["-i"], set())),
    ],
)
def test_exec_arguments(args, expected):
    assert kubectl.split_exec_args(args) == expected


def test_exec_needs_a_target():
    with pytest.raises(LabError, match="no NODE or NODE/POD"):
        kubectl.split_exec_args(["--", "ip", "route"])


def test_docker_exec_argv():
    assert kubectl.docker_exec_argv("kthw-worker-0", "cni-1", ["ip", "route"], set()) == [
        "docker", "exec", "kthw-worker-0", "ip", "netns", "exec", "cni-1", "ip", "route"
    ]  # fmt: skip
    assert kubectl.docker_exec_argv("kthw-router", None, ["bash"], {"t", "i"}) == [
        "docker", "exec", "-it", "kthw-router", "bash"
    ]  # fmt: skip
    on_second = kubectl.docker_exec_argv("x-router", None, ["ip", "route"], set(), ["--context", "second"])
    assert on_second == ["docker", "--context", "second", "exec", "x-router", "ip", "route"]
    assert kubectl.default_shell("nginx-1")[-2:] == ["bash", "--norc"]


def test_get_help_and_short_names():
    from labbuilder.cli.main import main

    runner = CliRunner()
    result = runner.invoke(main, ["get", "--help"])
    assert result.exit_code == 0 and "labbuilder get pods kthw -o wide" in result.output
    for alias in ("po", "svc", "ep", "no", "node"):
        result = runner.invoke(main, ["get", alias, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, alias
    result = runner.invoke(main, ["exec", "--help"])
    assert result.exit_code == 0 and "worker-0/nginx" in result.output
