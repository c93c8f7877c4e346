#!/usr/bin/env bash
# A second Docker engine on this machine, standing in for a second host: labbuilder reaches it
# over tcp (127.0.0.1:23750, TLS), so everything beyond the Docker API takes the helper path
# (a helper container beside the engine), exactly as for a workshop server elsewhere.
#
#   bash scripts/second-engine.sh start|stop|status
#
# A real dockerd with its own unix socket, data-root, exec-root, pidfile, config file and its own
# containerd (managed, in its exec-root; namespaced too in case a system containerd is shared),
# with `--bridge none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false`.
# Those flags are not enough on their own: a dockerd started with `--bridge none` DELETES any
# link named docker0 in its network namespace (moby's removeDefaultBridgeInterface), which is the
# host engine's bridge. So dockerd runs in a network namespace of its own (unnamed: nothing in
# `ip netns`), and its tcp socket is bound in the host's namespace first and handed over as
# socket activation (`-H fd://`, LISTEN_FDS) — it makes nothing in this host's network namespace,
# so tests can compare the host's links, routes and iptables before and after. The Docker context
# `labbuilder-second` points at it; the node image is copied in (`docker save | docker load`).
# TLS certificates (a CA, the server's for 127.0.0.1, a client's) are made with the
# `cryptography` library. Idempotent; stop kills only the pid in its pidfile. Needs root.
set -euo pipefail

NAME=labbuilder-second
RUN=${LABBUILDER_SECOND_RUN:-/run/$NAME}
DATA=${LABBUILDER_SECOND_DATA:-/var/lib/$NAME}
PORT=${LABBUILDER_SECOND_PORT:-23750}
SOCK=$RUN/docker.sock
PIDFILE=$RUN/dockerd.pid
TLS=$RUN/tls
LOG=$RUN/dockerd.log
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

say() { echo "second-engine: $*"; }
die() { echo "second-engine: error: $*" >&2; exit 1; }
d2() { docker -H "unix://$SOCK" "$@"; }

running_pid() {  # the pid of our dockerd, if the pidfile names a live one of ours
    local pid
    [ -s "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [ -r "/proc/$pid/cmdline" ] || return 1
    # pids are reused: it must be a dockerd started with our exec-root
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--exec-root $RUN/exec" || return 1
    echo "$pid"
}

make_certs() {
    [ -s "$TLS/ca.pem" ] && [ -s "$TLS/cert.pem" ] && [ -s "$TLS/server-cert.pem" ] && return 0
    mkdir -p "$TLS" && chmod 700 "$TLS"
    "$PYTHON" - "$TLS" <<'EOF'
import datetime, ipaddress, sys
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

out = Path(sys.argv[1])
now = datetime.datetime.now(datetime.timezone.utc)

def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

def save(stem, key, cert):
    (out / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path = out / ("key.pem" if stem == "cert" else f"{stem.replace('cert', 'key')}.pem")
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

def issue(cn, key, issuer, issuer_key, extensions):
    builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=30)))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())

ca_key = ec.generate_private_key(ec.SECP256R1())
ca = issue("labbuilder-second CA", ca_key, name("labbuilder-second CA"), ca_key,
           [(x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)])
(out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
server_key = ec.generate_private_key(ec.SECP256R1())
save("server-cert", server_key, issue("127.0.0.1", server_key, ca.subject, ca_key, [
    (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), False),
    (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)]))
client_key = ec.generate_private_key(ec.SECP256R1())
save("cert", client_key, issue("labbuilder", client_key, ca.subject, ca_key, [
    (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)]))
EOF
    rm -f "$RUN/context-made"  # new certificates: the context must take them
}

make_context() {
    [ -e "$RUN/context-made" ] && docker context inspect "$NAME" >/dev/null 2>&1 && return 0
    local spec="host=tcp://127.0.0.1:$PORT,ca=$TLS/ca.pem,cert=$TLS/cert.pem,key=$TLS/key.pem"
    docker context rm -f "$NAME" >/dev/null 2>&1 || true
    docker context create "$NAME" --description "labbuilder's second engine on this machine (tests)" \
        --docker "$spec" >/dev/null
    touch "$RUN/context-made"
}

load_image() {
    local tag
    tag=$("$PYTHON" -c 'from labbuilder.engine.image import image_tag; print(image_tag())' 2>/dev/null) ||
        { say "labbuilder is not importable with $PYTHON: node image not copied"; return 0; }
    if d2 image inspect "$tag" >/dev/null 2>&1; then return 0; fi
    docker image inspect "$tag" >/dev/null 2>&1 ||
        die "$tag is not in this host's engine either: run scripts/setup.sh first"
    say "copying $tag into the second engine"
    docker save "$tag" | d2 load -q >/dev/null
}

start() {
    [ "$(id -u)" -eq 0 ] || die "needs root (dockerd)"
    command -v dockerd >/dev/null || die "dockerd not found: bash scripts/ensure-docker.sh installs it"
    mkdir -p "$RUN/exec" "$DATA"
    make_certs
    if pid=$(running_pid); then
        say "already running (pid $pid)"
    else
        echo '{}' >"$RUN/daemon.json"  # not /etc/docker/daemon.json: the host engine's settings are not ours
        say "starting dockerd (log $LOG)"
        # setsid: its own session, so it outlives this script and the caller's terminal
        setsid "$PYTHON" - "$PORT" <<'EOF' \
            --config-file "$RUN/daemon.json" \
            --data-root "$DATA" --exec-root "$RUN/exec" --pidfile "$PIDFILE" \
            --containerd-namespace "$NAME" --containerd-plugins-namespace "$NAME-plugins" \
            -H "unix://$SOCK" -H fd:// \
            --tlsverify --tlscacert "$TLS/ca.pem" --tlscert "$TLS/server-cert.pem" --tlskey "$TLS/server-key.pem" \
            --bridge none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
            >"$LOG" 2>&1 &
# The launcher: bind 127.0.0.1:PORT here, enter a new network namespace, become dockerd with
# the socket as fd 3 (systemd's socket activation protocol, which dockerd's fd:// reads).
import ctypes, os, socket, sys
port, args = int(sys.argv[1]), sys.argv[2:]
listener = socket.create_server(("127.0.0.1", port), backlog=128)
CLONE_NEWNET = 0x40000000
if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
    sys.exit(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
if listener.fileno() != 3:
    os.dup2(listener.fileno(), 3)
os.set_inheritable(3, True)  # dup2 onto itself is a no-op: the socket would close at exec
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(devnull, 0)
os.execvp("dockerd", ["dockerd", *args])
EOF
        for _ in $(seq 1 120); do
            d2 version >/dev/null 2>&1 && break
            sleep 0.5
        done
        d2 version >/dev/null 2>&1 || die "dockerd did not answer on $SOCK within 60 s; see $LOG"
    fi
    make_context
    load_image
    say "ready: docker --context $NAME ps  (tcp://127.0.0.1:$PORT, TLS; unix://$SOCK)"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        say "not running"
        rm -f "$PIDFILE"
        return 0
    fi
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
        [ -e "/proc/$pid" ] || break
        sleep 0.5
    done
    [ -e "/proc/$pid" ] && die "dockerd (pid $pid) still runs after 30 s; see $LOG"
    rm -f "$PIDFILE"
    say "stopped"
}

status() {
    local pid
    if pid=$(running_pid); then
        say "running (pid $pid), unix://$SOCK, tcp://127.0.0.1:$PORT (TLS), context $NAME"
        d2 ps -a --format '{{.Names}}\t{{.Status}}' || true
    else
        say "stopped"
        return 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
