"""Text commands for ExaBGP's API: announce and withdraw routes.

Pure: each function returns one command line, newline included, ready to be written
to ExaBGP's API pipe. ExaBGP 5.0.15 replied ``done`` to each shape these functions
return, for IPv4 and IPv6, with "self" and with an address as next hop, and ``error``
to a /33 prefix (``tests/fixtures/exabgp/record.sh`` sends them). Inputs are checked
here, because ExaBGP's only reply to a bad command is ``error``, with no reason.
"""

from __future__ import annotations

import ipaddress

from bgpnet.model import Address, Prefix

NEXTHOP_SELF = "self"

_PREFIX_TYPES = (ipaddress.IPv4Network, ipaddress.IPv6Network)
_ADDRESS_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)


def announce_route(prefix: Prefix, nexthop: Address | str = NEXTHOP_SELF) -> str:
    """Return the command that announces ``prefix`` with ``nexthop`` to every peer.

    ``nexthop`` is an address of the prefix's family, or "self" for the address
    ExaBGP uses on each session.
    """
    _check_prefix(prefix)
    if isinstance(nexthop, _ADDRESS_TYPES):
        if nexthop.version != prefix.version:
            raise ValueError(f"nexthop: {nexthop} is an IPv{nexthop.version} address but "
                             f"prefix {prefix} is IPv{prefix.version}; "
                             f"pass an IPv{prefix.version} address or {NEXTHOP_SELF!r}")
        if nexthop.is_unspecified or nexthop.is_multicast:
            raise ValueError(f"nexthop: {nexthop} cannot be a gateway; "
                             f"pass a unicast address or {NEXTHOP_SELF!r}")
    elif nexthop != NEXTHOP_SELF:
        raise TypeError(f"nexthop: expected an IP address object or {NEXTHOP_SELF!r}, "
                        f"got {nexthop!r}; parse text with bgpnet.model.parse_address")
    return f"announce route {prefix} next-hop {nexthop}\n"


def withdraw_route(prefix: Prefix) -> str:
    """Return the command that withdraws ``prefix`` from every peer."""
    _check_prefix(prefix)
    return f"withdraw route {prefix}\n"


def probe() -> str:
    """Return a comment line: ExaBGP 5 acknowledges it with ``done`` and does nothing else."""
    return "# bgpnet watchdog\n"


def _check_prefix(prefix: object) -> None:
    if not isinstance(prefix, _PREFIX_TYPES):
        raise TypeError(f"prefix: expected an ipaddress network object, got {prefix!r}; "
                        "parse text with bgpnet.model.parse_prefix")
