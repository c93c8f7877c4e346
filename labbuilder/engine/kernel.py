"""What the host kernel offers a lab: every lab's containers share the host's kernel, so a feature
the kernel lacks is refused when the lab file is validated rather than half-way through `up`."""

from __future__ import annotations

from pathlib import Path

from labbuilder.spec.model import HostKernel


def host_kernel(proc: Path = Path("/proc")) -> HostKernel:
    """The host's facts; `/proc/net/sctp` exists once the sctp module is loaded."""
    return HostKernel(sctp=(proc / "net" / "sctp").exists())
