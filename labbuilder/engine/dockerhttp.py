"""The Docker Engine API's few calls every command makes, over HTTP with the standard library.

Written by hand, on purpose: importing the Docker SDK (docker, requests, urllib3, ...) costs
≈0.15 s of CPU on the machines labs run on — a third of what `labbuilder down` of a KTHW lab may
take in all (bench/bench_scale.py) — while the calls on that path are a dozen plain JSON requests.
The SDK stays where its weight pays: building and importing the node image, the helper container
beside a remote engine. Paths carry no API version: the engine answers in its own, and every field
read here has kept its shape since API 1.41 (Docker 20.10).

Transports: a unix socket, TCP with or without TLS (the context's certificates), and ssh the way
the Docker CLI does it (`ssh HOST docker system dial-stdio` carries the connection).
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import subprocess
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

STDOUT, STDERR = 1, 2  # stream ids of Docker's multiplexed exec output


class APIError(Exception):
    """The engine answered with an error status; `explanation` is its own message."""

    def __init__(self, status: int, explanation: str, method: str = "", path: str = ""):
        super().__init__(f"{status} {method} {path}: {explanation}")
        self.status = status
        self.explanation = explanation


class NotFound(APIError):
    """404: the container (image, exec) does not exist."""


class Unreachable(Exception):
    """No answer: the socket is missing, the connection was refused or lost, or it timed out.
    `engine` names the engine, `hint` says where to look."""

    def __init__(self, why: str, engine: str, hint: str, timed_out: bool = False):
        super().__init__(why)
        self.engine = engine
        self.hint = hint
        self.timed_out = timed_out


@dataclass(frozen=True)
class TLSFiles:
    """A context's (or DOCKER_CERT_PATH's) certificates."""

    ca: str
    cert: str
    key: str
    verify: bool = True

    def context(self) -> ssl.SSLContext:
        import ssl  # only for engines behind TLS: the local socket does without its import

        tls = ssl.create_default_context(cafile=self.ca)
        tls.load_cert_chain(self.cert, self.key)
        if not self.verify:
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        return tls


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class _SSHConnection(http.client.HTTPConnection):
    """HTTP over `ssh HOST docker system dial-stdio`: the engine's socket on the far side."""

    def __init__(self, target: urllib.parse.SplitResult, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.target = target
        self.process: subprocess.Popen[bytes] | None = None

    def connect(self) -> None:
        ours, theirs = socket.socketpair()
        argv = ["ssh", "-o", "BatchMode=yes"]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        host = f"{self.target.username}@{self.target.hostname}" if self.target.username else str(self.target.hostname)
        self.process = subprocess.Popen(
            [*argv, host, "--", "docker", "system", "dial-stdio"],
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=subprocess.DEVNULL,
        )
        theirs.close()
        ours.settimeout(self.timeout)
        self.sock = ours

    def close(self) -> None:
        super().close()
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def demultiplex(stream: bytes) -> bytes:
    """stdout and stderr of a non-tty exec, in the order they came: Docker frames each chunk with
    8 bytes (stream id, three zero bytes, big-endian length)."""
    out, at = bytearray(), 0
    while at + 8 <= len(stream):
        kind, size = struct.unpack(">BxxxL", stream[at : at + 8])
        if kind in (STDOUT, STDERR):
            out += stream[at + 8 : at + 8 + size]
        at += 8 + size
    return bytes(out)


def error_message(body: bytes) -> str:
    """The engine's `{"message": ...}`, or the body as text."""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or body.decode(errors="replace").strip() or "no explanation")


class DockerHTTP:
    """One engine's API: a kept-alive connection per thread (commands work in threads)."""

    def __init__(
        self, base_url: str, tls: TLSFiles | None = None, timeout: float = 120, name: str = "", hint: str = ""
    ):
        self.name = name or base_url  # how errors name the engine
        self.hint = hint  # what an error says to try when the engine does not answer
        self.base_url = base_url
        self.target = urllib.parse.urlsplit(base_url)
        self.tls = tls.context() if tls is not None else None
        self.timeout = timeout
        self._local = threading.local()

    def _connect(self) -> http.client.HTTPConnection:
        scheme = self.target.scheme
        if scheme in ("unix", "http+unix"):
            return _UnixConnection(self.target.path, self.timeout)
        if scheme == "ssh":
            return _SSHConnection(self.target, self.timeout)
        host, port = self.target.hostname or "localhost", self.target.port or (2376 if self.tls else 2375)
        if self.tls is not None or scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self.tls)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        keep: bool = True,
    ) -> bytes:
        """The response body; APIError on an error status, Unreachable when there is no answer.
        A connection the engine closed while it idled is opened again once, before anything was
        read (nothing was done then)."""
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Content-Type": content_type} if body is not None else {}
        for attempt in (1, 2):
            reused = getattr(self._local, "conn", None) is not None
            conn = self._local.conn if reused else self._connect()
            self._local.conn = None
            try:
                conn.request(method, url, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as err:
                conn.close()
                if reused and attempt == 1:
                    continue
                raise Unreachable(f"the connection was lost ({err})", self.name, self.hint) from None
            except TimeoutError:
                conn.close()
                raise Unreachable(f"no answer within {self.timeout:.0f} s", self.name, self.hint, True) from None
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                raise Unreachable(str(err) or type(err).__name__, self.name, self.hint) from None
            if keep and not response.will_close:
                self._local.conn = conn
            else:
                conn.close()
            if response.status >= 400:
                kind = NotFound if response.status == 404 else APIError
                raise kind(response.status, error_message(data), method, path)
            return data
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, query: Mapping[str, str] | None = None, payload: Any = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        data = self.request(method, path, query, body)
        return json.loads(data) if data.strip() else None

    # -- the calls ----------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        return dict(self.json("GET", "/version"))

    def info(self) -> dict[str, Any]:
        return dict(self.json("GET", "/info"))

    def containers(self, label: str, all: bool = True) -> list[dict[str, Any]]:
        """The summaries of `docker ps [-a] --filter label=LABEL` (no pid: `inspect` has it)."""
        query = {"all": "1" if all else "0", "filters": json.dumps({"label": [label]})}
        return list(self.json("GET", "/containers/json", query))

    def inspect(self, container: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/containers/{container}/json"))

    def image_exists(self, tag: str) -> bool:
        try:
            self.request("GET", f"/images/{tag}/json")
        except NotFound:
            return False
        return True

    def create(self, name: str, config: Mapping[str, Any]) -> str:
        return str(self.json("POST", "/containers/create", {"name": name}, config)["Id"])

    def start(self, container: str) -> None:
        self.request("POST", f"/containers/{container}/start")

    def remove(self, container: str) -> None:
        """Kill and remove (`docker rm -f`)."""
        self.request("DELETE", f"/containers/{container}", {"force": "1"})

    def stats(self, container: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/containers/{container}/stats", {"stream": "0", "one-shot": "1"}))

    def exec_run(self, container: str, argv: Sequence[str]) -> tuple[int, bytes]:
        """`docker exec CONTAINER ARGV...`: exit status and output (stdout and stderr, interleaved)."""
        created = self.json(
            "POST",
            f"/containers/{container}/exec",
            payload={"AttachStdout": True, "AttachStderr": True, "Cmd": list(argv)},
        )
        # The engine hijacks this connection for the output and closes it at the end: not kept.
        body = json.dumps({"Detach": False, "Tty": False}).encode()
        stream = self.request("POST", f"/exec/{created['Id']}/start", body=body, keep=False)
        code = self.json("GET", f"/exec/{created['Id']}/json").get("ExitCode")
        return int(code or 0), demultiplex(stream)
