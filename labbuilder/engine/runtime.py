"""The one door to the Docker engine: an `Engine` (the connection) and a `LabHandle` per lab.

Every container labbuilder creates carries `labbuilder.lab=<lab>`; that label is how every
command finds a lab without its file, and all it ever touches. A `LabHandle` owns a lab's
containers by key (node name, or "router"), and is the only way in: `exec(ns, argv)` in a
container or a pod netns, `put_files`, pids and namespace paths. Nothing outside `engine/`
talks to Docker: the everyday calls go through `dockerhttp` (the standard library), the Docker
SDK only builds images and helpers. Docker's errors leave this module as one sentence about
the lab (LabError), with the raw error kept for `--debug`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from labbuilder.compile.labels import LABEL_FLEET, LABEL_LAB, LABEL_NODE, LABEL_ROLE, LABEL_SPEC
from labbuilder.compile.ns import Ns
from labbuilder.compile.paths import AGENT, SPEC_COPY
from labbuilder.engine.dockerapi import TIMEOUT, EngineError, _explain, docker_errors, tar_of
from labbuilder.engine.dockerhttp import DockerHTTP, TLSFiles
from labbuilder.errors import LabError
from labbuilder.spec.keys import ROUTER

if TYPE_CHECKING:
    import docker

    from labbuilder.compile.plan import ContainerSpec
    from labbuilder.engine.hostexec import HostExec
    from labbuilder.engine.netlink import Step
    from labbuilder.spec.load import Spec
    from labbuilder.spec.model import HostKernel, Lab

T = TypeVar("T")


@dataclass(frozen=True)
class ExecResult:
    code: int
    output: str


@dataclass(frozen=True)
class ContainerInfo:
    """What commands need to know of a lab container, read from Docker once."""

    key: str  # node name, or ROUTER
    name: str
    lab: str
    role: str
    state: str  # running, exited, created, ...
    started: float | None  # epoch seconds of the last start
    spec_hash: str
    pid: int  # 0 when not running
    fleet: str = ""  # the fleet the lab belongs to, if any

    @property
    def running(self) -> bool:
        return self.state == "running"


def lock_dir() -> Path:
    """Where labbuilder's locks live: /run/labbuilder/locks for root (gone at reboot, like the
    locks), a per-user folder otherwise."""
    base = Path("/run/labbuilder") if os.geteuid() == 0 else Path(tempfile.gettempdir()) / f"labbuilder-{os.getuid()}"
    folder = base / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def churn(kind: str, engine: str = "local") -> Iterator[None]:
    """Container creations ("create") may run together, and removals ("remove") too, but never
    one while the other runs, across every labbuilder process on this host. Docker 20.10 can
    deadlock its network controller when endpoints are made and torn down at the same moment
    (moby/moby#42545, fixed after the 20.10 that Debian ships), and a workshop server starting
    some labs while removing others is exactly that. A flock: released when its holder dies.
    One lock per engine (each has its own network controller)."""
    name = "engine-churn.lock" if engine == LOCAL else f"engine-churn-{re.sub(r'[^A-Za-z0-9_.-]', '_', engine)}.lock"
    fd = os.open(lock_dir() / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if kind == "create" else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


LOCAL = "local"  # the name of the default engine: DOCKER_HOST, or the local socket
CONTEXT_ENV = "LABBUILDER_CONTEXT"  # what `--context NAME` sets, so every command honours it
HELPER_ENV = "LABBUILDER_HELPER"  # "always" forces the helper path even on a local socket (benchmarks)
LOCAL_SCHEMES = ("unix://", "http+unix://", "npipe://")
MIN_API = "1.41"  # Docker 20.10, Debian bookworm's: placeholder until the engine says its own


@dataclass(frozen=True)
class Endpoint:
    """Where an engine is and how to reach it, resolved from a context name or the environment."""

    name: str  # the context's name; LOCAL for the default engine
    base_url: str  # unix:///var/run/docker.sock, tcp://host:2376, ssh://user@host
    tls: TLSFiles | None = None  # the context's certificates, when it has them
    from_context: bool = False  # named by a Docker context (not DOCKER_HOST, not the default)

    @property
    def cli_args(self) -> list[str]:
        """What makes the docker CLI talk to this engine too (DOCKER_HOST reaches it by itself)."""
        return ["--context", self.name] if self.from_context else []

    @property
    def remote(self) -> bool:
        """Not on this host's kernel: /proc/PID of its containers is not ours. A unix socket is
        this host (a second dockerd on this machine too); tcp and ssh are taken as another host,
        even 127.0.0.1, so the second engine of the tests exercises the helper path."""
        if os.environ.get(HELPER_ENV) == "always":
            return True
        return not self.base_url.startswith(LOCAL_SCHEMES)


def docker_config_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def current_context(environ: Mapping[str, str]) -> str:
    """`currentContext` of the Docker CLI's config.json ("" when there is none)."""
    try:
        config = json.loads((docker_config_dir(environ) / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(config.get("currentContext") or "") if isinstance(config, dict) else ""


def read_context(name: str, environ: Mapping[str, str]) -> Endpoint | None:
    """A context from the Docker CLI's store (`contexts/meta/<sha256 of name>/meta.json`, its TLS
    files under `contexts/tls/<same>/docker/`), None when there is no such context. docker-py's
    ContextAPI reads the same store but looks for it beside config.json, and finds nothing when
    that file does not exist (a fresh `docker context create` does not make it)."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    store = docker_config_dir(environ) / "contexts"
    try:
        meta = json.loads((store / "meta" / digest / "meta.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise EngineError(f"cannot read the Docker context {name}: {err}", "`docker context inspect NAME`") from None
    endpoint = (meta.get("Endpoints") or {}).get("docker") or {}
    if not endpoint.get("Host"):
        return None
    tls_dir = store / "tls" / digest / "docker"
    tls = None
    if all((tls_dir / f).is_file() for f in ("ca.pem", "cert.pem", "key.pem")):
        tls = TLSFiles(
            ca=str(tls_dir / "ca.pem"),
            cert=str(tls_dir / "cert.pem"),
            key=str(tls_dir / "key.pem"),
            verify=not endpoint.get("SkipTLSVerify", False),
        )
    return Endpoint(name, str(endpoint["Host"]), tls, from_context=True)


def resolve_endpoint(context: str | None = None, environ: Mapping[str, str] | None = None) -> Endpoint:
    """Which engine a command talks to, in Docker's own order: an explicit name (`--context`,
    LABBUILDER_CONTEXT), then DOCKER_HOST, then DOCKER_CONTEXT, then the config's current context,
    then the local socket. "local" and "default" name the default engine (DOCKER_HOST or socket)."""
    env = os.environ if environ is None else environ
    name = context or env.get(CONTEXT_ENV) or ""
    if not name and not env.get("DOCKER_HOST"):
        name = env.get("DOCKER_CONTEXT") or current_context(env)
    if name in ("", LOCAL, "default"):
        host = env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return Endpoint(LOCAL if host.startswith(LOCAL_SCHEMES) else host, host, env_tls(env))
    found = read_context(name, env)
    if found is None:
        raise EngineError(
            f"no Docker context named {name}",
            "`docker context ls` lists them; `docker context create NAME --docker host=...` makes one",
        )
    return found


def env_tls(env: Mapping[str, str]) -> TLSFiles | None:
    """DOCKER_TLS_VERIFY / DOCKER_CERT_PATH as the Docker CLI reads them: with DOCKER_TLS_VERIFY
    set (to anything but ""), ca.pem, cert.pem and key.pem of DOCKER_CERT_PATH (~/.docker)."""
    if not env.get("DOCKER_HOST") or not env.get("DOCKER_TLS_VERIFY"):
        return None
    folder = Path(env.get("DOCKER_CERT_PATH") or docker_config_dir(env))
    return TLSFiles(ca=str(folder / "ca.pem"), cert=str(folder / "cert.pem"), key=str(folder / "key.pem"))


def connect(endpoint: Endpoint | None = None) -> docker.DockerClient:
    """The Docker SDK's client, for the few calls worth its weight (image builds, the helper)."""
    import docker
    import requests
    from docker.tls import TLSConfig

    where = endpoint or resolve_endpoint(LOCAL)
    tls = (
        TLSConfig(client_cert=(where.tls.cert, where.tls.key), ca_cert=where.tls.ca, verify=where.tls.verify)
        if where.tls
        else False
    )
    try:
        if where.base_url.startswith(LOCAL_SCHEMES) and where.tls is None:
            client = docker.DockerClient(base_url=where.base_url, timeout=TIMEOUT)
        else:
            client = docker.DockerClient(
                base_url=where.base_url,
                tls=tls,
                timeout=TIMEOUT,
                version=MIN_API,  # asked below, once the session trusts only the context's CA
                use_ssh_client=where.base_url.startswith("ssh://"),  # the ssh binary: ~/.ssh/config, agent
            )
            # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace the session's CA (psf/requests
            # #3829): the context's own CA must be the one that verifies the engine.
            client.api.trust_env = False
            client.api._version = str(client.api.version(api_version=False)["ApiVersion"])
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
        raise EngineError(
            f"cannot reach the Docker engine {where.name}: {_explain(err)}", unreachable_hint(where), str(err)
        ) from None
    return client


def unreachable_hint(where: Endpoint) -> str:
    if where.name == LOCAL and not where.remote:
        return "start it with `bash scripts/ensure-docker.sh` (installs and starts dockerd)"
    cli = " ".join(where.cli_args) if where.from_context else f"-H {where.base_url}"
    return f"is the engine at {where.base_url} running and reachable? `docker {cli} info`"


def parse_docker_time(text: str) -> float | None:
    """Docker's `State.StartedAt` (RFC 3339 with nanoseconds) as epoch seconds."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text or "")
    if not match or match.group(1).startswith("0001-"):
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    stamp = datetime.fromisoformat(match.group(1) + zone).timestamp()
    return stamp + float("0." + match.group(2)) if match.group(2) else stamp


Attrs = dict[str, Any]  # a container as `docker inspect` shows it (or the part a listing gives)


def labels_of(attrs: Attrs) -> dict[str, str]:
    return dict((attrs.get("Config") or {}).get("Labels") or {})


def name_of(attrs: Attrs) -> str:
    return str(attrs.get("Name", "")).lstrip("/")


def from_listing(summary: Attrs) -> Attrs:
    """A `docker ps` entry in `docker inspect`'s shape, as far as it goes (no pid, no start time)."""
    names = summary.get("Names") or [""]
    return {
        "Id": summary["Id"],
        "Name": names[0],
        "Config": {"Labels": summary.get("Labels") or {}},
        "State": {"Status": summary.get("State", "")},
    }


def _info(attrs: Attrs) -> ContainerInfo:
    labels = labels_of(attrs)
    state = attrs.get("State") or {}
    return ContainerInfo(
        key=labels.get(LABEL_NODE, ""),
        name=name_of(attrs),
        lab=labels.get(LABEL_LAB, ""),
        role=labels.get(LABEL_ROLE, ""),
        state=str(state.get("Status", "")),
        started=parse_docker_time(state.get("StartedAt", "")),
        spec_hash=labels.get(LABEL_SPEC, ""),
        pid=int(state.get("Pid") or 0),
        fleet=labels.get(LABEL_FLEET, ""),
    )


class Engine:
    """A Docker engine: the connection, the node image, and every lab's containers.

    `Engine()` is the engine the user chose: `--context NAME` (LABBUILDER_CONTEXT), else Docker's
    own order (DOCKER_HOST, DOCKER_CONTEXT, the current context, the local socket).
    `Engine("local")` is always the default engine; `Engine("NAME")` the Docker context NAME
    (unix, tcp with TLS, ssh). Nothing is contacted until the first call that needs the engine;
    an unknown context raises EngineError at once.
    """

    def __init__(self, context: str | None = None):
        self.endpoint = resolve_endpoint(context)
        self._client: docker.DockerClient | None = None
        self._api: DockerHTTP | None = None
        self._host: HostExec | None = None
        self._host_lock = threading.Lock()  # threads ask for it at once: one helper, not one each

    @property
    def host(self) -> HostExec:
        """Where work beside the engine runs: this host, or a helper container on the engine's."""
        with self._host_lock:
            if self._host is None:
                from labbuilder.engine.hostexec import HelperExec, LocalExec

                self._host = HelperExec(self) if self.remote else LocalExec()
            return self._host

    def close(self) -> None:
        """Let go of what this engine object started (the helper container, if any)."""
        if self._host is not None:
            self._host.close()

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def remote(self) -> bool:
        """True when the engine's containers are not on this host's kernel: effects beyond the
        Docker API then run in a helper container beside the engine (engine/hostexec.py)."""
        return self.endpoint.remote

    @property
    def where(self) -> str:
        """How messages name this engine: "this host" for the local one."""
        return "this host" if self.name == LOCAL else f"engine {self.name}"

    @property
    def api(self) -> DockerHTTP:
        """The engine's API for everyday calls (engine/dockerhttp.py)."""
        if self._api is None:
            where = self.endpoint
            self._api = DockerHTTP(where.base_url, where.tls, TIMEOUT, where.name, unreachable_hint(where))
        return self._api

    @property
    def client(self) -> docker.DockerClient:
        """The Docker SDK's client: building images, the helper container."""
        if self._client is None:
            self._client = connect(self.endpoint)
        return self._client

    def lab(self, name: str) -> LabHandle:
        return LabHandle(self, name)

    def _list(self, label: str, all: bool = True, inspect: bool = True) -> list[Attrs]:
        """The containers with `label`; inspected (in parallel) for their pids and start times
        unless `inspect` is False. One removed meanwhile is left out."""
        with docker_errors(f"cannot list the lab containers on engine {self.name}"):
            found = [from_listing(summary) for summary in self.api.containers(label, all)]
        if not inspect:
            return found

        def one(index: str) -> Attrs | None:
            try:
                with docker_errors(f"cannot inspect the lab containers on engine {self.name}"):
                    return self.api.inspect(found[int(index)]["Id"])
            except EngineError as err:
                if err.missing:
                    return None
                raise

        inspected = in_threads(one, [str(i) for i in range(len(found))])
        return [attrs for attrs in inspected.values() if attrs is not None]

    def containers(self, lab: str | None = None) -> list[ContainerInfo]:
        """The containers of one lab, or of every lab on this engine."""
        return [_info(c) for c in self._list(f"{LABEL_LAB}={lab}" if lab else LABEL_LAB)]

    def free_memory(self) -> int:
        """Bytes left for more labs: the engine's MemTotal (`docker info`) minus what the running
        labbuilder containers use now (their cgroups' usage less page cache, as `docker stats`
        shows it, read one-shot in parallel). Other workloads on the engine are not counted: the
        figure is for placing labs among engines, not a promise."""
        with docker_errors(f"cannot read the memory of engine {self.name}"):
            total = int(self.api.info().get("MemTotal") or 0)
        running = self._list(LABEL_LAB, all=False, inspect=False)

        def used(index: str) -> int:
            try:
                with docker_errors(f"cannot read the memory of a container on engine {self.name}"):
                    stats = self.api.stats(running[int(index)]["Id"])
            except EngineError:
                return 0  # gone meanwhile
            return memory_in_use(stats.get("memory_stats") or {})

        return max(0, total - sum(in_threads(used, [str(i) for i in range(len(running))]).values()))

    def kernel(self) -> HostKernel:
        """What the engine's kernel offers labs (SCTP, IPVS): read here for a local engine,
        by the helper beside a remote one."""
        from labbuilder.engine.kernel import PROBE, host_kernel, parse_probe

        if not self.remote:
            return host_kernel()
        return parse_probe(self.host.run(["sh", "-c", PROBE])[1])

    def ensure_image(self, progress: Callable[[str], None]) -> str:
        """The node image's tag, built first (with the Docker SDK) when the engine lacks it."""
        from labbuilder.engine import image  # the image builder is only needed by `up` and `image build`

        tag = image.image_tag()
        with docker_errors(f"cannot look for the node image on engine {self.name}"):
            if self.api.image_exists(tag):
                return tag
        return image.build_image(self.client, on_progress=progress)

    def version(self) -> str:
        with docker_errors(f"cannot read the version of engine {self.name}"):
            return str(self.api.version().get("Version", ""))


def memory_in_use(stats: Mapping[str, object]) -> int:
    """A container's memory as `docker stats` counts it: usage minus inactive file cache
    (cgroup v2 `inactive_file`, v1 `total_inactive_file`)."""
    usage = int(stats.get("usage") or 0)  # type: ignore[call-overload]
    detail = stats.get("stats") or {}
    assert isinstance(detail, Mapping)
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return max(0, usage - int(cache or 0))


class LabHandle:
    """One lab on an engine: its containers by key, and the only ways into them."""

    def __init__(self, engine: Engine, name: str):
        self.engine = engine
        self.name = name
        self._containers: dict[str, Attrs] | None = None
        self._pids: dict[str, int] = {}  # read once per handle: namespace paths need them often

    # -- what there is -----------------------------------------------------------------------
    def _all(self) -> dict[str, Attrs]:
        if self._containers is None:
            self.refresh()
        assert self._containers is not None
        return self._containers

    def refresh(self, inspect: bool = True) -> None:
        """Read the lab's containers from Docker again (after creating, starting or removing);
        without `inspect`, only what a listing says (enough to remove them)."""
        found = self.engine._list(f"{LABEL_LAB}={self.name}", inspect=inspect)
        self._containers = {labels_of(attrs).get(LABEL_NODE, ""): attrs for attrs in found}
        # The listing inspects every container already: keep the pids it read.
        self._pids = {key: info.pid for key, info in self.containers.items() if info.running and info.pid}

    @property
    def containers(self) -> dict[str, ContainerInfo]:
        return {key: _info(c) for key, c in self._all().items()}

    def exists(self) -> bool:
        return bool(self._all())

    def require(self, keys: Sequence[str] | None = None) -> None:
        """LabError unless the lab exists and the containers of `keys` (default: all) run."""
        found = self.containers
        if not found:
            raise LabError(f"no lab named {self.name} on {self.engine.where}", hint="`labbuilder ls` lists the labs")
        wanted = list(keys) if keys is not None else list(found)
        missing = [k for k in wanted if k not in found]
        stopped = [found[k].name for k in wanted if k in found and not found[k].running]
        if missing or stopped:
            what = ", ".join([*(f"{k} is missing" for k in missing), *(f"{n} is stopped" for n in stopped)])
            raise LabError(
                f"lab {self.name} is not fully running: {what}",
                hint=f"`labbuilder reset {self.name}` brings it back",
            )

    def _container(self, key: str) -> Attrs:
        try:
            return self._all()[key]
        except KeyError:
            raise LabError(
                f"lab {self.name} has no container for {key}", hint=f"`labbuilder status {self.name}`"
            ) from None

    # -- making and removing -----------------------------------------------------------------
    def create(self, spec: ContainerSpec, labels: dict[str, str], image: str) -> None:
        """A sealed node: no network, explicit capabilities, never privileged (`docker run -d`)."""
        config = {
            "Image": image,
            "Cmd": [AGENT],  # the node's main process: starts what labbuilder hands it (kubelet.through_agent)
            "Hostname": spec.hostname,
            "Labels": labels,
            "StopSignal": "SIGKILL",
            # No libnetwork sandbox at all: the container gets a new network namespace holding only
            # `lo`, as `--network none` gives, without the sandbox's setup and its prestart hook
            # (dockerd re-executed per container): ≈0.15 s of CPU per container start, measured.
            "NetworkDisabled": True,
            "HostConfig": {
                "NetworkMode": "none",
                "CapAdd": list(spec.caps),
                "Sysctls": dict(spec.sysctls),
                "Init": True,
            },
        }
        hint = f"`docker ps -a --filter name={spec.name}` shows what holds the name"
        with docker_errors(f"lab {self.name}: cannot create container {spec.name}", hint):
            ident = self.engine.api.create(spec.name, config)
            # Known from here on, so that a failed `up` removes it too.
            self._all()[spec.key] = {"Id": ident, "Name": spec.name, "Config": {"Labels": labels}, "State": {}}
            self.engine.api.start(ident)
            self._all()[spec.key] = self.engine.api.inspect(ident)

    def start(self, key: str) -> None:
        container = self._container(key)
        with docker_errors(f"lab {self.name}: cannot start {name_of(container)}"):
            self.engine.api.start(container["Id"])
            self._all()[key] = self.engine.api.inspect(container["Id"])
        self._pids.pop(key, None)

    def remove(self, keys: Sequence[str] | None = None) -> list[str]:
        """Remove the lab's containers (those of `keys`, or all), and only those; returns their names."""
        doomed = {key: c for key, c in self._all().items() if keys is None or key in keys}

        def one(key: str) -> str:
            container = doomed[key]
            try:
                with docker_errors(f"lab {self.name}: cannot remove {name_of(container)}"):
                    self.engine.api.remove(container["Id"])
            except EngineError as err:
                # gone already (another command removed it), or its removal is in progress (409)
                if not (err.missing or err.status == 409):
                    raise
            return name_of(container)

        with churn("remove", self.engine.name):
            removed = in_threads(one, list(doomed))
        for key in removed:
            del self._all()[key]
        return sorted(removed.values())

    # -- inside ------------------------------------------------------------------------------
    def pid(self, key: str) -> int:
        """The container's init pid on this host: the handle of its namespaces under /proc."""
        if key in self._pids:
            return self._pids[key]
        container = self._container(key)
        with docker_errors(f"lab {self.name}: cannot inspect {name_of(container)}"):
            container = self._all()[key] = self.engine.api.inspect(container["Id"])
        pid = int(container["State"]["Pid"] or 0)
        if not pid:
            raise LabError(
                f"lab {self.name}: container {name_of(container)} is not running",
                hint=f"`labbuilder reset {self.name}` starts it again",
            )
        self._pids[key] = pid
        return pid

    def ns_path(self, ns: Ns) -> str:
        """Where the host sees a namespace: `/proc/PID/ns/net`, or the pod's bind mount inside the node."""
        pid = self.pid(ns.container)
        if ns.netns:
            return f"/proc/{pid}/root/run/netns/{ns.netns}"
        return f"/proc/{pid}/ns/net"

    def exec(self, ns: Ns | str, argv: Sequence[str]) -> ExecResult:
        """`docker exec` argv in a container (a key) or a pod netns inside its node: inside the
        container's cgroup, with its capabilities only. For long-running processes (pods'
        workloads, trace monitors). Never raises on the exit status."""
        ns = Ns(ns) if isinstance(ns, str) else ns
        container = self._container(ns.container)
        full = ["ip", "netns", "exec", ns.netns, *argv] if ns.netns else list(argv)
        with docker_errors(f"lab {self.name}: cannot run a command in {name_of(container)}"):
            code, output = self.engine.api.exec_run(container["Id"], full)
        return ExecResult(code, output.decode(errors="replace"))

    def enter(
        self, ns: Ns | str, argv: Sequence[str], stdin: bytes | None = None, host_tools: bool = False
    ) -> ExecResult:
        """Run a short command in the container's network, mount and pid namespaces (its /proc and
        /run/netns), from this host, as the netlink sockets opened by namespace path do — a few
        milliseconds instead of a `docker exec` round trip. For configuration, reading and probes
        (ip, tar, iptables-restore, ping); processes that must live on start with `exec`. With
        `host_tools`, only the network namespace is entered: the host's own `ip` runs there and sees
        the host's /proc (so `netns PID` names another container by its pid). Never raises on the
        exit status."""
        ns = Ns(ns) if isinstance(ns, str) else ns
        full = ["ip", "netns", "exec", ns.netns, *argv] if ns.netns else list(argv)
        spaces = ["-n"] if host_tools else ["-n", "-m", "-p"]
        try:
            code, output = self.engine.host.run(
                ["nsenter", "-t", str(self.pid(ns.container)), *spaces, "--", *full], stdin
            )
        except LabError as err:
            raise LabError(f"lab {self.name}: cannot enter {name_of(self._container(ns.container))}: {err}") from None
        return ExecResult(code, output)

    def netlink(self, steps: Sequence[Step]) -> list[str]:
        """Netlink steps in order, each namespace opened by its path on the engine's host (in this
        process, or in the helper beside a remote engine); returns the links whose IPv6
        link-local address was given back."""
        return self.engine.host.netlink(steps, self.ns_path)

    def run(
        self,
        ns: Ns | str,
        argv: Sequence[str],
        stdin: bytes | None = None,
        entered: bool = True,
        host_tools: bool = False,
    ) -> str:
        """enter (or exec) and fail loudly: an unexpected failure inside a node is a bug worth seeing."""
        ns = Ns(ns) if isinstance(ns, str) else ns
        result = self.enter(ns, argv, stdin, host_tools) if entered else self.exec(ns, argv)
        if result.code != 0:
            where = name_of(self._container(ns.container)) + (f" ({ns.netns})" if ns.netns else "")
            raise LabError(f"{where}: `{' '.join(argv)}` failed ({result.code}): {result.output.strip()}")
        return result.output

    def put_files(self, key: str, files: dict[str, str]) -> None:
        """Write files (path → text) in one tar archive extracted at / inside the running
        container, parent folders included: `tar -x` entered there (a few ms), not Docker's
        archive call (a round trip through dockerd, 70 to 150 ms while a lab is being built)."""
        self.run(key, ["tar", "-x", "-C", "/"], stdin=tar_of(files))

    def read_spec(self) -> str:
        """The spec copy the router keeps (SPEC_COPY); LabError when the lab or the copy is missing."""
        if ROUTER not in self._all():
            raise LabError(f"no lab named {self.name} on {self.engine.where}", hint="`labbuilder ls` lists the labs")
        result = self.enter(ROUTER, ["cat", SPEC_COPY])
        if result.code != 0:
            raise LabError(
                f"lab {self.name}: its router holds no copy of the lab file ({result.output.strip()})",
                hint=f"`labbuilder reset {self.name} --file LAB.yaml` or `labbuilder up LAB.yaml` restores it",
            )
        return result.output

    def spec(self) -> Spec:
        """The running lab's spec, from the copy its router keeps."""
        from labbuilder.spec.load import load_text  # not imported by `down`, `ls`: they start faster

        return load_text(self.read_spec(), f"{self.name}:{SPEC_COPY}")

    def model(self) -> Lab:
        """The running lab's model: what every command that works on a running lab starts from."""
        from labbuilder.spec.resolve import build_model

        return build_model(self.spec()).lab


def in_threads(work: Callable[[str], T], keys: Sequence[str], workers: int = 8) -> dict[str, T]:
    """Run `work(key)` for every key in parallel (container work is I/O bound); results by key."""
    if not keys:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
        futures = {key: pool.submit(work, key) for key in keys}
        return {key: future.result() for key, future in futures.items()}
