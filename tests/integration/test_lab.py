"""Integration tests of ``bgpnet lab``: build the tor topology in namespaces and observe it.

Each test copies the topology and its configs to a temporary directory and renames the
lab to ``bgpt<hex>``, so its namespaces (``bgpt<hex>-node01`` ...) never clash with a
user's ``bgpnet`` lab or with another test. The lab is driven through the CLI, as a
user would, and observed with ``ip -j``, ``ping`` and ``/proc``, not with lab code.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.labkit import (CONVERGE_TIMEOUT, POD_CIDRS, REPO, RUNTIME_ROOT,
                                      kill_namespace, namespaces, pid_alive, poll,
                                      processes_mentioning, routes)
from tests.integration.labkit import bgpnet as run_bgpnet

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("ip") is None or not Path("/usr/lib/frr/bgpd").exists():
    pytest.skip("needs root, iproute2 and FRR", allow_module_level=True)


def _host_links() -> set[str]:
    output = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                            check=True).stdout
    return {entry["ifname"] for entry in json.loads(output)}


def _lab_namespaces(lab: str) -> set[str]:
    return {name for name in namespaces() if name.startswith(f"{lab}-")}


def _ping(namespace: str, address: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", namespace, "ping", "-c1", "-W1", "-q", address],
                          capture_output=True).returncode == 0


@pytest.fixture
def topology(tmp_path):
    """A private copy of the tor lab, named bgpt<hex>; torn down after the test."""
    lab = f"bgpt{secrets.token_hex(3)}"
    shutil.copytree(REPO / "containerlab", tmp_path / "containerlab")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    path = tmp_path / "containerlab" / "bgpnet-tor.clab.yml"
    data = yaml.safe_load(path.read_text())
    data["name"] = lab
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    yield path, lab
    run_bgpnet("lab", "down", str(path), check=False)
    # Only if down itself failed: kill what runs in the lab's namespaces, then delete them,
    # because a namespace deleted first would hide its processes from ip netns pids.
    for name in _lab_namespaces(lab):
        kill_namespace(name)
    shutil.rmtree(RUNTIME_ROOT / lab, ignore_errors=True)


def _converged(lab: str) -> bool:
    for node, cidr in POD_CIDRS.items():
        learned = {route["dst"] for route in routes(f"{lab}-{node}", "201")}
        expected = {other for name, other in POD_CIDRS.items() if name != node}
        if not expected <= learned:
            return False
    return True


def _no_learnedroutes(lab: str) -> bool:
    return all(not routes(f"{lab}-{node}", "201") for node in POD_CIDRS)


# -- without agents: namespaces, links, exec lines, FRR ---------------------------


def test_segment_nodes_ping(topology):
    path, lab = topology
    run_bgpnet("lab", "up", "--no-agents", str(path))
    for node, address in (("node01", "192.168.1.12"), ("node02", "192.168.1.13"),
                          ("node03", "192.168.1.1"), ("tor", "192.168.1.11")):
        assert _ping(f"{lab}-{node}", address), f"{node} -> {address}"


def test_segment_namespaces(topology):
    path, lab = topology
    run_bgpnet("lab", "up", "--no-agents", str(path))
    assert _lab_namespaces(lab) == {f"{lab}-{name}" for name in
                                    ("br-bgpnet", "tor", "node01", "node02", "node03")}


def test_segment_host_untouched(topology):
    path, _lab = topology
    before = _host_links()
    run_bgpnet("lab", "up", "--no-agents", str(path))
    assert _host_links() == before


def test_segment_bridge_ports(topology):
    path, lab = topology
    run_bgpnet("lab", "up", "--no-agents", str(path))
    output = subprocess.run(["ip", "-n", f"{lab}-br-bgpnet", "-j", "link", "show",
                             "master", "br-bgpnet"], capture_output=True, text=True,
                            check=True).stdout
    ports = {entry["ifname"] for entry in json.loads(output)}
    assert ports == {"tor-eth1", "node01-eth1", "node02-eth1", "node03-eth1"}


def test_frr_answers(topology):
    path, lab = topology
    run_bgpnet("lab", "up", "--no-agents", str(path))
    output = subprocess.run(["vtysh", "--vty_socket", str(RUNTIME_ROOT / lab / "tor"),
                             "-c", "show bgp summary json"], capture_output=True, text=True,
                            check=True).stdout
    summary = json.loads(output)
    assert summary["ipv4Unicast"]["routerId"] == "192.168.1.1"


def test_up_twice_replaces(topology):
    path, lab = topology
    run_bgpnet("lab", "up", "--no-agents", str(path))
    first_bgpd = int((RUNTIME_ROOT / lab / "tor" / "bgpd.pid").read_text())
    run_bgpnet("lab", "up", "--no-agents", str(path))
    assert not pid_alive(first_bgpd)
    assert len(_lab_namespaces(lab)) == 5


def test_down_twice_is_fine(topology):
    path, lab = topology
    run_bgpnet("lab", "up", "--no-agents", str(path))
    bgpd = int((RUNTIME_ROOT / lab / "tor" / "bgpd.pid").read_text())
    run_bgpnet("lab", "down", str(path))
    run_bgpnet("lab", "down", str(path))
    assert _lab_namespaces(lab) == set()
    assert not pid_alive(bgpd)
    assert not (RUNTIME_ROOT / lab).exists()


def test_failed_step_rolls_back(topology):
    path, lab = topology
    data = yaml.safe_load(path.read_text())
    data["topology"]["nodes"]["node02"]["exec"].append("ip addr add 192.168.1.300/24 dev eth1")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_bgpnet("lab", "up", "--no-agents", str(path), check=False)
    assert result.returncode == 1
    assert "run exec[1] of node node02" in result.stderr
    assert _lab_namespaces(lab) == set()
    assert not (RUNTIME_ROOT / lab).exists()


def test_check_without_lab(topology):
    path, _lab = topology
    result = run_bgpnet("lab", "check", str(path), check=False)
    assert result.returncode == 1
    assert "do not exist" in result.stderr


# -- full lab: agents, pods, BGP ---------------------------------------------------


@pytest.fixture
def running_lab(topology):
    path, lab = topology
    run_bgpnet("lab", "up", str(path))
    yield path, lab


def test_pods_all_reachable(running_lab):
    path, _lab = running_lab
    result = run_bgpnet("lab", "check", "--timeout", str(CONVERGE_TIMEOUT), str(path), check=False)
    assert result.stdout.splitlines()[-1] == "reachable: 30/30 pod pairs"
    assert result.returncode == 0


def test_pods_have_addresses(running_lab):
    _path, lab = running_lab
    for node, cidr in POD_CIDRS.items():
        for pod in ("pod1", "pod2"):
            output = subprocess.run(["ip", "-n", f"{lab}-{node}-{pod}", "-j", "-4", "addr", "show",
                                     "dev", "eth0"], capture_output=True, text=True,
                                    check=True).stdout
            address = json.loads(output)[0]["addr_info"][0]["local"]
            assert address.startswith(cidr.rsplit(".", 2)[0] + "."), f"{node}-{pod} {address}"


def test_routes_protocol_201(running_lab):
    _path, lab = running_lab
    assert poll(lambda: _converged(lab), CONVERGE_TIMEOUT)
    gateways = {route["dst"]: route.get("gateway") for route in routes(f"{lab}-node01", "201")}
    assert gateways == {"10.244.2.0/24": "192.168.1.12", "10.244.3.0/24": "192.168.1.13"}


def test_bgpd_kill_and_restart(running_lab):
    _path, lab = running_lab
    assert poll(lambda: _converged(lab), CONVERGE_TIMEOUT)
    tor_dir = RUNTIME_ROOT / lab / "tor"
    bgpd = int((tor_dir / "bgpd.pid").read_text())
    os.kill(bgpd, signal.SIGKILL)
    assert poll(lambda: _no_learnedroutes(lab), CONVERGE_TIMEOUT), "routes stayed after bgpd died"

    (tor_dir / "bgpd.pid").unlink(missing_ok=True)
    subprocess.run(["ip", "netns", "exec", f"{lab}-tor", "/usr/lib/frr/bgpd", "-d",
                    "-f", str(tor_dir / "bgpd.conf"), "-i", str(tor_dir / "bgpd.pid"),
                    "-z", str(tor_dir / "zserv.api"), "--vty_socket", str(tor_dir),
                    "-A", "127.0.0.1", "-P", "0", "--log", f"file:{tor_dir}/bgpd.log"],
                   check=True, capture_output=True)
    assert poll(lambda: _converged(lab), CONVERGE_TIMEOUT), "routes did not come back"


def test_down_leaves_nothing(running_lab):
    path, lab = running_lab
    manifest = json.loads((RUNTIME_ROOT / lab / "manifest.json").read_text())
    pids = [process["pid"] for process in manifest["processes"]]
    run_bgpnet("lab", "down", str(path))
    assert _lab_namespaces(lab) == set()
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert processes_mentioning(str(RUNTIME_ROOT / lab)) == []
    assert not (RUNTIME_ROOT / lab).exists()
