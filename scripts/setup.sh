#!/usr/bin/env bash
# One-time setup of a labbuilder checkout: Docker engine + mmdebstrap, .venv with labbuilder
# (editable, dev tools), and the node image. Safe to rerun; works from any directory.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

say "checking the docker engine and mmdebstrap"
scripts/ensure-docker.sh

if [ ! -x .venv/bin/python ]; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found (apt-get install python3 python3-venv)"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "labbuilder needs Python >= 3.11, found $(python3 -V 2>&1)"
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        say "installing python3-venv"
        if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq install python3-venv >/dev/null
    fi
    say "creating .venv"
    python3 -m venv .venv
fi

say "installing labbuilder into .venv (editable, with dev tools)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

say "building the node image if it is missing"
.venv/bin/labbuilder image build

say "done: run .venv/bin/labbuilder --help"
