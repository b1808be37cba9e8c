"""The kernel limit: N routes added and then deleted without BGP, as a floor.

Two writers from ``bench/route_writer.py``: ``ip -batch`` (iproute2) and bgpnet's
``RouteWriter``, each timed for adding N routes via a connected next hop and for
deleting them again, in a namespace created and deleted here. The faster of the
two is the floor that the table compares bgpnet with.
"""

from __future__ import annotations

import ipaddress
import time

from bench import route_writer

WRITERS = {
    "ip-batch": (route_writer.insert_ip_batch, route_writer.delete_ip_batch),
    "route-writer": (route_writer.insert_route_writer, route_writer.delete_route_writer),
}


def networks(count: int, length: int) -> list[ipaddress.IPv4Network]:
    """Return ``count`` prefixes from 10.0.0.0, skipping the writer namespace's own link."""
    link = ipaddress.IPv4Network(f"{route_writer.GATEWAY}/24", strict=False)
    step = 1 << (32 - length)
    address = int(ipaddress.IPv4Address("10.0.0.0"))
    nets: list[ipaddress.IPv4Network] = []
    while len(nets) < count:
        net = ipaddress.IPv4Network((address, length))
        if not net.overlaps(link):
            nets.append(net)
        address += step
    return nets


def measure(count: int, length: int, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Return {writer: {"announce": [s...], "withdraw": [s...]}} for N routes."""
    nets = networks(count, length)
    results: dict[str, dict[str, list[float]]] = {}
    ns = route_writer.make_namespace()
    try:
        for name, (insert, delete) in WRITERS.items():
            times = results[name] = {"announce": [], "withdraw": []}
            for _ in range(repeats):
                route_writer.flush(ns)
                started = time.perf_counter()
                insert(ns, nets)
                times["announce"].append(time.perf_counter() - started)
                _check(ns, name, count)
                started = time.perf_counter()
                delete(ns, nets)
                times["withdraw"].append(time.perf_counter() - started)
                _check(ns, name, 0)
    finally:
        route_writer.run("ip", "netns", "delete", ns)
    return results


def _check(ns: str, writer: str, expected: int) -> None:
    installed = route_writer.count_routes(ns)
    if installed != expected:
        raise RuntimeError(f"{writer}: {installed} routes in the table, expected {expected}")
