"""Integration tests for bgpnet.cni.attach: pods on the node bridge, added and deleted.

Each test builds a "node" namespace with the bridge and two "pod" namespaces, and runs
``python -m bgpnet.cni.attach`` inside the node namespace through ``ip netns exec``,
as the lab does. Results are checked with ``ip -j``, ping and the lease directory.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bgpnet import nodestate
from bgpnet.cni.attach import host_ifname
from bgpnet.nodestate import NodeState

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

BRIDGE = "v-net-0"
POD_CIDR = "10.244.1.0/24"
GATEWAY = "10.244.1.1"
MTU = 1400


@dataclass(frozen=True)
class Lab:
    node: str
    pods: tuple[str, str]
    state_dir: Path

    def netns_path(self, pod: str) -> str:
        return f"/run/netns/{pod}"


@pytest.fixture
def lab(netns, tmp_path: Path) -> Lab:
    node = netns("bgpt-node")
    pods = (netns("bgpt-pod"), netns("bgpt-pod"))
    state = NodeState(node="node01", pod_cidr=ipaddress.ip_network(POD_CIDR),
                      gateway=ipaddress.ip_address(GATEWAY), bridge=BRIDGE, mtu=MTU)
    nodestate.write(tmp_path, state)
    program = ("import ipaddress; from bgpnet.kernel import links; "
               f"links.ensure_bridge({BRIDGE!r}, ipaddress.ip_interface('{GATEWAY}/24'), {MTU})")
    subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", program], check=True)
    return Lab(node=node, pods=pods, state_dir=tmp_path)


def attach(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the attach CLI inside the node namespace."""
    command = ["ip", "netns", "exec", lab.node, sys.executable, "-m", "bgpnet.cni.attach",
               *args[:1], "--state-dir", str(lab.state_dir), *args[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def add(lab: Lab, container_id: str, pod: str, ifname: str = "eth0") -> dict:
    done = attach(lab, "add", "--container-id", container_id, "--netns", lab.netns_path(pod),
                  "--ifname", ifname)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ip_json(namespace: str, *args: str) -> list[dict]:
    done = subprocess.run(["ip", "-n", namespace, "-j", *args], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout or "[]")


def veth_names(namespace: str) -> list[str]:
    return [link["ifname"] for link in ip_json(namespace, "link", "show", "type", "veth")]


def link_names(namespace: str) -> list[str]:
    return [link["ifname"] for link in ip_json(namespace, "link", "show")]


def lease_files(lab: Lab) -> list[str]:
    directory = lab.state_dir / "leases"
    if not directory.is_dir():
        return []
    return sorted(path.name for path in directory.iterdir() if not path.name.startswith("."))


def ping(namespace: str, address: str) -> int:
    return subprocess.run(["ip", "netns", "exec", namespace, "ping", "-c1", "-W1", address],
                          capture_output=True).returncode


def test_add_prints_attachment(lab: Lab) -> None:
    attachment = add(lab, "c1", lab.pods[0])
    assert attachment["container_id"] == "c1"
    assert attachment["ifname"] == "eth0"
    assert attachment["host_ifname"] == host_ifname("c1", "eth0")
    assert attachment["address"] == "10.244.1.2/24"
    assert attachment["gateway"] == GATEWAY


def test_pods_ping(lab: Lab) -> None:
    first = add(lab, "c1", lab.pods[0])
    second = add(lab, "c2", lab.pods[1])
    first_ip = first["address"].split("/")[0]
    second_ip = second["address"].split("/")[0]
    assert ping(lab.pods[0], second_ip) == 0
    assert ping(lab.pods[1], first_ip) == 0
    assert ping(lab.pods[0], GATEWAY) == 0
    assert ping(lab.pods[1], GATEWAY) == 0


def test_pod_side_config(lab: Lab) -> None:
    attachment = add(lab, "c1", lab.pods[0])
    [eth0] = ip_json(lab.pods[0], "addr", "show", "dev", "eth0")
    [loopback] = ip_json(lab.pods[0], "link", "show", "lo")
    routes = ip_json(lab.pods[0], "route", "show", "default")
    inet = [f"{info['local']}/{info['prefixlen']}" for info in eth0["addr_info"]
            if info["family"] == "inet"]
    assert inet == [attachment["address"]]
    assert eth0["mtu"] == MTU
    assert eth0["address"] == attachment["mac"]
    assert "UP" in eth0["flags"]
    assert "UP" in loopback["flags"]
    assert [(route["gateway"], route["dev"]) for route in routes] == [(GATEWAY, "eth0")]


def test_host_side_config(lab: Lab) -> None:
    attachment = add(lab, "c1", lab.pods[0])
    [link] = ip_json(lab.node, "-d", "link", "show", attachment["host_ifname"])
    assert link["master"] == BRIDGE
    assert link["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert link["operstate"] == "UP"
    assert link["mtu"] == MTU


def test_lease_file_written(lab: Lab) -> None:
    add(lab, "c1", lab.pods[0])
    content = (lab.state_dir / "leases" / "10.244.1.2").read_text()
    assert content == "container_id=c1\nifname=eth0\n"


READD_CASES = [
    ("same container", "c1"),
    ("other container", "c9"),
]


@pytest.mark.parametrize("container_id", [case[1] for case in READD_CASES],
                         ids=[case[0] for case in READD_CASES])
def test_readd_ifname_fails(lab: Lab, container_id: str) -> None:
    add(lab, "c1", lab.pods[0])
    done = attach(lab, "add", "--container-id", container_id,
                  "--netns", lab.netns_path(lab.pods[0]))
    assert done.returncode == 1
    assert "already exists" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert lease_files(lab) == ["10.244.1.2"]
    assert veth_names(lab.node) == [host_ifname("c1", "eth0")]
    assert ping(lab.pods[0], GATEWAY) == 0


def test_del_twice(lab: Lab) -> None:
    attachment = add(lab, "c1", lab.pods[0])
    first = attach(lab, "del", "--container-id", "c1", "--netns", lab.netns_path(lab.pods[0]))
    second = attach(lab, "del", "--container-id", "c1", "--netns", lab.netns_path(lab.pods[0]))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert attachment["host_ifname"] not in link_names(lab.node)
    assert veth_names(lab.node) == []
    assert "eth0" not in link_names(lab.pods[0])
    assert lease_files(lab) == []


def test_del_keeps_other_pod(lab: Lab) -> None:
    add(lab, "c1", lab.pods[0])
    second = add(lab, "c2", lab.pods[1])
    done = attach(lab, "del", "--container-id", "c1")
    assert done.returncode == 0, done.stderr
    assert veth_names(lab.node) == [second["host_ifname"]]
    assert lease_files(lab) == [second["address"].split("/")[0]]
    assert ping(lab.pods[1], GATEWAY) == 0


def test_del_netns_gone(lab: Lab) -> None:
    # Deleting the pod namespace destroys the veth pair. DEL must still free the lease.
    add(lab, "c1", lab.pods[0])
    subprocess.run(["ip", "netns", "del", lab.pods[0]], check=True)
    done = attach(lab, "del", "--container-id", "c1", "--netns", lab.netns_path(lab.pods[0]))
    assert done.returncode == 0, done.stderr
    assert veth_names(lab.node) == []
    assert lease_files(lab) == []


def test_del_never_added(lab: Lab) -> None:
    done = attach(lab, "del", "--container-id", "c1")
    assert done.returncode == 0, done.stderr
    assert lease_files(lab) == []


def test_add_rolls_back(lab: Lab) -> None:
    # A state file naming a missing bridge makes ADD fail after the veth exists.
    state = nodestate.read(lab.state_dir)
    nodestate.write(lab.state_dir, NodeState(node=state.node, pod_cidr=state.pod_cidr,
                                             gateway=state.gateway, bridge="missing0",
                                             mtu=state.mtu))
    done = attach(lab, "add", "--container-id", "c1", "--netns", lab.netns_path(lab.pods[0]))
    assert done.returncode == 1
    assert "missing0" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert veth_names(lab.node) == []
    assert "eth0" not in link_names(lab.pods[0])
    assert lease_files(lab) == []


def test_add_missing_netns(lab: Lab) -> None:
    done = attach(lab, "add", "--container-id", "c1", "--netns", "/run/netns/bgpt-absent")
    assert done.returncode == 1
    assert "not found" in done.stderr
    assert lease_files(lab) == []


def test_add_missing_state(lab: Lab) -> None:
    (lab.state_dir / nodestate.FILE_NAME).unlink()
    done = attach(lab, "add", "--container-id", "c1", "--netns", lab.netns_path(lab.pods[0]))
    assert done.returncode == 1
    assert "--state-dir" in done.stderr


def test_add_bad_container_id(lab: Lab) -> None:
    done = attach(lab, "add", "--container-id", "../x", "--netns", lab.netns_path(lab.pods[0]))
    assert done.returncode == 1
    assert "container_id" in done.stderr
    assert veth_names(lab.node) == []


def test_second_ifname_same_pod(lab: Lab) -> None:
    first = add(lab, "c1", lab.pods[0])
    second = add(lab, "c1", lab.pods[0], ifname="net1")
    assert second["host_ifname"] != first["host_ifname"]
    assert second["address"] != first["address"]
    assert ping(lab.pods[0], GATEWAY) == 0


def test_ipv6_pods_ping(netns, tmp_path: Path) -> None:
    node = netns("bgpt-node")
    pods = (netns("bgpt-pod"), netns("bgpt-pod"))
    state = NodeState(node="node01", pod_cidr=ipaddress.ip_network("fd00:10:244:1::/64"),
                      gateway=ipaddress.ip_address("fd00:10:244:1::1"), bridge=BRIDGE, mtu=MTU)
    nodestate.write(tmp_path, state)
    program = ("import ipaddress; from bgpnet.kernel import links; "
               f"links.ensure_bridge({BRIDGE!r}, ipaddress.ip_interface('fd00:10:244:1::1/64'), "
               f"{MTU})")
    subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", program], check=True)
    lab = Lab(node=node, pods=pods, state_dir=tmp_path)

    first = add(lab, "c1", pods[0])
    second = add(lab, "c2", pods[1])
    routes = ip_json(pods[0], "-6", "route", "show", "default")
    assert first["address"] == "fd00:10:244:1::2/64"
    assert [route["gateway"] for route in routes] == ["fd00:10:244:1::1"]
    assert ping(pods[0], second["address"].split("/")[0]) == 0
    assert ping(pods[1], "fd00:10:244:1::1") == 0
