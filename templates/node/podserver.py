#!/usr/bin/python3
"""Pod workload: answers `pod=<name> ip=<pod ip> client=<peer ip>:<peer port>` on TCP and UDP ports.

TCP speaks just enough HTTP/1.0 for curl; any other input (or none) still gets the line.
The client shown is the address the socket saw, so SNAT/DNAT is visible. Stdlib only.
"""

import argparse
import signal
import socket
import socketserver
import sys
import threading

HTTP_METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"}
POD = ("", "")  # name, ip: set by main


class PodServer:
    """Mixed into the socketserver servers: a thread per client, address reuse, one-line errors."""

    allow_reuse_address = True
    daemon_threads = True
    kind = ""

    def handle_error(self, request: object, client_address: tuple) -> None:
        print(f"podserver: {self.kind} client {client_address}: {sys.exc_info()[1]!r}", file=sys.stderr)


class TCPServer(PodServer, socketserver.ThreadingTCPServer):
    kind = "tcp"
    request_queue_size = 128  # socketserver's default of 5 resets bursts of clients (a learner's curl loop)


class UDPServer(PodServer, socketserver.ThreadingUDPServer):
    kind = "udp"


def body(peer: tuple) -> bytes:
    return f"pod={POD[0]} ip={POD[1]} client={peer[0]}:{peer[1]}\n".encode()


class TCPHandler(socketserver.StreamRequestHandler):
    timeout = 2  # a silent client gets the line after this many seconds

    def handle(self) -> None:
        text = body(self.client_address)
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
        sock.sendto(body(self.client_address), self.client_address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podserver", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="pod name to print")
    parser.add_argument("--ip", required=True, help="pod IP to print")
    parser.add_argument("--tcp", type=int, action="append", default=[], metavar="PORT")
    parser.add_argument("--udp", type=int, action="append", default=[], metavar="PORT")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    args = parser.parse_args(argv)
    if not args.tcp and not args.udp:
        parser.error("give at least one --tcp or --udp port")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    global POD
    POD = (args.name, args.ip)
    try:
        servers: list[TCPServer | UDPServer] = [TCPServer((args.bind, p), TCPHandler) for p in args.tcp]
        servers += [UDPServer((args.bind, p), UDPHandler) for p in args.udp]
    except OSError as e:
        print(f"podserver: cannot listen on {args.bind}: {e}", file=sys.stderr)
        return 1
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.socket.getsockname()
        print(f"podserver {args.name}: listening {server.kind} {host}:{port}", flush=True)
    while not stop.wait(1):
        pass
    for server in servers:  # the serving threads are daemons: closing the sockets is enough
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
