#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up (Docker engine, .venv, node image) first,
# then lint, types, and every test — unit and real-engine integration alike.
# Extra arguments go to pytest (e.g. `-m "not docker"` for the fast unit tests only).
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

bash scripts/setup.sh
# Test-only tools: a real headless browser for the graph page, Graphviz to render `graph -o dot`.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 || ! command -v dot >/dev/null 2>&1; then
    echo "test: installing chromium and graphviz (test tools)"
    apt-get -qq update
    DEBIAN_FRONTEND=noninteractive apt-get -y -qq install --no-install-recommends chromium chromium-driver graphviz >/dev/null
fi
echo "test: ruff"
.venv/bin/ruff check labbuilder tests bench
.venv/bin/ruff format --check labbuilder tests bench
echo "test: mypy"
.venv/bin/mypy labbuilder
echo "test: pytest"
.venv/bin/pytest "$@"
