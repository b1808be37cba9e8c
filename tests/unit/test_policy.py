"""Import policy: table of prefixes and next hops with the expected verdict."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from bgpnet.bgp.policy import ImportPolicy

POLICY = ImportPolicy(
    cluster_cidrs=(ip_network("10.244.0.0/16"), ip_network("fd00:244::/32")),
    own_prefixes=(ip_network("10.244.1.0/24"), ip_network("fd00:244:1::/64")),
    local_addresses=frozenset({ip_address("192.168.77.11"), ip_address("fd77::11")}),
)

CASES = [
    # label, prefix, next hop, expected reason
    ("ipv4 accepted", "10.244.2.0/24", "192.168.77.12", None),
    ("ipv6 accepted", "fd00:244:2::/64", "fd77::12", None),
    ("host route accepted", "10.244.2.7/32", "192.168.77.12", None),
    ("cluster cidr itself", "10.244.0.0/16", "192.168.77.12", "covers-own-pod-cidr"),
    ("ipv4 default", "0.0.0.0/0", "192.168.77.12", "default-route"),
    ("ipv6 default", "::/0", "fd77::12", "default-route"),
    ("outside cluster", "10.245.0.0/24", "192.168.77.12", "outside-cluster-cidr"),
    ("supernet of cluster", "10.0.0.0/8", "192.168.77.12", "outside-cluster-cidr"),
    ("ipv6 outside cluster", "fd00:245::/64", "fd77::12", "outside-cluster-cidr"),
    ("own pod cidr", "10.244.1.0/24", "192.168.77.12", "own-pod-cidr"),
    ("inside own pod cidr", "10.244.1.128/25", "192.168.77.12", "own-pod-cidr"),
    ("ipv6 own pod cidr", "fd00:244:1::/64", "fd77::12", "own-pod-cidr"),
    ("covers own pod cidr", "10.244.0.0/23", "192.168.77.12", "covers-own-pod-cidr"),
    ("nexthop unspecified", "10.244.2.0/24", "0.0.0.0", "nexthop-unspecified"),
    ("ipv6 nexthop unspecified", "fd00:244:2::/64", "::", "nexthop-unspecified"),
    ("nexthop ipv6 for ipv4", "10.244.2.0/24", "fd77::12", "nexthop-family"),
    ("nexthop ipv4 for ipv6", "fd00:244:2::/64", "192.168.77.12", "nexthop-family"),
    ("nexthop local", "10.244.2.0/24", "192.168.77.11", "nexthop-local"),
    ("ipv6 nexthop local", "fd00:244:2::/64", "fd77::11", "nexthop-local"),
    ("nexthop loopback", "10.244.2.0/24", "127.0.0.1", "nexthop-martian"),
    ("ipv6 nexthop loopback", "fd00:244:2::/64", "::1", "nexthop-martian"),
    ("nexthop multicast", "10.244.2.0/24", "224.0.0.5", "nexthop-martian"),
    ("ipv6 nexthop multicast", "fd00:244:2::/64", "ff02::1", "nexthop-martian"),
    ("nexthop link-local", "10.244.2.0/24", "169.254.0.1", "nexthop-martian"),
    ("nexthop broadcast", "10.244.2.0/24", "255.255.255.255", "nexthop-martian"),
    ("nexthop class e", "10.244.2.0/24", "240.0.0.1", "nexthop-martian"),
    ("ipv6 nexthop link-local", "fd00:244:2::/64", "fe80::1", "nexthop-link-local"),
    ("prefix checked first", "10.245.0.0/24", "127.0.0.1", "outside-cluster-cidr"),
]


@pytest.mark.parametrize("label,prefix,nexthop,expected", CASES,
                         ids=[case[0] for case in CASES])
def test_check(label, prefix, nexthop, expected):
    assert POLICY.check(ip_network(prefix), ip_address(nexthop)) == expected


def test_no_cluster_cidr_denies():
    policy = ImportPolicy(cluster_cidrs=(), own_prefixes=())
    assert policy.check(ip_network("10.244.2.0/24"),
                        ip_address("192.168.77.12")) == "outside-cluster-cidr"


def test_ipv4_only_cluster_denies_ipv6():
    policy = ImportPolicy(cluster_cidrs=(ip_network("10.244.0.0/16"),), own_prefixes=())
    assert policy.check(ip_network("fd00:244:2::/64"),
                        ip_address("fd77::12")) == "outside-cluster-cidr"


def test_policy_frozen():
    with pytest.raises(AttributeError):
        POLICY.cluster_cidrs = ()
