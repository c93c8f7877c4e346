"""Where an operation applies: its own module, so the engine can name namespaces without
importing the whole vocabulary of operations (compile/ops.py re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ns:
    """Where an operation applies: a container's own netns, or a pod netns inside it."""

    container: str  # node name, or ROUTER
    netns: str | None = None

    def ip(self) -> str:
        """The `ip` command prefix for this namespace, as typed inside the container."""
        return f"ip -n {self.netns}" if self.netns else "ip"
