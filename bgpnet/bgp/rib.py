"""The routing information base: routes learned per peer, and the best paths.

Pure: events from the decoder go in, desired kernel routes come out. No I/O except
logging.

Rules:
- An Announce replaces the announcing peer's path for each of its prefixes (BGP has
  no explicit replace: a new UPDATE for a prefix is an implicit withdraw of the old
  path, RFC 4271 section 3.1). A Withdraw removes the peer's path.
- A PeerState "down" drops every path learned from that peer, because ExaBGP 5 sends
  no withdraws when a session closes.
- A route whose ORIGINATOR_ID is our router id is our own route that a route
  reflector sent back. It is counted in ``reflected_own`` and otherwise ignored.
- The import policy runs on every announced route. A rejected route is not stored
  (an older accepted path from the same peer is removed), is counted per reason in
  ``rejected``, and is logged once per (prefix, peer, reason).
- Best path: among the stored paths of a prefix, those with the shortest AS path
  win, and the kernel route gets all their next hops (ECMP). Ties keep every
  candidate, so the result does not depend on arrival order.

Theory of operation. Each prefix has an entry with its paths (one, or ``{peer:
path}``) and its selected kernel route, and a per-peer index serves session resets. ``apply``
touches only the prefixes named by the event, recomputes their routes and returns
the ones whose route changed, so an UPDATE of N prefixes costs O(N), whatever the
table size.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import NamedTuple

from bgpnet.bgp.policy import ImportPolicy
from bgpnet.model import (
    Address,
    Announce,
    EndOfRib,
    Event,
    KernelRoute,
    PeerId,
    PeerState,
    Prefix,
    Withdraw,
)

log = logging.getLogger(__name__)

# Distinct (prefix, peer, reason) rejections that are logged one by one. A peer
# flooding bad prefixes would otherwise flood the log, so the rest are only counted.
MAX_LOGGED_REJECTIONS = 10_000


class Path(NamedTuple):
    """One peer's route to a prefix."""

    nexthop: Address
    as_path_length: int
    # ``(nexthop,)``, built once per Announce, so the many prefixes that select this
    # path alone share one tuple instead of holding one each (48 bytes per prefix).
    nexthops: tuple[Address, ...]


class _Entry:
    """The stored paths of one prefix and the next hops they select.

    Most prefixes have a path from one peer only, so that path is kept in ``key`` and
    ``path``, and ``more`` is None. From a second peer on, every path is in the dict
    ``more`` (keyed like ``key``) and ``path`` is None. A dict for every prefix cost
    about 160 bytes per route. With no paths left, ``path`` and ``more`` are both None.
    """

    __slots__ = ("key", "path", "more", "nexthops", "route")

    def __init__(self) -> None:
        # The peer's small integer from ``Rib._peer_key``, because hashing a PeerId (a
        # dataclass around an ipaddress address) costs about 0.7 us.
        self.key = -1
        self.path: Path | None = None
        self.more: dict[int, Path] | None = None
        self.nexthops: tuple[Address, ...] = ()
        # The KernelRoute of ``nexthops``, built when first requested, because the
        # writer often reads a prefix once after several events changed it.
        self.route: KernelRoute | None = None

    def get(self, key: int) -> Path | None:
        if self.more is not None:
            return self.more.get(key)
        return self.path if key == self.key else None

    def set(self, key: int, path: Path) -> None:
        if self.more is not None:
            self.more[key] = path
        elif self.path is None or key == self.key:
            self.key = key
            self.path = path
        else:
            self.more = {self.key: self.path, key: path}
            self.path = None

    def remove(self, key: int) -> bool:
        """Remove the path of peer ``key``; return False when there was none."""
        more = self.more
        if more is None:
            if self.path is None or key != self.key:
                return False
            self.path = None
            return True
        if more.pop(key, None) is None:
            return False
        if len(more) == 1:
            (self.key, self.path), = more.items()
            self.more = None
        return True

    def kernel_route(self, prefix: Prefix) -> KernelRoute:
        if self.route is None:
            self.route = KernelRoute(prefix=prefix, nexthops=self.nexthops)
        return self.route


class Rib:
    """Routes learned from every peer, and the kernel routes they lead to."""

    def __init__(self, policy: ImportPolicy, node: str, router_id: Address) -> None:
        self.policy = policy
        self.node = node
        self.router_id = router_id
        self.rejected: Counter[str] = Counter()
        self.reflected_own = 0
        # One dict lookup per prefix and event, because hashing an ipaddress network
        # is not cached and dominates the cost of a large UPDATE.
        self._entries: dict[Prefix, _Entry] = {}
        self._by_peer: dict[PeerId, set[Prefix]] = {}
        self._peer_keys: dict[PeerId, int] = {}
        self._eor: set[tuple[PeerId, str]] = set()
        # Prefixes of a restarting peer (RFC 4724 helper): kept, but gone at its End-of-RIB
        # unless announced again since the restart.
        self._stale: dict[PeerId, set[Prefix]] = {}
        self._logged: set[tuple[Prefix, PeerId, str]] = set()
        self._logging_capped = False

    def apply(self, event: Event) -> set[Prefix]:
        """Apply one decoder event; return the prefixes whose desired route changed."""
        if isinstance(event, Announce):
            return self._announce(event)
        if isinstance(event, Withdraw):
            stale = self._stale.get(event.peer)
            if stale:
                stale.difference_update(event.prefixes)
            return self._remove_all(event.prefixes, event.peer)
        if isinstance(event, PeerState):
            return self._peer_state(event)
        if isinstance(event, EndOfRib):
            self._eor.add((event.peer, event.afi))
        return set()

    def desired(self) -> dict[Prefix, KernelRoute]:
        """Return the desired kernel route of every prefix that has one."""
        return {prefix: entry.kernel_route(prefix) for prefix, entry in self._entries.items()}

    def desired_route(self, prefix: Prefix) -> KernelRoute | None:
        entry = self._entries.get(prefix)
        return None if entry is None else entry.kernel_route(prefix)

    def peers_with_routes(self) -> list[PeerId]:
        """Return the peers that have at least one stored route, sorted."""
        return sorted(peer for peer, prefixes in self._by_peer.items() if prefixes)

    def routes_from(self, peer: PeerId) -> int:
        """Return the number of routes stored from ``peer``."""
        return len(self._by_peer.get(peer, ()))

    def eor_seen(self, peer: PeerId, afi: str) -> bool:
        """Return True when ``peer`` has sent End-of-RIB for ``afi`` in this session."""
        return (peer, afi) in self._eor

    def prefixes_from(self, peer: PeerId) -> frozenset[Prefix]:
        return frozenset(self._by_peer.get(peer, ()))

    def mark_stale(self, peer: PeerId) -> int:
        """Keep ``peer``'s routes as stale while it restarts; return how many there are.

        The session is down, so its End-of-RIB flags are cleared.
        """
        self._eor = {key for key in self._eor if key[0] != peer}
        stale = self._stale.setdefault(peer, set())
        stale.update(self._by_peer.get(peer, ()))
        return len(stale)

    def stale_count(self, peer: PeerId) -> int:
        return len(self._stale.get(peer, ()))

    def flush_stale(self, peer: PeerId) -> set[Prefix]:
        """Remove ``peer``'s routes not announced again since ``mark_stale``; return changes."""
        stale = self._stale.pop(peer, set())
        changed = self._remove_all(stale, peer)
        if stale:
            log.info("stale routes removed node=%s peer=%s routes=%d", self.node, peer, len(stale))
        return changed

    def _announce(self, event: Announce) -> set[Prefix]:
        peer = event.peer
        stale = self._stale.get(peer)
        if stale:
            stale.difference_update(event.prefixes)
        if event.originator_id == self.router_id:
            self.reflected_own += len(event.prefixes)
            # The announce still replaces whatever this peer sent before.
            return self._remove_all(event.prefixes, peer)

        path = Path(event.nexthop, len(event.as_path), (event.nexthop,))
        peer_prefixes = self._by_peer.setdefault(peer, set())
        key = self._peer_key(peer)
        nexthop_reasons: dict[int, str | None] = {}
        changed = set()
        for prefix in event.prefixes:
            reason = self.policy.check_prefix(prefix)
            if reason is None:
                version = prefix.version
                if version not in nexthop_reasons:
                    nexthop_reasons[version] = self.policy.check_nexthop(event.nexthop, version)
                reason = nexthop_reasons[version]
            if reason is not None:
                self._reject(prefix, event, reason)
                if self._remove(prefix, key, peer_prefixes):
                    changed.add(prefix)
                continue

            entry = self._entries.get(prefix)
            if entry is None:
                entry = self._entries[prefix] = _Entry()
            elif entry.get(key) == path:
                continue
            entry.set(key, path)
            peer_prefixes.add(prefix)
            if self._select(prefix, entry):
                changed.add(prefix)
        return changed

    def _peer_state(self, event: PeerState) -> set[Prefix]:
        if event.state != "down":
            return set()
        self._stale.pop(event.peer, None)
        self._eor = {key for key in self._eor if key[0] != event.peer}
        prefixes = self._by_peer.pop(event.peer, set())
        key = self._peer_key(event.peer)
        changed = set()
        for prefix in prefixes:
            entry = self._entries[prefix]
            entry.remove(key)
            if self._select(prefix, entry):
                changed.add(prefix)
        if prefixes:
            log.info("peer routes dropped node=%s peer=%s routes=%d reason=%s",
                     self.node, event.peer, len(prefixes), event.reason or "session down")
        return changed

    def _peer_key(self, peer: PeerId) -> int:
        key = self._peer_keys.get(peer)
        if key is None:
            key = self._peer_keys[peer] = len(self._peer_keys)
        return key

    def _remove_all(self, prefixes, peer: PeerId) -> set[Prefix]:
        """Remove ``peer``'s paths to ``prefixes``; return the prefixes whose route changed."""
        key = self._peer_key(peer)
        peer_prefixes = self._by_peer.get(peer)
        entries = self._entries
        changed = set()
        for prefix in prefixes:
            entry = entries.get(prefix)
            if entry is None:
                continue
            if entry.more is None and entry.key == key and entry.path is not None:
                # The peer's path was the prefix's only one, the common case of a large
                # withdraw: what _remove and _select would do, without their calls.
                del entries[prefix]
                if peer_prefixes is not None:
                    peer_prefixes.discard(prefix)
                changed.add(prefix)
            elif self._remove(prefix, key, peer_prefixes):
                changed.add(prefix)
        return changed

    def _remove(self, prefix: Prefix, key: int, peer_prefixes: set[Prefix] | None) -> bool:
        """Remove the path of peer ``key`` to ``prefix``; return True when the route changed.

        ``peer_prefixes`` is that peer's set in ``_by_peer``, looked up once by the caller.
        """
        entry = self._entries.get(prefix)
        if entry is None or not entry.remove(key):
            return False
        if peer_prefixes is not None:
            peer_prefixes.discard(prefix)
        return self._select(prefix, entry)

    def _select(self, prefix: Prefix, entry: _Entry) -> bool:
        """Recompute the entry's kernel route; return True when it changed."""
        more = entry.more
        if more is None:
            if entry.path is None:
                del self._entries[prefix]
                return True
            nexthops = entry.path.nexthops
        else:
            shortest = min(path.as_path_length for path in more.values())
            best = [path for path in more.values() if path.as_path_length == shortest]
            if len(best) == 1:
                nexthops = best[0].nexthops
            else:
                nexthops = tuple(sorted({path.nexthop for path in best}))
        if entry.nexthops == nexthops:
            return False
        entry.nexthops = nexthops
        entry.route = None
        return True

    def _reject(self, prefix: Prefix, event: Announce, reason: str) -> None:
        self.rejected[reason] += 1
        key = (prefix, event.peer, reason)
        if key in self._logged:
            return
        if len(self._logged) >= MAX_LOGGED_REJECTIONS:
            if not self._logging_capped:
                self._logging_capped = True
                log.warning("route rejections no longer logged one by one node=%s limit=%d",
                            self.node, MAX_LOGGED_REJECTIONS)
            return
        self._logged.add(key)
        log.warning("route rejected node=%s peer=%s prefix=%s nexthop=%s reason=%s",
                    self.node, event.peer, prefix, event.nexthop, reason)
