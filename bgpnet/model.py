"""Value types shared by every layer: prefixes, next hops, peers, routes, events.

Everything here is frozen and hashable, built once at a boundary (config loader,
ExaBGP decoder, netlink reader) and passed inward. Prefixes and addresses are the
standard library's ``ipaddress`` objects, so family checks and containment tests are
the library's, not ours.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Union

Prefix = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parse_prefix(text: str) -> Prefix:
    """Parse ``10.244.1.0/24``; raise ValueError when host bits are set."""
    return ipaddress.ip_network(text, strict=True)


def parse_address(text: str) -> Address:
    return ipaddress.ip_address(text)


@dataclass(frozen=True, order=True)
class PeerId:
    """A BGP neighbor as ExaBGP names it: the peer's address."""

    address: Address

    def __str__(self) -> str:
        return str(self.address)


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """A route as the route writer sets it and the route reader reports it.

    ``nexthops`` is sorted, so two routes with the same gateways compare equal;
    more than one next hop means an ECMP (RTA_MULTIPATH) route. One is built per
    learned prefix, so it has slots (about 40 bytes less each).
    """

    prefix: Prefix
    nexthops: tuple[Address, ...]
    table: int = 254  # RT_TABLE_MAIN, include/uapi/linux/rtnetlink.h

    def __post_init__(self) -> None:
        hops = self.nexthops
        # A tuple of one next hop is already sorted and unique: skip hashing it.
        if type(hops) is not tuple or len(hops) != 1:
            object.__setattr__(self, "nexthops", tuple(sorted(set(hops))))


@dataclass(frozen=True)
class Lease:
    """A pod address reserved on disk for one container interface.

    ``address`` carries the pool's prefix length, so it can be put on the pod's
    interface as it is.
    """

    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    container_id: str
    ifname: str


# Events produced by the ExaBGP decoder (bgp/decoder.py) and consumed by the RIB.


@dataclass(frozen=True)
class Announce:
    """Routes that one UPDATE from ``peer`` announced, all with one next hop."""

    peer: PeerId
    nexthop: Address
    prefixes: tuple[Prefix, ...]
    originator_id: Address | None = None
    as_path: tuple[int, ...] = ()


@dataclass(frozen=True)
class Withdraw:
    peer: PeerId
    prefixes: tuple[Prefix, ...]


@dataclass(frozen=True)
class EndOfRib:
    peer: PeerId
    afi: str  # "ipv4" or "ipv6"
    safi: str  # "unicast"


@dataclass(frozen=True)
class PeerState:
    """A session state change; ``state`` is ExaBGP's word: connected, up or down."""

    peer: PeerId
    state: str
    reason: str = ""


@dataclass(frozen=True)
class PeerOpen:
    """The OPEN a peer sent: its graceful-restart capability (RFC 4724 section 3).

    ``restart_time`` is None when the peer did not advertise the capability.
    ``restart_families`` lists the families ("ipv4 unicast") whose routes the peer asks
    us to keep while it restarts. A helper-only peer advertises the capability with no
    families, so its routes are not kept.
    """

    peer: PeerId
    restart_time: int | None
    restart_families: tuple[str, ...] = ()


@dataclass(frozen=True)
class Notification:
    peer: PeerId
    code: int
    subcode: int
    data: str = ""


@dataclass(frozen=True)
class Ack:
    """ExaBGP's ``done`` or ``error`` reply to one command we wrote."""

    ok: bool
    text: str = ""


@dataclass(frozen=True)
class Malformed:
    """A line the decoder could not use; ``excerpt`` is at most 120 characters."""

    reason: str
    excerpt: str = field(default="")


Event = Union[Announce, Withdraw, EndOfRib, PeerState, PeerOpen, Notification, Ack, Malformed]
