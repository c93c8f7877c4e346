"""A lab file from its path (or a shipped lab's name) to its model, optionally under another name."""

from __future__ import annotations

from labbuilder.spec.load import Spec, load
from labbuilder.spec.model import HostKernel
from labbuilder.spec.resolve import Resolved, build_model


def resolve_file(path: str, name: str | None = None, kernel: HostKernel | None = None) -> tuple[Spec, Resolved]:
    """Load, validate and resolve lab file `path`; `name` renames the lab (`up --name`); `kernel`
    holds the host's facts for the commands that build on this host (validate, plan, up)."""
    spec = load(path)
    if name:
        spec.data["name"] = name
    return spec, build_model(spec, kernel)
