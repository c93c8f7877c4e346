"""Which engine a command talks to, and which way its host work goes: contexts read from the
Docker CLI's own store layout, Docker's order of precedence, local (unix) versus remote (tcp,
ssh), and one-sentence errors for an unknown or unreachable engine."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labbuilder.engine.runtime import (
    CONTEXT_ENV,
    HELPER_ENV,
    LOCAL,
    Endpoint,
    EngineError,
    memory_in_use,
    resolve_endpoint,
)


def make_context(config: Path, name: str, host: str, tls: bool = False, skip_verify: bool = False) -> None:
    """A context as `docker context create` stores it: meta.json under the sha256 of its name."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    endpoint = {"Host": host, "SkipTLSVerify": skip_verify}
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}}))
    if tls:
        folder = config / "contexts" / "tls" / digest / "docker"
        folder.mkdir(parents=True)
        for file in ("ca.pem", "cert.pem", "key.pem"):
            (folder / file).write_text("-----BEGIN CERTIFICATE-----\n")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(HELPER_ENV, raising=False)
    make_context(tmp_path, "second", "tcp://127.0.0.1:23750", tls=True)
    make_context(tmp_path, "plain", "tcp://10.0.0.9:2375")
    make_context(tmp_path, "far", "ssh://lab@server.example")
    make_context(tmp_path, "sock", "unix:///run/labbuilder-second/docker.sock")
    return tmp_path


def env(config: Path, **values: str) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(config), **values}


def test_the_default_engine_is_the_local_socket_and_is_local(config):
    for name in (None, "local", "default"):
        endpoint = resolve_endpoint(name, env(config))
        assert endpoint == Endpoint(LOCAL, "unix:///var/run/docker.sock")
        assert not endpoint.remote


def test_a_context_with_tls_carries_the_context_s_certificates_verified(config):
    endpoint = resolve_endpoint("second", env(config))
    assert (endpoint.name, endpoint.base_url, endpoint.remote) == ("second", "tcp://127.0.0.1:23750", True)
    tls = endpoint.tls
    assert tls is not None
    folder = config / "contexts" / "tls" / hashlib.sha256(b"second").hexdigest() / "docker"
    assert tls.ca == str(folder / "ca.pem")
    assert (tls.cert, tls.key) == (str(folder / "cert.pem"), str(folder / "key.pem"))
    assert tls.verify is True
    assert resolve_endpoint("plain", env(config)).tls is None
    # `labbuilder exec` hands over to the docker CLI: it must reach the same engine
    assert endpoint.cli_args == ["--context", "second"]
    assert resolve_endpoint(None, env(config)).cli_args == []
    assert resolve_endpoint(None, env(config, DOCKER_HOST="tcp://x:1")).cli_args == []  # the CLI reads it too


def test_docker_host_with_tls_as_docker_reads_it(config):
    certs = config / "certs"
    certs.mkdir()
    for file in ("ca.pem", "cert.pem", "key.pem"):
        (certs / file).write_text("-----BEGIN CERTIFICATE-----\n")
    chosen = resolve_endpoint(
        None, env(config, DOCKER_HOST="tcp://10.1.1.1:2376", DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(certs))
    )
    assert (chosen.name, chosen.remote, chosen.from_context) == ("tcp://10.1.1.1:2376", True, False)
    assert chosen.tls is not None
    assert chosen.tls.ca == str(certs / "ca.pem") and chosen.tls.verify is True
    assert resolve_endpoint(None, env(config, DOCKER_HOST="tcp://10.1.1.1:2375")).tls is None


def test_tcp_and_ssh_are_remote_a_unix_socket_is_this_host(config):
    assert resolve_endpoint("plain", env(config)).remote
    assert resolve_endpoint("far", env(config)).remote
    assert not resolve_endpoint("sock", env(config)).remote  # a second dockerd on this machine
    assert resolve_endpoint(None, env(config, DOCKER_HOST="tcp://10.1.1.1:2376")).remote


def test_the_helper_can_be_forced_on_a_local_engine(config, monkeypatch):
    monkeypatch.setenv(HELPER_ENV, "always")
    assert resolve_endpoint("sock", env(config)).remote


def test_precedence_is_docker_s(config):
    # an explicit name (--context sets LABBUILDER_CONTEXT) beats DOCKER_HOST
    assert resolve_endpoint(None, env(config, **{CONTEXT_ENV: "second", "DOCKER_HOST": "tcp://x:1"})).name == "second"
    assert resolve_endpoint("plain", env(config, **{CONTEXT_ENV: "second"})).name == "plain"
    # DOCKER_HOST beats DOCKER_CONTEXT; the engine is then named by its address
    chosen = resolve_endpoint(None, env(config, DOCKER_HOST="tcp://x:1", DOCKER_CONTEXT="second"))
    assert (chosen.name, chosen.base_url) == ("tcp://x:1", "tcp://x:1")
    assert resolve_endpoint(None, env(config, DOCKER_CONTEXT="far")).name == "far"
    # then the CLI config's current context
    (config / "config.json").write_text(json.dumps({"currentContext": "plain"}))
    assert resolve_endpoint(None, env(config)).name == "plain"
    assert resolve_endpoint(None, env(config, DOCKER_CONTEXT="far")).name == "far"
    assert resolve_endpoint("local", env(config)).name == LOCAL  # "local" is always the default engine


def test_an_unknown_context_is_one_sentence_with_a_hint(config):
    with pytest.raises(EngineError) as raised:
        resolve_endpoint("nope", env(config))
    assert str(raised.value).startswith("no Docker context named nope (`docker context ls` lists them")


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin", "DOCKER_CONFIG": str(config), "HOME": str(config)}
    return subprocess.run(
        [sys.executable, "-m", "labbuilder", *args], capture_output=True, text=True, env=environment, timeout=60
    )


def test_cli_context_option_unknown_and_unreachable_engines(config):
    unknown = run_cli(config, "--context", "nope", "ls")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.startswith("error: no Docker context named nope")
    make_context(config, "closed", "tcp://127.0.0.1:1")  # nothing listens on port 1
    closed = run_cli(config, "--context", "closed", "status", "x")
    assert closed.returncode == 1 and "Traceback" not in closed.stderr
    assert closed.stderr.startswith("error: cannot reach the Docker engine closed:")
    assert "`docker --context closed info`" in closed.stderr
    by_env = subprocess.run(
        [sys.executable, "-m", "labbuilder", "ls"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "DOCKER_CONFIG": str(config), "LABBUILDER_CONTEXT": "nope"},
        timeout=60,
    )
    assert by_env.stderr.startswith("error: no Docker context named nope")


def test_memory_in_use_is_what_docker_stats_shows():
    v2 = {"usage": 50_000_000, "stats": {"inactive_file": 8_000_000}}
    v1 = {"usage": 50_000_000, "stats": {"total_inactive_file": 10_000_000}}
    assert memory_in_use(v2) == 42_000_000
    assert memory_in_use(v1) == 40_000_000
    assert memory_in_use({}) == 0


def test_the_kernel_probe_a_helper_runs_reads_what_host_kernel_reads(tmp_path):
    from labbuilder.engine.kernel import PROBE, host_kernel, parse_probe

    probed = subprocess.run(["sh", "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert parse_probe(probed) == host_kernel()  # the same facts, read the helper's way
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "ip_vs").write_text("")
    assert host_kernel(tmp_path) == parse_probe("ipvs\n")
    assert parse_probe("sctp\nipvs\n").sctp and not parse_probe("").ipvs
