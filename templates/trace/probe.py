"""labbuilder trace probe: one marked packet (TOS set) to DST, and what came back. Stdlib only.

usage: python3 -c "$(cat probe.py)" tcp|udp|icmp DST PORT TOS  ->  one JSON line:
{"outcome": "answered|refused|unreachable|timeout|error", "detail": "...", "local": "ip:port"}
Run inside the source namespace (`ip netns exec` for a pod). ICMP errors are read from the
socket's error queue (IP_RECVERR), so an unreachable names the address that reported it.
"""

import json
import os
import select
import socket
import struct
import sys
import time

WAIT = 2.0
IP_RECVERR = 11
MSG_ERRQUEUE = 0x2000
# id 0x1abb, recursion desired, one question: kubernetes.default.svc.cluster.local A IN
DNS_QUERY = bytes.fromhex("1abb01000001000000000000") + b"".join(
    bytes([len(label)]) + label.encode() for label in "kubernetes.default.svc.cluster.local".split(".")
) + bytes.fromhex("0000010001")
UNREACH = {
    0: "net unreachable",
    1: "host unreachable",
    2: "protocol unreachable",
    3: "port unreachable",
    4: "fragmentation needed",
    9: "net prohibited",
    10: "host prohibited",
    13: "administratively prohibited",
}


def icmp_text(kind: int, code: int) -> str:
    if kind == 3:
        return f"ICMP destination unreachable: {UNREACH.get(code, f'code {code}')}"
    if kind == 11:
        return "ICMP time exceeded"
    return f"ICMP type {kind} code {code}"


def queued_error(sock: socket.socket) -> str:
    """The ICMP error the kernel queued for this socket: who sent it, and what it said."""
    try:
        _, ancillary, _, _ = sock.recvmsg(512, 512, MSG_ERRQUEUE)
    except OSError:
        return ""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_RECVERR and len(data) >= 32:
            _, origin, icmp_type, code = struct.unpack_from("=IBBB", data)
            sender = socket.inet_ntoa(data[20:24])
            if origin == 2:  # SO_EE_ORIGIN_ICMP
                return f"{sender}: {icmp_text(icmp_type, code)}"
            return f"{sender}: local error"
    return ""


def result(outcome: str, detail: str, local: str = "") -> dict[str, str]:
    return {"outcome": outcome, "detail": detail, "local": local}


def failure(sock: socket.socket, err: OSError) -> dict[str, str]:
    reported = queued_error(sock)
    if isinstance(err, ConnectionRefusedError):
        return result("refused", reported or "connection refused (TCP RST): nothing listens on that port")
    if isinstance(err, TimeoutError | socket.timeout):
        return result("timeout", f"no answer within {WAIT:g} s: the packet or its answer was dropped")
    return result("unreachable", reported or os.strerror(err.errno or 0))


def stream(dst: str, port: int, tos: int) -> dict[str, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    sock.settimeout(WAIT)
    try:
        sock.connect((dst, port))
    except OSError as err:
        return failure(sock, err)
    local = "%s:%d" % sock.getsockname()
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except OSError:
        pass
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return result("answered", lines[-1] if lines else "connected (no data)", local)


def datagram(dst: str, port: int, tos: int) -> dict[str, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    sock.settimeout(WAIT)
    local = ""
    try:
        sock.connect((dst, port))
        local = "%s:%d" % sock.getsockname()
        sock.send(DNS_QUERY)  # a DNS question: DNS servers answer it, podservers answer anything
        data = sock.recv(4096)
    except OSError as err:
        return {**failure(sock, err), "local": local}
    if data[:2] == DNS_QUERY[:2] and len(data) >= 12:
        return result("answered", f"DNS answer, rcode {data[3] & 0x0F}, {data[7]} answer record(s)", local)
    return result("answered", data.decode(errors="replace").strip() or f"{len(data)} bytes", local)


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def echo(dst: str, tos: int) -> dict[str, str]:
    """An ICMP echo request from a raw socket; the answer may be a reply or an ICMP error about it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    ident = os.getpid() & 0xFFFF
    payload = b"labbuilder-trace"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, 1) + payload
    try:
        sock.sendto(packet, (dst, 0))
    except OSError as err:
        return result("unreachable", os.strerror(err.errno or 0))
    deadline = time.monotonic() + WAIT
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        data, (sender, _) = sock.recvfrom(2048)
        icmp = data[(data[0] & 0x0F) * 4 :]
        kind, code = icmp[0], icmp[1]
        if kind == 0 and struct.unpack_from("!H", icmp, 4)[0] == ident:
            return result("answered", f"echo reply from {sender}")
        if kind in (3, 11) and len(icmp) >= 36:
            inner = icmp[8:]
            quoted = inner[(inner[0] & 0x0F) * 4 :]
            if quoted[0] == 8 and struct.unpack_from("!H", quoted, 4)[0] == ident:
                return result("unreachable", f"{sender}: {icmp_text(kind, code)}")
    return result("timeout", f"no echo reply within {WAIT:g} s")


def main(argv: list[str]) -> None:
    proto, dst, port, tos = argv[0], argv[1], int(argv[2]), int(argv[3])
    if proto == "tcp":
        out = stream(dst, port, tos)
    elif proto == "udp":
        out = datagram(dst, port, tos)
    else:
        out = echo(dst, tos)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
