"""RouteWriter and dump_routes against a real kernel, inside a private network namespace.

Each test builds a namespace with a veth pair: veth0 has 10.99.0.1/24 and fd99::1/64, so
10.99.0.2, 10.99.0.3, fd99::2 and fd99::3 are connected next hops. Results are read with
``ip -j route``, not with the code under test. The ``ensure_protocol_name`` tests at the
end need no root and no namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgpnet.kernel.plan import Plan
from bgpnet.kernel.routes import RouteWriter, dump_routes, ensure_protocol_name
from bgpnet.model import KernelRoute

from .conftest import enter, run

PROTOCOL = 201
GATEWAY = ipaddress.ip_address("10.99.0.2")
OTHER_GATEWAY = ipaddress.ip_address("10.99.0.3")
GATEWAY6 = ipaddress.ip_address("fd99::2")
OTHER_GATEWAY6 = ipaddress.ip_address("fd99::3")
UNREACHABLE = ipaddress.ip_address("192.0.2.1")  # TEST-NET-1, not on any link here


def many_prefixes(count: int) -> list[ipaddress.IPv4Network]:
    """Return ``count`` /24 prefixes from 10.128.0.0 upward."""
    base = int(ipaddress.ip_address("10.128.0.0"))
    return [ipaddress.IPv4Network((base + (index << 8), 24)) for index in range(count)]


def many_prefixes6(count: int) -> list[ipaddress.IPv6Network]:
    """Return ``count`` /64 prefixes from fd10:: upward."""
    base = int(ipaddress.ip_address("fd10::"))
    return [ipaddress.IPv6Network((base + (index << 64), 64)) for index in range(count)]


def routes_via(prefixes, *gateways) -> tuple[KernelRoute, ...]:
    return tuple(KernelRoute(prefix=prefix, nexthops=gateways) for prefix in prefixes)


def ip_routes(ns: str, *selector: str, family: str = "-4") -> list[dict]:
    """Return ``ip -j route show`` entries of the main table matching ``selector``."""
    output = run("ip", "-j", family, "-n", ns, "route", "show", "table", "main", *selector).stdout
    return json.loads(output or "[]")


def ours(ns: str, family: str = "-4") -> dict:
    """Return our protocol's routes as seen by ``ip``, keyed by prefix."""
    return {ipaddress.ip_network(entry["dst"]): entry
            for entry in ip_routes(ns, "proto", str(PROTOCOL), family=family)}


def gateways(entry: dict) -> set[str]:
    hops = entry.get("nexthops", [entry])
    # ip prints a next hop of the other family (RTA_VIA) as "via": {"host": ...}.
    return {hop["gateway"] if "gateway" in hop else hop["via"]["host"] for hop in hops}


@pytest.fixture
def lab(netns) -> str:
    ns = netns()
    run("ip", "-n", ns, "link", "add", "name", "veth0", "type", "veth", "peer", "name", "veth1")
    run("ip", "-n", ns, "link", "set", "veth0", "up")
    run("ip", "-n", ns, "link", "set", "veth1", "up")
    run("ip", "-n", ns, "addr", "add", "10.99.0.1/24", "dev", "veth0")
    run("ip", "-n", ns, "addr", "add", "fd99::1/64", "dev", "veth0", "nodad")
    return ns


@pytest.fixture
def writer(lab) -> Iterator[RouteWriter]:
    with enter(lab):
        route_writer = RouteWriter(PROTOCOL)
    try:
        yield route_writer
    finally:
        route_writer.close()


def dump_in(ns: str) -> dict:
    with enter(ns):
        return dump_routes(PROTOCOL)


@pytest.mark.integration
def test_add_many(lab, writer):
    routes = routes_via(many_prefixes(10_000), GATEWAY)

    result = writer.apply(Plan(add=routes))

    seen = ours(lab)
    assert result.failed == ()
    assert result.added == 10_000
    assert len(seen) == 10_000
    for route in routes[::997]:
        assert gateways(seen[route.prefix]) == {str(GATEWAY)}


@pytest.mark.integration
def test_replace_many(lab, writer):
    prefixes = many_prefixes(10_000)
    writer.apply(Plan(add=routes_via(prefixes, GATEWAY)))

    result = writer.apply(Plan(replace=routes_via(prefixes, OTHER_GATEWAY)))

    seen = ours(lab)
    assert result.failed == ()
    assert result.replaced == 10_000
    assert len(seen) == 10_000
    assert {gateway for entry in seen.values() for gateway in gateways(entry)} == {str(OTHER_GATEWAY)}


@pytest.mark.integration
def test_delete_many(lab, writer):
    routes = routes_via(many_prefixes(10_000), GATEWAY)
    writer.apply(Plan(add=routes))

    result = writer.apply(Plan(delete=routes))

    assert result.failed == ()
    assert result.deleted == 10_000
    assert ours(lab) == {}


@pytest.mark.integration
def test_delete_missing_ok(lab, writer):
    route = routes_via(many_prefixes(1), GATEWAY)

    result = writer.apply(Plan(delete=route))

    assert result.failed == ()
    assert result.deleted == 1


@pytest.mark.integration
def test_foreign_routes_untouched(lab, writer):
    same, overlapped, other = many_prefixes(3)
    # Same prefixes as ours at other metrics, so both can exist, and covering prefixes.
    run("ip", "-n", lab, "route", "add", str(same), "via", str(OTHER_GATEWAY),
        "proto", "static", "metric", "100")
    run("ip", "-n", lab, "route", "add", str(overlapped), "via", str(OTHER_GATEWAY),
        "proto", "12", "metric", "32")
    run("ip", "-n", lab, "route", "add", "10.128.0.0/16", "via", str(OTHER_GATEWAY),
        "proto", "static")
    run("ip", "-n", lab, "route", "add", "10.128.2.128/25", "via", str(OTHER_GATEWAY),
        "proto", "12")
    static_before = ip_routes(lab, "proto", "static")
    bird_before = ip_routes(lab, "proto", "12")
    routes = routes_via([same, overlapped, other], GATEWAY)

    added = writer.apply(Plan(add=routes))
    after_add = (ip_routes(lab, "proto", "static"), ip_routes(lab, "proto", "12"))
    replaced = writer.apply(Plan(replace=routes_via([same, overlapped, other], OTHER_GATEWAY)))
    after_replace = (ip_routes(lab, "proto", "static"), ip_routes(lab, "proto", "12"))
    deleted = writer.apply(Plan(delete=routes))
    after_delete = (ip_routes(lab, "proto", "static"), ip_routes(lab, "proto", "12"))

    assert added.added == 3
    assert replaced.replaced == 3
    assert deleted.deleted == 3
    assert len(static_before) == 2
    assert len(bird_before) == 2
    assert after_add == (static_before, bird_before)
    assert after_replace == (static_before, bird_before)
    assert after_delete == (static_before, bird_before)
    assert ours(lab) == {}


@pytest.mark.integration
def test_delete_spares_static(lab, writer):
    # With no route of ours on the prefix, a delete without our protocol in the
    # request would remove the static route.
    (prefix,) = many_prefixes(1)
    run("ip", "-n", lab, "route", "add", str(prefix), "via", str(OTHER_GATEWAY), "proto", "static")

    result = writer.apply(Plan(delete=routes_via([prefix], GATEWAY)))

    static = ip_routes(lab, "proto", "static")
    assert result.failed == ()
    assert [entry["dst"] for entry in static] == [str(prefix)]


@pytest.mark.integration
def test_add_over_static_fails(lab, writer):
    # Same prefix and metric as a static route: the kernel rejects our add with
    # EEXIST instead of overwriting the static route.
    prefix, free = many_prefixes(2)
    run("ip", "-n", lab, "route", "add", str(prefix), "via", str(OTHER_GATEWAY), "proto", "static")
    blocked = KernelRoute(prefix=prefix, nexthops=(GATEWAY,))

    result = writer.apply(Plan(add=(blocked, KernelRoute(prefix=free, nexthops=(GATEWAY,)))))

    static = ip_routes(lab, "proto", "static")
    assert result.failed == ((blocked, "add", errno.EEXIST),)
    assert result.added == 1
    assert gateways(static[0]) == {str(OTHER_GATEWAY)}
    assert list(ours(lab)) == [free]


@pytest.mark.integration
def test_replace_over_static_fails(lab, writer):
    # Our route was deleted behind our back and a static route took its place: the
    # replace must fail with EEXIST instead of overwriting the static route.
    (prefix,) = many_prefixes(1)
    writer.apply(Plan(add=routes_via([prefix], GATEWAY)))
    run("ip", "-n", lab, "route", "del", str(prefix), "proto", str(PROTOCOL))
    run("ip", "-n", lab, "route", "add", str(prefix), "via", str(OTHER_GATEWAY), "proto", "static")
    moved = KernelRoute(prefix=prefix, nexthops=(GATEWAY,))

    result = writer.apply(Plan(replace=(moved,)))

    static = ip_routes(lab, "proto", "static")
    assert result.failed == ((moved, "replace", errno.EEXIST),)
    assert gateways(static[0]) == {str(OTHER_GATEWAY)}
    assert ours(lab) == {}


@pytest.mark.integration
def test_dump_matches_ip(lab, writer):
    v4 = routes_via(many_prefixes(2_000), GATEWAY)
    ecmp = routes_via(many_prefixes(2_010)[2_000:], GATEWAY, OTHER_GATEWAY)
    v6 = routes_via(many_prefixes6(500), GATEWAY6)
    writer.apply(Plan(add=v4 + ecmp + v6))
    run("ip", "-n", lab, "route", "add", "10.200.0.0/24", "via", str(GATEWAY), "proto", "static")
    run("ip", "-n", lab, "route", "add", "fd20::/64", "via", str(GATEWAY6), "proto", "12")

    dumped = dump_in(lab)

    seen = {**ours(lab), **ours(lab, family="-6")}
    assert len(dumped) == 2_510
    assert dumped.keys() == seen.keys()
    for prefix, route in dumped.items():
        assert {str(hop) for hop in route.nexthops} == gateways(seen[prefix]), prefix
    assert all(route.table == 254 for route in dumped.values())


@pytest.mark.integration
def test_dump_empty(lab):
    run("ip", "-n", lab, "route", "add", "10.200.0.0/24", "via", str(GATEWAY), "proto", "static")

    assert dump_in(lab) == {}


ECMP_CASES = [
    # label, family flag, route
    ("ipv4", "-4", KernelRoute(prefix=ipaddress.ip_network("10.150.0.0/24"),
                               nexthops=(GATEWAY, OTHER_GATEWAY))),
    ("ipv6", "-6", KernelRoute(prefix=ipaddress.ip_network("fd15::/64"),
                               nexthops=(GATEWAY6, OTHER_GATEWAY6))),
]


@pytest.mark.integration
@pytest.mark.parametrize("family, route", [case[1:] for case in ECMP_CASES],
                         ids=[case[0] for case in ECMP_CASES])
def test_ecmp_multipath(lab, writer, family, route):
    result = writer.apply(Plan(add=(route,)))

    entry = ours(lab, family=family)[route.prefix]
    assert result.failed == ()
    assert "nexthops" in entry
    assert gateways(entry) == {str(hop) for hop in route.nexthops}


@pytest.mark.integration
def test_ecmp_to_single(lab, writer):
    (prefix,) = many_prefixes(1)
    writer.apply(Plan(add=routes_via([prefix], GATEWAY, OTHER_GATEWAY)))

    result = writer.apply(Plan(replace=routes_via([prefix], OTHER_GATEWAY)))

    entry = ours(lab)[prefix]
    assert result.replaced == 1
    assert "nexthops" not in entry
    assert gateways(entry) == {str(OTHER_GATEWAY)}


@pytest.mark.integration
def test_ipv6_routes(lab, writer):
    prefixes = many_prefixes6(1_000)
    added = writer.apply(Plan(add=routes_via(prefixes, GATEWAY6)))
    after_add = ours(lab, family="-6")
    replaced = writer.apply(Plan(replace=routes_via(prefixes, OTHER_GATEWAY6)))
    after_replace = ours(lab, family="-6")
    deleted = writer.apply(Plan(delete=routes_via(prefixes, OTHER_GATEWAY6)))

    assert added.added == 1_000
    assert len(after_add) == 1_000
    assert {gateway for entry in after_add.values() for gateway in gateways(entry)} == {str(GATEWAY6)}
    assert replaced.replaced == 1_000
    assert {gateway for entry in after_replace.values() for gateway in gateways(entry)} == {str(OTHER_GATEWAY6)}
    assert deleted.deleted == 1_000
    assert ours(lab, family="-6") == {}


@pytest.mark.integration
def test_ipv6_delete_spares_other(lab, writer):
    (prefix,) = many_prefixes6(1)
    run("ip", "-6", "-n", lab, "route", "add", str(prefix), "via", str(OTHER_GATEWAY6),
        "proto", "12", "metric", "32")
    writer.apply(Plan(add=routes_via([prefix], GATEWAY6)))

    result = writer.apply(Plan(delete=routes_via([prefix], GATEWAY6)))

    bird = ip_routes(lab, "proto", "12", family="-6")
    assert result.deleted == 1
    assert [entry["dst"] for entry in bird] == [str(prefix)]
    assert ours(lab, family="-6") == {}


@pytest.mark.integration
def test_ipv6_gateway_for_ipv4(lab, writer):
    route = KernelRoute(prefix=ipaddress.ip_network("10.160.0.0/24"), nexthops=(GATEWAY6,))

    result = writer.apply(Plan(add=(route,)))

    entry = ours(lab)[route.prefix]
    assert result.failed == ()
    assert entry["via"]["family"] == "inet6"
    assert gateways(entry) == {str(GATEWAY6)}
    assert dump_in(lab)[route.prefix] == route


UNREACHABLE_CASES = [
    # label, action
    ("add", "add"),
    ("replace", "replace"),
]


@pytest.mark.integration
@pytest.mark.parametrize("action", [case[1] for case in UNREACHABLE_CASES],
                         ids=[case[0] for case in UNREACHABLE_CASES])
def test_unreachable_fails_alone(lab, writer, action):
    prefixes = many_prefixes(100)
    if action == "replace":
        writer.apply(Plan(add=routes_via(prefixes, GATEWAY)))
    routes = list(routes_via(prefixes, OTHER_GATEWAY))
    bad = KernelRoute(prefix=prefixes[50], nexthops=(UNREACHABLE,))
    routes[50] = bad

    result = writer.apply(Plan(**{action: tuple(routes)}))

    seen = ours(lab)
    assert result.failed == ((bad, action, errno.ENETUNREACH),)
    assert result.added + result.replaced == 99
    assert gateways(seen[prefixes[49]]) == {str(OTHER_GATEWAY)}
    assert gateways(seen[prefixes[51]]) == {str(OTHER_GATEWAY)}


@pytest.mark.integration
def test_other_table_rejected(writer):
    route = KernelRoute(prefix=many_prefixes(1)[0], nexthops=(GATEWAY,), table=100)

    result = writer.apply(Plan(add=(route,)))

    assert result.failed == ((route, "add", errno.EINVAL),)


@pytest.mark.integration
def test_lost_acks_resent(lab, caplog):
    # A receive buffer far too small for a 64 KiB batch of acks forces ENOBUFS.
    prefixes = many_prefixes(2_000)
    with enter(lab):
        small = RouteWriter(PROTOCOL, receive_buffer=16 * 1024)
    with small:
        small.apply(Plan(add=routes_via(prefixes, GATEWAY)))
        with caplog.at_level(logging.WARNING, logger="bgpnet.kernel.routes"):
            result = small.apply(Plan(replace=routes_via(prefixes, OTHER_GATEWAY)))

    seen = ours(lab)
    assert any("acks lost" in record.message for record in caplog.records)
    assert result.failed == ()
    assert result.replaced == 2_000
    assert {gateway for entry in seen.values() for gateway in gateways(entry)} == {str(OTHER_GATEWAY)}


# ensure_protocol_name: plain files, no root needed.

NAME_CASES = [
    # label, existing content (None: no file), expected written
    ("missing", None, True),
    ("same", "201 bgpnet\n", False),
    ("other number", "202 bgpnet\n", True),
    ("no newline", "201 bgpnet", True),
]


@pytest.mark.parametrize("existing, written", [case[1:] for case in NAME_CASES],
                         ids=[case[0] for case in NAME_CASES])
def test_protocol_name(tmp_path: Path, existing, written):
    path = tmp_path / "bgpnet.conf"
    if existing is not None:
        path.write_text(existing)

    result = ensure_protocol_name(201, directory=tmp_path)

    assert result is written
    assert path.read_text() == "201 bgpnet\n"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["bgpnet.conf"]


def test_protocol_name_creates_directory(tmp_path: Path):
    directory = tmp_path / "rt_protos.d"

    ensure_protocol_name(201, directory=directory)

    assert (directory / "bgpnet.conf").read_text() == "201 bgpnet\n"


def test_deploy_file_matches():
    deploy = Path(__file__).resolve().parents[2] / "deploy" / "rt_protos.d" / "bgpnet.conf"

    assert deploy.read_text() == "201 bgpnet\n"
