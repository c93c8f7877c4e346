"""kube-proxy's iptables mode as data: the nat and filter tables it would program on a node.

Rules are written in the form `iptables-save` prints them (its canonical option order, its
quoting), so a node's saved tables compare equal to these without normalising. Two styles:
"current" (kube-proxy >= 1.28) and "2018" (kube-proxy 1.10/1.11, Kubernetes The Hard Way 2018).
Names and the comments `parse` reads back come from `names`.
"""

from __future__ import annotations

import math

from labbuilder.compile.kubeproxy.names import (
    CLUSTER_IP,
    EXTERNAL,
    FORWARD,
    MARK_MASQ,
    MASQ_MARK,
    NO_ENDPOINTS,
    NODEPORTS,
    POSTROUTING,
    SERVICES,
    endpoint_address,
    ext_chain,
    sep_chain,
    service_port_name,
    svc_chain,
)
from labbuilder.compile.netfilter import Table, comment
from labbuilder.spec.model import Endpoint, Lab, Node, ProxyStyle, Service, ServicePort


def probability(i: int, n: int, style: ProxyStyle = "current") -> str:
    """The `--probability` iptables-save prints for endpoint i (0-based) of n.

    kube-proxy writes 1/(n-i) with %0.10f (2018: %0.5f); libxt_statistic stores
    lround(p * 2^31) in a u32 and prints it back divided by 2^31 with %.11f.
    """
    if not 0 <= i < n:
        raise ValueError(f"endpoint {i} of {n}")
    written = float(f"{1.0 / (n - i):.{5 if style == '2018' else 10}f}")
    stored = math.floor(written * 0x80000000 + 0.5)  # lround: half away from zero (p > 0)
    return f"{stored / 0x80000000:.11f}"


def _endpoint(ep: Endpoint) -> str:
    return endpoint_address(ep.ip, ep.port)


def kube_proxy_tables(lab: Lab, node: Node | None = None) -> list[Table]:
    """[nat, filter] as kube-proxy (iptables mode) programs them on `node`.

    With externalTrafficPolicy Cluster (all the model has) the tables are the same on every
    node, so the planner computes them once (node None) for the whole lab; `node` is taken so
    that per-node policies can be added without changing callers.
    """
    del node
    style = lab.proxy_style
    old = style == "2018"
    cluster_cidr = str(lab.cluster.pod_cidr)
    nat, filt = Table("nat"), Table("filter")
    for chain in (SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ):
        nat.chain(chain)
    for chain in (SERVICES, FORWARD):
        filt.chain(chain)

    # Jumps from the builtin chains (kube-proxy prepends them; iptables-save shows them in this order).
    portals = comment("kubernetes service portals")
    nat.add("PREROUTING", f"{portals} -j {SERVICES}")
    nat.add("OUTPUT", f"{portals} -j {SERVICES}")
    nat.add("POSTROUTING", f"{comment('kubernetes postrouting rules')} -j {POSTROUTING}")
    filt.add("FORWARD", f"{comment('kubernetes forwarding rules')} -j {FORWARD}")
    if not old:  # the FORWARD jump to the filter KUBE-SERVICES came later than 2018
        filt.add("FORWARD", f"-m conntrack --ctstate NEW {portals} -j {SERVICES}")
    filt.add("OUTPUT", f"-m conntrack --ctstate NEW {portals} -j {SERVICES}")

    # --or-mark / --xor-mark as written; iptables-save shows both as --set-xmark.
    nat.add(MARK_MASQ, f"-j MARK --set-xmark {MASQ_MARK}")
    snat = comment("kubernetes service traffic requiring SNAT")
    if old:  # no RETURN/clear-mark pair, no --random-fully yet
        nat.add(POSTROUTING, f"{snat} -m mark --mark {MASQ_MARK} -j MASQUERADE")
    else:
        nat.add(POSTROUTING, f"-m mark ! --mark {MASQ_MARK} -j RETURN")
        nat.add(POSTROUTING, "-j MARK --set-xmark 0x4000/0x0")
        nat.add(POSTROUTING, f"{snat} -j MASQUERADE --random-fully")

    # KUBE-FORWARD: let marked (to be SNATed) traffic and its replies through a DROP policy.
    established = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    if not old:  # INVALID drop came in 1.15 (spurious RSTs, kubernetes#74839)
        filt.add(FORWARD, "-m conntrack --ctstate INVALID -j DROP")
    filt.add(FORWARD, f"{comment('kubernetes forwarding rules')} -m mark --mark {MASQ_MARK} -j ACCEPT")
    if old:  # replies were accepted only to or from the pod network
        pod_src = comment("kubernetes forwarding conntrack pod source rule")
        pod_dst = comment("kubernetes forwarding conntrack pod destination rule")
        filt.add(FORWARD, f"-s {cluster_cidr} {pod_src} {established}")
        filt.add(FORWARD, f"-d {cluster_cidr} {pod_dst} {established}")
    else:
        filt.add(FORWARD, f"{comment('kubernetes forwarding conntrack rule')} {established}")

    for svc in lab.services:
        if svc.headless:  # kube-proxy skips services without a ClusterIP; DNS alone serves them
            continue
        for port in svc.ports:
            _service_port(nat, filt, svc, port, style, cluster_cidr)

    # Must stay the last rule of KUBE-SERVICES: node ports on any local address.
    nat.add(
        SERVICES,
        f"{comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')}"
        f" -m addrtype --dst-type LOCAL -j {NODEPORTS}",
    )
    return [nat, filt]


def _service_port(
    nat: Table, filt: Table, svc: Service, port: ServicePort, style: ProxyStyle, cluster_cidr: str
) -> None:
    old = style == "2018"
    spn = service_port_name(svc, port, style)
    proto = port.protocol.lower()
    svc_name = svc_chain(spn, proto)
    endpoints = svc.endpoints.get(port.name or str(port.port), ())
    # iptables-save order: addresses and -p first (they live in the ipt_entry), then the matches
    # in the order written, each match's own options after it.
    cluster_ip = f"-d {svc.cluster_ip}/32 -p {proto} {comment(CLUSTER_IP.write(spn))} -m {proto} --dport {port.port}"

    if not endpoints:
        reject = f"-d {svc.cluster_ip}/32 -p {proto} {comment(NO_ENDPOINTS.write(spn))} -m {proto}"
        filt.add(SERVICES, f"{reject} --dport {port.port} -j REJECT --reject-with icmp-port-unreachable")
        return

    nat.chain(svc_name)
    # Off-cluster sources reaching a ClusterIP get SNAT, since the endpoint may be on another node;
    # 2018 put that rule in KUBE-SERVICES just before the jump, current versions in the SVC chain.
    masq = f"! -s {cluster_cidr} {cluster_ip} -j {MARK_MASQ}"
    if old:
        nat.add(SERVICES, masq)
    nat.add(SERVICES, f"{cluster_ip} -j {svc_name}")
    if not old:
        nat.add(svc_name, masq)

    if port.node_port is not None:
        by_node_port = f"-p {proto} {comment(spn)} -m {proto} --dport {port.node_port}"
        if old:  # straight to the SVC chain, marked for SNAT first
            nat.add(NODEPORTS, f"{by_node_port} -j {MARK_MASQ}")
            nat.add(NODEPORTS, f"{by_node_port} -j {svc_name}")
        else:
            ext = ext_chain(spn, proto)
            nat.add(NODEPORTS, f"{by_node_port} -j {ext}")
            nat.add(ext, f"{comment(EXTERNAL.write(spn))} -j {MARK_MASQ}")
            nat.add(ext, f"-j {svc_name}")

    seps = [(ep, sep_chain(spn, proto, _endpoint(ep))) for ep in endpoints]

    def to_sep(ep: Endpoint) -> str:  # current versions name the endpoint in the SVC->SEP comment
        return comment(spn if old else f"{spn} -> {_endpoint(ep)}")

    recent = "--name {} --mask 255.255.255.255 --rsource"
    if svc.session_affinity:  # sticky first: a recent source goes back to its endpoint
        for ep, sep in seps:
            check = f"-m recent --rcheck --seconds {svc.affinity_timeout} --reap {recent.format(sep)}"
            nat.add(svc_name, f"{to_sep(ep)} {check} -j {sep}")
    n = len(seps)
    for i, (ep, sep) in enumerate(seps):  # 1/n, 1/(n-1), ..., the last one takes the rest
        stat = f" -m statistic --mode random --probability {probability(i, n, style)}" if i < n - 1 else ""
        nat.add(svc_name, f"{to_sep(ep)}{stat} -j {sep}")

    for ep, sep in seps:
        nat.add(sep, f"-s {ep.ip}/32 {comment(spn)} -j {MARK_MASQ}")  # hairpin: a pod reaching itself
        sticky = f" -m recent --set {recent.format(sep)}" if svc.session_affinity else ""
        nat.add(sep, f"-p {proto} {comment(spn)}{sticky} -m {proto} -j DNAT --to-destination {_endpoint(ep)}")
