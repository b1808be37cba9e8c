"""Compute the kernel route changes that turn the actual routes into the desired ones.

Pure: no I/O, no logging. Both inputs are keyed by destination prefix and contain only
routes of our own protocol, so the plan never names a foreign route. The route writer
(``bgpnet.kernel.routes``) applies the plan.

A prefix whose desired and actual routes are equal (same prefix, next hops and table)
is left alone. ``KernelRoute`` sorts its next hops, so the order in which BGP or the
kernel listed them does not matter.
"""

from __future__ import annotations

import ipaddress
import operator
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from bgpnet.model import KernelRoute, Prefix


@dataclass(frozen=True)
class Plan:
    """Routes to add, to replace (same prefix and table, new next hops) and to delete.

    ``delete`` contains the kernel's current routes, so a delete request can name the
    table the route is in. Each tuple is sorted by prefix, IPv4 first.
    """

    add: tuple[KernelRoute, ...] = ()
    replace: tuple[KernelRoute, ...] = ()
    delete: tuple[KernelRoute, ...] = ()

    def __len__(self) -> int:
        return len(self.add) + len(self.replace) + len(self.delete)

    def __bool__(self) -> bool:
        return len(self) > 0


def plan_routes(
    desired: Mapping[Prefix, KernelRoute],
    actual: Mapping[Prefix, KernelRoute],
    *,
    prefixes: Iterable[Prefix] | None = None,
    delete_extra: bool = True,
) -> Plan:
    """Diff ``desired`` against ``actual`` and return the changes.

    ``prefixes`` limits the diff to those prefixes, for an incremental pass over the
    prefixes that changed since the last one. None compares every prefix of both maps.
    With ``delete_extra=False`` an actual route that nothing desires is kept, which
    the agent uses during the start-up grace period, before BGP has resent its routes.
    """
    if prefixes is None:
        keys: Iterable[Prefix] = desired.keys() | actual.keys()
    elif isinstance(prefixes, (set, frozenset)):
        keys = prefixes  # already unique, so no copy to hash every prefix again
    else:
        keys = set(prefixes)
    return _diff(keys, desired.get, actual, delete_extra)


def plan_prefixes(
    prefixes: Collection[Prefix],
    desired_route: Callable[[Prefix], KernelRoute | None],
    actual: Mapping[Prefix, KernelRoute],
) -> Plan:
    """Diff the desired route of each of ``prefixes`` against ``actual`` and return the changes.

    The incremental pass: ``desired_route`` returns a prefix's desired route, or None when
    it has none, so no map of desired routes is built. ``prefixes`` must not repeat a
    prefix. An actual route that nothing desires is deleted.
    """
    return _diff(prefixes, desired_route, actual, True)


def _diff(
    keys: Iterable[Prefix],
    desired_route: Callable[[Prefix], KernelRoute | None],
    actual: Mapping[Prefix, KernelRoute],
    delete_extra: bool,
) -> Plan:
    add: list[KernelRoute] = []
    replace: list[KernelRoute] = []
    delete: list[KernelRoute] = []
    for prefix in keys:
        want = desired_route(prefix)
        have = actual.get(prefix)
        if want is not None and have is None:
            add.append(want)
        elif want is not None and have is not None:
            if want.table != have.table:
                # A replace request only changes the table it names, so moving a
                # route to another table is an add there and a delete here.
                add.append(want)
                delete.append(have)
            elif want != have:
                replace.append(want)
        elif have is not None and delete_extra:
            delete.append(have)

    return Plan(add=_sorted(add), replace=_sorted(replace), delete=_sorted(delete))


def _sorted(routes: list[KernelRoute]) -> tuple[KernelRoute, ...]:
    # The same order as sorting by (version, prefix), because ipaddress orders networks
    # by address and then netmask. Integer keys avoid ipaddress's Python-level __lt__,
    # which made this sort a noticeable share of a large plan.
    return tuple(sorted(routes, key=_order))


def _public_order(route: KernelRoute) -> tuple[int, int, int]:
    prefix = route.prefix
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


# The same key, read by C code from the attributes that CPython 3.11's ipaddress
# stores, without a Python call per route: sorting 10,000 /24 routes took 0.18 instead
# of 0.26 us per route (Python 3.11.7). Used only when it gives ``_public_order``'s keys
# at import.
_private_order = operator.attrgetter(
    "prefix._version", "prefix.network_address._ip", "prefix._prefixlen")


def _private_order_matches() -> bool:
    samples = [ipaddress.ip_network(text) for text in ("0.0.0.0/0", "10.0.1.0/24",
                                                         "10.0.0.1/32", "2001:db8::/64")]
    try:
        return all(_private_order(route) == _public_order(route)
                   for route in (KernelRoute(prefix=prefix, nexthops=()) for prefix in samples))
    except AttributeError:
        return False


_order = _private_order if _private_order_matches() else _public_order
