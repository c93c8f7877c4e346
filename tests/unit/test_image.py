"""Node image recipe and pod server, without docker or root."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from labbuilder.engine import image
from labbuilder.errors import LabError

PODSERVER = image.template_dir() / "podserver.py"
REQUIRED_PACKAGES = {
    "iproute2", "iptables", "conntrack", "tcpdump", "ethtool", "bridge-utils", "iputils-ping", "curl",
    "procps", "util-linux", "busybox", "python3", "dnsmasq-base", "netcat-openbsd",
    "nftables", "ipset",
}  # fmt: skip
TIMEOUT = 5.0


# ---------------------------------------------------------------- recipe and tag


def test_tag_is_deterministic_and_shaped() -> None:
    tag = image.image_tag()
    assert re.fullmatch(r"labbuilder/node:[0-9a-f]{12}", tag)
    assert tag == image.image_tag()
    fresh = image.Recipe(
        packages=image.parse_packages((image.template_dir() / "packages.txt").read_text()),
        podserver=PODSERVER.read_text(),
        agent=(image.template_dir() / "agent.sh").read_text(),
        dockerfile=(image.template_dir() / "Dockerfile").read_text(),
        pause=(image.template_dir() / "pause.x86_64").read_bytes().hex(),
    )
    assert fresh.tag() == tag
    assert tag.endswith(fresh.digest()[:12])


def test_tag_changes_when_the_recipe_changes() -> None:
    recipe = image.load_recipe()
    variants = [
        recipe,
        dataclasses.replace(recipe, packages=(*recipe.packages, "vim-tiny")),
        dataclasses.replace(recipe, podserver=recipe.podserver + "\n# changed\n"),
        dataclasses.replace(recipe, agent=recipe.agent + "\n# changed\n"),
        dataclasses.replace(recipe, dockerfile=recipe.dockerfile + "\n# changed\n"),
        dataclasses.replace(recipe, pause=recipe.pause + "90"),
        dataclasses.replace(recipe, version=recipe.version + ".1"),
        dataclasses.replace(recipe, suite="trixie"),
        dataclasses.replace(recipe, import_changes=(*recipe.import_changes, "WORKDIR /root")),
    ]
    assert len({v.tag() for v in variants}) == len(variants)


def test_package_list_has_the_required_tools() -> None:
    packages = image.load_recipe().packages
    assert set(packages) >= REQUIRED_PACKAGES
    assert "python3-minimal" not in packages  # socketserver lives in the full python3
    assert len(packages) == len(set(packages))


def test_the_pause_binary_is_what_pause_py_writes() -> None:
    written = subprocess.run([sys.executable, str(image.template_dir() / "pause.py")], capture_output=True, check=True)
    assert written.stdout == (image.template_dir() / "pause.x86_64").read_bytes()
    assert written.stdout[:4] == b"\x7fELF" and len(written.stdout) < 256


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="pause.x86_64 is the x86-64 sandbox process")
def test_pause_waits_until_a_signal_ends_it_and_costs_little(tmp_path: Path) -> None:
    """Run as a pod's sandbox runs it (`/pause infinity`): it waits, asleep, with a few pages of
    its own (a copy of `sleep` has ≈100 KB of private pages and ≈40 KB of page tables), and the
    default action of SIGTERM ends it."""
    program = tmp_path / "pause"
    program.write_bytes((image.template_dir() / "pause.x86_64").read_bytes())
    program.chmod(0o755)
    process = subprocess.Popen([str(program), "infinity"])
    try:
        time.sleep(0.2)
        status = Path(f"/proc/{process.pid}/status").read_text()
        assert process.poll() is None and "State:\tS (sleeping)" in status
        rollup = Path(f"/proc/{process.pid}/smaps_rollup").read_text()
        private = int(re.search(r"Private_Dirty:\s+(\d+) kB", rollup).group(1))  # type: ignore[union-attr]
        tables = int(re.search(r"VmPTE:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        assert private + tables <= 48, (private, tables)
        process.send_signal(signal.SIGCONT)  # a signal it does not act on: it waits on
        time.sleep(0.1)
        assert process.poll() is None
    finally:
        process.terminate()
    assert process.wait(timeout=5) == -signal.SIGTERM


def test_parse_packages_skips_comments_and_blanks() -> None:
    assert image.parse_packages("# head\n\na  # why\n b\n#c\n") == ("a", "b")


def test_dockerfile_uses_the_same_recipe_files() -> None:
    text = (image.template_dir() / "Dockerfile").read_text()
    assert "FROM debian:bookworm-slim" in text
    assert "packages.txt" in text and "podserver.py /usr/local/bin/podserver" in text
    assert "agent.sh /usr/local/bin/labbuilder-agent" in text
    assert "COPY pause.x86_64 /pause" in text and 'CMD ["/pause", "infinity"]' in text
    assert "labbuilder.image=node" in text


def test_mmdebstrap_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABBUILDER_DEBIAN_MIRROR", raising=False)
    recipe = image.load_recipe()
    cmd = image.mmdebstrap_command(recipe, "/t/rootfs.tar", "/t")
    assert cmd[0] == "mmdebstrap" and "--variant=minbase" in cmd
    include = next(a for a in cmd if a.startswith("--include="))
    assert set(include.removeprefix("--include=").split(",")) == set(recipe.packages)
    assert "--customize-hook=upload /t/podserver.py /usr/local/bin/podserver" in cmd
    assert "--customize-hook=upload /t/agent.sh /usr/local/bin/labbuilder-agent" in cmd
    assert "--customize-hook=upload /t/pause.x86_64 /pause" in cmd
    assert any('"$1/pause"' in a and "x86_64 ] || cp" in a and "sleep" in a for a in cmd)  # elsewhere: sleep
    assert cmd[-2:] == ["bookworm", "/t/rootfs.tar"]
    monkeypatch.setenv("LABBUILDER_DEBIAN_MIRROR", "http://mirror.example/debian")
    assert image.mmdebstrap_command(recipe, "/t/rootfs.tar", "/t/p")[-1] == "http://mirror.example/debian"


# ---------------------------------------------------------------- build paths, with fakes


class FakeImages:
    def __init__(self, present: set[str]):
        self.present = present

    def get(self, tag: str) -> Any:
        if tag not in self.present:
            raise docker.errors.ImageNotFound(tag)
        return SimpleNamespace(tags=[tag])


class FakeAPI:
    def __init__(self, images: FakeImages, build_chunks: list[dict[str, Any]], build_ok: bool):
        self.images, self.build_chunks, self.build_ok = images, build_chunks, build_ok
        self.imported: dict[str, Any] = {}
        self.built: dict[str, Any] = {}

    def import_image(self, **kwargs: Any) -> str:
        self.imported = kwargs
        assert Path(kwargs["src"]).read_bytes() == b"fake tarball\n"
        self.images.present.add(f"{kwargs['repository']}:{kwargs['tag']}")
        return json.dumps({"status": "sha256:" + "0" * 64}) + "\r\n"

    def build(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.built = kwargs
        yield from self.build_chunks
        if self.build_ok:
            self.images.present.add(kwargs["tag"])


def fake_client(present: set[str] | None = None, chunks: list[dict[str, Any]] | None = None, ok: bool = True) -> Any:
    images = FakeImages(present or set())
    return SimpleNamespace(images=images, api=FakeAPI(images, chunks or [], ok))


@pytest.fixture
def fake_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `mmdebstrap` on PATH that writes a small file to its target (the last argument)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "mmdebstrap"
    script.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do last="$a"; done\n'
        'echo "I: downloading packages with apt..." >&2\n'
        'echo "Get:1 http://deb.debian.org/debian bookworm/main amd64 curl"\n'
        'if [ -n "$FAIL" ]; then echo "E: mirror unreachable" >&2; exit 3; fi\n'
        'echo "fake tarball" > "$last"\n'
        'echo "I: creating tarball..." >&2\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.delenv("LABBUILDER_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("FAIL", raising=False)
    monkeypatch.setattr(image.tempfile, "tempdir", str(tmp_path))
    return script


def test_build_with_mmdebstrap_imports_the_tarball(fake_mmdebstrap: Path) -> None:
    client = fake_client()
    progress: list[str] = []
    tag = image.build_image(client, on_progress=progress.append)
    assert tag == image.image_tag()
    imported = client.api.imported
    assert f"{imported['repository']}:{imported['tag']}" == tag
    assert 'CMD ["/pause", "infinity"]' in imported["changes"]
    assert "LABEL labbuilder.image=node" in imported["changes"]
    assert f"LABEL labbuilder.recipe={image.load_recipe().digest()}" in imported["changes"]
    assert progress[0].startswith("debootstrapping bookworm")
    assert "downloading packages with apt" in progress and "creating tarball" in progress
    assert any(p.startswith("importing into docker") for p in progress)
    assert not any("Get:1" in p for p in progress)


def test_mmdebstrap_failure_quotes_the_log(fake_mmdebstrap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIL", "1")
    client = fake_client()
    with pytest.raises(LabError) as caught:
        image.build_image(client, method="mmdebstrap")
    assert "exit 3" in caught.value.message and "E: mirror unreachable" in caught.value.message
    log = Path(caught.value.hint.rsplit("full log: ", 1)[1])
    assert "E: mirror unreachable" in log.read_text()
    assert client.api.imported == {}


def test_auto_uses_the_dockerfile_without_mmdebstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image.shutil, "which", lambda _: None)
    chunks = [{"stream": "Step 1/9 : FROM debian:bookworm-slim\n"}, {"stream": " ---> abc\n"}]
    client = fake_client(chunks=chunks)
    progress: list[str] = []
    tag = image.build_image(client, on_progress=progress.append)
    assert tag == image.image_tag()
    assert client.api.built["tag"] == tag
    assert client.api.built["labels"]["labbuilder.image"] == "node"
    assert Path(client.api.built["path"]) == image.template_dir()
    assert "Step 1/9 : FROM debian:bookworm-slim" in progress


def test_dockerfile_failure_quotes_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image.tempfile, "tempdir", str(tmp_path))
    chunks: list[dict[str, Any]] = [
        {"stream": "Step 1/9 : FROM debian:bookworm-slim\n"},
        {"error": "pull access denied for debian", "errorDetail": {"message": "pull access denied"}},
    ]
    client = fake_client(chunks=chunks, ok=False)
    with pytest.raises(LabError) as caught:
        image.build_image(client, method="dockerfile")
    assert "pull access denied for debian" in caught.value.message
    assert "Step 1/9" in caught.value.message
    assert "mmdebstrap" in caught.value.hint


def test_ensure_image_builds_only_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_build(client: Any, on_progress: Any) -> str:
        calls.append("build")
        return "built"

    monkeypatch.setattr(image, "build_image", fake_build)
    assert image.ensure_image(fake_client({image.image_tag()})) == image.image_tag()
    assert calls == []
    assert image.ensure_image(fake_client()) == "built"
    assert calls == ["build"]
    assert image.image_exists(fake_client({"x:y"}), "x:y")
    assert not image.image_exists(fake_client(), "x:y")


# ---------------------------------------------------------------- the pod server


class PodServer:
    def __init__(self, *args: str):
        cmd = [sys.executable, str(PODSERVER), "--name", "web-1", "--ip", "10.244.1.5", "--bind", "127.0.0.1"]
        self.proc = subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=lambda: list(map(lines.put, stdout)), daemon=True).start()
        self.ports: dict[str, list[int]] = {"tcp": [], "udp": []}
        for _ in range(args.count("--tcp") + args.count("--udp")):
            line = lines.get(timeout=TIMEOUT)
            match = re.fullmatch(r"podserver web-1: listening (tcp|udp) 127\.0\.0\.1:(\d+)\n", line)
            assert match, line
            self.ports[match[1]].append(int(match[2]))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=TIMEOUT)
        finally:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server() -> Iterator[PodServer]:
    srv = PodServer("--tcp", "0", "--tcp", "0", "--udp", "0")
    yield srv
    srv.proc.kill()
    srv.proc.wait()


def line_for(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"pod=web-1 ip=10.244.1.5 client={host}:{port}\n"


def tcp_exchange(port: int, data: bytes, shut: bool = True) -> tuple[bytes, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        expected = line_for(sock)
        if data:
            sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply, expected


def test_http_request_gets_a_response(server: PodServer) -> None:
    reply, expected = tcp_exchange(server.ports["tcp"][0], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", shut=False)
    head, _, body = reply.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.0 200 OK"
    assert "Content-Type: text/plain" in lines
    assert f"Content-Length: {len(expected)}" in lines
    assert body == expected


def test_urllib_on_every_tcp_port(server: PodServer) -> None:
    for port in server.ports["tcp"]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/some/path", timeout=TIMEOUT) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain"
            assert re.fullmatch(r"pod=web-1 ip=10\.244\.1\.5 client=127\.0\.0\.1:\d+\n", response.read().decode())


@pytest.mark.parametrize("data", [b"hello\n", b"hello\nmore\nlines\n" * 100, b"", b"\xff\xfe\x00 not text", b"GET /\n"])
def test_raw_tcp_gets_the_body_line(server: PodServer, data: bytes) -> None:
    reply, expected = tcp_exchange(server.ports["tcp"][1], data)
    assert reply.decode() == expected


def test_silent_tcp_client_gets_the_line_after_a_short_wait(server: PodServer) -> None:
    started = time.monotonic()
    reply, expected = tcp_exchange(server.ports["tcp"][0], b"", shut=False)
    assert reply.decode() == expected
    assert time.monotonic() - started < TIMEOUT


def test_udp_reply(server: PodServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind(("127.0.0.1", 0))
        for payload in (b"ping", b"", b"\xff" * 1000):
            sock.sendto(payload, ("127.0.0.1", server.ports["udp"][0]))
            data, sender = sock.recvfrom(4096)
            assert data.decode() == line_for(sock)
            assert sender == ("127.0.0.1", server.ports["udp"][0])


def test_many_clients_and_bad_ones(server: PodServer) -> None:
    port = server.ports["tcp"][0]
    for _ in range(5):  # clients that reset or vanish must not hurt the server
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    results: list[bool] = []

    def client(i: int) -> None:
        reply, expected = tcp_exchange(port, f"client {i}\n".encode())
        results.append(reply.decode() == expected)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert results == [True] * 40
    assert server.proc.poll() is None


def test_sigterm_exits_cleanly(server: PodServer) -> None:
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 2
    assert server.proc.stderr is not None
    assert "Traceback" not in server.proc.stderr.read()


def test_bad_arguments_are_refused() -> None:
    for args in ([], ["--name", "a", "--ip", "1.2.3.4"], ["--name", "a", "--ip", "1.2.3.4", "--tcp", "x"]):
        result = subprocess.run(
            [sys.executable, str(PODSERVER), *args], capture_output=True, text=True, timeout=TIMEOUT
        )
        assert result.returncode == 2, args
        assert "usage: podserver" in result.stderr
