"""Kubernetes NetworkPolicy manifests as lab-file items, so course material is reused unchanged.

`networkPolicies: [{file: policies/deny.yaml}]` reads that file's documents (apiVersion
networking.k8s.io/v1, kind NetworkPolicy, metadata, spec); each becomes the item a lab file would
hold (name, namespace and the spec's fields), with a map of where each key moved, so the lab
schema and the resolver check both forms alike and still point into the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Path_ = tuple[str | int, ...]

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
SPEC_KEYS = ("podSelector", "policyTypes", "ingress", "egress")
TOP_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")  # status is the server's, and ignored

# Where a manifest's keys go in the lab-file item (the longest prefix wins).
MOVES: dict[Path_, Path_] = {
    (): (),
    ("metadata", "name"): ("name",),
    ("metadata", "namespace"): ("namespace",),
    ("spec",): (),
}
# Positions of these manifest paths are not carried over: the item is located at its document.
DROPPED: tuple[Path_, ...] = (("spec",), ("metadata",))


@dataclass(frozen=True)
class Converted:
    item: dict[str, Any]
    moves: dict[Path_, Path_]


@dataclass(frozen=True)
class Rejected:
    """Why a document is not a NetworkPolicy the lab can take, at `path` inside it."""

    path: Path_
    message: str
    hint: str = ""


def policy_item(document: Any) -> Converted | Rejected:
    """The lab-file item of one manifest document, or why it is not one."""
    if not isinstance(document, dict):
        return Rejected((), "a manifest document must be a mapping (apiVersion, kind, metadata, spec)")
    kind, version = document.get("kind"), document.get("apiVersion")
    if kind != KIND:
        return Rejected(
            ("kind",) if "kind" in document else (),
            f"kind {kind!r} is not NetworkPolicy" if kind is not None else "the manifest has no kind",
            "only kind: NetworkPolicy manifests can be read here",
        )
    if version != API_VERSION:
        return Rejected(
            ("apiVersion",) if "apiVersion" in document else (),
            f"NetworkPolicy has apiVersion {API_VERSION}, not {version!r}",
            f"apiVersion: {API_VERSION}",
        )
    for key in document:
        if key not in TOP_KEYS:
            return Rejected((key,), f"unknown field {key!r}", "a manifest holds apiVersion, kind, metadata and spec")
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        where: Path_ = ("metadata",) if isinstance(metadata, dict) else ()
        return Rejected(where, "metadata.name is required", "metadata: {name: NAME, namespace: NS}")
    spec = document.get("spec", {})
    if not isinstance(spec, dict):
        return Rejected(("spec",), "spec must be a mapping", "spec: {podSelector: {}, ...}")
    for key in spec:
        if key not in SPEC_KEYS:
            return Rejected(("spec", key), f"spec: unknown field {key!r}", "known fields: " + ", ".join(SPEC_KEYS))
    item: dict[str, Any] = {"name": metadata["name"]}
    if "namespace" in metadata:  # kubectl apply without -n puts it in `default`, as the lab does
        item["namespace"] = metadata["namespace"]
    item.update(spec)
    return Converted(item, MOVES)


def manifest_path(item_path: Path_) -> Path_:
    """Where a key of the lab-file item sits in the manifest it came from (MOVES, backwards)."""
    if item_path[:1] in (("name",), ("namespace",)):
        return ("metadata", *item_path)
    return ("spec", *item_path)
