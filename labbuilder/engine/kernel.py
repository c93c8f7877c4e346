"""What the host kernel offers a lab: every lab's containers share the host's kernel, so a feature
the kernel lacks is refused when the lab file is validated rather than half-way through `up`."""

from __future__ import annotations

from pathlib import Path

from labbuilder.spec.model import HostKernel

FACTS = {"sctp": "net/sctp", "ipvs": "net/ip_vs"}  # fact -> the /proc entry that shows it
# The same test on an engine's host, from the helper beside it (its /proc is that kernel's).
PROBE = "; ".join(f"test -e /proc/{entry} && echo {fact}" for fact, entry in FACTS.items()) + "; true"


def host_kernel(proc: Path = Path("/proc")) -> HostKernel:
    """The host's facts; `/proc/net/sctp` exists once the sctp module is loaded, `/proc/net/ip_vs`
    once IPVS is (these machines' kernels have none)."""
    return HostKernel(**{fact: (proc / entry).exists() for fact, entry in FACTS.items()})


def parse_probe(output: str) -> HostKernel:
    said = set(output.split())
    return HostKernel(**{fact: fact in said for fact in FACTS})
