"""Work on the engine's host: argv in its pid namespace, netlink steps by namespace path.

Everything labbuilder does beyond the Docker API needs the engine host's `/proc`: `nsenter -t
PID` into a container, the host's `ip` naming a container's netns by pid, pyroute2 sockets
opened at `/proc/PID/ns/net`. `HostExec` is that one door, two ways:

- `LocalExec` — the engine is this host (a unix socket): a subprocess, and netlink in this
  process, exactly as fast as before there were two ways.
- `HelperExec` — the engine is elsewhere (tcp, ssh): a short-lived helper container beside it
  does the same work, fed one JSON request over stdin per call and answering JSON
  (`engine/helper.py`). The helper is the node image with `--pid host` (so `/proc/PID` means
  the engine host's pids), `--network none`, no docker socket, never privileged, labelled
  `labbuilder.helper` and `sleep`ing at most HELPER_TTL: a helper left by a crash goes away by
  itself, and `docker ps --filter label=labbuilder.helper` finds it meanwhile.

Only `engine/` knows which way it talks: `LabHandle.enter` and `LabHandle.netlink` call
`engine.host`, and apply, reset, readback, checks and trace run the same code either way.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import importlib.util
import io
import os
import shlex
import socket
import tarfile
import threading
import uuid
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from labbuilder.compile.ops import Ns
from labbuilder.engine import helper
from labbuilder.engine.dockerapi import docker_errors, tar_of
from labbuilder.engine.netlink import Netlink, RestoreLinkLocal, Step, run_steps

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

HELPER_LABEL = "labbuilder.helper"  # value: "<client host>:<client pid>", who started it
HELPER_REPO = "labbuilder/helper"  # the node image plus the payload layer
IMAGE_LABEL = "labbuilder.image"  # "helper" (the node image says "node")
HELPER_TTL = 3600  # seconds a helper lives at most; a later call starts a new one
HELPER_CAPS = ("NET_ADMIN", "SYS_ADMIN", "NET_RAW")  # the nodes' three, on top of Docker's defaults
HELPER_ROOT = "/opt/labbuilder-helper"  # labbuilder and pyroute2, put in at start
ARG_LIMIT = 96 * 1024  # a request up to this size travels in argv (MAX_ARG_STRLEN is 128 KiB)


class EngineSide(Protocol):
    """What the helper needs of runtime.Engine (named here: runtime imports this module)."""

    @property
    def name(self) -> str: ...

    @property
    def client(self) -> docker.DockerClient: ...

    def ensure_image(self, progress: Callable[[str], None]) -> str: ...


class HostExec(Protocol):
    def run(self, argv: Sequence[str], stdin: bytes | None = None) -> tuple[int, str]:
        """argv in the engine host's pid namespace (so `nsenter -t PID` and `netns PID` name the
        engine's containers); its status and stdout+stderr. Never raises on the status."""
        ...

    def netlink(self, steps: Sequence[Step], ns_path: Callable[[Ns], str]) -> list[str]:
        """The netlink steps in order, each namespace opened at `ns_path(ns)` on the engine host."""
        ...

    def close(self) -> None: ...


class LocalExec:
    """The engine is this host."""

    def run(self, argv: Sequence[str], stdin: bytes | None = None) -> tuple[int, str]:
        return helper.run_here(argv, stdin)

    def netlink(self, steps: Sequence[Step], ns_path: Callable[[Ns], str]) -> list[str]:
        with Netlink(ns_path) as nl:
            return run_steps(nl, steps)

    def close(self) -> None:
        pass


def step_namespaces(steps: Sequence[Step]) -> set[Ns]:
    """Every namespace the steps open: their own, and a veth's peer's."""
    found: set[Ns] = set()
    for step in steps:
        found.add(step.ns)
        peer = getattr(step, "peer_ns", None)
        if isinstance(peer, Ns):
            found.add(peer)
    return found


def helper_command(request: bytes, request_file: str | None = None) -> list[str]:
    """The helper's command for one request: the request on its stdin, from argv (base64) when
    it is small, else from a file already put into the helper."""
    python = f"PYTHONPATH={HELPER_ROOT} exec python3 -S -m labbuilder.engine.helper"
    if request_file is None:
        return ["sh", "-c", f'printf %s "$1" | base64 -d | {python}', "helper", base64.b64encode(request).decode()]
    quoted = shlex.quote(request_file)
    return ["sh", "-c", f"{python} < {quoted}; status=$?; rm -f {quoted}; exit $status"]


def helper_labels() -> dict[str, str]:
    return {HELPER_LABEL: f"{socket.gethostname()}:{os.getpid()}"}


def _payload_files() -> list[tuple[Path, str]]:
    """(file, its name in the helper) for labbuilder and pyroute2: sources and compiled modules
    (the helper's python is 3.11 as ours is: they are used as they are)."""
    files = []
    for package in ("labbuilder", "pyroute2"):
        found = importlib.util.find_spec(package)  # where it is, without importing it (pyroute2: 0.2 s)
        assert found is not None and found.origin is not None, package
        root = Path(found.origin).parent
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in (".py", ".pyc"):
                files.append((path, f"{HELPER_ROOT.lstrip('/')}/{root.name}/{path.relative_to(root)}"))
    return files


@cache
def helper_digest(base: str) -> str:
    """12 hex of the node image's tag and every payload source: another labbuilder, another image."""
    digest = hashlib.sha256(base.encode())
    for path, name in _payload_files():
        if path.suffix == ".py":
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@cache
def helper_payload() -> bytes:
    """labbuilder and pyroute2 as a gzipped tar of HELPER_ROOT (Docker makes its folders)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path, name in _payload_files():
            tar.add(path, arcname=name, recursive=False)
    return buffer.getvalue()


def _debug(line: str) -> None:
    if os.environ.get("LABBUILDER_DEBUG", "") not in ("", "0"):
        print(f"debug: {line}", flush=True, file=__import__("sys").stderr)


class HelperExec:
    """The engine is elsewhere: the work runs in a helper container beside it."""

    def __init__(self, engine: EngineSide):
        self.engine = engine
        self._container: Container | None = None
        self._lock = threading.Lock()

    def _helper(self) -> Container:
        with self._lock:
            if self._container is None:
                self._container = self._start()
                atexit.register(self.close)
            return self._container

    def _start(self) -> Container:
        image = self._image()
        name = f"labbuilder-helper-{uuid.uuid4().hex[:12]}"
        with docker_errors(f"cannot start a helper container on engine {self.engine.name}"):
            container = self.engine.client.containers.run(
                image,
                ["sleep", str(HELPER_TTL)],
                name=name,
                labels=helper_labels(),
                # The engine host's pids: `nsenter -t PID`, `netns PID` and /proc/PID/ns paths
                # name the lab's containers as they do on the host itself.
                pid_mode="host",
                network_mode="none",
                # Docker's default capabilities plus the nodes' three, not fewer: opening another
                # process's /proc/PID/ns/* is a ptrace-read check, which the kernel grants only
                # when the target's capabilities are a subset of ours (the nodes hold the same
                # set). Docker's default seccomp profile allows setns/unshare/mount with
                # SYS_ADMIN; docker-default AppArmor allows ptrace between its own confined
                # peers (helper and nodes alike), so no security-opt is needed. Never privileged.
                cap_add=list(HELPER_CAPS),
                auto_remove=True,
                detach=True,
                stop_signal="SIGKILL",
            )
        _debug(f"engine {self.engine.name}: host work runs in helper container {name}")
        return container

    def _image(self) -> str:
        """The helper image: the node image plus one layer holding labbuilder and pyroute2, made
        once per engine and payload (`labbuilder/helper:<digest>`). Measured here: putting the
        payload into every helper cost 0.7 s per command (0.35 s to pack it, 0.3 s to send it);
        the layer costs that once, and a helper then starts in about 0.2 s."""
        import docker.errors  # the SDK, here only: a remote engine's helper is worth its import

        base = self.engine.ensure_image(lambda _: None)
        tag = f"{HELPER_REPO}:{helper_digest(base)}"
        client = self.engine.client
        with docker_errors(f"cannot make the helper image on engine {self.engine.name}"):
            try:
                client.images.get(tag)
                return tag
            except docker.errors.ImageNotFound:
                pass
            # Labelled like a helper: even a crash right here leaves nothing that a label misses.
            scratch = client.containers.create(base, ["true"], labels=helper_labels(), network_mode="none")
            try:
                scratch.put_archive("/", helper_payload())
                scratch.commit(HELPER_REPO, tag.split(":", 1)[1], changes=[f"LABEL {IMAGE_LABEL}=helper"])
            finally:
                scratch.remove(force=True)
        _debug(f"made {tag} on engine {self.engine.name}")
        return tag

    def _ask(self, request: bytes) -> dict[str, object]:
        import docker.errors

        try:
            return self._ask_once(request)
        except docker.errors.APIError as err:
            # Gone (HELPER_TTL passed, or someone removed it) or going: a new helper, once.
            if getattr(err, "status_code", None) not in (404, 409):
                with docker_errors(f"the helper container on engine {self.engine.name} failed"):
                    raise
            _debug(f"helper on engine {self.engine.name} gone ({err}): starting another")
            self.close()
            with docker_errors(f"the helper container on engine {self.engine.name} failed"):
                return self._ask_once(request)

    def _ask_once(self, request: bytes) -> dict[str, object]:
        container = self._helper()
        if len(request) <= ARG_LIMIT:
            argv = helper_command(request)
        else:
            path = f"/tmp/labbuilder-request-{uuid.uuid4().hex}.json"
            container.put_archive("/", tar_of({path.lstrip("/"): request}))
            argv = helper_command(request, path)
        _, (out, err) = container.exec_run(argv, demux=True)
        return helper.read_answer(out or b"", err or b"")

    def run(self, argv: Sequence[str], stdin: bytes | None = None) -> tuple[int, str]:
        answer = self._ask(helper.run_request(argv, stdin))
        return int(answer["code"]), str(answer["output"])  # type: ignore[call-overload]

    def netlink(self, steps: Sequence[Step], ns_path: Callable[[Ns], str]) -> list[str]:
        if not steps:
            return []
        paths = {ns: ns_path(ns) for ns in step_namespaces(steps)}
        answer = self._ask(helper.netlink_request(steps, paths))
        return [str(name) for name in answer["repaired"]]  # type: ignore[attr-defined]

    def close(self) -> None:
        """Remove the helper (auto_remove would too, once killed)."""
        with self._lock:
            container, self._container = self._container, None
        if container is None:
            return
        import docker.errors

        # Already going (auto_remove), or the engine went away: HELPER_TTL ends it then.
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)


__all__ = ["HELPER_LABEL", "HelperExec", "HostExec", "LocalExec", "RestoreLinkLocal"]
