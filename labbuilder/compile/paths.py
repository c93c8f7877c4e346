"""Where labbuilder keeps its own state inside the containers of a lab: one place for every path
that apply, render, reset and readback agree on."""

from __future__ import annotations

STATE_DIR = "/run/labbuilder"  # inside each node: what labbuilder keeps there
PID_DIR = f"{STATE_DIR}/pids"  # one pidfile per process it started, named after the process
RULES_FILE = f"{STATE_DIR}/iptables.rules"  # the iptables-restore payload last applied
IPSETS_FILE = f"{STATE_DIR}/ipsets.restore"  # the ipset restore payload last applied (kube-router's sets)
NFT_FILE = f"{STATE_DIR}/kube-proxy.nft"  # the nft -f payload last applied (kube-proxy's nftables mode)
BUILD_SCRIPT = f"{STATE_DIR}/build.sh"  # what a fresh container ran to make its plan true
START_SCRIPT = f"{STATE_DIR}/start.sh"  # the start script (compile/kubelet.py) a fresh container's agent ran
AGENT = "/usr/local/bin/labbuilder-agent"  # each node's main process (templates/node/agent.sh)
AGENT_DIR = "/dev/shm/labbuilder-agent"  # its fifo `in` and its jobs: a tmpfs, made anew at every start
PODSERVER_CONF = "/etc/labbuilder/podserver.json"  # the pods a node's podserver answers for
DNSMASQ_CONF = "/etc/labbuilder/dnsmasq.conf"  # the cluster DNS's records, in the DNS pod's node
SPEC_COPY = "/etc/labbuilder/lab.yaml"  # inside the router: lets status/get/reset work without the file


def pidfile(process: str) -> str:
    return f"{PID_DIR}/{process}.pid"
