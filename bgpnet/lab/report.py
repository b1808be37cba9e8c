"""What ``lab check`` decides and prints: convergence, route tables, the reachability matrix.

Role: pure. Input is plain data (decoded ``ip -j route`` output, ping outcomes); output
is decisions and text. The last line of a check report is always
``reachable: X/Y pod pairs``, which scripts and the demo match on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bgpnet.model import Prefix


@dataclass(frozen=True)
class RouteRow:
    prefix: str
    nexthop: str
    protocol: str


@dataclass(frozen=True)
class PodAddress:
    label: str  # node01-pod1
    address: str | None  # None when the pod has no IPv4 address on eth0


def expected_routes(pod_cidrs: Mapping[str, Prefix]) -> dict[str, frozenset[Prefix]]:
    """Map each node to the pod CIDRs of every other node, which BGP must bring it."""
    return {node: frozenset(cidr for other, cidr in pod_cidrs.items() if other != node)
            for node in pod_cidrs}


def missing_routes(expected: Mapping[str, frozenset[Prefix]],
                   learned: Mapping[str, Iterable[Prefix]]) -> dict[str, tuple[Prefix, ...]]:
    """Return, per node with a gap, the expected prefixes it has no route for, sorted."""
    missing = {}
    for node, prefixes in expected.items():
        gap = prefixes - frozenset(learned.get(node, ()))
        if gap:
            missing[node] = tuple(sorted(gap, key=lambda prefix: (prefix.version, prefix)))
    return missing


def describe_missing(missing: Mapping[str, Sequence[Prefix]]) -> str:
    return "; ".join(f"{node} lacks {', '.join(map(str, prefixes))}"
                     for node, prefixes in sorted(missing.items()))


def route_prefixes(routes: Iterable[Mapping]) -> set[Prefix]:
    """Return the destinations of decoded ``ip -j route`` entries, skipping ``default``."""
    prefixes = set()
    for route in routes:
        dst = route.get("dst", "default")
        if dst != "default":
            prefixes.add(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32"))
    return prefixes


def pod_route_rows(routes: Iterable[Mapping], pod_cidrs: Iterable[Prefix]) -> list[RouteRow]:
    """Select the routes to a pod CIDR and describe their next hops, sorted by prefix."""
    cidrs = set(pod_cidrs)
    rows = []
    for route in routes:
        dst = route.get("dst", "default")
        if dst == "default" or ipaddress.ip_network(dst if "/" in dst else f"{dst}/32") not in cidrs:
            continue
        rows.append(RouteRow(prefix=dst, nexthop=_nexthop(route),
                             protocol=str(route.get("protocol", "boot"))))
    return sorted(rows, key=lambda row: ipaddress.ip_network(row.prefix))


def _nexthop(route: Mapping) -> str:
    hops = route.get("nexthops") or [route]  # ECMP routes list their hops in "nexthops"
    parts = []
    for hop in hops:
        if "gateway" in hop:
            parts.append(f"via {hop['gateway']} dev {hop.get('dev', '?')}")
        else:
            parts.append(f"dev {hop.get('dev', '?')}")
    return ", ".join(parts)


def render_routes(tables: Mapping[str, Sequence[RouteRow]]) -> str:
    """Render one block per node: prefix, next hop and protocol of each pod-CIDR route."""
    lines = []
    for node, rows in tables.items():
        lines.append(f"routes on {node}:")
        if not rows:
            lines.append("  (no route to any pod CIDR)")
        width = max((len(row.prefix) for row in rows), default=0)
        hop_width = max((len(row.nexthop) for row in rows), default=0)
        for row in rows:
            lines.append(f"  {row.prefix:<{width}}  {row.nexthop:<{hop_width}}  proto {row.protocol}")
    return "\n".join(lines) + "\n"


def ping_pairs(pods: Sequence[PodAddress]) -> list[tuple[PodAddress, PodAddress]]:
    """Return every ordered pair of distinct pods."""
    return [(source, target) for source in pods for target in pods if source != target]


def render_matrix(pods: Sequence[PodAddress], reached: Mapping[tuple[str, str], bool]) -> str:
    """Render the matrix (row pings column) and the final ``reachable: X/Y pod pairs`` line.

    ``reached`` maps (source label, target label) to the ping outcome; a pair that is
    missing from it counts as unreachable.
    """
    pairs = ping_pairs(pods)
    label_width = max((len(pod.label) for pod in pods), default=0)
    address_width = max((len(pod.address or "-") for pod in pods), default=0)
    column = max(label_width, 4)
    lines = ["pod-to-pod reachability (row pings column):"]
    lines.append(" " * (label_width + address_width + 4)
                 + " ".join(f"{pod.label:>{column}}" for pod in pods))
    for source in pods:
        cells = []
        for target in pods:
            if source == target:
                cell = "."
            else:
                cell = "ok" if reached.get((source.label, target.label), False) else "FAIL"
            cells.append(f"{cell:>{column}}")
        lines.append(f"  {source.label:<{label_width}}  {source.address or '-':<{address_width}}"
                     + " ".join(cells))
    ok = sum(1 for source, target in pairs if reached.get((source.label, target.label), False))
    lines.append(f"reachable: {ok}/{len(pairs)} pod pairs")
    return "\n".join(lines) + "\n"
