"""Hostile announcements from a BGP peer: none reaches the kernel, the static default stays.

An ExaBGP peer announces over a real session: a default route, the node's own pod
CIDR, a subnet of it, a prefix that covers it and prefixes outside the cluster CIDR.
It also announces routes with martian next hops (loopback, the node's own address,
multicast, link-local), and last one valid control route. The node's namespace has a static
default route of its own from before the agent starts. Asserted through ``ip -j
route``: once the control route is in, it is the only route of our protocol, and the
static default route is byte for byte what it was. The agent's log must name every
hostile prefix as rejected, which proves the announcement reached it.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.integration.labkit import IPV4, IPV6, ExaBGPSource, agent_pair, poll, run

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("ip") is None:
    pytest.skip("needs root and iproute2", allow_module_level=True)

# (prefix, next hop, reason the import policy gives); "peer" and "extra" are the
# peer's two addresses, "node" is the node's own address.
HOSTILE = {
    4: [
        ("0.0.0.0/0", "extra", "default-route"),
        ("10.244.1.0/24", "peer", "own-pod-cidr"),
        ("10.244.1.128/25", "peer", "own-pod-cidr"),
        ("10.244.0.0/16", "peer", "covers-own-pod-cidr"),
        ("192.0.2.0/24", "peer", "outside-cluster-cidr"),
        ("10.245.0.0/24", "peer", "outside-cluster-cidr"),
        ("10.244.9.0/24", "127.0.0.1", "nexthop-local"),  # lo has 127.0.0.1
        ("10.244.10.0/24", "node", "nexthop-local"),
        ("10.244.11.0/24", "224.0.0.5", "nexthop-martian"),
        ("10.244.12.0/24", "169.254.1.1", "nexthop-martian"),
    ],
    6: [
        ("::/0", "extra", "default-route"),
        ("fd00:10:244:1::/64", "peer", "own-pod-cidr"),
        ("fd00:10:244:1:8000::/65", "peer", "own-pod-cidr"),
        ("fd00:10:244::/48", "peer", "covers-own-pod-cidr"),
        ("2001:db8::/32", "peer", "outside-cluster-cidr"),
        ("fd00:10:245::/64", "peer", "outside-cluster-cidr"),
        ("fd00:10:244:9::/64", "::1", "nexthop-local"),  # lo has ::1
        ("fd00:10:244:10::/64", "node", "nexthop-local"),
        ("fd00:10:244:11::/64", "ff02::5", "nexthop-martian"),
    ],
}
CONTROL = {4: "10.244.7.0/24", 6: "fd00:10:244:7::/64"}
STATIC_GATEWAY = {4: "192.168.50.254", 6: "fd00:50::fe"}


def _default_routes(namespace: str, flag: str) -> list[dict]:
    output = run(["ip", "-n", namespace, "-j", flag, "route", "show", "default"]).stdout.strip()
    return json.loads(output) if output else []


@pytest.mark.parametrize("family", [IPV4, IPV6], ids=["ipv4", "ipv6"])
def test_hostile_routes_not_installed(netns, tmp_path, family):
    node = agent_pair(netns, tmp_path / "node", family)
    node.write_config()
    names = {"peer": family.peer, "extra": family.peer_extra, "node": family.node}
    hostile = HOSTILE[family.version]
    commands = [f"announce route {prefix} next-hop {names.get(hop, hop)}"
                for prefix, hop, _reason in hostile]
    commands.append(f"announce route {CONTROL[family.version]} next-hop {family.peer}")

    run(["ip", "-n", node.namespace, family.flag, "route", "add", "default",
         "via", STATIC_GATEWAY[family.version], "proto", "static"])
    static_before = _default_routes(node.namespace, family.flag)
    source = ExaBGPSource(node, commands)
    try:
        source.start()
        node.start()
        assert poll(lambda: CONTROL[family.version] in node.learned(), 60.0), \
            f"control route never arrived: {node.log_tail()}"
        learned = node.learned()
        static_after = _default_routes(node.namespace, family.flag)
        rejected = node.log_lines("route rejected")
    finally:
        node.kill()
        source.stop()

    assert learned == {CONTROL[family.version]: (family.peer,)}
    assert static_after == static_before
    for prefix, _hop, reason in hostile:
        assert any(f"prefix={prefix} " in line and f"reason={reason}" in line
                   for line in rejected), f"{prefix}: no rejection with reason {reason} logged"
