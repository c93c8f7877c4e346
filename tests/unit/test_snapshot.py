"""The node snapshot: its script's output parsed, `ip -j` JSON included.

The HOST_* texts were captured verbatim on a Debian bookworm host (iproute2 6.1.0, as in the
node image), by reading only: `ip -j ... addr show`, and SNAPSHOT_SCRIPT itself run there.
"""

from __future__ import annotations

from ipaddress import IPv4Interface

import pytest

from labbuilder.observe.snapshot import (
    SNAPSHOT_SCRIPT,
    ProcessState,
    parse_ip_addresses,
    parse_snapshot,
    snapshot_argv,
)
from tests.unit.captured import (
    CONTROLLER_0,
    GETCAP,
    IP_ADDR_WORKER_0,
    IPTABLES_CURRENT,
    WORKER_0,
    WORKER_1_FLUSHED,
    WORKER_2_KILLED,
)

# `ip -j -4 addr show`: every interface with an IPv4 address (with broadcast addresses here).
HOST_IP_J_4 = """\
[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":4,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1400,"qdisc":"pfifo_fast","operstate":"UP","group":"default","txqlen":1000,"addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24,"broadcast":"192.0.2.255","scope":"global","label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":5,"ifname":"docker0","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP"],"mtu":1500,"qdisc":"noqueue","operstate":"DOWN","group":"default","addr_info":[{"family":"inet","local":"172.17.0.1","prefixlen":16,"broadcast":"172.17.255.255","scope":"global","label":"docker0","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]
"""

# `ip -j addr show dev lo`: without -4, IPv6 addresses come along.
HOST_LO_ALL_FAMILIES = """\
[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"::1","prefixlen":128,"scope":"host","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]
"""

# `ip -j -p -4 addr show dev lo`: pretty-printed JSON spans lines.
HOST_LO_PRETTY = """\
[ {
        "ifindex": 1,
        "ifname": "lo",
        "flags": [ "LOOPBACK","UP","LOWER_UP" ],
        "mtu": 65536,
        "qdisc": "noqueue",
        "operstate": "UNKNOWN",
        "group": "default",
        "txqlen": 1000,
        "addr_info": [ {
                "family": "inet",
                "local": "127.0.0.1",
                "prefixlen": 8,
                "scope": "host",
                "label": "lo",
                "valid_life_time": 4294967295,
                "preferred_life_time": 4294967295
            } ]
    } ]
"""

# `ip -j -4 addr show dev ifb0`, a link without IPv4 addresses: an empty list.
HOST_NO_IPV4 = "[]\n"

# `sh -c "$SNAPSHOT_SCRIPT" snapshot -` on the host: no netns, no pidfiles, no iptables asked for.
HOST_SNAPSHOT = """\
@now 1795612998
@kernel 6.18.44-fc-v595
@os Debian GNU/Linux 12 (bookworm)
@eth0
[{"ifindex":4,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1400,"qdisc":"pfifo_fast","operstate":"UP","group":"default","txqlen":1000,"addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24,"broadcast":"192.0.2.255","scope":"global","label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]
"""


# -- ip -j addr ----------------------------------------------------------------------------------
def test_ipv4_addresses_from_ip_j_addr():
    assert parse_ip_addresses(IP_ADDR_WORKER_0) == (
        IPv4Interface("127.0.0.1/8"),
        IPv4Interface("10.240.0.20/24"),
        IPv4Interface("10.200.0.1/24"),
    )
    assert parse_ip_addresses("") == ()  # `ip` prints nothing for a device that does not exist


def test_ip_j_as_captured_on_bookworm():
    assert parse_ip_addresses(HOST_IP_J_4) == (
        IPv4Interface("127.0.0.1/8"),
        IPv4Interface("192.0.2.2/24"),
        IPv4Interface("172.17.0.1/16"),
    )
    assert parse_ip_addresses(HOST_LO_ALL_FAMILIES) == (IPv4Interface("127.0.0.1/8"),)  # ::1 is not IPv4
    assert parse_ip_addresses(HOST_LO_PRETTY) == (IPv4Interface("127.0.0.1/8"),)
    assert parse_ip_addresses(HOST_NO_IPV4) == ()
    assert parse_ip_addresses("[{}]") == ()  # older iproute2 printed an empty object per filtered link


@pytest.mark.parametrize(
    "text",
    [
        "2: eth0    inet 10.240.0.20/24 scope global eth0\\       valid_lft forever preferred_lft forever",
        '{"ifname":"eth0"}',  # one object, not a list
        '[{"addr_info":[{"family":"inet","local":"10.0.0.1"}]}]',  # no prefix length
        '[{"addr_info":[{"family":"inet","local":"10.0.0.999","prefixlen":24}]}]',
    ],
)
def test_ip_output_that_is_not_iproute2_json_is_an_error(text):
    with pytest.raises(ValueError, match="ip -j addr show"):
        parse_ip_addresses(text)


# -- snapshots -----------------------------------------------------------------------------------
def test_snapshot_sections():
    snap = parse_snapshot(WORKER_0)
    assert snap.now == 1795613972
    assert snap.kernel == "6.18.44-fc-v595"
    assert snap.os_image == "Debian GNU/Linux 12 (bookworm)"
    assert snap.eth0 == (IPv4Interface("10.240.0.20/24"),)
    assert set(snap.netns) == {p.netns for p in GETCAP.node("worker-0").pods}
    nginx = snap.netns["cni-6fa8b714-8c3b-4c35-9611-71ee810782fa"]
    assert (nginx.inode, nginx.addresses) == (4026532914, (IPv4Interface("10.200.0.2/24"),))
    assert nginx.listening == {("tcp", 80)}  # the node's podserver, listening inside the pod
    assert snap.netns["cni-1b1df9bd-d396-42fc-850b-70bb0e062ec5"].listening == {("udp", 53), ("tcp", 53), ("tcp", 9153)}
    assert snap.processes["worker-0.podserver"] == ProcessState("worker-0.podserver", 44, 1795613971, "S", 4026532182)
    dns = snap.processes["coredns-hbnkv77zpv-cxvr9.dns"]
    assert dns.running and dns.netns_inode is None  # alive, its netns unreadable
    assert snap.iptables is None


def test_snapshot_of_an_emptied_netns_and_dead_processes():
    flushed = parse_snapshot(WORKER_1_FLUSHED)
    assert flushed.netns["cni-59e09cbe-06f8-4cec-9a4b-d3e1e7b438cb"].addresses == ()
    killed = parse_snapshot(WORKER_2_KILLED)
    pause = killed.processes["busybox-6pcm5cdbtl-8wbsd.pause"]
    assert (pause.pid, pause.state, pause.running) == (31, "-", False)


def test_snapshot_of_a_netns_whose_eth0_is_gone():
    snap = parse_snapshot("@eth0\n@netns cni-1 4026532903\n@netns cni-2 -\n")
    assert (snap.eth0, snap.netns["cni-1"].addresses, snap.netns["cni-1"].inode) == ((), (), 4026532903)
    assert snap.netns["cni-2"].inode is None


def test_snapshot_keeps_iptables_save_verbatim():
    snap = parse_snapshot(CONTROLLER_0 + "@iptables\n" + IPTABLES_CURRENT)
    assert snap.iptables is not None and snap.iptables.strip() == IPTABLES_CURRENT.strip()
    assert snap.processes["controller-0.podserver"].running


def test_the_script_s_own_output_on_a_bookworm_host():
    snap = parse_snapshot(HOST_SNAPSHOT)
    assert (snap.now, snap.os_image) == (1795612998, "Debian GNU/Linux 12 (bookworm)")
    assert snap.eth0 == (IPv4Interface("192.0.2.2/24"),)
    assert (snap.netns, snap.processes, snap.iptables) == ({}, {}, None)


def test_a_snapshot_with_broken_ip_output_is_an_error():
    with pytest.raises(ValueError, match="ip -j addr show"):
        parse_snapshot("@eth0\n2: eth0    inet 10.240.0.20/24 scope global eth0\n")


def test_snapshot_argv_runs_the_script_with_or_without_iptables():
    assert snapshot_argv(True)[:3] == ["sh", "-c", SNAPSHOT_SCRIPT]
    assert snapshot_argv(True)[-1] == "iptables" and snapshot_argv(False)[-1] == "-"
    assert "/run/labbuilder/pids/*.pid" in SNAPSHOT_SCRIPT


def test_the_script_reads_addresses_as_json():
    assert "ip -j -4 addr show dev eth0" in SNAPSHOT_SCRIPT
    assert 'ip -j -n "$ns" -4 addr show dev eth0' in SNAPSHOT_SCRIPT
    assert "ip -o" not in SNAPSHOT_SCRIPT


def test_process_states():
    running = ProcessState("p", 7, 1, "S", 42)
    assert running.inside(42) and not running.inside(43)
    assert ProcessState("p", 7, 1, "Z", None).running is False  # a zombie is not running
    assert ProcessState("p", 7, 1, "R", None).inside(42)  # unreadable netns: trusted


@pytest.mark.parametrize(
    ("line", "pid", "inode"),
    [
        ("@pid a 7 1 S net:[4026532834]", 7, 4026532834),
        ("@pid a 7 1 S ?", 7, None),  # alive, /proc/PID/ns unreadable
        ("@pid a - 1 - -", None, None),  # the pidfile holds no number
        ("@pid a 7 1 S net:[4026532834", 7, None),  # not readlink's shape
    ],
)
def test_pid_lines(line, pid, inode):
    process = parse_snapshot(line + "\n").processes["a"]
    assert (process.pid, process.netns_inode) == (pid, inode)
