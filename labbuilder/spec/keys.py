"""Keys every layer names the same way, in a module light enough for any command to import."""

from __future__ import annotations

ROUTER = "router"  # the key of the lab's router: in the plan, in references, in container labels
