"""kube-router's names, pinned against outputs of real kube-router nodes and its own tests."""

from labbuilder.compile.netpol import names


def test_top_level_jump_comments_are_kube_routers():
    # iptables-save of a k3s v1.30 node (embedded kube-router v2): the jumps from the builtin chains.
    spec = lambda chain: ["-m", "comment", "--comment", "kube-router netpol", "-j", chain]  # noqa: E731
    assert names.rule_uuid("INPUT", spec(names.INPUT)) == "4IA2OSFRMVNDXBVV"
    assert names.rule_uuid("FORWARD", spec(names.FORWARD)) == "TEMCG2JMHZYE7H7T"
    assert names.rule_uuid("OUTPUT", spec(names.OUTPUT)) == "VEAAIY32XVBHCSCY"
    assert names.with_uuid("INPUT", spec(names.INPUT))[3] == "kube-router netpol - 4IA2OSFRMVNDXBVV"


def test_input_whitelist_comments_are_kube_routers():
    # The same node: service range 10.43.0.0/16, node ports 30000:32767.
    rng = ["-m", "comment", "--comment", "allow traffic to primary/secondary cluster IP range"]
    assert names.rule_uuid(names.INPUT, [*rng, "-d", "10.43.0.0/16", "-j", "RETURN"]) == "EKROEGTNIJ3AP3LC"
    for proto, uuid in (("tcp", "LR7XO7NXDBGQJD2M"), ("udp", "76UCBPIZNGJNWNUZ")):
        spec = ["-p", proto, "-m", "comment", "--comment", f"allow LOCAL {proto.upper()} traffic to node ports"]
        spec += ["-m", "addrtype", "--dst-type", "LOCAL", "-m", "multiport", "--dports", "30000:32767", "-j", "RETURN"]
        assert names.rule_uuid(names.INPUT, spec) == uuid


def test_ipset_names_follow_kube_routers_hash_rule():
    # Single-stack kube-router (no family in the hash) on real clusters: the docs' example policy
    # and an argocd node's iptables-save.
    assert names.target_dst_set("default", "allow-backend-slave-access-to-frontend", "") == "KUBE-DST-IZMNXX7C6SXMJM4O"
    policy = ("argocd", "argocd-application-controller-network-policy")
    assert names.target_dst_set(*policy, family="") == "KUBE-DST-DM6ZQPCTKCXEROGZ"
    assert names.ingress_pod_set(*policy, 0, family="") == "KUBE-SRC-DRBIHPAD4OLOF546"


def test_dual_stack_names_mix_in_the_family():
    # v2 hashes namespace + name (+ rule index) + "IPv4": other names than v1's, same prefixes.
    policy = ("argocd", "argocd-application-controller-network-policy")
    assert names.target_dst_set(*policy) != names.target_dst_set(*policy, family="")
    assert names.ingress_pod_set(*policy, 0) != names.ingress_pod_set(*policy, 0, family="")
    assert names.target_src_set("x", "p").startswith("KUBE-SRC-")
    assert names.egress_pod_set("x", "p", 0).startswith("KUBE-DST-")
    assert names.ingress_block_set("x", "p", 0) != names.ingress_pod_set("x", "p", 0)
    assert len(names.ingress_named_port_set("x", "p", 0, 0)) == len("KUBE-DST-") + 16


def test_tmp_sets_are_kube_routers():
    # pkg/utils/ipset_test.go Test_buildIPSetRestore.
    assert names.tmp_set("hash:ip yolo things 12345") == "TMP-7NOTZDOMLXBX6DAJ"
    assert names.tmp_set("hash:ip lol") == "TMP-XD7BSSQZELS7TP35"


def test_chains_use_the_one_fixed_sync_version():
    # kube-router's syncVersion is time.Now().UnixNano(); labbuilder syncs once, at a fixed instant.
    assert names.SYNC_VERSION == "1795564800000000000"
    assert names.pod_chain("x", "a") == names.pod_chain("x", "a", names.SYNC_VERSION)
    assert names.pod_chain("x", "a") != names.pod_chain("x", "a", "1")
    # podFirewallChainName concatenates without a separator (kube-router's own test relies on it).
    assert names.pod_chain("a", "bc", "1") == names.pod_chain("ab", "c", "1")
    assert names.policy_chain("x", "p") != names.policy_chain("x", "p", family="")
    assert all(len(n) == len(prefix) + 16 for n, prefix in ((names.pod_chain("x", "a"), "KUBE-POD-FW-"),))
