"""Integration tests for bgpnet.kernel.links: the node bridge, sysctls and addresses.

Each test creates its own namespaces and runs the code under test inside one of them
through ``ip netns exec``, as the agent runs inside the node's namespace. Results are
checked with ``ip -j`` and /proc, not with the module under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

BRIDGE = "v-net-0"


def run_in(namespace: str, code: str) -> dict:
    """Run Python ``code`` in ``namespace``; it sets ``result``, printed back as JSON.

    An exception becomes {"error": class name, "message": text}.
    """
    program = textwrap.dedent("""
        import ipaddress, json, sys
        from bgpnet.kernel import links
        try:
            result = None
        {body}
            print(json.dumps({{"result": result}}))
        except Exception as exc:
            print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
        """).format(body=textwrap.indent(textwrap.dedent(code), "    "))
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", program],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_bridge(namespace: str, gateway: str, mtu: int = 1400) -> dict:
    return run_in(namespace, f"""
        result = links.ensure_bridge({BRIDGE!r}, ipaddress.ip_interface({gateway!r}), {mtu})
    """)


def ip_json(namespace: str, *args: str) -> list[dict]:
    done = subprocess.run(["ip", "-n", namespace, "-j", *args], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout or "[]")


def link_info(namespace: str, name: str) -> dict | None:
    done = subprocess.run(["ip", "-n", namespace, "-j", "-d", "link", "show", name],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)[0]


def addresses(namespace: str, name: str, family: str = "inet") -> list[str]:
    result = []
    for link in ip_json(namespace, "addr", "show", "dev", name):
        for info in link["addr_info"]:
            if info["family"] == family and info["scope"] == "global":
                result.append(f"{info['local']}/{info['prefixlen']}")
    return result


def test_bridge_created(netns) -> None:
    node = netns("bgpt-node")
    outcome = ensure_bridge(node, "10.244.1.1/24", mtu=1400)
    assert "error" not in outcome, outcome
    link = link_info(node, BRIDGE)
    assert link["linkinfo"]["info_kind"] == "bridge"
    assert link["mtu"] == 1400
    assert "UP" in link["flags"]
    assert addresses(node, BRIDGE) == ["10.244.1.1/24"]


def test_bridge_changes_listed(netns) -> None:
    node = netns("bgpt-node")
    changes = ensure_bridge(node, "10.244.1.1/24")["result"]
    assert any("created bridge" in change for change in changes)
    assert any("10.244.1.1/24" in change for change in changes)


def test_bridge_second_call_noop(netns) -> None:
    node = netns("bgpt-node")
    ensure_bridge(node, "10.244.1.1/24")
    before = ip_json(node, "addr", "show")
    second = ensure_bridge(node, "10.244.1.1/24")
    after = ip_json(node, "addr", "show")
    assert second == {"result": []}
    assert after == before


def test_bridge_completes_existing(netns) -> None:
    node = netns("bgpt-node")
    subprocess.run(["ip", "-n", node, "link", "add", BRIDGE, "type", "bridge"], check=True)
    changes = ensure_bridge(node, "10.244.1.1/24", mtu=1400)["result"]
    link = link_info(node, BRIDGE)
    assert len(changes) == 3
    assert link["mtu"] == 1400
    assert "UP" in link["flags"]
    assert addresses(node, BRIDGE) == ["10.244.1.1/24"]


def test_bridge_other_address(netns) -> None:
    node = netns("bgpt-node")
    subprocess.run(["ip", "-n", node, "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "-n", node, "addr", "add", "10.244.9.1/24", "dev", BRIDGE], check=True)
    outcome = ensure_bridge(node, "10.244.1.1/24")
    assert outcome["error"] == "NodeSetupError"
    assert "10.244.9.1/24" in outcome["message"]
    assert "10.244.1.1/24" in outcome["message"]
    assert addresses(node, BRIDGE) == ["10.244.9.1/24"]


def test_bridge_other_prefix_length(netns) -> None:
    node = netns("bgpt-node")
    subprocess.run(["ip", "-n", node, "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "-n", node, "addr", "add", "10.244.1.1/16", "dev", BRIDGE], check=True)
    outcome = ensure_bridge(node, "10.244.1.1/24")
    assert outcome["error"] == "NodeSetupError"
    assert addresses(node, BRIDGE) == ["10.244.1.1/16"]


def test_bridge_name_taken(netns) -> None:
    node = netns("bgpt-node")
    subprocess.run(["ip", "-n", node, "link", "add", BRIDGE, "type", "veth", "peer", "name",
                    "other0"], check=True)
    outcome = ensure_bridge(node, "10.244.1.1/24")
    assert outcome["error"] == "NodeSetupError"
    assert "veth" in outcome["message"]
    assert f"ip link del {BRIDGE}" in outcome["message"]
    assert link_info(node, BRIDGE)["linkinfo"]["info_kind"] == "veth"
    assert addresses(node, BRIDGE) == []


def test_bridge_rollback(netns) -> None:
    # The kernel turns IPv6 off on a link whose MTU is below 1280, so the accept_ra
    # sysctl of the new bridge is missing and the call fails after creating it.
    node = netns("bgpt-node")
    outcome = ensure_bridge(node, "fd00:10:244:1::1/64", mtu=1000)
    assert outcome["error"] == "NodeSetupError"
    assert "IPv6 is off" in outcome["message"]
    assert link_info(node, BRIDGE) is None


def test_bridge_ipv6(netns) -> None:
    node = netns("bgpt-node")
    outcome = ensure_bridge(node, "fd00:10:244:1::1/64")
    accept_ra = subprocess.run(
        ["ip", "netns", "exec", node, "cat", f"/proc/sys/net/ipv6/conf/{BRIDGE}/accept_ra"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert "error" not in outcome, outcome
    assert addresses(node, BRIDGE, "inet6") == ["fd00:10:244:1::1/64"]
    assert accept_ra == "0"


def test_bridge_mac_fixed(netns) -> None:
    # A port with a MAC lower than the bridge's would take over an unset bridge MAC.
    node = netns("bgpt-node")
    ensure_bridge(node, "10.244.1.1/24")
    before = link_info(node, BRIDGE)["address"]
    subprocess.run(["ip", "-n", node, "link", "add", "port0", "address", "00:00:00:00:00:01",
                    "type", "veth", "peer", "name", "port1"], check=True)
    subprocess.run(["ip", "-n", node, "link", "set", "port0", "master", BRIDGE], check=True)
    assert link_info(node, BRIDGE)["address"] == before


FORWARDING = [
    ("ipv4", 4, "/proc/sys/net/ipv4/ip_forward"),
    ("ipv6", 6, "/proc/sys/net/ipv6/conf/all/forwarding"),
]


@pytest.mark.parametrize("version,path", [case[1:] for case in FORWARDING],
                         ids=[case[0] for case in FORWARDING])
def test_enable_forwarding(netns, version: int, path: str) -> None:
    node = netns("bgpt-node")
    first = run_in(node, f"result = links.enable_forwarding({version})")
    second = run_in(node, f"result = links.enable_forwarding({version})")
    value = subprocess.run(["ip", "netns", "exec", node, "cat", path],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert first == {"result": True}
    assert second == {"result": False}
    assert value == "1"


def test_forwarding_bad_version(netns) -> None:
    node = netns("bgpt-node")
    outcome = run_in(node, "result = links.enable_forwarding(5)")
    assert outcome["error"] == "ValueError"


def test_local_addresses(netns) -> None:
    node = netns("bgpt-node")
    subprocess.run(["ip", "-n", node, "addr", "add", "192.0.2.7/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "-n", node, "addr", "add", "2001:db8::7/128", "dev", "lo"], check=True)
    outcome = run_in(node, "result = sorted(map(str, links.local_addresses()))")
    assert outcome == {"result": sorted(["127.0.0.1", "::1", "192.0.2.7", "2001:db8::7"])}
