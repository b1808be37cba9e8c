"""Time inserting N kernel routes four ways, in a network namespace this script creates.

Methods:
  ip -batch      iproute2 reading one "route add" line per route (the anchor)
  RouteWriter    bgpnet.kernel.routes: struct-packed requests, up to 64 KiB per send()
  pyroute2 nlm_request_batch
                 one prebuilt pyroute2 rtmsg per route, sent with
                 IPRoute.nlm_request_batch in chunks of 1000: the fastest pyroute2 API found
  pyroute2 route()
                 IPRoute.route("add", ...) once per route, the documented API

Each method starts from an empty table of our protocol, inserts N /24 routes via a
connected next hop and is checked by counting ``ip route show proto 201``. The time
covers building and sending the requests and reading the acks, not the check.

Usage: python bench/route_writer.py [--routes N] [--large] [--skip-pyroute2]
Needs root. The namespace is deleted at the end, also on failure.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from pyroute2.netns import popns, pushns

from bgpnet.kernel.plan import Plan
from bgpnet.kernel.routes import RouteWriter
from bgpnet.model import KernelRoute

PROTOCOL = 201
GATEWAY = "10.99.0.2"
PYROUTE2_CHUNK = 1000


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def prefixes(count: int) -> list[ipaddress.IPv4Network]:
    base = int(ipaddress.ip_address("10.128.0.0"))
    return [ipaddress.IPv4Network((base + (index << 8), 24)) for index in range(count)]


def count_routes(ns: str) -> int:
    return len(run("ip", "-n", ns, "route", "show", "proto", str(PROTOCOL)).splitlines())


def flush(ns: str) -> None:
    run("ip", "-n", ns, "route", "flush", "proto", str(PROTOCOL))


def insert_ip_batch(ns: str, nets: list[ipaddress.IPv4Network]) -> None:
    _ip_batch(ns, [f"route add {net} via {GATEWAY} proto {PROTOCOL}\n" for net in nets])


def delete_ip_batch(ns: str, nets: list[ipaddress.IPv4Network]) -> None:
    _ip_batch(ns, [f"route del {net} proto {PROTOCOL}\n" for net in nets])


def insert_route_writer(ns: str, nets: list[ipaddress.IPv4Network]) -> None:
    _route_writer_apply(ns, "add", nets)


def delete_route_writer(ns: str, nets: list[ipaddress.IPv4Network]) -> None:
    _route_writer_apply(ns, "delete", nets)


def _ip_batch(ns: str, lines: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".batch") as batch:
        batch.writelines(lines)
        batch.flush()
        run("ip", "-n", ns, "-batch", batch.name)


def _route_writer_apply(ns: str, action: str, nets: list[ipaddress.IPv4Network]) -> None:
    """Apply one plan that adds or deletes ``nets``, with a writer opened inside ``ns``."""
    gateway = ipaddress.ip_address(GATEWAY)
    routes = tuple(KernelRoute(prefix=net, nexthops=(gateway,)) for net in nets)
    pushns(ns)
    try:
        writer = RouteWriter(PROTOCOL)
    finally:
        popns()
    with writer:
        result = writer.apply(Plan(**{action: routes}))
    if result.failed:
        raise RuntimeError(f"RouteWriter: {len(result.failed)} of {len(routes)} {action}s failed, "
                           f"first {result.failed[0]}")


def insert_pyroute2(ns: str, nets: list[ipaddress.IPv4Network]) -> None:
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    with IPRoute(netns=ns) as ipr:
        for start in range(0, len(nets), PYROUTE2_CHUNK):
            messages = []
            for net in nets[start:start + PYROUTE2_CHUNK]:
                msg = rtmsg()
                msg["family"] = socket.AF_INET
                msg["dst_len"] = net.prefixlen
                msg["table"] = 254
                msg["proto"] = PROTOCOL
                msg["scope"] = 0
                msg["type"] = 1
                msg["attrs"] = [("RTA_DST", str(net.network_address)), ("RTA_GATEWAY", GATEWAY)]
                msg["header"]["type"] = RTM_NEWROUTE
                msg["header"]["flags"] = flags
                messages.append(msg)
            ipr.nlm_request_batch(messages)


def insert_pyroute2_calls(ns: str, nets: list[ipaddress.IPv4Network]) -> None:
    with IPRoute(netns=ns) as ipr:
        for net in nets:
            ipr.route("add", dst=str(net), gateway=GATEWAY, proto=PROTOCOL)


def make_namespace() -> str:
    ns = f"bgpb-{secrets.token_hex(4)}"
    run("ip", "netns", "add", ns)
    try:
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "link", "add", "name", "veth0", "type", "veth", "peer", "name", "veth1")
        run("ip", "-n", ns, "link", "set", "veth0", "up")
        run("ip", "-n", ns, "link", "set", "veth1", "up")
        run("ip", "-n", ns, "addr", "add", "10.99.0.1/24", "dev", "veth0")
    except BaseException:
        run("ip", "netns", "delete", ns)
        raise
    return ns


def measure(ns: str, insert: Callable[[str, list], None], nets: list) -> float:
    flush(ns)
    started = time.perf_counter()
    insert(ns, nets)
    elapsed = time.perf_counter() - started
    installed = count_routes(ns)
    if installed != len(nets):
        raise RuntimeError(f"{insert.__name__}: {installed} routes installed, expected {len(nets)}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10_000,
                        help="number of /24 routes to insert (default 10000)")
    parser.add_argument("--large", action="store_true", help="insert 100000 routes")
    parser.add_argument("--skip-pyroute2", action="store_true",
                        help="leave out both pyroute2 methods, which together took about 40 s "
                             "for 100000 routes on a 2-core VM")
    args = parser.parse_args()
    count = 100_000 if args.large else args.routes
    nets = prefixes(count)

    methods: list[tuple[str, Callable[[str, list], None]]] = [("ip -batch", insert_ip_batch),
                                                              ("RouteWriter", insert_route_writer)]
    if not args.skip_pyroute2:
        methods.append(("pyroute2 nlm_request_batch", insert_pyroute2))
        methods.append(("pyroute2 route()", insert_pyroute2_calls))

    ns = make_namespace()
    try:
        timings = {name: measure(ns, insert, nets) for name, insert in methods}
    finally:
        run("ip", "netns", "delete", ns)

    anchor = timings["ip -batch"]
    print(f"{count} routes, namespace {ns} (deleted)")
    print(f"{'method':<28} {'seconds':>8} {'x ip -batch':>12}")
    for name, seconds in timings.items():
        print(f"{name:<28} {seconds:>8.3f} {seconds / anchor:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
