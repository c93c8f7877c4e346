"""CNI modes: what each node gets beyond its uplink — pod links, node routes, masquerade, files.

Each mode module (bridge, ptp, vxlan) exports `MODE`, a `CniMode`; `mode_for` picks the lab's.
"""

from __future__ import annotations

from labbuilder.compile.cni import bridge, ptp, vxlan
from labbuilder.compile.cni.mode import CniMode
from labbuilder.spec.model import Lab

MODES: dict[str, CniMode] = {m.name: m for m in (bridge.MODE, ptp.MODE, vxlan.MODE)}


def mode_for(lab: Lab) -> CniMode:
    return MODES[lab.cni.mode]
