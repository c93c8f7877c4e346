#!/usr/bin/python3 -S
"""Pod workload: answers `pod=<name> ip=<pod ip> client=<peer ip>:<peer port>` on TCP and UDP ports.

TCP speaks just enough HTTP/1.0 for curl; any other input (or none) still gets the line.
The client shown is the address the socket saw, so SNAT/DNAT is visible. Stdlib only.

An entry of the config with `tls: {cert, key}` speaks TLS on its TCP ports (ALPN: http/1.1 only);
with `apiserver: {version: {...}}` it answers as kube-apiserver answers an anonymous user:
`/version` (that JSON), `/healthz`, `/livez`, `/readyz` (`ok`), anything else a 403 `Status`.

One process serves every pod of a node (`--config FILE`): each pod's sockets are opened inside
that pod's network namespace (the opening thread enters it with setns(2) and comes back), so
`ss -ltnp` in the pod shows them, and the pod's address is what clients reach — while the node
pays for one interpreter, not one per pod. `--name/--ip/--tcp/--udp` serve a single pod from the
namespace the process runs in.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import selectors
import signal
import socket
import socketserver
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

HTTP_METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"}
CLONE_NEWNET = 0x40000000
RECHECK = 2.0  # seconds between looks at the pods' namespaces (one made again gets its sockets again)


class PodServer:
    """Mixed into the socketserver servers: a thread per client, address reuse, one-line errors."""

    allow_reuse_address = True
    daemon_threads = True
    kind = ""
    pod = ("", "")  # name, ip: what the answer says
    tls: ssl.SSLContext | None = None  # TCP: wrap each connection (in its own thread)
    apiserver: dict | None = None  # TCP: answer as kube-apiserver, {"version": {...}}

    def handle_error(self, request: object, client_address: tuple) -> None:
        print(f"podserver: {self.kind} client {client_address}: {sys.exc_info()[1]!r}", file=sys.stderr)


class TCPServer(PodServer, socketserver.ThreadingTCPServer):
    kind = "tcp"
    request_queue_size = 128  # socketserver's default of 5 resets bursts of clients (a learner's curl loop)


class UDPServer(PodServer, socketserver.ThreadingUDPServer):
    kind = "udp"


def body(pod: tuple, peer: tuple) -> bytes:
    return f"pod={pod[0]} ip={pod[1]} client={peer[0]}:{peer[1]}\n".encode()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context with the entry's certificate; ALPN offers http/1.1 only (no HTTP/2 here)."""
    import ssl  # only controllers serve TLS: workers' podservers stay ~1.4 MB smaller without it

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


HEALTH = ("/healthz", "/livez", "/readyz")
HEALTH_CHECKS = ("ping", "log", "etcd")  # what `?verbose` lists, as kube-apiserver's first checks


def apiserver_reply(apiserver: dict, method: str, target: str) -> tuple[int, str, bytes]:
    """(status, content type, body) kube-apiserver gives an anonymous user: the public-info-viewer
    paths are open to anyone (system:public-info-viewer), every other path is forbidden."""
    path, _, query = target.partition("?")
    if method in ("GET", "HEAD") and path in ("/version", "/version/"):
        return 200, "application/json", (json.dumps(apiserver["version"], indent=2) + "\n").encode()
    if method in ("GET", "HEAD") and path in HEALTH:
        if "verbose" in query.split("&"):
            lines = [f"[+]{check} ok" for check in HEALTH_CHECKS]
            return 200, "text/plain; charset=utf-8", ("\n".join(lines) + f"\n{path[1:]} check passed\n").encode()
        return 200, "text/plain; charset=utf-8", b"ok"
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'forbidden: User "system:anonymous" cannot {method.lower()} path "{path}"',
        "reason": "Forbidden",
        "details": {},
        "code": 403,
    }
    return 403, "application/json", (json.dumps(status, separators=(",", ":")) + "\n").encode()


REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden"}


# Not kube-apiserver's: which apiserver answered and the client it saw (`pod=… ip=… client=…`, the
# pods' line), so `curl -skD- https://10.32.0.1/healthz` shows load balancing, affinity and NAT.
SERVER_HEADER = "X-Labbuilder-Server"


def http_response(status: int, content_type: str, data: bytes, head_only: bool = False, server: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        "Cache-Control: no-cache, private\r\n"
        f"Content-Type: {content_type}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        + (f"{SERVER_HEADER}: {server}\r\n" if server else "")
        + f"Content-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + (b"" if head_only else data)


# What Go's net/http says to plain HTTP on a TLS port (kube-apiserver included).
PLAIN_ON_TLS = (400, "text/plain; charset=utf-8", b"Client sent an HTTP request to an HTTPS server.\n")


class TCPHandler(socketserver.StreamRequestHandler):
    timeout = 2  # a silent client gets the line after this many seconds

    def setup(self) -> None:
        """On a TLS entry, the handshake happens here, in the client's thread (never in the loop that
        accepts); a client that speaks plain HTTP to it gets Go's 400, one that says nothing nothing."""
        self.mode = "plain"
        self.tls_socket: ssl.SSLSocket | None = None
        context = self.server.tls  # type: ignore[attr-defined]
        if context is not None:
            self.request.settimeout(self.timeout)
            try:
                first = self.request.recv(1, socket.MSG_PEEK)
            except OSError:
                first = b""
            if not first:
                self.mode = "gone"  # a port probe (nc -z): connected and left
            elif first != b"\x16":  # not a TLS handshake record
                self.mode = "plain-on-tls"
            else:
                self.tls_socket = context.wrap_socket(self.request, server_side=True)
                self.request = self.tls_socket
                self.mode = "tls"
        super().setup()

    def handle(self) -> None:
        if self.mode == "gone":
            return
        text = body(self.server.pod, self.client_address)  # type: ignore[attr-defined]
        if self.mode == "plain-on-tls":
            self.wfile.write(http_response(*PLAIN_ON_TLS, server=text.decode().strip()))
            self.finish_quietly()
            return
        try:
            line = self.rfile.readline(8192)
        except OSError:  # timeout or reset: still answer if we can
            line = b""
        words = line.split()
        if len(words) == 3 and words[0] in HTTP_METHODS and words[2].startswith(b"HTTP/"):
            for _ in range(100):  # skip the request headers
                header = self.rfile.readline(8192)
                if header in (b"\r\n", b"\n", b""):
                    break
            apiserver = self.server.apiserver  # type: ignore[attr-defined]
            if apiserver is not None:
                method, target = words[0].decode(), words[1].decode(errors="replace")
                reply = apiserver_reply(apiserver, method, target)
                text = http_response(*reply, head_only=method == "HEAD", server=text.decode().strip())
            else:
                head = f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(text)}\r\n"
                text = (head + "Connection: close\r\n\r\n").encode() + (b"" if words[0] == b"HEAD" else text)
        self.wfile.write(text)
        self.finish_quietly()

    def finish_quietly(self) -> None:
        """Drain what the client still sends: closing on unread data resets the connection, which
        can destroy the reply in flight. TLS first says close_notify, as Go's servers do."""
        try:
            if self.tls_socket is not None:
                self.tls_socket.settimeout(0.5)
                self.tls_socket.unwrap()
            self.request.shutdown(socket.SHUT_WR)
            self.request.settimeout(0.5)
            for _ in range(64):
                if not self.request.recv(4096):
                    break
        except OSError:
            pass

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.tls_socket is not None:  # it took the accepted socket's descriptor over
                self.tls_socket.close()


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request[1]
        sock.sendto(body(self.server.pod, self.client_address), self.client_address)  # type: ignore[attr-defined]


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_netns(netns: str | None, make):  # type: ignore[no-untyped-def]
    """Call make() with this thread inside /run/netns/NETNS (None: where it is), then come back."""
    if not netns:
        return make()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            return make()
        finally:
            _setns(home)
    finally:
        os.close(home)


def netns_inode(netns: str | None) -> int | None:
    try:
        return os.stat(f"/run/netns/{netns}").st_ino if netns else 0
    except OSError:
        return None


class Pod:
    """One pod's servers: made inside its netns, made again when that netns is made again."""

    def __init__(
        self,
        name: str,
        ip: str,
        netns: str | None,
        tcp: list,
        udp: list,
        bind: str,
        tls: dict | None = None,
        apiserver: dict | None = None,
    ):
        self.name, self.ip, self.netns, self.tcp, self.udp, self.bind = name, ip, netns, tcp, udp, bind
        self.tls, self.apiserver = tls, apiserver
        self.inode: int | None = None
        self.servers: list = []

    def open(self) -> list:
        # The certificate is read when the sockets open: a missing one is an OSError, and the next
        # look (RECHECK) tries again, so a restored file is served without a restart.
        context = tls_context(self.tls["cert"], self.tls["key"]) if self.tls else None

        def make() -> list:
            servers = [TCPServer((self.bind, p), TCPHandler) for p in self.tcp]
            return servers + [UDPServer((self.bind, p), UDPHandler) for p in self.udp]

        servers = in_netns(self.netns, make)
        for server in servers:
            server.pod = (self.name, self.ip)
            if server.kind == "tcp":
                server.tls, server.apiserver = context, self.apiserver
            host, port = server.socket.getsockname()
            how = " (tls)" if server.kind == "tcp" and context else ""
            print(f"podserver {self.name}: listening {server.kind} {host}:{port}{how}", flush=True)
        return servers

    def refresh(self) -> tuple[list, list]:
        """(closed, opened) servers: a namespace made again (new inode) gets new sockets."""
        inode = netns_inode(self.netns)
        if inode == self.inode and self.servers:
            return [], []
        closed, self.servers, self.inode = self.servers, [], inode
        if inode is not None:
            try:
                self.servers = self.open()
            except OSError as err:
                where = self.netns or "this namespace"
                print(f"podserver {self.name}: cannot listen in {where}: {err}", file=sys.stderr)
                self.inode = None  # try again at the next look
        return closed, self.servers


def serve(pods: list, stop: threading.Event, ready: str | None = None) -> None:
    """One thread, one selector over every pod's sockets; each client is handled in a thread.

    A signal wakes the selector at once (its wakeup fd is registered too); the pods' namespaces
    are looked at again every RECHECK seconds. Once every pod listens, `ready` gets this process's
    pid: what `labbuilder up` waits for before it says the lab is up."""
    selector = selectors.DefaultSelector()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    selector.register(wake_r, selectors.EVENT_READ)
    due = 0.0
    while not stop.is_set():
        if time.monotonic() >= due:
            due = time.monotonic() + RECHECK
            for pod in pods:
                closed, _ = pod.refresh()
                for server in closed:
                    selector.unregister(server)
                    server.server_close()
                for server in pod.servers:
                    if server not in selector.get_map():
                        selector.register(server, selectors.EVENT_READ)
            if ready and all(pod.servers for pod in pods):
                with open(ready, "w") as f:
                    f.write(f"{os.getpid()}\n")
                ready = None
        for key, _ in selector.select(max(0.0, due - time.monotonic())):
            if key.fileobj == wake_r:
                os.read(wake_r, 512)
            else:
                key.fileobj._handle_request_noblock()
    for key in list(selector.get_map().values()):
        if key.fileobj != wake_r:
            key.fileobj.server_close()


def pods_from(args: argparse.Namespace) -> list:
    if args.config:
        with open(args.config) as f:
            config = json.load(f)
        return [
            Pod(
                p["name"],
                p["ip"],
                p.get("netns"),
                p.get("tcp", []),
                p.get("udp", []),
                args.bind,
                p.get("tls"),
                p.get("apiserver"),
            )
            for p in config
        ]
    return [Pod(args.name, args.ip, None, args.tcp, args.udp, args.bind)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podserver", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", help="JSON list of pods: name, ip, netns, tcp, udp[, tls, apiserver] (one process for all)"
    )
    parser.add_argument("--name", help="pod name to print")
    parser.add_argument("--ip", help="pod IP to print")
    parser.add_argument("--tcp", type=int, action="append", default=[], metavar="PORT")
    parser.add_argument("--udp", type=int, action="append", default=[], metavar="PORT")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--ready", metavar="FILE", help="write this process's pid here once every pod listens")
    args = parser.parse_args(argv)
    if not args.config:
        if not (args.name and args.ip):
            parser.error("give --config FILE, or --name and --ip")
        if not args.tcp and not args.udp:
            parser.error("give at least one --tcp or --udp port")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    pods = pods_from(args)
    if not args.config:  # a single pod must listen at once, or fail
        try:
            pods[0].servers, pods[0].inode = pods[0].open(), netns_inode(None)
        except OSError as e:
            print(f"podserver: cannot listen on {args.bind}: {e}", file=sys.stderr)
            return 1
    serve(pods, stop, args.ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
