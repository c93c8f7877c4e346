#!/usr/bin/python3
"""Pod workload: answers `pod=<name> ip=<pod ip> client=<peer ip>:<peer port>` on TCP and UDP ports.

TCP speaks just enough HTTP/1.0 for curl; any other input (or none) still gets the line.
The client shown is the address the socket saw, so SNAT/DNAT is visible. Stdlib only.

One process serves every pod of a node (`--config FILE`): each pod's sockets are opened inside
that pod's network namespace (the opening thread enters it with setns(2) and comes back), so
`ss -ltnp` in the pod shows them, and the pod's address is what clients reach — while the node
pays for one interpreter, not one per pod. `--name/--ip/--tcp/--udp` serve a single pod from the
namespace the process runs in.
"""

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

HTTP_METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"}
CLONE_NEWNET = 0x40000000
RECHECK = 2.0  # seconds between looks at the pods' namespaces (one made again gets its sockets again)


class PodServer:
    """Mixed into the socketserver servers: a thread per client, address reuse, one-line errors."""

    allow_reuse_address = True
    daemon_threads = True
    kind = ""
    pod = ("", "")  # name, ip: what the answer says

    def handle_error(self, request: object, client_address: tuple) -> None:
        print(f"podserver: {self.kind} client {client_address}: {sys.exc_info()[1]!r}", file=sys.stderr)


class TCPServer(PodServer, socketserver.ThreadingTCPServer):
    kind = "tcp"
    request_queue_size = 128  # socketserver's default of 5 resets bursts of clients (a learner's curl loop)


class UDPServer(PodServer, socketserver.ThreadingUDPServer):
    kind = "udp"


def body(pod: tuple, peer: tuple) -> bytes:
    return f"pod={pod[0]} ip={pod[1]} client={peer[0]}:{peer[1]}\n".encode()


class TCPHandler(socketserver.StreamRequestHandler):
    timeout = 2  # a silent client gets the line after this many seconds

    def handle(self) -> None:
        text = body(self.server.pod, self.client_address)  # type: ignore[attr-defined]
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
            head = f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(text)}\r\n"
            text = (head + "Connection: close\r\n\r\n").encode() + (b"" if words[0] == b"HEAD" else text)
        self.wfile.write(text)
        try:  # drain what the client still sends: closing on unread data resets the connection,
            self.connection.shutdown(socket.SHUT_WR)  # which can destroy the reply in flight
            self.connection.settimeout(0.5)
            for _ in range(64):
                if not self.connection.recv(4096):
                    break
        except OSError:
            pass


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

    def __init__(self, name: str, ip: str, netns: str | None, tcp: list, udp: list, bind: str):
        self.name, self.ip, self.netns, self.tcp, self.udp, self.bind = name, ip, netns, tcp, udp, bind
        self.inode: int | None = None
        self.servers: list = []

    def open(self) -> list:
        def make() -> list:
            servers = [TCPServer((self.bind, p), TCPHandler) for p in self.tcp]
            return servers + [UDPServer((self.bind, p), UDPHandler) for p in self.udp]

        servers = in_netns(self.netns, make)
        for server in servers:
            server.pod = (self.name, self.ip)
            host, port = server.socket.getsockname()
            print(f"podserver {self.name}: listening {server.kind} {host}:{port}", flush=True)
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
                print(f"podserver {self.name}: cannot listen in {self.netns or 'this namespace'}: {err}", file=sys.stderr)
                self.inode = None  # try again at the next look
        return closed, self.servers


def serve(pods: list, stop: threading.Event) -> None:
    """One thread, one selector over every pod's sockets; each client is handled in a thread.

    A signal wakes the selector at once (its wakeup fd is registered too); the pods' namespaces
    are looked at again every RECHECK seconds."""
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
        return [Pod(p["name"], p["ip"], p.get("netns"), p.get("tcp", []), p.get("udp", []), args.bind) for p in config]
    return [Pod(args.name, args.ip, None, args.tcp, args.udp, args.bind)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podserver", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON list of pods: name, ip, netns, tcp, udp (one process for all)")
    parser.add_argument("--name", help="pod name to print")
    parser.add_argument("--ip", help="pod IP to print")
    parser.add_argument("--tcp", type=int, action="append", default=[], metavar="PORT")
    parser.add_argument("--udp", type=int, action="append", default=[], metavar="PORT")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
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
    serve(pods, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
