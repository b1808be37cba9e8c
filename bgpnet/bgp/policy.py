"""Import policy: which routes learned over BGP may become kernel routes.

Pure and default-deny: a route is accepted only when its prefix lies inside one of
the cluster CIDRs and its next hop is a plausible gateway of the same family. The
checks return a short reason token (used in logs and as a counter label) instead of
raising, because a rejected route is an expected event, not an error.

Reasons, in the order they are checked:
  prefix:   default-route, outside-cluster-cidr, own-pod-cidr, covers-own-pod-cidr
  next hop: nexthop-unspecified, nexthop-family, nexthop-local, nexthop-martian,
            nexthop-link-local
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bgpnet.model import Address, Prefix


@dataclass(frozen=True)
class ImportPolicy:
    """The cluster CIDRs to accept, and this node's own pod CIDRs and addresses."""

    cluster_cidrs: tuple[Prefix, ...]
    own_prefixes: tuple[Prefix, ...]
    local_addresses: frozenset[Address] = frozenset()
    # The CIDRs above as (version, prefix length, shift, network >> shift), because
    # the RIB checks every announced prefix and ipaddress's subnet_of is slow.
    _cluster_keys: tuple[tuple[int, int, int, int], ...] = field(
        init=False, repr=False, compare=False)
    _own_keys: tuple[tuple[int, int, int, int], ...] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cluster_keys", tuple(map(_key, self.cluster_cidrs)))
        object.__setattr__(self, "_own_keys", tuple(map(_key, self.own_prefixes)))

    def check(self, prefix: Prefix, nexthop: Address) -> str | None:
        """Return the reason to reject the route, or None to accept it."""
        return self.check_prefix(prefix) or self.check_nexthop(nexthop, prefix.version)

    def check_prefix(self, prefix: Prefix) -> str | None:
        """Return the reason to reject any route to ``prefix``, or None."""
        length = prefix.prefixlen
        if length == 0:
            return "default-route"
        version = prefix.version
        network = int(prefix.network_address)
        for cluster_key in self._cluster_keys:
            if _inside(version, length, network, cluster_key):
                break
        else:
            return "outside-cluster-cidr"
        for own_key in self._own_keys:
            # Our own pod CIDR is routed to the local bridge, never to a peer.
            if _inside(version, length, network, own_key):
                return "own-pod-cidr"
            own_version, own_length, own_shift, own_network = own_key
            if version == own_version and length < own_length:
                shift = prefix.max_prefixlen - length
                if network >> shift == (own_network << own_shift) >> shift:
                    return "covers-own-pod-cidr"
        return None

    def check_nexthop(self, nexthop: Address, version: int) -> str | None:
        """Return the reason to reject ``nexthop`` for an IPv``version`` prefix, or None."""
        if nexthop.is_unspecified:
            return "nexthop-unspecified"
        # NOTE: an IPv6 next hop for an IPv4 prefix is valid BGP (RFC 8950), but the
        # kernel needs RTA_VIA for such a gateway, so it is rejected until the route
        # writer supports that.
        if nexthop.version != version:
            return "nexthop-family"
        if nexthop in self.local_addresses:
            return "nexthop-local"
        if nexthop.is_loopback or nexthop.is_multicast:
            return "nexthop-martian"
        if nexthop.version == 4 and (nexthop.is_link_local or nexthop.is_reserved):
            return "nexthop-martian"
        if nexthop.version == 6 and nexthop.is_link_local:
            # A link-local gateway needs an output interface, and kernel routes are
            # planned from next hop addresses alone.
            return "nexthop-link-local"
        return None


def _key(cidr: Prefix) -> tuple[int, int, int, int]:
    shift = cidr.max_prefixlen - cidr.prefixlen
    return (cidr.version, cidr.prefixlen, shift, int(cidr.network_address) >> shift)


def _inside(version: int, length: int, network: int,
            key: tuple[int, int, int, int]) -> bool:
    """Return True when the prefix (version, length, network) lies inside ``key``'s CIDR."""
    cidr_version, cidr_length, shift, cidr_network = key
    return version == cidr_version and length >= cidr_length and network >> shift == cidr_network
