"""kube-proxy's iptables mode as data: the nat and filter tables it would program on a node.

Rules are written in the form `iptables-save` prints them (its canonical option order, its
quoting), so a node's saved tables compare equal to these without normalising. Two styles:
"current" (kube-proxy >= 1.28) and "2018" (kube-proxy 1.10/1.11, Kubernetes The Hard Way 2018).
Names and the comments `parse` reads back come from `names`.
"""

from __future__ import annotations

import math
from ipaddress import IPv4Address

from labbuilder.compile.kubeproxy.names import (
    CLUSTER_IP,
    EXTERNAL,
    EXTERNAL_IP,
    EXTERNAL_SERVICES,
    FORWARD,
    FW_OTHER,
    HEALTH_CHECK,
    LOAD_BALANCER_IP,
    LOCAL_MASQ,
    LOCAL_ROUTE,
    MARK_MASQ,
    MASQ_MARK,
    NO_ENDPOINTS,
    NO_LOCAL_ENDPOINTS,
    NODEPORTS,
    POD_EXTERNAL,
    POSTROUTING,
    PROXY_FIREWALL,
    SERVICES,
    endpoint_address,
    ext_chain,
    fw_chain,
    fw_drop_comment,
    sep_chain,
    service_port_name,
    svc_chain,
    svl_chain,
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


def per_node(lab: Lab) -> bool:
    """Whether kube-proxy's tables differ from node to node: under a Local traffic policy each node
    balances over its own endpoints, and a source range holding the node's address lets it in."""
    return any(
        svc.external_local or svc.internal_local or svc.load_balancer_source_ranges
        for svc in lab.services
        if not svc.headless
    )


def kube_proxy_tables(lab: Lab, node: Node | None = None) -> list[Table]:
    """[nat, filter] as kube-proxy (iptables mode) programs them on `node`.

    Without Local policies or source ranges (`per_node` false) the tables are the same on every
    node, and the planner computes them once with node None.
    """
    style = lab.proxy_style
    old = style == "2018"
    cluster_cidr = str(lab.cluster.pod_cidr)
    nat, filt = Table("nat"), Table("filter")
    for chain in (SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ):
        nat.chain(chain)
    for chain in (SERVICES, FORWARD) if old else (SERVICES, EXTERNAL_SERVICES, FORWARD, NODEPORTS, PROXY_FIREWALL):
        filt.chain(chain)

    # Jumps from the builtin chains (kube-proxy prepends them; iptables-save shows them in this order).
    portals = comment("kubernetes service portals")
    new = "-m conntrack --ctstate NEW"
    nat.add("PREROUTING", f"{portals} -j {SERVICES}")
    nat.add("OUTPUT", f"{portals} -j {SERVICES}")
    nat.add("POSTROUTING", f"{comment('kubernetes postrouting rules')} -j {POSTROUTING}")
    if old:  # only KUBE-SERVICES (for REJECTs) and KUBE-FORWARD in 2018's filter table
        filt.add("FORWARD", f"{comment('kubernetes forwarding rules')} -j {FORWARD}")
        filt.add("OUTPUT", f"{new} {portals} -j {SERVICES}")
    else:
        firewall = f"{new} {comment('kubernetes load balancer firewall')} -j {PROXY_FIREWALL}"
        external = f"{new} {comment('kubernetes externally-visible service portals')} -j {EXTERNAL_SERVICES}"
        filt.add("INPUT", firewall)
        filt.add("INPUT", f"{comment('kubernetes health check service ports')} -j {NODEPORTS}")
        filt.add("INPUT", external)
        filt.add("FORWARD", firewall)
        filt.add("FORWARD", f"{comment('kubernetes forwarding rules')} -j {FORWARD}")
        filt.add("FORWARD", f"{new} {portals} -j {SERVICES}")
        filt.add("FORWARD", external)
        filt.add("OUTPUT", firewall)
        filt.add("OUTPUT", f"{new} {portals} -j {SERVICES}")

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
            if old:
                _service_port_2018(nat, filt, svc, port, cluster_cidr)
            else:
                _ServicePort(nat, filt, svc, port, cluster_cidr, node).write()

    # Must stay the last rule of KUBE-SERVICES: node ports on any local address.
    nat.add(
        SERVICES,
        f"{comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')}"
        f" -m addrtype --dst-type LOCAL -j {NODEPORTS}",
    )
    return [nat, filt]


REJECT = "-j REJECT --reject-with icmp-port-unreachable"  # as iptables-save prints kube-proxy's `-j REJECT`
RECENT = "--name {} --mask 255.255.255.255 --rsource"


class _ServicePort:
    """One service port in current kube-proxy's shapes (syncProxyRules' loop body, in its order).

    Internal traffic (the ClusterIP) goes to KUBE-SVC, or KUBE-SVL under internalTrafficPolicy
    Local; external traffic (node port, externalIPs, LB IPs) to KUBE-EXT, which masquerades and
    jumps to KUBE-SVC, or under externalTrafficPolicy Local keeps the client address and jumps to
    KUBE-SVL (pods and the node itself short-circuit to KUBE-SVC). LB IPs with source ranges pass
    KUBE-FW first. No endpoints: REJECT in filter; no local ones under a Local policy: DROP.
    """

    def __init__(self, nat: Table, filt: Table, svc: Service, port: ServicePort, cluster_cidr: str, node: Node | None):
        self.nat, self.filt, self.svc, self.port, self.node = nat, filt, svc, port, node
        self.cluster_cidr = cluster_cidr
        self.spn = service_port_name(svc, port)
        self.proto = port.protocol.lower()
        self.svc_chain, self.svl_chain = svc_chain(self.spn, self.proto), svl_chain(self.spn, self.proto)
        self.ext_chain, self.fw_chain = ext_chain(self.spn, self.proto), fw_chain(self.spn, self.proto)
        # proxy.CategorizeEndpoints: every endpoint is ready; "local" ones run on this node.
        endpoints = svc.endpoints.get(port.name or str(port.port), ())
        self.externally = port.node_port is not None or bool(svc.external_ips or svc.load_balancer_ips)
        self.ext_local = svc.external_local and self.externally
        self.uses_cluster = not svc.internal_local or self.externally
        self.uses_local = svc.internal_local or self.ext_local
        here = node.name if node else None
        self.cluster_eps = endpoints if self.uses_cluster else ()
        self.local_eps = tuple(e for e in endpoints if e.node is not None and e.node == here) if self.uses_local else ()
        self.has_endpoints = bool(endpoints)
        self.has_internal = self.has_endpoints and (bool(self.local_eps) or not svc.internal_local)
        self.has_external = self.has_endpoints and (bool(self.local_eps) or not self.ext_local)
        self.uses_fw = self.has_endpoints and bool(svc.load_balancer_ips and svc.load_balancer_source_ranges)

    def dst(self, ip: IPv4Address | None, text: str) -> str:
        """`-d IP/32 -p PROTO` + comment + `--dport PORT`, in iptables-save's order."""
        p = self.proto
        return f"-d {ip}/32 -p {p} {comment(text)} -m {p} --dport {self.port.port}"

    def refused(self) -> tuple[str, str]:
        """(comment, target) of the filter rule for an address with nowhere to go."""
        if not self.has_endpoints:
            return NO_ENDPOINTS.write(self.spn), REJECT
        return NO_LOCAL_ENDPOINTS.write(self.spn), "-j DROP"

    def write(self) -> None:
        self.capture()
        if self.has_internal:
            # Off-cluster sources reaching a ClusterIP get SNAT, since the endpoint may be on another node.
            internal = self.svl_chain if self.svc.internal_local else self.svc_chain
            masq = f"! -s {self.cluster_cidr} {self.dst(self.svc.cluster_ip, CLUSTER_IP.write(self.spn))}"
            self.nat.add(internal, f"{masq} -j {MARK_MASQ}")
        if self.has_endpoints and self.externally:
            self.external_chain()
        if self.uses_fw:
            self.firewall_chain()
        if self.uses_cluster and self.cluster_eps:
            self.balance(self.svc_chain, self.cluster_eps)
        if self.uses_local and self.local_eps:
            self.balance(self.svl_chain, self.local_eps)
        reachable = self.cluster_eps if self.uses_cluster else self.local_eps
        for ep in reachable:
            self.endpoint(ep)

    def capture(self) -> None:
        """KUBE-SERVICES and KUBE-NODEPORTS' jumps, or the filter rules that stand in for them."""
        svc, spn, p = self.svc, self.spn, self.proto
        if self.has_internal:
            internal = self.svl_chain if svc.internal_local else self.svc_chain
            self.nat.add(SERVICES, f"{self.dst(svc.cluster_ip, CLUSTER_IP.write(spn))} -j {internal}")
        else:
            text, target = self.refused()
            self.filt.add(SERVICES, f"{self.dst(svc.cluster_ip, text)} {target}")
        ext_text, ext_target = self.refused()
        for ip in svc.external_ips:
            if self.has_endpoints:
                self.nat.add(SERVICES, f"{self.dst(ip, EXTERNAL_IP.write(spn))} -j {self.ext_chain}")
            if not self.has_external:
                self.filt.add(EXTERNAL_SERVICES, f"{self.dst(ip, ext_text)} {ext_target}")
        lb_target = self.fw_chain if self.uses_fw else self.ext_chain
        for ip in svc.load_balancer_ips:
            if self.has_endpoints:
                self.nat.add(SERVICES, f"{self.dst(ip, LOAD_BALANCER_IP.write(spn))} -j {lb_target}")
            if self.uses_fw:
                self.filt.add(PROXY_FIREWALL, f"{self.dst(ip, fw_drop_comment(spn, self.fw_chain))} -j DROP")
        if not self.has_external:
            for ip in svc.load_balancer_ips:
                self.filt.add(EXTERNAL_SERVICES, f"{self.dst(ip, ext_text)} {ext_target}")
        node_port = self.port.node_port
        if node_port is not None:
            if self.has_endpoints:
                self.nat.add(NODEPORTS, f"-p {p} {comment(spn)} -m {p} --dport {node_port} -j {self.ext_chain}")
            if not self.has_external:
                local = "-m addrtype --dst-type LOCAL"
                self.filt.add(
                    EXTERNAL_SERVICES, f"-p {p} {comment(ext_text)} {local} -m {p} --dport {node_port} {ext_target}"
                )
        if svc.health_check_node_port is not None:  # accepted whether or not this node has endpoints
            health = comment(HEALTH_CHECK.write(spn))
            self.filt.add(NODEPORTS, f"-p tcp {health} -m tcp --dport {svc.health_check_node_port} -j ACCEPT")

    def external_chain(self) -> None:
        ext, spn = self.ext_chain, self.spn
        self.nat.chain(ext)
        if not self.ext_local:  # the endpoint may be on another node: masquerade
            self.nat.add(ext, f"{comment(EXTERNAL.write(spn))} -j {MARK_MASQ}")
        else:  # keep the client's address; pods and the node itself go the Cluster way
            self.nat.add(ext, f"-s {self.cluster_cidr} {comment(POD_EXTERNAL.write(spn))} -j {self.svc_chain}")
            local = "-m addrtype --src-type LOCAL"
            self.nat.add(ext, f"{comment(LOCAL_MASQ.write(spn))} {local} -j {MARK_MASQ}")
            self.nat.add(ext, f"{comment(LOCAL_ROUTE.write(spn))} {local} -j {self.svc_chain}")
        if self.has_external:
            self.nat.add(ext, f"-j {self.svl_chain if self.ext_local else self.svc_chain}")

    def firewall_chain(self) -> None:
        fw, lb = self.fw_chain, comment(LOAD_BALANCER_IP.write(self.spn))
        self.nat.chain(fw)
        for cidr in self.svc.load_balancer_source_ranges:
            self.nat.add(fw, f"-s {cidr} {lb} -j {self.ext_chain}")
        node_ip = self.node.ip if self.node else None
        if node_ip is not None and any(node_ip in cidr for cidr in self.svc.load_balancer_source_ranges):
            # the node's own requests to its LB IPs loop back with the LB IP as their source
            for ip in self.svc.load_balancer_ips:
                self.nat.add(fw, f"-s {ip}/32 {lb} -j {self.ext_chain}")
        self.nat.add(fw, comment(FW_OTHER.write(self.spn)))

    def balance(self, chain: str, endpoints: tuple[Endpoint, ...]) -> None:
        """writeServiceToEndpointRules: sticky rules first, then 1/n, 1/(n-1), ..., the last takes the rest."""
        self.nat.chain(chain)
        seps = [(ep, sep_chain(self.spn, self.proto, _endpoint(ep))) for ep in endpoints]
        if self.svc.session_affinity:
            for ep, sep in seps:
                check = f"-m recent --rcheck --seconds {self.svc.affinity_timeout} --reap {RECENT.format(sep)}"
                self.nat.add(chain, f"{comment(f'{self.spn} -> {_endpoint(ep)}')} {check} -j {sep}")
        n = len(seps)
        for i, (ep, sep) in enumerate(seps):
            stat = f" -m statistic --mode random --probability {probability(i, n)}" if i < n - 1 else ""
            self.nat.add(chain, f"{comment(f'{self.spn} -> {_endpoint(ep)}')}{stat} -j {sep}")

    def endpoint(self, ep: Endpoint) -> None:
        sep, c, p = sep_chain(self.spn, self.proto, _endpoint(ep)), comment(self.spn), self.proto
        self.nat.add(sep, f"-s {ep.ip}/32 {c} -j {MARK_MASQ}")  # hairpin: a pod reaching itself
        sticky = f" -m recent --set {RECENT.format(sep)}" if self.svc.session_affinity else ""
        self.nat.add(sep, f"-p {p} {c}{sticky} -m {p} -j DNAT --to-destination {_endpoint(ep)}")


def _service_port_2018(nat: Table, filt: Table, svc: Service, port: ServicePort, cluster_cidr: str) -> None:
    """kube-proxy 1.10/1.11 (seeds 003, 004): ClusterIP and NodePort, the SNAT mark in
    KUBE-SERVICES, node ports straight to KUBE-SVC, no endpoint in the SVC->SEP comment."""
    spn = service_port_name(svc, port, "2018")
    proto = port.protocol.lower()
    svc_name = svc_chain(spn, proto)
    endpoints = svc.endpoints.get(port.name or str(port.port), ())
    # iptables-save order: addresses and -p first (they live in the ipt_entry), then the matches
    # in the order written, each match's own options after it.
    cluster_ip = f"-d {svc.cluster_ip}/32 -p {proto} {comment(CLUSTER_IP.write(spn))} -m {proto} --dport {port.port}"

    if not endpoints:
        reject = f"-d {svc.cluster_ip}/32 -p {proto} {comment(NO_ENDPOINTS.write(spn))} -m {proto}"
        filt.add(SERVICES, f"{reject} --dport {port.port} {REJECT}")
        return

    nat.chain(svc_name)
    nat.add(SERVICES, f"! -s {cluster_cidr} {cluster_ip} -j {MARK_MASQ}")
    nat.add(SERVICES, f"{cluster_ip} -j {svc_name}")
    if port.node_port is not None:  # straight to the SVC chain, marked for SNAT first
        by_node_port = f"-p {proto} {comment(spn)} -m {proto} --dport {port.node_port}"
        nat.add(NODEPORTS, f"{by_node_port} -j {MARK_MASQ}")
        nat.add(NODEPORTS, f"{by_node_port} -j {svc_name}")

    seps = [(ep, sep_chain(spn, proto, _endpoint(ep))) for ep in endpoints]
    if svc.session_affinity:  # sticky first: a recent source goes back to its endpoint
        for _, sep in seps:
            check = f"-m recent --rcheck --seconds {svc.affinity_timeout} --reap {RECENT.format(sep)}"
            nat.add(svc_name, f"{comment(spn)} {check} -j {sep}")
    n = len(seps)
    for i, (_, sep) in enumerate(seps):
        stat = f" -m statistic --mode random --probability {probability(i, n, '2018')}" if i < n - 1 else ""
        nat.add(svc_name, f"{comment(spn)}{stat} -j {sep}")
    for ep, sep in seps:
        nat.add(sep, f"-s {ep.ip}/32 {comment(spn)} -j {MARK_MASQ}")
        sticky = f" -m recent --set {RECENT.format(sep)}" if svc.session_affinity else ""
        nat.add(sep, f"-p {proto} {comment(spn)}{sticky} -m {proto} -j DNAT --to-destination {_endpoint(ep)}")
