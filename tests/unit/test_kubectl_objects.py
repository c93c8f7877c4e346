"""kubectl's shapes (present.kubectl): formats, API objects and columns, from captured read-backs."""

from __future__ import annotations

import json

import pytest

from labbuilder.compile.kubeproxy import parse_service_rules
from labbuilder.compile.netfilter import parse_save
from labbuilder.engine.runtime import parse_docker_time
from labbuilder.observe import readback
from labbuilder.observe.snapshot import parse_snapshot
from labbuilder.present import kubectl
from tests.unit.captured import CONTROLLER_0, GETCAP, IPTABLES_CURRENT, NOW, WORKER_0, WORKER_1_FLUSHED
from tests.unit.captured import pod_states as states


def current_views() -> list[readback.ServiceView]:
    views, _ = readback.service_views(GETCAP, parse_service_rules(parse_save(IPTABLES_CURRENT)), "worker-0")
    return views


# -- formats -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-2, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60 + 59, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 30 * 60, "3h30m"),
        (8 * 3600, "8h"),
        (47 * 3600 + 59 * 60, "47h"),
        (48 * 3600, "2d"),
        (50 * 3600, "2d2h"),
        (8 * 86400, "8d"),
        (2 * 365 * 86400, "2y"),
        (2 * 365 * 86400 + 86400, "2y1d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_apimachinery(seconds, text):
    assert kubectl.human_duration(seconds) == text


def test_docker_times():
    assert parse_docker_time("2026-11-25T04:51:21.123456789Z") == pytest.approx(1795582281.123456789)
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("") is None
    assert kubectl.timestamp(1795582281.9) == "2026-11-25T04:51:21Z"
    assert kubectl.age(None) == "<unknown>" and kubectl.age(100.0, now=400.0) == "5m"


def test_node_roles():
    node = GETCAP.node("controller-0")
    assert kubectl.node_roles(node) == "control-plane" and kubectl.node_roles(GETCAP.node("worker-0")) == "<none>"


def test_endpoints_past_three_are_counted_like_kubectl():
    ep = readback.EndpointView("10.0.0.1", 80, "", "", None)
    view = readback.ServiceView(
        "default", "s", "ClusterIP", "10.32.0.3", (readback.PortView("", "TCP", 80, 80, None, (ep,) * 5),), {}, True
    )
    assert kubectl.format_endpoints(view) == "10.0.0.1:80,10.0.0.1:80,10.0.0.1:80 + 2 more..."
    assert kubectl.format_endpoints(view, limit=None).count(",") == 4


# -- kubectl-shaped objects --------------------------------------------------------------------
def test_pod_object_is_what_jq_users_expect():
    pods = states(WORKER_0, "worker-0")
    obj = kubectl.pod_object(GETCAP, pods["nginx"])
    assert obj["kind"] == "Pod" and obj["spec"]["nodeName"] == "worker-0"
    assert (obj["status"]["podIP"], obj["status"]["hostIP"]) == ("10.200.0.2", "10.240.0.20")
    assert obj["metadata"]["annotations"]["labbuilder/netns"] == "cni-6fa8b714-8c3b-4c35-9611-71ee810782fa"
    assert obj["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    broken = kubectl.pod_object(GETCAP, states(WORKER_1_FLUSHED, "worker-1")["nginx"])
    assert broken["status"]["podIP"] is None and broken["status"]["conditions"][0]["status"] == "False"
    assert json.loads(json.dumps(kubectl.as_list([obj, broken])))["kind"] == "List"


def test_node_object_says_who_answers():
    state = readback.node_state(GETCAP.node("controller-0"), "running", NOW, parse_snapshot(CONTROLLER_0))
    obj = kubectl.node_object(GETCAP, state, "docker://20.10.24")
    assert obj["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""
    assert obj["status"]["addresses"][0] == {"type": "InternalIP", "address": "10.240.0.10"}
    assert obj["status"]["nodeInfo"]["kubeletVersion"] == kubectl.KUBELET_VERSION
    assert obj["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    stopped = kubectl.node_object(GETCAP, readback.node_state(state.node, "exited", NOW, None))
    assert stopped["status"]["conditions"][0]["message"] == "container is exited"


def test_endpoints_object_groups_ports_sharing_addresses():
    views = current_views()
    dns = kubectl.endpoints_object(next(v for v in views if v.name == "kube-dns"), None)
    [subset] = dns["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.200.0.4"]
    assert [(p["name"], p["port"], p["protocol"]) for p in subset["ports"]] == [
        ("dns", 53, "UDP"),
        ("dns-tcp", 53, "TCP"),
        ("metrics", 9153, "TCP"),
    ]
    assert subset["addresses"][0]["targetRef"]["name"] == "coredns-hbnkv77zpv-cxvr9"
    svc = kubectl.service_object(next(v for v in views if v.name == "nginx"), None)
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 31088}]


# -- columns -----------------------------------------------------------------------------------
def test_tables_are_kubectl_plain_columns():
    text = kubectl.render_table(["NAME", "READY"], [["nginx-hwtd4sqb6m-fwccw", "1/1"], ["a", "0/1"]])
    assert text.splitlines() == [
        "NAME                     READY",
        "nginx-hwtd4sqb6m-fwccw   1/1",
        "a                        0/1",
    ]


def test_pod_rows_wide_and_all_namespaces():
    pods = list(states(WORKER_0, "worker-0").values())
    headers, rows = kubectl.pod_rows(pods, wide=True, all_namespaces=True, now=1795613971 + 61)
    assert headers == [
        "NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"
    ]  # fmt: skip
    assert rows[0] == ["default", "nginx-hwtd4sqb6m-fwccw", "1/1", "Running", "0", "61s", "10.200.0.2", "worker-0",
                       "<none>", "<none>"]  # fmt: skip
    flushed = list(states(WORKER_1_FLUSHED, "worker-1").values())
    _, rows = kubectl.pod_rows(flushed, wide=True, all_namespaces=False, now=NOW)
    assert rows[0][:3] == ["nginx-hwtd4sqb6m-lzkx8", "0/1", "NotReady"] and rows[0][5] == "<none>"


def test_service_and_endpoint_rows():
    views = current_views()
    headers, rows = kubectl.service_rows(views, wide=False, all_namespaces=False, age="5m")
    assert headers == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert ["nginx", "NodePort", "10.32.0.2", "<none>", "80:31088/TCP", "5m"] in rows
    headers, rows = kubectl.endpoint_rows(views, wide=False, all_namespaces=True, age="5m")
    assert ["default", "nginx", "10.200.0.2:80,10.200.1.2:80,10.200.2.2:80", "5m"] in rows


def test_node_rows_wide():
    node = GETCAP.node("worker-0")
    state = readback.node_state(node, "running", NOW - 3600, parse_snapshot(WORKER_0))
    [row] = kubectl.node_rows([state], wide=True, runtime="docker://20.10.24", now=NOW)
    assert row == ["worker-0", "Ready", "<none>", "60m", kubectl.KUBELET_VERSION, "10.240.0.20", "<none>",
                   "10.200.0.0/24", "Debian GNU/Linux 12 (bookworm)", "6.18.44-fc-v595",
                   "docker://20.10.24"]  # fmt: skip
