"""Container labels: how every command finds a lab's containers without its file (and all
labbuilder ever touches). Their own module: the engine needs them, not the planner."""

from __future__ import annotations

LABEL_LAB = "labbuilder.lab"
LABEL_NODE = "labbuilder.node"
LABEL_ROLE = "labbuilder.role"
LABEL_SPEC = "labbuilder.spec-hash"
LABEL_FLEET = "labbuilder.fleet"  # the fleet a lab belongs to (`labbuilder fleet`): its only record
