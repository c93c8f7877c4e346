#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info` and mmdebstrap (the node image builder) is
# installed. On a machine with only the docker client: apt-get install docker.io and start dockerd
# in the background. Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

LOG=${LABBUILDER_DOCKERD_LOG:-/var/log/labbuilder-dockerd.log}
WAIT=${LABBUILDER_DOCKER_WAIT:-60}  # seconds
say() { echo "ensure-docker: $*"; }
die() { echo "ensure-docker: error: $*" >&2; exit 1; }

can_root() { [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $* (run this script as root)"
    fi
}

# The default engine's dockerd, found by its pidfile: not any process named dockerd, since a
# second engine (scripts/second-engine.sh) may run beside it.
default_dockerd_running() {
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null) || return 1
    [ -n "$pid" ] && grep -qx dockerd "/proc/$pid/comm" 2>/dev/null
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_install() {  # apt_install PKG...: install the missing ones, quietly
    local missing=() pkg
    for pkg in "$@"; do installed "$pkg" || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} by hand"
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -qq update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0 \
        install --no-install-recommends "${missing[@]}" >/dev/null
}

# mmdebstrap builds the node image without a registry (labbuilder/image.py); the keyring lets it
# verify bookworm. Without root it is optional: the image can still come from the Dockerfile.
if command -v mmdebstrap >/dev/null 2>&1 && installed debian-archive-keyring; then
    :
elif can_root; then
    apt_install mmdebstrap debian-archive-keyring
else
    say "warning: mmdebstrap is missing and we are not root: node images need the Dockerfile path"
fi

if out=$(docker info 2>&1 >/dev/null); then
    say "docker engine is running"
    exit 0
fi
if grep -qi 'permission denied' <<<"$out"; then
    die "a docker engine runs but $(id -un) may not use it: run as root or join the docker group"
fi

command -v dockerd >/dev/null 2>&1 || apt_install docker.io
command -v iptables >/dev/null 2>&1 || apt_install iptables
command -v ip >/dev/null 2>&1 || apt_install iproute2

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    say "starting docker with systemctl"
    as_root systemctl start docker
elif default_dockerd_running; then
    say "dockerd is already running; waiting for it to answer"
else
    say "starting dockerd in the background (log: $LOG)"
    # its own session, so it outlives this shell and its process group
    as_root sh -c "setsid nohup dockerd >>'$LOG' 2>&1 </dev/null &"
fi

for _ in $(seq "$WAIT"); do
    if docker info >/dev/null 2>&1; then
        say "docker engine is running"
        exit 0
    fi
    sleep 1
done
if [ -r "$LOG" ]; then tail -n 20 "$LOG" >&2; fi
die "the docker engine did not answer 'docker info' within ${WAIT}s (dockerd log: $LOG)"
