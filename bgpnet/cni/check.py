"""Compare a pod attachment with the ``prevResult`` of its ADD, for the CHECK command.

Role: pure comparison. The caller reads the kernel and the lease store and passes
what it found. This module lists every difference as one sentence, so CHECK reports
all of them at once. Standard library only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Expected:
    """The addresses, gateways and MAC that ``prevResult`` states for one interface."""

    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]
    gateways: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    mac: str | None


@dataclass(frozen=True)
class Observed:
    """The pod link, lease and host veth as the caller read them from the node."""

    link_present: bool
    mac: str | None
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]
    default_gateways: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    lease: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None
    host_link_present: bool


def expected_from_prev_result(prev_result: Mapping, ifname: str, sandbox: str) -> Expected:
    """Extract the addresses, gateways and MAC that ``prev_result`` gives ``ifname``.

    Raises ValueError naming the field when ``prev_result`` lists no such interface
    or contains an invalid address.
    """
    interfaces = prev_result.get("interfaces") or []
    if not isinstance(interfaces, list):
        raise ValueError("prevResult.interfaces is not a list")
    index = None
    for position, interface in enumerate(interfaces):
        if isinstance(interface, dict) and interface.get("name") == ifname \
                and interface.get("sandbox", sandbox) == sandbox:
            index = position
    if index is None:
        raise ValueError(f"prevResult.interfaces has no interface {ifname} in {sandbox}")

    addresses = []
    gateways = []
    ips = prev_result.get("ips") or []
    if not isinstance(ips, list):
        raise ValueError("prevResult.ips is not a list")
    for position, ip in enumerate(ips):
        if not isinstance(ip, dict) or ip.get("interface") != index:
            continue
        try:
            addresses.append(ipaddress.ip_interface(ip["address"]))
            if ip.get("gateway"):
                gateways.append(ipaddress.ip_address(ip["gateway"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"prevResult.ips[{position}] is invalid: {exc}") from None
    mac = interfaces[index].get("mac")
    return Expected(addresses=tuple(addresses), gateways=tuple(gateways),
                    mac=mac.lower() if isinstance(mac, str) else None)


def differences(expected: Expected, observed: Observed, ifname: str) -> list[str]:
    """Return one sentence per way ``observed`` differs from ``expected``; empty when equal."""
    if not observed.link_present:
        return [f"interface {ifname} is missing in the container"]
    found = []
    if expected.mac and observed.mac and expected.mac != observed.mac.lower():
        found.append(f"interface {ifname} has MAC {observed.mac}, expected {expected.mac}")
    for address in expected.addresses:
        if address not in observed.addresses:
            found.append(f"address {address} is missing on {ifname}")
        if observed.lease != address:
            found.append(f"lease for {ifname} is {observed.lease or 'missing'}, "
                         f"expected {address}")
    for gateway in expected.gateways:
        if gateway not in observed.default_gateways:
            found.append(f"default route via {gateway} is missing in the container")
    if not observed.host_link_present:
        found.append("host end of the veth is missing on the node")
    return found
