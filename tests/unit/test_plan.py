"""Table tests for the pure route diff in bgpnet.kernel.plan."""

from __future__ import annotations

import ipaddress

import pytest

from bgpnet.kernel.plan import Plan, plan_routes
from bgpnet.model import KernelRoute


def route(prefix: str, *nexthops: str, table: int = 254) -> KernelRoute:
    return KernelRoute(
        prefix=ipaddress.ip_network(prefix),
        nexthops=tuple(ipaddress.ip_address(hop) for hop in nexthops),
        table=table,
    )


def routes(*items: KernelRoute) -> dict:
    return {item.prefix: item for item in items}


A = route("10.244.1.0/24", "192.168.1.11")
A_MOVED = route("10.244.1.0/24", "192.168.1.12")
A_ECMP = route("10.244.1.0/24", "192.168.1.11", "192.168.1.12")
A_ECMP_REVERSED = route("10.244.1.0/24", "192.168.1.12", "192.168.1.11")
A_TABLE_100 = route("10.244.1.0/24", "192.168.1.11", table=100)
B = route("10.244.2.0/24", "192.168.1.12")
C = route("10.244.3.0/24", "192.168.1.13")
V6 = route("fd00:244:1::/64", "fd00::11")
V6_MOVED = route("fd00:244:1::/64", "fd00::12")

FULL_CASES = [
    # label, desired, actual, expected add, replace, delete
    ("empty", [], [], [], [], []),
    ("new route", [A], [], [A], [], []),
    ("unchanged", [A, B], [A, B], [], [], []),
    ("next hop changed", [A_MOVED], [A], [], [A_MOVED], []),
    ("single to ecmp", [A_ECMP], [A], [], [A_ECMP], []),
    ("ecmp order ignored", [A_ECMP_REVERSED], [A_ECMP], [], [], []),
    ("stale route", [A], [A, B], [], [], [B]),
    ("mixed", [A_MOVED, C], [A, B], [C], [A_MOVED], [B]),
    ("ipv6 replace", [V6_MOVED], [V6], [], [V6_MOVED], []),
    ("both families sorted", [V6, B, A], [], [A, B, V6], [], []),
    ("table moved", [A_TABLE_100], [A], [A_TABLE_100], [], [A]),
]


@pytest.mark.parametrize(
    "desired, actual, add, replace, delete",
    [case[1:] for case in FULL_CASES],
    ids=[case[0] for case in FULL_CASES],
)
def test_full_diff(desired, actual, add, replace, delete):
    plan = plan_routes(routes(*desired), routes(*actual))

    assert plan.add == tuple(add)
    assert plan.replace == tuple(replace)
    assert plan.delete == tuple(delete)


PREFIX_CASES = [
    # label, prefixes, expected add, replace, delete
    ("none dirty", [], [], [], []),
    ("only new", [C.prefix], [C], [], []),
    ("only changed", [A.prefix], [], [A_MOVED], []),
    ("only stale", [B.prefix], [], [], [B]),
    ("unknown prefix", [V6.prefix], [], [], []),
    ("duplicates", [C.prefix, C.prefix], [C], [], []),
]


@pytest.mark.parametrize(
    "prefixes, add, replace, delete",
    [case[1:] for case in PREFIX_CASES],
    ids=[case[0] for case in PREFIX_CASES],
)
def test_dirty_prefixes(prefixes, add, replace, delete):
    desired = routes(A_MOVED, C)
    actual = routes(A, B)

    plan = plan_routes(desired, actual, prefixes=prefixes)

    assert plan.add == tuple(add)
    assert plan.replace == tuple(replace)
    assert plan.delete == tuple(delete)


KEEP_CASES = [
    # label, prefixes, expected delete
    ("full pass", None, []),
    ("dirty pass", [B.prefix], []),
]


@pytest.mark.parametrize(
    "prefixes, delete", [case[1:] for case in KEEP_CASES], ids=[case[0] for case in KEEP_CASES]
)
def test_keep_extra(prefixes, delete):
    plan = plan_routes(routes(A_MOVED), routes(A, B), prefixes=prefixes, delete_extra=False)

    assert plan.delete == tuple(delete)


def test_keep_extra_still_replaces():
    plan = plan_routes(routes(A_MOVED), routes(A, B), delete_extra=False)

    assert plan.replace == (A_MOVED,)


SIZE_CASES = [
    # label, plan, expected length, expected truth
    ("empty", Plan(), 0, False),
    ("one of each", Plan(add=(A,), replace=(B,), delete=(C,)), 3, True),
    ("deletes only", Plan(delete=(A, B)), 2, True),
]


@pytest.mark.parametrize(
    "plan, length, truth", [case[1:] for case in SIZE_CASES], ids=[case[0] for case in SIZE_CASES]
)
def test_plan_size(plan, length, truth):
    assert len(plan) == length
    assert bool(plan) is truth


def test_plan_frozen():
    plan = Plan(add=(A,))

    with pytest.raises(AttributeError):
        plan.add = ()  # type: ignore[misc]
