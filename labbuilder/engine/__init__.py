"""Stage 3 — effects at the edge: the only code that talks to Docker (runtime: one LabHandle per
lab) and to the kernel (netlink sockets opened by namespace path), and applies a plan."""
